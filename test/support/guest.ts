/**
 * Boot the default guest (or another kernel) in-process for guest tests and collect what it
 * printed. Runs where the test runner put the guest layer: on hardware KVM, or inside the
 * nested host. The default guest image must already be built (the runner does that first).
 */
import { ensureDefaultGuest, type DefaultGuest } from '../../src/image/default-guest.js';
import { commandCmdlineArg } from '../../src/image/guest-protocol.js';
import { silentProgress } from '../../src/util/progress.js';
import type { DriveOptions } from '../../src/vmm/drives.js';
import { MicroVm, type MicroVmExit } from '../../src/vmm/microvm.js';

let cached: DefaultGuest | undefined;
export function defaultGuest(): DefaultGuest {
  cached ??= ensureDefaultGuest(silentProgress);
  return cached;
}

export interface GuestRun {
  exit: MicroVmExit;
  /** Everything the guest wrote to its console. */
  output: string;
  /** VMM start → boot timer write, if the guest wrote it. */
  bootTimeUs: number | undefined;
  /** The (ended) microVM, for its device and exit counters. */
  vm: MicroVm;
}

export interface BootOptions {
  command?: string;
  vcpus?: number;
  memoryMib?: number;
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  /** Stop the VM if it has not ended by then (a test must never hang). */
  timeoutMs?: number;
  /** Give the guest the entropy device (virtio-rng). */
  entropy?: boolean;
  /** Block drives (virtio-blk): the guest sees them as /dev/vda, /dev/vdb, … in this order (a root drive first). */
  drives?: DriveOptions[];
}

export async function bootGuest(opts: BootOptions = {}): Promise<GuestRun> {
  const guest = defaultGuest();
  let cmdline = opts.cmdline ?? guest.bootArgs;
  if (opts.command !== undefined) cmdline += ` ${commandCmdlineArg(opts.command)}`;
  const chunks: Buffer[] = [];
  const vm = MicroVm.create({
    kernel: opts.kernel ?? guest.kernel,
    initrd: opts.initrd ?? guest.initrd,
    cmdline,
    vcpus: opts.vcpus ?? 1,
    memoryMib: opts.memoryMib ?? 256,
    onConsoleOutput: (b) => chunks.push(Buffer.from(b)),
    ...(opts.entropy ? { entropy: {} } : {}),
    ...(opts.drives !== undefined ? { drives: opts.drives } : {}),
  });
  const timer = setTimeout(() => vm.stop('test timeout'), opts.timeoutMs ?? 480_000);
  vm.start();
  const exit = await vm.wait();
  clearTimeout(timer);
  return { exit, output: Buffer.concat(chunks).toString('utf8'), bootTimeUs: vm.bootTimeUs, vm };
}

/** The value printed after `key=` on a line of its own, e.g. `NPROC=2`. */
export function field(output: string, key: string): string | undefined {
  return new RegExp(`^${key}=(.*)$`, 'm').exec(output)?.[1]?.trim();
}
