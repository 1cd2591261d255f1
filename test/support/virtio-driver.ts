/**
 * A guest-side virtio driver for unit tests, working the way Linux's does but in TypeScript:
 * it finds the device through PCI configuration mechanism #1 (ports 0xCF8/0xCFC on a port-I/O
 * Bus), walks the capability list for the virtio structures (virtio_pci_modern_dev.c), talks to
 * the common configuration through BAR MMIO on an MMIO Bus, negotiates features, lays descriptor
 * tables and rings into a GuestMemory buffer, kicks queues and reads the used ring back.
 *
 * TestMachine wires the device models as the VMM will: a PciBus with its host bridge, the config
 * ports and ECAM, BARs mapped on the MMIO Bus, guest RAM built with GuestMemory.fromBuffers
 * inside larger host buffers whose guard bytes around RAM must never change.
 */
import { Bus } from '../../src/devices/bus.js';
import { PciConfigPorts, PciEcam, PCI_CONFIG_ADDRESS_PORT, PCI_CONFIG_PORT_COUNT } from '../../src/devices/pci/host-bridge.js';
import type { MsiSink } from '../../src/devices/pci/msix.js';
import { PciBus } from '../../src/devices/pci/pci-bus.js';
import type { VirtioDevice } from '../../src/devices/virtio/device.js';
import { VirtioPciDevice, type VirtioPciOptions } from '../../src/devices/virtio/pci-transport.js';
import type { DescriptorChain, SplitQueue } from '../../src/devices/virtio/queue.js';
import { MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE, mmap, viewMapping } from '../../src/kvm/libc.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import type { IrqLine } from '../../src/devices/irq.js';

// Register layouts spelled out here, independently of the device code (PCI Local Bus 3.0 §6.1, virtio 1.2 §4.1.4).
const PCI_VENDOR_ID = 0x00;
const PCI_DEVICE_ID = 0x02;
const PCI_COMMAND = 0x04;
const PCI_STATUS = 0x06;
const PCI_BAR0 = 0x10;
const PCI_CAPABILITY_LIST = 0x34;
const PCI_STATUS_CAP_LIST = 0x10;
const PCI_COMMAND_MEMORY = 0x2;
const PCI_COMMAND_BUS_MASTER = 0x4;
const CAP_ID_VENDOR = 0x09;
const CAP_ID_MSIX = 0x11;
const VIRTIO_PCI_CAP_COMMON_CFG = 1;
const VIRTIO_PCI_CAP_NOTIFY_CFG = 2;
const VIRTIO_PCI_CAP_ISR_CFG = 3;
const VIRTIO_PCI_CAP_DEVICE_CFG = 4;

export const COMMON = {
  DEVICE_FEATURE_SELECT: 0x00,
  DEVICE_FEATURE: 0x04,
  DRIVER_FEATURE_SELECT: 0x08,
  DRIVER_FEATURE: 0x0c,
  CONFIG_MSIX_VECTOR: 0x10,
  NUM_QUEUES: 0x12,
  DEVICE_STATUS: 0x14,
  CONFIG_GENERATION: 0x15,
  QUEUE_SELECT: 0x16,
  QUEUE_SIZE: 0x18,
  QUEUE_MSIX_VECTOR: 0x1a,
  QUEUE_ENABLE: 0x1c,
  QUEUE_NOTIFY_OFF: 0x1e,
  QUEUE_DESC: 0x20,
  QUEUE_DRIVER: 0x28,
  QUEUE_DEVICE: 0x30,
} as const;

export const STATUS = { ACKNOWLEDGE: 1, DRIVER: 2, DRIVER_OK: 4, FEATURES_OK: 8, NEEDS_RESET: 64, FAILED: 128 } as const;
export const DESC_F = { NEXT: 1, WRITE: 2, INDIRECT: 4 } as const;
export const F_INDIRECT_DESC = 28;
export const F_EVENT_IDX = 29;
export const F_VERSION_1 = 32;
export const NO_VECTOR = 0xffff;
/** x86 MSI address for local APIC 0 (Intel SDM vol. 3A §11.11.1): what Linux would program. */
export const MSI_ADDRESS = 0xfee0_0000;

const FOUR_GIB = 2 ** 32;

/** Records MSI messages instead of injecting them. */
export class RecordingMsiSink implements MsiSink {
  readonly messages: { vector: number; addressLow: number; addressHigh: number; data: number }[] = [];
  signal(vector: number, addressLow: number, addressHigh: number, data: number): void {
    this.messages.push({ vector, addressLow, addressHigh, data });
  }
}

/** A region of guest RAM inside a host buffer with guard bytes on both sides. */
export interface GuardedRegion {
  readonly gpa: number;
  readonly size: number;
  readonly backing: Uint8Array;
  readonly ram: Uint8Array;
}

export const GUARD_BYTES = 64 * 1024;
const GUARD_PATTERN = 0xa5;

export interface TestMachineOptions {
  /** RAM regions, as [gpa, size]; adjacent ones form contiguous RAM made of separate host buffers. Default one 1 MiB region at 0. */
  readonly regions?: readonly (readonly [number, number])[];
  readonly intx?: IrqLine;
  /**
   * Back RAM (and its guards) with host mappings whose addresses the guest memory knows, as the
   * VMM's own RAM is: devices may then pass guest addresses to system calls (virtio-blk's
   * immediate transfers), and the guards check that those calls stay inside RAM too.
   */
  readonly hostMapped?: boolean;
}

/** PCI bus, config ports, ECAM and guarded guest RAM: the VMM's wiring without KVM. */
export class TestMachine {
  static readonly ECAM_BASE = 0xe000_0000;
  static readonly MMIO32_WINDOW = { start: 0xc000_0000, size: 0x2000_0000 };
  readonly io = new Bus('port-io');
  readonly mmio = new Bus('mmio');
  readonly pci: PciBus;
  readonly memory: GuestMemory;
  readonly regions: GuardedRegion[];
  readonly msi = new RecordingMsiSink();
  readonly allocator: GuestAllocator;
  private readonly scratch = new Uint8Array(8);
  private readonly scratchView = new DataView(this.scratch.buffer);

  constructor(private readonly options: TestMachineOptions = {}) {
    const layout = options.regions ?? [[0, 1 << 20]];
    const hostAddresses: (bigint | undefined)[] = [];
    this.regions = layout.map(([gpa, size]) => {
      let backing: Uint8Array;
      if (options.hostMapped === true) {
        const mapping = mmap(size + 2 * GUARD_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0, 'map test RAM');
        backing = new Uint8Array(viewMapping(mapping));
        hostAddresses.push(mapping.address + BigInt(GUARD_BYTES));
      } else {
        backing = new Uint8Array(size + 2 * GUARD_BYTES);
        hostAddresses.push(undefined);
      }
      backing.fill(GUARD_PATTERN);
      const ram = backing.subarray(GUARD_BYTES, GUARD_BYTES + size);
      ram.fill(0);
      return { gpa, size, backing, ram };
    });
    this.memory = GuestMemory.fromBuffers(
      this.regions.map((r, i) => {
        const hostAddress = hostAddresses[i];
        return hostAddress === undefined ? { gpa: r.gpa, bytes: r.ram } : { gpa: r.gpa, bytes: r.ram, hostAddress };
      }),
    );
    this.pci = new PciBus({ mmio: this.mmio, mmio32Window: TestMachine.MMIO32_WINDOW });
    this.io.insert(PCI_CONFIG_ADDRESS_PORT, PCI_CONFIG_PORT_COUNT, new PciConfigPorts(this.pci), 'pci-config');
    const ecam = new PciEcam(this.pci, 1);
    this.mmio.insert(TestMachine.ECAM_BASE, ecam.size, ecam, 'pci-ecam');
    const first = this.regions[0]!;
    const last = this.regions[this.regions.length - 1]!;
    this.allocator = new GuestAllocator(first.gpa + 0x1000, last.gpa + last.size);
  }

  /** Plug a virtio device into the PCI bus behind the modern transport. */
  addVirtio(device: VirtioDevice, extra: Partial<VirtioPciOptions> = {}): { transport: VirtioPciDevice; slot: number } {
    const transport = new VirtioPciDevice(device, { memory: this.memory, msi: this.msi, ...(this.options.intx ? { intx: this.options.intx } : {}), ...extra });
    const { device: slot } = this.pci.addDevice(transport);
    return { transport, slot };
  }

  /** Whether every guard byte around every RAM region still holds its pattern. */
  guardsIntact(): boolean {
    const pattern = Buffer.alloc(GUARD_BYTES, GUARD_PATTERN);
    const guard = (r: GuardedRegion, at: number) => Buffer.from(r.backing.buffer, r.backing.byteOffset + at, GUARD_BYTES).equals(pattern);
    return this.regions.every((r) => guard(r, 0) && guard(r, GUARD_BYTES + r.size));
  }

  // ---- port I/O and MMIO as a vCPU would issue them

  in(port: number, width: 1 | 2 | 4): number {
    const data = this.scratch.subarray(0, width);
    this.io.read(port, data);
    return readLe(data);
  }
  out(port: number, width: 1 | 2 | 4, value: number): void {
    const data = this.scratch.subarray(0, width);
    writeLe(data, value);
    this.io.write(port, data);
  }
  mmioRead(address: number, width: 1 | 2 | 4 | 8): number {
    const data = this.scratch.subarray(0, width);
    this.mmio.read(address, data);
    return width === 8 ? this.scratchView.getUint32(0, true) + this.scratchView.getUint32(4, true) * FOUR_GIB : readLe(data);
  }
  mmioWrite(address: number, width: 1 | 2 | 4 | 8, value: number): void {
    const data = this.scratch.subarray(0, width);
    if (width === 8) {
      this.scratchView.setUint32(0, value % FOUR_GIB, true);
      this.scratchView.setUint32(4, Math.floor(value / FOUR_GIB), true);
    } else writeLe(data, value);
    this.mmio.write(address, data);
  }

  // ---- configuration space, both mechanisms

  /** Mechanism #1: as Linux's pci_conf1_read: address to 0xCF8, then data at 0xCFC + (reg & 3). */
  conf1Read(bus: number, device: number, fn: number, reg: number, width: 1 | 2 | 4): number {
    this.out(0xcf8, 4, conf1Address(bus, device, fn, reg));
    return this.in(0xcfc + (reg & 3), width);
  }
  conf1Write(bus: number, device: number, fn: number, reg: number, width: 1 | 2 | 4, value: number): void {
    this.out(0xcf8, 4, conf1Address(bus, device, fn, reg));
    this.out(0xcfc + (reg & 3), width, value);
  }
  ecamRead(bus: number, device: number, fn: number, reg: number, width: 1 | 2 | 4): number {
    return this.mmioRead(TestMachine.ECAM_BASE + ecamOffset(bus, device, fn, reg), width);
  }
  ecamWrite(bus: number, device: number, fn: number, reg: number, width: 1 | 2 | 4, value: number): void {
    this.mmioWrite(TestMachine.ECAM_BASE + ecamOffset(bus, device, fn, reg), width, value);
  }
}

export function conf1Address(bus: number, device: number, fn: number, reg: number): number {
  return (0x8000_0000 | (bus << 16) | (device << 11) | (fn << 8) | (reg & 0xfc)) >>> 0;
}

export function ecamOffset(bus: number, device: number, fn: number, reg: number): number {
  return bus * (1 << 20) + (device << 15) + (fn << 12) + reg;
}

/** Bump allocator for guest-physical memory. */
export class GuestAllocator {
  constructor(
    private cursor: number,
    private readonly end: number,
  ) {}
  alloc(size: number, align = 16): number {
    const at = Math.ceil(this.cursor / align) * align;
    if (at + size > this.end) throw new RangeError(`test guest RAM exhausted allocating ${size} bytes`);
    this.cursor = at + size;
    return at;
  }
}

/** A virtio structure found through a vendor capability: BAR-relative offset and length. */
interface VirtioStructure {
  readonly offset: number;
  readonly length: number;
}

/** The driver for one virtio-pci function. */
export class VirtioPciDriver {
  barAddress = 0;
  common!: VirtioStructure;
  notify!: VirtioStructure;
  notifyMultiplier = 0;
  isr!: VirtioStructure;
  deviceCfg: VirtioStructure | undefined;
  msixCapability = 0;
  msixVectors = 0;
  msixTableOffset = 0;
  readonly queues: DriverQueue[] = [];
  negotiated = 0n;

  constructor(
    readonly machine: TestMachine,
    readonly slot: number,
  ) {}

  /** Find the function's BAR and virtio structures as virtio_pci_modern_probe does, and enable memory decode and bus mastering. */
  probe(): { vendorId: number; deviceId: number } {
    const m = this.machine;
    const cfg = (reg: number, width: 1 | 2 | 4): number => m.conf1Read(0, this.slot, 0, reg, width);
    const vendorId = cfg(PCI_VENDOR_ID, 2);
    const deviceId = cfg(PCI_DEVICE_ID, 2);
    if (vendorId === 0xffff) throw new Error(`no device in slot ${this.slot}`);
    const low = cfg(PCI_BAR0, 4);
    const high = cfg(PCI_BAR0 + 4, 4);
    this.barAddress = ((low & ~0xf) >>> 0) + high * FOUR_GIB;
    m.conf1Write(0, this.slot, 0, PCI_COMMAND, 2, cfg(PCI_COMMAND, 2) | PCI_COMMAND_MEMORY | PCI_COMMAND_BUS_MASTER);
    if ((cfg(PCI_STATUS, 2) & PCI_STATUS_CAP_LIST) === 0) throw new Error('no capability list');
    let at = cfg(PCI_CAPABILITY_LIST, 1) & ~3;
    for (let guard = 0; at !== 0 && guard < 48; guard++) {
      const id = cfg(at, 1);
      if (id === CAP_ID_VENDOR) {
        const type = cfg(at + 3, 1);
        const structure = { offset: cfg(at + 8, 4), length: cfg(at + 12, 4) };
        if (cfg(at + 4, 1) !== 0) throw new Error('virtio structure outside BAR 0');
        if (type === VIRTIO_PCI_CAP_COMMON_CFG) this.common = structure;
        else if (type === VIRTIO_PCI_CAP_NOTIFY_CFG) {
          this.notify = structure;
          this.notifyMultiplier = cfg(at + 16, 4);
        } else if (type === VIRTIO_PCI_CAP_ISR_CFG) this.isr = structure;
        else if (type === VIRTIO_PCI_CAP_DEVICE_CFG) this.deviceCfg = structure;
      } else if (id === CAP_ID_MSIX) {
        this.msixCapability = at;
        this.msixVectors = (cfg(at + 2, 2) & 0x7ff) + 1;
        const table = cfg(at + 4, 4);
        if ((table & 7) !== 0) throw new Error('MSI-X table outside BAR 0');
        this.msixTableOffset = table & ~7;
      }
      at = cfg(at + 1, 1) & ~3;
    }
    return { vendorId, deviceId };
  }

  // ---- common configuration access

  read(offset: number, width: 1 | 2 | 4): number {
    return this.machine.mmioRead(this.barAddress + this.common.offset + offset, width);
  }
  write(offset: number, width: 1 | 2 | 4, value: number): void {
    this.machine.mmioWrite(this.barAddress + this.common.offset + offset, width, value);
  }
  /** 64-bit fields as two 32-bit writes, low half first (Linux's vp_iowrite64_twopart). */
  write64(offset: number, value: number): void {
    this.write(offset, 4, value % FOUR_GIB);
    this.write(offset + 4, 4, Math.floor(value / FOUR_GIB));
  }

  get status(): number {
    return this.read(COMMON.DEVICE_STATUS, 1);
  }
  set status(value: number) {
    this.write(COMMON.DEVICE_STATUS, 1, value);
  }

  /** Device reset: write 0 and wait for 0 to read back (§4.1.4.3.2). */
  reset(): void {
    this.status = 0;
    if (this.status !== 0) throw new Error('device did not reset');
    this.queues.length = 0;
  }

  deviceFeatures(): bigint {
    this.write(COMMON.DEVICE_FEATURE_SELECT, 4, 0);
    const low = this.read(COMMON.DEVICE_FEATURE, 4);
    this.write(COMMON.DEVICE_FEATURE_SELECT, 4, 1);
    const high = this.read(COMMON.DEVICE_FEATURE, 4);
    return (BigInt(high) << 32n) | BigInt(low);
  }

  writeDriverFeatures(features: bigint): void {
    this.write(COMMON.DRIVER_FEATURE_SELECT, 4, 0);
    this.write(COMMON.DRIVER_FEATURE, 4, Number(features & 0xffffffffn));
    this.write(COMMON.DRIVER_FEATURE_SELECT, 4, 1);
    this.write(COMMON.DRIVER_FEATURE, 4, Number((features >> 32n) & 0xffffffffn));
  }

  /**
   * Virtio 1.2 §3.1.1 steps 1–6: reset, ACKNOWLEDGE, DRIVER, write `features` (by default what
   * the device offers of `wanted`), set FEATURES_OK and read it back. Returns whether accepted.
   */
  negotiate(wanted: bigint, options: { force?: boolean } = {}): boolean {
    this.reset();
    this.status = STATUS.ACKNOWLEDGE;
    this.status = STATUS.ACKNOWLEDGE | STATUS.DRIVER;
    const features = options.force ? wanted : this.deviceFeatures() & wanted;
    this.writeDriverFeatures(features);
    this.status = STATUS.ACKNOWLEDGE | STATUS.DRIVER | STATUS.FEATURES_OK;
    const ok = (this.status & STATUS.FEATURES_OK) !== 0;
    this.negotiated = ok ? features : 0n;
    return ok;
  }

  /** Program every MSI-X vector i with data 0x40 + i, unmask, enable (as msix_capability_init does: masked first). */
  enableMsix(): void {
    const m = this.machine;
    const control = this.msixCapability + 2;
    const MSIX_ENABLE = 0x8000;
    const FUNCTION_MASK = 0x4000;
    m.conf1Write(0, this.slot, 0, control, 2, MSIX_ENABLE | FUNCTION_MASK);
    for (let v = 0; v < this.msixVectors; v++) {
      const entry = this.barAddress + this.msixTableOffset + 16 * v;
      m.mmioWrite(entry, 4, MSI_ADDRESS);
      m.mmioWrite(entry + 4, 4, 0);
      m.mmioWrite(entry + 8, 4, 0x40 + v);
      m.mmioWrite(entry + 12, 4, 0); // unmask
    }
    m.conf1Write(0, this.slot, 0, control, 2, MSIX_ENABLE);
  }

  /** Set up queue `index` with rings from the allocator; `vector` is its MSI-X vector. */
  setupQueue(index: number, options: { size?: number; vector?: number; rings?: { desc: number; avail: number; used: number } } = {}): DriverQueue {
    this.write(COMMON.QUEUE_SELECT, 2, index);
    const max = this.read(COMMON.QUEUE_SIZE, 2);
    if (max === 0) throw new Error(`queue ${index} does not exist`);
    const size = options.size ?? max;
    this.write(COMMON.QUEUE_SIZE, 2, size);
    const a = this.machine.allocator;
    // `rings` places them anywhere at all (hostile tests); by default each gets its own memory.
    const desc = options.rings?.desc ?? a.alloc(16 * size, 16);
    const avail = options.rings?.avail ?? a.alloc(6 + 2 * size, 2);
    const used = options.rings?.used ?? a.alloc(6 + 8 * size, 4);
    this.write64(COMMON.QUEUE_DESC, desc);
    this.write64(COMMON.QUEUE_DRIVER, avail);
    this.write64(COMMON.QUEUE_DEVICE, used);
    if (options.vector !== undefined) {
      this.write(COMMON.QUEUE_MSIX_VECTOR, 2, options.vector);
      if (this.read(COMMON.QUEUE_MSIX_VECTOR, 2) !== options.vector) throw new Error('MSI-X vector refused');
    }
    const notifyOff = this.read(COMMON.QUEUE_NOTIFY_OFF, 2);
    this.write(COMMON.QUEUE_ENABLE, 2, 1);
    const notifyAddress = this.barAddress + this.notify.offset + notifyOff * this.notifyMultiplier;
    const queue = new DriverQueue(this.machine, index, size, desc, avail, used, notifyAddress, (this.negotiated & (1n << BigInt(F_EVENT_IDX))) !== 0n);
    this.queues[index] = queue;
    return queue;
  }

  driverOk(): void {
    this.status = this.status | STATUS.DRIVER_OK;
  }

  /** Read (and so clear) the ISR byte. */
  readIsr(): number {
    return this.machine.mmioRead(this.barAddress + this.isr.offset, 1);
  }

  /** The usual bring-up: negotiate, MSI-X with config vector 0 and queue i on vector i + 1, queues, DRIVER_OK. */
  bringUp(wanted: bigint, options: { queueSize?: number; msix?: boolean } = {}): DriverQueue[] {
    this.probe();
    if (!this.negotiate(wanted)) throw new Error('features refused');
    const msix = options.msix ?? true;
    if (msix) {
      this.enableMsix();
      this.write(COMMON.CONFIG_MSIX_VECTOR, 2, 0);
    }
    const count = this.read(COMMON.NUM_QUEUES, 2);
    for (let i = 0; i < count; i++) this.setupQueue(i, { ...(options.queueSize ? { size: options.queueSize } : {}), ...(msix ? { vector: i + 1 } : {}) });
    this.driverOk();
    return this.queues;
  }
}

/** A buffer for addChain: guest address, length, and whether the device may write it. */
export interface DriverBuffer {
  readonly addr: number;
  readonly len: number;
  readonly writable: boolean;
}

/** The driver's half of one split virtqueue. */
export class DriverQueue {
  private nextFree = 0;
  private availIdx = 0;
  private lastUsed = 0;
  private readonly memory: GuestMemory;

  constructor(
    readonly machine: TestMachine,
    readonly index: number,
    readonly size: number,
    readonly desc: number,
    readonly avail: number,
    readonly used: number,
    readonly notifyAddress: number,
    readonly eventIdx: boolean,
  ) {
    this.memory = machine.memory;
  }

  /** Write descriptor `i` verbatim (hostile tests use this to build anything at all). */
  writeDescriptor(i: number, addr: number, len: number, flags: number, next: number, table = this.desc): void {
    const at = table + 16 * i;
    this.memory.writeU64(at, BigInt(addr));
    this.memory.writeU32(at + 8, len);
    this.memory.writeU16(at + 12, flags);
    this.memory.writeU16(at + 14, next);
  }

  /**
   * Lay `buffers` out as a chain of fresh descriptors (or, with `indirect`, as an indirect table
   * behind one descriptor) and return the head. Descriptors are used round-robin.
   */
  addChain(buffers: readonly DriverBuffer[], options: { indirect?: boolean } = {}): number {
    if (options.indirect) {
      const table = this.machine.allocator.alloc(16 * buffers.length, 16);
      buffers.forEach((b, i) => this.writeDescriptor(i, b.addr, b.len, (b.writable ? DESC_F.WRITE : 0) | (i + 1 < buffers.length ? DESC_F.NEXT : 0), i + 1, table));
      const head = this.take();
      this.writeDescriptor(head, table, 16 * buffers.length, DESC_F.INDIRECT, 0);
      return head;
    }
    const ids = buffers.map(() => this.take());
    buffers.forEach((b, i) =>
      this.writeDescriptor(ids[i]!, b.addr, b.len, (b.writable ? DESC_F.WRITE : 0) | (i + 1 < buffers.length ? DESC_F.NEXT : 0), ids[i + 1] ?? 0),
    );
    return ids[0]!;
  }

  /** Put `head` in the available ring and publish it (§2.7.13). */
  publish(head: number): void {
    this.memory.writeU16(this.avail + 4 + 2 * (this.availIdx % this.size), head);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.memory.writeU16(this.avail + 2, this.availIdx);
  }

  /** Raw available index (hostile tests). */
  setAvailIdx(idx: number): void {
    this.availIdx = idx & 0xffff;
    this.memory.writeU16(this.avail + 2, this.availIdx);
  }

  /** The available buffer notification: a 16-bit write of the queue index to its notify address. */
  kick(): void {
    this.machine.mmioWrite(this.notifyAddress, 2, this.index);
  }

  setAvailFlags(flags: number): void {
    this.memory.writeU16(this.avail, flags);
  }
  setUsedEvent(value: number): void {
    this.memory.writeU16(this.avail + 4 + 2 * this.size, value);
  }
  usedFlags(): number {
    return this.memory.readU16(this.used);
  }
  availEvent(): number {
    return this.memory.readU16(this.used + 4 + 8 * this.size);
  }
  usedIdx(): number {
    return this.memory.readU16(this.used + 2);
  }

  /** Used elements added since the last call. */
  takeUsed(): { id: number; len: number }[] {
    const out: { id: number; len: number }[] = [];
    const now = this.usedIdx();
    while (this.lastUsed !== now) {
      const at = this.used + 4 + 8 * (this.lastUsed % this.size);
      out.push({ id: this.memory.readU32(at), len: this.memory.readU32(at + 4) });
      this.lastUsed = (this.lastUsed + 1) & 0xffff;
    }
    return out;
  }

  private take(): number {
    const i = this.nextFree;
    this.nextFree = (this.nextFree + 1) % this.size;
    return i;
  }
}

function readLe(data: Uint8Array): number {
  let v = 0;
  for (let i = data.length - 1; i >= 0; i--) v = v * 256 + data[i]!;
  return v;
}

function writeLe(data: Uint8Array, value: number): void {
  let v = value;
  for (let i = 0; i < data.length; i++) {
    data[i] = v % 256;
    v = Math.floor(v / 256);
  }
}

// ---- helpers added for virtio-net tests (device configuration reads, waiting for asynchronous device work)

/** Read `width` bytes of the device-specific configuration (virtio 1.2 §4.1.4.6) at `offset`, as Linux's virtio_cread does. */
export function readDeviceConfig(driver: VirtioPciDriver, offset: number, width: 1 | 2 | 4): number {
  const cfg = driver.deviceCfg;
  if (cfg === undefined) throw new Error('the device has no device configuration capability');
  if (offset + width > cfg.length) throw new Error(`device configuration read at ${offset} (+${width}) beyond its ${cfg.length} bytes`);
  return driver.machine.mmioRead(driver.barAddress + cfg.offset + offset, width);
}

/** `length` bytes of the device-specific configuration from `offset`, read byte by byte. */
export function readDeviceConfigBytes(driver: VirtioPciDriver, offset: number, length: number): Uint8Array {
  return Uint8Array.from({ length }, (_, i) => readDeviceConfig(driver, offset + i, 1));
}

/**
 * Wait until `condition` holds, letting the event loop run (epoll wake-ups, file callbacks) in
 * between; false when `timeoutMs` passed first.
 */
export async function waitUntil(condition: () => boolean, timeoutMs = 2000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() >= deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
  return true;
}

/** Used elements of `queue`, collected until there are `count` of them (or `timeoutMs` passed). */
export async function waitForUsed(queue: DriverQueue, count: number, timeoutMs = 2000): Promise<{ id: number; len: number }[]> {
  const used: { id: number; len: number }[] = [];
  await waitUntil(() => {
    used.push(...queue.takeUsed());
    return used.length >= count;
  }, timeoutMs);
  return used;
}

/**
 * A driver racing the device, as a guest vCPU can: each time the device takes a chain from
 * `deviceQueue` (the transport's SplitQueue), `repost` makes another one available at once, until
 * `total` have been reposted. A device loop of "take until empty" never sees the queue empty
 * before that. `taken()` counts what the device took; tests assert it stays within one ring
 * per pass while the whole backlog still gets served over later turns of the event loop.
 */
export function raceDevice(deviceQueue: SplitQueue, repost: () => void, total: number): { taken(): number } {
  let taken = 0;
  let reposted = 0;
  const pop = deviceQueue.pop.bind(deviceQueue);
  deviceQueue.pop = (chain: DescriptorChain): boolean => {
    if (!pop(chain)) return false;
    taken++;
    if (reposted < total) {
      reposted++;
      repost();
    }
    return true;
  };
  return { taken: () => taken };
}

/** Turn the event loop (one setImmediate at a time) until `condition` holds or `maxTurns` passed; the turns taken. */
export async function turnUntil(condition: () => boolean, maxTurns = 1000): Promise<number> {
  let turns = 0;
  while (!condition() && turns < maxTurns) {
    await new Promise<void>((resolve) => setImmediate(resolve));
    turns++;
  }
  return turns;
}

// ---- virtio-vsock (virtio 1.2 §5.10), spelled out here independently of the device code

/** struct virtio_vsock_hdr is 44 packed bytes (§5.10.6). */
export const VSOCK_HDR_BYTES = 44;
export const VSOCK_OP = { REQUEST: 1, RESPONSE: 2, RST: 3, SHUTDOWN: 4, RW: 5, CREDIT_UPDATE: 6, CREDIT_REQUEST: 7 } as const;
export const VSOCK_SHUTDOWN = { RCV: 1, SEND: 2 } as const;
export const VSOCK_TYPE_STREAM = 1;
export const VSOCK_HOST_CID = 2;

/** One vsock packet as the guest sees it. */
export interface VsockPacket {
  srcCid: number;
  dstCid: number;
  srcPort: number;
  dstPort: number;
  len: number;
  type: number;
  op: number;
  flags: number;
  bufAlloc: number;
  fwdCnt: number;
  payload: Uint8Array;
}

export interface GuestVsockOptions {
  /** The guest's CID (src_cid of what it sends). */
  readonly cid: number;
  /** RX buffers kept posted, and the bytes of each (header included). Linux posts 4 KiB + header. */
  readonly rxBuffers?: number;
  readonly rxBufferBytes?: number;
  /** Lay each RX buffer out as two descriptors (header, payload), as older Linux did. */
  readonly rxSplit?: boolean;
  /** buf_alloc sent when a packet does not give one (Linux's default socket buffer: 256 KiB). */
  readonly bufAlloc?: number;
}

/**
 * The guest's vsock driver over the rx and tx DriverQueues: keeps RX buffers posted (reposting each
 * one as its packet is read), parses what the device wrote, and sends packets from a ring of
 * reusable TX slots (the device consumes tx chains during the kick).
 */
export class GuestVsock {
  readonly cid: number;
  readonly bufAlloc: number;
  private readonly rxBufferBytes: number;
  private readonly rxSplit: boolean;
  private readonly rxByHead = new Map<number, number>();
  private readonly txSlots: number[] = [];
  private nextTxSlot = 0;
  static readonly TX_SLOT_BYTES = VSOCK_HDR_BYTES + 64 * 1024;
  static readonly TX_SLOTS = 8;

  constructor(
    readonly machine: TestMachine,
    readonly rx: DriverQueue,
    readonly tx: DriverQueue,
    options: GuestVsockOptions,
  ) {
    this.cid = options.cid;
    this.bufAlloc = options.bufAlloc ?? 256 * 1024;
    this.rxBufferBytes = options.rxBufferBytes ?? VSOCK_HDR_BYTES + 4096;
    this.rxSplit = options.rxSplit ?? false;
    for (let i = 0; i < (options.rxBuffers ?? 16); i++) this.postRx(machine.allocator.alloc(this.rxBufferBytes, 8));
    for (let i = 0; i < GuestVsock.TX_SLOTS; i++) this.txSlots.push(machine.allocator.alloc(GuestVsock.TX_SLOT_BYTES, 8));
  }

  /** Post one RX buffer at `addr` without kicking. */
  postRx(addr: number): void {
    const n = this.rxBufferBytes;
    const head = this.rxSplit && n > VSOCK_HDR_BYTES
      ? this.rx.addChain([
          { addr, len: VSOCK_HDR_BYTES, writable: true },
          { addr: addr + VSOCK_HDR_BYTES, len: n - VSOCK_HDR_BYTES, writable: true },
        ])
      : this.rx.addChain([{ addr, len: n, writable: true }]);
    this.rxByHead.set(head, addr);
    this.rx.publish(head);
  }

  /** Packets the device delivered since the last call; their buffers are posted again (one rx kick). */
  receive(): VsockPacket[] {
    const out: VsockPacket[] = [];
    const used = this.rx.takeUsed();
    for (const { id, len } of used) {
      const addr = this.rxByHead.get(id);
      if (addr === undefined) throw new Error(`rx used element names head ${id}, which the guest never posted`);
      this.rxByHead.delete(id);
      if (len >= VSOCK_HDR_BYTES) {
        const packet = readVsockHeader(this.machine.memory.read(addr, VSOCK_HDR_BYTES));
        if (VSOCK_HDR_BYTES + packet.len !== len) throw new Error(`rx used length ${len} does not match the header's len ${packet.len}`);
        packet.payload = this.machine.memory.read(addr + VSOCK_HDR_BYTES, packet.len);
        out.push(packet);
      }
      this.postRx(addr);
    }
    if (used.length > 0) this.rx.kick();
    return out;
  }

  /** Send one packet: header fields default to a stream packet from this guest to the host. Kicks tx unless `kick` is false. */
  send(fields: Partial<VsockPacket> & { op: number }, options: { kick?: boolean; splitHeader?: boolean } = {}): void {
    const payload = fields.payload ?? new Uint8Array(0);
    if (payload.length > GuestVsock.TX_SLOT_BYTES - VSOCK_HDR_BYTES) throw new RangeError('payload larger than a tx slot');
    const slot = this.txSlots[this.nextTxSlot]!;
    this.nextTxSlot = (this.nextTxSlot + 1) % this.txSlots.length;
    const header = writeVsockHeader({
      srcCid: this.cid,
      dstCid: VSOCK_HOST_CID,
      srcPort: 0,
      dstPort: 0,
      len: payload.length,
      type: VSOCK_TYPE_STREAM,
      flags: 0,
      bufAlloc: this.bufAlloc,
      fwdCnt: 0,
      ...fields,
      payload,
    });
    this.machine.memory.write(slot, header);
    if (payload.length > 0) this.machine.memory.write(slot + VSOCK_HDR_BYTES, payload);
    const buffers: DriverBuffer[] = options.splitHeader
      ? [
          { addr: slot, len: 20, writable: false },
          { addr: slot + 20, len: VSOCK_HDR_BYTES - 20, writable: false },
        ]
      : [{ addr: slot, len: VSOCK_HDR_BYTES, writable: false }];
    if (payload.length > 0) buffers.push({ addr: slot + VSOCK_HDR_BYTES, len: payload.length, writable: false });
    this.tx.publish(this.tx.addChain(buffers));
    if (options.kick ?? true) this.tx.kick();
  }
}

/** Parse a 44-byte vsock header (payload left empty). */
export function readVsockHeader(bytes: Uint8Array): VsockPacket {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return {
    srcCid: v.getUint32(0, true) + v.getUint32(4, true) * FOUR_GIB,
    dstCid: v.getUint32(8, true) + v.getUint32(12, true) * FOUR_GIB,
    srcPort: v.getUint32(16, true),
    dstPort: v.getUint32(20, true),
    len: v.getUint32(24, true),
    type: v.getUint16(28, true),
    op: v.getUint16(30, true),
    flags: v.getUint32(32, true),
    bufAlloc: v.getUint32(36, true),
    fwdCnt: v.getUint32(40, true),
    payload: new Uint8Array(0),
  };
}

/** The 44 header bytes for `p` (CIDs up to 2^53). */
export function writeVsockHeader(p: VsockPacket): Uint8Array {
  const bytes = new Uint8Array(VSOCK_HDR_BYTES);
  const v = new DataView(bytes.buffer);
  v.setUint32(0, p.srcCid % FOUR_GIB, true);
  v.setUint32(4, Math.floor(p.srcCid / FOUR_GIB), true);
  v.setUint32(8, p.dstCid % FOUR_GIB, true);
  v.setUint32(12, Math.floor(p.dstCid / FOUR_GIB), true);
  v.setUint32(16, p.srcPort, true);
  v.setUint32(20, p.dstPort, true);
  v.setUint32(24, p.len, true);
  v.setUint16(28, p.type, true);
  v.setUint16(30, p.op, true);
  v.setUint32(32, p.flags, true);
  v.setUint32(36, p.bufAlloc, true);
  v.setUint32(40, p.fwdCnt, true);
  return bytes;
}
