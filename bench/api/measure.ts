/**
 * The measuring half of the API benchmark: runs where /dev/kvm boots stock Linux (on hardware, or
 * inside the nested host) and takes three measurements, in this order:
 *
 * 1. start-up: spawn → `GET /` answered, for `tsvmm --api-sock` and a bare Node HTTP server on a
 *    Unix socket, and spawn → exit for `node -e 0` and `tsvmm --version`; plus a fresh process per
 *    round that times importing each part of the API code (import-probe.ts) — bench/api/startup.ts,
 *    which run.ts also runs directly on the outer machine;
 * 2. InstanceStart → the guest's boot-timer write, over the API socket and through the SDK in
 *    this process;
 * 3. creation rate: batches of VMs of the default guest (1 vCPU, 128 MiB, a command that prints a
 *    line and powers off), every VMM process pinned to one CPU with taskset, tsvmm against QEMU
 *    `-M microvm`.
 *
 *   node dist/bench/api/measure.js SPEC_BASE64
 *
 * The result goes to `spec.out` when given, else to stdout as result lines (bench/blk/result-lines.ts, measureMain).
 */
import { execFileSync, spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { cpus, loadavg, release, totalmem } from 'node:os';
import { fileURLToPath } from 'node:url';
import { commandCmdlineArg } from '../../src/image/guest-protocol.js';
import { MicroVM } from '../../src/sdk/microvm.js';
import type { OuterEnvironment } from '../blk/run-helpers.js';
import { measureMain } from '../blk/result-lines.js';
import { cpuModelName, qemuArgs } from '../boot/measure.js';
import { spawnTimed } from '../boot/spawn-timed.js';
import type { ApiResult, ApiShape, BootPath, BootSample, RateSample, RateVmm } from './samples.js';
import { exited, fmt, http, measureStartup, now, socketPath, stop, TSVMM_CLI, untilAnswering } from './startup.js';

export interface ApiMeasureSpec extends ApiShape {
  readonly kernel: string;
  readonly kernelRelease: string;
  readonly initrd: string;
  /** The default guest's kernel command line, without the command. */
  readonly bootArgs: string;
  readonly qemu: string;
  /** A writable folder for the API sockets (the nested host's /tmp). */
  readonly socketDir: string;
  readonly out?: string;
  readonly outer?: OuterEnvironment;
  readonly outerSummary?: string;
}

/** What the guest runs: one line the benchmark looks for, then the default init powers off. */
export const GUEST_COMMAND = 'echo BENCH-VM-OK';
const GUEST_OK = /BENCH-VM-OK/;
const VM_TIMEOUT_MS = 15 * 60_000;
const QEMU_CPU_MODELS = ['host', 'EPYC'];

const log = (s: string): void => {
  process.stderr.write(`bench: ${s}\n`);
};

function guestCmdline(spec: ApiMeasureSpec): string {
  return `${spec.bootArgs} ${commandCmdlineArg(GUEST_COMMAND)}`;
}

/** Configure over the socket, then time InstanceStart → its 204 → the boot-timer line → exit. */
async function bootOverSocket(spec: ApiMeasureSpec, round: number, warmup: boolean): Promise<BootSample> {
  const sock = socketPath(spec.socketDir);
  const child = spawn(process.execPath, [TSVMM_CLI, '--api-sock', sock, '--boot-timer'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let guestOut = '';
  let stderr = '';
  let booted: { at: number; ms: number } | undefined;
  let t0 = Number.NaN;
  child.stdout?.on('data', (c: Buffer) => (guestOut += c.toString('utf8')));
  child.stderr?.on('data', (c: Buffer) => {
    const at = now();
    stderr += c.toString('utf8');
    const m = /guest booted in ([\d.]+) ms/.exec(stderr);
    if (m && booted === undefined) booted = { at, ms: Number(m[1]) };
  });
  const base = { path: 'api-socket' as const, round, warmup };
  try {
    await untilAnswering(sock, child, now(), spec.pollMs);
    const c0 = now();
    for (const [path, body] of [
      ['/machine-config', { vcpu_count: 1, mem_size_mib: spec.memoryMib }],
      ['/boot-source', { kernel_image_path: spec.kernel, initrd_path: spec.initrd, boot_args: guestCmdline(spec) }],
    ] as const) {
      const r = await http(sock, 'PUT', path, body);
      if (r.status !== 204) throw new Error(`PUT ${path} answered ${r.status}: ${r.text}`);
    }
    const configureMs = now() - c0;
    t0 = now();
    const r = await http(sock, 'PUT', '/actions', { action_type: 'InstanceStart' });
    const answeredMs = now() - t0;
    if (r.status !== 204) throw new Error(`InstanceStart answered ${r.status}: ${r.text}`);
    const timeout = setTimeout(() => child.kill('SIGKILL'), VM_TIMEOUT_MS);
    const status = await exited(child);
    clearTimeout(timeout);
    const exitMs = now() - t0;
    const ok = status === 0 && booted !== undefined && GUEST_OK.test(guestOut);
    return {
      ...base,
      ok,
      ...(ok ? {} : { problem: `exit ${status}, boot timer ${booted === undefined ? 'never' : 'seen'}, guest line ${GUEST_OK.test(guestOut) ? 'seen' : 'missing'}; ${stderr.trim().slice(-300)}` }),
      configureMs,
      answeredMs,
      ...(booted !== undefined ? { bootedMs: booted.at - t0, bootTimerMs: booted.ms } : {}),
      exitMs,
    };
  } catch (e) {
    await stop(child);
    return { ...base, ok: false, problem: `${(e as Error).message}; ${stderr.trim().slice(-300)}`, ...(Number.isNaN(t0) ? {} : { exitMs: now() - t0 }) };
  } finally {
    rmSync(sock, { force: true });
  }
}

/** The SDK in this process: `vm.start()` (its configuration calls are in-process, well under a ms each) → 'booted' → `wait()`. */
async function bootWithSdk(spec: ApiMeasureSpec, round: number, warmup: boolean): Promise<BootSample> {
  const vm = new MicroVM({ kernel: spec.kernel, initrd: spec.initrd, bootArgs: guestCmdline(spec), vcpus: 1, memoryMib: spec.memoryMib });
  let guestOut = '';
  vm.console?.output.on('data', (c: Buffer) => (guestOut += c.toString('utf8')));
  let booted: { at: number; ms: number } | undefined;
  vm.on('booted', (e) => (booted ??= { at: now(), ms: e.elapsedMs }));
  const base = { path: 'sdk-in-process' as const, round, warmup };
  const t0 = now();
  try {
    await vm.start();
    const answeredMs = now() - t0;
    const timeout = setTimeout(() => void vm.stop(), VM_TIMEOUT_MS);
    const exit = await vm.wait();
    clearTimeout(timeout);
    const exitMs = now() - t0;
    const ok = exit.status === 0 && booted !== undefined && GUEST_OK.test(guestOut);
    return {
      ...base,
      ok,
      ...(ok ? {} : { problem: `${exit.reason} ${exit.status}: ${exit.message}; guest line ${GUEST_OK.test(guestOut) ? 'seen' : 'missing'}` }),
      answeredMs,
      ...(booted !== undefined ? { bootedMs: booted.at - t0, bootTimerMs: booted.ms } : {}),
      exitMs,
    };
  } catch (e) {
    await vm.stop().catch(() => undefined);
    return { ...base, ok: false, problem: (e as Error).message, exitMs: now() - t0 };
  }
}

function vmInvocation(spec: ApiMeasureSpec, vmm: RateVmm, cpuModel: string): string[] {
  const cmdline = guestCmdline(spec);
  if (vmm === 'tsvmm') return [process.execPath, TSVMM_CLI, 'run', '--kernel', spec.kernel, '--initrd', spec.initrd, '--cmdline', cmdline, '--cpus', '1', '--mem', `${spec.memoryMib}M`];
  return [spec.qemu, ...qemuArgs({ kernel: spec.kernel, initrd: spec.initrd, memoryMib: spec.memoryMib, vcpus: 1 }, cmdline, cpuModel)];
}

/** `count` VMs, at most `concurrency` running at once, every one under `taskset -c CPU`. */
async function rateBatch(spec: ApiMeasureSpec, vmm: RateVmm, cpuModel: string, count: number, concurrency: number, warmup: boolean): Promise<RateSample> {
  const argv = vmInvocation(spec, vmm, cpuModel);
  const perVmMs: number[] = [];
  const problems: string[] = [];
  let ok = 0;
  let next = 0;
  const t0 = now();
  const worker = async (): Promise<void> => {
    while (next < count) {
      const i = next++;
      const r = await spawnTimed('taskset', ['-c', String(spec.rateCpu), ...argv], { guestMiB: spec.memoryMib, timeoutMs: VM_TIMEOUT_MS, sampleEveryMs: 3_600_000 });
      const good = r.status === 0 && r.lines.some((l) => l.stream === 'stdout' && GUEST_OK.test(l.text));
      perVmMs.push(r.exitMs);
      if (good) ok++;
      else problems.push(`VM ${i}: exit ${r.status ?? r.signal}${r.timedOut ? ' (timed out)' : ''}: ${r.lines.map((l) => l.text).filter((t) => t.trim() !== '').slice(-4).join(' | ')}`);
      log(`    ${vmm} VM ${i + 1}/${count} (concurrency ${concurrency}): ${good ? 'ok' : 'FAILED'} in ${fmt(r.exitMs)}`);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  return { vmm, concurrency, count, warmup, elapsedMs: now() - t0, ok, perVmMs, problems };
}

export async function measure(spec: ApiMeasureSpec): Promise<ApiResult> {
  const startedAt = new Date().toISOString();
  const loadAverageStart = loadavg();
  const boots: BootSample[] = [];
  const rates: RateSample[] = [];

  // 1. Start-up (bench/api/startup.ts; run.ts takes the same on the outer machine).
  const { startup, imports } = await measureStartup({ socketDir: spec.socketDir, pollMs: spec.pollMs, rounds: spec.startupRounds, warmup: spec.warmup });

  // 2. InstanceStart → boot timer.
  const bootTotal = spec.warmup + spec.bootRounds;
  for (let round = 0; round < bootTotal; round++) {
    const warmup = round < spec.warmup;
    const order: BootPath[] = round % 2 === 0 ? ['api-socket', 'sdk-in-process'] : ['sdk-in-process', 'api-socket'];
    for (const path of order) {
      const s = path === 'api-socket' ? await bootOverSocket(spec, round, warmup) : await bootWithSdk(spec, round, warmup);
      boots.push(s);
      log(
        `boot round ${round + 1}/${bootTotal}${warmup ? ' (warm-up)' : ''} ${path}: ${s.ok ? 'ok' : `FAILED (${s.problem ?? ''})`}; ` +
          `answered ${fmt(s.answeredMs)}, booted ${fmt(s.bootedMs)} (timer ${fmt(s.bootTimerMs)}), exit ${fmt(s.exitMs)}`,
      );
    }
  }

  // 3. Creation rate. A warm-up VM per VMM first (it also settles QEMU's CPU model).
  let cpuModel = QEMU_CPU_MODELS[0]!;
  for (const vmm of ['tsvmm', 'qemu'] as const) {
    for (let w = 0; w < Math.max(1, spec.warmup); w++) {
      let s = await rateBatch(spec, vmm, cpuModel, 1, 1, true);
      rates.push(s);
      const fallback = QEMU_CPU_MODELS[QEMU_CPU_MODELS.indexOf(cpuModel) + 1];
      if (vmm === 'qemu' && s.ok === 0 && fallback !== undefined) {
        log(`  QEMU with -cpu ${cpuModel} failed (${s.problems.join('; ')}); retrying with -cpu ${fallback}`);
        cpuModel = fallback;
        s = await rateBatch(spec, vmm, cpuModel, 1, 1, true);
        rates.push(s);
      }
    }
  }
  // Which VMM goes first alternates from one concurrency to the next.
  for (let i = 0; i < spec.rateConcurrency.length; i++) {
    const concurrency = spec.rateConcurrency[i]!;
    for (const vmm of i % 2 === 0 ? (['tsvmm', 'qemu'] as const) : (['qemu', 'tsvmm'] as const)) {
      const s = await rateBatch(spec, vmm, cpuModel, spec.rateCount, concurrency, false);
      rates.push(s);
      log(`rate ${vmm} concurrency ${concurrency}: ${s.ok}/${s.count} ok in ${fmt(s.elapsedMs)} → ${((s.ok * 1000) / s.elapsedMs).toFixed(3)} VMs/s`);
    }
  }

  let qemuVersion = 'unknown';
  try {
    qemuVersion = execFileSync(spec.qemu, ['--version'], { encoding: 'utf8' }).split('\n')[0]!.trim();
  } catch {
    // Reported as unknown.
  }
  return {
    startedAt,
    finishedAt: new Date().toISOString(),
    environment: {
      nestedHost: process.env['TSVMM_NESTED_HOST'] === '1',
      ...(spec.outerSummary !== undefined ? { outerSummary: spec.outerSummary } : {}),
      ...(spec.outer !== undefined ? { outer: spec.outer } : {}),
      cpuModel: cpuModelName(),
      cpus: cpus().length,
      kernelRelease: release(),
      nodeVersion: process.version,
      qemuVersion,
      memTotalMiB: Math.round(totalmem() / 2 ** 20),
      loadAverageStart,
      loadAverageEnd: loadavg(),
    },
    config: {
      kernel: spec.kernel,
      kernelRelease: spec.kernelRelease,
      initrd: spec.initrd,
      cmdline: guestCmdline(spec),
      guestCommand: GUEST_COMMAND,
      memoryMib: spec.memoryMib,
      startupRounds: spec.startupRounds,
      bootRounds: spec.bootRounds,
      warmup: spec.warmup,
      rateCount: spec.rateCount,
      rateConcurrency: spec.rateConcurrency,
      rateCpu: spec.rateCpu,
      pollMs: spec.pollMs,
      qemuArgs: ['taskset', '-c', String(spec.rateCpu), ...vmInvocation(spec, 'qemu', cpuModel).slice(0, 1), ...qemuArgs({ kernel: 'K', initrd: 'I', memoryMib: spec.memoryMib, vcpus: 1 }, '<cmdline>', cpuModel)],
      ...(spec.tsvmmRevision !== undefined ? { tsvmmRevision: spec.tsvmmRevision } : {}),
    },
    startup,
    imports,
    boots,
    rates,
  };
}

await measureMain<ApiMeasureSpec>(import.meta.url, measure);
// The SDK's VMs have ended; do not let a straggling handle keep the nested host up.
if (process.argv[1] === fileURLToPath(import.meta.url)) process.exit(0);
