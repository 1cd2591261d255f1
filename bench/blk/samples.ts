/** The raw data a block benchmark run produces (written as JSON beside the report) and reads back. */
import type { FioSummary } from './fio-json.js';
import type { CpuDelta } from './proc-cpu.js';
import type { KvmStats } from './kvm-stats.js';
import type { OuterEnvironment } from './run-helpers.js';

export type VmmKind = 'tsvmm' | 'qemu';
export const ALL_VMMS: readonly VmmKind[] = ['tsvmm', 'qemu'];

/** One fio job in one guest boot. */
export interface JobSample {
  readonly job: string;
  readonly ok: boolean;
  readonly problem?: string;
  /** fio's exit status in the guest. */
  readonly fioStatus?: number;
  readonly fio?: FioSummary;
  /** fio's JSON as printed. */
  readonly fioRaw?: unknown;
  /** The VMM process's CPU time over fio's I/O phase (between the BLK-IO-BEGIN and BLK-IO-END markers). */
  readonly cpu?: CpuDelta;
  /** KVM's counters for the VM over the same phase (debugfs; kvm-stats.ts), where readable. */
  readonly kvm?: KvmStats;
  /** Wall time of that phase as the markers reached the harness, ms. */
  readonly ioWindowMs?: number;
  /** The same over the whole job (BLK-JOB-BEGIN to BLK-JOB-END: fio's start-up and exit too). */
  readonly jobCpu?: CpuDelta;
  readonly windowMs?: number;
  /** /sys/block/vda/stat in the guest before and after the job (read I/Os, …, flushes). */
  readonly blockStatBefore?: readonly number[];
  readonly blockStatAfter?: readonly number[];
  /** Interrupts the guest took on the drive's request queues, before and after the job. */
  readonly irqsBefore?: number;
  readonly irqsAfter?: number;
}

/** One guest boot under one VMM: what every benchmark that boots the guest under both VMMs records of it. */
export interface RunSampleBase {
  readonly vmm: VmmKind;
  readonly round: number;
  /** This boot ran again, in the same round, only these jobs, which an earlier boot of the same VMM lost (bench/blk measure.ts). */
  readonly retriedJobs?: readonly string[];
  readonly ok: boolean;
  readonly problem?: string;
  readonly exitStatus: number | null;
  readonly signal?: string;
  /** Spawn to exit, ms. */
  readonly wallMs: number;
  /** Spawn to the guest's INFO line (VMM start, boot, modules, the device found), ms. */
  readonly infoAtMs?: number;
  /** The guest kernel's first report of a stalled CPU (RCU, soft lockup), when it made one. */
  readonly guestStall?: string;
  /** The INFO line's key=value pairs: tool version, the guest's view of the device. */
  readonly guestInfo: Readonly<Record<string, string>>;
  /** The VMM's whole command line. */
  readonly argv: readonly string[];
  /** QEMU: the -cpu model used. */
  readonly cpuModel?: string;
  /** Lines worth keeping (the VMM's stderr, errors on the console), at most a few. */
  readonly notes: readonly string[];
}

/** One guest boot under one VMM, running every job in turn. */
export interface VmmRunSample extends RunSampleBase {
  /** The VMM's CPU over the guest's idle sleep before the jobs (BLK-IDLE markers). */
  readonly idle?: { readonly cpu: CpuDelta; readonly windowMs: number };
  readonly jobs: readonly JobSample[];
}

/** The host that ran both VMMs (and, inside the nested host, the machine under it). */
export interface MeasuringEnvironment {
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
  /** The machine the nested host ran on: its load before the run and (set on return) after it. */
  readonly outer?: OuterEnvironment;
}

export interface BlkEnvironment extends MeasuringEnvironment {
  /** File system type of the folder holding the image (from /proc/mounts). */
  readonly imageFsType: string;
}

export interface BlkConfig {
  readonly kernelRelease: string;
  readonly kernelBytes: number;
  readonly initrdBytes: number;
  readonly cmdline: string;
  readonly guestCommand: string;
  readonly vcpus: number;
  readonly memoryMib: number;
  readonly imageMib: number;
  readonly imagePath: string;
  readonly runtimeSeconds: number;
  readonly idleSeconds?: number;
  /** Seconds of unmeasured fio before the jobs in each boot (absent in results from before it existed: none). */
  readonly warmupSeconds?: number;
  readonly rounds: number;
  readonly jobs: readonly string[];
  readonly vmms: readonly VmmKind[];
  readonly tsvmmRevision?: string;
  /** tsvmm's EventFdPoller wait when the run chose one (--tsvmm-poller). */
  readonly tsvmmPoller?: string;
  /** Seconds spent writing the image before the first boot. */
  readonly imageFillSeconds?: number;
}

export interface BlkResult {
  /** Set when the run ended early (the emulated host died): why, and how many boots the result holds. */
  readonly incomplete?: string;
  /** Guest boots done (a boot whose guest failed counts: it was measured); absent in results from before 2026-11-27. */
  readonly bootsDone?: number;
  /** Times the nested host failed mid-run and the run went on in a fresh one (measureInNestedHost). */
  readonly nestedRestarts?: readonly NestedRestart[];
  readonly startedAt: string;
  readonly finishedAt: string;
  readonly environment: BlkEnvironment;
  readonly config: BlkConfig;
  readonly runs: readonly VmmRunSample[];
}

/** One failure of the nested host that the run survived: after how many guest boots, and why. */
export interface NestedRestart {
  readonly afterBoots: number;
  readonly reason: string;
  /** Boots of the round the failure cut short, dropped from the result and run again in the fresh host (absent: none). */
  readonly redoneBoots?: number;
}
