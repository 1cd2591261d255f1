/**
 * From raw samples to the numbers the report shows: per VMM and job, the median (min–max) over
 * rounds of throughput, latency and the VMM's CPU time per I/O. Failed jobs are left out (the
 * report lists them); medians, not means, as in bench/boot/stats.ts.
 */
import { type Summary, summarize } from '../boot/stats.js';
import type { FioDirection } from './fio-json.js';
import type { CpuDelta } from './proc-cpu.js';
import { FIO_JOBS, type FioJob } from './jobs.js';
import { KVM_STATS_SHOWN } from './kvm-stats.js';
import type { BlkResult, JobSample, VmmKind } from './samples.js';

export type BlkMetric =
  | 'iops'
  | 'mbps'
  | 'clatMeanUs'
  | 'clatP99Us'
  | 'cpuUsPerIo'
  | 'vmmUsPerIo'
  | 'guestUsPerIo'
  | 'vcpuHostUsPerIo'
  | 'otherUsPerIo'
  | 'deviceRequestsPerIo'
  | 'flushes'
  | 'interruptsPerIo'
  | 'vmmCpuPct';

export type JobSummaries = { readonly [M in BlkMetric]?: Summary };

/** The direction a job measures (a read job's writes are zero, and the other way round). */
export function mainDirection(job: FioJob, s: JobSample): FioDirection | undefined {
  if (s.fio === undefined) return undefined;
  return job.rw === 'read' || job.rw === 'randread' ? s.fio.read : s.fio.write;
}

/** /sys/block/vda/stat fields (Documentation/block/stat.rst): read I/Os 0, write I/Os 4, flush I/Os 15. */
function statDelta(s: JobSample, field: number): number | undefined {
  const a = s.blockStatBefore?.[field];
  const b = s.blockStatAfter?.[field];
  return a === undefined || b === undefined ? undefined : b - a;
}

/** One job sample's values. */
export function jobValues(job: FioJob, s: JobSample): { readonly [M in BlkMetric]?: number } {
  const d = mainDirection(job, s);
  if (!s.ok || d === undefined || s.fio === undefined) return {};
  const ios = s.fio.read.ios + s.fio.write.ios;
  const perIo = (ms: number | undefined): number | undefined => (ms === undefined || ios <= 0 ? undefined : (ms * 1000) / ios);
  const requests = statDelta(s, job.rw === 'read' || job.rw === 'randread' ? 0 : 4);
  return {
    iops: d.iops,
    mbps: d.bandwidthBps / 1e6,
    clatMeanUs: d.clatMeanNs / 1000,
    ...(d.clatP99Ns !== undefined ? { clatP99Us: d.clatP99Ns / 1000 } : {}),
    cpuUsPerIo: perIo(s.cpu?.totalMs),
    vmmUsPerIo: perIo(s.cpu === undefined ? undefined : s.cpu.totalMs - s.cpu.guestMs),
    guestUsPerIo: perIo(s.cpu?.guestMs),
    vcpuHostUsPerIo: perIo(s.cpu?.vcpuHostMs),
    otherUsPerIo: perIo(s.cpu?.otherThreadsMs),
    ...(requests !== undefined && ios > 0 ? { deviceRequestsPerIo: requests / ios } : {}),
    ...(statDelta(s, 15) !== undefined ? { flushes: statDelta(s, 15) } : {}),
    ...(s.irqsBefore !== undefined && s.irqsAfter !== undefined && ios > 0 ? { interruptsPerIo: (s.irqsAfter - s.irqsBefore) / ios } : {}),
    ...(s.cpu !== undefined && s.ioWindowMs !== undefined && s.ioWindowMs > 0 ? { vmmCpuPct: (100 * s.cpu.totalMs) / s.ioWindowMs } : {}),
  };
}

export function jobsOf(result: BlkResult): FioJob[] {
  return FIO_JOBS.filter((j) => result.config.jobs.includes(j.name));
}

/** summaries[vmm][job][metric] over every round's sample of that job. */
export function summarizeResult(result: BlkResult): Record<VmmKind, Record<string, JobSummaries>> {
  const out = { tsvmm: {}, qemu: {} } as Record<VmmKind, Record<string, JobSummaries>>;
  for (const vmm of result.config.vmms) {
    for (const job of jobsOf(result)) {
      const values = result.runs.filter((r) => r.vmm === vmm).flatMap((r) => r.jobs.filter((s) => s.job === job.name)).map((s) => jobValues(job, s));
      const sums: { [M in BlkMetric]?: Summary } = {};
      for (const m of ['iops', 'mbps', 'clatMeanUs', 'clatP99Us', 'cpuUsPerIo', 'vmmUsPerIo', 'guestUsPerIo', 'vcpuHostUsPerIo', 'otherUsPerIo', 'deviceRequestsPerIo', 'flushes', 'interruptsPerIo', 'vmmCpuPct'] as const) {
        const s = summarize(values.map((v) => v[m]));
        if (s !== undefined) sums[m] = s;
      }
      out[vmm][job.name] = sums;
    }
  }
  return out;
}

/** The job's headline number: IOPS for 4 KiB random jobs, MB/s for sequential ones. */
export function headline(job: FioJob, s: JobSummaries): Summary | undefined {
  return job.metric === 'iops' ? s.iops : s.mbps;
}

/** Per VMM, over the rounds: its CPU with the guest idle, as % of one CPU (total, guest, vCPU threads outside guest, other threads). */
export interface IdleSummary {
  readonly total?: Summary;
  readonly guest?: Summary;
  readonly vcpuHost?: Summary;
  readonly other?: Summary;
}

export function idleSummaries(result: BlkResult): Record<VmmKind, IdleSummary> {
  const out: Record<VmmKind, IdleSummary> = { tsvmm: {}, qemu: {} };
  for (const vmm of result.config.vmms) {
    const idle = result.runs.flatMap((r) => (r.vmm === vmm && r.idle !== undefined && r.idle.windowMs > 0 ? [r.idle] : []));
    const pct = (pick: (c: CpuDelta) => number): Summary | undefined => summarize(idle.map((i) => (100 * pick(i.cpu)) / i.windowMs));
    const total = pct((c) => c.totalMs);
    if (total === undefined) continue;
    out[vmm] = { total, guest: pct((c) => c.guestMs), vcpuHost: pct((c) => c.vcpuHostMs), other: pct((c) => c.otherThreadsMs) };
  }
  return out;
}

/**
 * summaries[vmm][job][statistic]: KVM's counters (kvm-stats.ts) per I/O fio completed, over the
 * rounds; empty where debugfs could not be read.
 */
export function kvmStatsPerIo(result: BlkResult): Record<VmmKind, Record<string, Record<string, Summary>>> {
  const out = { tsvmm: {}, qemu: {} } as Record<VmmKind, Record<string, Record<string, Summary>>>;
  for (const vmm of result.config.vmms) {
    for (const job of jobsOf(result)) {
      const samples = result.runs.filter((r) => r.vmm === vmm).flatMap((r) => r.jobs.filter((s) => s.job === job.name && s.ok && s.kvm !== undefined && s.fio !== undefined));
      const sums: Record<string, Summary> = {};
      for (const { name } of KVM_STATS_SHOWN) {
        const s = summarize(
          samples.map((x) => {
            const ios = x.fio!.read.ios + x.fio!.write.ios;
            const v = x.kvm![name];
            return v === undefined || ios <= 0 ? undefined : v / ios;
          }),
        );
        if (s !== undefined) sums[name] = s;
      }
      if (Object.keys(sums).length > 0) out[vmm][job.name] = sums;
    }
  }
  return out;
}
