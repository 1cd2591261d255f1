/**
 * `npm run bench:boot`: boot the default guest's kernel and initrd under tsvmm and QEMU
 * `-M microvm` side by side and write a report to bench/results/boot-<date>.md (with the raw
 * samples as JSON and the charts as SVG).
 *
 *   node dist/bench/boot/run.js [--runs N] [--warmup N] [--cpus N] [--mem MIB] [--sample-ms MS]
 *                               [--only tsvmm-cli,tsvmm-lib,qemu-microvm,qemu-microvm-rtc-off] [--out-dir DIR]
 *   node dist/bench/boot/run.js --report FILE.json [--out-dir DIR]     (re-render a report)
 *
 * Where KVM boots stock Linux (hardware virtualization) it measures right here. Otherwise the
 * whole measurement runs inside ONE nested-host boot, so both VMMs share the same emulated
 * machine and its one boot cost is paid once.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { cpus, loadavg, release } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { detectVirtualization } from '../../src/host/environment.js';
import { runInNestedHost } from '../../src/host/nested.js';
import { ensureDefaultGuest } from '../../src/image/default-guest.js';
import { ensureAptPackages } from '../../src/image/debian.js';
import { stderrProgress } from '../../src/util/progress.js';
import { cpuModelName, type MeasureSpec } from './measure.js';
import { writeReport } from './report.js';
import { snapshot } from './snapshot.js';
import type { BenchResult, VmmKind } from './samples.js';
import { runDriver } from '../blk/run-helpers.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const QEMU = '/usr/bin/qemu-system-x86_64';
const ALL_KINDS: readonly VmmKind[] = ['qemu-microvm', 'tsvmm-cli', 'qemu-microvm-rtc-off', 'tsvmm-lib'];
/** The whole nested run: boots take tens of seconds each there. */
const NESTED_TIMEOUT_MS = 4 * 60 * 60_000;

const say = (s: string): void => {
  process.stderr.write(`bench: ${s}\n`);
};

function positiveInt(text: string | undefined, fallback: number, what: string, min = 1): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isInteger(n) || n < min) throw new Error(`${what} must be an integer ≥ ${min}, got '${text}'`);
  return n;
}

/** Reassemble `BENCH-RESULT i/n <chunk>` lines from the nested host's console. */
export function decodeResultLines(output: string): BenchResult {
  const chunks = new Map<number, string>();
  let total = 0;
  for (const raw of output.split('\n')) {
    const m = /^BENCH-RESULT (\d+)\/(\d+) (\S+)/.exec(raw.replace(/\r$/, ''));
    if (!m) continue;
    chunks.set(Number(m[1]), m[3]!);
    total = Number(m[2]);
  }
  if (total === 0 || chunks.size !== total) throw new Error(`the nested run's result is incomplete (${chunks.size} of ${total} parts)`);
  const b64 = Array.from({ length: total }, (_, i) => chunks.get(i + 1)!).join('');
  return JSON.parse(gunzipSync(Buffer.from(b64, 'base64')).toString('utf8')) as BenchResult;
}

/** The checkout's commit, and whether its working tree differs from it (the report says which tsvmm it measured). */
function revision(): string {
  const git = (...args: string[]): string => execFileSync('git', args, { cwd: REPO, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  try {
    const head = git('rev-parse', '--short', 'HEAD');
    return git('status', '--porcelain', '--untracked-files=no') === '' ? head : `${head} + uncommitted changes`;
  } catch {
    return 'unknown';
  }
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      runs: { type: 'string' },
      warmup: { type: 'string' },
      cpus: { type: 'string' },
      mem: { type: 'string' },
      'sample-ms': { type: 'string' },
      only: { type: 'string' },
      'out-dir': { type: 'string' },
      report: { type: 'string' },
    },
    strict: true,
  });
  const outDir = resolve(values['out-dir'] ?? join(REPO, 'bench/results'));
  mkdirSync(outDir, { recursive: true });
  if (values.report !== undefined) {
    const result = JSON.parse(readFileSync(values.report, 'utf8')) as BenchResult;
    say(`report: ${writeReport(result, outDir, `boot-${result.startedAt.slice(0, 10)}`)}`);
    return 0;
  }
  const kinds = values.only === undefined ? [...ALL_KINDS] : (values.only.split(',') as VmmKind[]);
  for (const k of kinds) if (!ALL_KINDS.includes(k)) throw new Error(`--only: unknown VMM '${k}' (choose from ${ALL_KINDS.join(', ')})`);

  const env = detectVirtualization();
  ensureAptPackages(['qemu-system-x86'], stderrProgress);
  const guest = ensureDefaultGuest(stderrProgress);
  const snap = snapshot(REPO, guest.kernel, guest.initrd);
  say(`measuring a frozen copy of dist/ and of the guest in ${snap.dir}`);
  const spec: MeasureSpec = {
    kernel: snap.kernel,
    kernelRelease: guest.kernelRelease,
    initrd: snap.initrd,
    bootArgs: guest.bootArgs,
    vcpus: positiveInt(values.cpus, 1, '--cpus'),
    memoryMib: positiveInt(values.mem, 256, '--mem', 128),
    runs: positiveInt(values.runs, 5, '--runs'),
    warmup: positiveInt(values.warmup, 1, '--warmup', 0),
    sampleEveryMs: positiveInt(values['sample-ms'], 250, '--sample-ms', 10),
    qemu: QEMU,
    kinds,
    tsvmmRevision: revision(),
  };

  let result: BenchResult;
  try {
    if (env.canRunStockLinux) {
      say(`${env.summary} Measuring here.`);
      const { measure } = (await import(pathToFileURL(snap.measure).href)) as typeof import('./measure.js');
      result = await measure(spec);
    } else {
      say(`${env.summary} Measuring inside one nested-host boot.`);
      const inner: MeasureSpec = {
        ...spec,
        outerSummary: env.summary,
        outer: { cpuModel: cpuModelName(), cpus: cpus().length, kernelRelease: release(), loadAverage: loadavg() },
      };
      const arg = Buffer.from(JSON.stringify(inner), 'utf8').toString('base64');
      let pending = '';
      const r = await runInNestedHost([process.execPath, snap.measure, arg], {
        cwd: REPO,
        timeoutMs: NESTED_TIMEOUT_MS,
        progress: stderrProgress,
        // Show progress live, but not the result's base64 lines.
        onOutput: (text) => {
          const parts = (pending + text).split('\n');
          pending = parts.pop() ?? '';
          for (const l of parts) if (!l.startsWith('BENCH-RESULT ')) process.stderr.write(`${l}\n`);
        },
      });
      if (r.timedOut) throw new Error('the nested host run timed out');
      if (r.status !== 0) throw new Error(`the measurement inside the nested host failed with status ${r.status}`);
      result = decodeResultLines(r.output);
    }
  } finally {
    snap.remove();
  }
  const md = writeReport(result, outDir, `boot-${result.startedAt.slice(0, 10)}`);
  say(`report: ${md}`);
  return 0;
}

await runDriver(main, say);
