/**
 * The network benchmark's report: markdown with the target verdicts (issue #6: tsvmm at least
 * 1.0× QEMU's TCP throughput each way, and no worse ping latency), the VMM's CPU per GB moved and
 * where it goes, what the guest saw of the device, the setup, and SVG bar charts (bench/boot/svg.ts)
 * beside it, plus the raw result as JSON.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Summary, summarize } from '../boot/stats.js';
import { type BarChart, barChartSvg } from '../boot/svg.js';
import type { CpuDelta } from '../blk/proc-cpu.js';
import { KVM_STATS_SHOWN, type KvmStats } from '../blk/kvm-stats.js';
import { code, commandRows, machineRows, nestedRestartNote, ratio, ratioText, runRows } from '../blk/report.js';
import { DIRECTION_LABELS, DIRECTIONS, type Direction, GUEST_COUNTERS } from './guest-script.js';
import { percentile } from './parse.js';
import type { IperfSample, NetResult, VmmKind } from './samples.js';

/** Issue #6: at least QEMU's throughput, no worse latency. */
export const TARGET_RATIO = 1.0;

const VMM_LABELS: Record<VmmKind, string> = { tsvmm: 'tsvmm virtio-net (PCI, tap)', qemu: 'QEMU q35 virtio-net-pci (tap, vhost=off)' };
const COLORS: Record<VmmKind, string> = { tsvmm: '#2b7bb9', qemu: '#d9822b' };

const THROUGHPUT_METRICS = [
  'mbps',
  'cpuSecPerGb',
  'vmmSecPerGb',
  'guestSecPerGb',
  'vcpuHostSecPerGb',
  'otherSecPerGb',
  'vmmCpuPct',
  'retransmits',
  'tapDropped',
  'guestIperfCpuPct',
  'dataFrameBytes',
  'ackFrames',
] as const;
type ThroughputMetric = (typeof THROUGHPUT_METRICS)[number];
type DirectionSummaries = { readonly [M in ThroughputMetric]?: Summary };

function testValues(t: IperfSample): { readonly [M in ThroughputMetric]?: number } {
  const i = t.iperf;
  if (!t.ok || i === undefined) return {};
  const gb = i.bytesReceived / 1e9;
  const perGb = (ms: number | undefined): number | undefined => (ms === undefined || gb <= 0 ? undefined : ms / 1000 / gb);
  const c: CpuDelta | undefined = t.cpu;
  return {
    mbps: i.bitsPerSecond / 1e6,
    cpuSecPerGb: perGb(c?.totalMs),
    vmmSecPerGb: perGb(c === undefined ? undefined : c.totalMs - c.guestMs),
    guestSecPerGb: perGb(c?.guestMs),
    vcpuHostSecPerGb: perGb(c?.vcpuHostMs),
    otherSecPerGb: perGb(c?.otherThreadsMs),
    ...(c !== undefined && t.windowMs !== undefined && t.windowMs > 0 ? { vmmCpuPct: (100 * c.totalMs) / t.windowMs } : {}),
    ...(i.retransmits !== undefined ? { retransmits: i.retransmits } : {}),
    ...(t.tapDropped !== undefined ? { tapDropped: t.tapDropped } : {}),
    ...(i.guestIperfCpuPct !== undefined ? { guestIperfCpuPct: i.guestIperfCpuPct } : {}),
    ...frameValues(t),
  };
}

/**
 * The tap's view of a test: the average size of the frames carrying the data (a GSO frame counts
 * once, whole, so larger means fewer frames and fewer per-frame costs for the VMM), and how many
 * frames went the other way (ACKs) per MB of data.
 */
function frameValues(t: IperfSample): { dataFrameBytes?: number; ackFrames?: number } {
  const f = t.tapFrames;
  if (f === undefined) return {};
  const [dataFrames, dataBytes, ackFrames] = t.direction === 'h2g' ? [f.toVmmFrames, f.toVmmBytes, f.fromVmmFrames] : [f.fromVmmFrames, f.fromVmmBytes, f.toVmmFrames];
  if (dataFrames <= 0) return {};
  return { dataFrameBytes: dataBytes / dataFrames, ackFrames: (ackFrames * 1e6) / dataBytes };
}

/** summaries[vmm][direction][metric] over every successful test of every boot. */
export function summarizeThroughput(result: NetResult): Record<VmmKind, Record<Direction, DirectionSummaries>> {
  const out = { tsvmm: { g2h: {}, h2g: {} }, qemu: { g2h: {}, h2g: {} } } as Record<VmmKind, Record<Direction, DirectionSummaries>>;
  for (const vmm of result.config.vmms) {
    for (const d of DIRECTIONS) {
      const values = result.runs.filter((r) => r.vmm === vmm).flatMap((r) => r.tests.filter((t) => t.direction === d)).map(testValues);
      const sums: { [M in ThroughputMetric]?: Summary } = {};
      for (const m of THROUGHPUT_METRICS) {
        const s = summarize(values.map((v) => v[m]));
        if (s !== undefined) sums[m] = s;
      }
      out[vmm][d] = sums;
    }
  }
  return out;
}

type LatencyStat = 'min' | 'avg' | 'p50' | 'p99' | 'max';
const LATENCY_STATS: readonly LatencyStat[] = ['min', 'avg', 'p50', 'p99', 'max'];

function latencyStats(rtt: readonly number[]): { readonly [S in LatencyStat]?: number } {
  if (rtt.length === 0) return {};
  return { min: Math.min(...rtt), avg: rtt.reduce((a, b) => a + b, 0) / rtt.length, p50: percentile(rtt, 50), p99: percentile(rtt, 99), max: Math.max(...rtt) };
}

/** Per VMM and statistic: the value over every reply of every boot pooled (as `median`), with the per-boot range as min–max. */
export function summarizeLatency(result: NetResult): Record<VmmKind, { stats: { [S in LatencyStat]?: Summary }; replies: number; sent: number; boots: number; vmmCpuPct?: Summary }> {
  const out = {} as Record<VmmKind, { stats: { [S in LatencyStat]?: Summary }; replies: number; sent: number; boots: number; vmmCpuPct?: Summary }>;
  for (const vmm of ['tsvmm', 'qemu'] as const) {
    const pings = result.runs.filter((r) => r.vmm === vmm && r.ping !== undefined && r.ping.rttMs.length > 0).map((r) => r.ping!);
    const pooled = latencyStats(pings.flatMap((p) => p.rttMs));
    const perBoot = pings.map((p) => latencyStats(p.rttMs));
    const stats: { [S in LatencyStat]?: Summary } = {};
    for (const s of LATENCY_STATS) {
      const range = summarize(perBoot.map((b) => b[s]));
      const v = pooled[s];
      if (range !== undefined && v !== undefined) stats[s] = { n: range.n, median: v, min: range.min, max: range.max };
    }
    const cpu = summarize(pings.map((p) => (p.cpu !== undefined && p.windowMs !== undefined && p.windowMs > 0 ? (100 * p.cpu.totalMs) / p.windowMs : undefined)));
    out[vmm] = {
      stats,
      replies: pings.reduce((a, p) => a + p.received, 0),
      sent: pings.reduce((a, p) => a + p.transmitted, 0),
      boots: pings.length,
      ...(cpu !== undefined ? { vmmCpuPct: cpu } : {}),
    };
  }
  return out;
}

/** A round whose two guests were pinged together: both VMMs' round trips, and how neighbouring requests compare. */
export interface PairedRound {
  readonly round: number;
  readonly tsvmm: readonly number[];
  readonly qemu: readonly number[];
  /** Pairs of k-th requests compared (only when neither guest lost a reply: otherwise the k-th replies are not neighbours). */
  readonly neighbours: number;
  /** Of those, the pairs where tsvmm's round trip was shorter. */
  readonly tsvmmSooner: number;
}

/** The rounds in which tsvmm's and QEMU's guests were pinged in the same window (PingSample.alongside). */
export function pairedRounds(result: NetResult): PairedRound[] {
  const out: PairedRound[] = [];
  const rounds = [...new Set(result.runs.map((r) => r.round))].sort((a, b) => a - b);
  for (const round of rounds) {
    const ping = (vmm: VmmKind, other: VmmKind) => result.runs.find((r) => r.round === round && r.vmm === vmm && r.ping !== undefined && r.ping.rttMs.length > 0 && r.ping.alongside?.includes(other) === true)?.ping;
    const t = ping('tsvmm', 'qemu');
    const q = ping('qemu', 'tsvmm');
    if (t === undefined || q === undefined) continue;
    const whole = t.received === t.transmitted && q.received === q.transmitted;
    const n = whole ? Math.min(t.rttMs.length, q.rttMs.length) : 0;
    let sooner = 0;
    for (let k = 0; k < n; k++) if (t.rttMs[k]! < q.rttMs[k]!) sooner++;
    out.push({ round, tsvmm: t.rttMs, qemu: q.rttMs, neighbours: n, tsvmmSooner: sooner });
  }
  return out;
}

/** The phases of ping-trace.ts, in round-trip order, with their column labels. */
const PING_PHASES = [
  { key: 'vmmReceiveUs', label: 'VMM receive (request on the tap → interrupt)' },
  { key: 'guestUs', label: 'guest (interrupt → transmit kick)' },
  { key: 'vmmTransmitUs', label: 'VMM transmit (kick → reply on the tap)' },
  { key: 'tapToTapUs', label: 'tap to tap' },
] as const;

/** One VMM's ping phases: round trips traced and matched, and each phase's summary. */
export interface PingPhaseSummary {
  readonly matched: number;
  readonly requests: number;
  readonly phases: Record<(typeof PING_PHASES)[number]['key'], Summary | undefined>;
}

/** Per VMM and phase: the median over every traced round trip of every boot pooled, with the per-boot medians' range as min–max. */
export function summarizePingPhases(result: NetResult): Partial<Record<VmmKind, PingPhaseSummary>> {
  const out: Partial<Record<VmmKind, PingPhaseSummary>> = {};
  for (const vmm of ['tsvmm', 'qemu'] as const) {
    const traced = result.runs.filter((r) => r.vmm === vmm && r.ping?.phases !== undefined && r.ping.phases.matched > 0).map((r) => r.ping!.phases!);
    if (traced.length === 0) continue;
    const phases = {} as PingPhaseSummary['phases'];
    for (const { key } of PING_PHASES) {
      const pooled = percentile(traced.flatMap((t) => t[key]), 50);
      const range = summarize(traced.map((t) => percentile(t[key], 50)));
      phases[key] = pooled === undefined || range === undefined ? undefined : { n: range.n, median: pooled, min: range.min, max: range.max };
    }
    out[vmm] = { matched: traced.reduce((a, t) => a + t.matched, 0), requests: traced.reduce((a, t) => a + t.requests, 0), phases };
  }
  return out;
}

const fmt = (digits: number) => (s: Summary | undefined): string => {
  if (s === undefined) return '–';
  return s.n > 1 && s.min !== s.max ? `${s.median.toFixed(digits)} <sub>(${s.min.toFixed(digits)}–${s.max.toFixed(digits)})</sub>` : s.median.toFixed(digits);
};
const f0 = fmt(0);
const f1 = fmt(1);
const f2 = fmt(2);
const f3 = fmt(3);

function chart(title: string, unit: string, vmms: readonly VmmKind[], groups: readonly { label: string; pick: (v: VmmKind) => Summary | undefined }[]): BarChart {
  return {
    title,
    unit,
    series: vmms.map((v) => ({ label: VMM_LABELS[v], color: COLORS[v] })),
    groups: groups.map((g) => ({ label: g.label, values: vmms.map((v) => g.pick(v)) })),
  };
}

/** Write `<base>.md`, `<base>.json` and `<base>-*.svg` into `dir`; returns the markdown's path. */
export function writeReport(result: NetResult, dir: string, base: string): string {
  const vmms = result.config.vmms;
  const tp = summarizeThroughput(result);
  const lat = summarizeLatency(result);
  const env = result.environment;
  const cfg = result.config;
  const both = vmms.includes('tsvmm') && vmms.includes('qemu');
  const byDirection = (pick: (s: DirectionSummaries) => Summary | undefined) => DIRECTIONS.map((d) => ({ label: DIRECTION_LABELS[d], pick: (v: VmmKind) => pick(tp[v][d]) }));
  const charts: { file: string; chart: BarChart }[] = [
    { file: `${base}-throughput.svg`, chart: chart('TCP throughput (iperf3, one stream)', 'Mbit/s (higher is better)', vmms, byDirection((s) => s.mbps)) },
    { file: `${base}-latency.svg`, chart: chart('Ping round trip, host → guest → host (bar: all pings pooled; whisker: range over boots)', 'ms (lower is better)', vmms, LATENCY_STATS.filter((s) => s !== 'max').map((s) => ({ label: s, pick: (v: VmmKind) => lat[v]?.stats[s] }))) },
    { file: `${base}-cpu-per-gb.svg`, chart: chart('VMM process CPU per GB moved (utime + stime)', 's of CPU per GB (lower is better)', vmms, byDirection((s) => s.cpuSecPerGb)) },
    { file: `${base}-vmm-cpu-per-gb.svg`, chart: chart('VMM CPU per GB moved, excluding guest time', 's of CPU per GB (lower is better)', vmms, byDirection((s) => s.vmmSecPerGb)) },
  ];
  for (const c of charts) writeFileSync(join(dir, c.file), barChartSvg(c.chart));
  writeFileSync(join(dir, `${base}.json`), `${JSON.stringify(result, null, 2)}\n`);
  const img = (i: number): string => `![${charts[i]!.chart.title}](${charts[i]!.file})`;

  const L: string[] = [];
  L.push(`# Network: tsvmm virtio-net vs QEMU virtio-net-pci — ${result.startedAt.slice(0, 10)}`, '');
  L.push(
    `Generated by \`npm run bench:net\` (bench/net/); raw data: [${base}.json](${base}.json). ` +
      `iperf3 TCP, one stream, ${cfg.seconds} s per test, ${cfg.repetitions} test${cfg.repetitions === 1 ? '' : 's'} each way per boot${cfg.warmupSeconds ? ` after ${cfg.warmupSeconds} s of unmeasured iperf3 each way` : ''}, ${cfg.rounds} boot${cfg.rounds === 1 ? '' : 's'} per VMM (${cfg.paired === true ? "each round boots both VMMs' guests at once, each on its own tap, pings them together and runs their tests in turn, alternating which goes first" : 'alternating which goes first'}); ` +
      `${cfg.pings} pings per boot every ${cfg.pingIntervalSeconds} s; ${cfg.vcpus} vCPUs, ${cfg.memoryMib} MiB. ` +
      `Throughput cells are the median over every test with (min–max) when they differ. tsvmm revision: ${cfg.tsvmmRevision ?? 'unknown'}${cfg.tsvmmPoller !== undefined ? `, its poller waiting ${cfg.tsvmmPoller} (TSVMM_POLLER)` : ''}.`,
    '',
  );
  if (env.nestedHost) {
    L.push(
      `> **Measured inside the nested host** (${env.outerSummary ?? 'no usable /dev/kvm on the machine'}): a QEMU TCG-emulated x86 machine with AMD-V, ` +
        'whose KVM runs both VMMs, and whose two emulated CPUs also run the host\'s iperf3 and ping. Every VM exit, interrupt, system call and copy is emulated, ' +
        'so absolute numbers are orders of magnitude below hardware; compare the ratios, not the Mbit/s.',
      '',
    );
  }
  if (result.incomplete !== undefined) {
    L.push(`> **Incomplete run:** ${result.incomplete}. Every table holds only the guest boots that finished; the rounds the run was set for did not all happen.`, '');
  }
  const restarts = nestedRestartNote(result.nestedRestarts);
  if (restarts !== undefined) L.push(restarts, '');

  if (both) {
    L.push(`## Targets (issue #6): at least ${TARGET_RATIO.toFixed(1)}× QEMU's throughput, no worse latency`, '');
    L.push('| measure | tsvmm | QEMU | tsvmm / QEMU | target | verdict |', '|---|---:|---:|---:|---|---|');
    let met = 0;
    let judged = 0;
    const verdict = (r: number | undefined, higherBetter: boolean): string => {
      if (r === undefined) return '–';
      judged++;
      const ok = higherBetter ? r >= TARGET_RATIO : r <= TARGET_RATIO;
      if (ok) met++;
      return ok ? 'met' : 'missed';
    };
    for (const d of DIRECTIONS) {
      const r = ratio(tp.tsvmm[d].mbps, tp.qemu[d].mbps);
      L.push(`| throughput ${DIRECTION_LABELS[d]}, Mbit/s | ${f1(tp.tsvmm[d].mbps)} | ${f1(tp.qemu[d].mbps)} | ${ratioText(r)} | ≥ 1.0× | ${verdict(r, true)} |`);
    }
    for (const s of ['avg', 'p50', 'p99'] as const) {
      const r = ratio(lat.tsvmm.stats[s], lat.qemu.stats[s]);
      L.push(`| ping ${s}, ms | ${f3(lat.tsvmm.stats[s])} | ${f3(lat.qemu.stats[s])} | ${ratioText(r)} | ≤ 1.0× | ${verdict(r, false)} |`);
    }
    L.push('', `**${met} of ${judged} targets met.** (Throughput: ratio of medians, above 1 means tsvmm is faster. Latency: ratio of the pooled statistic, below 1 means tsvmm answers sooner.)`, '');
  }
  L.push(img(0), '');

  L.push('## Throughput', '');
  L.push(
    'iperf3 in the guest is the client of an iperf3 server on the host\'s end of the tap: *guest → host* is `iperf3 -c`, *host → guest* is `iperf3 -c -R` ' +
      '(the host\'s server sends). The figure is the receiver\'s goodput over the test (`end.sum_received`). Retransmits are the sender\'s; ' +
      '*tap drops* are frames the host sent into the tap that the tap discarded because its queue to the VMM was full (its `tx_dropped` counter over the test); ' +
      '*guest iperf3 CPU* is the guest\'s own iperf3 process (its share of one guest CPU); ' +
      '*data frame* is the average size of the frames carrying the data through the tap (its byte and packet counters; a GSO frame counts once, whole) ' +
      'and *ACK frames / MB* the frames the other way per MB of data: the per-frame work of the VMM and of both TCP stacks follows these.',
    '',
  );
  L.push('| direction | VMM | Mbit/s | retransmits | tap drops | guest iperf3 CPU % | data frame, bytes | ACK frames / MB |', '|---|---|---:|---:|---:|---:|---:|---:|');
  for (const d of DIRECTIONS) {
    for (const v of vmms) {
      const t = tp[v][d];
      L.push(`| ${DIRECTION_LABELS[d]} | ${v} | ${f1(t.mbps)} | ${f0(t.retransmits)} | ${f0(t.tapDropped)} | ${f0(t.guestIperfCpuPct)} | ${f0(t.dataFrameBytes)} | ${f0(t.ackFrames)} |`);
    }
  }
  L.push('');

  // The guest's own counters: where host → guest frames were lost (eth0, TCP's queues) or what made a sender retransmit.
  const moved = GUEST_COUNTERS.filter((c) => result.runs.some((r) => r.tests.some((t) => (t.guestCounters?.[c] ?? 0) !== 0)));
  const anyCounters = result.runs.some((r) => r.tests.some((t) => t.guestCounters !== undefined));
  if (anyCounters) {
    L.push(
      "What the guest's network stack counted over each test (guest-script.ts `GUEST_COUNTERS`: eth0's drop counters, TCP's from /proc/net/snmp and /proc/net/netstat), median (min–max) over the tests; " +
        (moved.length > 0 ? `only counters that moved in some test are shown (${GUEST_COUNTERS.filter((c) => !moved.includes(c)).join(', ') || 'none'} stayed at 0).` : `none moved in any test (${GUEST_COUNTERS.join(', ')}).`),
      '',
    );
    if (moved.length > 0) {
      L.push(`| direction | VMM | ${moved.map((c) => `\`${c}\``).join(' | ')} |`, `|---|---|${moved.map(() => '---:|').join('')}`);
      for (const d of DIRECTIONS) {
        for (const v of vmms) {
          const tests = result.runs.filter((r) => r.vmm === v).flatMap((r) => r.tests.filter((t) => t.ok && t.direction === d && t.guestCounters !== undefined));
          if (tests.length > 0) L.push(`| ${DIRECTION_LABELS[d]} | ${v} | ${moved.map((c) => f0(summarize(tests.map((t) => t.guestCounters![c])))).join(' | ')} |`);
        }
      }
      L.push('');
    }
  }

  L.push('## Latency', '');
  const sideBySide = pairedRounds(result);
  L.push(
    `iputils \`ping -c ${cfg.pings} -i ${cfg.pingIntervalSeconds}\` from the host to the guest while the guest is otherwise idle (it waits in \`nc -l\` for the host to say ping is over). ` +
      (sideBySide.length > 0
        ? `Side by side: in ${sideBySide.length === result.config.rounds ? 'every round' : `${sideBySide.length} of ${result.config.rounds} rounds`} both VMMs' guests were up at once, each on its own tap, and were pinged in the same window, ` +
          'one `ping` each, the second started half an interval after the first, so the requests alternate and never overlap (bench/net/pair.ts): both see the nested host at the same moments. '
        : '') +
      'Each cell pools every reply of every boot; (min–max) is the range of the same statistic over the boots. p50 and p99 are nearest-rank percentiles of the replies\' `time=` values.',
    '',
  );
  L.push('| VMM | replies | min | avg | p50 | p99 | max | VMM CPU % of one core |', '|---|---:|---:|---:|---:|---:|---:|---:|');
  for (const v of vmms) {
    const l = lat[v];
    L.push(`| ${v} | ${l.replies}/${l.sent} | ${LATENCY_STATS.map((s) => f3(l.stats[s])).join(' | ')} | ${f0(l.vmmCpuPct)} |`);
  }
  if (both) L.push(`| tsvmm / QEMU | | ${LATENCY_STATS.map((s) => ratioText(ratio(lat.tsvmm.stats[s], lat.qemu.stats[s]))).join(' | ')} | |`);
  L.push('');
  if (sideBySide.length > 0) {
    L.push(
      "Round by round (both guests pinged in the same window): each round's statistic for each VMM and their ratio; *tsvmm first* counts the pairs of neighbouring requests (tsvmm's k-th and QEMU's k-th, half an interval apart) in which tsvmm's reply came back sooner.",
      '',
      '| round | tsvmm avg | QEMU avg | avg ratio | tsvmm p50 | QEMU p50 | p50 ratio | tsvmm p99 | QEMU p99 | p99 ratio | tsvmm first |',
      '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    );
    let sooner = 0;
    let pairs = 0;
    for (const r of sideBySide) {
      const t = latencyStats(r.tsvmm);
      const q = latencyStats(r.qemu);
      const cells = (['avg', 'p50', 'p99'] as const).map((k) => `${t[k]?.toFixed(3) ?? '–'} | ${q[k]?.toFixed(3) ?? '–'} | ${ratioText(t[k] !== undefined && q[k] !== undefined && q[k] > 0 ? t[k] / q[k] : undefined)}`);
      L.push(`| ${r.round + 1} | ${cells.join(' | ')} | ${r.neighbours > 0 ? `${r.tsvmmSooner}/${r.neighbours}` : '–'} |`);
      sooner += r.tsvmmSooner;
      pairs += r.neighbours;
    }
    if (pairs > 0) L.push('', `Over all rounds tsvmm's reply came back first in ${sooner} of ${pairs} neighbouring pairs (${((100 * sooner) / pairs).toFixed(0)} %).`);
    L.push('');
  }
  L.push(img(1), '');
  const phases = summarizePingPhases(result);
  if (Object.keys(phases).length > 0) {
    L.push(
      "Where the round trips went, from the measuring host kernel's trace events during the pings (bench/net/ping-trace.ts): the echo request handed to the tap, " +
        "the VMM's interrupt to the guest (kvm_msi_set_irq), the guest's notification of a transmit queue (kvm_mmio), the reply written into the tap. " +
        'Median µs over the traced round trips of every boot, with the range of the per-boot medians. The host\'s own stack (ping to the tap and back) is outside these.',
      '',
    );
    L.push(`| VMM | traced | ${PING_PHASES.map((p) => p.label).join(' | ')} |`, `|---|---:|${PING_PHASES.map(() => '---:').join('|')}|`);
    for (const v of vmms) {
      const ph = phases[v];
      if (ph !== undefined) L.push(`| ${v} | ${ph.matched}/${ph.requests} | ${PING_PHASES.map((p) => f0(ph.phases[p.key])).join(' | ')} |`);
    }
    const t = phases.tsvmm;
    const q = phases.qemu;
    if (t !== undefined && q !== undefined) L.push(`| tsvmm / QEMU | | ${PING_PHASES.map((p) => ratioText(ratio(t.phases[p.key], q.phases[p.key]))).join(' | ')} |`);
    L.push('');
  }

  L.push('## Host CPU per GB moved', '');
  L.push(
    'The VMM process\'s CPU time (utime + stime from /proc/PID/stat, as bench/blk measures it) between the guest\'s markers around one iperf3 test, divided by the bytes the receiver got. ' +
      'The window holds iperf3\'s start-up and connection set-up in the guest too (a second or so in the nested host), equally for both VMMs. ' +
      'It includes the guest\'s own run time (guest mode counts as the vCPU thread\'s user time), so the columns split it: *guest* (guest_time), ' +
      '*vCPU threads outside guest mode* (KVM exits, halt polling; for QEMU also its PCI/virtio register emulation), and *other threads* (tsvmm: the main ' +
      'event loop, where virtio-net reads and writes the tap; QEMU: its main loop, where its userspace virtio-net does the same). *VMM excl. guest* is the total minus guest time.',
    '',
  );
  L.push('| direction | VMM | total s/GB | guest | vCPU threads outside guest | other threads | VMM excl. guest | VMM CPU % of one core |', '|---|---|---:|---:|---:|---:|---:|---:|');
  for (const d of DIRECTIONS) {
    for (const v of vmms) {
      const s = tp[v][d];
      L.push(`| ${DIRECTION_LABELS[d]} | ${v} | ${f2(s.cpuSecPerGb)} | ${f2(s.guestSecPerGb)} | ${f2(s.vcpuHostSecPerGb)} | ${f2(s.otherSecPerGb)} | ${f2(s.vmmSecPerGb)} | ${f0(s.vmmCpuPct)} |`);
    }
  }
  L.push('');
  if (both) {
    L.push('| direction | total CPU per GB, tsvmm / QEMU | excl. guest, tsvmm / QEMU | other threads, tsvmm / QEMU |', '|---|---:|---:|---:|');
    for (const d of DIRECTIONS) L.push(`| ${DIRECTION_LABELS[d]} | ${ratioText(ratio(tp.tsvmm[d].cpuSecPerGb, tp.qemu[d].cpuSecPerGb))} | ${ratioText(ratio(tp.tsvmm[d].vmmSecPerGb, tp.qemu[d].vmmSecPerGb))} | ${ratioText(ratio(tp.tsvmm[d].otherSecPerGb, tp.qemu[d].otherSecPerGb))} |`);
    L.push('', '(Below 1 means tsvmm spends less CPU per GB.)', '');
  }
  // Where each VMM's time went during the tests, as shares of its total: the split that tells them apart when both saturate the host.
  const share = (v: VmmKind, pick: (c: CpuDelta) => number): number | undefined => {
    const cpu = result.runs.filter((r) => r.vmm === v).flatMap((r) => r.tests.flatMap((t) => (t.ok && t.cpu !== undefined ? [t.cpu] : [])));
    const total = cpu.reduce((a, c) => a + c.totalMs, 0);
    return total > 0 ? (100 * cpu.reduce((a, c) => a + pick(c), 0)) / total : undefined;
  };
  const shares = vmms.map((v) => ({ v, guest: share(v, (c) => c.guestMs), vcpu: share(v, (c) => c.vcpuHostMs), other: share(v, (c) => c.otherThreadsMs) }));
  if (shares.every((s) => s.guest !== undefined)) {
    L.push(
      `Over all tests, the VMM process's CPU went ${shares.map((s) => `for ${s.v} ${s.guest!.toFixed(0)} % to the guest, ${s.vcpu!.toFixed(0)} % to vCPU threads outside guest mode and ${s.other!.toFixed(0)} % to other threads`).join('; ')}. ` +
        `The measuring host has ${env.cpus} CPUs, which the host's iperf3 and ping share with the VMM: where a VMM keeps close to ${env.cpus * 100} % busy (last column above), ` +
        'CPU per GB is mostly the inverse of throughput, and what the device model takes (other threads) is CPU the guest\'s vCPUs do not get.',
      '',
    );
  }
  // KVM's counters: exits per MB moved (iperf3) and per ping, the same for both VMMs' guests unless a device model changes what the guest does.
  const kvmRows: string[] = [];
  const perUnit = (samples: readonly { kvm?: KvmStats; units: number }[], name: string): Summary | undefined => summarize(samples.map((x) => (x.kvm?.[name] === undefined || x.units <= 0 ? undefined : x.kvm[name] / x.units)));
  for (const d of DIRECTIONS) {
    for (const v of vmms) {
      const samples = result.runs.filter((r) => r.vmm === v).flatMap((r) => r.tests.flatMap((t) => (t.ok && t.direction === d && t.kvm !== undefined && t.iperf !== undefined ? [{ kvm: t.kvm, units: t.iperf.bytesReceived / 1e6 }] : [])));
      if (samples.length > 0) kvmRows.push(`| ${DIRECTION_LABELS[d]}, per MB | ${v} | ${KVM_STATS_SHOWN.map((k) => f2(perUnit(samples, k.name))).join(' | ')} |`);
    }
  }
  for (const v of vmms) {
    const samples = result.runs.filter((r) => r.vmm === v).flatMap((r) => (r.ping?.kvm !== undefined ? [{ kvm: r.ping.kvm, units: r.ping.received }] : []));
    if (samples.length > 0) kvmRows.push(`| ping, per reply (with the idle time between pings) | ${v} | ${KVM_STATS_SHOWN.map((k) => f2(perUnit(samples, k.name))).join(' | ')} |`);
  }
  if (kvmRows.length > 0) {
    L.push(
      '### KVM exits',
      '',
      "KVM's own counters for the VM (debugfs `/sys/kernel/debug/kvm/PID-FD/`, summed over vCPUs, bench/blk/kvm-stats.ts) over each test's window, per MB the receiver got, and over the ping window per reply. " +
        `Columns: ${KVM_STATS_SHOWN.map((k) => `\`${k.name}\` (${k.label})`).join(', ')}.`,
      '',
      `| window | VMM | ${KVM_STATS_SHOWN.map((k) => k.name).join(' | ')} |`,
      `|---|---|${KVM_STATS_SHOWN.map(() => '---:|').join('')}`,
      ...kvmRows,
      '',
    );
  }
  L.push(img(2), '', img(3), '');

  L.push('## What the guest saw', '', 'From the guest script\'s NET-INFO line (first boot per VMM that printed one).', '');
  const info = (v: VmmKind): Readonly<Record<string, string>> => result.runs.find((r) => r.vmm === v && Object.keys(r.guestInfo).length > 0)?.guestInfo ?? {};
  const keys = ['iperf3', 'kernel', 'nproc', 'mem_kb', 'driver', 'bus', 'mac', 'mtu', 'features', 'tcp_cc', 'tcp_rmem', 'tcp_wmem'];
  L.push('| | ' + vmms.join(' | ') + ' |', '|---|' + vmms.map(() => '---|').join(''));
  for (const k of keys) L.push(`| ${k} | ${vmms.map((v) => code(info(v)[k] ?? '–')).join(' | ')} |`);
  L.push('');
  L.push(
    '`features` is the negotiated feature bits as the guest\'s virtio core shows them (bit 0 first): bit 0 CSUM, 1 GUEST_CSUM, 5 MAC, 7/8 GUEST_TSO4/6, 10 GUEST_UFO, ' +
      '11/12 HOST_TSO4/6, 14 HOST_UFO, 15 MRG_RXBUF, 16 STATUS, 17 CTRL_VQ, 28 INDIRECT_DESC, 29 EVENT_IDX, 32 VERSION_1. Where the two strings differ, the VMMs offered different offloads or ring features.',
    '',
  );

  L.push('## Setup', '', ...machineRows(env));
  L.push(`| iperf3 (host and guest) | ${env.iperf3Version} |`, `| ping | ${env.pingVersion} |`);
  L.push(`| guest | Debian kernel ${cfg.kernelRelease} (${(cfg.kernelBytes / 2 ** 20).toFixed(1)} MiB), initramfs ${(cfg.initrdBytes / 2 ** 20).toFixed(1)} MiB (the default guest's + iperf3 and its libraries) |`);
  if (cfg.networks !== undefined) {
    const nets = vmms.flatMap((v) => {
      const n = cfg.networks?.[v];
      return n === undefined ? [] : [`${v}: tap \`${n.tap}\`, host ${n.hostAddress}/24, guest ${n.guestAddress}/24, MAC ${n.guestMac}`];
    });
    L.push(`| network | a tap per VMM, made once with \`ip tuntap\`; ${nets.join('; ')} |`);
  } else {
    L.push(`| network | tap \`${cfg.tap}\` made once with \`ip tuntap\`, host ${cfg.hostAddress}/24, guest ${cfg.guestAddress}/24, MAC ${cfg.guestMac}; both VMMs open the same tap in turn |`);
  }
  L.push(`| guest command | ${code(cfg.guestCommand)} (the script is in bench/net/guest-script.ts${cfg.networks !== undefined && vmms.length > 1 ? "; each VMM's guest gets its own addresses" : ''}) |`);
  L.push(...commandRows(result.runs, vmms));
  L.push('');

  L.push('## Runs', '', ...runRows(result.runs, 'eth0 up'));
  L.push('');
  L.push('| round | VMM | ' + result.runs[0]?.tests.map((t) => t.name).join(' | ') + ' |', '|---:|---|' + (result.runs[0]?.tests.map(() => '---:|').join('') ?? ''));
  for (const r of result.runs) L.push(`| ${r.round + 1} | ${r.vmm} | ${r.tests.map((t) => (t.iperf !== undefined ? (t.iperf.bitsPerSecond / 1e6).toFixed(1) : '–')).join(' | ')} |`);
  L.push('', '(Mbit/s per test, in the order the guest ran them.)', '');

  const md = join(dir, `${base}.md`);
  writeFileSync(md, `${L.filter((l, i, a) => !(l === '' && a[i - 1] === '')).join('\n')}\n`);
  return md;
}
