/**
 * `npm run bench:api`: how fast tsvmm's API comes up, how long InstanceStart takes to reach the
 * guest's /init, and how many microVMs one host core starts per second (against QEMU `-M microvm`);
 * a report in bench/results/api-<date>.md with the raw result as JSON and the charts as SVG.
 *
 *   node dist/bench/api/run.js [--startup-rounds N] [--boot-rounds N] [--warmup N] [--vms K]
 *                              [--concurrency C,C] [--cpu N] [--mem MIB] [--poll-ms MS]
 *                              [--host-rounds N] [--host-warmup N] [--out-dir DIR]
 *   node dist/bench/api/run.js --report FILE.json [--out-dir DIR]      (re-render a report)
 *   node dist/bench/api/run.js --startup-only [--report FILE.json] [--host-rounds N] [--host-warmup N] [--out-dir DIR]
 *
 * Where KVM boots stock Linux (hardware virtualization) it measures right here. Otherwise the
 * whole measurement runs inside ONE nested-host boot, and part 1 (start-up, which needs no KVM:
 * the VM is created only at InstanceStart) is taken a second time directly on this machine, before
 * the nested host boots, as the result's `hostStartup` series. `--startup-only` takes only that
 * series (no guest, no nested host, well under a minute) and merges it into the report given with
 * `--report` (replacing an earlier series there), or writes a new dated report holding only it.
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { cpus, loadavg, release, tmpdir, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { detectVirtualization } from '../../src/host/environment.js';
import { ensureAptPackages } from '../../src/image/debian.js';
import { ensureDefaultGuest } from '../../src/image/default-guest.js';
import { stderrProgress } from '../../src/util/progress.js';
import { freeze, packageRoot } from '../blk/freeze.js';
import { measureInNestedHost, positiveInt, revision, runDriver, finishRun } from '../blk/run-helpers.js';
import { cpuModelName } from '../boot/measure.js';
import type { ApiMeasureSpec } from './measure.js';
import { writeReport } from './report.js';
import type { ApiResult, HostStartup } from './samples.js';
import { measureStartup, type StartupSpec } from './startup.js';

/** Where tsc put src/ and bench/ (dist/, or any --outDir). */
const COMPILED_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const QEMU = '/usr/bin/qemu-system-x86_64';

const say = (s: string): void => {
  process.stderr.write(`bench: ${s}\n`);
};

/** Part 1 directly on this machine (the compiled tree's CLI, or a frozen copy's via `paths`). */
async function measureHostStartup(o: { rounds: number; warmup: number; pollMs: number; revision: string; paths?: Pick<StartupSpec, 'tsvmmCli' | 'importProbe'> }): Promise<HostStartup> {
  const startedAt = new Date().toISOString();
  const loadAverageStart = loadavg();
  say(`start-up on this machine: ${o.rounds} rounds after ${o.warmup} warm-up round(s)`);
  const { startup, imports } = await measureStartup({ socketDir: tmpdir(), pollMs: o.pollMs, rounds: o.rounds, warmup: o.warmup, logPrefix: 'this machine: ', ...o.paths });
  return {
    startedAt,
    finishedAt: new Date().toISOString(),
    environment: {
      cpuModel: cpuModelName(),
      cpus: cpus().length,
      kernelRelease: release(),
      nodeVersion: process.version,
      memTotalMiB: Math.round(totalmem() / 2 ** 20),
      loadAverageStart,
      loadAverageEnd: loadavg(),
    },
    rounds: o.rounds,
    warmup: o.warmup,
    pollMs: o.pollMs,
    tsvmmRevision: o.revision,
    startup,
    imports,
  };
}

/** A result holding only the host series (`--startup-only` without `--report`). */
function hostOnlyResult(host: HostStartup, summary: string): ApiResult {
  const e = host.environment;
  return {
    startedAt: host.startedAt,
    finishedAt: host.finishedAt,
    environment: { nestedHost: false, outerSummary: summary, cpuModel: e.cpuModel, cpus: e.cpus, kernelRelease: e.kernelRelease, nodeVersion: e.nodeVersion, qemuVersion: 'not used', memTotalMiB: e.memTotalMiB, loadAverageStart: e.loadAverageStart, loadAverageEnd: e.loadAverageEnd },
    config: {
      kernel: '',
      kernelRelease: '',
      initrd: '',
      cmdline: '',
      guestCommand: '',
      qemuArgs: [],
      memoryMib: 0,
      startupRounds: 0,
      bootRounds: 0,
      warmup: 0,
      rateCount: 0,
      rateConcurrency: [],
      rateCpu: 0,
      pollMs: host.pollMs,
      tsvmmRevision: host.tsvmmRevision ?? 'unknown',
    },
    startup: [],
    imports: [],
    boots: [],
    rates: [],
    hostStartup: host,
  };
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      'startup-rounds': { type: 'string' },
      'boot-rounds': { type: 'string' },
      warmup: { type: 'string' },
      vms: { type: 'string' },
      concurrency: { type: 'string' },
      cpu: { type: 'string' },
      mem: { type: 'string' },
      'poll-ms': { type: 'string' },
      'out-dir': { type: 'string' },
      report: { type: 'string' },
      'host-rounds': { type: 'string' },
      'host-warmup': { type: 'string' },
      'startup-only': { type: 'boolean' },
    },
    strict: true,
  });
  const pkg = packageRoot(COMPILED_ROOT);
  const outDir = resolve(values['out-dir'] ?? join(pkg, 'bench/results'));
  mkdirSync(outDir, { recursive: true });
  const host = {
    rounds: positiveInt(values['host-rounds'], 15, '--host-rounds'),
    warmup: positiveInt(values['host-warmup'], 2, '--host-warmup', 0),
    pollMs: positiveInt(values['poll-ms'], 50, '--poll-ms'),
    revision: revision([pkg, process.cwd()]),
  };
  if (values['startup-only'] === true) {
    const base = values.report !== undefined ? (JSON.parse(readFileSync(values.report, 'utf8')) as ApiResult) : undefined;
    // A new report must not overwrite a full one of the same day.
    const today = join(outDir, `api-${new Date().toISOString().slice(0, 10)}.json`);
    if (base === undefined && existsSync(today)) throw new Error(`${today} exists: merge into it with --report ${today}, or pass another --out-dir`);
    const series = await measureHostStartup(host);
    const result: ApiResult = base !== undefined ? { ...base, hostStartup: series } : hostOnlyResult(series, detectVirtualization().summary);
    say(`report: ${writeReport(result, outDir, `api-${result.startedAt.slice(0, 10)}`)}`);
    return 0;
  }
  if (values.report !== undefined) {
    const result = JSON.parse(readFileSync(values.report, 'utf8')) as ApiResult;
    say(`report: ${writeReport(result, outDir, `api-${result.startedAt.slice(0, 10)}`)}`);
    return 0;
  }
  const concurrency = (values.concurrency ?? '1,3').split(',').map((c) => positiveInt(c.trim(), 1, '--concurrency'));
  const started = Date.now();
  const env = detectVirtualization();
  ensureAptPackages(['qemu-system-x86'], stderrProgress);
  const guest = ensureDefaultGuest(stderrProgress);
  const frozen = freeze(COMPILED_ROOT, guest.kernel, guest.initrd, 'api');
  const measureJs = frozen.measure;
  say(`measuring a frozen copy of the compiled tsvmm and of the guest in ${frozen.dir}`);
  const spec: ApiMeasureSpec = {
    kernel: frozen.kernel,
    kernelRelease: guest.kernelRelease,
    initrd: frozen.initrd,
    bootArgs: guest.bootArgs,
    memoryMib: positiveInt(values.mem, 128, '--mem', 128),
    startupRounds: positiveInt(values['startup-rounds'], 7, '--startup-rounds'),
    bootRounds: positiveInt(values['boot-rounds'], 3, '--boot-rounds'),
    warmup: positiveInt(values.warmup, 1, '--warmup', 0),
    rateCount: positiveInt(values.vms, 3, '--vms'),
    rateConcurrency: concurrency,
    rateCpu: positiveInt(values.cpu, 0, '--cpu', 0),
    pollMs: positiveInt(values['poll-ms'], 50, '--poll-ms'),
    qemu: QEMU,
    // The nested host's /tmp is its own tmpfs; on hardware, this machine's.
    socketDir: tmpdir(),
    tsvmmRevision: host.revision,
  };

  let result: ApiResult;
  try {
    if (env.canRunStockLinux) {
      say(`${env.summary} Measuring here.`);
      const { measure } = (await import(pathToFileURL(measureJs).href)) as typeof import('./measure.js');
      result = await measure(spec);
    } else {
      say(`${env.summary} Start-up first on this machine (it needs no KVM), then everything inside one nested-host boot.`);
      const hostStartup = await measureHostStartup({
        ...host,
        paths: { tsvmmCli: join(frozen.dir, 'dist', 'src', 'cli', 'main.js'), importProbe: join(frozen.dir, 'dist', 'bench', 'api', 'import-probe.js') },
      });
      const inner: ApiMeasureSpec = {
        ...spec,
        outerSummary: env.summary,
        outer: { cpuModel: cpuModelName(), cpus: cpus().length, kernelRelease: release(), loadAverage: loadavg() },
      };
      // A VM boot takes 20–60 s there; a batch of `vms` at once on one core several minutes.
      const vmBudgetMs = 2 * 60_000;
      const vmBoots = (spec.warmup + spec.bootRounds) * 2 + 2 + concurrency.length * 2 * spec.rateCount;
      const nested = await measureInNestedHost<ApiResult>(measureJs, inner, {
        cwd: pkg,
        timeoutMs: 10 * 60_000 + vmBoots * vmBudgetMs,
        stallTimeoutMs: 15 * 60_000,
        memoryMiB: 3072,
      });
      result = { ...nested, hostStartup };
    }
  } finally {
    frozen.remove();
  }
  return finishRun(result, outDir, 'api', started, writeReport, say);
}

await runDriver(main, say);
