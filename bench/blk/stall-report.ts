/**
 * What a VMM process was doing when its boot timed out, read from outside before it is killed:
 * which threads ran during a short window and which slept where, and whether its guest still
 * exited to KVM. A boot that hangs leaves only "timed out" otherwise; these lines tell a VMM
 * stuck in a loop (a thread busy outside guest mode), a guest spinning (vCPU time in guest mode),
 * and everything asleep waiting for an event that never came (no CPU, no exits) apart.
 *
 * Sources: /proc/PID/task/TID/{stat,comm,wchan} (proc(5)), KVM's debugfs counters
 * (kvm-stats.ts) and, where the process has a VM and tracefs is there, KVM's trace events.
 */
import { readFileSync } from 'node:fs';
import { statField } from '../../src/util/proc-stat.js';
import { type CpuSnapshot, cpuSnapshot } from './proc-cpu.js';
import { kvmStatsDelta, kvmStatsSnapshot } from './kvm-stats.js';
import { TraceWindow, parseTraceLine } from './tracefs.js';

/**
 * KVM's trace events (arch/x86/kvm/trace.h): every exit with its reason and guest RIP, each
 * instruction KVM emulates, and each MSR access it handles (a guest looping on the x2APIC or the
 * TSC deadline shows up there: on AMD without NRIPS, as QEMU's emulated AMD-V is, every MSR exit
 * is also an emulated instruction).
 */
const KVM_TRACE_EVENTS = ['kvm/kvm_exit', 'kvm/kvm_emulate_insn', 'kvm/kvm_msr'] as const;
/** How long the trace events are on: a spinning guest exits thousands of times in that. */
const TRACE_WINDOW_MS = 100;
/** Distinct exits and emulated instructions listed per event, most frequent first. */
const TRACE_TOP = 3;

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
  return statField(stat, 3) ?? '?';
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
  const kvmAfter = kvmStatsSnapshot(pid);
  return [...threadLines(pid, before, after, windowMs), ...kvmLine(kvmBefore, kvmAfter, windowMs), ...(kvmAfter !== undefined ? await traceLines(after) : [])];
}

/**
 * Where the guest exits, when it does: KVM's kvm_exit, kvm_emulate_insn and kvm_msr trace events for the
 * process's threads over TRACE_WINDOW_MS, grouped (reason and RIP; the emulated instruction's
 * bytes) and counted. A guest stuck re-running one instruction shows up as one line with all the
 * exits. Nothing when tracefs is not there or not writable (only root may trace).
 */
async function traceLines(snapshot: CpuSnapshot): Promise<string[]> {
  let text: string;
  try {
    const window = TraceWindow.start(KVM_TRACE_EVENTS);
    if (window === undefined) return [];
    try {
      await new Promise((resolve) => setTimeout(resolve, TRACE_WINDOW_MS));
    } finally {
      text = window.stop();
    }
  } catch (e) {
    return [`stall: KVM trace events unusable: ${e instanceof Error ? e.message : String(e)}`];
  }
  return summarizeKvmTrace(text, new Set(snapshot.threads.keys()), TRACE_WINDOW_MS);
}

/**
 * A kvm_exit's reason and guest RIP: its info fields vary from exit to exit (error codes,
 * interrupt info), except for a nested page fault, whose info2 is the guest-physical address
 * touched (AMD APM vol. 2, 15.25.6: EXITINFO2), kept as `gpa`: it names the device a guest polls.
 */
function exitKey(details: string): string {
  const m = /reason (\S+)(?: \S+)* rip (0x[0-9a-f]+)/.exec(details);
  if (m === null) return details;
  const gpa = m[1] === 'npf' ? / info2 (0x[0-9a-f]+)/.exec(details)?.[1] : undefined;
  return `reason ${m[1]} rip ${m[2]}${gpa !== undefined ? ` gpa ${gpa}` : ''}`;
}

/**
 * kvm_exit, kvm_emulate_insn and kvm_msr lines of `text` (the tracefs `trace` file) from threads `tids`:
 * one line per event, its count and its most frequent exits (reason and RIP) or instructions.
 */
export function summarizeKvmTrace(text: string, tids: ReadonlySet<number>, windowMs: number): string[] {
  // A trace line: "<comm>-<tid> [cpu] flags timestamp: event: details" (Documentation/trace/ftrace.rst).
  const counts = new Map<string, Map<string, number>>();
  for (const line of text.split('\n')) {
    const t = parseTraceLine(line);
    if (t === undefined || !tids.has(t.tid) || !(KVM_TRACE_EVENTS as readonly string[]).includes(`kvm/${t.event}`)) continue;
    // An MSR access by direction and index ("msr_write 6e0"), whatever the value.
    const key = t.event === 'kvm_exit' ? exitKey(t.details) : t.event === 'kvm_msr' ? t.details.replace(/ = .*$/, '') : t.details;
    const byKey = counts.get(t.event) ?? new Map<string, number>();
    byKey.set(key, (byKey.get(key) ?? 0) + 1);
    counts.set(t.event, byKey);
  }
  if (counts.size === 0) return [`stall: KVM trace over ${windowMs} ms: no exits`];
  return [...counts].map(([event, byKey]) => {
    const total = [...byKey.values()].reduce((a, b) => a + b, 0);
    const top = [...byKey].sort((a, b) => b[1] - a[1]).slice(0, TRACE_TOP);
    return `stall: ${event} over ${windowMs} ms: ${total}; ${top.map(([k, n]) => `${n}× ${k}`).join('; ')}`;
  });
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
