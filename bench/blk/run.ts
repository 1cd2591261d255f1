/**
 * `npm run bench:blk`: fio inside the guest on a virtio-blk drive, tsvmm against QEMU's
 * virtio-blk-pci on the same raw image, kernel, initramfs and host, and a report in
 * bench/results/blk-<date>.md (with the raw result as JSON and the charts as SVG).
 *
 *   node dist/bench/blk/run.js [--cpus N] [--mem MIB] [--runtime S] [--idle S] [--warmup S] [--rounds N] [--image-mib MIB]
 *                              [--jobs NAME,…] [--only tsvmm,qemu] [--image-dir DIR] [--out-dir DIR] [--profile-vmm DIR] [--tsvmm-poller held]
 *   node dist/bench/blk/run.js --report FILE.json [--out-dir DIR]      (re-render a report)
 *
 * Where KVM boots stock Linux (hardware virtualization) it measures right here. Otherwise the
 * whole measurement runs inside ONE nested-host boot, so both VMMs share the same emulated machine.
 */
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { pollerOption } from './vmms.js';
import { detectVirtualization } from '../../src/host/environment.js';
import { ensureAptPackages } from '../../src/image/debian.js';
import { ensureDefaultGuest } from '../../src/image/default-guest.js';
import { stderrProgress } from '../../src/util/progress.js';
import { freeze, packageRoot } from './freeze.js';
import { ensureBenchInitramfs } from './initramfs.js';
import { selectJobs } from './jobs.js';
import type { BlkMeasureSpec } from './measure.js';
import { writeReport } from './report.js';
import { COMMON_OPTIONS, measureHereOrNested, outputDir, positiveInt, rerender, revision, selectVmms, runDriver, finishRun, sharedWritableDir } from './run-helpers.js';
import type { BlkResult } from './samples.js';

/** Where tsc put src/ and bench/ (dist/, or any --outDir). */
const COMPILED_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const QEMU = '/usr/bin/qemu-system-x86_64';
/** The nested host's memory: the image sits in its tmpfs (half of RAM at most), next to a guest and a VMM. */
const NESTED_MEMORY_MIB = 4096;

/**
 * fio before the measured jobs in every boot, unmeasured: long enough in the nested host for
 * tsvmm's JIT to have compiled the block path (some thousands of requests), which on hardware
 * takes a fraction of a second. The same for QEMU, whose first job then also starts warm.
 */
const DEFAULT_WARMUP_SECONDS = 10;

const say = (s: string): void => {
  process.stderr.write(`bench: ${s}\n`);
};

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      ...COMMON_OPTIONS,
      runtime: { type: 'string' },
      idle: { type: 'string' },
      warmup: { type: 'string' },
      'image-mib': { type: 'string' },
      'image-dir': { type: 'string' },
      jobs: { type: 'string' },
    },
    strict: true,
  });
  const pkg = packageRoot(COMPILED_ROOT);
  const outDir = outputDir(pkg, values['out-dir']);
  if (values.report !== undefined) {
    say(`report: ${rerender<BlkResult>(values.report, outDir, 'blk', writeReport)}`);
    return 0;
  }
  const vmms = selectVmms(values.only);
  const jobs = selectJobs(values.jobs);
  const runtimeSeconds = positiveInt(values.runtime, 10, '--runtime');
  const rounds = positiveInt(values.rounds, 3, '--rounds');
  const warmupSeconds = positiveInt(values.warmup, DEFAULT_WARMUP_SECONDS, '--warmup', 0);

  const profileDir = sharedWritableDir(values['profile-vmm'], '--profile-vmm');
  const poller = pollerOption(values['tsvmm-poller']);
  const started = Date.now();
  const env = detectVirtualization();
  if (vmms.includes('qemu')) ensureAptPackages(['qemu-system-x86'], stderrProgress);
  const guest = ensureDefaultGuest(stderrProgress);
  const initramfs = ensureBenchInitramfs(guest.initrd, stderrProgress);
  const frozen = freeze(COMPILED_ROOT, guest.kernel, initramfs.path, 'blk');
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
    warmupSeconds,
    rounds,
    jobs: jobs.map((j) => j.name),
    vmms,
    qemu: QEMU,
    tsvmmRevision: revision([pkg, process.cwd()]),
    ...(profileDir !== undefined ? { vmmProfileDir: profileDir } : {}),
    ...(poller !== undefined ? { tsvmmPoller: poller } : {}),
  };

  let result: BlkResult;
  try {
    const perBootMs = 5 * 60_000 + warmupSeconds * 1000 + jobs.length * (runtimeSeconds * 1000 + 90_000);
    result = await measureHereOrNested<BlkMeasureSpec, BlkResult>(frozen.measure, spec, env, {
      cwd: pkg,
      timeoutMs: 10 * 60_000 + rounds * vmms.length * perBootMs,
      // The measurement prints a line per job at least; this long without one means it hangs.
      stallTimeoutMs: perBootMs,
      memoryMiB: NESTED_MEMORY_MIB,
      bootsPerRound: vmms.length,
      writable: [...(values['image-dir'] !== undefined ? [resolve(values['image-dir'])] : []), ...(profileDir !== undefined ? [profileDir] : [])],
    }, say);
  } finally {
    frozen.remove();
  }
  return finishRun(result, outDir, 'blk', started, writeReport, say);
}

await runDriver(main, say);
