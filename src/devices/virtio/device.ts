/**
 * The contract between a virtio device model (rng, blk, net...) and a transport (virtio-pci or
 * virtio-mmio, both built on transport-core.ts): the transport owns registers, feature
 * negotiation, the status state machine and the queues' addresses; the device owns its configuration space and what a request means.
 *
 * Lifecycle: the transport calls activate() once the driver sets DRIVER_OK (virtio 1.2 §3.1.1
 * step 8), processQueue(i) whenever queue i is notified, and reset() when the driver writes 0 to
 * the status register (§2.1, §4.1.4.3). A device that finds a request it cannot honour calls
 * activation.fail(reason): the transport sets DEVICE_NEEDS_RESET (§2.1.2) and stops calling it.
 */
import type { GuestMemory } from '../../memory/guest-memory.js';
import type { SplitQueue } from './queue.js';

// Device status bits (virtio 1.2 §2.1).
export const VIRTIO_STATUS_ACKNOWLEDGE = 1;
export const VIRTIO_STATUS_DRIVER = 2;
export const VIRTIO_STATUS_DRIVER_OK = 4;
export const VIRTIO_STATUS_FEATURES_OK = 8;
export const VIRTIO_STATUS_DEVICE_NEEDS_RESET = 64;
export const VIRTIO_STATUS_FAILED = 128;

// Reserved feature bits (virtio 1.2 §6).
export const VIRTIO_F_INDIRECT_DESC = 28;
export const VIRTIO_F_EVENT_IDX = 29;
export const VIRTIO_F_VERSION_1 = 32;
export const VIRTIO_F_ACCESS_PLATFORM = 33;
export const VIRTIO_F_RING_PACKED = 34;
export const VIRTIO_F_IN_ORDER = 35;
export const VIRTIO_F_NOTIFICATION_DATA = 38;
export const VIRTIO_F_RING_RESET = 40;

/** The feature mask for one bit number. */
export function featureBit(bit: number): bigint {
  return 1n << BigInt(bit);
}

/** Whether `features` has bit `bit` set. */
export function hasFeature(features: bigint, bit: number): boolean {
  return (features & featureBit(bit)) !== 0n;
}

/**
 * Features every tsvmm device offers on top of its own: the modern interface (VERSION_1, which
 * a device MUST offer, virtio 1.2 §6.2), event-index notification suppression and indirect
 * descriptors (both implemented by queue.ts).
 */
export const VIRTIO_TRANSPORT_FEATURES =
  featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_F_EVENT_IDX) | featureBit(VIRTIO_F_INDIRECT_DESC);

// Device IDs (virtio 1.2 §5, "Device Types").
export const VIRTIO_ID_NET = 1;
export const VIRTIO_ID_BLOCK = 2;
export const VIRTIO_ID_CONSOLE = 3;
export const VIRTIO_ID_ENTROPY = 4;
export const VIRTIO_ID_BALLOON = 5;
export const VIRTIO_ID_VSOCK = 19;

/** How a device raises interrupts; the transport picks MSI-X vectors or INTx and ISR bits. */
export interface VirtioInterrupt {
  /** A used buffer notification for queue `queueIndex` (§2.3). */
  signalQueue(queueIndex: number): void;
  /** A configuration change notification (§2.3); also bumps config_generation. */
  signalConfigChange(): void;
}

/** Everything a device needs once the driver is ready. */
export interface VirtioActivation {
  readonly memory: GuestMemory;
  /** One queue per entry of queueMaxSizes; a queue the driver did not enable is not `ready`. */
  readonly queues: readonly SplitQueue[];
  /** The negotiated features. */
  readonly features: bigint;
  readonly interrupt: VirtioInterrupt;
  /**
   * Send queue `queueIndex`'s used buffer notification if the driver wants one for the buffers
   * used since the last check (SplitQueue.needsNotification: EVENT_IDX's used_event, or
   * VIRTQ_AVAIL_F_NO_INTERRUPT, §2.7.7). What a device calls after returning buffers;
   * interrupt.signalQueue notifies unconditionally.
   */
  notifyIfNeeded(queueIndex: number): void;
  /** Report a driver error the device cannot recover from: the transport sets DEVICE_NEEDS_RESET. */
  fail(reason: string): void;
}

export interface VirtioDevice {
  /** Device ID (virtio 1.2 §5). */
  readonly deviceType: number;
  /** Short name for messages ("virtio-rng"). */
  readonly name: string;
  /** Device-specific feature bits offered; the transport adds VIRTIO_TRANSPORT_FEATURES. */
  readonly deviceFeatures: bigint;
  /** Maximum size of each queue (powers of two up to 32768); the queue count is the length. */
  readonly queueMaxSizes: readonly number[];
  /** Bytes of device-specific configuration space (0 for none). */
  readonly configSize: number;
  /** Read device configuration; the transport checked that [offset, offset + data.length) is inside configSize. */
  readConfig(offset: number, data: Uint8Array): void;
  /** Write device configuration (same guarantee). */
  writeConfig(offset: number, data: Uint8Array): void;
  /** The driver set DRIVER_OK. */
  activate(activation: VirtioActivation): void;
  /** The driver notified queue `index` (only called between activate() and reset()). */
  processQueue(index: number): void;
  /** The driver reset the device: drop the activation and any state derived from it. */
  reset(): void;
  /**
   * processQueue queues no promise continuation and no process.nextTick callback (timers,
   * setImmediate and I/O callbacks are fine), so the VMM's held wait (EventFdPoller, WatchOptions)
   * may run it without going back to the event loop. Absent: false.
   */
  readonly holdSafe?: boolean;
}
