/**
 * The measuring half of the network benchmark: runs where /dev/kvm boots stock Linux (directly on
 * hardware KVM, or inside the nested host), makes a tap per VMM with link-local addresses, then,
 * round after round, boots both VMMs' guests at once (`paired`, pair.ts: pinged together, their
 * iperf3 tests in turn) or one after the other, with an iperf3 server on each tap's host end, and
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
import { GUEST_UP_LIMIT_MS } from '../blk/console-run.js';
import { measureMain, type PartialResultSink } from '../blk/result-lines.js';
import type { OuterEnvironment } from '../blk/run-helpers.js';
import { type BootSpec, type Invocation, profileNodeArgs, qemuMachineArgs, tsvmmEnv, tsvmmRunArgs } from '../blk/vmms.js';
import type { PollerWait } from '../../src/vmm/eventfd-poller.js';
import { GUEST_SCRIPT_PATH, guestCommand, guestScript, IPERF_PORT, TEST_GRACE_SECONDS, testNames, WAIT_HEARTBEAT_SECONDS } from './guest-script.js';
import { GuestPair, pingGuests } from './pair.js';
import type { GuestNetwork, NetEnvironment, NetResult, NetRunSample, VmmKind } from './samples.js';
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
  /** With two VMMs: boot both guests of a round at once, ping them together, run their tests in turn (pair.ts). */
  readonly paired?: boolean;
  readonly outer?: OuterEnvironment;
  readonly outerSummary?: string;
  readonly tsvmmRevision?: string;
}

/**
 * Each VMM's own tap and link-local /24 (so both guests can be up at once, measure() with
 * `paired`); the same MAC would do on separate taps, distinct ones keep traces readable.
 */
export const NETWORKS: Record<VmmKind, GuestNetwork> = {
  tsvmm: { tap: 'tsvmmbench0', hostAddress: '169.254.20.1', guestAddress: '169.254.20.2', guestMac: '06:00:a9:fe:14:02' },
  qemu: { tap: 'tsvmmbench1', hostAddress: '169.254.21.1', guestAddress: '169.254.21.2', guestMac: '06:00:a9:fe:15:02' },
};
const PREFIX_LEN = 24;

/** Boot, ping and teardown allowance per guest boot, on top of the tests' own time (the nested host is slow). */
const BOOT_ALLOWANCE_MS = 5 * 60_000;
/** Per test: iperf3's start-up, connection, exit and printing its JSON, beyond its time. */
const TEST_ALLOWANCE_MS = 60_000;

const TSVMM_CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const log = (s: string): void => {
  process.stderr.write(`bench: ${s}\n`);
};

/** A VMM's tap: made once per run, the host's end addressed and up; the VMM opens it at each boot. */
function makeTap(n: GuestNetwork): void {
  spawnSync('ip', ['link', 'del', n.tap]);
  execFileSync('ip', ['tuntap', 'add', 'dev', n.tap, 'mode', 'tap']);
  execFileSync('ip', ['addr', 'add', `${n.hostAddress}/${PREFIX_LEN}`, 'dev', n.tap]);
  execFileSync('ip', ['link', 'set', n.tap, 'up']);
}

/**
 * virtio-net on the tap, one queue pair. tsvmm: its CLI's `--net` (PCI transport by default,
 * offloads passed through to the tap). QEMU: userspace virtio-net (`vhost=off`) on q35, as
 * bench/blk's virtio-blk-pci.
 */
export function tsvmmInvocation(node: string, cli: string, g: BootSpec, n: GuestNetwork = NETWORKS.tsvmm): Invocation {
  const env = tsvmmEnv(g);
  return { command: node, args: [...tsvmmRunArgs(cli, g), '--net', `${n.tap},mac=${n.guestMac},id=eth0`], ...(env !== undefined ? { env } : {}) };
}

export function qemuInvocation(qemu: string, g: BootSpec, cpuModel: string, n: GuestNetwork = NETWORKS.qemu): Invocation {
  return {
    command: qemu,
    args: [...qemuMachineArgs(g, cpuModel), '-netdev', `tap,id=n0,ifname=${n.tap},script=no,downscript=no,vhost=off`, '-device', `virtio-net-pci,netdev=n0,mac=${n.guestMac}`],
  };
}

/** The host's iperf3 server on its end of a VMM's tap, for one boot (or one round's two boots). */
function startIperfServer(iperf3: string, n: GuestNetwork): ChildProcess {
  const server = spawn(iperf3, ['-s', '-B', n.hostAddress, '-p', String(IPERF_PORT)], { stdio: ['ignore', 'ignore', 'pipe'] });
  server.stderr?.setEncoding('utf8');
  server.stderr?.on('data', (t: string) => log(`  iperf3 server ${n.hostAddress}: ${t.trim()}`));
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
  // Each VMM's guest is told its own addresses; otherwise the command is the same.
  const commandFor = (vmm: VmmKind): string => guestCommand(`${NETWORKS[vmm].guestAddress}/${PREFIX_LEN}`, NETWORKS[vmm].hostAddress, spec.seconds, spec.repetitions, spec.warmupSeconds);
  const cmdlineFor = (vmm: VmmKind): string => `${spec.bootArgs} ${commandCmdlineArg(commandFor(vmm))}`;
  const first = spec.vmms[0] ?? 'tsvmm';
  const paired = spec.paired === true && spec.vmms.length === 2;
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
    for (const vmm of spec.vmms) {
      const n = NETWORKS[vmm];
      makeTap(n);
      log(`${vmm}: tap ${n.tap}, host ${n.hostAddress}/${PREFIX_LEN}, guest ${n.guestAddress} (${n.guestMac})`);
    }
    const guestFor = (vmm: VmmKind): BootSpec => ({ kernel, initrd, cmdline: cmdlineFor(vmm), vcpus: spec.vcpus, memoryMib: spec.memoryMib, ...(spec.vmmProfileDir !== undefined ? { nodeArgs: profileNodeArgs(spec.vmmProfileDir) } : {}), ...(spec.tsvmmPoller !== undefined ? { poller: spec.tsvmmPoller } : {}) });
    // The script prints a line at every step (warm-up, ping, each test's start and end, a heartbeat
    // while it waits for the host); its longest step is a test that runs into the guest's own limit
    // (TEST_GRACE_SECONDS), the ping phase, or the warm-up. Past that plus a test's allowance, a
    // guest that is up is lost (both vCPUs looping on the emulated machine's nested page fault
    // print no stall report; one such boot, 2026-11-29, ran on silent until the boot's 740 s timeout).
    const silenceLimitMs = Math.max(spec.seconds + TEST_GRACE_SECONDS, spec.pings * spec.pingIntervalSeconds, spec.warmupSeconds, 2 * WAIT_HEARTBEAT_SECONDS) * 1000 + TEST_ALLOWANCE_MS;
    const aloneMs = BOOT_ALLOWANCE_MS + 2 * spec.warmupSeconds * 1000 + spec.pings * spec.pingIntervalSeconds * 1000 + tests.length * (spec.seconds * 1000 + TEST_ALLOWANCE_MS);
    // Paired, a guest may wait for the other's whole boot (its tests, or its timeout) before its own tests.
    const timeoutMs = paired ? 2 * aloneMs : aloneMs;
    const qemuCpu = { model: QEMU_CPU_MODELS[0]! };

    /** One boot of `vmm`'s guest (QEMU: with another CPU model if the first one is refused); recorded in `runs`. */
    const boot = async (vmm: VmmKind, round: number, pair: GuestPair): Promise<void> => {
      const n = NETWORKS[vmm];
      const base = { vmm, round, tests, tap: n.tap, guestAddress: n.guestAddress, timeoutMs, silenceLimitMs, upLimitMs: GUEST_UP_LIMIT_MS, log, pair };
      let s: NetRunSample;
      try {
        if (vmm === 'tsvmm') {
          s = await runVmm({ ...base, invocation: tsvmmInvocation(process.execPath, TSVMM_CLI, guestFor(vmm), n) });
        } else {
          s = await bootQemu(qemuCpu, (cpuModel) => runVmm({ ...base, invocation: qemuInvocation(spec.qemu, guestFor(vmm), cpuModel, n), cpuModel }), runs, log);
        }
      } finally {
        pair.left(vmm);
      }
      log(`  ${vmm}: ${s.ok ? 'ok' : `FAILED (${s.problem ?? ''})`} in ${(s.wallMs / 1000).toFixed(1)} s`);
      for (const t of s.tests) {
        if (t.iperf === undefined) continue;
        const gb = t.iperf.bytesReceived / 1e9;
        log(`    ${vmm} ${t.name}: ${(t.iperf.bitsPerSecond / 1e6).toFixed(1)} Mbit/s, VMM CPU ${t.cpu !== undefined && gb > 0 ? (t.cpu.totalMs / 1000 / gb).toFixed(1) : '-'} s/GB`);
      }
      if (!s.ok) for (const note of s.notes) log(`    | ${note}`);
      runs.push(s);
      bootsDone++;
      partial?.(resultSoFar(false));
    };

    /** The guests of one round, pinged and tested together (pair.ts); sequential rounds have one each. */
    const pairOf = (vmms: readonly VmmKind[], round: number): GuestPair => {
      const plan = { pings: spec.pings, intervalSeconds: spec.pingIntervalSeconds, round, log, ...(spec.pingTraceDir !== undefined ? { traceDir: spec.pingTraceDir } : {}) };
      return new GuestPair(vmms, (members) => pingGuests(members, plan));
    };
    const order = bootOrder(spec.rounds, spec.vmms);
    bootsDone = Math.min(spec.skipBoots ?? 0, order.length);
    if (bootsDone > 0) log(`resuming after the ${bootsDone} guest boots an earlier nested host finished`);
    if (paired) {
      // Both guests of a round up at once (pair.ts); bootOrder's order per round is the order of their tests.
      // A resumed run starts at a round's beginning (measureInNestedHost drops a cut round's boots).
      for (let round = Math.floor(bootsDone / 2); round < spec.rounds; round++) {
        const turnOrder = order.filter((b) => b.round === round).map((b) => b.vmm);
        log(`round ${round + 1}/${spec.rounds}: ${turnOrder.join(' and ')} at once (tests in that order)`);
        const servers = turnOrder.map((v) => startIperfServer(spec.iperf3, NETWORKS[v]));
        const pair = pairOf(turnOrder, round);
        try {
          await Promise.all(turnOrder.map((vmm) => boot(vmm, round, pair)));
        } finally {
          await Promise.all(servers.map(stopServer));
        }
      }
    } else {
      for (const { round, vmm } of order.slice(bootsDone)) {
        log(`round ${round + 1}/${spec.rounds}: ${vmm}`);
        const server = startIperfServer(spec.iperf3, NETWORKS[vmm]);
        try {
          await boot(vmm, round, pairOf([vmm], round));
        } finally {
          await stopServer(server);
        }
      }
    }
  } finally {
    for (const vmm of spec.vmms) spawnSync('ip', ['link', 'del', NETWORKS[vmm].tap]);
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
        ...guestConfig(spec, cmdlineFor(first), commandFor(first)),
        seconds: spec.seconds,
        repetitions: spec.repetitions,
        warmupSeconds: spec.warmupSeconds,
        rounds: spec.rounds,
        pings: spec.pings,
        pingIntervalSeconds: spec.pingIntervalSeconds,
        vmms: spec.vmms,
        tap: NETWORKS[first].tap,
        hostAddress: NETWORKS[first].hostAddress,
        guestAddress: NETWORKS[first].guestAddress,
        guestMac: NETWORKS[first].guestMac,
        networks: Object.fromEntries(spec.vmms.map((v) => [v, NETWORKS[v]])),
        paired,
        ...(spec.tsvmmRevision !== undefined ? { tsvmmRevision: spec.tsvmmRevision } : {}),
        ...(spec.tsvmmPoller !== undefined ? { tsvmmPoller: spec.tsvmmPoller } : {}),
      },
      runs,
    };
  }
}

await measureMain(import.meta.url, measure);
