/** `tsvmm start` / `npm start`: boot the default guest and show what it prints. */
import { commandCmdlineArg } from '../image/guest-protocol.js';
import { ensureDefaultGuest } from '../image/default-guest.js';
import type { EntropyConfig } from '../api/config.js';
import type { DriveOptions } from '../vmm/drive-options.js';
import type { VirtioTransportKind } from '../vmm/microvm.js';
import type { NetworkInterfaceOptions, VsockOptions } from '../vmm/vm-spec.js';
import { stderrProgress } from '../util/progress.js';
import { runVmFromCli } from './run-vm.js';

export interface StartOptions {
  vcpus: number;
  memoryMib: number;
  /** Shell command for the guest; undefined runs the default greeting. */
  command?: string;
  /** Give the guest an entropy device (virtio-rng). */
  entropy?: EntropyConfig;
  /** Block drives (--disk). */
  drives?: DriveOptions[];
  networkInterfaces?: NetworkInterfaceOptions[];
  vsock?: VsockOptions;
  /** --virtio-transport: how the virtio devices reach the guest (default PCI). */
  virtioTransport?: VirtioTransportKind;
}

export async function startDefaultVm(opts: StartOptions): Promise<number> {
  const guest = ensureDefaultGuest(stderrProgress);
  let cmdline = guest.bootArgs;
  // As Firecracker: a root drive is attached first (/dev/vda) and named on the command line; the
  // default guest's init mounts it and runs the command inside it.
  const root = opts.drives?.find((d) => d.root);
  if (root !== undefined) cmdline += ` root=/dev/vda ${root.readOnly ? 'ro' : 'rw'}`;
  if (opts.command !== undefined) cmdline += ` ${commandCmdlineArg(opts.command)}`;
  return runVmFromCli({
    kernel: guest.kernel,
    initrd: guest.initrd,
    cmdline,
    vcpus: opts.vcpus,
    memoryMib: opts.memoryMib,
    ...(opts.entropy !== undefined ? { entropy: opts.entropy } : {}),
    ...(opts.drives !== undefined ? { drives: opts.drives } : {}),
    ...(opts.networkInterfaces !== undefined ? { networkInterfaces: opts.networkInterfaces } : {}),
    ...(opts.vsock !== undefined ? { vsock: opts.vsock } : {}),
    ...(opts.virtioTransport !== undefined ? { virtioTransport: opts.virtioTransport } : {}),
    bootTimer: true,
  });
}
