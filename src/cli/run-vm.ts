/**
 * Run one Linux microVM from the command line: in this process when the machine can run stock
 * Linux under KVM, otherwise inside the nested host (a QEMU-emulated machine with AMD-V), by
 * running this same CLI there. Console output goes to stdout; one status line goes to stderr.
 */
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TsvmmError } from '../util/errors.js';
import { stderrProgress } from '../util/progress.js';
import { checkVmSpec, nestedHostReason } from '../vmm/launch.js';
import type { VmSpec } from '../vmm/vm-spec.js';
import { diskFlag } from './disk-flag.js';
import { netFlag, vsockFlag } from './net-flags.js';

export interface CliVmOptions extends VmSpec {
  /** Print the boot-timer line (Firecracker's `--boot-timer`). */
  bootTimer: boolean;
}

function say(line: string): void {
  process.stderr.write(`tsvmm: ${line}\n`);
}

export async function runVmFromCli(opts: CliVmOptions): Promise<number> {
  // Before a nested host boots for nothing: a missing image or a duplicate id fails in a second.
  checkVmSpec(opts);
  const nested = await nestedHostReason();
  return nested === undefined ? runHere(opts) : runInNested(opts, nested);
}

async function runHere(opts: CliVmOptions): Promise<number> {
  const { LocalVm } = await import('../vmm/local-vm.js');
  const started = process.hrtime.bigint();
  const { bootTimer, ...spec } = opts;
  const local = LocalVm.start(spec, {
    onWarning: (message) => say(`warning: ${message}`),
    onBootTimer: (e) => {
      if (bootTimer) say(`guest booted in ${(e.elapsedUs / 1000).toFixed(1)} ms (boot timer; ${(e.cpuUs / 1000).toFixed(1)} ms VMM CPU)`);
    },
  });
  const vm = local.vm;
  let stoppedBy: NodeJS.Signals | undefined;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stoppedBy === undefined && process.env['TSVMM_STOP_REPORT'] === '1') {
      // What the guest's devices were doing when stopped from outside (benchmarks set this to explain a hung boot).
      for (const line of vm.describeState()) say(`state: ${line}`);
    }
    stoppedBy ??= signal;
    vm.stop(`stopped by ${signal}`);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const exit = await local.exit;
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  process.stdin.unref?.();
  const wallMs = Number(process.hrtime.bigint() - started) / 1e6;
  if (exit.reason === 'panic' || exit.reason === 'error') {
    say(exit.message);
    const tail = exit.consoleTail.trimEnd().split('\n').slice(-15).join('\n');
    if (tail && exit.reason === 'error') process.stderr.write(`--- last console output ---\n${tail}\n`);
  } else if (exit.reason === 'reboot') {
    // The VMM ends on a reboot (as Firecracker does); say why, a triple fault above all.
    say(exit.message);
  } else if (opts.bootTimer || exit.reason === 'stopped') {
    say(`${exit.message} (${(wallMs / 1000).toFixed(2)} s from VMM start)`);
  }
  // A VM stopped by a signal exits like a command killed by it would in a shell (128 + signal number).
  if (stoppedBy !== undefined) return 128 + (stoppedBy === 'SIGINT' ? 2 : 15);
  return exit.status;
}

async function runInNested(opts: CliVmOptions, why: string): Promise<number> {
  say(why);
  const cli = fileURLToPath(new URL('./main.js', import.meta.url));
  // Paths are made absolute: the nested host's working directory is this one, but be explicit.
  const args = ['run', '--kernel', resolve(opts.kernel), '--cmdline', opts.cmdline, '--cpus', String(opts.vcpus), '--mem', `${opts.memoryMib}M`];
  if (opts.initrd !== undefined) args.push('--initrd', resolve(opts.initrd));
  if (opts.bootTimer) args.push('--boot-timer');
  // `entropy` has no field tsvmm implements yet besides its presence (rate limiters are refused before this).
  if (opts.entropy !== undefined) args.push('--entropy');
  const drives = opts.drives ?? [];
  for (const d of drives) args.push('--disk', diskFlag(d));
  if (opts.virtioTransport !== undefined) args.push('--virtio-transport', opts.virtioTransport);
  for (const n of opts.networkInterfaces ?? []) args.push('--net', netFlag(n));
  if (opts.vsock !== undefined) args.push('--vsock', vsockFlag(opts.vsock));
  if ((opts.networkInterfaces ?? []).length > 0 || opts.vsock !== undefined) {
    say('the VM runs inside the nested host: its TAP devices and vsock sockets are made there, reachable from programs in the nested host only');
  }
  const { runInNestedHost } = await import('../host/nested.js');
  const { nestedPlaces } = await import('../host/nested-vm.js');
  const r = await runInNestedHost([process.execPath, cli, ...args], {
    ...nestedPlaces(opts),
    onOutput: (s) => process.stdout.write(s),
    progress: stderrProgress,
  });
  if (r.timedOut) throw new TsvmmError('the nested host timed out');
  return r.status;
}
