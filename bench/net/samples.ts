/** The network benchmark's raw result: what one run measured, as saved in bench/results/net-<date>.json. */
import type { PingPhases } from './ping-trace.js';
import type { NestedRestart } from '../blk/samples.js';
import type { CpuDelta } from '../blk/proc-cpu.js';
import type { KvmStats } from '../blk/kvm-stats.js';
import type { MeasuringEnvironment, RunSampleBase, VmmKind } from '../blk/samples.js';
import type { Direction } from './guest-script.js';

export { ALL_VMMS, type VmmKind } from '../blk/samples.js';

/** What iperf3's -J output says of one test (the guest is the client). */
export interface IperfSummary {
  /** Receiver's goodput, bits per second (sum_received). */
  readonly bitsPerSecond: number;
  readonly bytesReceived: number;
  readonly seconds: number;
  /** The sender's TCP retransmits (sum_sent), when reported. */
  readonly retransmits?: number;
  /** CPU of the guest's iperf3 (the client), % of one CPU. */
  readonly guestIperfCpuPct?: number;
  /** CPU of the host's iperf3 (the server), % of one CPU. */
  readonly hostIperfCpuPct?: number;
  /** Bits per second of each reporting interval (one a second). */
  readonly intervals: readonly number[];
}

/** The tap's counters at one moment (/sys/class/net/TAP/statistics; tx is towards the VMM). */
export interface TapCounters {
  readonly txDropped: number;
  readonly txFrames: number;
  readonly txBytes: number;
  readonly rxFrames: number;
  readonly rxBytes: number;
}

export interface TapFrames {
  /** Host → guest: what the VMM read from the tap. */
  readonly toVmmFrames: number;
  readonly toVmmBytes: number;
  /** Guest → host: what the VMM wrote to the tap. */
  readonly fromVmmFrames: number;
  readonly fromVmmBytes: number;
}

export interface IperfSample {
  readonly name: string;
  readonly direction: Direction;
  readonly ok: boolean;
  readonly problem?: string;
  readonly iperfStatus?: number;
  readonly iperf?: IperfSummary;
  /** The VMM process's CPU between the test's BEGIN and END markers. */
  readonly cpu?: CpuDelta;
  /** KVM's counters for the VM over the same window (debugfs; bench/blk/kvm-stats.ts), where readable. */
  readonly kvm?: KvmStats;
  readonly windowMs?: number;
  /** Frames the tap dropped on the way to the VMM during the test (its tx_dropped counter). */
  readonly tapDropped?: number;
  /** Frames and bytes through the tap during the test, each way (a GSO frame counts once, whole). */
  readonly tapFrames?: TapFrames;
  /** How the guest's counters (guest-script.ts GUEST_COUNTERS) moved over the test. */
  readonly guestCounters?: Readonly<Record<string, number>>;
}

export interface PingSample {
  readonly ok: boolean;
  readonly problem?: string;
  readonly transmitted: number;
  readonly received: number;
  /** Round-trip time of each reply, ms, in order. */
  readonly rttMs: readonly number[];
  /** ping's own summary line (rtt min/avg/max/mdev). */
  readonly summary?: string;
  readonly cpu?: CpuDelta;
  /** KVM's counters for the VM while the pings ran. */
  readonly kvm?: KvmStats;
  readonly windowMs?: number;
  /** Where the round trips went, from the kernel's trace events (ping-trace.ts); absent where tracing was unavailable and in results from before it existed. */
  readonly phases?: PingPhases;
  /** The VMMs whose guests were pinged in the same window, requests interleaved (pair.ts); empty or absent: this guest alone. */
  readonly alongside?: readonly VmmKind[];
}

/** One VMM's network in the benchmark: its own tap and link-local subnet. */
export interface GuestNetwork {
  readonly tap: string;
  readonly hostAddress: string;
  readonly guestAddress: string;
  readonly guestMac: string;
}

export interface NetRunSample extends RunSampleBase {
  readonly ping?: PingSample;
  readonly tests: readonly IperfSample[];
}

export interface NetEnvironment extends MeasuringEnvironment {
  readonly iperf3Version: string;
  readonly pingVersion: string;
}

export interface NetConfig {
  readonly kernelRelease: string;
  readonly kernelBytes: number;
  readonly initrdBytes: number;
  readonly cmdline: string;
  readonly guestCommand: string;
  readonly vcpus: number;
  readonly memoryMib: number;
  readonly seconds: number;
  readonly repetitions: number;
  /** Seconds of unmeasured iperf3 each way before the ping in each boot (absent in results from before it existed: none). */
  readonly warmupSeconds?: number;
  readonly rounds: number;
  readonly pings: number;
  readonly pingIntervalSeconds: number;
  readonly vmms: readonly VmmKind[];
  /** The first VMM's network (results from before `networks`: the one tap both VMMs opened in turn). */
  readonly tap: string;
  readonly hostAddress: string;
  readonly guestAddress: string;
  readonly guestMac: string;
  /** Each VMM's own tap and subnet (absent in results from before 2026-11-29's paired rounds: one tap for both). */
  readonly networks?: Partial<Record<VmmKind, GuestNetwork>>;
  /** Both VMMs' guests were up at once in each round, pinged together, tests in turn (pair.ts); absent: one boot after the other. */
  readonly paired?: boolean;
  readonly tsvmmRevision?: string;
  /** tsvmm's EventFdPoller wait when the run chose one (--tsvmm-poller). */
  readonly tsvmmPoller?: string;
}

export interface NetResult {
  /** Set when the run ended early (the emulated host died): why, and how many boots the result holds. */
  readonly incomplete?: string;
  /** Guest boots done (a boot whose guest failed counts: it was measured); absent in results from before 2026-11-27. */
  readonly bootsDone?: number;
  /** Times the nested host failed mid-run and the run went on in a fresh one (measureInNestedHost). */
  readonly nestedRestarts?: readonly NestedRestart[];
  readonly startedAt: string;
  readonly finishedAt: string;
  readonly environment: NetEnvironment;
  readonly config: NetConfig;
  readonly runs: readonly NetRunSample[];
}
