/**
 * A reusable array of struct iovec naming guest buffers by their host addresses, for system calls
 * that move data straight between a file descriptor and guest RAM (readv/writev for virtio-net,
 * preadv2/pwritev2 for virtio-blk). Node's own readv/writev want one Uint8Array view per buffer,
 * which the device would allocate per frame or request, and report EAGAIN by throwing; an iovec
 * array filled in place allocates nothing, and the raw calls return the errno.
 *
 * Addresses come only from pieces of guest RAM regions that the caller took from bounds-checked
 * descriptor chains (queue.ts): `add` takes a region's buffer, an offset and a length inside it,
 * and refuses a buffer that is not one of the regions' (so nothing else can be named). Guest memory
 * without host addresses (plain buffers in unit tests) has no regions here: `usable` is false and
 * the device keeps its view-based path.
 */
import { IOVEC_SIZE, nativeCells } from '../../kvm/libc.js';
import type { GuestMemory } from '../../memory/guest-memory.js';

const FOUR_GIB = 2 ** 32;

export class HostIovecs {
  /** The struct iovec array (IOVEC_SIZE bytes each), in native memory that never moves. */
  readonly bytes: Uint8Array;
  /** Its address, what the system call takes (libc.ts: an integer argument, nothing to look up per call). */
  readonly address: number;
  /** The native memory's handle, kept referenced as long as this array lives. */
  readonly native: unknown;
  /** Entries filled since reset(). */
  count = 0;
  /** Bytes named by the entries since reset(). */
  length = 0;
  private readonly view: DataView;
  /** Host address of each guest RAM region's buffer (user-space addresses are below 2^47: exact as numbers). */
  private addresses = new Map<Uint8Array, number>();
  /** Where the last entry ends, in which region buffer: a piece that continues it is merged. */
  private lastBuffer: Uint8Array | undefined;
  private lastEnd = 0;

  constructor(readonly capacity: number) {
    const cells = nativeCells(capacity * IOVEC_SIZE);
    this.native = cells.pointer;
    this.address = cells.address;
    this.view = cells.view;
    this.bytes = new Uint8Array(cells.view.buffer, cells.view.byteOffset, cells.view.byteLength);
  }

  /** Learn the regions of `memory` (at device activation). */
  useMemory(memory: GuestMemory): void {
    this.addresses = new Map();
    for (const region of memory.regions) {
      if (region.hostAddress !== undefined) this.addresses.set(region.bytes, Number(region.hostAddress));
    }
    this.reset();
  }

  /** Learn the regions `other` knows (one lookup table shared, nothing copied): for arrays made per request. */
  useRegionsOf(other: HostIovecs): void {
    this.addresses = other.addresses;
    this.reset();
  }

  /** Whether the memory has host addresses at all. */
  get usable(): boolean {
    return this.addresses.size > 0;
  }

  reset(): void {
    this.count = 0;
    this.length = 0;
    this.lastBuffer = undefined;
  }

  /**
   * Append `length` bytes at `offset` in region buffer `buffer`, merged with the previous entry
   * when they continue it. False (nothing added) when the array is full or `buffer` is not a
   * region's buffer.
   */
  add(buffer: Uint8Array, offset: number, length: number): boolean {
    if (buffer === this.lastBuffer && offset === this.lastEnd) {
      const at = (this.count - 1) * IOVEC_SIZE + 8;
      this.view.setUint32(at, this.view.getUint32(at, true) + length, true);
      this.lastEnd += length;
      this.length += length;
      return true;
    }
    const base = this.addresses.get(buffer);
    if (base === undefined || this.count === this.capacity) return false;
    const address = base + offset;
    const at = this.count * IOVEC_SIZE;
    this.view.setUint32(at, address % FOUR_GIB, true);
    this.view.setUint32(at + 4, Math.floor(address / FOUR_GIB), true);
    this.view.setUint32(at + 8, length, true);
    this.view.setUint32(at + 12, 0, true);
    this.count++;
    this.length += length;
    this.lastBuffer = buffer;
    this.lastEnd = offset + length;
    return true;
  }
}
