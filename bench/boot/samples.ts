/** The raw data a benchmark run produces (written as JSON next to the report) and reads back. */
import type { GuestTimes } from './guest-probe.js';
import type { LibraryPhases } from './library-probe.js';

/** LibraryPhases timestamps that become "ms after spawn" in a sample. */
export type LibraryTimeKey = keyof Pick<LibraryPhases, 'timeOrigin' | 'mainStart' | 'importDone' | 'createDone' | 'startDone' | 'bootTimer' | 'firstCommandLine' | 'waitDone'> | 'exitEvent';

export type VmmKind = 'tsvmm-cli' | 'tsvmm-lib' | 'qemu-microvm' | 'qemu-microvm-rtc-off';

export const VMM_LABELS: Record<VmmKind, string> = {
  'tsvmm-cli': 'tsvmm (CLI)',
  'tsvmm-lib': 'tsvmm (library probe)',
  'qemu-microvm': 'QEMU -M microvm',
  'qemu-microvm-rtc-off': 'QEMU -M microvm,rtc=off',
};

export interface MemorySummary {
  readonly samples: number;
  /** Samples without a recognisable guest mapping, left out of the peak. */
  readonly unsplitSamples: number;
  /** The largest (RSS − guest RAM RSS) seen over the run. */
  readonly peakOverheadKiB?: number;
  /** Total RSS and guest RSS in that same sample. */
  readonly rssAtPeakKiB?: number;
  readonly guestRssAtPeakKiB?: number;
  /** Sizes of the mapping(s) subtracted as guest RAM (empty: none recognised). */
  readonly guestMappingsKiB: readonly number[];
  /** VMM CPU time (user + system) at the last sample before exit. */
  readonly cpuMsAtLastSample?: number;
  readonly lastSampleAtMs?: number;
}

export interface RunSample {
  readonly vmm: VmmKind;
  /** Round number; rounds < warmup are warm-up runs, kept but left out of the statistics. */
  readonly round: number;
  readonly warmup: boolean;
  readonly ok: boolean;
  readonly problem?: string;
  readonly exitStatus: number | null;
  /** Milliseconds after the VMM process was spawned, on the benchmark's clock. */
  readonly wall: {
    /** tsvmm: the `guest booted in` line (printed at the boot-timer write). */
    readonly bootTimerMs?: number;
    /** The guest command's first line (BENCH-UP) reached the console. */
    readonly firstCommandLineMs?: number;
    readonly exitMs: number;
  };
  /** What tsvmm's CLI printed about itself (its clock starts in MicroVm.create and in runHere). */
  readonly selfReported?: { readonly bootTimerMs?: number; readonly bootTimerCpuMs?: number; readonly runSeconds?: number };
  /** tsvmm-lib: phase timestamps, converted to ms after spawn. */
  readonly library?: { readonly [K in LibraryTimeKey]?: number } & { readonly bootTimerCpuMs?: number };
  readonly guest: GuestTimes;
  readonly memory: MemorySummary;
  /** QEMU: the -cpu model used. */
  readonly cpuModel?: string;
  /** Lines worth keeping for a reader (tsvmm status lines, errors), at most a few. */
  readonly notes: readonly string[];
}

export interface BenchEnvironment {
  readonly nestedHost: boolean;
  readonly outerSummary?: string;
  readonly cpuModel: string;
  readonly cpus: number;
  readonly kernelRelease: string;
  readonly qemuVersion: string;
  readonly nodeVersion: string;
  readonly memTotalMiB: number;
  readonly loadAverageStart: readonly number[];
  readonly loadAverageEnd: readonly number[];
  /** The outer machine, when the bench ran inside the nested host. */
  readonly outer?: { readonly cpuModel: string; readonly cpus: number; readonly kernelRelease: string; readonly loadAverage: readonly number[] };
}

export interface BenchConfig {
  readonly kernel: string;
  readonly kernelRelease: string;
  readonly initrd: string;
  readonly initrdBytes: number;
  readonly kernelBytes: number;
  readonly cmdline: string;
  readonly guestCommand: string;
  readonly vcpus: number;
  readonly memoryMib: number;
  readonly runs: number;
  readonly warmup: number;
  readonly sampleEveryMs: number;
  readonly qemuArgs: readonly string[];
  readonly tsvmmRevision?: string;
}

/** The bare cost of starting each VMM's runtime: a process that loads it and exits at once. */
export type BaselineKind = 'node -e 0' | 'qemu --version';

export interface BaselineSample {
  readonly what: BaselineKind;
  readonly round: number;
  readonly warmup: boolean;
  readonly wallMs: number;
  readonly ok: boolean;
}

export interface BenchResult {
  readonly startedAt: string;
  readonly finishedAt: string;
  readonly environment: BenchEnvironment;
  readonly config: BenchConfig;
  readonly samples: readonly RunSample[];
  readonly baselines: readonly BaselineSample[];
}
