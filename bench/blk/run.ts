/**
 * `npm run bench:blk`: fio inside the guest on a virtio-blk drive, tsvmm against QEMU's
 * virtio-blk-pci on the same raw image, kernel, initramfs and host, and a report in
 * bench/results/blk-<date>.md (with the raw result as JSON and the charts as SVG).
 *
 *   node dist/bench/blk/run.js [--cpus N] [--mem MIB] [--runtime S] [--idle S] [--rounds N] [--image-mib MIB]
 *                              [--jobs NAME,…] [--only tsvmm,qemu] [--image-dir DIR] [--out-dir DIR]
 *   node dist/bench/blk/run.js --report FILE.json [--out-dir DIR]      (re-render a report)
 *
 * Where KVM boots stock Linux (hardware virtualization) it measures right here. Otherwise the
 * whole measurement runs inside ONE nested-host boot, so both VMMs share the same emulated machine.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { cpus, loadavg, release } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { detectVirtualization } from '../../src/host/environment.js';
import { runInNestedHost } from '../../src/host/nested.js';
import { ensureAptPackages } from '../../src/image/debian.js';
import { ensureDefaultGuest } from '../../src/image/default-guest.js';
import { stderrProgress } from '../../src/util/progress.js';
import { freeze, packageRoot } from './freeze.js';
import { ensureBenchInitramfs } from './initramfs.js';
import { selectJobs } from './jobs.js';
import { type BlkMeasureSpec, cpuModelName } from './measure.js';
import { writeReport } from './report.js';
import { decodeResultLines, RESULT_PREFIX } from './result-lines.js';
import { ALL_VMMS, type BlkResult, type VmmKind } from './samples.js';

/** Where tsc put src/ and bench/ (dist/, or any --outDir). */
const COMPILED_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const QEMU = '/usr/bin/qemu-system-x86_64';
/** The nested host's memory: the image sits in its tmpfs (half of RAM at most), next to a guest and a VMM. */
const NESTED_MEMORY_MIB = 4096;

const say = (s: string): void => {
  process.stderr.write(`bench: ${s}\n`);
};

function positiveInt(text: string | undefined, fallback: number, what: string, min = 1): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isInteger(n) || n < min) throw new Error(`${what} must be an integer ≥ ${min}, got '${text}'`);
  return n;
}

/** The checkout's commit, and whether its working tree differs from it (the report says which tsvmm it measured). */
function revision(dirs: readonly string[]): string {
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

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      cpus: { type: 'string' },
      mem: { type: 'string' },
      runtime: { type: 'string' },
      idle: { type: 'string' },
      rounds: { type: 'string' },
      'image-mib': { type: 'string' },
      'image-dir': { type: 'string' },
      jobs: { type: 'string' },
      only: { type: 'string' },
      'out-dir': { type: 'string' },
      report: { type: 'string' },
    },
    strict: true,
  });
  const pkg = packageRoot(COMPILED_ROOT);
  const outDir = resolve(values['out-dir'] ?? join(pkg, 'bench/results'));
  mkdirSync(outDir, { recursive: true });
  if (values.report !== undefined) {
    const result = JSON.parse(readFileSync(values.report, 'utf8')) as BlkResult;
    say(`report: ${writeReport(result, outDir, `blk-${result.startedAt.slice(0, 10)}`)}`);
    return 0;
  }
  const vmms = values.only === undefined ? [...ALL_VMMS] : (values.only.split(',').map((s) => s.trim()) as VmmKind[]);
  for (const v of vmms) if (!ALL_VMMS.includes(v)) throw new Error(`--only: unknown VMM '${v}' (choose from ${ALL_VMMS.join(', ')})`);
  const jobs = selectJobs(values.jobs);
  const runtimeSeconds = positiveInt(values.runtime, 10, '--runtime');
  const rounds = positiveInt(values.rounds, 3, '--rounds');

  const started = Date.now();
  const env = detectVirtualization();
  if (vmms.includes('qemu')) ensureAptPackages(['qemu-system-x86'], stderrProgress);
  const guest = ensureDefaultGuest(stderrProgress);
  const initramfs = ensureBenchInitramfs(guest.initrd, stderrProgress);
  const frozen = freeze(COMPILED_ROOT, guest.kernel, initramfs.path);
  say(`measuring a frozen copy of the compiled tsvmm and of the guest in ${frozen.dir}`);
  const spec: BlkMeasureSpec = {
    kernel: frozen.kernel,
    kernelRelease: guest.kernelRelease,
    initrd: frozen.initrd,
    bootArgs: guest.bootArgs,
    vcpus: positiveInt(values.cpus, 2, '--cpus'),
    memoryMib: positiveInt(values.mem, 512, '--mem', 128),
    imageMib: positiveInt(values['image-mib'], 1024, '--image-mib', 16),
    ...(values['image-dir'] !== undefined ? { imageDir: resolve(values['image-dir']) } : {}),
    runtimeSeconds,
    idleSeconds: positiveInt(values.idle, 5, '--idle', 0),
    rounds,
    jobs: jobs.map((j) => j.name),
    vmms,
    qemu: QEMU,
    tsvmmRevision: revision([pkg, process.cwd()]),
  };

  let result: BlkResult;
  try {
    if (env.canRunStockLinux) {
      say(`${env.summary} Measuring here.`);
      const { measure } = (await import(pathToFileURL(frozen.measure).href)) as typeof import('./measure.js');
      result = await measure(spec);
    } else {
      say(`${env.summary} Measuring inside one nested-host boot.`);
      const inner: BlkMeasureSpec = {
        ...spec,
        outerSummary: env.summary,
        outer: { cpuModel: cpuModelName(), cpus: cpus().length, kernelRelease: release(), loadAverage: loadavg() },
      };
      const perBootMs = 5 * 60_000 + jobs.length * (runtimeSeconds * 1000 + 90_000);
      let pending = '';
      const r = await runInNestedHost([process.execPath, frozen.measure, Buffer.from(JSON.stringify(inner), 'utf8').toString('base64')], {
        cwd: pkg,
        timeoutMs: 10 * 60_000 + rounds * vmms.length * perBootMs,
        // The measurement prints a line per job at least; this long without one means it hangs.
        stallTimeoutMs: perBootMs,
        memoryMiB: NESTED_MEMORY_MIB,
        progress: stderrProgress,
        ...(values['image-dir'] !== undefined ? { writable: [resolve(values['image-dir'])] } : {}),
        // Show progress live, but not the result's base64 lines.
        onOutput: (text) => {
          const parts = (pending + text).split('\n');
          pending = parts.pop() ?? '';
          for (const l of parts) if (!l.startsWith(RESULT_PREFIX)) process.stderr.write(`${l}\n`);
        },
      });
      if (r.timedOut) throw new Error(r.stalled ? 'the nested host run stalled' : 'the nested host run timed out');
      if (r.status !== 0) throw new Error(`the measurement inside the nested host failed with status ${r.status}`);
      const inside = decodeResultLines(r.output) as BlkResult;
      // The outer machine's load after the run: its cores run the nested host and whatever else shares them.
      const outer = inside.environment.outer;
      result = outer === undefined ? inside : { ...inside, environment: { ...inside.environment, outer: { ...outer, loadAverageEnd: loadavg() } } };
    }
  } finally {
    frozen.remove();
  }
  const md = writeReport(result, outDir, `blk-${result.startedAt.slice(0, 10)}`);
  say(`report: ${md} (${((Date.now() - started) / 60_000).toFixed(1)} min in all)`);
  return 0;
}

try {
  process.exitCode = await main();
} catch (e) {
  say(`error: ${(e as Error).message}`);
  process.exitCode = 1;
}
