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
import { spawn } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { gunzipSync } from 'node:zlib';
import { parseFioJson } from './fio-json.js';
import { MARK } from './guest-script.js';
import { type CpuSnapshot, cpuDelta, cpuSnapshot } from './proc-cpu.js';
import type { JobSample, VmmKind, VmmRunSample } from './samples.js';
import type { Invocation } from './vmms.js';

export interface VmmRunOptions {
  readonly vmm: VmmKind;
  readonly round: number;
  readonly invocation: Invocation;
  /** The jobs the guest was told to run, in order. */
  readonly jobs: readonly string[];
  readonly timeoutMs: number;
  readonly cpuModel?: string;
  /** Progress lines (job started, job done), for a live view of a long run. */
  readonly log: (line: string) => void;
}

interface JobState {
  begin?: { at: number; cpu: CpuSnapshot | undefined };
  ioBegin?: { at: number; cpu: CpuSnapshot | undefined };
  ioEnd?: { at: number; cpu: CpuSnapshot | undefined };
  end?: { at: number; cpu: CpuSnapshot | undefined; status: number };
  statBefore?: number[];
  statAfter?: number[];
  irqBefore?: number;
  irqAfter?: number;
  json: string[] | undefined;
  jsonText?: string;
  err: string[] | undefined;
  errText?: string;
}

/** The protocol's line, wherever it starts: firmware or the kernel may have left text without a newline before it. */
const ESCAPES = /\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]|\x1b[=>cM78]/g;
function protocolLine(raw: string): string {
  const line = raw.replace(ESCAPES, '');
  const at = line.indexOf('BLK-');
  return at > 0 ? line.slice(at) : line;
}

const numbers = (s: string): number[] => s.trim().split(/\s+/).filter((w) => w !== '').map(Number);

export function runVmm(o: VmmRunOptions): Promise<VmmRunSample> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const since = (): number => performance.now() - t0;
    const states = new Map<string, JobState>(o.jobs.map((j) => [j, { json: undefined, err: undefined }]));
    const guestInfo: Record<string, string> = {};
    const notes: string[] = [];
    let infoAtMs: number | undefined;
    let lastStat: number[] | undefined;
    let lastIrqs: number | undefined;
    let idleBegin: { at: number; cpu: CpuSnapshot | undefined } | undefined;
    let idle: VmmRunSample['idle'];
    let done = false;
    let guestError: string | undefined;
    let collecting: { job: JobState; kind: 'json' | 'err' } | undefined;
    let timedOut = false;
    let spawnError: string | undefined;

    const child = spawn(o.invocation.command, [...o.invocation.args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const pid = child.pid;
    const snap = (): CpuSnapshot | undefined => (pid === undefined ? undefined : cpuSnapshot(pid));

    const onLine = (raw: string): void => {
      const line = protocolLine(raw);
      if (collecting !== undefined) {
        const endMark = collecting.kind === 'json' ? MARK.jsonEnd : MARK.errEnd;
        if (line.startsWith(endMark)) {
          if (collecting.kind === 'json') collecting.job.jsonText = unpack(collecting.job.json!);
          else collecting.job.errText = collecting.job.err!.join('\n');
          collecting = undefined;
        } else {
          (collecting.kind === 'json' ? collecting.job.json : collecting.job.err)!.push(line);
        }
        return;
      }
      const job = (mark: string): JobState | undefined => states.get(line.slice(mark.length).split(' ')[0] ?? '');
      if (line.startsWith(MARK.begin)) {
        const s = job(MARK.begin);
        if (s !== undefined) {
          s.begin = { at: since(), cpu: snap() };
          s.statBefore = lastStat;
          s.irqBefore = lastIrqs;
          o.log(`  ${o.vmm}: ${line.slice(MARK.begin.length)} running`);
        }
      } else if (line.startsWith(MARK.ioBegin)) {
        const s = job(MARK.ioBegin);
        if (s !== undefined) s.ioBegin = { at: since(), cpu: snap() };
      } else if (line.startsWith(MARK.ioEnd)) {
        const s = job(MARK.ioEnd);
        if (s !== undefined) s.ioEnd = { at: since(), cpu: snap() };
      } else if (line.startsWith(MARK.end)) {
        const cpu = snap();
        const s = job(MARK.end);
        if (s !== undefined) s.end = { at: since(), cpu, status: Number(line.split(' ')[2]) };
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
      } else if (line === MARK.idleBegin) {
        idleBegin = { at: since(), cpu: snap() };
      } else if (line === MARK.idleEnd) {
        const cpu = snap();
        if (idleBegin?.cpu !== undefined && cpu !== undefined) idle = { cpu: cpuDelta(idleBegin.cpu, cpu), windowMs: since() - idleBegin.at };
      } else if (line.startsWith(MARK.jsonBegin)) {
        const s = job(MARK.jsonBegin);
        if (s !== undefined) {
          s.json = [];
          collecting = { job: s, kind: 'json' };
        }
      } else if (line.startsWith(MARK.errBegin)) {
        const s = job(MARK.errBegin);
        if (s !== undefined) {
          s.err = [];
          collecting = { job: s, kind: 'err' };
        }
      } else if (line.startsWith(MARK.info)) {
        infoAtMs = since();
        // fio=fio-3.33 engine=libaio … (values have no spaces: the script replaced them).
        for (const kv of line.slice(MARK.info.length).split(' ')) {
          const i = kv.indexOf('=');
          if (i > 0) guestInfo[kv.slice(0, i)] = kv.slice(i + 1);
        }
        o.log(`  ${o.vmm}: guest up at ${(infoAtMs / 1000).toFixed(1)} s (${guestInfo['engine'] ?? '?'}, ${guestInfo['hw_queues'] ?? '?'} queues)`);
      } else if (line === MARK.done) {
        done = true;
      } else if (line.startsWith(MARK.error)) {
        guestError = line.slice(MARK.error.length);
        notes.push(line);
      } else if (/panic|error|fail|warn/i.test(line)) {
        notes.push(line);
      }
    };

    const splitter = (handle: (l: string) => void) => {
      let partial = '';
      return {
        push(chunk: Buffer): void {
          const parts = (partial + chunk.toString('utf8')).split('\n');
          partial = parts.pop() ?? '';
          for (const p of parts) handle(p.replace(/\r$/, ''));
        },
        end(): void {
          if (partial !== '') handle(partial.replace(/\r$/, ''));
          partial = '';
        },
      };
    };
    const out = splitter(onLine);
    const err = splitter((l) => {
      if (l.trim() !== '') notes.push(l);
    });
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', (e) => {
      spawnError = e.message;
    });
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, o.timeoutMs);
    let exitMs: number | undefined;
    child.on('exit', () => {
      exitMs = since();
    });
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      out.end();
      err.end();
      const jobs: JobSample[] = o.jobs.map((name) => jobSample(name, states.get(name)!));
      const problems: string[] = [];
      if (spawnError !== undefined) problems.push(`spawn failed: ${spawnError}`);
      if (timedOut) problems.push(`timed out after ${(o.timeoutMs / 1000).toFixed(0)} s`);
      if (guestError !== undefined) problems.push(`guest: ${guestError}`);
      if (!done) problems.push('the guest script did not finish');
      if (status !== 0) problems.push(`exit status ${status ?? signal}`);
      const failedJobs = jobs.filter((j) => !j.ok).map((j) => j.job);
      if (failedJobs.length > 0) problems.push(`failed jobs: ${failedJobs.join(', ')}`);
      resolve({
        vmm: o.vmm,
        round: o.round,
        ok: problems.length === 0,
        ...(problems.length > 0 ? { problem: problems.join('; ') } : {}),
        exitStatus: status,
        ...(signal !== null ? { signal } : {}),
        wallMs: exitMs ?? since(),
        ...(infoAtMs !== undefined ? { infoAtMs } : {}),
        guestInfo,
        argv: [o.invocation.command, ...o.invocation.args],
        ...(o.cpuModel !== undefined ? { cpuModel: o.cpuModel } : {}),
        notes: notes.slice(-12),
        ...(idle !== undefined ? { idle } : {}),
        jobs,
      });
    });
  });
}

/** The guest's gzip + base64 lines back to text; undefined when they do not decode (the job then reports it). */
function unpack(lines: readonly string[]): string | undefined {
  try {
    return gunzipSync(Buffer.from(lines.join(''), 'base64')).toString('utf8');
  } catch {
    return undefined;
  }
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
  const jobCpu = s.begin?.cpu !== undefined && s.end?.cpu !== undefined ? cpuDelta(s.begin.cpu, s.end.cpu) : undefined;
  if (s.end !== undefined && cpu === undefined) problems.push(s.ioEnd === undefined ? 'fio never reported the end of its I/O (BLK-IO markers missing)' : 'VMM CPU time could not be read');
  return {
    job: name,
    ok: problems.length === 0,
    ...(problems.length > 0 ? { problem: problems.join('; ') } : {}),
    ...(s.end !== undefined ? { fioStatus: s.end.status } : {}),
    ...(fio !== undefined ? { fio: fio.summary, fioRaw: fio.raw } : {}),
    ...(cpu !== undefined ? { cpu } : {}),
    ...(s.ioBegin !== undefined && s.ioEnd !== undefined ? { ioWindowMs: s.ioEnd.at - s.ioBegin.at } : {}),
    ...(jobCpu !== undefined ? { jobCpu } : {}),
    ...(s.begin !== undefined && s.end !== undefined ? { windowMs: s.end.at - s.begin.at } : {}),
    ...(s.statBefore !== undefined ? { blockStatBefore: s.statBefore } : {}),
    ...(s.statAfter !== undefined ? { blockStatAfter: s.statAfter } : {}),
    ...(s.irqBefore !== undefined && Number.isFinite(s.irqBefore) ? { irqsBefore: s.irqBefore } : {}),
    ...(s.irqAfter !== undefined ? { irqsAfter: s.irqAfter } : {}),
  };
}
