/**
 * What it takes to boot one microVM, as plain data: the kernel, its command line, the machine's
 * shape and its devices. The CLI flags, a Firecracker config file and the REST API's resources all
 * become a VmSpec, and both ways of running one (in this process, or inside the nested host) take
 * it, so the three front ends cannot drift apart in what they boot.
 */
import { resolve } from 'node:path';
import type { DriveConfig, EntropyConfig, VmConfig } from '../api/config.js';
import type { DriveOptions } from './drive-options.js';

export type VirtioTransportKind = 'pci' | 'mmio';

export interface VmSpec {
  kernel: string;
  initrd?: string;
  cmdline: string;
  vcpus: number;
  memoryMib: number;
  /** Firecracker's `entropy`: give the guest a virtio-rng device. */
  entropy?: EntropyConfig;
  /** Block drives, root first once validated. */
  drives?: DriveOptions[];
  /** Network interfaces (virtio-net on host TAP devices), in attach order (eth0, eth1, …). */
  networkInterfaces?: NetworkInterfaceOptions[];
  /** virtio-vsock with Firecracker's hybrid Unix-socket model. */
  vsock?: VsockOptions;
  /** PCI (default) or virtio-mmio. */
  virtioTransport?: VirtioTransportKind;
}

export interface NetworkInterfaceOptions {
  /** Firecracker's iface_id (for messages and PATCH). */
  id: string;
  /** The host TAP device; created if missing when tsvmm runs as root. */
  hostDevName: string;
  /** "xx:xx:xx:xx:xx:xx"; absent lets the guest driver pick one. */
  guestMac?: string;
  mtu?: number;
}

export interface VsockOptions {
  guestCid: number;
  /** The host Unix socket; guest-initiated connections to port P go to `${udsPath}_${P}`. */
  udsPath: string;
}

/**
 * Used when a config gives no boot_args. Firecracker's own default turns the serial console off
 * (8250.nr_uarts=0), which would show nothing here.
 */
export const DEFAULT_CONFIG_BOOT_ARGS = 'console=ttyS0 reboot=k panic=1';

/** A Firecracker configuration (config file, or the resources PUT through the API) as a VmSpec. */
export function vmSpecFromConfig(config: VmConfig): VmSpec {
  const boot = config.bootSource;
  // vhost-user drives (no path_on_host) are refused as unsupported before this.
  const drives: DriveOptions[] = config.drives.flatMap((d) =>
    d.path_on_host === undefined ? [] : [{ id: d.drive_id, path: resolve(d.path_on_host), readOnly: d.is_read_only, cacheType: d.cache_type, root: d.is_root_device }],
  );
  return {
    kernel: boot.kernel_image_path,
    ...(boot.initrd_path !== undefined ? { initrd: boot.initrd_path } : {}),
    cmdline: withRootDevice(boot.boot_args ?? DEFAULT_CONFIG_BOOT_ARGS, config.drives),
    vcpus: config.machineConfig.vcpu_count,
    memoryMib: config.machineConfig.mem_size_mib,
    ...(config.entropy !== undefined ? { entropy: config.entropy } : {}),
    ...(drives.length > 0 ? { drives } : {}),
    ...(config.networkInterfaces.length > 0
      ? {
          networkInterfaces: config.networkInterfaces.map((n) => ({
            id: n.iface_id,
            hostDevName: n.host_dev_name,
            ...(n.guest_mac !== undefined ? { guestMac: n.guest_mac } : {}),
            ...(n.mtu !== undefined ? { mtu: n.mtu } : {}),
          })),
        }
      : {}),
    ...(config.vsock !== undefined ? { vsock: { guestCid: config.vsock.guest_cid, udsPath: resolve(config.vsock.uds_path) } } : {}),
  };
}

/**
 * Firecracker appends the root device to the kernel command line: `root=PARTUUID=… ` or
 * `root=/dev/vda` (the root drive is attached first), then `ro` or `rw` as the drive is.
 */
export function withRootDevice(cmdline: string, drives: readonly DriveConfig[]): string {
  const root = drives.find((d) => d.is_root_device && d.path_on_host !== undefined);
  if (root === undefined) return cmdline;
  const device = root.partuuid !== undefined ? `PARTUUID=${root.partuuid}` : '/dev/vda';
  return `${cmdline} root=${device} ${root.is_read_only ? 'ro' : 'rw'}`;
}
