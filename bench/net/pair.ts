/**
 * Pinging guests, one or two at a time, and the two guests of a round taking turns.
 *
 * Why two at a time: the nested host's speed moves by 15–20 % from one of its boots to the next,
 * and within one boot from minute to minute, as much as the two VMMs' latencies differ. Guests
 * pinged one after the other are measured under different conditions; two guests up at once, on
 * taps of their own, pinged in the same window with their requests interleaved (one ping process
 * each, the second started half an interval after the first, so their round trips never overlap),
 * see the same machine at the same moments. The throughput tests still run one guest at a time:
 * the guest whose turn has not come idles in `nc -l` (guest-script.ts NET-TESTS-WAIT).
 */
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Mark } from '../blk/console-run.js';
import { cpuDelta } from '../blk/proc-cpu.js';
import { kvmStatsDelta } from '../blk/kvm-stats.js';
import { TraceWindow } from '../blk/tracefs.js';
import { parsePing } from './parse.js';
import { PING_TIMELINE_EVENTS, PING_TRACE_EVENTS, type PingPhases, pingPhases } from './ping-trace.js';
import type { PingSample, VmmKind } from './samples.js';

const execFileAsync = promisify(execFile);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A guest waiting to be pinged: its VMM, its tap and address, and its VMM's clock and counters. */
export interface PingMember {
  readonly vmm: VmmKind;
  readonly tap: string;
  readonly guestAddress: string;
  /** The clock and the VMM's CPU time and KVM counters now. */
  readonly mark: () => Mark;
}

export interface PingPlan {
  readonly pings: number;
  readonly intervalSeconds: number;
  readonly round: number;
  /** Keep the raw trace here, with PING_TIMELINE_EVENTS too. */
  readonly traceDir?: string;
  readonly log: (line: string) => void;
}

/**
 * `ping -c N -i I` each guest, all in one window: member k starts k/n of an interval after the
 * first, so the round trips interleave. One kernel trace covers the window; each guest's phases
 * are cut from it by its own tap. Samples in the order of `members`.
 */
export async function pingGuests(members: readonly PingMember[], plan: PingPlan): Promise<PingSample[]> {
  const names = members.map((m) => m.vmm);
  plan.log(`  ${names.join(' and ')}: pinging ${members.length > 1 ? 'the guests, interleaved,' : 'the guest'} ${plan.pings} times`);
  const trace = TraceWindow.start(plan.traceDir === undefined ? PING_TRACE_EVENTS : [...PING_TRACE_EVENTS, ...PING_TIMELINE_EVENTS], 'mono');
  const raw = await Promise.all(
    members.map(async (m, k) => {
      await sleep((k * plan.intervalSeconds * 1000) / members.length);
      return pingOne(m, plan);
    }),
  );
  let traced: string | undefined;
  try {
    traced = trace?.stop();
    if (traced !== undefined && plan.traceDir !== undefined) writeFileSync(join(plan.traceDir, `ping-trace-${names.join('-')}-${plan.round + 1}.txt`), traced);
  } catch (e) {
    // The phases are extra; the round trips ping measured stand without them.
    plan.log(`  ping trace unreadable: ${(e as Error).message}`);
  }
  return members.map((m, k) => {
    const r = raw[k]!;
    const p = parsePing(r.text);
    let problem = r.problem;
    if (problem === undefined && p.received < p.transmitted) problem = `${p.transmitted - p.received} of ${p.transmitted} pings lost`;
    const cpu = r.begin.cpu !== undefined && r.end.cpu !== undefined ? cpuDelta(r.begin.cpu, r.end.cpu) : undefined;
    const kvm = r.begin.kvm !== undefined && r.end.kvm !== undefined ? kvmStatsDelta(r.begin.kvm, r.end.kvm) : undefined;
    const phases: PingPhases | undefined = traced !== undefined ? pingPhases(traced, m.tap) : undefined;
    const alongside = names.filter((v) => v !== m.vmm);
    plan.log(`  ${m.vmm}: ping ${p.received}/${p.transmitted}${p.summary !== undefined ? `, ${p.summary}` : ''}`);
    return {
      ok: problem === undefined && p.rttMs.length > 0,
      ...(problem !== undefined ? { problem } : {}),
      ...p,
      ...(cpu !== undefined ? { cpu } : {}),
      ...(kvm !== undefined ? { kvm } : {}),
      ...(phases !== undefined ? { phases } : {}),
      windowMs: r.end.at - r.begin.at,
      alongside,
    };
  });
}

async function pingOne(m: PingMember, plan: PingPlan): Promise<{ text: string; problem?: string; begin: Mark; end: Mark }> {
  const begin = m.mark();
  try {
    const r = await execFileAsync('ping', ['-n', '-c', String(plan.pings), '-i', String(plan.intervalSeconds), '-W', '5', m.guestAddress], { encoding: 'utf8', timeout: 60_000 + plan.pings * (plan.intervalSeconds * 1000 + 5000) });
    return { text: r.stdout, begin, end: m.mark() };
  } catch (e) {
    const err = e as { stdout?: string; message: string };
    return { text: err.stdout ?? '', problem: `ping failed: ${err.message.split('\n')[0] ?? ''}`, begin, end: m.mark() };
  }
}

/**
 * The guests of one round, booted at once: their pings wait for each other (a guest whose partner
 * is gone, its boot over, is pinged alone), and they run their tests in turn, in `order`, each
 * once every guest before it is gone. A guest booted on its own (--sequential) has a pair of one:
 * pinged as soon as it waits, its turn at once. measure.ts calls `left` when a VMM's boot is over, however
 * it ended (retries included), so no guest waits on a partner that will never come.
 */
export class GuestPair {
  private readonly arrived: { member: PingMember; resolve: (s: PingSample) => void; reject: (e: unknown) => void }[] = [];
  private readonly gone = new Set<VmmKind>();
  private readonly turns: { vmm: VmmKind; resolve: () => void }[] = [];

  constructor(
    /** The round's VMMs, in the order they run their tests. */
    readonly order: readonly VmmKind[],
    private readonly pingAll: (members: readonly PingMember[]) => Promise<PingSample[]>,
  ) {}

  /** A guest ready to be pinged: resolves with its sample once it and every partner still running were pinged together. */
  ping(member: PingMember): Promise<PingSample> {
    return new Promise((resolve, reject) => {
      this.arrived.push({ member, resolve, reject });
      this.pingIfAllThere();
    });
  }

  /** Resolves when every VMM before `vmm` in `order` is gone. */
  testsTurn(vmm: VmmKind): Promise<void> {
    return new Promise((resolve) => {
      this.turns.push({ vmm, resolve });
      this.startTurns();
    });
  }

  /** `vmm`'s boot is over: nobody waits for it any more. */
  left(vmm: VmmKind): void {
    this.gone.add(vmm);
    this.pingIfAllThere();
    this.startTurns();
  }

  private pingIfAllThere(): void {
    if (this.arrived.length === 0) return;
    const here = new Set(this.arrived.map((a) => a.member.vmm));
    if (this.order.some((v) => !here.has(v) && !this.gone.has(v))) return;
    // In the round's order (which alternates), not the order of arrival: which guest's ping
    // leads the interleave changes from round to round, whichever VMM boots faster.
    const batch = this.arrived.splice(0).sort((a, b) => this.order.indexOf(a.member.vmm) - this.order.indexOf(b.member.vmm));
    this.pingAll(batch.map((a) => a.member)).then(
      (samples) => batch.forEach((a, k) => a.resolve(samples[k]!)),
      (e: unknown) => batch.forEach((a) => a.reject(e)),
    );
  }

  private startTurns(): void {
    for (let k = this.turns.length - 1; k >= 0; k--) {
      const t = this.turns[k]!;
      const before = this.order.slice(0, Math.max(0, this.order.indexOf(t.vmm)));
      if (before.every((v) => this.gone.has(v))) {
        this.turns.splice(k, 1);
        t.resolve();
      }
    }
  }
}
