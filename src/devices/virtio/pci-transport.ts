/**
 * The virtio-pci modern transport (virtio 1.2 §4.1): a PCI function that exposes a VirtioDevice
 * through vendor-specific capabilities pointing into one memory BAR, with MSI-X interrupts.
 *
 * Identity (§4.1.2): vendor 0x1AF4, device 0x1040 + device type, revision 1 (non-transitional:
 * no legacy I/O BAR), subsystem vendor 0x1AF4 and subsystem ID 0x40 + device type (§4.1.2.1
 * asks for 0x40 or higher).
 *
 * BAR layout. BAR 0 is a 64-bit, non-prefetchable 32 KiB memory BAR (the ISR read has a side
 * effect, so it must not be prefetchable; the bus places non-prefetchable BARs below 4 GiB):
 *
 *   0x0000  common configuration (struct virtio_pci_common_cfg, 0x3C bytes, §4.1.4.3)
 *   0x1000  ISR status (1 byte, read-to-clear, §4.1.4.5)
 *   0x2000  device-specific configuration (the device's configSize bytes, §4.1.4.6; absent when 0)
 *   0x3000  notifications: queue i at 0x3000 + 4 * i (queue_notify_off = i, notify_off_multiplier
 *           = 4, §4.1.4.4), so each queue has its own address for an ioeventfd
 *   0x4000  MSI-X table (16 bytes per vector)
 *   0x5000  MSI-X pending bit array
 *
 * Each region starts on its own 4 KiB page, so the VMM can later hand pages to KVM separately.
 * MSI-X has one vector per queue plus one for configuration changes, as Linux's vp_find_vqs_msix
 * asks for first. Without MSI-X the function raises INTx (when given a line) with the ISR bits.
 *
 * The status state machine, feature negotiation, activation, DEVICE_NEEDS_RESET and reset are
 * VirtioTransportCore's (transport-core.ts), shared with virtio-mmio; this file holds the PCI
 * identity, the capabilities and BAR layout, and MSI-X / INTx delivery.
 *
 * Not provided: the VIRTIO_PCI_CAP_PCI_CFG window (Linux does not use it), legacy registers,
 * packed rings, per-queue reset (VIRTIO_F_RING_RESET is not offered, so queue_reset reads 0).
 */
import type { IrqLine } from '../irq.js';
import {
  PCI_COMMAND,
  PCI_INTERRUPT_PIN_INTA,
  PCI_INTERRUPT_PIN_NONE,
  PCI_STATUS_INTERRUPT,
  PciConfigSpace,
} from '../pci/config-space.js';
import { MsixCapability, type MsiSink } from '../pci/msix.js';
import type { PciFunction } from '../pci/pci-function.js';
import { VIRTIO_ID_BALLOON, VIRTIO_ID_BLOCK, VIRTIO_ID_CONSOLE, VIRTIO_ID_NET, type VirtioDevice } from './device.js';
import type { SplitQueue } from './queue.js';
import { VirtioTransportCore, type VirtioTransportOptions } from './transport-core.js';

// PCI identity (virtio 1.2 §4.1.2).
export const VIRTIO_PCI_VENDOR_ID = 0x1af4;
export const VIRTIO_PCI_DEVICE_ID_BASE = 0x1040;
export const VIRTIO_PCI_REVISION_ID = 1;
export const VIRTIO_PCI_SUBSYSTEM_ID_BASE = 0x40;

/** PCI class codes by device type (PCI Code and ID Assignment spec; the values QEMU reports). */
const CLASS_CODE_BY_DEVICE_TYPE: ReadonlyMap<number, number> = new Map([
  [VIRTIO_ID_NET, 0x020000], // network controller, Ethernet
  [VIRTIO_ID_BLOCK, 0x010000], // mass storage, SCSI
  [VIRTIO_ID_CONSOLE, 0x078000], // communication controller, other
  [VIRTIO_ID_BALLOON, 0x05ff00], // memory controller, other
]);
/** "Device does not fit in any defined class" (PCI Code and ID Assignment spec, base class 0xFF). */
const CLASS_CODE_OTHER = 0xff0000;

// Vendor-specific capabilities (§4.1.4): struct virtio_pci_cap.
/** PCI capability ID "Vendor Specific" (PCI Code and ID Assignment spec). */
export const PCI_CAP_ID_VENDOR = 0x09;
export const VIRTIO_PCI_CAP_COMMON_CFG = 1;
export const VIRTIO_PCI_CAP_NOTIFY_CFG = 2;
export const VIRTIO_PCI_CAP_ISR_CFG = 3;
export const VIRTIO_PCI_CAP_DEVICE_CFG = 4;
const CAP_LEN = 2;
const CAP_CFG_TYPE = 3;
const CAP_BAR = 4;
const CAP_ID = 5;
const CAP_OFFSET = 8;
const CAP_LENGTH = 12;
const CAP_NOTIFY_OFF_MULTIPLIER = 16;
const VIRTIO_PCI_CAP_SIZE = 16;
const VIRTIO_PCI_NOTIFY_CAP_SIZE = 20;

// BAR 0 layout (see the file comment).
export const VIRTIO_PCI_BAR = 0;
export const VIRTIO_PCI_BAR_SIZE = 0x8000;
export const COMMON_CFG_OFFSET = 0x0000;
export const ISR_OFFSET = 0x1000;
export const DEVICE_CFG_OFFSET = 0x2000;
export const NOTIFY_OFFSET = 0x3000;
export const MSIX_TABLE_OFFSET = 0x4000;
export const MSIX_PBA_OFFSET = 0x5000;
const REGION_SIZE = 0x1000;
/** Bytes between two queues' notification addresses (§4.1.4.4: cap.notify_off_multiplier). */
export const NOTIFY_OFF_MULTIPLIER = 4;
/** Queues are limited by the MSI-X table page: one vector each plus the config vector. */
export const MAX_QUEUES = REGION_SIZE / 16 - 1;

// struct virtio_pci_common_cfg (§4.1.4.3).
export const COMMON_DEVICE_FEATURE_SELECT = 0x00;
export const COMMON_DEVICE_FEATURE = 0x04;
export const COMMON_DRIVER_FEATURE_SELECT = 0x08;
export const COMMON_DRIVER_FEATURE = 0x0c;
export const COMMON_CONFIG_MSIX_VECTOR = 0x10;
export const COMMON_NUM_QUEUES = 0x12;
export const COMMON_DEVICE_STATUS = 0x14;
export const COMMON_CONFIG_GENERATION = 0x15;
export const COMMON_QUEUE_SELECT = 0x16;
export const COMMON_QUEUE_SIZE = 0x18;
export const COMMON_QUEUE_MSIX_VECTOR = 0x1a;
export const COMMON_QUEUE_ENABLE = 0x1c;
export const COMMON_QUEUE_NOTIFY_OFF = 0x1e;
export const COMMON_QUEUE_DESC = 0x20;
export const COMMON_QUEUE_DRIVER = 0x28;
export const COMMON_QUEUE_DEVICE = 0x30;
export const COMMON_QUEUE_NOTIFY_DATA = 0x38;
export const COMMON_QUEUE_RESET = 0x3a;
export const COMMON_CFG_SIZE = 0x3c;

/** "No MSI-X vector" in config_msix_vector / queue_msix_vector (§4.1.4.3, §4.1.5.1.2). */
export const VIRTIO_MSI_NO_VECTOR = 0xffff;
// ISR status bits (§4.1.4.5).
export const VIRTIO_PCI_ISR_QUEUE = 1;
export const VIRTIO_PCI_ISR_CONFIG = 2;

const FOUR_GIB = 2 ** 32;
/** config_generation is one byte (§4.1.4.3): the low byte of the core's counter. */
const CONFIG_GENERATION_MASK = 0xff;

export interface VirtioPciOptions extends VirtioTransportOptions {
  /** Where MSI-X messages go (KVM_SIGNAL_MSI or per-vector irqfds in the VMM). */
  readonly msi: MsiSink;
  /** INTx line for drivers that do not enable MSI-X; without one the interrupt pin reads 0. */
  readonly intx?: IrqLine;
  /** BAR 0 moved (or was unmapped): queue notify addresses changed, move the ioeventfds. */
  readonly onNotifyRegionMoved?: (transport: VirtioPciDevice) => void;
}

export class VirtioPciDevice extends VirtioTransportCore implements PciFunction {
  readonly config: PciConfigSpace;
  readonly msix: MsixCapability;

  private readonly options: VirtioPciOptions;
  private readonly intx: IrqLine | undefined;
  private readonly queueVectors: Uint16Array;
  private readonly commonScratch = new Uint8Array(COMMON_CFG_SIZE);
  private readonly commonView = new DataView(this.commonScratch.buffer);
  private configVector = VIRTIO_MSI_NO_VECTOR;
  private isr = 0;
  private barAddress: number | undefined;

  constructor(device: VirtioDevice, options: VirtioPciOptions) {
    const queueCount = device.queueMaxSizes.length;
    if (queueCount < 1 || queueCount > MAX_QUEUES) throw new RangeError(`${device.name}: ${queueCount} queues; the transport supports 1..${MAX_QUEUES}`);
    if (device.configSize < 0 || device.configSize > REGION_SIZE) throw new RangeError(`${device.name}: configuration space of ${device.configSize} bytes does not fit its ${REGION_SIZE}-byte region`);
    super(device, options);
    this.options = options;
    this.intx = options.intx;
    this.queueVectors = new Uint16Array(queueCount).fill(VIRTIO_MSI_NO_VECTOR);

    const config = new PciConfigSpace({
      vendorId: VIRTIO_PCI_VENDOR_ID,
      deviceId: VIRTIO_PCI_DEVICE_ID_BASE + device.deviceType,
      revisionId: VIRTIO_PCI_REVISION_ID,
      classCode: CLASS_CODE_BY_DEVICE_TYPE.get(device.deviceType) ?? CLASS_CODE_OTHER,
      subsystemVendorId: VIRTIO_PCI_VENDOR_ID,
      subsystemId: VIRTIO_PCI_SUBSYSTEM_ID_BASE + device.deviceType,
      interruptPin: options.intx === undefined ? PCI_INTERRUPT_PIN_NONE : PCI_INTERRUPT_PIN_INTA,
    });
    this.config = config;
    config.addMemoryBar(VIRTIO_PCI_BAR, { size: VIRTIO_PCI_BAR_SIZE, is64Bit: true, prefetchable: false });
    addVirtioCapability(config, VIRTIO_PCI_CAP_COMMON_CFG, COMMON_CFG_OFFSET, COMMON_CFG_SIZE);
    const notify = addVirtioCapability(config, VIRTIO_PCI_CAP_NOTIFY_CFG, NOTIFY_OFFSET, queueCount * NOTIFY_OFF_MULTIPLIER, VIRTIO_PCI_NOTIFY_CAP_SIZE);
    config.setU32(notify + CAP_NOTIFY_OFF_MULTIPLIER, NOTIFY_OFF_MULTIPLIER);
    addVirtioCapability(config, VIRTIO_PCI_CAP_ISR_CFG, ISR_OFFSET, 1);
    // The device configuration capability is only mandatory for devices that have one (§4.1.4.6).
    if (device.configSize > 0) addVirtioCapability(config, VIRTIO_PCI_CAP_DEVICE_CFG, DEVICE_CFG_OFFSET, device.configSize);
    this.msix = new MsixCapability(config, {
      vectors: queueCount + 1,
      tableBar: VIRTIO_PCI_BAR,
      tableOffset: MSIX_TABLE_OFFSET,
      pbaBar: VIRTIO_PCI_BAR,
      pbaOffset: MSIX_PBA_OFFSET,
      sink: options.msi,
    });
    // INTx follows the command register's Interrupt Disable bit and MSI-X Enable.
    config.onWrite(PCI_COMMAND, 2, () => this.updateIntx());
    config.onWrite(this.msix.capabilityOffset, 4, () => this.updateIntx());
  }

  /**
   * Guest physical address of queue `index`'s notification register, while BAR 0 is mapped: the
   * VMM registers an ioeventfd there (a 2-byte write, any value) and calls notifyQueue(index).
   */
  queueNotifyAddress(index: number): number | undefined {
    if (this.barAddress === undefined || index < 0 || index >= this.queues.length) return undefined;
    return this.barAddress + NOTIFY_OFFSET + index * NOTIFY_OFF_MULTIPLIER;
  }

  /**
   * Queue notifications (an MMIO write here, or the VMM's ioeventfd) are served only while Bus
   * Master Enable is set: a function without it must not access memory (PCI Local Bus 3.0
   * §6.2.2); Linux's virtio_pci_probe sets it.
   */
  protected override memoryAccessAllowed(): boolean {
    return this.config.busMasterEnabled;
  }

  // ---- PciFunction

  readBar(bar: number, offset: number, data: Uint8Array): void {
    if (bar !== VIRTIO_PCI_BAR) return;
    const region = offset - (offset % REGION_SIZE);
    const within = offset - region;
    switch (region) {
      case COMMON_CFG_OFFSET:
        this.readCommon(within, data);
        return;
      case ISR_OFFSET:
        if (within === 0) data[0] = this.readIsr();
        return;
      case DEVICE_CFG_OFFSET:
        if (within + data.length <= this.device.configSize) this.guarded('reading its configuration', () => this.device.readConfig(within, data));
        return;
      case MSIX_TABLE_OFFSET:
        this.msix.readTable(within, data);
        return;
      case MSIX_PBA_OFFSET:
        this.msix.readPba(within, data);
        return;
      default:
        return; // notification region and the rest of the BAR read as 0
    }
  }

  writeBar(bar: number, offset: number, data: Uint8Array): void {
    if (bar !== VIRTIO_PCI_BAR) return;
    const region = offset - (offset % REGION_SIZE);
    const within = offset - region;
    switch (region) {
      case COMMON_CFG_OFFSET:
        this.writeCommon(within, data);
        return;
      case DEVICE_CFG_OFFSET:
        if (within + data.length <= this.device.configSize) this.guarded('writing its configuration', () => this.device.writeConfig(within, data));
        return;
      case NOTIFY_OFFSET:
        this.notifyQueue(Math.floor(within / NOTIFY_OFF_MULTIPLIER));
        return;
      case MSIX_TABLE_OFFSET:
        this.msix.writeTable(within, data);
        return;
      case MSIX_PBA_OFFSET:
        this.msix.writePba(within, data);
        return;
      default:
        return; // ISR is read-only
    }
  }

  barMapped(bar: number, address: number | undefined): void {
    if (bar !== VIRTIO_PCI_BAR) return;
    this.barAddress = address;
    this.options.onNotifyRegionMoved?.(this);
  }

  // ---- common configuration

  private readCommon(offset: number, data: Uint8Array): void {
    const v = this.commonView;
    const select = this.queueSelect;
    const queue = this.queues[select];
    v.setUint32(COMMON_DEVICE_FEATURE_SELECT, this.deviceFeatureSelect, true);
    v.setUint32(COMMON_DEVICE_FEATURE, this.deviceFeatureWord(), true);
    v.setUint32(COMMON_DRIVER_FEATURE_SELECT, this.driverFeatureSelect, true);
    v.setUint32(COMMON_DRIVER_FEATURE, this.driverFeatureWord(), true);
    v.setUint16(COMMON_CONFIG_MSIX_VECTOR, this.configVector, true);
    v.setUint16(COMMON_NUM_QUEUES, this.queues.length, true);
    v.setUint8(COMMON_DEVICE_STATUS, this.status);
    v.setUint8(COMMON_CONFIG_GENERATION, this.configGeneration & CONFIG_GENERATION_MASK);
    v.setUint16(COMMON_QUEUE_SELECT, select, true);
    // A selected queue that does not exist has size 0 (§4.1.4.3, queue_size: "A 0 means the queue is unavailable").
    v.setUint16(COMMON_QUEUE_SIZE, queue === undefined ? 0 : queue.size & 0xffff, true);
    v.setUint16(COMMON_QUEUE_MSIX_VECTOR, queue === undefined ? VIRTIO_MSI_NO_VECTOR : this.queueVectors[select]!, true);
    v.setUint16(COMMON_QUEUE_ENABLE, queue?.enabled ? 1 : 0, true);
    v.setUint16(COMMON_QUEUE_NOTIFY_OFF, queue === undefined ? 0 : select, true);
    setU64(v, COMMON_QUEUE_DESC, queue?.descTableAddress ?? 0);
    setU64(v, COMMON_QUEUE_DRIVER, queue?.availRingAddress ?? 0);
    setU64(v, COMMON_QUEUE_DEVICE, queue?.usedRingAddress ?? 0);
    v.setUint16(COMMON_QUEUE_NOTIFY_DATA, queue === undefined ? 0 : select, true);
    v.setUint16(COMMON_QUEUE_RESET, 0, true);
    for (let i = 0; i < data.length; i++) {
      const at = offset + i;
      data[i] = at < COMMON_CFG_SIZE ? this.commonScratch[at]! : 0;
    }
  }

  /**
   * Fields are written at their natural width; 64-bit addresses also as two 32-bit halves, low
   * first, as Linux's vp_iowrite64_twopart does (§4.1.3.1). Other accesses are ignored.
   */
  private writeCommon(offset: number, data: Uint8Array): void {
    const width = data.length;
    const value = readLe(data);
    const queue = this.queues[this.queueSelect];
    switch (width) {
      case 1:
        if (offset === COMMON_DEVICE_STATUS) this.writeStatus(value);
        return;
      case 2:
        switch (offset) {
          case COMMON_CONFIG_MSIX_VECTOR:
            this.configVector = this.validVector(value);
            return;
          case COMMON_QUEUE_SELECT:
            this.queueSelect = value;
            return;
          case COMMON_QUEUE_SIZE:
            if (queue !== undefined && this.queueWritable(queue)) queue.size = value;
            return;
          case COMMON_QUEUE_MSIX_VECTOR:
            if (queue !== undefined) this.queueVectors[this.queueSelect] = this.validVector(value);
            return;
          case COMMON_QUEUE_ENABLE:
            // Writing 0 is forbidden to the driver (§4.1.4.3.2); only a reset disables a queue.
            if (queue !== undefined && value === 1 && this.queueWritable(queue)) queue.enabled = true;
            return;
          default:
            return;
        }
      case 4:
        switch (offset) {
          case COMMON_DEVICE_FEATURE_SELECT:
            this.deviceFeatureSelect = value;
            return;
          case COMMON_DRIVER_FEATURE_SELECT:
            this.driverFeatureSelect = value;
            return;
          case COMMON_DRIVER_FEATURE:
            this.writeDriverFeatures(value);
            return;
          default:
            this.writeQueueAddress(queue, offset, value, 4);
            return;
        }
      case 8:
        this.writeQueueAddress(queue, offset, value, 8);
        return;
      default:
        return;
    }
  }

  private writeQueueAddress(queue: SplitQueue | undefined, offset: number, value: number, width: 4 | 8): void {
    if (queue === undefined || !this.queueWritable(queue)) return;
    for (const [field, key] of QUEUE_ADDRESS_FIELDS) {
      const current = queue[key];
      if (offset === field) {
        queue[key] = width === 8 ? value : Math.floor(current / FOUR_GIB) * FOUR_GIB + value;
        return;
      }
      if (offset === field + 4 && width === 4) {
        queue[key] = value * FOUR_GIB + (current % FOUR_GIB);
        return;
      }
    }
  }

  private validVector(value: number): number {
    return value < this.msix.vectors ? value : VIRTIO_MSI_NO_VECTOR;
  }

  // ---- what VirtioTransportCore asks of a transport

  /** Device reset (§4.1.4.3: writing 0 to device_status) clears the vectors and the ISR; MSI-X state is PCI's and stays. */
  protected override resetTransport(): void {
    this.queueVectors.fill(VIRTIO_MSI_NO_VECTOR);
    this.configVector = VIRTIO_MSI_NO_VECTOR;
    this.isr = 0;
    this.updateIntx();
  }

  // ---- interrupts (§4.1.4.5, §4.1.5.3, §4.1.5.4)

  protected override deliverQueueInterrupt(index: number): void {
    if (this.msix.enabled) {
      const vector = this.queueVectors[index];
      if (vector !== undefined && vector !== VIRTIO_MSI_NO_VECTOR) this.msix.signal(vector);
      return;
    }
    // The queue bit is set only without MSI-X (§4.1.4.5.1).
    this.isr |= VIRTIO_PCI_ISR_QUEUE;
    this.updateIntx();
  }

  protected override deliverConfigInterrupt(): void {
    this.isr |= VIRTIO_PCI_ISR_CONFIG;
    if (this.msix.enabled) {
      if (this.configVector !== VIRTIO_MSI_NO_VECTOR) this.msix.signal(this.configVector);
      return;
    }
    this.updateIntx();
  }

  private readIsr(): number {
    const value = this.isr;
    this.isr = 0;
    this.updateIntx();
    return value;
  }

  /** Without MSI-X, INTx and the PCI status Interrupt bit follow the ISR (§4.1.4.5.1), unless the command register disables INTx. */
  private updateIntx(): void {
    const pending = !this.msix.enabled && this.isr !== 0;
    this.config.setStatusBit(PCI_STATUS_INTERRUPT, pending);
    this.intx?.setLevel(pending && !this.config.intxDisabled);
  }
}

const QUEUE_ADDRESS_FIELDS: readonly (readonly [number, 'descTableAddress' | 'availRingAddress' | 'usedRingAddress'])[] = [
  [COMMON_QUEUE_DESC, 'descTableAddress'],
  [COMMON_QUEUE_DRIVER, 'availRingAddress'],
  [COMMON_QUEUE_DEVICE, 'usedRingAddress'],
];

/** Append a struct virtio_pci_cap of `cfgType` describing [offset, offset + length) of BAR 0. */
function addVirtioCapability(config: PciConfigSpace, cfgType: number, offset: number, length: number, capSize = VIRTIO_PCI_CAP_SIZE): number {
  const at = config.addCapability(PCI_CAP_ID_VENDOR, capSize);
  config.setU8(at + CAP_LEN, capSize);
  config.setU8(at + CAP_CFG_TYPE, cfgType);
  config.setU8(at + CAP_BAR, VIRTIO_PCI_BAR);
  config.setU8(at + CAP_ID, 0);
  config.setU32(at + CAP_OFFSET, offset);
  config.setU32(at + CAP_LENGTH, length);
  return at;
}

/** A little-endian value of 1–8 bytes as a number (8-byte values above 2^53 lose low bits, which only an impossible address has). */
function readLe(data: Uint8Array): number {
  let value = 0;
  for (let i = data.length - 1; i >= 0; i--) value = value * 256 + data[i]!;
  return value;
}

function setU64(view: DataView, offset: number, value: number): void {
  view.setUint32(offset, value % FOUR_GIB, true);
  view.setUint32(offset + 4, Math.floor(value / FOUR_GIB), true);
}
