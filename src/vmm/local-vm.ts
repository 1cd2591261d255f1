/**
 * Start a VmSpec as a MicroVm in this process, with its console on streams (a terminal by
 * default), and drive it through the VmControl interface the API and the SDK use.
 */
import { attachSerialToTerminal, type TerminalInput, type TerminalOutput } from '../devices/legacy/serial-terminal.js';
import type { BootTimerEvent } from '../devices/legacy/boot-timer.js';
import { MicroVm, type MicroVmExit } from './microvm.js';
import type { VmControl, VmExitSummary, VmMetrics } from './vm-control.js';
import type { VmSpec } from './vm-spec.js';

export interface LocalVmOptions {
  /** Where the guest console goes and comes from. Default: this process's stdin and stdout. */
  stdin?: TerminalInput;
  stdout?: TerminalOutput;
  onWarning?: (message: string) => void;
  onBootTimer?: (event: BootTimerEvent) => void;
}

/** A MicroVm behind the VmControl interface; `exit` has the full outcome (console tail, error). */
export class LocalVm implements VmControl {
  private readonly ended: Promise<MicroVmExit>;

  private constructor(readonly vm: MicroVm, detach: () => void) {
    this.ended = vm.wait().finally(detach);
  }

  /** Create, wire the console, start. Throws (one line) when the VM cannot be built. */
  static start(spec: VmSpec, options: LocalVmOptions = {}): LocalVm {
    const vm = MicroVm.create({
      ...spec,
      ...(options.onWarning !== undefined ? { onWarning: options.onWarning } : {}),
      ...(options.onBootTimer !== undefined ? { onBootTimer: options.onBootTimer } : {}),
    });
    const terminal = attachSerialToTerminal(vm.console, {
      stdin: options.stdin ?? process.stdin,
      stdout: options.stdout ?? process.stdout,
      onQuit: () => vm.stop('stopped from the console (Ctrl-A x)'),
    });
    vm.start();
    return new LocalVm(vm, () => terminal.detach());
  }

  /** The full outcome (with console tail and error), once the VM ended. */
  get exit(): Promise<MicroVmExit> {
    return this.ended;
  }

  pause(): Promise<void> {
    return this.vm.pause();
  }

  async resume(): Promise<void> {
    this.vm.resume();
  }

  async sendCtrlAltDel(): Promise<boolean> {
    return this.vm.sendCtrlAltDel();
  }

  async updateDrive(driveId: string, pathOnHost: string): Promise<void> {
    this.vm.updateDrive(driveId, pathOnHost);
  }

  async metrics(): Promise<VmMetrics> {
    return this.vm.metrics();
  }

  stop(detail?: string): void {
    this.vm.stop(detail);
  }

  async wait(): Promise<VmExitSummary> {
    const e = await this.ended;
    return { reason: e.reason, status: e.status, message: e.message };
  }
}
