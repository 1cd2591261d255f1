/**
 * `npm run bench:net`: iperf3 TCP throughput both ways and ping latency between the guest and the
 * host over a tap, tsvmm's virtio-net against QEMU's userspace virtio-net-pci (vhost off) on the
 * same tap, kernel, initramfs and host, and a report in bench/results/net-<date>.md (with the raw
 * result as JSON and the charts as SVG).
 *
 *   node dist/bench/net/run.js [--cpus N] [--mem MIB] [--time S] [--reps N] [--rounds N] [--pings N] [--warmup S]
 *                              [--ping-interval S] [--only tsvmm,qemu] [--quick] [--out-dir DIR] [--profile-vmm DIR] [--tsvmm-poller held]
 *                              [--ping-trace-dir DIR] [--sequential]
 *   node dist/bench/net/run.js --report FILE.json [--out-dir DIR]      (re-render a report)
 *
 * Each round boots both VMMs' guests at once, each on its own tap: they are pinged in the same
 * window, requests interleaved, and run their iperf3 tests in turn while the other idles
 * (bench/net/pair.ts); `--sequential` boots one guest at a time instead.
 *
 * Where KVM boots stock Linux (hardware virtualization) it measures right here. Otherwise the
 * whole measurement runs inside ONE nested-host boot, so both VMMs share the same emulated machine.
 */
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { pollerOption } from '../blk/vmms.js';
import { detectVirtualization } from '../../src/host/environment.js';
import { ensureAptPackages } from '../../src/image/debian.js';
import { ensureDefaultGuest } from '../../src/image/default-guest.js';
import { ensureToolsInitramfs, IPERF3 } from '../../src/image/guest-tools.js';
import { stderrProgress } from '../../src/util/progress.js';
import { freeze, packageRoot } from '../blk/freeze.js';
import { COMMON_OPTIONS, measureHereOrNested, outputDir, positiveInt, rerender, revision, selectVmms, runDriver, finishRun, sharedWritableDir } from '../blk/run-helpers.js';
import type { NetMeasureSpec } from './measure.js';
import { writeReport } from './report.js';
import type { NetResult } from './samples.js';

/** Where tsc put src/ and bench/ (dist/, or any --outDir). */
const COMPILED_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const QEMU = '/usr/bin/qemu-system-x86_64';
/** The nested host's memory: a guest, a VMM, iperf3 and their socket buffers. */
const NESTED_MEMORY_MIB = 3072;

const say = (s: string): void => {
  process.stderr.write(`bench: ${s}\n`);
};

function positiveNumber(text: string | undefined, fallback: number, what: string): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!(n > 0)) throw new Error(`${what} must be a positive number, got '${text}'`);
  return n;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      ...COMMON_OPTIONS,
      time: { type: 'string' },
      reps: { type: 'string' },
      pings: { type: 'string' },
      warmup: { type: 'string' },
      'ping-interval': { type: 'string' },
      /** Keep each boot's raw ping trace (with scheduler and system-call events) in this folder. */
      'ping-trace-dir': { type: 'string' },
      quick: { type: 'boolean' },
      /** One guest at a time (before 2026-11-29 the only way), rather than both of a round at once. */
      sequential: { type: 'boolean' },
    },
    strict: true,
  });
  const pkg = packageRoot(COMPILED_ROOT);
  const outDir = outputDir(pkg, values['out-dir']);
  if (values.report !== undefined) {
    say(`report: ${rerender<NetResult>(values.report, outDir, 'net', writeReport)}`);
    return 0;
  }
  const vmms = selectVmms(values.only);
  // --quick: a development run (one boot per VMM, one short test each way, a few pings).
  const quick = values.quick === true;
  const seconds = positiveInt(values.time, quick ? 3 : 10, '--time');
  const repetitions = positiveInt(values.reps, quick ? 1 : 3, '--reps');
  const rounds = positiveInt(values.rounds, quick ? 1 : 2, '--rounds');
  const pings = positiveInt(values.pings, quick ? 10 : 50, '--pings');
  // Unmeasured iperf3 each way first: tsvmm's network path is JIT-compiled only after some
  // thousands of frames, seconds in the nested host, a fraction of one on hardware.
  const warmupSeconds = positiveInt(values.warmup, quick ? 3 : 5, '--warmup', 0);
  const pingIntervalSeconds = positiveNumber(values['ping-interval'], 0.2, '--ping-interval');

  const profileDir = sharedWritableDir(values['profile-vmm'], '--profile-vmm');
  const poller = pollerOption(values['tsvmm-poller']);
  const pingTraceDir = sharedWritableDir(values['ping-trace-dir'], '--ping-trace-dir');
  const started = Date.now();
  const env = detectVirtualization();
  if (vmms.includes('qemu')) ensureAptPackages(['qemu-system-x86'], stderrProgress);
  const guest = ensureDefaultGuest(stderrProgress);
  // iperf3 in the guest (Debian's, with its libraries) and the same /usr/bin/iperf3 on the host.
  const initrd = ensureToolsInitramfs(guest.initrd, [IPERF3], stderrProgress);
  const frozen = freeze(COMPILED_ROOT, guest.kernel, initrd, 'net');
  const measureJs = frozen.measure;
  say(`measuring a frozen copy of the compiled tsvmm and of the guest in ${frozen.dir}`);
  const spec: NetMeasureSpec = {
    kernel: frozen.kernel,
    kernelRelease: guest.kernelRelease,
    initrd: frozen.initrd,
    bootArgs: guest.bootArgs,
    vcpus: positiveInt(values.cpus, 2, '--cpus'),
    memoryMib: positiveInt(values.mem, 512, '--mem', 128),
    seconds,
    repetitions,
    warmupSeconds,
    rounds,
    pings,
    pingIntervalSeconds,
    vmms,
    qemu: QEMU,
    iperf3: IPERF3.program,
    tsvmmRevision: revision([pkg, process.cwd()]),
    ...(profileDir !== undefined ? { vmmProfileDir: profileDir } : {}),
    ...(poller !== undefined ? { tsvmmPoller: poller } : {}),
    ...(pingTraceDir !== undefined ? { pingTraceDir } : {}),
    paired: values.sequential !== true && vmms.length === 2,
  };

  let result: NetResult;
  try {
    const perBootMs = 5 * 60_000 + pings * pingIntervalSeconds * 1000 + 2 * repetitions * (seconds * 1000 + 60_000);
    result = await measureHereOrNested<NetMeasureSpec, NetResult>(measureJs, spec, env, {
      cwd: pkg,
      timeoutMs: 10 * 60_000 + rounds * vmms.length * perBootMs,
      // Longer than one boot's own timeout (measure.ts): a VMM that hangs is killed there, the failed
      // boot recorded and the run goes on; only the measurement itself hanging stops it.
      // Paired, a guest may wait as long as the other one's whole boot.
      stallTimeoutMs: (spec.paired === true ? 2 : 1) * perBootMs + 60_000,
      memoryMiB: NESTED_MEMORY_MIB,
      bootsPerRound: vmms.length,
      writable: [profileDir, pingTraceDir].filter((d): d is string => d !== undefined),
    }, say);
  } finally {
    frozen.remove();
  }
  return finishRun(result, outDir, 'net', started, writeReport, say);
}

await runDriver(main, say);
