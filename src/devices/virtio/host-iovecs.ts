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
 *
 * `add` runs once per descriptor of every block request and network frame, so it does 32-bit
 * integer arithmetic only: a host address is kept as two words and the carry between them found
 * by comparison. Measured in the emulated nested host (TCG), where floating-point instructions
 * are soft-float calls: a loop splitting a 47-bit address with divide and floor took 299 ns per
 * round against 81 ns in words (native: 8.7 against 6.0), and a 1 MiB read's 254 pieces pay it 254
 * times (bench/profile/blk-stream.ts).
 */
import { IOVEC_SIZE, nativeCells } from '../../kvm/libc.js';
import type { GuestMemory } from '../../memory/guest-memory.js';

const FOUR_GIB = 2 ** 32;
/** struct iovec { void *iov_base; size_t iov_len; } on a 64-bit host: IOVEC_SIZE bytes, four 32-bit words. */
const WORDS_PER_IOVEC = IOVEC_SIZE / 4;
/** Longest piece, and furthest offset into a region, add() takes: a descriptor's len is 32 bits (virtio 1.2 §2.7.5), a region at most 1 GiB (guest-memory.ts). */
const MAX_IOVEC_PIECE = 0xffff_ffff;

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
  /**
   * The array as 32-bit words, four per struct iovec (iov_base low, high; iov_len low, high), in
   * the host's byte order, which is the struct's. A typed-array store per word costs less than a
   * DataView call, and this runs per descriptor of every block request and network frame.
   */
  private readonly words: Uint32Array;
  /** Host address of each guest RAM region's buffer (user-space addresses are below 2^47: exact as numbers). */
  private addresses = new Map<Uint8Array, number>();
  /** Where the last entry ends, in which region buffer: a piece that continues it is merged. */
  private lastBuffer: Uint8Array | undefined;
  private lastEnd = 0;
  /** The region buffer looked up last and its host address as low and high words: a chain's pieces nearly always share one. */
  private cachedBuffer: Uint8Array | undefined;
  private readonly cachedBase = new Uint32Array(2);

  constructor(readonly capacity: number) {
    const cells = nativeCells(capacity * IOVEC_SIZE);
    this.native = cells.pointer;
    this.address = cells.address;
    this.words = new Uint32Array(cells.view.buffer, cells.view.byteOffset, capacity * WORDS_PER_IOVEC);
    this.bytes = new Uint8Array(cells.view.buffer, cells.view.byteOffset, cells.view.byteLength);
  }

  /** Learn the regions of `memory` (at device activation). */
  useMemory(memory: GuestMemory): void {
    this.addresses = new Map();
    for (const region of memory.regions) {
      if (region.hostAddress !== undefined) this.addresses.set(region.bytes, Number(region.hostAddress));
    }
    this.cachedBuffer = undefined;
    this.reset();
  }

  /** Learn the regions `other` knows (one lookup table shared, nothing copied): for arrays made per request. */
  useRegionsOf(other: HostIovecs): void {
    this.addresses = other.addresses;
    this.cachedBuffer = undefined;
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
    // 32-bit integer arithmetic only: `x >>> 0` keeps V8 in machine words, and in the emulated
    // nested host a floating-point divide, floor or multiply is a soft-float call costing several
    // times an integer one (see the file comment).
    const words = this.words;
    if (buffer === this.lastBuffer && offset === this.lastEnd) {
      // iov_len is 64 bits: a chain may reach 2^32 bytes (queue.ts), one more than a word holds.
      const at = (this.count - 1) * WORDS_PER_IOVEC + 2;
      const low = (words[at]! + length) >>> 0;
      if (low < length) words[at + 1]!++;
      words[at] = low;
      this.lastEnd += length;
      this.length += length;
      return true;
    }
    if (buffer !== this.cachedBuffer) {
      const found = this.addresses.get(buffer);
      if (found === undefined) return false;
      this.cachedBuffer = buffer;
      this.cachedBase[1] = Math.floor(found / FOUR_GIB);
      this.cachedBase[0] = found - this.cachedBase[1] * FOUR_GIB;
    }
    if (this.count === this.capacity || length > MAX_IOVEC_PIECE || offset > MAX_IOVEC_PIECE) return false;
    const baseLow = this.cachedBase[0]!;
    const low = (baseLow + offset) >>> 0;
    const at = this.count * WORDS_PER_IOVEC;
    words[at] = low;
    words[at + 1] = low < baseLow ? this.cachedBase[1]! + 1 : this.cachedBase[1]!; // the carry out of the low word
    words[at + 2] = length;
    words[at + 3] = 0;
    this.count++;
    this.length += length;
    this.lastBuffer = buffer;
    this.lastEnd = offset + length;
    return true;
  }
}
