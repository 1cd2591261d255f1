/**
 * The measuring half of the network benchmark: runs where /dev/kvm boots stock Linux (directly on
 * hardware KVM, or inside the nested host), makes the tap with link-local addresses, then boots
 * the guest under each VMM in turn on that same tap, with an iperf3 server on the host's end, and
 * emits the raw result as JSON.
 *
 *   node dist/bench/net/measure.js SPEC_BASE64
 *
 * SPEC_BASE64 is a base64 JSON NetMeasureSpec (run.ts builds it). The result goes to `spec.out`
 * when given, else to stdout as result lines (bench/blk/result-lines.ts): inside the nested host
 * the console is the only way out.
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { appendFileSync, copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CpioWriter } from '../../src/image/cpio.js';
import { commandCmdlineArg } from '../../src/image/guest-protocol.js';
import { bootOrder, bootQemu, guestConfig, measuringEnvironment, QEMU_CPU_MODELS, resultTimes, versionLine } from '../blk/measure.js';
import { measureMain, type PartialResultSink } from '../blk/result-lines.js';
import type { OuterEnvironment } from '../blk/run-helpers.js';
import { type BootSpec, type Invocation, profileNodeArgs, qemuMachineArgs, tsvmmEnv, tsvmmRunArgs } from '../blk/vmms.js';
import type { PollerWait } from '../../src/vmm/eventfd-poller.js';
import { GUEST_SCRIPT_PATH, guestCommand, guestScript, IPERF_PORT, TEST_GRACE_SECONDS, testNames } from './guest-script.js';
import type { NetEnvironment, NetResult, NetRunSample, VmmKind } from './samples.js';
import { runVmm } from './vmm-run.js';

export interface NetMeasureSpec {
  readonly kernel: string;
  readonly kernelRelease: string;
  /** The default guest's initramfs with iperf3 (ensureToolsInitramfs). */
  readonly initrd: string;
  /** Kernel command line without the command (the default guest's boot args). */
  readonly bootArgs: string;
  readonly vcpus: number;
  readonly memoryMib: number;
  /** Seconds per iperf3 test. */
  readonly seconds: number;
  /** iperf3 tests per direction per boot. */
  readonly repetitions: number;
  /** Seconds of unmeasured iperf3 each way before the ping and the tests (guest-script.ts), 0 for none. */
  readonly warmupSeconds: number;
  /** Guest boots per VMM. */
  readonly rounds: number;
  /** Boots of bootOrder() an earlier nested host already did (a resumed run): start after them. */
  readonly skipBoots?: number;
  readonly pings: number;
  readonly pingIntervalSeconds: number;
  readonly vmms: readonly VmmKind[];
  readonly qemu: string;
  readonly iperf3: string;
  readonly out?: string;
  /** Where tsvmm writes its main thread's CPU profiles (--profile-vmm). */
  readonly vmmProfileDir?: string;
  /** How tsvmm's EventFdPoller waits (--tsvmm-poller). */
  readonly tsvmmPoller?: PollerWait;
  /** Where each boot's raw ping trace goes, with scheduler and system-call events added (--ping-trace-dir). */
  readonly pingTraceDir?: string;
  readonly outer?: OuterEnvironment;
  readonly outerSummary?: string;
  readonly tsvmmRevision?: string;
}

export const TAP = 'tsvmmbench0';
export const HOST_ADDRESS = '169.254.20.1';
export const GUEST_ADDRESS = '169.254.20.2';
export const GUEST_MAC = '06:00:a9:fe:14:02';
const PREFIX_LEN = 24;

/** Boot, ping and teardown allowance per guest boot, on top of the tests' own time (the nested host is slow). */
const BOOT_ALLOWANCE_MS = 5 * 60_000;
/** Per test: iperf3's start-up, connection, exit and printing its JSON, beyond its time. */
const TEST_ALLOWANCE_MS = 60_000;

const TSVMM_CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const log = (s: string): void => {
  process.stderr.write(`bench: ${s}\n`);
};

/** The same tap for both VMMs: made once, the host's end addressed and up; each VMM opens it in turn. */
function makeTap(): void {
  spawnSync('ip', ['link', 'del', TAP]);
  execFileSync('ip', ['tuntap', 'add', 'dev', TAP, 'mode', 'tap']);
  execFileSync('ip', ['addr', 'add', `${HOST_ADDRESS}/${PREFIX_LEN}`, 'dev', TAP]);
  execFileSync('ip', ['link', 'set', TAP, 'up']);
}

/**
 * virtio-net on the tap, one queue pair, the same MAC. tsvmm: its CLI's `--net` (PCI transport by
 * default, offloads passed through to the tap). QEMU: userspace virtio-net (`vhost=off`) on q35,
 * as bench/blk's virtio-blk-pci.
 */
export function tsvmmInvocation(node: string, cli: string, g: BootSpec): Invocation {
  const env = tsvmmEnv(g);
  return { command: node, args: [...tsvmmRunArgs(cli, g), '--net', `${TAP},mac=${GUEST_MAC},id=eth0`], ...(env !== undefined ? { env } : {}) };
}

export function qemuInvocation(qemu: string, g: BootSpec, cpuModel: string): Invocation {
  return {
    command: qemu,
    args: [...qemuMachineArgs(g, cpuModel), '-netdev', `tap,id=n0,ifname=${TAP},script=no,downscript=no,vhost=off`, '-device', `virtio-net-pci,netdev=n0,mac=${GUEST_MAC}`],
  };
}

/** The host's iperf3 server on its end of the tap, for one boot. */
function startIperfServer(iperf3: string): ChildProcess {
  const server = spawn(iperf3, ['-s', '-B', HOST_ADDRESS, '-p', String(IPERF_PORT)], { stdio: ['ignore', 'ignore', 'pipe'] });
  server.stderr?.setEncoding('utf8');
  server.stderr?.on('data', (t: string) => log(`  iperf3 server: ${t.trim()}`));
  server.on('error', (e) => log(`  iperf3 server: ${e.message}`));
  return server;
}

function stopServer(server: ChildProcess): Promise<void> {
  if (server.exitCode !== null || server.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    server.once('close', () => resolve());
    server.kill('SIGTERM');
  });
}

export async function measure(spec: NetMeasureSpec, partial?: PartialResultSink): Promise<NetResult> {
  const startedAt = new Date().toISOString();
  const loadAverageStart = loadavg();
  const command = guestCommand(`${GUEST_ADDRESS}/${PREFIX_LEN}`, HOST_ADDRESS, spec.seconds, spec.repetitions, spec.warmupSeconds);
  const cmdline = `${spec.bootArgs} ${commandCmdlineArg(command)}`;
  const tests = testNames(spec.repetitions);
  const work = mkdtempSync(join(tmpdir(), 'tsvmm-net-'));
  const runs: NetRunSample[] = [];
  let bootsDone = 0;
  // Everything synchronous happens here, before any VMM runs.
  const kernel = join(work, 'vmlinuz');
  const initrd = join(work, 'initrd.cpio');
  try {
    copyFileSync(spec.kernel, kernel);
    copyFileSync(spec.initrd, initrd);
    // The guest script goes in one more cpio archive: on the kernel command line it would not fit.
    appendFileSync(initrd, new CpioWriter().file(GUEST_SCRIPT_PATH, guestScript(), 0o755).finish());
    makeTap();
    log(`tap ${TAP}: host ${HOST_ADDRESS}/${PREFIX_LEN}, guest ${GUEST_ADDRESS} (${GUEST_MAC})`);
    const guest: BootSpec = { kernel, initrd, cmdline, vcpus: spec.vcpus, memoryMib: spec.memoryMib, ...(spec.vmmProfileDir !== undefined ? { nodeArgs: profileNodeArgs(spec.vmmProfileDir) } : {}), ...(spec.tsvmmPoller !== undefined ? { poller: spec.tsvmmPoller } : {}) };
    // The script prints a line at every step (warm-up, ping, each test's start and end); its
    // longest step is a test that runs into the guest's own limit (TEST_GRACE_SECONDS), the ping
    // phase, or the warm-up. Past that plus a test's allowance, a guest that is up is lost (both
    // vCPUs looping on the emulated machine's nested page fault print no stall report; one such
    // boot, 2026-11-29, ran on silent until the boot's 740 s timeout).
    const silenceLimitMs = Math.max(spec.seconds + TEST_GRACE_SECONDS, spec.pings * spec.pingIntervalSeconds, spec.warmupSeconds) * 1000 + TEST_ALLOWANCE_MS;
    const timeoutMs = BOOT_ALLOWANCE_MS + 2 * spec.warmupSeconds * 1000 + spec.pings * spec.pingIntervalSeconds * 1000 + tests.length * (spec.seconds * 1000 + TEST_ALLOWANCE_MS);
    const qemuCpu = { model: QEMU_CPU_MODELS[0]! };
    const order = bootOrder(spec.rounds, spec.vmms);
    bootsDone = Math.min(spec.skipBoots ?? 0, order.length);
    if (bootsDone > 0) log(`resuming after the ${bootsDone} guest boots an earlier nested host finished`);
    for (const { round, vmm } of order.slice(bootsDone)) {
      log(`round ${round + 1}/${spec.rounds}: ${vmm}`);
      const base = { vmm, round, tests, tap: TAP, guestAddress: GUEST_ADDRESS, pings: spec.pings, pingIntervalSeconds: spec.pingIntervalSeconds, timeoutMs, silenceLimitMs, log, ...(spec.pingTraceDir !== undefined ? { pingTraceDir: spec.pingTraceDir } : {}) };
      const server = startIperfServer(spec.iperf3);
      let s: NetRunSample;
      try {
        if (vmm === 'tsvmm') {
          s = await runVmm({ ...base, invocation: tsvmmInvocation(process.execPath, TSVMM_CLI, guest) });
        } else {
          s = await bootQemu(qemuCpu, (cpuModel) => runVmm({ ...base, invocation: qemuInvocation(spec.qemu, guest, cpuModel), cpuModel }), runs, log);
        }
      } finally {
        await stopServer(server);
      }
      log(`  ${vmm}: ${s.ok ? 'ok' : `FAILED (${s.problem ?? ''})`} in ${(s.wallMs / 1000).toFixed(1)} s`);
      for (const t of s.tests) {
        if (t.iperf === undefined) continue;
        const gb = t.iperf.bytesReceived / 1e9;
        log(`    ${t.name}: ${(t.iperf.bitsPerSecond / 1e6).toFixed(1)} Mbit/s, VMM CPU ${t.cpu !== undefined && gb > 0 ? (t.cpu.totalMs / 1000 / gb).toFixed(1) : '-'} s/GB`);
      }
      if (!s.ok) for (const n of s.notes) log(`    | ${n}`);
      runs.push(s);
      bootsDone++;
      partial?.(resultSoFar(false));
    }
  } finally {
    spawnSync('ip', ['link', 'del', TAP]);
    rmSync(work, { recursive: true, force: true });
  }
  return resultSoFar(true);

  /** The result with the boots run so far; not `done`, it is marked incomplete (measureMain prints one after every boot). */
  function resultSoFar(done: boolean): NetResult {
    const environment: NetEnvironment = {
      ...measuringEnvironment(spec, loadAverageStart),
      iperf3Version: versionLine(spec.iperf3, ['--version']),
      pingVersion: versionLine('ping', ['-V']),
    };
    return {
      ...resultTimes(startedAt, done, bootsDone, spec.rounds * spec.vmms.length),
      environment,
      config: {
        ...guestConfig(spec, cmdline, command),
        seconds: spec.seconds,
        repetitions: spec.repetitions,
        warmupSeconds: spec.warmupSeconds,
        rounds: spec.rounds,
        pings: spec.pings,
        pingIntervalSeconds: spec.pingIntervalSeconds,
        vmms: spec.vmms,
        tap: TAP,
        hostAddress: HOST_ADDRESS,
        guestAddress: GUEST_ADDRESS,
        guestMac: GUEST_MAC,
        ...(spec.tsvmmRevision !== undefined ? { tsvmmRevision: spec.tsvmmRevision } : {}),
        ...(spec.tsvmmPoller !== undefined ? { tsvmmPoller: spec.tsvmmPoller } : {}),
      },
      runs,
    };
  }
}

await measureMain(import.meta.url, measure);
