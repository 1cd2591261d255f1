/**
 * Guest RAM as the VMM sees it: a few host regions, each a zero-copy Uint8Array/DataView, found
 * by guest physical address (GPA). Every accessor is bounds-checked and throws GuestMemoryError
 * for anything outside RAM, so a bad guest-supplied address (a virtio descriptor, a DMA
 * pointer) can never read or write VMM memory.
 *
 * It works over plain ArrayBuffers (unit tests) or anonymous mmaps (real VMs, `GuestMemory.anonymous`);
 * registering the mapped regions as KVM memory slots is the separate step `registerWith(vm)`.
 */
import { MAP_ANONYMOUS, MAP_NORESERVE, MAP_PRIVATE, PROT_READ, PROT_WRITE, adviseHugePages, mmapAligned, munmap, viewMapping, type HostMapping } from '../kvm/libc.js';
import type { Vm } from '../kvm/vm.js';
import { GiB, PAGE_SIZE, ramRanges, type GpaRange } from './layout.js';

/** An access outside guest RAM. */
export class GuestMemoryError extends RangeError {
  constructor(
    readonly gpa: number,
    readonly length: number,
    readonly why: string,
  ) {
    super(`guest memory access at GPA ${fmt(gpa)} length ${fmt(length)}: ${why}`);
    this.name = 'GuestMemoryError';
  }
}

function fmt(v: number): string {
  return Number.isSafeInteger(v) && v >= 0 ? `0x${v.toString(16)}` : String(v);
}

/** One contiguous piece of guest RAM backed by one host buffer. */
export interface GuestRegion {
  /** First guest physical address. */
  readonly gpa: number;
  readonly size: number;
  readonly bytes: Uint8Array;
  readonly view: DataView;
  /** Host virtual address of `bytes` (for KVM); undefined for plain ArrayBuffer regions. */
  readonly hostAddress: bigint | undefined;
}

/**
 * Host mappings are cut into pieces of at most this size: Node 20 cannot view more than 4 GiB
 * as one ArrayBuffer, and koffi aborts the process beyond that.
 */
export const MAX_REGION_BYTES = 1 * GiB;
/** A transparent huge page on x86-64 (a PMD mapping): guest RAM pieces start on this boundary. */
export const HUGE_PAGE_BYTES = 2 * 1024 * 1024;

export class GuestMemory {
  readonly regions: readonly GuestRegion[];
  readonly totalBytes: number;
  private readonly mappings: HostMapping[];
  private readonly scratch = new Uint8Array(8);
  private readonly scratchView = new DataView(this.scratch.buffer);
  private closed = false;

  private constructor(regions: GuestRegion[], mappings: HostMapping[]) {
    regions.sort((a, b) => a.gpa - b.gpa);
    for (let i = 1; i < regions.length; i++) {
      const prev = regions[i - 1]!;
      if (prev.gpa + prev.size > regions[i]!.gpa) {
        throw new RangeError(`guest memory regions overlap at GPA ${fmt(regions[i]!.gpa)}`);
      }
    }
    this.regions = regions;
    this.totalBytes = regions.reduce((n, r) => n + r.size, 0);
    this.mappings = mappings;
  }

  /**
   * Guest memory over caller-owned buffers (no KVM needed): for unit tests and device test drivers.
   * `hostAddress`, when given, must be the host virtual address of `bytes` (a mapping the caller
   * made); devices then may hand it to system calls (virtio-blk's immediate transfers).
   */
  static fromBuffers(pieces: readonly { gpa: number; bytes: Uint8Array; hostAddress?: bigint }[]): GuestMemory {
    const regions = pieces.map((p) => {
      if (!Number.isSafeInteger(p.gpa) || p.gpa < 0) throw new RangeError(`region GPA must be a non-negative integer, got ${p.gpa}`);
      return {
        gpa: p.gpa,
        size: p.bytes.length,
        bytes: p.bytes,
        view: new DataView(p.bytes.buffer, p.bytes.byteOffset, p.bytes.byteLength),
        hostAddress: p.hostAddress,
      };
    });
    return new GuestMemory(regions, []);
  }

  /**
   * Anonymous, lazily-populated host memory for `ranges` (see layout.ts ramRanges), cut into
   * pieces of at most MAX_REGION_BYTES. MAP_NORESERVE: a large guest costs only what it touches.
   *
   * Each piece starts on a 2 MiB boundary and, unless `transparentHugePages` is false, is advised
   * MADV_HUGEPAGE, as QEMU and Cloud Hypervisor do with guest RAM: where the host has transparent
   * huge pages (enabled "always" or "madvise"), KVM then maps the guest with 2 MiB pages and every
   * guest TLB miss walks a shorter two-dimensional page table. (Firecracker's huge_pages "2M",
   * explicit hugetlbfs pages, is something else and not supported.)
   */
  static anonymous(ranges: readonly GpaRange[], options: { readonly transparentHugePages?: boolean } = {}): GuestMemory {
    const hugePages = options.transparentHugePages ?? true;
    const regions: GuestRegion[] = [];
    const mappings: HostMapping[] = [];
    try {
      for (const range of ranges) {
        if (range.size % PAGE_SIZE !== 0 || range.start % PAGE_SIZE !== 0) {
          throw new RangeError(`guest RAM range at ${fmt(range.start)} size ${fmt(range.size)} is not page-aligned`);
        }
        for (let off = 0; off < range.size; off += MAX_REGION_BYTES) {
          const size = Math.min(MAX_REGION_BYTES, range.size - off);
          const m = mmapAligned(size, HUGE_PAGE_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, `allocate ${size} bytes of guest RAM`);
          mappings.push(m);
          if (hugePages) adviseHugePages(m);
          const ab = viewMapping(m);
          regions.push({ gpa: range.start + off, size, bytes: new Uint8Array(ab), view: new DataView(ab), hostAddress: m.address });
        }
      }
    } catch (e) {
      for (const m of mappings) munmap(m);
      throw e;
    }
    return new GuestMemory(regions, mappings);
  }

  /** `ramBytes` of anonymous RAM laid out around the MMIO hole (default [3 GiB, 4 GiB)). */
  static create(ramBytes: number, hole?: GpaRange, options: { readonly transparentHugePages?: boolean } = {}): GuestMemory {
    return GuestMemory.anonymous(ramRanges(ramBytes, hole), options);
  }

  /**
   * Register every region as a KVM memory slot, numbered from `firstSlot`. Returns the next free
   * slot number. Fails for regions over plain ArrayBuffers (KVM needs a host address it can pin).
   */
  registerWith(vm: Vm, firstSlot = 0): number {
    let slot = firstSlot;
    for (const r of this.regions) {
      if (r.hostAddress === undefined) {
        throw new Error(`guest memory region at GPA ${fmt(r.gpa)} is a plain buffer, which KVM cannot map; build it with GuestMemory.anonymous/create`);
      }
      vm.setUserMemoryRegion({ slot: slot++, flags: 0, guestPhysAddr: r.gpa, memorySize: r.size, userspaceAddr: r.hostAddress });
    }
    return slot;
  }

  /** Whether [gpa, gpa + length) is entirely guest RAM. */
  contains(gpa: number, length: number): boolean {
    try {
      this.check(gpa, length);
      return true;
    } catch {
      return false;
    }
  }

  /** Copy guest bytes at `gpa` into `out` (the access may span adjacent regions). */
  readInto(gpa: number, out: Uint8Array): void {
    this.check(gpa, out.length);
    let done = 0;
    while (done < out.length) {
      const r = this.regionAt(gpa + done)!;
      const off = gpa + done - r.gpa;
      const n = Math.min(out.length - done, r.size - off);
      out.set(r.bytes.subarray(off, off + n), done);
      done += n;
    }
  }

  /** A copy of `length` guest bytes at `gpa`. */
  read(gpa: number, length: number): Uint8Array {
    this.check(gpa, length);
    const out = new Uint8Array(length);
    this.readInto(gpa, out);
    return out;
  }

  /** Copy `data` into guest memory at `gpa` (the access may span adjacent regions). */
  write(gpa: number, data: Uint8Array): void {
    this.check(gpa, data.length);
    let done = 0;
    while (done < data.length) {
      const r = this.regionAt(gpa + done)!;
      const off = gpa + done - r.gpa;
      const n = Math.min(data.length - done, r.size - off);
      r.bytes.set(data.subarray(done, done + n), off);
      done += n;
    }
  }

  /** Fill [gpa, gpa + length) with `value`. */
  fill(gpa: number, length: number, value = 0): void {
    this.check(gpa, length);
    let done = 0;
    while (done < length) {
      const r = this.regionAt(gpa + done)!;
      const off = gpa + done - r.gpa;
      const n = Math.min(length - done, r.size - off);
      r.bytes.fill(value, off, off + n);
      done += n;
    }
  }

  /**
   * A zero-copy view of `length` guest bytes at `gpa`. It must lie inside one host region
   * (regions are at most MAX_REGION_BYTES and split at the MMIO hole); use read() otherwise.
   */
  slice(gpa: number, length: number): Uint8Array {
    this.check(gpa, length);
    const r = this.regionAt(gpa);
    if (r === undefined) return new Uint8Array(0); // zero-length access at the very end of RAM
    const off = gpa - r.gpa;
    if (off + length > r.size) {
      throw new GuestMemoryError(gpa, length, `spans two host regions (boundary at ${fmt(r.gpa + r.size)}); use read() for a copy`);
    }
    return r.bytes.subarray(off, off + length);
  }

  readU8(gpa: number): number {
    return this.at(gpa, 1).getUint8(this.off);
  }
  readU16(gpa: number): number {
    return this.at(gpa, 2).getUint16(this.off, true);
  }
  readU32(gpa: number): number {
    return this.at(gpa, 4).getUint32(this.off, true);
  }
  readU64(gpa: number): bigint {
    return this.at(gpa, 8).getBigUint64(this.off, true);
  }

  writeU8(gpa: number, value: number): void {
    this.at(gpa, 1).setUint8(this.off, value);
    this.flushScratch(gpa, 1);
  }
  writeU16(gpa: number, value: number): void {
    this.at(gpa, 2).setUint16(this.off, value, true);
    this.flushScratch(gpa, 2);
  }
  writeU32(gpa: number, value: number): void {
    this.at(gpa, 4).setUint32(this.off, value >>> 0, true);
    this.flushScratch(gpa, 4);
  }
  writeU64(gpa: number, value: bigint): void {
    this.at(gpa, 8).setBigUint64(this.off, BigInt.asUintN(64, value), true);
    this.flushScratch(gpa, 8);
  }

  /** Unmap host memory. Views handed out before become detached (reads of length 0). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const m of this.mappings) munmap(m);
  }

  // ---- internals

  /** Offset into the DataView returned by the last at() call. */
  private off = 0;
  private viaScratch = false;

  /**
   * The DataView holding [gpa, gpa + size) and, in `off`, the offset there. An access that
   * straddles two adjacent regions goes through an 8-byte scratch buffer (flushScratch writes it back).
   */
  private at(gpa: number, size: number): DataView {
    this.check(gpa, size);
    const r = this.regionAt(gpa)!;
    const off = gpa - r.gpa;
    if (off + size <= r.size) {
      this.off = off;
      this.viaScratch = false;
      return r.view;
    }
    this.readInto(gpa, this.scratch.subarray(0, size));
    this.off = 0;
    this.viaScratch = true;
    return this.scratchView;
  }

  private flushScratch(gpa: number, size: number): void {
    if (this.viaScratch) this.write(gpa, this.scratch.subarray(0, size));
  }

  /** Index in `regions` of the region holding `gpa`, or -1 (binary search, no allocation: hot paths use it). */
  regionIndexAt(gpa: number): number {
    const rs = this.regions;
    let lo = 0;
    let hi = rs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const r = rs[mid]!;
      if (gpa < r.gpa) hi = mid - 1;
      else if (gpa >= r.gpa + r.size) lo = mid + 1;
      else return mid;
    }
    return -1;
  }

  private regionAt(gpa: number): GuestRegion | undefined {
    const i = this.regionIndexAt(gpa);
    return i < 0 ? undefined : this.regions[i];
  }


  /** Throw unless [gpa, gpa + length) is all RAM (regions that touch count as contiguous). */
  private check(gpa: number, length: number): void {
    if (this.closed) throw new GuestMemoryError(gpa, length, 'guest memory has been closed');
    if (!Number.isSafeInteger(gpa) || gpa < 0) throw new GuestMemoryError(gpa, length, 'the address is not a non-negative integer');
    if (!Number.isSafeInteger(length) || length < 0) throw new GuestMemoryError(gpa, length, 'the length is not a non-negative integer');
    if (!Number.isSafeInteger(gpa + length)) throw new GuestMemoryError(gpa, length, 'the range ends beyond 2^53');
    let pos = gpa;
    const end = gpa + length;
    let r = this.regionAt(pos);
    if (r === undefined) {
      // A zero-length access is fine exactly at the end of a region.
      if (length === 0 && this.regions.some((x) => x.gpa + x.size === gpa)) return;
      throw new GuestMemoryError(gpa, length, `the address is not guest RAM (${this.describe()})`);
    }
    for (;;) {
      const rEnd = r.gpa + r.size;
      if (end <= rEnd) return;
      pos = rEnd;
      r = this.regionAt(pos);
      if (r === undefined) {
        throw new GuestMemoryError(gpa, length, `the range runs past the end of RAM at ${fmt(pos)} (${this.describe()})`);
      }
    }
  }

  /** "RAM is [0x0, 0xc0000000) [0x100000000, 0x140000000)", merging adjacent regions. */
  describe(): string {
    const spans: [number, number][] = [];
    for (const r of this.regions) {
      const last = spans[spans.length - 1];
      if (last && last[1] === r.gpa) last[1] = r.gpa + r.size;
      else spans.push([r.gpa, r.gpa + r.size]);
    }
    return `RAM is ${spans.map(([s, e]) => `[${fmt(s)}, ${fmt(e)})`).join(' ') || 'empty'}`;
  }
}
