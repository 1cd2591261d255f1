/**
 * What every virtio transport does the same way, whatever its registers look like: the device
 * status state machine (virtio 1.2 §2.1, §3.1.1), feature negotiation, the queues' lifecycle,
 * activation at DRIVER_OK, DEVICE_NEEDS_RESET on any error (§2.1.2) and device reset.
 * VirtioTransportCore is the base of virtio-mmio (mmio-transport.ts) and modern virtio-pci
 * (pci-transport.ts); each of them keeps only its register layout and its way of delivering
 * interrupts, through the three abstract hooks below.
 *
 * Status rule. The driver only ever adds bits: a non-zero write is ORed into the status, and
 * only writing 0 clears it, by resetting the device. §2.1.1 forbids the driver to clear a bit
 * ("The driver MUST NOT clear a device status bit"); §4.2.2 describes the virtio-mmio Status
 * register as "Writing non-zero values to this register sets the status flags" and "Writing zero
 * (0x0) to this register triggers a device reset", and §4.1.4.3 virtio-pci's device_status as
 * "Writing 0 into this field resets the device". Keeping the bits means a driver that tries to
 * clear DRIVER_OK and set it again cannot get the device activated a second time over queues it
 * is still serving, with no separate "already active" flag to keep in step. Linux's
 * virtio_add_status always writes the old status ORed with the new bit, so it sees no difference.
 *
 * Guest input is untrusted: an exception from the device model, reached through any path here,
 * becomes DEVICE_NEEDS_RESET instead of leaving the transport.
 */
import type { GuestMemory } from '../../memory/guest-memory.js';
import {
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_VERSION_1,
  VIRTIO_STATUS_ACKNOWLEDGE,
  VIRTIO_STATUS_DEVICE_NEEDS_RESET,
  VIRTIO_STATUS_DRIVER,
  VIRTIO_STATUS_DRIVER_OK,
  VIRTIO_STATUS_FEATURES_OK,
  VIRTIO_TRANSPORT_FEATURES,
  hasFeature,
  type VirtioActivation,
  type VirtioDevice,
  type VirtioInterrupt,
} from './device.js';
import { SplitQueue } from './queue.js';
import { deferToLoopTurn } from '../end-of-batch.js';

/**
 * Feature words the transports hold: bits 0–63. §2.2 allocates bits up to 127 and beyond, but no
 * device here offers one above 63, so later words read as 0 and ignore the driver's writes.
 */
const VIRTIO_FEATURE_WORDS = 2;
/** Bits in one feature word: both transports expose the 64 feature bits as 32-bit words (§4.1.4.3, §4.2.2). */
const FEATURE_WORD_BITS = 32;
const FEATURE_WORD_MASK = 0xffffffffn;
/** The status bits that mean "running": DRIVER_OK set and DEVICE_NEEDS_RESET clear. */
const RUNNING_MASK = VIRTIO_STATUS_DRIVER_OK | VIRTIO_STATUS_DEVICE_NEEDS_RESET;

/** What every transport is given. */
export interface VirtioTransportOptions {
  readonly memory: GuestMemory;
  /** The device entered DEVICE_NEEDS_RESET, or its reset threw, with the reason (for the VMM's log). */
  readonly onError?: (reason: string) => void;
}

export abstract class VirtioTransportCore {
  readonly name: string;
  readonly queues: readonly SplitQueue[];
  /** Why the device last entered DEVICE_NEEDS_RESET (cleared by reset). */
  lastError: string | undefined;
  /** Queue notifications received (register writes or ioeventfd). */
  notifications = 0;

  protected readonly memory: GuestMemory;
  /** The device status byte (§2.1); see the status rule in the file comment. */
  protected status = 0;
  protected deviceFeatureSelect = 0;
  protected driverFeatureSelect = 0;
  /** The configuration generation (§2.5): bumped on every configuration change, never reset. The PCI field is its low byte. */
  protected configGeneration = 0;
  /** The queue the transport's queue registers currently apply to (may name no queue). */
  protected queueSelect = 0;

  private readonly offeredFeatures: bigint;
  private driverFeatures = 0n;
  private readonly reportError: ((reason: string) => void) | undefined;
  /** Handed to the device at activation: its interrupts go out the transport's way. */
  private readonly interrupt: VirtioInterrupt;
  /** Per queue: a pass asked for by SplitQueue's budget is waiting for the loop's next turn (deferToLoopTurn). */
  private readonly passScheduled: boolean[];
  /** Bumped by activation and reset: a pass scheduled before either is dropped. */
  private queueEpoch = 0;

  protected constructor(
    readonly device: VirtioDevice,
    options: VirtioTransportOptions,
  ) {
    this.name = device.name;
    this.memory = options.memory;
    this.reportError = options.onError;
    this.offeredFeatures = device.deviceFeatures | VIRTIO_TRANSPORT_FEATURES;
    this.queues = device.queueMaxSizes.map(
      (max, i) => new SplitQueue(i, max, (_q, reason) => this.fail(reason), (q) => this.scheduleQueuePass(q.index)),
    );
    this.passScheduled = device.queueMaxSizes.map(() => false);
    this.interrupt = {
      signalQueue: (i) => this.deliverQueueInterrupt(i),
      signalConfigChange: () => this.signalConfigChange(),
    };
  }

  // ---- what each transport provides

  /** Deliver a used buffer notification for queue `index` (§2.3): an interrupt status bit, a vector... */
  protected abstract deliverQueueInterrupt(index: number): void;
  /** Deliver a configuration change notification (§2.3); configGeneration has already moved. */
  protected abstract deliverConfigInterrupt(): void;
  /** The device was reset: clear the transport's own registers and interrupt state. */
  protected abstract resetTransport(): void;
  /** Whether the device may touch guest memory now (PCI: Bus Master Enable); queues are not served otherwise. */
  protected memoryAccessAllowed(): boolean {
    return true;
  }

  // ---- public view

  /** The device status byte (§2.1). */
  get deviceStatus(): number {
    return this.status;
  }

  /** Features the driver accepted (meaningful once FEATURES_OK is set). */
  get negotiatedFeatures(): bigint {
    return this.driverFeatures;
  }

  /** The features this transport offers: the device's plus VIRTIO_TRANSPORT_FEATURES. */
  get features(): bigint {
    return this.offeredFeatures;
  }

  /**
   * The driver notified queue `index` (a register write, or the VMM's ioeventfd). Ignored until
   * DRIVER_OK, after DEVICE_NEEDS_RESET, while the transport forbids memory access, and for a
   * queue that does not exist, is not enabled or is not ready (§4.2.2.1: the device must not
   * access a queue whose QueueReady is 0).
   */
  notifyQueue(index: number): void {
    this.notifications++;
    this.runQueue(index);
  }

  /** One processing pass over queue `index`, with a fresh pop budget (SplitQueue.beginPass). */
  private runQueue(index: number): void {
    if ((this.status & RUNNING_MASK) !== VIRTIO_STATUS_DRIVER_OK || !this.memoryAccessAllowed()) return;
    const queue = Number.isInteger(index) ? this.queues[index] : undefined;
    if (queue === undefined || !queue.enabled || !queue.ready) return;
    queue.beginPass();
    // guarded() inlined: this runs once per doorbell, so no closure and no message string unless it fails.
    try {
      this.device.processQueue(index);
    } catch (e) {
      this.fail(`${this.device.name} failed processing queue ${index}: ${errorMessage(e)}`);
    }
  }

  /**
   * The queue spent its pass budget with chains still available: run another pass once the event
   * loop has had a turn (timers, other devices, the API and the vCPUs' exits go first). At most
   * one is pending per queue; activation or reset in between drops it.
   */
  private scheduleQueuePass(index: number): void {
    if (this.passScheduled[index] === true) return;
    this.passScheduled[index] = true;
    const epoch = this.queueEpoch;
    deferToLoopTurn(() => {
      this.passScheduled[index] = false;
      if (epoch === this.queueEpoch) this.runQueue(index);
    });
  }

  // ---- for the transports' registers

  /** The selected 32 bits of the offered features (DeviceFeatures / device_feature). */
  protected deviceFeatureWord(): number {
    return featureWord(this.offeredFeatures, this.deviceFeatureSelect);
  }

  /** The selected 32 bits of the driver's features, as it wrote them (driver_feature). */
  protected driverFeatureWord(): number {
    return featureWord(this.driverFeatures, this.driverFeatureSelect);
  }

  /** The driver wrote the selected 32 bits of its features. */
  protected writeDriverFeatures(word: number): void {
    // After FEATURES_OK the negotiated set is fixed (§3.1.1 step 5).
    if ((this.status & VIRTIO_STATUS_FEATURES_OK) !== 0 || this.driverFeatureSelect >= VIRTIO_FEATURE_WORDS) return;
    const shift = BigInt(FEATURE_WORD_BITS * this.driverFeatureSelect);
    this.driverFeatures = (this.driverFeatures & ~(FEATURE_WORD_MASK << shift)) | (BigInt(word >>> 0) << shift);
  }

  /**
   * Queue registers can change until the queue is enabled, and never after DRIVER_OK (§4.2.2.2:
   * "When QueueReady is not zero, the driver MUST NOT access QueueNum, QueueDesc..."; §4.1.4.3.2:
   * the driver configures the other queue fields before setting queue_enable).
   */
  protected queueWritable(queue: SplitQueue): boolean {
    return !queue.enabled && (this.status & VIRTIO_STATUS_DRIVER_OK) === 0;
  }

  /** Run device code reached from a guest access; an exception becomes DEVICE_NEEDS_RESET. */
  protected guarded(what: string, action: () => void): void {
    try {
      action();
    } catch (e) {
      // A device model bug must not take the VMM down; the guest sees a device needing reset.
      this.fail(`${this.device.name} failed ${what}: ${errorMessage(e)}`);
    }
  }

  // ---- device status (§2.1, §3.1.1)

  /** The driver wrote the status byte: 0 resets, anything else adds bits (see the file comment). */
  protected writeStatus(value: number): void {
    if (value === 0) {
      this.reset();
      return;
    }
    const old = this.status;
    // DEVICE_NEEDS_RESET is the device's to set; the driver can neither set nor clear it.
    let next = ((value | old) & ~VIRTIO_STATUS_DEVICE_NEEDS_RESET) | (old & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
    const setting = (bit: number): boolean => (next & bit) !== 0 && (old & bit) === 0;
    if (setting(VIRTIO_STATUS_FEATURES_OK) && !this.featuresAcceptable(next)) next &= ~VIRTIO_STATUS_FEATURES_OK;
    const startDriver = setting(VIRTIO_STATUS_DRIVER_OK);
    if (startDriver && (next & VIRTIO_STATUS_FEATURES_OK) === 0) next &= ~VIRTIO_STATUS_DRIVER_OK;
    this.status = next;
    // DRIVER_OK can be set only once per reset, so this runs at most once per reset.
    if (startDriver && (next & RUNNING_MASK) === VIRTIO_STATUS_DRIVER_OK) this.activate();
  }

  /**
   * FEATURES_OK stays clear, which the driver reads back as refusal (§3.1.1 step 6), unless the
   * driver went through ACKNOWLEDGE and DRIVER, accepted only offered features, and accepted
   * VERSION_1 (§6.2: a device MAY fail to operate further if VERSION_1 is not accepted).
   */
  private featuresAcceptable(status: number): boolean {
    const handshake = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER;
    return (
      (status & handshake) === handshake &&
      (this.driverFeatures & ~this.offeredFeatures) === 0n &&
      hasFeature(this.driverFeatures, VIRTIO_F_VERSION_1)
    );
  }

  /**
   * DRIVER_OK (§3.1.1 step 8): check and activate every enabled queue, then the device. Any
   * failure leaves DEVICE_NEEDS_RESET set, so the device is never served half-activated.
   */
  private activate(): void {
    this.queueEpoch++;
    const features = this.driverFeatures;
    const queueFeatures = { eventIdx: hasFeature(features, VIRTIO_F_EVENT_IDX), indirect: hasFeature(features, VIRTIO_F_INDIRECT_DESC) };
    for (const queue of this.queues) {
      if (queue.enabled && !queue.activate(this.memory, queueFeatures)) return; // fail() already ran
    }
    const activation: VirtioActivation = {
      memory: this.memory,
      queues: this.queues,
      features,
      interrupt: this.interrupt,
      notifyIfNeeded: (i) => {
        if (this.queues[i]?.needsNotification() === true) this.deliverQueueInterrupt(i);
      },
      fail: (reason) => this.fail(`${this.device.name}: ${reason}`),
    };
    this.guarded('to activate', () => this.device.activate(activation));
  }

  /** Enter DEVICE_NEEDS_RESET (§2.1.2) and, once DRIVER_OK, tell the driver with a configuration change notification. */
  private fail(reason: string): void {
    if ((this.status & VIRTIO_STATUS_DEVICE_NEEDS_RESET) !== 0) return;
    this.lastError = reason;
    this.status |= VIRTIO_STATUS_DEVICE_NEEDS_RESET;
    this.reportError?.(reason);
    if ((this.status & VIRTIO_STATUS_DRIVER_OK) !== 0) this.signalConfigChange();
  }

  private signalConfigChange(): void {
    this.configGeneration = (this.configGeneration + 1) >>> 0;
    this.deliverConfigInterrupt();
  }

  /**
   * Device reset (§2.1; writing 0 to Status, §4.2.2, or device_status, §4.1.4.3): the device
   * model, every queue, the feature and selector registers and the status, then the transport's
   * own state. ConfigGeneration keeps counting: the configuration did not go back in time.
   */
  private reset(): void {
    this.queueEpoch++;
    try {
      this.device.reset();
    } catch (e) {
      // The device is reset regardless; the failure is only reported, not turned into NEEDS_RESET.
      this.reportError?.(`${this.device.name} failed to reset: ${errorMessage(e)}`);
    }
    for (const queue of this.queues) queue.reset();
    this.deviceFeatureSelect = 0;
    this.driverFeatureSelect = 0;
    this.driverFeatures = 0n;
    this.queueSelect = 0;
    this.status = 0;
    this.lastError = undefined;
    this.resetTransport();
  }
}

/** 32 bits of a feature set, word `select`; 0 past the last word. */
function featureWord(features: bigint, select: number): number {
  return select < VIRTIO_FEATURE_WORDS ? Number((features >> BigInt(FEATURE_WORD_BITS * select)) & FEATURE_WORD_MASK) : 0;
}

function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
