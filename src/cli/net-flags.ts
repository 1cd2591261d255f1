/**
 * `--net TAP[,mac=XX:XX:XX:XX:XX:XX][,mtu=N][,id=NAME]` and `--vsock UDS[,cid=N]`: the command-line
 * spelling of a config file's `network-interfaces` entry and `vsock`. As with --disk, the same text
 * is how the CLI hands them to itself inside the nested host, so both directions live here.
 */
import { resolve } from 'node:path';
import { ConfigError, GUEST_CID_RANGE, HOST_DEV_NAME_MAX_BYTES, MTU_RANGE, parseMacAddress } from '../api/config.js';
import { UsageError } from '../util/errors.js';
import type { NetworkInterfaceOptions, VsockOptions } from '../vmm/vm-spec.js';

/** Firecracker's examples use CID 3, the first one not reserved. */
export const DEFAULT_GUEST_CID = 3;

function options(flag: string, text: string, known: string): { head: string; opts: [string, string | undefined][] } {
  const [head, ...rest] = text.split(',');
  if (head === undefined || head === '') throw new UsageError(`${flag}: '${text}' is missing its first part; use ${known}`);
  return { head, opts: rest.map((o) => (o.includes('=') ? [o.slice(0, o.indexOf('=')), o.slice(o.indexOf('=') + 1)] : [o, undefined])) };
}

/** `--net` number `index` (0-based) → an interface; its id defaults to `net<index>`. */
export function parseNetFlag(text: string, index: number): NetworkInterfaceOptions {
  const usage = 'TAP[,mac=06:00:AC:10:00:02][,mtu=N][,id=NAME]';
  const { head: tap, opts } = options('--net', text, usage);
  if (Buffer.byteLength(tap) > HOST_DEV_NAME_MAX_BYTES || /[\s/]/.test(tap)) throw new UsageError(`--net: '${tap}' is not a Linux interface name (at most ${HOST_DEV_NAME_MAX_BYTES} bytes, no spaces or '/')`);
  const iface: NetworkInterfaceOptions = { id: `net${index}`, hostDevName: tap };
  for (const [key, value] of opts) {
    if (key === 'mac' && value !== undefined) {
      try {
        iface.guestMac = parseMacAddress(value, 'mac');
      } catch (e) {
        throw new UsageError(`--net: ${e instanceof ConfigError ? e.message : String(e)}`);
      }
    } else if (key === 'mtu' && value !== undefined && /^\d+$/.test(value) && Number(value) >= MTU_RANGE.min && Number(value) <= MTU_RANGE.max) {
      iface.mtu = Number(value);
    } else if (key === 'id' && value !== undefined && value !== '') {
      iface.id = value;
    } else {
      throw new UsageError(`--net: cannot use '${value === undefined ? key : `${key}=${value}`}' in '${text}'; use ${usage} (mtu ${MTU_RANGE.min}-${MTU_RANGE.max})`);
    }
  }
  return iface;
}

/** An interface back as `--net` text, for the CLI run inside the nested host. */
export function netFlag(n: NetworkInterfaceOptions): string {
  if (n.id.includes(',')) throw new UsageError(`network interface '${n.id}': an iface_id with a comma cannot be passed to the nested host; rename it`);
  return [n.hostDevName, `id=${n.id}`, ...(n.guestMac !== undefined ? [`mac=${n.guestMac}`] : []), ...(n.mtu !== undefined ? [`mtu=${n.mtu}`] : [])].join(',');
}

export function parseVsockFlag(text: string): VsockOptions {
  const usage = 'UDS_PATH[,cid=N]';
  const { head: path, opts } = options('--vsock', text, usage);
  const vsock: VsockOptions = { guestCid: DEFAULT_GUEST_CID, udsPath: resolve(path) };
  for (const [key, value] of opts) {
    if (key === 'cid' && value !== undefined && /^\d+$/.test(value) && Number(value) >= GUEST_CID_RANGE.min && Number(value) <= GUEST_CID_RANGE.max) vsock.guestCid = Number(value);
    else throw new UsageError(`--vsock: cannot use '${value === undefined ? key : `${key}=${value}`}' in '${text}'; use ${usage} (cid ${GUEST_CID_RANGE.min}-${GUEST_CID_RANGE.max})`);
  }
  return vsock;
}

export function vsockFlag(v: VsockOptions): string {
  if (v.udsPath.includes(',')) throw new UsageError(`vsock: a uds_path with a comma cannot be passed to the nested host; rename it`);
  return `${v.udsPath},cid=${v.guestCid}`;
}
