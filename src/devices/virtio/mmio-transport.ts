/**
 * The virtio-mmio transport (virtio 1.2 §4.2, "Virtio Over MMIO"), modern register layout only
 * (Version 2; the legacy page-based layout of §4.2.4 is not provided): a 0x200-byte window of
 * 32-bit control registers followed by the device's configuration space, and one interrupt line.
 * It exposes a VirtioDevice through the same contract as pci-transport.ts: the status state
 * machine, feature negotiation, activation, DEVICE_NEEDS_RESET and reset are VirtioTransportCore's
 * (transport-core.ts); this file holds the register layout and the interrupt line.
 *
 * The VMM inserts the transport on the MMIO Bus at some base (it is a BusDevice), tells the guest
 * where it is (the kernel command line's virtio_mmio.device=512@<base>:<irq>, or a device tree
 * node, §4.2.1), and may put one ioeventfd per queue on the QueueNotify register: Linux's
 * vm_notify kicks queue i with a 32-bit write of i there (§4.2.3.3; VIRTIO_F_NOTIFICATION_DATA is
 * not offered), so the ioeventfd for queue i is (base + VIRTIO_MMIO_QUEUE_NOTIFY, length 4,
 * datamatch i) and its handler calls notifyQueue(i). queueDoorbells(base) lists them. A kick the
 * ioeventfd does not match still arrives here as an MMIO write and notifies the same queue.
 *
 * Register accesses. The driver MUST use 32-bit wide, 32-bit aligned accesses for every register
 * below 0x100 (§4.2.2.2). Anything else is a driver bug or an attack: such reads return 0 and such
 * writes are ignored. Reads of write-only registers return 0 (QEMU does the same) and writes to
 * read-only ones are ignored (§4.2.2.2 forbids both to the driver). The device configuration
 * space at 0x100 takes 1-, 2-, 4- and 8-byte accesses wholly inside the device's configSize
 * (§4.2.2: "accessed with byte alignment"); outside it, reads return 0 and writes are ignored.
 *
 * Interrupts (§4.2.3.4). One line, level-triggered: asserted while InterruptStatus is non-zero
 * (bit 0 used buffer notification, bit 1 configuration change, §4.2.2) and deasserted once the
 * driver acknowledged every bit through InterruptACK. The line is only driven when its level
 * changes, so a busy queue costs no interrupt-controller call per used buffer.
 *
 * Not provided: shared memory regions (SHMLenLow/High and SHMBaseLow/High read all-ones, "a
 * non-existent region", §4.2.2), per-queue reset (VIRTIO_F_RING_RESET is not offered, so
 * QueueReset reads 0 and ignores writes), notification data, packed rings.
 *
 * Status. A non-zero write to Status adds bits, it never clears them; only writing 0 does, by
 * resetting the device (§4.2.2: "Writing non-zero values to this register sets the status
 * flags"; §2.1.1: the driver must not clear a status bit). See transport-core.ts.
 *
 * Guest input is untrusted: every register value is range-checked before use, queue layouts are
 * checked by SplitQueue.activate() at DRIVER_OK, and an exception from the device model becomes
 * DEVICE_NEEDS_RESET (§2.1.2) instead of leaving read()/write().
 */
import type { BusDevice } from '../bus.js';
import type { IrqLine } from '../irq.js';
import { VIRTIO_STATUS_DRIVER_OK, type VirtioDevice } from './device.js';
import type { SplitQueue } from './queue.js';
import { VirtioTransportCore, type VirtioTransportOptions } from './transport-core.js';

/** Size of the register window: the conventional 512 bytes of the §4.2.1 example and of Linux's virtio_mmio.device=512@... */
export const VIRTIO_MMIO_SIZE = 0x200;

// Register offsets (virtio 1.2 §4.2.2, table "MMIO Device Register Layout"; names as Linux's
// include/uapi/linux/virtio_mmio.h). R = read-only, W = write-only, RW = both.
/** R: the magic value "virt". */
export const VIRTIO_MMIO_MAGIC_VALUE = 0x000;
/** R: 2 for the modern layout. */
export const VIRTIO_MMIO_VERSION = 0x004;
/** R: virtio device type (§5); 0 would mean "placeholder, no device". */
export const VIRTIO_MMIO_DEVICE_ID = 0x008;
/** R: subsystem vendor ID. */
export const VIRTIO_MMIO_VENDOR_ID = 0x00c;
/** R: 32 device feature bits, word chosen by DeviceFeaturesSel. */
export const VIRTIO_MMIO_DEVICE_FEATURES = 0x010;
/** W: selects the device feature word. */
export const VIRTIO_MMIO_DEVICE_FEATURES_SEL = 0x014;
/** W: 32 driver feature bits, word chosen by DriverFeaturesSel. */
export const VIRTIO_MMIO_DRIVER_FEATURES = 0x020;
/** W: selects the driver feature word. */
export const VIRTIO_MMIO_DRIVER_FEATURES_SEL = 0x024;
/** W: selects the queue the Queue* registers apply to. */
export const VIRTIO_MMIO_QUEUE_SEL = 0x030;
/** R: maximum size of the selected queue, 0 if it does not exist. */
export const VIRTIO_MMIO_QUEUE_NUM_MAX = 0x034;
/** W: size the driver chose for the selected queue. */
export const VIRTIO_MMIO_QUEUE_NUM = 0x038;
/** RW: the selected queue is ready (reads back the last value written). */
export const VIRTIO_MMIO_QUEUE_READY = 0x044;
/** W: available buffer notification; the value is the queue index (§4.2.3.3). */
export const VIRTIO_MMIO_QUEUE_NOTIFY = 0x050;
/** R: pending interrupt causes (VIRTIO_MMIO_INT_*). */
export const VIRTIO_MMIO_INTERRUPT_STATUS = 0x060;
/** W: clears the InterruptStatus bits written. */
export const VIRTIO_MMIO_INTERRUPT_ACK = 0x064;
/** RW: device status (§2.1); writing 0 resets the device. */
export const VIRTIO_MMIO_STATUS = 0x070;
/** W: descriptor area address, low and high 32 bits. */
export const VIRTIO_MMIO_QUEUE_DESC_LOW = 0x080;
export const VIRTIO_MMIO_QUEUE_DESC_HIGH = 0x084;
/** W: driver area (available ring) address, low and high 32 bits. */
export const VIRTIO_MMIO_QUEUE_DRIVER_LOW = 0x090;
export const VIRTIO_MMIO_QUEUE_DRIVER_HIGH = 0x094;
/** W: device area (used ring) address, low and high 32 bits. */
export const VIRTIO_MMIO_QUEUE_DEVICE_LOW = 0x0a0;
export const VIRTIO_MMIO_QUEUE_DEVICE_HIGH = 0x0a4;
/** W: selects a shared memory region (none exist here). */
export const VIRTIO_MMIO_SHM_SEL = 0x0ac;
/** R: shared memory region length, low and high 32 bits. */
export const VIRTIO_MMIO_SHM_LEN_LOW = 0x0b0;
export const VIRTIO_MMIO_SHM_LEN_HIGH = 0x0b4;
/** R: shared memory region base address, low and high 32 bits. */
export const VIRTIO_MMIO_SHM_BASE_LOW = 0x0b8;
export const VIRTIO_MMIO_SHM_BASE_HIGH = 0x0bc;
/** RW: per-queue reset, meaningful only with VIRTIO_F_RING_RESET (not offered: reads 0). */
export const VIRTIO_MMIO_QUEUE_RESET = 0x0c0;
/** R: configuration atomicity value, changed on every configuration change. */
export const VIRTIO_MMIO_CONFIG_GENERATION = 0x0fc;
/** RW: start of the device-specific configuration space. */
export const VIRTIO_MMIO_CONFIG = 0x100;

// Register values (§4.2.2).
/** MagicValue: "virt" read as a little-endian 32-bit value. */
export const VIRTIO_MMIO_MAGIC = 0x74726976;
/** Version of the modern (non-legacy) register layout; legacy devices report 1. */
export const VIRTIO_MMIO_MODERN_VERSION = 2;
/**
 * VendorID: 0x554d4551, "QEMU" as a little-endian 32-bit value, what QEMU's virtio-mmio reports.
 * The spec keeps no registry of MMIO vendor IDs and Linux's virtio_mmio only copies the value into
 * the device's modalias (no driver matches on it), so tsvmm reuses the one value guests have
 * always seen on virtio-mmio rather than invent one of its own.
 */
export const VIRTIO_MMIO_VENDOR = 0x554d4551;
/** InterruptStatus bit: used buffer notification (§4.2.2). */
export const VIRTIO_MMIO_INT_VRING = 1;
/** InterruptStatus bit: configuration change notification (§4.2.2). */
export const VIRTIO_MMIO_INT_CONFIG = 2;
/** Largest configuration space that fits the window after VIRTIO_MMIO_CONFIG. */
export const VIRTIO_MMIO_MAX_CONFIG_SIZE = VIRTIO_MMIO_SIZE - VIRTIO_MMIO_CONFIG;
/** Width of the driver's queue notification: a 32-bit register write (§4.2.2.2, Linux's vm_notify writel). */
export const VIRTIO_MMIO_NOTIFY_WRITE_BYTES = 4;
/** Queue indices are 16-bit (§4.2.3.3: "the 16-bit virtqueue index"). */
export const VIRTIO_MMIO_MAX_QUEUES = 0x10000;

/** Every register is 32 bits wide (§4.2.2.2). */
const REGISTER_BYTES = 4;
const FOUR_GIB = 2 ** 32;
/** Status is a byte (§2.1); the upper 24 bits of the 32-bit register are ignored. */
const STATUS_MASK = 0xff;
/** Bits InterruptStatus can hold. */
const INT_MASK = VIRTIO_MMIO_INT_VRING | VIRTIO_MMIO_INT_CONFIG;

// Per-queue ring address words kept by the transport: the guest writes each 64-bit address as two
// independent 32-bit halves, in any order, so both halves are kept exactly and combined on write.
const ADDRESS_WORDS_PER_QUEUE = 6;
const DESC_WORD = 0;
const DRIVER_WORD = 2;
const DEVICE_WORD = 4;

export interface VirtioMmioOptions extends VirtioTransportOptions {
  /**
   * The device's interrupt line, level-triggered: asserted while InterruptStatus is non-zero,
   * deasserted when the driver acknowledged every bit.
   */
  readonly irq: IrqLine;
}

/** One queue's notification doorbell: an ioeventfd on `addr`, `len` bytes, matching `datamatch`. */
export interface VirtioMmioDoorbell {
  readonly queue: number;
  readonly addr: number;
  readonly len: number;
  readonly datamatch: number;
}

export class VirtioMmioDevice extends VirtioTransportCore implements BusDevice {
  private readonly irq: IrqLine;
  /** Low/high words of each queue's three ring addresses, as the driver wrote them. */
  private readonly addressWords: Uint32Array;
  private interruptStatus = 0;
  private irqLevel = false;

  constructor(device: VirtioDevice, options: VirtioMmioOptions) {
    const queueCount = device.queueMaxSizes.length;
    if (queueCount < 1 || queueCount > VIRTIO_MMIO_MAX_QUEUES) {
      throw new RangeError(`${device.name}: ${queueCount} queues; the transport supports 1..${VIRTIO_MMIO_MAX_QUEUES}`);
    }
    if (!Number.isInteger(device.configSize) || device.configSize < 0 || device.configSize > VIRTIO_MMIO_MAX_CONFIG_SIZE) {
      throw new RangeError(`${device.name}: configuration space of ${device.configSize} bytes does not fit the ${VIRTIO_MMIO_MAX_CONFIG_SIZE} bytes after 0x${VIRTIO_MMIO_CONFIG.toString(16)}`);
    }
    super(device, options);
    this.irq = options.irq;
    this.addressWords = new Uint32Array(queueCount * ADDRESS_WORDS_PER_QUEUE);
  }

  /** The InterruptStatus register: pending VIRTIO_MMIO_INT_* bits. */
  get pendingInterrupts(): number {
    return this.interruptStatus;
  }

  /**
   * Guest physical address of the QueueNotify register when the window is at `base`. Every queue
   * shares it; the value written tells them apart.
   */
  queueNotifyAddress(base: number): number {
    return base + VIRTIO_MMIO_QUEUE_NOTIFY;
  }

  /**
   * The ioeventfds the VMM can register when the window is at `base`: one per queue on the
   * QueueNotify register, a 4-byte write whose value is the queue index. Each one's handler
   * calls notifyQueue(queue).
   */
  queueDoorbells(base: number): readonly VirtioMmioDoorbell[] {
    const addr = this.queueNotifyAddress(base);
    return this.queues.map((_q, queue) => ({ queue, addr, len: VIRTIO_MMIO_NOTIFY_WRITE_BYTES, datamatch: queue }));
  }

  // ---- BusDevice

  read(offset: number, data: Uint8Array): void {
    data.fill(0);
    if (offset >= VIRTIO_MMIO_CONFIG) {
      const within = offset - VIRTIO_MMIO_CONFIG;
      if (this.configAccessValid(within, data.length)) this.guarded('reading its configuration', () => this.device.readConfig(within, data));
      return;
    }
    if (!registerAccess(offset, data.length)) return; // §4.2.2.2: only aligned 32-bit accesses
    const value = this.readRegister(offset);
    data[0] = value & 0xff;
    data[1] = (value >>> 8) & 0xff;
    data[2] = (value >>> 16) & 0xff;
    data[3] = (value >>> 24) & 0xff;
  }

  write(offset: number, data: Uint8Array): void {
    if (offset >= VIRTIO_MMIO_CONFIG) {
      const within = offset - VIRTIO_MMIO_CONFIG;
      if (this.configAccessValid(within, data.length)) this.guarded('writing its configuration', () => this.device.writeConfig(within, data));
      return;
    }
    if (!registerAccess(offset, data.length)) return;
    this.writeRegister(offset, (data[0]! | (data[1]! << 8) | (data[2]! << 16) | (data[3]! << 24)) >>> 0);
  }

  /** A configuration access the device can serve: a bus width, wholly inside configSize. */
  private configAccessValid(within: number, width: number): boolean {
    return (width === 1 || width === 2 || width === 4 || width === 8) && Number.isInteger(within) && within >= 0 && within + width <= this.device.configSize;
  }

  // ---- control registers (§4.2.2)

  private readRegister(offset: number): number {
    const queue = this.queues[this.queueSelect];
    switch (offset) {
      case VIRTIO_MMIO_MAGIC_VALUE:
        return VIRTIO_MMIO_MAGIC;
      case VIRTIO_MMIO_VERSION:
        return VIRTIO_MMIO_MODERN_VERSION;
      case VIRTIO_MMIO_DEVICE_ID:
        return this.device.deviceType;
      case VIRTIO_MMIO_VENDOR_ID:
        return VIRTIO_MMIO_VENDOR;
      case VIRTIO_MMIO_DEVICE_FEATURES:
        return this.deviceFeatureWord();
      case VIRTIO_MMIO_QUEUE_NUM_MAX:
        // "zero (0x0) if the queue is not available" (§4.2.2).
        return queue === undefined ? 0 : queue.maxSize;
      case VIRTIO_MMIO_QUEUE_READY:
        return queue?.enabled ? 1 : 0;
      case VIRTIO_MMIO_INTERRUPT_STATUS:
        return this.interruptStatus;
      case VIRTIO_MMIO_STATUS:
        return this.status;
      case VIRTIO_MMIO_SHM_LEN_LOW:
      case VIRTIO_MMIO_SHM_LEN_HIGH:
      case VIRTIO_MMIO_SHM_BASE_LOW:
      case VIRTIO_MMIO_SHM_BASE_HIGH:
        // No shared memory regions: every SHMSel names "a non-existent region", whose length is
        // -1 and base 0xffffffffffffffff (§4.2.2); Linux's vm_get_shm_region checks the length.
        return 0xffffffff;
      case VIRTIO_MMIO_QUEUE_RESET:
        return 0; // VIRTIO_F_RING_RESET is not offered
      case VIRTIO_MMIO_CONFIG_GENERATION:
        return this.configGeneration;
      default:
        return 0; // write-only registers and holes
    }
  }

  private writeRegister(offset: number, value: number): void {
    const select = this.queueSelect;
    const queue = this.queues[select];
    switch (offset) {
      case VIRTIO_MMIO_DEVICE_FEATURES_SEL:
        this.deviceFeatureSelect = value;
        return;
      case VIRTIO_MMIO_DRIVER_FEATURES:
        this.writeDriverFeatures(value);
        return;
      case VIRTIO_MMIO_DRIVER_FEATURES_SEL:
        this.driverFeatureSelect = value;
        return;
      case VIRTIO_MMIO_QUEUE_SEL:
        this.queueSelect = value;
        return;
      case VIRTIO_MMIO_QUEUE_NUM:
        // Checked (power of two, at most QueueNumMax) by SplitQueue.activate() at DRIVER_OK.
        if (queue !== undefined && this.queueWritable(queue)) queue.size = value;
        return;
      case VIRTIO_MMIO_QUEUE_READY:
        if (queue !== undefined) this.writeQueueReady(queue, select, value);
        return;
      case VIRTIO_MMIO_QUEUE_NOTIFY:
        // Without VIRTIO_F_NOTIFICATION_DATA the value is the queue index (§4.2.3.3).
        this.notifyQueue(value);
        return;
      case VIRTIO_MMIO_INTERRUPT_ACK:
        this.interruptStatus &= ~value;
        this.updateIrq();
        return;
      case VIRTIO_MMIO_STATUS:
        this.writeStatus(value & STATUS_MASK);
        return;
      case VIRTIO_MMIO_QUEUE_DESC_LOW:
      case VIRTIO_MMIO_QUEUE_DESC_HIGH:
      case VIRTIO_MMIO_QUEUE_DRIVER_LOW:
      case VIRTIO_MMIO_QUEUE_DRIVER_HIGH:
      case VIRTIO_MMIO_QUEUE_DEVICE_LOW:
      case VIRTIO_MMIO_QUEUE_DEVICE_HIGH:
        if (queue !== undefined && this.queueWritable(queue)) this.writeQueueAddress(queue, select, offset, value);
        return;
      default:
        // Read-only registers, SHMSel (no regions to select), QueueReset (not offered) and holes.
        return;
    }
  }

  /**
   * QueueReady (§4.2.2). 1 enables the queue; it is activated, with its layout checked, at
   * DRIVER_OK, so the driver may enable queues in any order first. 0 is how the driver stops
   * using a queue (§4.2.2.2: it writes 0 and reads it back): the device must then leave the
   * queue alone (§4.2.2.1), so after DRIVER_OK the queue is reset and no longer served.
   * Enabling a queue after DRIVER_OK needs VIRTIO_F_RING_RESET, which is not offered: ignored.
   */
  private writeQueueReady(queue: SplitQueue, select: number, value: number): void {
    if (value === 1) {
      if (this.queueWritable(queue)) queue.enabled = true;
      return;
    }
    if (value !== 0 || !queue.enabled) return;
    if ((this.status & VIRTIO_STATUS_DRIVER_OK) === 0) {
      queue.enabled = false;
      return;
    }
    queue.reset();
    this.addressWords.fill(0, select * ADDRESS_WORDS_PER_QUEUE, (select + 1) * ADDRESS_WORDS_PER_QUEUE);
  }

  private writeQueueAddress(queue: SplitQueue, select: number, offset: number, value: number): void {
    const words = this.addressWords;
    const field = offset - (offset % 16); // the low register of the pair: 0x80, 0x90 or 0xa0
    const word = field === VIRTIO_MMIO_QUEUE_DESC_LOW ? DESC_WORD : field === VIRTIO_MMIO_QUEUE_DRIVER_LOW ? DRIVER_WORD : DEVICE_WORD;
    const at = select * ADDRESS_WORDS_PER_QUEUE + word;
    words[at + (offset === field ? 0 : 1)] = value;
    // Exact up to 2^53; anything above is not guest RAM, and SplitQueue.activate() refuses a
    // non-safe-integer address.
    const address = words[at + 1]! * FOUR_GIB + words[at]!;
    if (word === DESC_WORD) queue.descTableAddress = address;
    else if (word === DRIVER_WORD) queue.availRingAddress = address;
    else queue.usedRingAddress = address;
  }

  // ---- what VirtioTransportCore asks of a transport

  /**
   * Upon reset "the device MUST clear all bits in InterruptStatus and ready bits in the QueueReady
   * register for all queues" (§4.2.2.1; the core reset the queues), so the line drops; the ring
   * address words go with the queues.
   */
  protected override resetTransport(): void {
    this.addressWords.fill(0);
    this.interruptStatus = 0;
    this.updateIrq();
  }

  // ---- interrupts (§4.2.2 InterruptStatus, §4.2.3.4)

  protected override deliverQueueInterrupt(_index: number): void {
    // One bit for every queue: the driver checks all active queues (§4.2.3.4).
    this.interruptStatus |= VIRTIO_MMIO_INT_VRING;
    this.updateIrq();
  }

  protected override deliverConfigInterrupt(): void {
    this.interruptStatus |= VIRTIO_MMIO_INT_CONFIG;
    this.updateIrq();
  }

  /** The line follows InterruptStatus; it is driven only when its level changes. */
  private updateIrq(): void {
    this.interruptStatus &= INT_MASK;
    const level = this.interruptStatus !== 0;
    if (level === this.irqLevel) return;
    this.irqLevel = level;
    this.irq.setLevel(level);
  }
}

/** A control register access the transport honours: 32 bits wide and 32-bit aligned (§4.2.2.2). */
function registerAccess(offset: number, width: number): boolean {
  return width === REGISTER_BYTES && Number.isInteger(offset) && offset >= 0 && offset % REGISTER_BYTES === 0;
}
