/**
 * The API benchmark's raw result: every sample of the three measurements, warm-ups and failures
 * included, as the measuring side (measure.ts) produced it, plus the start-up series run.ts took
 * on this machine itself (hostStartup). The report (report.ts) reads only this.
 */
import type { OuterEnvironment } from '../blk/run-helpers.js';
import type { BenchEnvironment } from '../boot/samples.js';

/** Process start-up: from just before spawn until the process answers (or exits). */
export type StartupKind = 'node-e0' | 'node-server' | 'tsvmm-version' | 'tsvmm-api';

export const STARTUP_LABELS: Record<StartupKind, string> = {
  'node-e0': '`node -e 0` (start → exit)',
  'node-server': 'bare Node HTTP server on a Unix socket (start → `GET /` 200)',
  'tsvmm-version': '`tsvmm --version` (start → exit)',
  'tsvmm-api': '`tsvmm --api-sock S` (start → `GET /` 200)',
};

export interface StartupSample {
  readonly kind: StartupKind;
  readonly round: number;
  readonly warmup: boolean;
  readonly ok: boolean;
  /** Milliseconds from just before spawn to the first 200 to `GET /` (servers) or to exit (the others). */
  readonly ms: number;
  /** Connection attempts refused before the one that was answered (servers only). */
  readonly attempts?: number;
  readonly problem?: string;
}

/** One fresh `node import-probe.js` process: when each part of tsvmm's API code had been imported (ms after the process's time origin). */
export interface ImportSample {
  readonly round: number;
  readonly warmup: boolean;
  /** Node's bootstrap: time origin → the probe's first line. */
  readonly scriptStart: number;
  /** + src/api/config.js (the configuration parsers, 20-odd modules). */
  readonly config: number;
  /** + the HTTP server, the controller, the OpenAPI document and request validator. */
  readonly server: number;
  /** + src/cli/main.js and src/cli/api-mode.js (what `--api-sock` loads before it listens). */
  readonly cli: number;
  /**
   * Probe order: 'config-first' (absent; samples before the parsers were deferred): config, server
   * (with the OpenAPI document and validator), cli, launch. 'config-after-listen': server, cli,
   * then config (the parsers, the OpenAPI document and validator: loaded at the first request
   * that needs them), then launch.
   */
  readonly order?: 'config-after-listen';
  /** + src/vmm/launch.js (the boot code: loaders, ACPI, CPUID, device models) — loaded after listening since this change. */
  readonly launch: number;
  /** Modules loaded before listening, and by launch.js on top. */
  readonly modulesBeforeListen?: number;
  readonly modulesLaunch?: number;
}

export type ImportStage = 'bootstrap' | 'config' | 'server' | 'cli' | 'launch';

/** The time each step added, in the order the sample's probe took them (see ImportSample.order). */
export function importStageTimes(s: ImportSample): Record<ImportStage, number> {
  if (s.order === 'config-after-listen') {
    return { bootstrap: s.scriptStart, server: s.server - s.scriptStart, cli: s.cli - s.server, config: s.config - s.cli, launch: s.launch - s.config };
  }
  return { bootstrap: s.scriptStart, config: s.config - s.scriptStart, server: s.server - s.config, cli: s.cli - s.server, launch: s.launch - s.cli };
}

/** How InstanceStart was sent. */
export type BootPath = 'api-socket' | 'sdk-in-process';

export const BOOT_PATH_LABELS: Record<BootPath, string> = {
  'api-socket': '`tsvmm --api-sock` over HTTP',
  'sdk-in-process': 'SDK `MicroVM`, in this process',
};

export interface BootSample {
  readonly path: BootPath;
  readonly round: number;
  readonly warmup: boolean;
  readonly ok: boolean;
  readonly problem?: string;
  /** From sending PUT /actions InstanceStart (api-socket) or calling `vm.start()` (SDK) … */
  /** … to its 204 (start() resolving for the SDK). */
  readonly answeredMs?: number;
  /** … to the boot-timer write reaching the benchmark (stderr line, or the SDK's 'booted' event). */
  readonly bootedMs?: number;
  /** The boot timer's own figure (from the VM's creation inside the VMM). */
  readonly bootTimerMs?: number;
  /** … to the VM's end (process exit, or `vm.wait()` resolving). */
  readonly exitMs?: number;
  /** The configuration requests before InstanceStart (api-socket only: machine-config + boot-source over HTTP). */
  readonly configureMs?: number;
}

export type RateVmm = 'tsvmm' | 'qemu';

export const RATE_LABELS: Record<RateVmm, string> = { tsvmm: 'tsvmm (`tsvmm run`)', qemu: 'QEMU `-M microvm`' };

/** One batch: `count` VMs, at most `concurrency` at a time, every process pinned to one CPU. */
export interface RateSample {
  readonly vmm: RateVmm;
  readonly concurrency: number;
  readonly count: number;
  readonly warmup: boolean;
  /** First spawn → last exit. */
  readonly elapsedMs: number;
  /** VMs that exited 0 having printed the guest command's line. */
  readonly ok: number;
  /** Each VM's spawn → exit. */
  readonly perVmMs: readonly number[];
  readonly problems: readonly string[];
}

/** The boot benchmark's environment record, with the outer machine's load at the end as well. */
export type ApiEnvironment = Omit<BenchEnvironment, 'outer'> & { readonly outer?: OuterEnvironment };

/** The run's shape: what run.ts asks of the measuring side and what the report says was done. */
export interface ApiShape {
  readonly memoryMib: number;
  readonly startupRounds: number;
  readonly bootRounds: number;
  /** Warm-up rounds (start-up and boots) and warm-up VMs (rate), kept but left out of the statistics. */
  readonly warmup: number;
  readonly rateCount: number;
  readonly rateConcurrency: readonly number[];
  /** The CPU every VMM process of the rate batches is pinned to. */
  readonly rateCpu: number;
  readonly pollMs: number;
  readonly tsvmmRevision?: string;
}

export interface ApiConfig extends ApiShape {
  readonly kernel: string;
  readonly kernelRelease: string;
  readonly initrd: string;
  readonly cmdline: string;
  readonly guestCommand: string;
  readonly qemuArgs: readonly string[];
}

/**
 * Part 1 taken again directly on the machine the benchmark was started on (run.ts), where nothing
 * is emulated: starting the API server needs no KVM (the VM is created at InstanceStart). Recorded
 * when the rest was measured inside the nested host, or alone with `--startup-only`.
 */
export interface HostStartup {
  readonly startedAt: string;
  readonly finishedAt: string;
  readonly environment: {
    readonly cpuModel: string;
    readonly cpus: number;
    readonly kernelRelease: string;
    readonly nodeVersion: string;
    readonly memTotalMiB: number;
    readonly loadAverageStart: readonly number[];
    readonly loadAverageEnd: readonly number[];
  };
  readonly rounds: number;
  readonly warmup: number;
  readonly pollMs: number;
  readonly tsvmmRevision?: string;
  readonly startup: readonly StartupSample[];
  readonly imports: readonly ImportSample[];
}

export interface ApiResult {
  readonly startedAt: string;
  readonly finishedAt: string;
  readonly environment: ApiEnvironment;
  readonly config: ApiConfig;
  readonly startup: readonly StartupSample[];
  readonly imports: readonly ImportSample[];
  readonly boots: readonly BootSample[];
  readonly rates: readonly RateSample[];
  /** The start-up series taken on this machine (see HostStartup); absent in older results. */
  readonly hostStartup?: HostStartup;
}
