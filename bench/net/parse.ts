/** iperf3's -J output and iputils ping's text, reduced to what the report uses. */
import type { IperfSummary } from './samples.js';

type Json = Record<string, unknown>;
const isObj = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);
const num = (o: Json | undefined, k: string): number | undefined => (o !== undefined && typeof o[k] === 'number' && Number.isFinite(o[k]) ? o[k] : undefined);

/** Throws when the JSON is not iperf3's or reports an error. */
export function parseIperfJson(text: string): IperfSummary {
  const j: unknown = JSON.parse(text);
  if (!isObj(j)) throw new Error('not a JSON object');
  if (typeof j['error'] === 'string') throw new Error(`iperf3: ${j['error']}`);
  const end = j['end'];
  if (!isObj(end)) throw new Error('no "end" section');
  const received = isObj(end['sum_received']) ? end['sum_received'] : undefined;
  const sent = isObj(end['sum_sent']) ? end['sum_sent'] : undefined;
  const bitsPerSecond = num(received, 'bits_per_second');
  const bytesReceived = num(received, 'bytes');
  const seconds = num(received, 'seconds');
  if (bitsPerSecond === undefined || bytesReceived === undefined || seconds === undefined) throw new Error('no end.sum_received bits_per_second, bytes and seconds');
  const cpu = isObj(end['cpu_utilization_percent']) ? end['cpu_utilization_percent'] : undefined;
  const retransmits = num(sent, 'retransmits');
  const guestIperfCpuPct = num(cpu, 'host_total');
  const hostIperfCpuPct = num(cpu, 'remote_total');
  const intervals = Array.isArray(j['intervals'])
    ? j['intervals'].flatMap((i) => {
        const b = isObj(i) && isObj(i['sum']) ? num(i['sum'], 'bits_per_second') : undefined;
        return b === undefined ? [] : [b];
      })
    : [];
  return {
    bitsPerSecond,
    bytesReceived,
    seconds,
    ...(retransmits !== undefined ? { retransmits } : {}),
    ...(guestIperfCpuPct !== undefined ? { guestIperfCpuPct } : {}),
    ...(hostIperfCpuPct !== undefined ? { hostIperfCpuPct } : {}),
    intervals,
  };
}

export interface PingOutput {
  readonly transmitted: number;
  readonly received: number;
  readonly rttMs: number[];
  readonly summary?: string;
}

/** iputils ping's output: each reply's time=, and the packets line. */
export function parsePing(text: string): PingOutput {
  const rttMs: number[] = [];
  for (const m of text.matchAll(/icmp_seq=\d+ ttl=\d+ time=([\d.]+) ms/g)) rttMs.push(Number(m[1]));
  const counts = /(\d+) packets transmitted, (\d+) (?:packets )?received/.exec(text);
  const summary = /^(?:rtt|round-trip) .*$/m.exec(text)?.[0];
  return {
    transmitted: counts ? Number(counts[1]) : 0,
    received: counts ? Number(counts[2]) : rttMs.length,
    rttMs,
    ...(summary !== undefined ? { summary } : {}),
  };
}

/** The p-th percentile (0–100) by nearest rank: a value that was measured, never an interpolation. */
export function percentile(values: readonly number[], p: number): number | undefined {
  if (values.length === 0) return undefined;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}
