/**
 * What a control plane (the REST API, the SDK) can do with a running microVM, whether it runs in
 * this process (MicroVm) or inside the nested host (host/nested-vm.ts, which forwards each call
 * to a MicroVm there). Every call is asynchronous so both can implement it.
 */
import type { MicroVmExitReason } from './microvm.js';

/**
 * Counters since the VM was created (totals, not deltas: a reader can difference two lines, and a
 * lost line loses nothing). One object per device, keyed by what the device is.
 */
export interface VmMetrics {
  vcpu: { exits: number; io_exits: number; mmio_exits: number; intr_exits: number };
  uart: { tx_bytes: number; rx_bytes: number };
  /** One entry per drive, by drive_id. */
  block: Record<string, { read_count: number; write_count: number; read_bytes: number; write_bytes: number; flush_count: number; errors: number; /** Reads and writes done at once (page cache, RWF_NOWAIT) rather than on the threadpool. */ immediate_count: number }>;
  entropy?: { requests: number; bytes: number };
  /** One entry per network interface, by iface_id. */
  net: Record<string, { tx_frames: number; tx_bytes: number; tx_dropped: number; rx_frames: number; rx_bytes: number; rx_dropped: number }>;
  vsock?: { tx_packets: number; rx_packets: number; connections: number; malformed: number };
  /**
   * All virtio devices: queue notifications the transports took (ioeventfd wake-ups coalesce kicks
   * that come before the VMM wakes; the rest are MMIO exits), the ioeventfd wake-ups alone, and
   * interrupts sent to the guest (MSI-X messages, INTx / virtio-mmio line assertions).
   */
  virtio: { doorbell_wakeups: number; notifications: number; interrupts: number };
}

/** How a VM ended, without the console tail or the Error object (they stay with the VMM). */
export interface VmExitSummary {
  reason: MicroVmExitReason;
  status: number;
  message: string;
}

export interface VmControl {
  /** Every vCPU out of KVM_RUN and parked; resolves once they are. */
  pause(): Promise<void>;
  resume(): Promise<void>;
  /** Press Ctrl-Alt-Del on the guest's i8042 keyboard; false when the keyboard could not take it. */
  sendCtrlAltDel(): Promise<boolean>;
  /** Put a new image behind drive `driveId` and tell the guest its capacity changed. */
  updateDrive(driveId: string, pathOnHost: string): Promise<void>;
  metrics(): Promise<VmMetrics>;
  /** Stop the VM from the host; wait() then resolves with reason 'stopped'. */
  stop(detail?: string): void;
  /** Resolves once the VM has ended, however it ended; never rejects. */
  wait(): Promise<VmExitSummary>;
}
