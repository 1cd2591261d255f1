/**
 * What the loaders and boot-structure writers need from guest memory, and nothing more, so they
 * do not depend on src/memory: the VMM adapts its guest memory object to this interface (one
 * method), and tests use a plain buffer.
 */
import type { RamRegion } from '../arch/x86_64/layout.js';

/** Writes bytes into guest-physical memory. */
export interface GuestMemoryWriter {
  /**
   * Copy `bytes` to guest-physical address `gpa`. Must throw if [gpa, gpa + bytes.length) is not
   * entirely backed by guest RAM; callers check placements against RAM regions first.
   */
  write(gpa: number, bytes: Uint8Array): void;
}

/** Bytes destined for one guest-physical address. */
export interface GuestPlacement {
  readonly gpa: number;
  readonly bytes: Uint8Array;
}

/** A half-open guest-physical range [start, end). */
export interface GuestRange {
  readonly start: number;
  readonly end: number;
}

/** Write a list of placements. */
export function writePlacements(mem: GuestMemoryWriter, placements: readonly GuestPlacement[]): void {
  for (const p of placements) mem.write(p.gpa, p.bytes);
}

/** True when [gpa, gpa + size) lies entirely inside one RAM region. */
export function isInRam(regions: readonly RamRegion[], gpa: number, size: number): boolean {
  return regions.some((r) => gpa >= r.gpa && gpa + size <= r.gpa + r.size);
}

/** True when two half-open ranges share at least one byte. */
export function rangesOverlap(a: GuestRange, b: GuestRange): boolean {
  return a.start < b.end && b.start < a.end;
}

/** Zero bytes for filling, shared and never written. */
const ZERO_CHUNK = new Uint8Array(1024 * 1024);

/**
 * Write `length` zero bytes at `gpa` (an ELF segment's bss, for instance: guest memory that was
 * used before, e.g. across a reboot, must not leak into the new kernel's bss).
 */
export function zeroGuestRange(mem: GuestMemoryWriter, gpa: number, length: number): void {
  for (let done = 0; done < length; done += ZERO_CHUNK.length) {
    const n = Math.min(ZERO_CHUNK.length, length - done);
    mem.write(gpa + done, ZERO_CHUNK.subarray(0, n));
  }
}

/**
 * A guest memory over plain buffers, one per RAM region, bounds-checked. For tests and for tools
 * that want to inspect what the loaders write without a VM.
 */
export class BufferGuestMemory implements GuestMemoryWriter {
  readonly buffers: readonly { readonly gpa: number; readonly bytes: Uint8Array }[];

  constructor(regions: readonly RamRegion[]) {
    this.buffers = regions.map((r) => ({ gpa: r.gpa, bytes: new Uint8Array(r.size) }));
  }

  write(gpa: number, bytes: Uint8Array): void {
    this.slice(gpa, bytes.length).set(bytes);
  }

  read(gpa: number, length: number): Uint8Array {
    return this.slice(gpa, length).slice();
  }

  private slice(gpa: number, length: number): Uint8Array {
    const b = this.buffers.find((x) => gpa >= x.gpa && gpa + length <= x.gpa + x.bytes.length);
    if (b === undefined) {
      throw new RangeError(`guest range [0x${gpa.toString(16)}, +${length}) is not inside guest RAM`);
    }
    return b.bytes.subarray(gpa - b.gpa, gpa - b.gpa + length);
  }
}
