/**
 * A machine: KVM, one VM, its guest memory, the port-I/O and MMIO buses, and its vCPUs each
 * running on a worker thread. Boot code configures vCPU registers and memory between create()
 * and start(); devices go on the buses; waitForExit() reports how the run ended.
 */
import { Bus } from '../devices/bus.js';
import type { IrqLine } from '../devices/irq.js';
import { Kvm } from '../kvm/kvm.js';
import type { Vcpu } from '../kvm/vcpu.js';
import type { Vm } from '../kvm/vm.js';
import { GuestMemory } from '../memory/guest-memory.js';
import type { GpaRange } from '../memory/layout.js';
import { VcpuRunner, type VcpuExitCounts, type VcpuStopReason } from './vcpu-runner.js';

export interface MachineOptions {
  /** Guest RAM: a GuestMemory built with GuestMemory.anonymous/create, or a size to lay out around the MMIO hole. */
  memory: GuestMemory | { ramBytes: number; mmioHole?: GpaRange };
  /** Number of vCPUs (default 1). */
  vcpuCount?: number;
  /**
   * In-kernel PIC, IOAPIC, local APICs and PIT (default true). Without it, HLT exits to the VMM
   * and ends that vCPU with reason 'hlt', which is what tiny test guests want.
   */
  irqchip?: boolean;
  /** An already opened /dev/kvm (shared between machines), or a path to open. */
  kvm?: Kvm;
  kvmPath?: string;
  /** Per-exit synchronous wait budget of each vCPU runner (see VcpuRunner); 0 disables. */
  exitSyncWaitMs?: number;
}

/** How a machine run ended. 'requested' means a device or the VMM called requestExit(). */
export type MachineExitReason = VcpuStopReason | 'requested';

export interface MachineExit {
  reason: MachineExitReason;
  /** The vCPU whose exit decided the outcome, when one did. */
  vcpuId?: number;
  /** Free text from requestExit(). */
  detail?: string;
}

export class Machine {
  readonly ioBus = new Bus('port I/O');
  readonly mmioBus = new Bus('MMIO');
  readonly vcpus: readonly Vcpu[];
  private readonly runners: VcpuRunner[];
  private readonly ownsKvm: boolean;
  private readonly ownsMemory: boolean;
  private started = false;
  private requested: { reason: MachineExitReason; detail?: string } | undefined;
  private readonly exit: Promise<MachineExit>;

  private constructor(
    readonly kvm: Kvm,
    readonly vm: Vm,
    readonly memory: GuestMemory,
    vcpus: Vcpu[],
    ownership: { kvm: boolean; memory: boolean },
    exitSyncWaitMs: number | undefined,
  ) {
    this.vcpus = vcpus;
    this.ownsKvm = ownership.kvm;
    this.ownsMemory = ownership.memory;
    this.runners = vcpus.map((v) => new VcpuRunner(v, this.ioBus, this.mmioBus, exitSyncWaitMs));
    this.exit = this.watch();
    this.exit.catch(() => {}); // observed through waitForExit()
  }

  /** Open KVM (unless given), create the VM, irqchip, memory slots and vCPUs. Nothing runs yet. */
  static create(options: MachineOptions): Machine {
    const kvm = options.kvm ?? Kvm.open(options.kvmPath);
    const ownsKvm = options.kvm === undefined;
    let vm: Vm | undefined;
    let memory: GuestMemory | undefined;
    const ownsMemory = !(options.memory instanceof GuestMemory);
    const vcpus: Vcpu[] = [];
    try {
      vm = kvm.createVm();
      // Always set on x86: Intel VMX needs them, AMD ignores them (DESIGN.md).
      vm.setTssAddr();
      vm.setIdentityMapAddr();
      if (options.irqchip ?? true) {
        vm.createIrqchip();
        vm.createPit2();
      }
      memory = options.memory instanceof GuestMemory ? options.memory : GuestMemory.create(options.memory.ramBytes, options.memory.mmioHole);
      memory.registerWith(vm);
      const count = options.vcpuCount ?? 1;
      for (let id = 0; id < count; id++) vcpus.push(vm.createVcpu(id));
      return new Machine(kvm, vm, memory, vcpus, { kvm: ownsKvm, memory: ownsMemory }, options.exitSyncWaitMs);
    } catch (e) {
      for (const v of vcpus) v.close();
      vm?.close();
      if (ownsMemory) memory?.close();
      if (ownsKvm) kvm.close();
      throw e;
    }
  }

  /** The vCPU with this id (to set registers before start). */
  vcpu(id: number): Vcpu {
    const v = this.vcpus[id];
    if (v === undefined) throw new RangeError(`no vCPU ${id}: this machine has ${this.vcpus.length}`);
    return v;
  }

  /** An interrupt line driving GSI `gsi` of the in-kernel irqchip (KVM_IRQ_LINE). */
  irqLine(gsi: number): IrqLine {
    const vm = this.vm;
    return { setLevel: (level: boolean) => vm.irqLine(gsi, level) };
  }

  /** Start every vCPU. Set registers and load the guest first. */
  start(): void {
    if (this.started) throw new Error('machine already started');
    this.started = true;
    for (const r of this.runners) r.start();
  }

  /**
   * Settles when the machine has stopped: every vCPU halted (no irqchip) or stopped, or one
   * asked for power-off/reset, or requestExit()/stop() was called. Rejects with the
   * VcpuExitError of the first vCPU that hit an exit it could not handle; the others are stopped.
   */
  waitForExit(): Promise<MachineExit> {
    return this.exit;
  }

  /** Pause every vCPU (each is kicked out of the guest). */
  async pause(): Promise<void> {
    await Promise.all(this.runners.map((r) => r.pause()));
  }

  resume(): void {
    for (const r of this.runners) r.resume();
  }

  /** End the run from a device or the VMM (e.g. i8042 reset, a boot-timer test device). */
  requestExit(reason: MachineExitReason = 'requested', detail?: string): void {
    this.requested ??= detail === undefined ? { reason } : { reason, detail };
    for (const r of this.runners) void r.stop();
  }

  /** Stop every vCPU and settle waitForExit() with reason 'stopped' (unless something else ended it first). */
  async stop(): Promise<MachineExit> {
    this.requestExit('stopped');
    return this.exit;
  }

  /** Exit counters per vCPU. */
  exitCounts(): VcpuExitCounts[] {
    return this.runners.map((r) => ({ ...r.counts }));
  }

  /** Stop, wait for worker threads, and release vCPUs, VM, memory (if the machine allocated it) and KVM (if opened here). */
  async close(): Promise<void> {
    if (this.started) {
      await this.stop().catch(() => undefined);
      await Promise.all(this.runners.map((r) => r.joined()));
    }
    for (const v of this.vcpus) v.close();
    this.vm.close();
    if (this.ownsMemory) this.memory.close();
    if (this.ownsKvm) this.kvm.close();
  }

  private async watch(): Promise<MachineExit> {
    let decisive: MachineExit | undefined;
    let lastHalted: number | undefined;
    let firstError: unknown;
    await Promise.all(
      this.runners.map(async (r) => {
        try {
          const s = await r.finished();
          if (s.reason === 'poweroff' || s.reason === 'reset') {
            // A guest power-off or reset ends the whole machine.
            decisive ??= { reason: s.reason, vcpuId: s.vcpuId };
            this.requestExit(s.reason);
          } else if (s.reason === 'hlt') {
            lastHalted = s.vcpuId;
          }
        } catch (e) {
          firstError ??= e;
          for (const other of this.runners) void other.stop();
        }
      }),
    );
    if (firstError !== undefined) throw firstError;
    if (decisive) return decisive;
    if (this.requested) return this.requested.detail === undefined ? { reason: this.requested.reason } : { ...this.requested };
    return lastHalted === undefined ? { reason: 'hlt' } : { reason: 'hlt', vcpuId: lastHalted };
  }
}
