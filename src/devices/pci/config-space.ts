/**
 * The 256-byte configuration space of one conventional PCI function with a type-0 header
 * (PCI Local Bus 3.0 §6.1, Figure 6-1).
 *
 * Every byte has a writable-bits mask: a guest write changes only the bits its mask allows, so
 * read-only registers (IDs, class code, capability pointers) cannot be altered and BAR sizing
 * works the way the spec describes it (§6.2.5.1): the low bits of a BAR that fall inside the
 * BAR's size are hard-wired to zero, so writing all-ones reads back ~(size - 1) plus the type
 * bits, from which Linux's __pci_read_base() computes the size.
 *
 * Device models set their registers with the set* methods (which bypass the masks) and hear of
 * guest writes through onWrite() watchers. The bus (pci-bus.ts) owns BAR placement: it reads
 * barAddress() and the command register after each configuration write.
 */

/** Size of the conventional configuration space (PCI Local Bus 3.0 §6.1). */
export const PCI_CONFIG_SPACE_SIZE = 256;

// Type-0 header registers (PCI Local Bus 3.0 §6.1, Figure 6-1).
export const PCI_VENDOR_ID = 0x00;
export const PCI_DEVICE_ID = 0x02;
export const PCI_COMMAND = 0x04;
export const PCI_STATUS = 0x06;
export const PCI_REVISION_ID = 0x08;
/** Programming interface (0x09), sub-class (0x0a), base class (0x0b): a 24-bit class code read as bytes 0x09–0x0b. */
export const PCI_CLASS_PROG = 0x09;
export const PCI_CACHE_LINE_SIZE = 0x0c;
export const PCI_LATENCY_TIMER = 0x0d;
export const PCI_HEADER_TYPE = 0x0e;
export const PCI_BAR0 = 0x10;
export const PCI_SUBSYSTEM_VENDOR_ID = 0x2c;
export const PCI_SUBSYSTEM_ID = 0x2e;
export const PCI_EXPANSION_ROM = 0x30;
export const PCI_CAPABILITY_LIST = 0x34;
export const PCI_INTERRUPT_LINE = 0x3c;
export const PCI_INTERRUPT_PIN = 0x3d;
/** First byte after the type-0 header: capabilities live in [0x40, 0x100) (§6.7). */
export const PCI_CAPABILITIES_START = 0x40;

/** Header type 0, single function (§6.2.1). Bit 7 would mean multi-function. */
export const PCI_HEADER_TYPE_NORMAL = 0x00;
/** Vendor ID that no function has: reads of absent functions return all-ones (§6.2.1). */
export const PCI_VENDOR_ID_NONE = 0xffff;

// Command register bits (§6.2.2).
export const PCI_COMMAND_IO = 1 << 0;
export const PCI_COMMAND_MEMORY = 1 << 1;
export const PCI_COMMAND_BUS_MASTER = 1 << 2;
export const PCI_COMMAND_PARITY = 1 << 6;
export const PCI_COMMAND_SERR = 1 << 8;
export const PCI_COMMAND_INTX_DISABLE = 1 << 10;
/** The command bits a guest may change here; the others are hard-wired to 0 (no special cycles, no VGA snooping...). */
const COMMAND_WRITABLE =
  PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_BUS_MASTER | PCI_COMMAND_PARITY | PCI_COMMAND_SERR | PCI_COMMAND_INTX_DISABLE;

// Status register bits (§6.2.3).
export const PCI_STATUS_INTERRUPT = 1 << 3;
export const PCI_STATUS_CAP_LIST = 1 << 4;

// Base address registers (§6.2.5.1).
export const PCI_BAR_COUNT = 6;
export const PCI_BAR_SPACE_IO = 1 << 0;
/** Memory BAR type field, bits 2:1: 00 = 32-bit, 10 = 64-bit. */
export const PCI_BAR_MEM_TYPE_64 = 0b10 << 1;
export const PCI_BAR_MEM_PREFETCH = 1 << 3;
/** A memory BAR's bits 3:0 carry its type; the address starts at bit 4, so the smallest BAR is 16 bytes. */
const BAR_MEM_TYPE_BITS = 0xf;
const MIN_MEMORY_BAR_SIZE = 16;
const FOUR_GIB = 0x1_0000_0000;

/** Interrupt pin values (§6.2.4): 0 = none, 1..4 = INTA#..INTD#. */
export const PCI_INTERRUPT_PIN_NONE = 0;
export const PCI_INTERRUPT_PIN_INTA = 1;

/** A capability's first two bytes are its ID and the offset of the next one (§6.7). */
const CAP_ID = 0;
const CAP_NEXT = 1;
const CAP_HEADER_BYTES = 2;
/** Capabilities are DWORD-aligned: the bottom two bits of a capability pointer are reserved (§6.7). */
const CAP_ALIGN = 4;

export interface PciHeaderIds {
  readonly vendorId: number;
  readonly deviceId: number;
  readonly revisionId: number;
  /** 24 bits: base class << 16 | sub-class << 8 | programming interface (PCI Code and ID Assignment spec). */
  readonly classCode: number;
  readonly subsystemVendorId?: number;
  readonly subsystemId?: number;
  /** INTx pin the function uses (PCI_INTERRUPT_PIN_INTA..) or none. */
  readonly interruptPin?: number;
}

export interface MemoryBarOptions {
  /** Size in bytes: a power of two, at least 16. */
  readonly size: number;
  /** 64-bit BARs take this BAR register and the next one. */
  readonly is64Bit: boolean;
  readonly prefetchable: boolean;
}

/** A memory BAR as declared by the device model. */
export interface MemoryBar extends MemoryBarOptions {
  readonly index: number;
}

type WriteWatcher = { readonly start: number; readonly end: number; readonly onWrite: () => void };

export class PciConfigSpace {
  private readonly bytes = new Uint8Array(PCI_CONFIG_SPACE_SIZE);
  private readonly view = new DataView(this.bytes.buffer);
  private readonly writable = new Uint8Array(PCI_CONFIG_SPACE_SIZE);
  private readonly bars: (MemoryBar | undefined)[] = new Array<MemoryBar | undefined>(PCI_BAR_COUNT).fill(undefined);
  private readonly watchers: WriteWatcher[] = [];
  private lastCapability = 0;
  private nextCapabilityOffset = PCI_CAPABILITIES_START;

  constructor(ids: PciHeaderIds) {
    this.setU16(PCI_VENDOR_ID, ids.vendorId);
    this.setU16(PCI_DEVICE_ID, ids.deviceId);
    this.setU8(PCI_REVISION_ID, ids.revisionId);
    this.setU8(PCI_CLASS_PROG, ids.classCode & 0xff);
    this.setU16(PCI_CLASS_PROG + 1, (ids.classCode >>> 8) & 0xffff);
    this.setU8(PCI_HEADER_TYPE, PCI_HEADER_TYPE_NORMAL);
    this.setU16(PCI_SUBSYSTEM_VENDOR_ID, ids.subsystemVendorId ?? 0);
    this.setU16(PCI_SUBSYSTEM_ID, ids.subsystemId ?? 0);
    this.setU8(PCI_INTERRUPT_PIN, ids.interruptPin ?? PCI_INTERRUPT_PIN_NONE);
    this.setWritable(PCI_COMMAND, 2, COMMAND_WRITABLE);
    // Linux writes the cache line size (pci_set_cacheline_size) and may set the latency timer;
    // both are storage only in a virtual machine. The interrupt line is scratch for the OS (§6.2.4).
    this.setWritable(PCI_CACHE_LINE_SIZE, 1, 0xff);
    this.setWritable(PCI_LATENCY_TIMER, 1, 0xff);
    this.setWritable(PCI_INTERRUPT_LINE, 1, 0xff);
    // No expansion ROM: the register stays 0 and read-only, so ROM sizing finds nothing (§6.2.5.2).
  }

  // ---- guest-side access (masks apply)

  /** A guest read of `data.length` bytes at `offset`; bytes past the end read as 0. */
  read(offset: number, data: Uint8Array): void {
    for (let i = 0; i < data.length; i++) {
      const at = offset + i;
      data[i] = at >= 0 && at < PCI_CONFIG_SPACE_SIZE ? this.bytes[at]! : 0;
    }
  }

  /** A guest write: only writable bits change; watchers overlapping the write are told afterwards. */
  write(offset: number, data: Uint8Array): void {
    let touched = false;
    for (let i = 0; i < data.length; i++) {
      const at = offset + i;
      if (at < 0 || at >= PCI_CONFIG_SPACE_SIZE) continue;
      const mask = this.writable[at]!;
      if (mask === 0) continue;
      this.bytes[at] = (this.bytes[at]! & ~mask) | (data[i]! & mask);
      touched = true;
    }
    if (!touched) return;
    const end = offset + data.length;
    for (const w of this.watchers) {
      if (offset < w.end && w.start < end) w.onWrite();
    }
  }

  // ---- device-side access (masks bypassed)

  getU8(offset: number): number {
    return this.view.getUint8(offset);
  }
  getU16(offset: number): number {
    return this.view.getUint16(offset, true);
  }
  getU32(offset: number): number {
    return this.view.getUint32(offset, true);
  }
  setU8(offset: number, value: number): void {
    this.view.setUint8(offset, value);
  }
  setU16(offset: number, value: number): void {
    this.view.setUint16(offset, value, true);
  }
  setU32(offset: number, value: number): void {
    this.view.setUint32(offset, value >>> 0, true);
  }

  /** Make the bits of `mask` (a little-endian value `width` bytes wide) guest-writable at `offset`. */
  setWritable(offset: number, width: number, mask: number): void {
    for (let i = 0; i < width; i++) this.writable[offset + i] = Math.floor(mask / 2 ** (8 * i)) & 0xff;
  }

  /** Call `onWrite` after every guest write that reaches a writable bit in [offset, offset + length). */
  onWrite(offset: number, length: number, onWrite: () => void): void {
    this.watchers.push({ start: offset, end: offset + length, onWrite });
  }

  // ---- header fields

  get vendorId(): number {
    return this.getU16(PCI_VENDOR_ID);
  }
  get command(): number {
    return this.getU16(PCI_COMMAND);
  }
  get memoryDecodeEnabled(): boolean {
    return (this.command & PCI_COMMAND_MEMORY) !== 0;
  }
  get busMasterEnabled(): boolean {
    return (this.command & PCI_COMMAND_BUS_MASTER) !== 0;
  }
  get intxDisabled(): boolean {
    return (this.command & PCI_COMMAND_INTX_DISABLE) !== 0;
  }

  /** Set or clear a device-owned status bit (the interrupt status, PCI_STATUS_INTERRUPT). */
  setStatusBit(bit: number, on: boolean): void {
    const status = this.getU16(PCI_STATUS);
    this.setU16(PCI_STATUS, on ? status | bit : status & ~bit);
  }

  // ---- BARs

  /** Declare memory BAR `index` (PCI Local Bus 3.0 §6.2.5.1). */
  addMemoryBar(index: number, options: MemoryBarOptions): MemoryBar {
    const { size, is64Bit, prefetchable } = options;
    const last = is64Bit ? index + 1 : index;
    if (!Number.isInteger(index) || index < 0 || last >= PCI_BAR_COUNT) {
      throw new RangeError(`BAR ${index} does not exist${is64Bit ? ' (a 64-bit BAR needs two registers)' : ''}`);
    }
    if (this.bars[index] !== undefined || (is64Bit && this.bars[index + 1] !== undefined) || this.isUpperHalf(index) || this.isUpperHalf(last)) {
      throw new RangeError(`BAR ${index} is already in use`);
    }
    if (!isPowerOfTwo(size) || size < MIN_MEMORY_BAR_SIZE) {
      throw new RangeError(`BAR size must be a power of two of at least ${MIN_MEMORY_BAR_SIZE} bytes, got ${size}`);
    }
    if (!is64Bit && size > FOUR_GIB / 2) throw new RangeError(`a 32-bit BAR cannot be ${size} bytes`);
    const bar: MemoryBar = { index, size, is64Bit, prefetchable };
    this.bars[index] = bar;
    const offset = PCI_BAR0 + 4 * index;
    const typeBits = (is64Bit ? PCI_BAR_MEM_TYPE_64 : 0) | (prefetchable ? PCI_BAR_MEM_PREFETCH : 0);
    this.setU32(offset, typeBits);
    // Address bits below the size are hard-wired to 0: that is what makes sizing by all-ones work.
    const lowMask = size >= FOUR_GIB ? 0 : (~(size - 1) & ~BAR_MEM_TYPE_BITS) >>> 0;
    this.setWritable(offset, 4, lowMask);
    if (is64Bit) {
      const highMask = size >= FOUR_GIB ? (~(size / FOUR_GIB - 1)) >>> 0 : 0xffffffff;
      this.setU32(offset + 4, 0);
      this.setWritable(offset + 4, 4, highMask);
    }
    return bar;
  }

  /** The memory BAR declared at `index`, if any (the upper half of a 64-bit BAR is not one). */
  bar(index: number): MemoryBar | undefined {
    return this.bars[index];
  }

  /** Declared memory BARs, lowest index first. */
  memoryBars(): MemoryBar[] {
    return this.bars.filter((b): b is MemoryBar => b !== undefined);
  }

  /**
   * The address BAR `index` decodes, or undefined if the BAR does not exist or its address is not
   * representable as a safe integer (a 64-bit BAR being sized reads back as ~(size - 1)).
   */
  barAddress(index: number): number | undefined {
    const bar = this.bars[index];
    if (bar === undefined) return undefined;
    const offset = PCI_BAR0 + 4 * index;
    const low = (this.getU32(offset) & ~BAR_MEM_TYPE_BITS) >>> 0;
    const high = bar.is64Bit ? this.getU32(offset + 4) : 0;
    const address = high * FOUR_GIB + low;
    return Number.isSafeInteger(address) ? address : undefined;
  }

  /** Program BAR `index` as firmware would (the bus allocator); the address must be size-aligned. */
  setBarAddress(index: number, address: number): void {
    const bar = this.bars[index];
    if (bar === undefined) throw new RangeError(`BAR ${index} is not declared`);
    if (!Number.isSafeInteger(address) || address < 0 || address % bar.size !== 0) {
      throw new RangeError(`BAR ${index} address 0x${address.toString(16)} is not aligned to its size 0x${bar.size.toString(16)}`);
    }
    if (!bar.is64Bit && address + bar.size > FOUR_GIB) throw new RangeError(`32-bit BAR ${index} cannot be placed above 4 GiB`);
    const offset = PCI_BAR0 + 4 * index;
    const typeBits = this.getU32(offset) & BAR_MEM_TYPE_BITS;
    this.setU32(offset, ((address % FOUR_GIB) | typeBits) >>> 0);
    if (bar.is64Bit) this.setU32(offset + 4, Math.floor(address / FOUR_GIB));
  }

  private isUpperHalf(index: number): boolean {
    const below = index > 0 ? this.bars[index - 1] : undefined;
    return below !== undefined && below.is64Bit;
  }

  // ---- capabilities (§6.7)

  /**
   * Append a capability of `length` bytes (including its ID and next-pointer bytes) to the list
   * and return its offset. The body starts zeroed and read-only; the caller fills it with set*
   * and opens writable bits with setWritable.
   */
  addCapability(id: number, length: number): number {
    if (!Number.isInteger(length) || length < CAP_HEADER_BYTES) throw new RangeError(`capability length ${length} is too short`);
    const offset = this.nextCapabilityOffset;
    if (offset + length > PCI_CONFIG_SPACE_SIZE) throw new RangeError(`no room for a ${length}-byte capability in configuration space`);
    this.setU8(offset + CAP_ID, id);
    this.setU8(offset + CAP_NEXT, 0);
    if (this.lastCapability === 0) this.setU8(PCI_CAPABILITY_LIST, offset);
    else this.setU8(this.lastCapability + CAP_NEXT, offset);
    this.lastCapability = offset;
    this.nextCapabilityOffset = offset + Math.ceil(length / CAP_ALIGN) * CAP_ALIGN;
    this.setStatusBit(PCI_STATUS_CAP_LIST, true);
    return offset;
  }
}

/** Whether `n` is a power of two (works beyond 2^32, where bitwise operators do not). */
export function isPowerOfTwo(n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && 2 ** Math.round(Math.log2(n)) === n;
}
