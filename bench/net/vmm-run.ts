/**
 * One guest boot under one VMM: spawn it, follow the guest script's markers on its console
 * (guest-script.ts), ping the guest from the host when it waits for that (together with the other
 * guest of its round when there is one, pair.ts), let it run its tests when its turn comes, read the
 * VMM process's CPU time the moment each marker arrives, and collect iperf3's JSON per test.
 *
 * Everything here is asynchronous (child processes, sockets): the harness shares the measuring
 * host's CPUs with the VMM and must not stall on anything while a test runs. The VMM is a child
 * process (tsvmm's CLI or QEMU), so /proc/PID counts the VMM alone, not this harness.
 */
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { type Mark, NOTES_KEPT, runConsole, type Sections } from '../blk/console-run.js';
import { cpuDelta } from '../blk/proc-cpu.js';
import { kvmStatsDelta } from '../blk/kvm-stats.js';
import type { Invocation } from '../blk/vmms.js';
import { directionOf, MARK, PING_DONE_PORT } from './guest-script.js';
import type { GuestPair, PingMember } from './pair.js';
import { parseIperfJson } from './parse.js';
import type { IperfSample, NetRunSample, PingSample, TapCounters, VmmKind } from './samples.js';

export interface NetRunOptions {
  readonly vmm: VmmKind;
  readonly round: number;
  readonly invocation: Invocation;
  /** The tests the guest was told to run, in order (testNames). */
  readonly tests: readonly string[];
  /** The tap both VMMs use: its drop counter is read around each test. */
  readonly tap: string;
  readonly guestAddress: string;
  readonly timeoutMs: number;
  /** ConsoleRunOptions.silenceLimitMs: the longest the guest's script may print nothing once it is up. */
  readonly silenceLimitMs?: number;
  /** ConsoleRunOptions.upLimitMs: the longest the guest may take to come up. */
  readonly upLimitMs?: number;
  readonly cpuModel?: string;
  /** The guests of this boot's round (pair.ts): pinged together, tests in turn; a guest booted alone has a pair of one. */
  readonly pair: GuestPair;
  readonly log: (line: string) => void;
}

interface TestState extends Sections {
  begin?: Mark;
  end?: Mark & { status: number };
  tapBegin?: TapCounters;
  tapEnd?: TapCounters;
  guestBefore?: Record<string, number>;
  guestAfter?: Record<string, number>;
}

/** The tap's movement over a test, as IperfSample fields. */
function tapDelta(a: TapCounters, b: TapCounters): Pick<IperfSample, 'tapDropped' | 'tapFrames'> {
  return {
    tapDropped: b.txDropped - a.txDropped,
    tapFrames: { toVmmFrames: b.txFrames - a.txFrames, toVmmBytes: b.txBytes - a.txBytes, fromVmmFrames: b.rxFrames - a.rxFrames, fromVmmBytes: b.rxBytes - a.rxBytes },
  };
}

/** after − before for the counters both have. */
function counterDelta(before: Readonly<Record<string, number>>, after: Readonly<Record<string, number>>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(after)) if (before[k] !== undefined) out[k] = v - before[k];
  return out;
}

/** `name phase k=v k=v …` of a NET-STAT line. */
function parseGuestStat(rest: string): { name: string; phase: string; counters: Record<string, number> } {
  const [name = '', phase = '', ...pairs] = rest.trim().split(/\s+/);
  const counters: Record<string, number> = {};
  for (const kv of pairs) {
    const i = kv.indexOf('=');
    const v = Number(kv.slice(i + 1));
    if (i > 0 && kv.slice(i + 1) !== '' && Number.isFinite(v)) counters[kv.slice(0, i)] = v;
  }
  return { name, phase, counters };
}

/**
 * The tap's own counters (/sys/class/net/TAP/statistics), named from the tap's side: tx is what
 * the host sent towards the VMM, rx what the VMM wrote. A GSO frame counts once, at its full
 * length, so bytes / frames is the size of the frames the VMM moved. tx_dropped: frames the tap
 * discarded because its queue to the VMM was full (the VMM did not read in time). Sysfs reads,
 * cheap enough to do synchronously at a marker; undefined when one cannot be read.
 */
function tapCounters(tap: string): TapCounters | undefined {
  const read = (name: string): number => Number(readFileSync(`/sys/class/net/${tap}/statistics/${name}`, 'utf8').trim());
  try {
    const c = { txDropped: read('tx_dropped'), txFrames: read('tx_packets'), txBytes: read('tx_bytes'), rxFrames: read('rx_packets'), rxBytes: read('rx_bytes') };
    return Object.values(c).every(Number.isFinite) ? c : undefined;
  } catch {
    return undefined;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Connect to the guest's `nc -l` once (retrying while it is not listening yet) and close: the guest's wait (for the ping to end, for its turn) ends. */
async function releaseGuest(address: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await new Promise<void>((resolve, reject) => {
        const s = connect(PING_DONE_PORT, address, () => {
          s.end();
          resolve();
        });
        s.setTimeout(10_000, () => s.destroy(new Error('connect timed out')));
        s.on('error', reject);
      });
      return;
    } catch (e) {
      if (attempt >= 30) throw e;
      await sleep(1000);
    }
  }
}

export async function runVmm(o: NetRunOptions): Promise<NetRunSample> {
  const states = new Map<string, TestState>(o.tests.map((t) => [t, {}]));
  const notes: string[] = [];
  let ping: PingSample | undefined;
  let pingTask: Promise<void> | undefined;
  let turnTask: Promise<void> | undefined;

  const release = async (what: string): Promise<void> => {
    try {
      await releaseGuest(o.guestAddress);
    } catch (e) {
      notes.push(`could not end the guest's wait ${what}: ${(e as Error).message}`);
    }
  };
  const runPing = async (mark: () => Mark): Promise<void> => {
    const member: PingMember = { vmm: o.vmm, tap: o.tap, guestAddress: o.guestAddress, mark };
    try {
      ping = await o.pair.ping(member);
    } catch (e) {
      notes.push(`ping: ${(e as Error).message}`);
    }
    await release('for the ping');
  };
  const runTestsTurn = async (): Promise<void> => {
    const waitedFrom = Date.now();
    await o.pair.testsTurn(o.vmm);
    const waitedS = (Date.now() - waitedFrom) / 1000;
    if (waitedS >= 1) o.log(`  ${o.vmm}: its turn to run the tests came after ${waitedS.toFixed(0)} s`);
    await release('for its turn');
  };

  const onLine = (line: string, mark: () => Mark): void => {
    const test = (prefix: string): TestState | undefined => states.get(line.slice(prefix.length).split(' ')[0] ?? '');
    if (line.startsWith(MARK.begin)) {
      const s = test(MARK.begin);
      if (s !== undefined) {
        s.begin = mark();
        s.tapBegin = tapCounters(o.tap);
        o.log(`  ${o.vmm}: ${line.slice(MARK.begin.length)} running`);
      }
    } else if (line.startsWith(MARK.end)) {
      const m = mark();
      const s = test(MARK.end);
      if (s !== undefined) {
        s.end = { ...m, status: Number(line.split(' ')[2]) };
        s.tapEnd = tapCounters(o.tap);
      }
    } else if (line.startsWith(MARK.stat)) {
      const g = parseGuestStat(line.slice(MARK.stat.length));
      const s = states.get(g.name);
      if (s !== undefined && g.phase === 'before') s.guestBefore = g.counters;
      else if (s !== undefined && g.phase === 'after') s.guestAfter = g.counters;
    } else if (line.startsWith(MARK.warmup)) {
      const [, , g2h, h2g] = line.split(' ');
      // Worth a note, not a failed boot: the tests after it still measure (a bit colder, perhaps).
      if (g2h !== '0' || h2g !== '0') notes.push(`the warm-up iperf3 exited with status ${g2h ?? '?'} (guest → host) and ${h2g ?? '?'} (host → guest)`);
    } else if (line === MARK.pingBegin) {
      pingTask ??= runPing(mark);
    } else if (line === MARK.testsWait) {
      turnTask ??= runTestsTurn();
    }
  };

  const end = await runConsole({
    ...o,
    prefix: 'NET-',
    marks: MARK,
    sections: (name) => states.get(name),
    onLine,
    describeInfo: (info) => `eth0 on ${info['bus'] ?? '?'}, features ${info['features'] ?? '?'}`,
    // The last console lines, whatever they say: a boot that fails tells why there.
    keepLine: (line) => line.trim() !== '',
  });
  await pingTask;
  await turnTask;
  const tests = o.tests.map((name) => testSample(name, states.get(name)!));
  const problems = [...end.problems];
  if (ping === undefined) problems.push('no ping phase');
  else if (!ping.ok) problems.push(ping.problem ?? 'ping failed');
  const failed = tests.filter((t) => !t.ok).map((t) => t.name);
  if (failed.length > 0) problems.push(`failed tests: ${failed.join(', ')}`);
  return {
    ...end.sample,
    ok: problems.length === 0,
    ...(problems.length > 0 ? { problem: problems.join('; ') } : {}),
    notes: [...end.sample.notes, ...notes].slice(-NOTES_KEPT),
    ...(ping !== undefined ? { ping } : {}),
    tests,
  };
}

function testSample(name: string, s: TestState): IperfSample {
  const problems: string[] = [];
  if (s.begin === undefined) problems.push('never started');
  else if (s.end === undefined) problems.push('never ended');
  else if (s.end.status !== 0) problems.push(`iperf3 exited with status ${s.end.status}${s.errText ? `: ${s.errText.split('\n').slice(-3).join(' | ')}` : ''}`);
  let iperf: ReturnType<typeof parseIperfJson> | undefined;
  if (s.jsonText !== undefined) {
    try {
      iperf = parseIperfJson(s.jsonText);
    } catch (e) {
      if (s.end?.status === 0) problems.push(`unreadable iperf3 JSON: ${(e as Error).message}`);
    }
  } else if (s.end?.status === 0) {
    problems.push(s.json !== undefined ? 'iperf3 JSON did not decode (gzip + base64)' : 'no iperf3 JSON');
  }
  const cpu = s.begin?.cpu !== undefined && s.end?.cpu !== undefined ? cpuDelta(s.begin.cpu, s.end.cpu) : undefined;
  if (s.end !== undefined && cpu === undefined) problems.push('VMM CPU time could not be read');
  const kvm = s.begin?.kvm !== undefined && s.end?.kvm !== undefined ? kvmStatsDelta(s.begin.kvm, s.end.kvm) : undefined;
  const guestCounters = s.guestBefore !== undefined && s.guestAfter !== undefined ? counterDelta(s.guestBefore, s.guestAfter) : undefined;
  return {
    name,
    direction: directionOf(name),
    ok: problems.length === 0,
    ...(problems.length > 0 ? { problem: problems.join('; ') } : {}),
    ...(s.end !== undefined ? { iperfStatus: s.end.status } : {}),
    ...(iperf !== undefined ? { iperf } : {}),
    ...(cpu !== undefined ? { cpu } : {}),
    ...(kvm !== undefined ? { kvm } : {}),
    ...(guestCounters !== undefined ? { guestCounters } : {}),
    ...(s.begin !== undefined && s.end !== undefined ? { windowMs: s.end.at - s.begin.at } : {}),
    ...(s.tapBegin !== undefined && s.tapEnd !== undefined ? tapDelta(s.tapBegin, s.tapEnd) : {}),
  };
}
