/**
 * `tsvmm __vm-agent SPEC` (internal): runs inside the nested host for host/nested-vm.ts. It starts
 * the VM described by SPEC (a base64 JSON VmSpec) in this process and answers control calls that
 * arrive as JSON lines on the nested host's virtio-serial control port (the wire format is in
 * nested-vm.ts). The VM's console goes to stdout, which the nested host's console carries out.
 */
import { closeSync, createReadStream, openSync, readdirSync, readFileSync, writeSync } from 'node:fs';
import { TsvmmError, oneLine } from '../util/errors.js';
import type { VmSpec } from '../vmm/vm-spec.js';
import type { LocalVm as LocalVmType } from '../vmm/local-vm.js';
import { NESTED_CONTROL_PORT_NAME } from '../host/nested.js';

const VIRTIO_PORTS = '/sys/class/virtio-ports';

/** The /dev node of the virtio-serial port named `name`. */
function findPort(name: string): string {
  let entries: string[];
  try {
    entries = readdirSync(VIRTIO_PORTS);
  } catch {
    throw new TsvmmError(`no virtio-serial ports (${VIRTIO_PORTS} is missing): is virtio_console loaded in the nested host?`);
  }
  for (const entry of entries) {
    try {
      if (readFileSync(`${VIRTIO_PORTS}/${entry}/name`, 'utf8').trim() === name) return `/dev/${entry}`;
    } catch {
      // A port without a name.
    }
  }
  throw new TsvmmError(`no virtio-serial port named ${name} among ${entries.join(', ') || 'none'}`);
}

interface Call {
  id: number;
  op: string;
  args?: Record<string, unknown>;
}

/** An input that never delivers anything: in the nested host the console has no keyboard. */
const NO_INPUT = { on: () => undefined, off: () => undefined, pause: () => undefined, resume: () => undefined };

export async function runVmAgent(specText: string): Promise<number> {
  const spec = JSON.parse(Buffer.from(specText, 'base64').toString('utf8')) as VmSpec;
  const fd = openSync(findPort(NESTED_CONTROL_PORT_NAME), 'r+');
  const send = (message: unknown): void => {
    try {
      writeSync(fd, `${JSON.stringify(message)}\n`);
    } catch {
      // The host side went away; the VM carries on until it ends.
    }
  };
  const { LocalVm } = await import('../vmm/local-vm.js');
  let vm: LocalVmType;
  try {
    vm = LocalVm.start(spec, {
      stdin: NO_INPUT,
      stdout: process.stdout,
      onWarning: (m) => process.stderr.write(`tsvmm: warning: ${m}\n`),
      onBootTimer: (e) => send({ event: 'booted', value: e.value, elapsedUs: e.elapsedUs, cpuUs: e.cpuUs }),
    });
  } catch (e) {
    send({ event: 'failed', error: oneLine(e) });
    closeSync(fd);
    return 1;
  }
  send({ event: 'started' });

  const handle = async (call: Call): Promise<unknown> => {
    const args = call.args ?? {};
    switch (call.op) {
      case 'pause':
        return vm.pause();
      case 'resume':
        return vm.resume();
      case 'ctrlAltDel':
        return vm.sendCtrlAltDel();
      case 'updateDrive':
        return vm.updateDrive(String(args['driveId']), String(args['pathOnHost']));
      case 'metrics':
        return vm.metrics();
      case 'stop':
        vm.stop(typeof args['detail'] === 'string' ? args['detail'] : undefined);
        return undefined;
      default:
        throw new TsvmmError(`unknown control operation '${call.op}'`);
    }
  };

  const input = createReadStream('', { fd, autoClose: false, encoding: 'utf8' });
  let buffered = '';
  input.on('data', (chunk: string | Buffer) => {
    buffered += chunk.toString();
    let nl: number;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const text = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      let call: Call;
      try {
        call = JSON.parse(text) as Call;
      } catch {
        continue;
      }
      handle(call).then(
        (result) => send({ id: call.id, ok: true, ...(result !== undefined ? { result } : {}) }),
        (e: unknown) => send({ id: call.id, ok: false, error: oneLine(e) }),
      );
    }
  });
  input.on('error', () => undefined);

  const debug = process.env['TSVMM_DEBUG'] ? (m: string): void => void process.stderr.write(`tsvmm agent: ${m}\n`) : (): void => {};
  const exit = await vm.exit;
  debug(`vm ended: ${exit.message}`);
  if (exit.reason === 'panic' || exit.reason === 'error') process.stderr.write(`tsvmm: ${exit.message}\n`);
  send({ event: 'exit', exit: { reason: exit.reason, status: exit.status, message: exit.message } });
  debug('exit reported');
  // The pending read on the port holds a threadpool thread: the caller exits the process.
  return exit.status;
}
