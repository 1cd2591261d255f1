/**
 * Address-range dispatch for port I/O and MMIO exits.
 *
 * One `Bus` instance serves the 16-bit port-I/O space, another the 64-bit physical MMIO space.
 * A device registers the range it decodes and receives accesses as (offset within its range, data).
 * Physical addresses fit in a JS number: x86_64 physical addresses are at most 52 bits (Intel SDM
 * vol. 3A 4.1.4, MAXPHYADDR), below Number.MAX_SAFE_INTEGER (2^53 - 1).
 */

/** A device decoding a range of a bus. `data.length` is the access width: 1, 2, 4 or 8 bytes. */
export interface BusDevice {
  /** Fill `data` with the value read at `offset` (little-endian). Untouched bytes read as 0. */
  read(offset: number, data: Uint8Array): void;
  /** Handle a guest write of `data` at `offset` (little-endian). */
  write(offset: number, data: Uint8Array): void;
}

/** One registered range. */
export interface BusRange {
  readonly base: number;
  readonly length: number;
  readonly name: string;
  readonly device: BusDevice;
}

export class BusConflictError extends Error {
  constructor(
    readonly bus: string,
    readonly range: { base: number; length: number; name: string },
    readonly existing: BusRange,
  ) {
    super(
      `${bus}: cannot register ${range.name} at 0x${range.base.toString(16)}+0x${range.length.toString(16)}: ` +
        `it overlaps ${existing.name} at 0x${existing.base.toString(16)}+0x${existing.length.toString(16)}; ` +
        `move one of the two devices`,
    );
    this.name = 'BusConflictError';
  }
}

/**
 * Sorted, non-overlapping ranges with binary-search lookup. Lookups allocate nothing: they run
 * on every port-I/O and MMIO exit.
 */
export class Bus {
  private ranges: BusRange[] = [];
  /** Accesses that hit no device (counted, not fatal: real buses float unclaimed reads high). */
  unclaimedReads = 0;
  unclaimedWrites = 0;

  constructor(readonly name: string) {}

  insert(base: number, length: number, device: BusDevice, name: string): void {
    if (!Number.isSafeInteger(base) || !Number.isSafeInteger(length) || base < 0 || length <= 0) {
      throw new RangeError(`${this.name}: invalid range for ${name}: base ${base}, length ${length}`);
    }
    const end = base + length;
    for (const r of this.ranges) {
      if (base < r.base + r.length && r.base < end) {
        throw new BusConflictError(this.name, { base, length, name }, r);
      }
    }
    this.ranges.push({ base, length, name, device });
    this.ranges.sort((a, b) => a.base - b.base);
  }

  /** Remove the range starting exactly at `base`. Returns whether one was removed. */
  remove(base: number): boolean {
    const i = this.ranges.findIndex((r) => r.base === base);
    if (i < 0) return false;
    this.ranges.splice(i, 1);
    return true;
  }

  /** The range containing `addr`, or undefined. */
  find(addr: number): BusRange | undefined {
    const rs = this.ranges;
    let lo = 0;
    let hi = rs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const r = rs[mid]!;
      if (addr < r.base) hi = mid - 1;
      else if (addr >= r.base + r.length) lo = mid + 1;
      else return r;
    }
    return undefined;
  }

  /**
   * Dispatch a read. An access must lie wholly inside one device's range; one that does not, or
   * that hits nothing, reads as all-ones (what an unclaimed ISA/PCI read returns) and returns false.
   */
  read(addr: number, data: Uint8Array): boolean {
    const r = this.find(addr);
    if (r === undefined || addr + data.length > r.base + r.length) {
      data.fill(0xff);
      this.unclaimedReads++;
      return false;
    }
    data.fill(0);
    r.device.read(addr - r.base, data);
    return true;
  }

  /** Dispatch a write; one that hits no device (or straddles a range end) is dropped and returns false. */
  write(addr: number, data: Uint8Array): boolean {
    const r = this.find(addr);
    if (r === undefined || addr + data.length > r.base + r.length) {
      this.unclaimedWrites++;
      return false;
    }
    r.device.write(addr - r.base, data);
    return true;
  }

  list(): readonly BusRange[] {
    return this.ranges;
  }
}
