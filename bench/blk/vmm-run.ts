/**
 * One guest boot under one VMM: spawn it, follow the guest script's markers on its console
 * (guest-script.ts), read the VMM process's CPU time the moment each job's BEGIN and END markers
 * arrive, and collect fio's JSON per job.
 *
 * Reading /proc at the markers, not by sampling, keeps the window tight around the job: the
 * markers are printed right before fio starts and right after it exits, and nothing else goes to
 * the console in between. The window still includes fio's start-up and exit in the guest (a small
 * share of a job of several seconds), equally for both VMMs.
 */
import { parseFioJson } from './fio-json.js';
import { MARK } from './guest-script.js';
import { type Mark, NOTES_KEPT, runConsole, type Sections } from './console-run.js';
import { cpuDelta } from './proc-cpu.js';
import { kvmStatsDelta } from './kvm-stats.js';
import type { JobSample, VmmKind, VmmRunSample } from './samples.js';
import type { Invocation } from './vmms.js';

export interface VmmRunOptions {
  readonly vmm: VmmKind;
  readonly round: number;
  readonly invocation: Invocation;
  /** The jobs the guest was told to run, in order. */
  readonly jobs: readonly string[];
  readonly timeoutMs: number;
  /** ConsoleRunOptions.silenceLimitMs: the longest the guest's script may print nothing once it is up. */
  readonly silenceLimitMs?: number;
  /** ConsoleRunOptions.upLimitMs: the longest the guest may take to come up. */
  readonly upLimitMs?: number;
  readonly cpuModel?: string;
  /** Progress lines (job started, job done), for a live view of a long run. */
  readonly log: (line: string) => void;
}

interface JobState extends Sections {
  begin?: Mark;
  ioBegin?: Mark;
  ioEnd?: Mark;
  end?: Mark & { status: number };
  statBefore?: number[];
  statAfter?: number[];
  irqBefore?: number;
  irqAfter?: number;
}

const numbers = (s: string): number[] => s.trim().split(/\s+/).filter((w) => w !== '').map(Number);

export async function runVmm(o: VmmRunOptions): Promise<VmmRunSample> {
  const states = new Map<string, JobState>(o.jobs.map((j) => [j, {}]));
  let lastStat: number[] | undefined;
  let lastIrqs: number | undefined;
  let idleBegin: Mark | undefined;
  let idle: VmmRunSample['idle'];
  const warmupNotes: string[] = [];
  const onLine = (line: string, mark: () => Mark): void => {
    const job = (prefix: string): JobState | undefined => states.get(line.slice(prefix.length).split(' ')[0] ?? '');
    if (line.startsWith(MARK.begin)) {
      const s = job(MARK.begin);
      if (s !== undefined) {
        s.begin = mark();
        s.statBefore = lastStat;
        s.irqBefore = lastIrqs;
        o.log(`  ${o.vmm}: ${line.slice(MARK.begin.length)} running`);
      }
    } else if (line.startsWith(MARK.ioBegin)) {
      const s = job(MARK.ioBegin);
      if (s !== undefined) s.ioBegin = mark();
    } else if (line.startsWith(MARK.ioEnd)) {
      const s = job(MARK.ioEnd);
      if (s !== undefined) s.ioEnd = mark();
    } else if (line.startsWith(MARK.end)) {
      const m = mark();
      const s = job(MARK.end);
      if (s !== undefined) s.end = { ...m, status: Number(line.split(' ')[2]) };
    } else if (line.startsWith(MARK.stat)) {
      const [, name, ...rest] = line.split(' ');
      lastStat = numbers(rest.join(' '));
      const s = states.get(name ?? '');
      if (s !== undefined) s.statAfter = lastStat;
    } else if (line.startsWith(MARK.irq)) {
      const [, name, count] = line.split(' ');
      lastIrqs = Number(count);
      const s = states.get(name ?? '');
      if (s !== undefined && Number.isFinite(lastIrqs)) s.irqAfter = lastIrqs;
    } else if (line.startsWith(MARK.warmup)) {
      const status = line.split(' ')[2] ?? '?';
      // Worth a note, not a failed boot: the jobs after it still measure (a bit colder, perhaps).
      if (status !== '0') warmupNotes.push(`the warm-up fio exited with status ${status}`);
    } else if (line === MARK.idleBegin) {
      idleBegin = mark();
    } else if (line === MARK.idleEnd) {
      const m = mark();
      if (idleBegin?.cpu !== undefined && m.cpu !== undefined) idle = { cpu: cpuDelta(idleBegin.cpu, m.cpu), windowMs: m.at - idleBegin.at };
    }
  };
  const end = await runConsole({
    ...o,
    prefix: 'BLK-',
    marks: MARK,
    sections: (name) => states.get(name),
    onLine,
    // fio=fio-3.33 engine=libaio …
    describeInfo: (info) => `${info['engine'] ?? '?'}, ${info['hw_queues'] ?? '?'} queues`,
    keepLine: (line) => /panic|error|fail|warn/i.test(line),
  });
  const jobs: JobSample[] = o.jobs.map((name) => jobSample(name, states.get(name)!));
  const problems = [...end.problems];
  const failedJobs = jobs.filter((j) => !j.ok).map((j) => j.job);
  if (failedJobs.length > 0) problems.push(`failed jobs: ${failedJobs.join(', ')}`);
  return {
    ...end.sample,
    ok: problems.length === 0,
    ...(problems.length > 0 ? { problem: problems.join('; ') } : {}),
    notes: [...end.sample.notes, ...warmupNotes].slice(-NOTES_KEPT),
    ...(idle !== undefined ? { idle } : {}),
    jobs,
  };
}

function jobSample(name: string, s: JobState): JobSample {
  const problems: string[] = [];
  if (s.begin === undefined) problems.push('never started');
  else if (s.end === undefined) problems.push('never ended');
  else if (s.end.status !== 0) problems.push(`fio exited with status ${s.end.status}${s.errText ? `: ${s.errText.split('\n').slice(-3).join(' | ')}` : ''}`);
  let fio: ReturnType<typeof parseFioJson> | undefined;
  if (s.jsonText !== undefined && s.end?.status === 0) {
    try {
      fio = parseFioJson(s.jsonText);
    } catch (e) {
      problems.push(`unreadable fio JSON: ${(e as Error).message}`);
    }
  } else if (s.end?.status === 0) {
    problems.push(s.json !== undefined ? 'fio JSON did not decode (gzip + base64)' : 'no fio JSON');
  }
  // CPU per I/O counts fio's I/O phase only; the whole job's window (with fio's start-up and exit) is kept beside it.
  const cpu = s.ioBegin?.cpu !== undefined && s.ioEnd?.cpu !== undefined ? cpuDelta(s.ioBegin.cpu, s.ioEnd.cpu) : undefined;
  const kvm = s.ioBegin?.kvm !== undefined && s.ioEnd?.kvm !== undefined ? kvmStatsDelta(s.ioBegin.kvm, s.ioEnd.kvm) : undefined;
  const jobCpu = s.begin?.cpu !== undefined && s.end?.cpu !== undefined ? cpuDelta(s.begin.cpu, s.end.cpu) : undefined;
  if (s.end !== undefined && cpu === undefined) problems.push(s.ioEnd === undefined ? 'fio never reported the end of its I/O (BLK-IO markers missing)' : 'VMM CPU time could not be read');
  return {
    job: name,
    ok: problems.length === 0,
    ...(problems.length > 0 ? { problem: problems.join('; ') } : {}),
    ...(s.end !== undefined ? { fioStatus: s.end.status } : {}),
    ...(fio !== undefined ? { fio: fio.summary, fioRaw: fio.raw } : {}),
    ...(cpu !== undefined ? { cpu } : {}),
    ...(kvm !== undefined ? { kvm } : {}),
    ...(s.ioBegin !== undefined && s.ioEnd !== undefined ? { ioWindowMs: s.ioEnd.at - s.ioBegin.at } : {}),
    ...(jobCpu !== undefined ? { jobCpu } : {}),
    ...(s.begin !== undefined && s.end !== undefined ? { windowMs: s.end.at - s.begin.at } : {}),
    ...(s.statBefore !== undefined ? { blockStatBefore: s.statBefore } : {}),
    ...(s.statAfter !== undefined ? { blockStatAfter: s.statAfter } : {}),
    ...(s.irqBefore !== undefined && Number.isFinite(s.irqBefore) ? { irqsBefore: s.irqBefore } : {}),
    ...(s.irqAfter !== undefined ? { irqsAfter: s.irqAfter } : {}),
  };
}
