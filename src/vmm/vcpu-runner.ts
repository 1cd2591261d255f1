/**
 * Main-thread side of one vCPU: owns its worker thread, handles its exits (port I/O and MMIO
 * through the buses, in place in the shared kvm_run mapping), and pauses, resumes and stops it
 * promptly by kicking it out of KVM_RUN.
 *
 * Kick: set kvm_run.immediate_exit, then pthread_kill(worker, SIGUSR2). A vCPU inside the guest
 * leaves KVM_RUN with EINTR; one about to enter sees immediate_exit and returns EINTR at once, so
 * no kick is lost. SIGUSR2 needs a handler or it would kill the process; `process.on` makes libuv
 * install one (async-signal-safe), and SIGUSR1 is Node's inspector.
 */
import { Worker } from 'node:worker_threads';
import { environmentChoice } from '../util/env-choice.js';
import type { Bus } from '../devices/bus.js';
import { ExitReason, KVM_EXIT_IO_OUT, SystemEventType } from '../kvm/constants.js';
import { VcpuExitError, describeExit, type ExitDescription } from '../kvm/exits.js';
import { SIGUSR2, errno, errnoName, pthreadKill } from '../kvm/libc.js';
import { RUN, type Regs, type Sregs } from '../kvm/structs.js';
import type { Vcpu } from '../kvm/vcpu.js';
import {
  CTL_BYTES,
  CTL_READY,
  CTL_RESULT,
  CTL_STATE,
  CTL_THREAD_ID_BIGINT_INDEX,
  STATE_EXITED,
  STATE_QUIT,
  STATE_RUN,
  type VcpuWorkerData,
} from './vcpu-protocol.js';

/** Why a vCPU stopped without error. */
export type VcpuStopReason =
  /** HLT with no in-kernel irqchip to wake it (tiny test guests). */
  | 'hlt'
  /** stop() was called. */
  | 'stopped'
  /** KVM_SYSTEM_EVENT_SHUTDOWN (the guest asked to power off). */
  | 'poweroff'
  /** KVM_SYSTEM_EVENT_RESET (the guest asked to reboot). */
  | 'reset';

export interface VcpuStop {
  vcpuId: number;
  reason: VcpuStopReason;
}

/** Counts kept per vCPU (cheap; read them for statistics). */
export interface VcpuExitCounts {
  io: number;
  mmio: number;
  intr: number;
  total: number;
}

/** Atomics.waitAsync (ES2024; in Node since 16) is missing from the ES2022 lib typings we compile with. */
type WaitAsync = (
  array: Int32Array,
  index: number,
  value: number,
) => { async: false; value: 'not-equal' | 'timed-out' } | { async: true; value: Promise<'ok' | 'timed-out'> };
const waitAsync = (Atomics as unknown as { waitAsync: WaitAsync }).waitAsync;

let kickHandlerInstalled = false;
function installKickHandler(): void {
  if (kickHandlerInstalled) return;
  kickHandlerInstalled = true;
  // An empty listener: its only job is to make SIGUSR2 interrupt KVM_RUN instead of killing us.
  process.on('SIGUSR2', () => {});
}

/**
 * See the VcpuRunner constructor. Off by default: it doubled port-I/O exit throughput in the
 * emulated nested host (about 1.4k to 3k exits/s), but full test runs with it on hung twice
 * there and the cause is not yet understood.
 */
export const DEFAULT_SYNC_WAIT_MS = 0;
const MAX_SYNC_BURST = 64;

/** The port-I/O data page, KVM_PIO_PAGE_OFFSET (asm/kvm.h) pages into the mapping. */
const PIO_DATA_OFFSET = 4096;

/**
 * How vCPU threads are scheduled (TSVMM_VCPU_SCHED): `batch` (the default) runs them under
 * SCHED_BATCH, `normal` leaves them SCHED_OTHER like every other thread. The difference is one
 * thing only: a SCHED_BATCH thread that wakes does not preempt the thread running on its CPU
 * (CFS skips wake-up preemption for it; it still gets its fair share). The main thread wakes a
 * halted vCPU with every interrupt it injects (an irqfd write), usually in the middle of a
 * device's work: frames still to read, a completion still to write. Under SCHED_OTHER the vCPU
 * often preempted it there, ran the guest into its next request, and the device finished its
 * turn only after that (bench/net traces: irqfd writes of over 1 ms). Measured side by side in the
 * nested host (bench/results/net-2026-11-29-vcpu-batch*.md): ping p50 12 % and host → guest
 * throughput 19 % better, guest → host throughput 13 % worse (the guest's sending vCPU no longer
 * jumps the queue). QEMU and Firecracker leave their vCPU threads SCHED_OTHER.
 */
export function vcpuSchedulingPolicy(env: NodeJS.ProcessEnv = process.env): 'batch' | 'normal' {
  return environmentChoice('TSVMM_VCPU_SCHED', ['batch', 'normal'], 'batch', env);
}

export class VcpuRunner {
  readonly counts: VcpuExitCounts = { io: 0, mmio: 0, intr: 0, total: 0 };
  private readonly ctl: Int32Array;
  private readonly control: SharedArrayBuffer;
  private worker: Worker | undefined;
  private started = false;
  private ended = false;
  private parked = false;
  private pauseRequested = false;
  private stopRequested = false;
  private parkWaiters: (() => void)[] = [];
  private resumeSignal: (() => void) | undefined;
  private readonly done: Promise<VcpuStop>;
  private resolveDone!: (s: VcpuStop) => void;
  private rejectDone!: (e: Error) => void;
  /** Views into the run area reused on every exit, so the hot path allocates no typed arrays. */
  private readonly pioViews: Uint8Array[] = [];
  private readonly mmioViews: Uint8Array[] = [];
  /** Read at construction, so a misspelt TSVMM_VCPU_SCHED fails the VM's creation, not a vCPU's start. */
  private readonly schedBatch = vcpuSchedulingPolicy() === 'batch';

  /**
   * @param syncWaitMs How long the main thread may block (Atomics.wait) for this vCPU's next exit
   *   before falling back to Atomics.waitAsync. Exits in quick succession (a driver poking
   *   registers) then skip the event loop; at most MAX_SYNC_BURST in a row, so timers and I/O
   *   still run. 0 disables it.
   */
  constructor(
    readonly vcpu: Vcpu,
    private readonly ioBus: Bus,
    private readonly mmioBus: Bus,
    private readonly syncWaitMs = DEFAULT_SYNC_WAIT_MS,
  ) {
    this.control = new SharedArrayBuffer(CTL_BYTES);
    this.ctl = new Int32Array(this.control);
    for (let n = 0; n <= 8; n++) {
      this.pioViews.push(vcpu.runBytes.subarray(PIO_DATA_OFFSET, PIO_DATA_OFFSET + n));
      this.mmioViews.push(vcpu.runBytes.subarray(RUN.mmioData, RUN.mmioData + n));
    }
    this.done = new Promise<VcpuStop>((resolve, reject) => {
      this.resolveDone = resolve;
      this.rejectDone = reject;
    });
    // The promise is also observed through finished(); avoid an unhandled-rejection crash meanwhile.
    this.done.catch(() => {});
  }

  get id(): number {
    return this.vcpu.id;
  }

  /** Start the worker and the vCPU. Registers/sregs must be set before. */
  start(): void {
    if (this.started) throw new Error(`vCPU ${this.id} was already started`);
    this.started = true;
    installKickHandler();
    const data: VcpuWorkerData = { vcpuId: this.id, vcpuFd: this.vcpu.fd, control: this.control, schedBatch: this.schedBatch };
    const worker = new Worker(new URL('./vcpu-worker.js', import.meta.url), { workerData: data, name: `vcpu${this.id}` });
    this.worker = worker;
    worker.on('error', (e) => this.fail(new Error(`vCPU ${this.id} worker thread failed: ${e.message}`, { cause: e })));
    worker.on('exit', (code) => {
      if (!this.ended) this.fail(new Error(`vCPU ${this.id} worker thread exited unexpectedly (code ${code})`));
    });
    Atomics.store(this.ctl, CTL_STATE, STATE_RUN);
    Atomics.notify(this.ctl, CTL_STATE);
    void this.loop();
  }

  /** Settles when the vCPU has stopped: resolves with why, or rejects with a VcpuExitError. */
  finished(): Promise<VcpuStop> {
    return this.done;
  }

  /** Kick the vCPU out of the guest and park it. Resolves once it is parked (or has ended). */
  pause(): Promise<void> {
    if (this.ended || this.parked || !this.started) return Promise.resolve();
    this.pauseRequested = true;
    const parked = new Promise<void>((resolve) => this.parkWaiters.push(resolve));
    this.kick();
    return parked;
  }

  /** Let a paused vCPU run again. */
  resume(): void {
    this.pauseRequested = false;
    // A pause() still waiting for the vCPU to park is cancelled: settle it rather than leave it hanging.
    this.settlePauseWaiters();
    if (this.parked && this.resumeSignal) {
      const go = this.resumeSignal;
      this.resumeSignal = undefined;
      this.parked = false;
      go();
    }
  }

  /** Kick the vCPU out and end it. Resolves like finished() once it has ended. */
  stop(): Promise<VcpuStop> {
    if (!this.started) {
      this.started = true;
      this.end({ vcpuId: this.id, reason: 'stopped' });
      return this.done;
    }
    if (!this.ended) {
      this.stopRequested = true;
      if (this.parked) this.resume();
      else this.kick();
    }
    return this.done;
  }

  /** Force the vCPU out of KVM_RUN (see the file comment). Safe at any time. */
  private kick(): void {
    this.vcpu.immediateExit = true;
    if (Atomics.load(this.ctl, CTL_READY) === 1) {
      const tid = new BigInt64Array(this.control)[CTL_THREAD_ID_BIGINT_INDEX]!;
      pthreadKill(BigInt.asUintN(64, tid), SIGUSR2);
    }
  }

  private async loop(): Promise<void> {
    let burst = 0;
    try {
      for (;;) {
        if (burst < MAX_SYNC_BURST && this.syncWaitMs > 0 && Atomics.wait(this.ctl, CTL_STATE, STATE_RUN, this.syncWaitMs) !== 'timed-out') {
          // The next exit came quickly: handle it without a trip through the event loop.
          burst++;
        } else {
          burst = 0;
          const w = waitAsync(this.ctl, CTL_STATE, STATE_RUN);
          if (w.async) await w.value;
        }
        if (this.ended) return;
        // A wake-up is not proof of an exit: a notify the worker issued for the previous exit can
        // arrive after we handled it and let the worker run again. Only EXITED means an exit.
        if (Atomics.load(this.ctl, CTL_STATE) !== STATE_EXITED) continue;
        this.counts.total++;
        const outcome = this.handleExit();
        if (outcome === 'park') {
          await this.park();
          if (this.stopRequested) {
            this.end({ vcpuId: this.id, reason: 'stopped' });
            return;
          }
        } else if (outcome !== 'continue') {
          this.end(outcome);
          return;
        }
        Atomics.store(this.ctl, CTL_STATE, STATE_RUN);
        Atomics.notify(this.ctl, CTL_STATE);
      }
    } catch (e) {
      this.fail(e instanceof Error ? e : new Error(String(e)));
    }
  }

  private settlePauseWaiters(): void {
    const waiters = this.parkWaiters;
    this.parkWaiters = [];
    for (const w of waiters) w();
  }

  private park(): Promise<void> {
    this.parked = true;
    this.settlePauseWaiters();
    return new Promise<void>((resolve) => {
      this.resumeSignal = resolve;
    });
  }

  /** Handle the exit the worker just reported. Runs on every exit: keep it allocation-free. */
  private handleExit(): 'continue' | 'park' | VcpuStop {
    const result = Atomics.load(this.ctl, CTL_RESULT);
    const run = this.vcpu.runView;
    let reason: number;
    if (result === 0) reason = run.getUint32(RUN.exitReason, true);
    else if (result === errno.EINTR || result === errno.EAGAIN) reason = ExitReason.INTR;
    else throw this.exitError({ reason: -1, name: `KVM_RUN failure ${errnoName(result)}`, detail: runFailureHint(result) });

    switch (reason) {
      case ExitReason.IO:
        this.counts.io++;
        this.handleIo(run);
        break;
      case ExitReason.MMIO:
        this.counts.mmio++;
        this.handleMmio(run);
        break;
      case ExitReason.INTR:
        this.counts.intr++;
        // The kick has been delivered; clear the flag or every later KVM_RUN returns at once.
        this.vcpu.immediateExit = false;
        break;
      case ExitReason.HLT:
        return { vcpuId: this.id, reason: 'hlt' };
      case ExitReason.SYSTEM_EVENT: {
        const type = run.getUint32(RUN.systemEventType, true);
        if (type === SystemEventType.SHUTDOWN) return { vcpuId: this.id, reason: 'poweroff' };
        if (type === SystemEventType.RESET) return { vcpuId: this.id, reason: 'reset' };
        throw this.exitError(describeExit(run));
      }
      default:
        throw this.exitError(describeExit(run));
    }
    if (this.stopRequested) return { vcpuId: this.id, reason: 'stopped' };
    if (this.pauseRequested) return 'park';
    return 'continue';
  }

  private handleIo(run: DataView): void {
    const size = run.getUint8(RUN.ioSize);
    const port = run.getUint16(RUN.ioPort, true);
    const count = run.getUint32(RUN.ioCount, true);
    const dataOffset = Number(run.getBigUint64(RUN.ioDataOffset, true));
    const out = run.getUint8(RUN.ioDirection) === KVM_EXIT_IO_OUT;
    for (let i = 0; i < count; i++) {
      // String I/O (rep ins/outs) packs `count` items of `size` bytes back to back.
      const at = dataOffset + i * size;
      const data = at === PIO_DATA_OFFSET && size <= 8 ? this.pioViews[size]! : this.vcpu.runBytes.subarray(at, at + size);
      if (out) this.ioBus.write(port, data);
      else this.ioBus.read(port, data);
    }
  }

  private handleMmio(run: DataView): void {
    const addr = Number(run.getBigUint64(RUN.mmioPhysAddr, true));
    const len = run.getUint32(RUN.mmioLen, true);
    const data = this.mmioViews[Math.min(len, 8)]!;
    if (run.getUint8(RUN.mmioIsWrite)) this.mmioBus.write(addr, data);
    else this.mmioBus.read(addr, data);
  }

  /** A VcpuExitError with the registers, read while the worker is parked. */
  private exitError(exit: ExitDescription): VcpuExitError {
    let regs: Regs | undefined;
    let sregs: Sregs | undefined;
    try {
      regs = this.vcpu.getRegs();
      sregs = this.vcpu.getSregs();
    } catch {
      // Registers are a diagnostic extra; the exit itself is the error to report.
    }
    return new VcpuExitError(this.id, exit, regs, sregs);
  }

  private end(stop: VcpuStop): void {
    if (this.ended) return;
    this.ended = true;
    this.releaseWorker();
    this.resolveDone(stop);
  }

  private fail(e: Error): void {
    if (this.ended) return;
    this.ended = true;
    this.releaseWorker();
    this.rejectDone(e);
  }

  private releaseWorker(): void {
    this.settlePauseWaiters();
    const previous = Atomics.exchange(this.ctl, CTL_STATE, STATE_QUIT);
    Atomics.notify(this.ctl, CTL_STATE);
    // A worker still inside KVM_RUN (a failure reported from elsewhere) must be kicked to see QUIT.
    if (previous === STATE_RUN) this.kick();
  }

  /** Resolves when the worker thread has exited (after the vCPU ended). */
  async joined(): Promise<void> {
    const w = this.worker;
    if (!w || w.threadId < 0) return;
    await new Promise<void>((resolve) => {
      w.once('exit', () => resolve());
      if (w.threadId < 0) resolve();
    });
  }
}

function runFailureHint(err: number): string {
  if (err === errno.EFAULT) return 'KVM could not access guest memory or the run area (a memory slot points at unmapped host memory?)';
  if (err === errno.EINVAL) return 'KVM rejected the vCPU state (registers set inconsistently?)';
  if (err === errno.ENOEXEC) return 'KVM refused to run the vCPU: its state is invalid';
  return 'KVM_RUN failed unexpectedly';
}
