/**
 * The few numbers the report needs out of fio's `--output-format=json` (fio 3.x): per direction,
 * I/Os, bytes, IOPS, bandwidth and completion latency; the guest's own CPU use as fio saw it.
 * The raw JSON is kept in the result as well, so nothing is lost to this summary.
 */

export interface FioDirection {
  /** Completed I/Os (fio's total_ios). */
  readonly ios: number;
  readonly bytes: number;
  readonly iops: number;
  /** Bytes per second. */
  readonly bandwidthBps: number;
  /** fio's measured runtime of this direction, ms. */
  readonly runtimeMs: number;
  /** Completion latency (submission to completion), ns. */
  readonly clatMeanNs: number;
  readonly clatP50Ns?: number;
  readonly clatP99Ns?: number;
  readonly clatP999Ns?: number;
}

export interface FioSummary {
  readonly fioVersion: string;
  readonly ioengine?: string;
  readonly read: FioDirection;
  readonly write: FioDirection;
  /** fio's CPU use inside the guest, percent of one CPU. */
  readonly guestUsrCpuPct: number;
  readonly guestSysCpuPct: number;
  readonly errors: number;
}

type Json = { readonly [k: string]: unknown };

function obj(v: unknown, what: string): Json {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`fio JSON: ${what} is not an object`);
  return v as Json;
}

function num(o: Json, k: string, what: string): number {
  const v = o[k];
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`fio JSON: ${what}.${k} is not a number`);
  return v;
}

function percentile(clat: Json, p: string): number | undefined {
  const table = clat['percentile'];
  if (typeof table !== 'object' || table === null) return undefined;
  const v = (table as Json)[p];
  return typeof v === 'number' ? v : undefined;
}

function direction(job: Json, dir: 'read' | 'write'): FioDirection {
  const d = obj(job[dir], dir);
  const clat = obj(d['clat_ns'], `${dir}.clat_ns`);
  const p50 = percentile(clat, '50.000000');
  const p99 = percentile(clat, '99.000000');
  const p999 = percentile(clat, '99.900000');
  return {
    ios: num(d, 'total_ios', dir),
    bytes: num(d, 'io_bytes', dir),
    iops: num(d, 'iops', dir),
    bandwidthBps: num(d, 'bw_bytes', dir),
    runtimeMs: num(d, 'runtime', dir),
    clatMeanNs: num(clat, 'mean', `${dir}.clat_ns`),
    ...(p50 !== undefined ? { clatP50Ns: p50 } : {}),
    ...(p99 !== undefined ? { clatP99Ns: p99 } : {}),
    ...(p999 !== undefined ? { clatP999Ns: p999 } : {}),
  };
}

/**
 * Parse one fio run's JSON (a single job). Throws with the field that is missing. Text before the
 * opening brace is skipped: fio writes its informational lines (e.g. "Saving output of prerun in
 * …" for exec_prerun) to the --output file too.
 */
export function parseFioJson(text: string): { summary: FioSummary; raw: unknown } {
  const start = text.indexOf('{');
  if (start < 0) throw new Error('fio JSON: no JSON object in the output');
  const raw: unknown = JSON.parse(text.slice(start));
  const top = obj(raw, 'the output');
  const jobs = top['jobs'];
  if (!Array.isArray(jobs) || jobs.length === 0) throw new Error('fio JSON: no jobs');
  const job = obj(jobs[0], 'jobs[0]');
  const options = job['job options'];
  const engine = typeof options === 'object' && options !== null ? (options as Json)['ioengine'] : undefined;
  return {
    raw,
    summary: {
      fioVersion: typeof top['fio version'] === 'string' ? top['fio version'] : 'unknown',
      ...(typeof engine === 'string' ? { ioengine: engine } : {}),
      read: direction(job, 'read'),
      write: direction(job, 'write'),
      guestUsrCpuPct: num(job, 'usr_cpu', 'jobs[0]'),
      guestSysCpuPct: num(job, 'sys_cpu', 'jobs[0]'),
      errors: num(job, 'error', 'jobs[0]'),
    },
  };
}
