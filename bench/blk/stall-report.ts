/**
 * What a VMM process was doing when its boot timed out, read from outside before it is killed:
 * which threads ran during a short window and which slept where, and whether its guest still
 * exited to KVM. A boot that hangs leaves only "timed out" otherwise; these lines tell a VMM
 * stuck in a loop (a thread busy outside guest mode), a guest spinning (vCPU time in guest mode),
 * and everything asleep waiting for an event that never came (no CPU, no exits) apart.
 *
 * Sources: /proc/PID/task/TID/{stat,comm,wchan} (proc(5)) and KVM's debugfs counters
 * (kvm-stats.ts).
 */
import { readFileSync } from 'node:fs';
import { type CpuSnapshot, cpuSnapshot } from './proc-cpu.js';
import { kvmStatsDelta, kvmStatsSnapshot } from './kvm-stats.js';

/** KVM counters worth a word in a stall report, in this order. */
const KVM_COUNTERS = ['exits', 'halt_exits', 'io_exits', 'mmio_exits', 'irq_injections', 'signal_exits', 'insn_emulation'] as const;

function readProc(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** A thread's state letter (proc(5) field 3) from its stat line. */
function threadState(pid: number, tid: number): string {
  const stat = readProc(`/proc/${pid}/task/${tid}/stat`);
  if (stat === undefined) return '?';
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0] ?? '?';
}

/**
 * Lines describing `pid` over `windowMs`: one per thread (name, state, kernel wait channel, CPU
 * and guest time in the window), then KVM's exit counters over the window. Empty when the process
 * is gone.
 */
export async function describeStall(pid: number, windowMs = 2000): Promise<string[]> {
  const before = cpuSnapshot(pid);
  const kvmBefore = kvmStatsSnapshot(pid);
  if (before === undefined) return [];
  await new Promise((resolve) => setTimeout(resolve, windowMs));
  const after = cpuSnapshot(pid);
  if (after === undefined) return [];
  return [...threadLines(pid, before, after, windowMs), ...kvmLine(kvmBefore, kvmStatsSnapshot(pid), windowMs)];
}

/**
 * One line for the main thread and for each thread that ran in the window or is not asleep; the
 * threads asleep without CPU (a VMM's idle pool threads) summed up in one line by wait channel.
 */
function threadLines(pid: number, before: CpuSnapshot, after: CpuSnapshot, windowMs: number): string[] {
  const lines: string[] = [];
  const idle = new Map<string, number>();
  for (const [tid, t] of after.threads) {
    const b = before.threads.get(tid);
    const cpuMs = b === undefined ? undefined : t.utimeMs + t.stimeMs - (b.utimeMs + b.stimeMs);
    const guestMs = b === undefined ? undefined : t.guestMs - b.guestMs;
    const state = threadState(pid, tid);
    const wchan = readProc(`/proc/${pid}/task/${tid}/wchan`);
    const where = wchan === undefined || wchan === '' || wchan === '0' ? '' : ` in ${wchan}`;
    if (tid !== pid && cpuMs === 0 && state === 'S') {
      const key = `${state}${where}`;
      idle.set(key, (idle.get(key) ?? 0) + 1);
      continue;
    }
    const name = readProc(`/proc/${pid}/task/${tid}/comm`) ?? '?';
    const cpu = cpuMs === undefined ? 'new' : `cpu ${cpuMs} ms${guestMs! > 0 ? ` (guest ${guestMs} ms)` : ''}`;
    lines.push(`stall: thread ${tid}${tid === pid ? ' (main)' : ''} ${name}: ${state}${where}, ${cpu} of ${windowMs} ms`);
  }
  if (idle.size > 0) lines.push(`stall: other threads idle (no CPU): ${[...idle].map(([k, n]) => `${n} ${k}`).join(', ')}`);
  return lines;
}

function kvmLine(before: ReturnType<typeof kvmStatsSnapshot>, after: ReturnType<typeof kvmStatsSnapshot>, windowMs: number): string[] {
  if (before === undefined || after === undefined) return ['stall: KVM counters unreadable (no debugfs)'];
  const delta = kvmStatsDelta(before, after);
  const parts = KVM_COUNTERS.filter((k) => delta[k] !== undefined).map((k) => `${k} ${delta[k]}`);
  return [`stall: KVM over ${windowMs} ms: ${parts.join(', ')}`];
}
