/**
 * Start a VmSpec where this machine can run it: in this process when its KVM runs stock Linux,
 * otherwise inside the nested host (host/nested-vm.ts). What can be checked without booting
 * anything (machine shape, kernel and command line, drives) is checked first, so a typo costs no
 * nested-host boot.
 */
import { detectVirtualization } from '../host/environment.js';
import type { BootTimerEvent } from '../devices/legacy/boot-timer.js';
import type { TerminalInput, TerminalOutput } from '../devices/legacy/serial-terminal.js';
import { TsvmmError } from '../util/errors.js';
import { validateDrives } from './drive-options.js';
import { validateMachineShape } from './limits.js';
import { preflightLinuxBoot } from './linux-boot.js';
import type { VmControl } from './vm-control.js';
import type { VmSpec } from './vm-spec.js';

export interface LaunchOptions {
  /** The guest console's input; default this process's stdin. (Not carried into the nested host.) */
  stdin?: TerminalInput;
  /** The guest console's output; default this process's stdout. */
  stdout?: TerminalOutput;
  onWarning?: (message: string) => void;
  onBootTimer?: (event: BootTimerEvent) => void;
  /** Told once when the VM goes to the nested host, and why. */
  onNested?: (why: string) => void;
}

/** What can be checked before anything boots (machine shape, drives, kernel and command line): one line on failure. */
export function checkVmSpec(spec: VmSpec): void {
  validateMachineShape(spec.vcpus, spec.memoryMib);
  validateDrives(spec.drives ?? []);
  preflightLinuxBoot({ kernelPath: spec.kernel, cmdline: spec.cmdline, memoryMib: spec.memoryMib, ...(spec.initrd !== undefined ? { initrdPath: spec.initrd } : {}) });
}

/**
 * Why a VM must run in the nested host (a line for the user), or undefined when this machine's
 * KVM runs stock Linux. Inside the nested host without a usable KVM there is nowhere left to go.
 */
export async function nestedHostReason(): Promise<string | undefined> {
  const env = detectVirtualization();
  if (env.canRunStockLinux) return undefined;
  if (process.env['TSVMM_NESTED_HOST']) throw new TsvmmError(`inside the nested host and still no usable KVM: ${env.summary}`);
  const { explainNestedHost } = await import('../host/nested.js');
  return explainNestedHost(env);
}

export async function launchVm(spec: VmSpec, options: LaunchOptions = {}): Promise<VmControl> {
  checkVmSpec(spec);
  const nested = await nestedHostReason();
  if (nested === undefined) {
    const { LocalVm } = await import('./local-vm.js');
    return LocalVm.start(spec, {
      ...(options.stdin !== undefined ? { stdin: options.stdin } : {}),
      ...(options.stdout !== undefined ? { stdout: options.stdout } : {}),
      ...(options.onWarning !== undefined ? { onWarning: options.onWarning } : {}),
      ...(options.onBootTimer !== undefined ? { onBootTimer: options.onBootTimer } : {}),
    });
  }
  options.onNested?.(nested);
  const { NestedVm } = await import('../host/nested-vm.js');
  const stdout = options.stdout;
  return NestedVm.start(spec, {
    ...(stdout !== undefined ? { onOutput: (text: string) => stdout.write(Buffer.from(text, 'utf8')) } : {}),
    // Measured inside, from the agent's VMM start: the nested host's own boot is not in it.
    ...(options.onBootTimer !== undefined ? { onBootTimer: options.onBootTimer } : {}),
  });
}
