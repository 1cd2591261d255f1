/**
 * The outer side of a benchmark that measures inside the nested host when this machine cannot run
 * stock Linux under KVM: option parsing, the revision the report names, and one nested-host boot
 * running a frozen `measure.js` whose raw result comes back as result lines (result-lines.ts).
 * Shared by bench/blk and bench/net.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { cpus, loadavg, release } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { VirtualizationEnvironment } from '../../src/host/environment.js';
import { NestedHostError, runInNestedHost } from '../../src/host/nested.js';
import { stderrProgress } from '../../src/util/progress.js';
import { cpuModelName } from './measure.js';
import { decodeResultLines, RESULT_PREFIX } from './result-lines.js';
import { ALL_VMMS, type NestedRestart, type VmmKind } from './samples.js';

/** parseArgs options every benchmark run.ts takes, beside its own. */
export const COMMON_OPTIONS = {
  cpus: { type: 'string' },
  mem: { type: 'string' },
  rounds: { type: 'string' },
  only: { type: 'string' },
  'out-dir': { type: 'string' },
  report: { type: 'string' },
  /** Profile the tsvmm processes' main thread and leave their .cpuprofile files in this folder. */
  'profile-vmm': { type: 'string' },
  /** How tsvmm's EventFdPoller waits (TSVMM_POLLER: main-loop, threadpool, held); default: tsvmm's own. */
  'tsvmm-poller': { type: 'string' },
} as const;

/**
 * A folder option (--profile-vmm, bench/net's --ping-trace-dir): DIR made absolute and created, to
 * be shared writable with the nested host, where the measurement writes into it (CPU profiles of
 * tsvmm's main thread, bench/profile/main-thread.ts; raw ping traces).
 */
export function sharedWritableDir(dir: string | undefined, option: string): string | undefined {
  if (dir === undefined) return undefined;
  const abs = resolve(dir);
  try {
    mkdirSync(abs, { recursive: true });
  } catch (e) {
    throw new Error(`${option}: cannot create the folder ${abs} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); give a folder you can write to`);
  }
  return abs;
}

/** --only's VMMs (default both). */
export function selectVmms(only: string | undefined): VmmKind[] {
  const vmms = only === undefined ? [...ALL_VMMS] : (only.split(',').map((s) => s.trim()) as VmmKind[]);
  for (const v of vmms) if (!ALL_VMMS.includes(v)) throw new Error(`--only: unknown VMM '${v}' (choose from ${ALL_VMMS.join(', ')})`);
  return vmms;
}

/** --out-dir (default bench/results of the package), created. */
export function outputDir(pkg: string, outDir: string | undefined): string {
  const dir = resolve(outDir ?? join(pkg, 'bench/results'));
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** --report FILE.json: the report of a saved result, named `<stem>-<date>` after the run's start; returns the markdown's path. */
export function rerender<R extends { readonly startedAt: string }>(file: string, dir: string, stem: string, write: (result: R, dir: string, base: string) => string): string {
  const result = JSON.parse(readFileSync(file, 'utf8')) as R;
  return write(result, dir, `${stem}-${result.startedAt.slice(0, 10)}`);
}

export function positiveInt(text: string | undefined, fallback: number, what: string, min = 1): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isInteger(n) || n < min) throw new Error(`${what} must be an integer ≥ ${min}, got '${text}'`);
  return n;
}

/** The checkout's commit, and whether its working tree differs from it (the report says which tsvmm it measured). */
export function revision(dirs: readonly string[]): string {
  for (const cwd of dirs) {
    const git = (...args: string[]): string => execFileSync('git', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    try {
      const head = git('rev-parse', '--short', 'HEAD');
      return git('status', '--porcelain', '--untracked-files=no') === '' ? head : `${head} + uncommitted changes`;
    } catch {
      // Not a git checkout (a build elsewhere); try the next.
    }
  }
  return 'unknown';
}

/** What a measuring side's result records of the machine the nested host ran on. */
export interface OuterEnvironment {
  readonly cpuModel: string;
  readonly cpus: number;
  readonly kernelRelease: string;
  readonly loadAverage: readonly number[];
  readonly loadAverageEnd?: readonly number[];
}

export interface NestedMeasureOptions {
  /** The package folder (the nested host's working directory). */
  readonly cwd: string;
  readonly timeoutMs: number;
  /** The measurement prints at least a line this often; silence for longer means it hangs. */
  readonly stallTimeoutMs: number;
  readonly memoryMiB: number;
  readonly writable?: readonly string[];
  /**
   * Guest boots per round (one per VMM). A fresh nested host starts at the beginning of the round
   * the failed one cut short, so every round's VMMs ran in one emulated machine. Absent: 1.
   */
  readonly bootsPerRound?: number;
}

/** What a measurement's result must hold for measureInNestedHost. */
export interface NestedMeasureResult {
  readonly environment: { readonly outer?: OuterEnvironment };
  readonly incomplete?: string;
  /** Guest boots done, counted over the whole run (bench/blk and bench/net; resumable when present). */
  readonly bootsDone?: number;
  readonly nestedRestarts?: readonly NestedRestart[];
  readonly runs?: readonly { readonly round: number }[];
  readonly finishedAt?: string;
}

/**
 * Nested hosts one benchmark run may use: the first, and fresh ones after it fails mid-run. On
 * 2-core machines a 3-round bench/blk run has seen three failures (a panic, a wedge, a soft lockup).
 */
export const MAX_NESTED_HOSTS_PER_RUN = 4;

/**
 * Run `node measureJs SPEC_BASE64` in the nested host, show its progress live (without the result
 * lines) and return the decoded result, with the outer machine's load after the run added to
 * `environment.outer` when the result has one.
 *
 * Should the nested host itself fail (a panic, a soft lockup, no heartbeat: NestedHostError) after
 * some guest boots finished, and the result counts its boots (`bootsDone`), the run goes on in a
 * fresh nested host (spec.skipBoots), up to MAX_NESTED_HOSTS_PER_RUN in all, and the results are
 * joined, each restart recorded in `nestedRestarts` (the reports say so). On 2-core machines the
 * emulated host fails in about one long run in two; without this, most 3-round runs ended
 * incomplete. The fresh host starts at the beginning of the round the failure cut short
 * (`o.bootsPerRound`), dropping that round's finished boots: the emulated machine's speed moves
 * by tens of per cent from one boot of it to the next, so the VMMs of a round are compared only
 * on one. Whatever cannot be resumed comes back marked `incomplete` with the reason (keeping a cut
 * round's boots, the best left); with no boot finished at all, the failure is thrown.
 */
export async function measureInNestedHost<R extends NestedMeasureResult>(
  measureJs: string,
  spec: object,
  o: NestedMeasureOptions,
  /** One nested-host boot (tests pass their own). */
  runOne: (measureJs: string, spec: object, o: NestedMeasureOptions) => Promise<NestedMeasurePart<R>> = measureInOneNestedHost,
): Promise<R> {
  let joined: R | undefined;
  const restarts: NestedRestart[] = [];
  for (let host = 1; ; host++) {
    const skipBoots = joined?.bootsDone ?? 0;
    let part: NestedMeasurePart<R>;
    try {
      part = await runOne(measureJs, skipBoots > 0 ? { ...spec, skipBoots } : spec, o);
    } catch (e) {
      // Nothing finished in this nested host. Its own failure is worth another one (from the same
      // boot); anything else, or the last host, ends the run with what earlier hosts measured.
      const reason = (e as Error).message.split('; last console lines')[0]!;
      if (e instanceof NestedHostError && host < MAX_NESTED_HOSTS_PER_RUN) {
        restarts.push({ afterBoots: skipBoots, reason });
        stderrProgress(`the nested host failed before finishing a guest boot (${reason.slice(0, 300)}); trying again in a fresh nested host (${host + 1} of at most ${MAX_NESTED_HOSTS_PER_RUN})`);
        continue;
      }
      if (joined === undefined) throw e;
      return { ...joined, nestedRestarts: restarts, incomplete: `${reason} (${skipBoots} guest boots done)` };
    }
    joined = joined === undefined ? part.result : joinResults(joined, part.result);
    if (restarts.length > 0) joined = { ...joined, nestedRestarts: [...restarts] };
    const bootsDone = joined.bootsDone;
    if (joined.incomplete === undefined || !part.hostFailed || bootsDone === undefined || bootsDone <= skipBoots || host >= MAX_NESTED_HOSTS_PER_RUN) {
      return joined;
    }
    const reason = joined.incomplete;
    const perRound = o.bootsPerRound ?? 1;
    const roundStart = bootsDone - (bootsDone % perRound);
    const redone = bootsDone - roundStart;
    stderrProgress(`the nested host failed after ${bootsDone} guest boots (${reason.slice(0, 300)}); going on ${redone > 0 ? `from the start of round ${roundStart / perRound + 1} (its ${redone} finished boot${redone === 1 ? '' : 's'} again)` : 'from the next boot'} in a fresh nested host (${host + 1} of at most ${MAX_NESTED_HOSTS_PER_RUN})`);
    restarts.push({ afterBoots: bootsDone, reason, ...(redone > 0 ? { redoneBoots: redone } : {}) });
    if (redone > 0) joined = dropRoundsFrom(joined, roundStart / perRound, roundStart);
  }
}

/** The result without the runs of rounds `round` and later, counted as `bootsDone` boots. */
function dropRoundsFrom<R extends NestedMeasureResult>(result: R, round: number, bootsDone: number): R {
  return { ...result, bootsDone, runs: (result.runs ?? []).filter((r) => r.round < round) };
}

/** A run's result so far followed by what a fresh nested host measured after it. */
function joinResults<R extends NestedMeasureResult>(before: R, after: R): R {
  const { incomplete: _ignored, ...rest } = before;
  const outer = before.environment.outer;
  return {
    ...rest,
    ...(after.incomplete !== undefined ? { incomplete: after.incomplete } : {}),
    ...(after.bootsDone !== undefined ? { bootsDone: after.bootsDone } : {}),
    ...(after.finishedAt !== undefined ? { finishedAt: after.finishedAt } : {}),
    runs: [...(before.runs ?? []), ...(after.runs ?? [])],
    environment: { ...before.environment, ...(outer !== undefined ? { outer: { ...outer, loadAverageEnd: after.environment.outer?.loadAverageEnd ?? loadavg() } } : {}) },
  } as unknown as R;
}

/** What one nested-host boot measured, and whether the nested host itself failed (NestedHostError) rather than the measurement. */
export interface NestedMeasurePart<R> {
  readonly result: R;
  readonly hostFailed: boolean;
}

/** One nested-host boot of measureInNestedHost; throws when no result line came back (the NestedHostError itself when the host failed). */
async function measureInOneNestedHost<R extends NestedMeasureResult>(measureJs: string, spec: object, o: NestedMeasureOptions): Promise<NestedMeasurePart<R>> {
  let hostFailed = false;
  let hostError: NestedHostError | undefined;
  let pending = '';
  // Every result line the measurement printed, kept here too: should the nested host die, the
  // latest partial result (printed after each boot) is what is left of the run.
  const resultLines: string[] = [];
  let r: Awaited<ReturnType<typeof runInNestedHost>>;
  let failure: string | undefined;
  try {
    r = await runInNestedHost([process.execPath, measureJs, Buffer.from(JSON.stringify(spec), 'utf8').toString('base64')], {
      cwd: o.cwd,
      timeoutMs: o.timeoutMs,
      stallTimeoutMs: o.stallTimeoutMs,
      memoryMiB: o.memoryMiB,
      progress: stderrProgress,
      ...(o.writable !== undefined ? { writable: o.writable } : {}),
      // Show progress live, but not the result's base64 lines.
      onOutput: (text) => {
        const parts = (pending + text).split('\n');
        pending = parts.pop() ?? '';
        for (const l of parts) {
          if (l.startsWith(RESULT_PREFIX)) resultLines.push(l);
          else process.stderr.write(`${l}\n`);
        }
      },
    });
    if (r.timedOut) failure = r.stalled ? 'the nested host run stalled' : 'the nested host run timed out';
    else if (r.status !== 0) failure = `the measurement inside the nested host failed with status ${r.status}`;
  } catch (e) {
    failure = (e as Error).message;
    if (e instanceof NestedHostError) {
      hostFailed = true;
      hostError = e;
    }
  }
  if (pending.startsWith(RESULT_PREFIX)) resultLines.push(pending);
  let inside: R;
  try {
    inside = decodeResultLines(resultLines.join('\n')) as R;
  } catch (e) {
    if (hostError !== undefined) throw hostError;
    throw new Error(failure ?? (e as Error).message);
  }
  if (failure !== undefined) {
    // What finished before the failure, marked so: the report says the run is incomplete and why.
    if (inside.incomplete === undefined) throw new Error(failure);
    inside = { ...inside, incomplete: `${failure.split('; last console lines')[0]} (${inside.incomplete})` };
  }
  // The outer machine's load after the run: its cores run the nested host and whatever else shares them.
  const outer = inside.environment.outer;
  const result = outer === undefined ? inside : { ...inside, environment: { ...inside.environment, outer: { ...outer, loadAverageEnd: loadavg() } } };
  return { result, hostFailed };
}

/**
 * Run the frozen `measureJs`'s measure(spec) right here where KVM boots stock Linux, else inside one
 * nested-host boot, with what the result records of this machine (its load, its CPU) added to the spec.
 */
export async function measureHereOrNested<S extends object, R extends NestedMeasureResult>(
  measureJs: string,
  spec: S,
  env: VirtualizationEnvironment,
  nested: NestedMeasureOptions,
  say: (line: string) => void,
): Promise<R> {
  if (env.canRunStockLinux) {
    say(`${env.summary} Measuring here.`);
    const { measure } = (await import(pathToFileURL(measureJs).href)) as { measure(spec: S): Promise<R> };
    return measure(spec);
  }
  say(`${env.summary} Measuring inside the nested host (should it fail mid-run, a fresh one goes on from the start of the round it cut short).`);
  const outer: OuterEnvironment = { cpuModel: cpuModelName(), cpus: cpus().length, kernelRelease: release(), loadAverage: loadavg() };
  return measureInNestedHost<R>(measureJs, { ...spec, outerSummary: env.summary, outer }, nested);
}

/**
 * A benchmark driver's last steps: write the report for `result`, say where it is and how long the
 * whole run took, and return the driver's exit status: 0, or 1 for an incomplete run (the emulated
 * host died; the report then holds the boots that finished).
 */
export function finishRun<R extends { readonly startedAt: string; readonly incomplete?: string }>(
  result: R,
  outDir: string,
  kind: string,
  started: number,
  write: (result: R, dir: string, base: string) => string,
  say: (line: string) => void,
): number {
  const md = write(result, outDir, `${kind}-${result.startedAt.slice(0, 10)}`);
  say(`report: ${md} (${((Date.now() - started) / 60_000).toFixed(1)} min in all)`);
  if (result.incomplete !== undefined) {
    say(`error: the run is incomplete: ${result.incomplete}; the report holds the guest boots that finished`);
    return 1;
  }
  return 0;
}

/** Run a driver's main(): its status becomes the exit code; a failure is one error line and 1. */
export async function runDriver(main: () => Promise<number>, say: (line: string) => void): Promise<void> {
  try {
    process.exitCode = await main();
  } catch (e) {
    say(`error: ${(e as Error).message}`);
    process.exitCode = 1;
  }
}
