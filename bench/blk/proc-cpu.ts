/**
 * A VMM process's CPU time from /proc, split into what the guest ran and what the VMM itself cost.
 *
 * utime + stime of /proc/PID/stat is the whole process: Linux accounts the time a vCPU thread
 * spends in guest mode (KVM_RUN, guest running) to that thread's utime *and* to its guest_time
 * (field 43). So the VMM's own cost is utime + stime − guest_time: exit handling, device
 * emulation, I/O threads, the event loop. Per thread (/proc/PID/task/TID/stat), a thread with
 * guest time is a vCPU thread (QEMU names them "CPU n/KVM"; Node's workers are all called
 * "node", so the guest time is the only tell that works for both); what a vCPU thread spends
 * outside guest mode (in-kernel exits, halt polling, for QEMU also MMIO emulation) is kept apart
 * from the other threads (tsvmm: the main event loop, libuv's pool doing file I/O; QEMU: its main
 * loop and its aio worker threads). Threads that exited are in the process total but in no
 * thread's line, so "other threads" is the process total minus the vCPU threads.
 *
 * The kernel counts in clock ticks (USER_HZ, 100 on every x86 Linux build): 10 ms resolution,
 * fine over a job of several seconds.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { statFieldsFrom3 } from '../../src/util/proc-stat.js';

const USER_HZ = 100;

export interface CpuTimes {
  readonly utimeMs: number;
  readonly stimeMs: number;
  readonly guestMs: number;
}

export interface CpuSnapshot {
  readonly process: CpuTimes;
  /** Per live thread, by thread id. */
  readonly threads: ReadonlyMap<number, CpuTimes>;
}

/** Fields of a /proc stat line after the command name, whose parentheses may hold spaces. */
export function parseStat(text: string): CpuTimes {
  // utime is field 14, stime 15, guest_time 43.
  const rest = statFieldsFrom3(text);
  const tick = (field: number): number => (Number(rest[field - 3]) * 1000) / USER_HZ;
  return { utimeMs: tick(14), stimeMs: tick(15), guestMs: tick(43) };
}

/** Undefined when the process is gone. */
export function cpuSnapshot(pid: number): CpuSnapshot | undefined {
  try {
    const process = parseStat(readFileSync(`/proc/${pid}/stat`, 'utf8'));
    const threads = new Map<number, CpuTimes>();
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        threads.set(Number(tid), parseStat(readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8')));
      } catch {
        // The thread ended between listing and reading: its time is in the process total.
      }
    }
    return { process, threads };
  } catch {
    return undefined;
  }
}

/** CPU time over a window, in milliseconds. */
export interface CpuDelta {
  /** utime + stime of the whole process: what the issue calls the VMM's CPU. */
  readonly totalMs: number;
  /** Of which the guest ran (vCPU threads in guest mode). */
  readonly guestMs: number;
  /** vCPU threads outside guest mode. */
  readonly vcpuHostMs: number;
  /** Every other thread, including ones that exited during the window. */
  readonly otherThreadsMs: number;
  /** How many threads had guest time in the window (the vCPU threads found). */
  readonly vcpuThreads: number;
  /** Threads alive at the end of the window. */
  readonly threads: number;
}

const busy = (t: CpuTimes): number => t.utimeMs + t.stimeMs;

export function cpuDelta(a: CpuSnapshot, b: CpuSnapshot): CpuDelta {
  const totalMs = busy(b.process) - busy(a.process);
  const guestMs = b.process.guestMs - a.process.guestMs;
  let vcpuBusy = 0;
  let vcpuGuest = 0;
  let vcpuThreads = 0;
  for (const [tid, end] of b.threads) {
    if (end.guestMs <= 0) continue;
    // A vCPU thread exists from boot, long before any window starts; one missing at the start counts from zero.
    const start = a.threads.get(tid) ?? { utimeMs: 0, stimeMs: 0, guestMs: 0 };
    vcpuThreads++;
    vcpuBusy += busy(end) - busy(start);
    vcpuGuest += end.guestMs - start.guestMs;
  }
  return {
    totalMs,
    guestMs,
    vcpuHostMs: Math.max(0, vcpuBusy - vcpuGuest),
    otherThreadsMs: Math.max(0, totalMs - vcpuBusy),
    vcpuThreads,
    threads: b.threads.size,
  };
}
