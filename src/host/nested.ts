/**
 * The nested host: an x86 machine emulated by QEMU (TCG) with AMD-V, whose own KVM (kvm-amd)
 * runs what this machine's KVM cannot (stock Linux guests under PVM, or anything when there is
 * no /dev/kvm). It mounts this machine's root read-only over 9p, so Node, the checkout and its
 * node_modules are all there; it runs one command in a chroot of that root and powers off.
 *
 * One boot per `runInNestedHost` call: the command starts 5–7 s after QEMU does on an idle machine
 * here (the kernel is PVH-booted from an extracted vmlinux; more when the machine is busy). The
 * command and its environment travel in a per-run cpio archive appended to the cached initramfs; its
 * exit status comes back on the serial console in a marker line carrying a random nonce.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync, copyFileSync, existsSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { CpioWriter } from '../image/cpio.js';
import { TsvmmError } from '../util/errors.js';
import { type ProgressSink, stderrProgress } from '../util/progress.js';
import type { VirtualizationEnvironment } from './environment.js';
import { ensureNestedHostAssets, type NestedHostAssets } from './nested-assets.js';
import { NestedConsole } from './nested-console.js';
import { DEFAULT_WEDGE_TIMEOUT_MS, HeartbeatWatch } from './nested-heartbeat.js';
import { commandScript, RUN_SPEC_DIR } from './nested-init.js';
import { cacheDir } from '../util/cache.js';
import { makeOwnedTempDir, removeStaleTempDirs } from './owned-temp-dirs.js';

export { ensureNestedHostAssets, NESTED_HOST_PACKAGES, NestedHostAssetError, type NestedHostAssets } from './nested-assets.js';

/** Any failure of the nested host itself (not of the command it runs). */
export class NestedHostError extends TsvmmError {}
/** The run was set up wrongly (cwd, environment, command); nothing was booted. */
export class NestedHostUsageError extends NestedHostError {}
/** QEMU could not be started, or exited before the nested host booted. */
export class NestedHostStartError extends NestedHostError {}
/** The nested host's kernel panicked. */
export class NestedHostPanicError extends NestedHostError {}
/** The nested host's init could not prepare the command (module load, mounts). */
export class NestedHostSetupError extends NestedHostError {}
/** The nested host did not come up in time, or stopped without reporting the command's status. */
export class NestedHostBootError extends NestedHostError {}
/**
 * The nested host stopped making progress: its kernel reported a CPU stuck for minutes (soft
 * lockup), or its init stopped sending heartbeats (the emulated machine wedged). That is the
 * emulated host failing, not the command; running again usually succeeds.
 */
export class NestedHostHungError extends NestedHostError {}
/**
 * The nested host reset (QEMU, run with -no-reboot, exited by itself) while the command was
 * running: its init never resets the machine before reporting the command's status, so the
 * emulated machine did (a triple fault of its own kernel, or a reboot without a panic message).
 * That is the emulated host failing, not the command; running again usually succeeds.
 */
export class NestedHostResetError extends NestedHostError {}
/** The caller's AbortSignal stopped the run. */
export class NestedHostAbortedError extends NestedHostError {}

export interface NestedRunOptions {
  /** Working directory inside (a path of this machine; not under /tmp or /run, which are fresh there). Default: process.cwd(). */
  readonly cwd?: string;
  /** Added to PATH, HOME, TERM and CI (taken from this process) and TSVMM_NESTED_HOST=1. */
  readonly env?: Readonly<Record<string, string>>;
  /** Whole run, boot included; on expiry QEMU is killed and `timedOut` is reported. Default 10 min. */
  readonly timeoutMs?: number;
  /** Boot up to the command's start; a stall beyond it is a NestedHostBootError. Default 120 s. */
  readonly bootTimeoutMs?: number;
  /**
   * The command printing nothing for this long ends the run like a timeout (`stalled` is set).
   * Default: off.
   */
  readonly stallTimeoutMs?: number;
  /**
   * No heartbeat from the nested host's init for this long, once the command runs, means the
   * emulated machine wedged: QEMU is killed and the run fails with NestedHostHungError, whatever
   * the command was doing. Default 90 s (nested-heartbeat.ts), or TSVMM_NESTED_WEDGE_TIMEOUT_S.
   */
  readonly wedgeTimeoutMs?: number;
  /** Nested host memory. Default 3072 MiB. */
  readonly memoryMiB?: number;
  /** Nested host CPUs (TCG threads). Default 2. */
  readonly cpus?: number;
  /** The command's output (stdout and stderr merged), live, as it arrives. */
  readonly onOutput?: (text: string) => void;
  /** Set-up and boot milestones. Default: stderr. */
  readonly progress?: ProgressSink;
  readonly signal?: AbortSignal;
  /** Pre-resolved assets (skips the package and kernel checks). */
  readonly assets?: NestedHostAssets;
  /** Folders of this machine that must be visible inside even under /tmp or /run (read-only, as the rest of the root). */
  readonly visible?: readonly string[];
  /**
   * Folders of this machine the command may write to (a read-write disk image's folder): each is
   * shared by QEMU on its own read-write 9p device and mounted at the same path inside.
   */
  readonly writable?: readonly string[];
  /**
   * A Unix socket path on this machine for a control channel: QEMU listens there, and inside the
   * nested host the same bytes come and go through the virtio-serial port named
   * NESTED_CONTROL_PORT_NAME (the `name` file of its /sys/class/virtio-ports entry). Connect once QEMU started.
   */
  readonly controlSocket?: string;
}

/** The name of the nested host's virtio-serial control port (see NestedRunOptions.controlSocket). */
export const NESTED_CONTROL_PORT_NAME = 'tsvmm.ctl';

export interface NestedRunResult {
  /** The command's real exit status (124 when the run timed out, as timeout(1) reports). */
  readonly status: number;
  /** The command's output, stdout and stderr merged, without boot or power-down noise. */
  readonly output: string;
  /** The signal tsvmm sent QEMU to end the run early (only on timeout). */
  readonly signal?: NodeJS.Signals;
  readonly timedOut: boolean;
  /** The run ended early because the command printed nothing for `stallTimeoutMs` (`timedOut` is set too). */
  readonly stalled: boolean;
  /** QEMU start to command start. */
  readonly bootMs: number | undefined;
  /** Command start to its exit marker. */
  readonly commandMs: number | undefined;
  /** QEMU start to QEMU exit. */
  readonly wallMs: number;
  /** SeaBIOS, kernel and init messages before the command started. */
  readonly bootLog: string;
  /** Heartbeat lines the nested host's init printed (one at start, then every NESTED_HEARTBEAT_INTERVAL_S). */
  readonly heartbeats: number;
}

const DEFAULT_TIMEOUT_MS = 10 * 60_000;
const DEFAULT_BOOT_TIMEOUT_MS = 120_000;
/** After the exit marker, init powers off at once; allow QEMU this long before killing it. */
const POWEROFF_GRACE_MS = 5_000;
/**
 * A soft-lockup report of a CPU stuck this long ends the run with NestedHostHungError. The
 * watchdog reports after 20 s; emulation under load can produce such short ones that recover,
 * but a CPU that has not scheduled for this long has taken the host down with it (seen: kthreadd
 * stuck, so KVM_CREATE_VM, which starts a kernel thread, never returned).
 */
const LOCKUP_GIVE_UP_S = 100;
const FRESH_INSIDE = ['/proc', '/sys', '/dev'];
/** Replaced by fresh tmpfs inside, but folders of the machine's below them can be carried through (kept visible, read-only). */
const TMPFS_INSIDE = ['/tmp', '/run'];
/**
 * The nested host's KVM runs its guests on shadow page tables, not on the emulated CPU's nested
 * paging (AMD NPT). QEMU 7.2's TCG emulation of NPT now and then walks a guest's page tables from
 * the nested host's own CR3 (a guest's nested page fault names a guest-physical address past its
 * RAM that is one of the nested host's page-table pages: 0x1_00a0_6fe0 against the host's CR3
 * 0x1_00b2_4000), and with it come the inner guests' hangs (a vCPU emulating one instruction for
 * ever), their triple faults and the nested host's own panics (an interrupt taken right after
 * VMRUN on the guest's GS). Under two guests moving data at once, 2026-11-29: with NPT, both runs
 * (two tsvmm guests; two QEMU guests) lost a guest and then the nested host; with npt=0 both runs
 * (two tsvmm guests; tsvmm and QEMU) finished every round, throughput alike.
 * TSVMM_NESTED_KERNEL_ARGS=kvm_amd.npt=1 turns nested paging back on (the last word wins).
 */
const NESTED_PAGING_OFF = 'kvm_amd.npt=0';
/**
 * `quiet loglevel=1`: only emergencies reach the console, so kernel chatter stays out of command
 * output; panics still print.
 *
 * The nested kernel distrusts the emulated CPU's TSC and runs on the emulated HPET (clock_gettime
 * 3–8 µs, an emulated MMIO read; KVM then keeps no stable kvmclock for the inner guests).
 * `clocksource=tsc tsc=reliable` (through TSVMM_NESTED_KERNEL_ARGS) fixes that, but it is not the
 * default: a full bench/blk run on it lost both VMMs' guests in its first round and then the
 * nested host to a soft lockup, and an A/B of QD 1 I/O showed no gain that outlasted the noise.
 */
const KERNEL_CMDLINE = `console=ttyS0 quiet loglevel=1 panic=-1 ${NESTED_PAGING_OFF}`;

/** The nested kernel's command line; TSVMM_NESTED_KERNEL_ARGS appends to it (e.g. `loglevel=7` to see why the nested host misbehaves). */
function kernelCmdline(): string {
  const extra = process.env['TSVMM_NESTED_KERNEL_ARGS']?.trim();
  return extra ? `${KERNEL_CMDLINE} ${extra}` : KERNEL_CMDLINE;
}

/** The one-sentence reason tsvmm uses (or does not need) the nested host on this machine. */
export function explainNestedHost(env: VirtualizationEnvironment): string {
  if (!env.needsNestedHost) return 'The nested host is not needed: this machine has hardware-assisted KVM, which boots stock Linux guests directly.';
  if (env.kind === 'pvm') {
    return "Stock Linux guests need hardware-assisted KVM and this machine's /dev/kvm is PVM, so tsvmm boots them inside a QEMU-emulated x86 host with AMD-V and uses that host's KVM.";
  }
  return 'This machine offers no usable /dev/kvm, so tsvmm runs everything that needs KVM inside a QEMU-emulated x86 host with AMD-V and uses that host\'s KVM.';
}

/** QEMU's command line for one run (per DESIGN.md's verified recipe). */
export function nestedQemuArgs(
  assets: NestedHostAssets,
  initrd: string,
  memoryMiB: number,
  cpus: number,
  writable: readonly string[] = [],
  controlSocket?: string,
): string[] {
  const shares = writable.flatMap((path, i) => ['-virtfs', `local,path=${path},mount_tag=${writableTag(i)},security_model=none,multidevs=remap`]);
  // QEMU splits -chardev values at commas.
  if (controlSocket !== undefined && controlSocket.includes(',')) throw new NestedHostUsageError(`the control socket path ${controlSocket} must not contain a comma`);
  const control = controlSocket === undefined ? [] : [
    '-device', 'virtio-serial-pci,id=tsvmmser',
    '-chardev', `socket,id=tsvmmctl,path=${controlSocket},server=on,wait=off`,
    '-device', `virtserialport,bus=tsvmmser.0,chardev=tsvmmctl,name=${NESTED_CONTROL_PORT_NAME}`,
  ];
  return [
    '-M', 'q35',
    '-accel', `tcg,thread=${process.env['TSVMM_NESTED_TCG_THREAD'] === 'single' ? 'single' : 'multi'}`,
    '-smp', String(cpus),
    '-cpu', 'EPYC,+svm,+npt',
    '-m', String(memoryMiB),
    '-nodefaults', '-no-user-config', '-nographic',
    '-serial', 'stdio',
    '-kernel', assets.kernel,
    '-initrd', initrd,
    '-append', kernelCmdline(),
    '-virtfs', 'local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap',
    ...shares,
    ...control,
    '-no-reboot',
  ];
}

/** The 9p mount tag of writable folder `i` (QEMU allows 31 bytes). */
function writableTag(i: number): string {
  return `tsvmmrw${i}`;
}

function defaultEnv(): Record<string, string> {
  const env: Record<string, string> = {
    PATH: process.env['PATH'] ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: process.env['HOME'] ?? '/root',
    TERM: process.env['TERM'] ?? 'dumb',
  };
  if (process.env['CI'] !== undefined) env['CI'] = process.env['CI'];
  env['TSVMM_NESTED_HOST'] = '1';
  return env;
}

/** TSVMM_NESTED_WEDGE_TIMEOUT_S: the default wedge timeout, for a machine slower than ours. */
function wedgeTimeoutFromEnv(): number | undefined {
  const raw = process.env['TSVMM_NESTED_WEDGE_TIMEOUT_S'];
  if (raw === undefined || raw.trim() === '') return undefined;
  const seconds = Number(raw);
  if (!Number.isFinite(seconds) || seconds <= 0) throw new NestedHostUsageError(`TSVMM_NESTED_WEDGE_TIMEOUT_S must be a positive number of seconds, got ${JSON.stringify(raw)}`);
  return seconds * 1000;
}

function positive(name: string, v: number | undefined, dflt: number): number {
  const x = v ?? dflt;
  if (!Number.isFinite(x) || x <= 0) throw new NestedHostUsageError(`${name} must be a positive number, got ${String(v)}`);
  return x;
}

/** The per-run archive (nonce and command script) appended to the cached initramfs. */
function writeRunInitrd(dir: string, base: string, nonce: string, script: string, keep: readonly string[]): string {
  const initrd = join(dir, 'initrd.cpio');
  copyFileSync(base, initrd);
  // Linux unpacks concatenated newc archives in order; the base ends 4-byte aligned.
  const run = new CpioWriter().file(`${RUN_SPEC_DIR}/nonce`, nonce, 0o600).file(`${RUN_SPEC_DIR}/command.sh`, script, 0o644)
    .file(`${RUN_SPEC_DIR}/keep`, keep.map((p) => `${p}\n`).join(''), 0o644)
    .finish();
  appendFileSync(initrd, run);
  return initrd;
}

function describe(command: string | readonly string[]): string {
  const s = typeof command === 'string' ? command : command.join(' ');
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

/**
 * Boot the nested host, run `command` there (a shell command line, or an argv exec'd as is) and
 * return its real exit status and output. Never hangs: a timeout kills QEMU and reports
 * `timedOut`; a panic, a failed setup or QEMU failing to start throws a NestedHostError saying so.
 */
export async function runInNestedHost(command: string | readonly string[], options: NestedRunOptions = {}): Promise<NestedRunResult> {
  const progress = options.progress ?? stderrProgress;
  const timeoutMs = positive('timeoutMs', options.timeoutMs, DEFAULT_TIMEOUT_MS);
  const bootTimeoutMs = positive('bootTimeoutMs', options.bootTimeoutMs, DEFAULT_BOOT_TIMEOUT_MS);
  const stallTimeoutMs = options.stallTimeoutMs === undefined ? undefined : positive('stallTimeoutMs', options.stallTimeoutMs, 0);
  const wedgeTimeoutMs = positive('wedgeTimeoutMs', options.wedgeTimeoutMs ?? wedgeTimeoutFromEnv(), DEFAULT_WEDGE_TIMEOUT_MS);
  const memoryMiB = Math.round(positive('memoryMiB', options.memoryMiB, 3072));
  const cpus = Math.round(positive('cpus', options.cpus, 2));
  const cwd = resolve(options.cwd ?? process.cwd());
  const fresh = FRESH_INSIDE.find((d) => cwd === d || cwd.startsWith(`${d}/`));
  if (fresh !== undefined) {
    throw new NestedHostUsageError(`cwd ${cwd} is under ${fresh}, which the nested host replaces with its own; use a directory elsewhere on this machine's root`);
  }
  // A checkout (or cache) under /tmp stays visible inside, read-only, on top of the fresh /tmp.
  const keep = [cwd, cacheDir(), ...(options.visible ?? []).map((p) => resolve(p))].filter((p) => TMPFS_INSIDE.some((d) => p.startsWith(`${d}/`)) && !p.includes('\n'));
  const writable = [...new Set((options.writable ?? []).map((p) => resolve(p)))];
  // QEMU's -virtfs splits its value at commas.
  const badShare = writable.find((p) => p.includes(',') || FRESH_INSIDE.some((d) => p === d || p.startsWith(`${d}/`)));
  if (badShare !== undefined) throw new NestedHostUsageError(`cannot share ${badShare} read-write with the nested host: use a folder without commas, outside /proc, /sys and /dev`);
  let script: string;
  try {
    script = commandScript({ command, cwd, env: { ...defaultEnv(), ...options.env }, mounts: writable.map((path, i) => ({ tag: writableTag(i), path })) });
  } catch (e) {
    throw new NestedHostUsageError(`cannot pass the command to the nested host: ${(e as Error).message}`);
  }
  if (options.signal?.aborted) throw new NestedHostAbortedError('nested host run aborted before it started');

  const assets = options.assets ?? ensureNestedHostAssets(progress);
  const nonce = randomBytes(16).toString('hex');
  // Folders of earlier runs killed before their `finally` (each holds a copy of the initramfs).
  removeStaleTempDirs(WORK_DIR_PREFIX);
  const work = makeOwnedTempDir(WORK_DIR_PREFIX);
  try {
    const initrd = writeRunInitrd(work, assets.initramfs, nonce, script, keep);
    progress(`booting the nested host (QEMU, emulated x86 with AMD-V) to run: ${describe(command)}`);
    return await boot(assets, initrd, nonce, { timeoutMs, bootTimeoutMs, stallTimeoutMs, wedgeTimeoutMs, memoryMiB, cpus, writable, options, progress });
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** Prefix of each run's folder under the OS's temporary folder (the per-run initrd). */
export const WORK_DIR_PREFIX = 'tsvmm-nested-';
/** util-linux's setpriv (Debian: essential, always installed). */
const SETPRIV = '/usr/bin/setpriv';

/**
 * `program args` wrapped so the kernel kills it when this process dies (prctl PR_SET_PDEATHSIG,
 * through `setpriv --pdeathsig KILL`, which then execs the program: same PID, same pipes). Without
 * it, a runner killed with SIGKILL left its QEMU running: measured here, a nested host whose
 * parent was killed 12 s into `sleep 100` kept two emulated CPUs busy until its command ended,
 * which for a benchmark is many minutes. Unwrapped where setpriv is missing.
 */
export function dieWithParent(program: string, args: readonly string[]): [string, string[]] {
  return existsSync(SETPRIV) ? [SETPRIV, ['--pdeathsig', 'KILL', '--', program, ...args]] : [program, [...args]];
}

interface BootParams {
  readonly timeoutMs: number;
  readonly bootTimeoutMs: number;
  readonly stallTimeoutMs: number | undefined;
  readonly wedgeTimeoutMs: number;
  readonly memoryMiB: number;
  readonly cpus: number;
  readonly writable: readonly string[];
  readonly options: NestedRunOptions;
  readonly progress: ProgressSink;
}

function boot(assets: NestedHostAssets, initrd: string, nonce: string, p: BootParams): Promise<NestedRunResult> {
  return new Promise<NestedRunResult>((resolvePromise, reject) => {
    const started = Date.now();
    let bootMs: number | undefined;
    let commandMs: number | undefined;
    let ended: 'timeout' | 'stall' | 'boot-stall' | 'lockup' | 'wedged' | 'aborted' | undefined;
    let spawnError: Error | undefined;
    let stderr = '';
    const timers: NodeJS.Timeout[] = [];

    const [program, args] = dieWithParent(assets.qemu, nestedQemuArgs(assets, initrd, p.memoryMiB, p.cpus, p.writable, p.options.controlSocket));
    const qemu = spawn(program, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const kill = (): void => {
      if (qemu.exitCode === null && qemu.signalCode === null) qemu.kill('SIGKILL');
    };
    let wedgedAfterMs = 0;
    let consoleSilentMs = 0;
    let lastConsoleAt = Date.now();
    // Armed when the command starts: init sends its first heartbeat before that, so from then on silence means a wedged machine.
    const heartbeat = new HeartbeatWatch(
      p.wedgeTimeoutMs,
      (silentMs) => {
        wedgedAfterMs = silentMs;
        consoleSilentMs = Date.now() - lastConsoleAt;
        ended ??= 'wedged';
        kill();
      },
      undefined,
      {
        late: (silentMs) => p.progress(`the nested host has printed no heartbeat for ${Math.round(silentMs / 1000)} s (the run ends at ${Math.round(p.wedgeTimeoutMs / 1000)} s without one)`),
        back: (silentMs) => p.progress(`the nested host's heartbeat is back after ${Math.round(silentMs / 1000)} s`),
      },
    );
    const console_ = new NestedConsole(nonce, p.options.onOutput, () => heartbeat.beat());
    // Never leave an emulated machine behind when this process goes away.
    process.on('exit', kill);
    const onAbort = (): void => {
      ended ??= 'aborted';
      kill();
    };
    p.options.signal?.addEventListener('abort', onAbort, { once: true });

    timers.push(
      setTimeout(() => {
        ended ??= 'timeout';
        kill();
      }, p.timeoutMs),
      setTimeout(() => {
        if (console_.phase === 'boot') {
          ended ??= 'boot-stall';
          kill();
        }
      }, Math.min(p.bootTimeoutMs, p.timeoutMs + 1)),
    );
    let graceArmed = false;
    // Restarted by every chunk of command output; only runs while the command is running.
    let stallTimer: NodeJS.Timeout | undefined;
    const armStallTimer = (): void => {
      if (p.stallTimeoutMs === undefined) return;
      if (stallTimer !== undefined) clearTimeout(stallTimer);
      stallTimer = setTimeout(() => {
        ended ??= 'stall';
        kill();
      }, p.stallTimeoutMs);
    };
    let outputSeen = 0;
    qemu.stdout.on('data', (chunk: Buffer) => {
      lastConsoleAt = Date.now();
      const before = console_.phase;
      console_.push(chunk);
      if (console_.phase === 'command' && console_.output.length !== outputSeen) {
        outputSeen = console_.output.length;
        armStallTimer();
      }
      const lockup = console_.softLockup;
      if (lockup !== undefined && lockup.seconds >= LOCKUP_GIVE_UP_S && console_.phase !== 'done') {
        ended ??= 'lockup';
        kill();
      }
      if (before === 'boot' && console_.phase !== 'boot' && console_.phase !== 'setup-failed') {
        armStallTimer();
        heartbeat.start();
        bootMs = Date.now() - started;
        p.progress(`nested host up in ${(bootMs / 1000).toFixed(1)} s; command running`);
      }
      if ((console_.phase === 'done' || console_.phase === 'setup-failed') && !graceArmed) {
        graceArmed = true;
        heartbeat.stop();
        if (stallTimer !== undefined) clearTimeout(stallTimer);
        if (bootMs !== undefined) commandMs = Date.now() - started - bootMs;
        timers.push(setTimeout(kill, POWEROFF_GRACE_MS));
      }
    });
    qemu.stderr.on('data', (chunk: Buffer) => {
      stderr = (stderr + chunk.toString('utf8')).slice(-8192);
    });
    qemu.on('error', (e) => {
      spawnError = e;
    });
    qemu.on('close', (code, signal) => {
      for (const t of timers) clearTimeout(t);
      if (stallTimer !== undefined) clearTimeout(stallTimer);
      heartbeat.stop();
      process.off('exit', kill);
      p.options.signal?.removeEventListener('abort', onAbort);
      console_.end();
      const wallMs = Date.now() - started;
      const qemuErrors = stderr
        .split('\n')
        .filter((l) => l.trim() !== '' && !/warning: /.test(l))
        .slice(-3)
        .join(' | ');
      const lastLines = (): string => {
        const t = console_.tail(8);
        return t === '' ? '; the console printed nothing' : `; last console lines:\n${t}`;
      };
      const common = { output: console_.output, bootMs, commandMs, wallMs, bootLog: console_.bootLog, heartbeats: console_.heartbeats };

      if (console_.phase === 'done' && console_.exitStatus !== undefined) {
        p.progress(`nested host run finished in ${(wallMs / 1000).toFixed(1)} s (status ${console_.exitStatus})`);
        resolvePromise({ ...common, status: console_.exitStatus, timedOut: false, stalled: false });
        return;
      }
      if (spawnError !== undefined) {
        reject(new NestedHostStartError(`cannot start ${assets.qemu}: ${spawnError.message}; install it with \`sudo apt-get install --no-install-recommends qemu-system-x86\``));
        return;
      }
      if (ended === 'timeout') {
        p.progress(`nested host run timed out after ${(p.timeoutMs / 1000).toFixed(0)} s (${console_.phase === 'boot' ? 'still booting' : 'command still running'}); QEMU killed`);
        resolvePromise({ ...common, status: 124, timedOut: true, stalled: false, signal: 'SIGKILL' });
        return;
      }
      if (ended === 'stall') {
        p.progress(`nested host run stalled: the command printed nothing for ${((p.stallTimeoutMs ?? 0) / 1000).toFixed(0)} s; QEMU killed`);
        resolvePromise({ ...common, status: 124, timedOut: true, stalled: true, signal: 'SIGKILL' });
        return;
      }
      if (ended === 'lockup') {
        reject(new NestedHostHungError(`the nested host's kernel stopped making progress ("${console_.softLockup?.line ?? 'soft lockup'}"); QEMU killed. This is the emulated host failing, not the command: run it again${lastLines()}`));
        return;
      }
      if (ended === 'wedged') {
        reject(
          new NestedHostHungError(
            `the nested host stopped responding: no heartbeat from its init for ${Math.round(wedgedAfterMs / 1000)} s (the emulated machine wedged; its console was silent for the last ${Math.round(consoleSilentMs / 1000)} s); QEMU killed. This is the emulated host failing, not the command: run it again${lastLines()}`,
          ),
        );
        return;
      }
      if (ended === 'aborted') {
        reject(new NestedHostAbortedError(`nested host run aborted after ${(wallMs / 1000).toFixed(1)} s; QEMU killed`));
        return;
      }
      if (console_.phase === 'setup-failed') {
        reject(new NestedHostSetupError(`the nested host could not prepare the command: ${console_.setupFailure ?? 'unknown failure'}`));
        return;
      }
      if (console_.kernelPanic !== undefined) {
        reject(new NestedHostPanicError(`the nested host's kernel panicked ("${console_.kernelPanic}")${lastLines()}`));
        return;
      }
      if (ended === 'boot-stall') {
        reject(new NestedHostBootError(`the nested host did not reach the command within ${(p.bootTimeoutMs / 1000).toFixed(0)} s; QEMU killed${lastLines()}`));
        return;
      }
      if (console_.phase === 'boot') {
        const how = signal !== null ? `was killed by ${signal}` : `exited with status ${code}`;
        reject(new NestedHostStartError(`QEMU ${how} before the nested host booted${qemuErrors !== '' ? `: ${qemuErrors}` : ''}${lastLines()}`));
        return;
      }
      if (signal === null && code === 0) {
        // -no-reboot: QEMU exits with status 0 when the machine resets.
        reject(new NestedHostResetError(`the nested host reset while the command was running, without reporting its status (QEMU exited with status 0, as -no-reboot makes it on a reset: most likely a triple fault of the emulated machine). This is the emulated host failing, not the command: run it again${lastLines()}`));
        return;
      }
      reject(new NestedHostBootError(`the nested host stopped while the command was running, without reporting its status (QEMU ${signal ?? `status ${code}`})${lastLines()}`));
    });
  });
}
