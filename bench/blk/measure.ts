/**
 * The measuring half of the block benchmark: runs where /dev/kvm boots stock Linux (directly on
 * hardware KVM, or inside the nested host), writes the raw image, then boots the bench guest under
 * each VMM in turn, every boot running every fio job, and emits the raw result as JSON.
 *
 *   node dist/bench/blk/measure.js SPEC_BASE64
 *
 * SPEC_BASE64 is a base64 JSON BlkMeasureSpec (run.ts builds it). The result goes to `spec.out`
 * when given, else to stdout as BLK-RESULT lines (result-lines.ts): inside the nested host the
 * console is the only way out.
 */
import type { PollerWait } from '../../src/vmm/eventfd-poller.js';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { cpus, loadavg, release, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { GUEST_UP_LIMIT_MS } from './console-run.js';
import { commandCmdlineArg } from '../../src/image/guest-protocol.js';
import { guestCommand } from './guest-script.js';
import { fsTypeOf, writeImage } from './image.js';
import { type FioJob, selectJobs } from './jobs.js';
import { measureMain, type PartialResultSink } from './result-lines.js';
import type { OuterEnvironment } from './run-helpers.js';
import type { BlkEnvironment, BlkResult, MeasuringEnvironment, RunSampleBase, VmmKind, VmmRunSample } from './samples.js';
import { runVmm } from './vmm-run.js';
import { type GuestSpec, profileNodeArgs, qemuInvocation, tsvmmInvocation } from './vmms.js';

export interface BlkMeasureSpec {
  readonly kernel: string;
  readonly kernelRelease: string;
  readonly initrd: string;
  /** Kernel command line without the command (the default guest's boot args). */
  readonly bootArgs: string;
  readonly vcpus: number;
  readonly memoryMib: number;
  readonly imageMib: number;
  /** Folder for the image (and staged kernel and initrd); default the OS temp folder (a tmpfs in the nested host). */
  readonly imageDir?: string;
  readonly runtimeSeconds: number;
  /** Seconds the guest sleeps before the jobs, to measure each VMM's CPU with the guest idle (0: skip). */
  readonly idleSeconds: number;
  /** fio's unmeasured warm-up before the jobs (guest-script.ts), 0 for none. */
  readonly warmupSeconds: number;
  readonly rounds: number;
  readonly jobs: readonly string[];
  readonly vmms: readonly VmmKind[];
  /** Boots of bootOrder() an earlier nested host already did (a resumed run): start after them. */
  readonly skipBoots?: number;
  readonly qemu: string;
  readonly out?: string;
  /** Where tsvmm writes its main thread's CPU profiles (--profile-vmm). */
  readonly vmmProfileDir?: string;
  /** How tsvmm's EventFdPoller waits (--tsvmm-poller). */
  readonly tsvmmPoller?: PollerWait;
  readonly outer?: OuterEnvironment;
  readonly outerSummary?: string;
  readonly tsvmmRevision?: string;
}

/** QEMU CPU models in order: the host's own, then a named one should `host` be refused (as under PVM). */
export const QEMU_CPU_MODELS = ['host', 'EPYC'];
/** Boot and teardown allowance per guest boot, on top of the jobs' own time (the nested host is slow). */
const BOOT_ALLOWANCE_MS = 5 * 60_000;
/** Per job: fio start-up, exit and printing its JSON, beyond the runtime. */
const JOB_ALLOWANCE_MS = 90_000;

const TSVMM_CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const log = (s: string): void => {
  process.stderr.write(`bench: ${s}\n`);
};

export function versionLine(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).split('\n')[0]!.trim();
  } catch {
    return 'unknown';
  }
}

export function cpuModelName(): string {
  try {
    return /^model name\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

/**
 * How every benchmark result begins: when it ran, and, for a partial result printed after a guest
 * boot (measureMain), that it holds only `bootsDone` of the `bootsPlanned` boots.
 */
export function resultTimes(startedAt: string, done: boolean, bootsDone: number, bootsPlanned: number): { readonly incomplete?: string; readonly bootsDone: number; readonly startedAt: string; readonly finishedAt: string } {
  return { ...(done ? {} : { incomplete: `${bootsDone} of ${bootsPlanned} guest boots done` }), bootsDone, startedAt, finishedAt: new Date().toISOString() };
}

/**
 * The guest boots of a run in order: every round boots each VMM once, alternating which goes
 * first, so neither always runs first (after the image was written) or last. A run resumed in a
 * fresh nested host (spec.skipBoots) skips the ones an earlier nested host finished.
 */
export function bootOrder<V>(rounds: number, vmms: readonly V[]): { readonly round: number; readonly vmm: V }[] {
  const order: { round: number; vmm: V }[] = [];
  for (let round = 0; round < rounds; round++) for (const vmm of round % 2 === 0 ? vmms : [...vmms].reverse()) order.push({ round, vmm });
  return order;
}

/** The guest both VMMs booted, as every benchmark's config records it. */
export function guestConfig(
  spec: { readonly kernel: string; readonly kernelRelease: string; readonly initrd: string; readonly vcpus: number; readonly memoryMib: number },
  cmdline: string,
  guestCommand: string,
): { readonly kernelRelease: string; readonly kernelBytes: number; readonly initrdBytes: number; readonly cmdline: string; readonly guestCommand: string; readonly vcpus: number; readonly memoryMib: number } {
  return { kernelRelease: spec.kernelRelease, kernelBytes: statSync(spec.kernel).size, initrdBytes: statSync(spec.initrd).size, cmdline, guestCommand, vcpus: spec.vcpus, memoryMib: spec.memoryMib };
}

/** The measuring host at the end of a run that started at `loadAverageStart`, and the machine under it when `spec` says. */
export function measuringEnvironment(spec: { readonly qemu: string; readonly outer?: OuterEnvironment; readonly outerSummary?: string }, loadAverageStart: readonly number[]): MeasuringEnvironment {
  return {
    nestedHost: process.env['TSVMM_NESTED_HOST'] === '1',
    ...(spec.outerSummary !== undefined ? { outerSummary: spec.outerSummary } : {}),
    cpuModel: cpuModelName(),
    cpus: cpus().length,
    kernelRelease: release(),
    qemuVersion: versionLine(spec.qemu, ['--version']),
    nodeVersion: process.version,
    memTotalMiB: Math.round(totalmem() / 2 ** 20),
    loadAverageStart,
    loadAverageEnd: loadavg(),
    ...(spec.outer !== undefined ? { outer: spec.outer } : {}),
  };
}

/**
 * One QEMU boot with `cpu.model`; should QEMU refuse that CPU model before the guest came up (never
 * for a guest failure), the failed sample goes to `failed`, `cpu.model` moves to the next of
 * QEMU_CPU_MODELS for this and every later boot, and the boot is tried again.
 */
export async function bootQemu<S extends RunSampleBase>(cpu: { model: string }, boot: (cpuModel: string) => Promise<S>, failed: S[], log: (line: string) => void): Promise<S> {
  const s = await boot(cpu.model);
  const next = QEMU_CPU_MODELS[QEMU_CPU_MODELS.indexOf(cpu.model) + 1];
  if (s.ok || s.infoAtMs !== undefined || next === undefined || !s.notes.some((n) => /cpu|MSR/i.test(n))) return s;
  log(`QEMU with -cpu ${cpu.model} failed (${s.problem ?? ''}); retrying with -cpu ${next}`);
  failed.push(s);
  cpu.model = next;
  return boot(cpu.model);
}

/**
 * The jobs of `jobs` a boot did not finish, for a second boot of the same VMM in the same round.
 * None when the guest never came up and its kernel reported no stalled CPU: that is the VMM
 * failing to boot it, to report, not the emulated machine losing a guest.
 */
export function jobsToRetry(jobs: readonly FioJob[], s: Pick<VmmRunSample, 'infoAtMs' | 'guestStall' | 'jobs'>): FioJob[] {
  if (s.infoAtMs === undefined && s.guestStall === undefined) return [];
  return jobs.filter((j) => s.jobs.find((x) => x.job === j.name)?.ok !== true);
}

export async function measure(spec: BlkMeasureSpec, partial?: PartialResultSink): Promise<BlkResult> {
  const startedAt = new Date().toISOString();
  const loadAverageStart = loadavg();
  const jobs = selectJobs(spec.jobs.join(','));
  const command = guestCommand(spec.runtimeSeconds, spec.idleSeconds, spec.warmupSeconds, jobs);
  const cmdline = `${spec.bootArgs} ${commandCmdlineArg(command)}`;
  const work = mkdtempSync(join(spec.imageDir ?? tmpdir(), 'tsvmm-blk-'));
  const runs: VmmRunSample[] = [];
  let bootsDone = 0;
  let imageFillSeconds: number | undefined;
  const image = join(work, 'disk.img');
  try {
    // Both VMMs load the kernel and initrd from the same local copy (in the nested host the
    // originals are on 9p; the bench initrd is ~90 MB).
    const kernel = join(work, 'vmlinuz');
    const initrd = join(work, 'initrd.cpio');
    copyFileSync(spec.kernel, kernel);
    copyFileSync(spec.initrd, initrd);
    log(`writing the ${spec.imageMib} MiB raw image ${image} (${fsTypeOf(image)})`);
    imageFillSeconds = writeImage(image, spec.imageMib);
    log(`  written in ${imageFillSeconds.toFixed(1)} s`);
    const guest: GuestSpec = { kernel, initrd, cmdline, vcpus: spec.vcpus, memoryMib: spec.memoryMib, image, ...(spec.vmmProfileDir !== undefined ? { nodeArgs: profileNodeArgs(spec.vmmProfileDir) } : {}), ...(spec.tsvmmPoller !== undefined ? { poller: spec.tsvmmPoller } : {}) };
    const timeoutMs = BOOT_ALLOWANCE_MS + jobs.length * (spec.runtimeSeconds * 1000 + JOB_ALLOWANCE_MS);
    // The script prints a line at every step (warm-up, idle sleep, each job's start and end): the
    // longest of them plus a job's allowance is the longest a working guest stays silent.
    const silenceLimitMs = Math.max(spec.runtimeSeconds, spec.warmupSeconds, spec.idleSeconds) * 1000 + JOB_ALLOWANCE_MS;
    const qemuCpu = { model: QEMU_CPU_MODELS[0]! };
    const order = bootOrder(spec.rounds, spec.vmms);
    bootsDone = Math.min(spec.skipBoots ?? 0, order.length);
    if (bootsDone > 0) log(`resuming after the ${bootsDone} guest boots an earlier nested host finished`);
    /** One boot of `vmm` in `round` running `bootJobs` (idle phase and all when `first`). */
    const bootOnce = async (round: number, vmm: VmmKind, bootJobs: readonly FioJob[], first: boolean): Promise<VmmRunSample> => {
      const bootCmdline = first ? cmdline : `${spec.bootArgs} ${commandCmdlineArg(guestCommand(spec.runtimeSeconds, 0, spec.warmupSeconds, bootJobs))}`;
      const g: GuestSpec = { ...guest, cmdline: bootCmdline };
      const base = { vmm, round, jobs: bootJobs.map((j) => j.name), timeoutMs, silenceLimitMs, upLimitMs: GUEST_UP_LIMIT_MS, log };
      const s = vmm === 'tsvmm'
        ? await runVmm({ ...base, invocation: tsvmmInvocation(process.execPath, TSVMM_CLI, g) })
        : await bootQemu(qemuCpu, (cpuModel) => runVmm({ ...base, invocation: qemuInvocation(spec.qemu, g, cpuModel), cpuModel }), runs, log);
      log(`  ${vmm}: ${s.ok ? 'ok' : `FAILED (${s.problem ?? ''})`} in ${(s.wallMs / 1000).toFixed(1)} s${s.idle !== undefined ? `; idle guest: VMM CPU ${((100 * s.idle.cpu.totalMs) / s.idle.windowMs).toFixed(0)} %` : ''}`);
      for (const j of s.jobs) {
        const f = j.fio;
        if (f === undefined) continue;
        const d = f.read.ios >= f.write.ios ? f.read : f.write;
        const ios = f.read.ios + f.write.ios;
        log(`    ${j.job}: ${d.iops.toFixed(0)} IOPS, ${(d.bandwidthBps / 1e6).toFixed(1)} MB/s, VMM CPU ${j.cpu !== undefined && ios > 0 ? ((j.cpu.totalMs * 1000) / ios).toFixed(1) : '-'} µs/IO`);
      }
      return first ? s : { ...s, retriedJobs: bootJobs.map((j) => j.name) };
    };
    for (const { round, vmm } of order.slice(bootsDone)) {
      log(`round ${round + 1}/${spec.rounds}: ${vmm}`);
      const s = await bootOnce(round, vmm, jobs, true);
      runs.push(s);
      // A guest lost mid-run (in the nested host: the emulated machine's page-fault loops, stalls)
      // leaves its round without some jobs of one VMM. One more boot of the same VMM runs those
      // jobs (after the same warm-up) in the same round, so the round still compares both VMMs
      // in this host. Both boots stay in the result and the report's runs table; the lost jobs'
      // samples count nowhere (jobsToRetry says which boots get no second one).
      const failed = jobsToRetry(jobs, s);
      if (failed.length > 0) {
        log(`  ${vmm}: booting again for the jobs it lost (${failed.map((j) => j.name).join(', ')})`);
        runs.push(await bootOnce(round, vmm, failed, false));
      }
      bootsDone++;
      partial?.(resultSoFar(false));
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  return resultSoFar(true);

  /** The result with the boots run so far; not `done`, it is marked incomplete (measureMain prints one after every boot). */
  function resultSoFar(done: boolean): BlkResult {
    const environment: BlkEnvironment = { ...measuringEnvironment(spec, loadAverageStart), imageFsType: fsTypeOf(image) };
    return {
      ...resultTimes(startedAt, done, bootsDone, spec.rounds * spec.vmms.length),
      environment,
      config: {
        ...guestConfig(spec, cmdline, command),
        imageMib: spec.imageMib,
        imagePath: image,
        runtimeSeconds: spec.runtimeSeconds,
        idleSeconds: spec.idleSeconds,
        warmupSeconds: spec.warmupSeconds,
        rounds: spec.rounds,
        jobs: jobs.map((j) => j.name),
        vmms: spec.vmms,
        ...(spec.tsvmmRevision !== undefined ? { tsvmmRevision: spec.tsvmmRevision } : {}),
        ...(spec.tsvmmPoller !== undefined ? { tsvmmPoller: spec.tsvmmPoller } : {}),
        ...(imageFillSeconds !== undefined ? { imageFillSeconds } : {}),
      },
      runs,
    };
  }
}

await measureMain(import.meta.url, measure);
