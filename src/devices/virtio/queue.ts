/**
 * The device side of a split virtqueue (virtio 1.2 §2.7): the descriptor table, the available
 * ring (written by the driver) and the used ring (written by the device), at guest physical
 * addresses the driver chose.
 *
 * Everything the guest wrote is untrusted. pop() walks one available descriptor chain and checks
 * it before a device sees any of it:
 * - the available index moves ahead by at most the queue size, and every head and `next` index
 *   lies inside its table;
 * - a chain has at most Queue Size descriptors (§2.7.5.3.1), which also ends descriptor loops;
 * - an indirect table (VIRTQ_DESC_F_INDIRECT, §2.7.5.3) is used only when negotiated, is a
 *   non-empty multiple of 16 bytes, is not combined with VIRTQ_DESC_F_NEXT and holds no further
 *   indirect descriptor;
 * - device-readable descriptors come before device-writable ones (§2.7.4.2);
 * - every buffer lies inside guest RAM, and the chain is at most 2^32 bytes (§2.7.5.2).
 * A violation marks the queue failed and reports it (the transport then sets DEVICE_NEEDS_RESET,
 * §2.1.2); nothing throws and nothing outside guest RAM is touched.
 *
 * pop() also bounds how much one pass may do: at most Queue Size chains taken, or rounds of
 * enableNotification() finding more, between two calls of beginPass() (which the transport makes
 * before each processQueue). The driver runs concurrently
 * on a vCPU thread and can make a new chain available for each one the device takes, for ever (or
 * lay its used ring over its available index so that every completion does it); a device loop of
 * "pop until empty" would then never give the event loop back, and every other device, the API
 * and the vCPUs' exits would stop. Once the budget is spent pop() reports an empty queue,
 * enableNotification() reports nothing new (and leaves notifications off), and the queue asks its
 * owner through `onYield` for another pass after the event loop had a turn.
 *
 * The hot path allocates nothing: the rings are typed-array views made once at activation,
 * indirect tables are read through a word view of their region made then too (the region's
 * DataView for a table off a 4-byte boundary), and a chain is described by a reusable
 * DescriptorChain holding (region buffer, offset, length) per segment, ready for
 * crypto.randomFillSync(buffer, offset, length) or fs.readSync(fd, buffer, offset, length).
 * A buffer crossing from one host region into the next becomes two segments.
 *
 * The ring indices are read and published with Atomics.load/Atomics.store: a sequentially
 * consistent access, so the used element is visible before the used index that exposes it, and
 * the index store is ordered before reading used_event / avail flags (the memory barrier
 * §2.7.13 and §2.7.14 ask for; the driver runs concurrently on a vCPU thread).
 */
import { endianness } from 'node:os';
import type { GuestMemory, GuestRegion } from '../../memory/guest-memory.js';

// Descriptor flags (virtio 1.2 §2.7.5).
export const VIRTQ_DESC_F_NEXT = 1;
export const VIRTQ_DESC_F_WRITE = 2;
export const VIRTQ_DESC_F_INDIRECT = 4;
/** Available ring flag: the driver needs no used buffer notification (§2.7.6, §2.7.7). */
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
/** Used ring flag: the device needs no available buffer notification (§2.7.8, §2.7.10). */
export const VIRTQ_USED_F_NO_NOTIFY = 1;

/** Split queue sizes are powers of two up to 32768 (§2.7). */
export const MAX_SPLIT_QUEUE_SIZE = 32768;
/** struct virtq_desc: le64 addr, le32 len, le16 flags, le16 next (§2.7.5). */
export const DESCRIPTOR_SIZE = 16;
// Alignment and size of the three parts (§2.7, table "Virtqueue Part / Alignment / Size").
export const DESCRIPTOR_TABLE_ALIGN = 16;
export const AVAIL_RING_ALIGN = 2;
export const USED_RING_ALIGN = 4;
export const descriptorTableBytes = (size: number): number => DESCRIPTOR_SIZE * size;
export const availRingBytes = (size: number): number => 6 + 2 * size;
export const usedRingBytes = (size: number): number => 6 + 8 * size;
/** A chain may carry at most 2^32 bytes (§2.7.5.2). */
const MAX_CHAIN_BYTES = 2 ** 32;
/** DescriptorChain keeps a segment's offset into its region in 32 bits (guest-memory.ts cuts RAM into 1 GiB regions). */
const MAX_REGION_SEGMENT_BYTES = 2 ** 32;
const FOUR_GIB = 2 ** 32;
/** Descriptor address high words at or above this put the address past 2^53: never guest RAM. */
const MAX_ADDRESS_HIGH = 2 ** 21;

// Indices into the ring views (elements, not bytes).
const AVAIL_FLAGS = 0; // u16
const AVAIL_IDX = 1; // u16
const AVAIL_RING = 2; // u16 ring[size], then used_event
const USED_FLAGS = 0; // u16
const USED_IDX = 1; // u16
const USED_RING_U32 = 1; // u32 pairs {id, len} from byte 4
const USED_RING_U16 = 2; // the same ring counted in u16s: avail_event follows it at USED_RING_U16 + 4 * size
const DESC_WORDS = 4; // u32 words per descriptor: addr low, addr high, len, flags | next << 16

/** Virtio structures are little-endian (§1.4); the typed views below assume a little-endian host. */
const HOST_IS_LITTLE_ENDIAN = endianness() === 'LE';

/**
 * One descriptor chain, readable segments first. Reused for every request: pop() overwrites it.
 * Segment i is `lengths[i]` bytes at `offsets[i]` in `buffers[i]` (a whole host region's bytes),
 * which is guest physical address `addresses[i]`.
 */
export class DescriptorChain {
  /** Index of the head descriptor: what addUsed() takes. */
  head = 0;
  readableSegments = 0;
  writableSegments = 0;
  readableBytes = 0;
  writableBytes = 0;
  buffers: Uint8Array[] = [];
  /**
   * Offset into the segment's region buffer and its length. 32-bit words (a region is at most
   * 1 GiB, a descriptor's len 32 bits): devices do their per-segment arithmetic on them, which
   * then stays in integers (host-iovecs.ts on why that matters in the nested host).
   */
  offsets: Uint32Array = new Uint32Array(0);
  lengths: Uint32Array = new Uint32Array(0);
  /** Guest physical address of each segment. */
  addresses: Float64Array = new Float64Array(0);

  constructor(initialCapacity = 16) {
    this.grow(Math.max(1, initialCapacity));
  }

  get segmentCount(): number {
    return this.readableSegments + this.writableSegments;
  }

  /**
   * Copy up to dst.length readable bytes, starting `skip` bytes into the readable data, into dst.
   * Returns the number copied. Byte by byte: meant for small headers, not bulk data.
   */
  readBytes(dst: Uint8Array, skip = 0): number {
    return this.copy(0, this.readableSegments, dst, skip, false);
  }

  /** Copy src into the writable segments starting `skip` bytes in; returns the number copied. */
  writeBytes(src: Uint8Array, skip = 0): number {
    return this.copy(this.readableSegments, this.segmentCount, src, skip, true);
  }

  /** @internal Start a new chain. */
  clear(head: number): void {
    this.head = head;
    this.readableSegments = 0;
    this.writableSegments = 0;
    this.readableBytes = 0;
    this.writableBytes = 0;
  }

  /** @internal Append a segment (readable ones must all come first). */
  push(buffer: Uint8Array, offset: number, length: number, address: number, writable: boolean): void {
    const i = this.segmentCount;
    if (i === this.offsets.length) this.grow(2 * i);
    // Chains are reused and nearly always name the same region again: a load costs less than a
    // store into the array (bench/profile/net-stream.ts put a third of walk() on this line).
    if (this.buffers[i] !== buffer) this.buffers[i] = buffer;
    this.offsets[i] = offset;
    this.lengths[i] = length;
    this.addresses[i] = address;
    if (writable) {
      this.writableSegments++;
      this.writableBytes += length;
    } else {
      this.readableSegments++;
      this.readableBytes += length;
    }
  }

  private grow(capacity: number): void {
    const offsets = new Uint32Array(capacity);
    offsets.set(this.offsets);
    this.offsets = offsets;
    const lengths = new Uint32Array(capacity);
    lengths.set(this.lengths);
    this.lengths = lengths;
    const addresses = new Float64Array(capacity);
    addresses.set(this.addresses);
    this.addresses = addresses;
  }

  private copy(first: number, end: number, bytes: Uint8Array, skip: number, toGuest: boolean): number {
    let done = 0;
    let toSkip = skip;
    for (let s = first; s < end && done < bytes.length; s++) {
      const len = this.lengths[s]!;
      if (toSkip >= len) {
        toSkip -= len;
        continue;
      }
      const buffer = this.buffers[s]!;
      const start = this.offsets[s]! + toSkip;
      const n = Math.min(len - toSkip, bytes.length - done);
      toSkip = 0;
      for (let k = 0; k < n; k++) {
        if (toGuest) buffer[start + k] = bytes[done + k]!;
        else bytes[done + k] = buffer[start + k]!;
      }
      done += n;
    }
    return done;
  }
}

/** Called once when a queue fails, with a one-line reason. */
export type QueueFaultHandler = (queue: SplitQueue, reason: string) => void;
/** Called when pop() stopped for the pass budget: schedule another pass (beginPass, then processQueue) on a later turn. */
export type QueueYieldHandler = (queue: SplitQueue) => void;

/** Feature-dependent behaviour, fixed when the queue is activated. */
export interface QueueFeatures {
  /** VIRTIO_F_EVENT_IDX negotiated: used_event / avail_event instead of the flags (§2.7.7, §2.7.10). */
  readonly eventIdx: boolean;
  /** VIRTIO_F_INDIRECT_DESC negotiated (§2.7.5.3). */
  readonly indirect: boolean;
}

const EMPTY_U16 = new Uint16Array(0);
const EMPTY_U32 = new Uint32Array(0);

export class SplitQueue {
  /** Queue Size the driver chose (transport register queue_size); maxSize until it writes one. */
  size: number;
  descTableAddress = 0;
  availRingAddress = 0;
  usedRingAddress = 0;
  /** The driver enabled the queue (queue_enable). */
  enabled = false;
  /** Why the queue stopped, once it has failed. */
  failure: string | undefined;

  private active = false;
  private regions: readonly GuestRegion[] = [];
  /**
   * Each region as 32-bit words (undefined where its buffer does not start on a 4-byte boundary):
   * an indirect table on a 4-byte boundary is read as the ring's descriptor table is, without a
   * DataView call per field. Made once at activation.
   */
  private regionWords: (Uint32Array | undefined)[] = [];
  /** The region the last buffer was in: a chain's buffers nearly always share one (no search). */
  private lastRegion = 0;
  private memory: GuestMemory | undefined;
  private desc: Uint32Array = EMPTY_U32;
  private avail16: Uint16Array = EMPTY_U16;
  private used16: Uint16Array = EMPTY_U16;
  private used32: Uint32Array = EMPTY_U32;
  private mask = 0;
  private nextAvail = 0;
  private nextUsed = 0;
  private signalledUsed = 0;
  private eventIdx = false;
  private indirect = false;
  /** Chains pop() may still take in this pass (see the file comment). */
  private passBudget = 0;
  /** pop() stopped for the budget; cleared by beginPass(). */
  private yielding = false;

  constructor(
    readonly index: number,
    readonly maxSize: number,
    private readonly onFault?: QueueFaultHandler,
    private readonly onYield?: QueueYieldHandler,
  ) {
    if (!isPowerOfTwo(maxSize) || maxSize > MAX_SPLIT_QUEUE_SIZE) {
      throw new RangeError(`queue ${index}: maximum size ${maxSize} must be a power of two up to ${MAX_SPLIT_QUEUE_SIZE}`);
    }
    this.size = maxSize;
  }

  /** Whether the queue is activated and has not failed. */
  get ready(): boolean {
    return this.active && this.failure === undefined;
  }

  /** Back to the state after device reset (§2.1: the driver must set everything up again). */
  reset(): void {
    this.size = this.maxSize;
    this.descTableAddress = 0;
    this.availRingAddress = 0;
    this.usedRingAddress = 0;
    this.enabled = false;
    this.failure = undefined;
    this.active = false;
    this.regions = [];
    this.regionWords = [];
    this.lastRegion = 0;
    this.memory = undefined;
    this.desc = EMPTY_U32;
    this.avail16 = EMPTY_U16;
    this.used16 = EMPTY_U16;
    this.used32 = EMPTY_U32;
    this.nextAvail = 0;
    this.nextUsed = 0;
    this.signalledUsed = 0;
    this.passBudget = 0;
    this.yielding = false;
  }

  /**
   * Check the driver's layout (size, alignment, every part inside one region of guest RAM) and
   * bind the ring views. Returns false, after reporting the fault, when the layout is unusable.
   */
  activate(memory: GuestMemory, features: QueueFeatures): boolean {
    this.active = false;
    this.failure = undefined;
    if (!HOST_IS_LITTLE_ENDIAN) return this.fail('the host is big-endian; virtqueues are little-endian');
    const size = this.size;
    if (!isPowerOfTwo(size) || size > this.maxSize) {
      return this.fail(`queue size ${size} is not a power of two between 1 and ${this.maxSize}`);
    }
    if (this.descTableAddress % DESCRIPTOR_TABLE_ALIGN !== 0 || this.availRingAddress % AVAIL_RING_ALIGN !== 0 || this.usedRingAddress % USED_RING_ALIGN !== 0) {
      return this.fail('a ring address is not aligned as virtio 1.2 §2.7 requires (16, 2, 4)');
    }
    if (memory.regions.some((r) => r.size > MAX_REGION_SEGMENT_BYTES)) return this.fail('a guest RAM region is larger than 4 GiB (segment offsets are 32-bit)');
    this.regions = memory.regions;
    this.regionWords = memory.regions.map((r) => (r.bytes.byteOffset % 4 === 0 ? new Uint32Array(r.bytes.buffer, r.bytes.byteOffset, Math.floor(r.bytes.length / 4)) : undefined));
    this.lastRegion = 0;
    this.memory = memory;
    const desc = this.view(this.descTableAddress, descriptorTableBytes(size), 4, 'descriptor table');
    const avail = this.view(this.availRingAddress, availRingBytes(size), 2, 'available ring');
    const used = this.view(this.usedRingAddress, usedRingBytes(size), 4, 'used ring');
    if (desc === undefined || avail === undefined || used === undefined) return false;
    this.desc = new Uint32Array(desc.buffer, desc.byteOffset, desc.length / 4);
    this.avail16 = new Uint16Array(avail.buffer, avail.byteOffset, avail.length / 2);
    this.used16 = new Uint16Array(used.buffer, used.byteOffset, used.length / 2);
    this.used32 = new Uint32Array(used.buffer, used.byteOffset, Math.floor(used.length / 4));
    this.mask = size - 1;
    this.eventIdx = features.eventIdx;
    this.indirect = features.indirect;
    this.nextAvail = 0;
    this.nextUsed = 0;
    this.signalledUsed = 0;
    this.passBudget = size;
    this.yielding = false;
    this.active = true;
    return true;
  }

  /**
   * Start a pass: pop() may take up to Queue Size chains again. Called by whoever runs a device's
   * queue processing from its own turn of the event loop (the transport before processQueue, a
   * device from its backend's readiness callback), never from inside a pass.
   */
  beginPass(): void {
    this.passBudget = this.size;
    this.yielding = false;
  }

  /** Whether pop() stopped for the pass budget and another pass has been asked for. */
  get yielded(): boolean {
    return this.yielding;
  }

  /** Whether the driver has made buffers available that pop() has not taken yet. */
  hasAvailable(): boolean {
    return this.ready && Atomics.load(this.avail16, AVAIL_IDX) !== this.nextAvail;
  }

  /**
   * Take the next available chain into `chain`. Returns false when there is none, or when the
   * chain is malformed (the queue has then failed; see `failure`).
   */
  pop(chain: DescriptorChain): boolean {
    if (!this.ready) return false;
    const availIdx = Atomics.load(this.avail16, AVAIL_IDX);
    const pending = (availIdx - this.nextAvail) & 0xffff;
    if (pending === 0) return false;
    if (pending > this.size) return this.fail(`available index ${availIdx} is ${pending} entries ahead of the device, more than the queue size ${this.size}`);
    if (!this.spend()) return false;
    const head = this.avail16[AVAIL_RING + (this.nextAvail & this.mask)]!;
    this.nextAvail = (this.nextAvail + 1) & 0xffff;
    if (head >= this.size) return this.fail(`available ring entry names descriptor ${head}, outside the ${this.size}-entry table`);
    return this.walk(head, chain);
  }

  /**
   * Return chain `head` to the driver with `len` bytes written (§2.7.8: the element is written
   * before the index that exposes it).
   */
  addUsed(head: number, len: number): void {
    if (this.stageUsed(head, len)) this.publishUsed();
  }

  /**
   * Write a used element without exposing it yet: publishUsed() exposes every element staged
   * since, at once. For what must reach the driver together: with VIRTIO_NET_F_MRG_RXBUF a frame
   * spread over several buffers (§5.1.6.4.2: the device uses them all together, so the driver
   * finds num_buffers used buffers; Linux's virtio_net, polling on another vCPU while the device
   * is mid-frame, otherwise finds the first without the rest and drops the frame: "rx error:
   * buffers missing"). Returns false when the element was refused (the queue failed).
   */
  stageUsed(head: number, len: number): boolean {
    if (!this.ready) return false;
    if (!Number.isInteger(head) || head < 0 || head >= this.size || !Number.isInteger(len) || len < 0 || len >= FOUR_GIB) {
      this.fail(`device returned an impossible used element (head ${head}, len ${len})`);
      return false;
    }
    const slot = this.nextUsed & this.mask;
    this.used32[USED_RING_U32 + 2 * slot] = head;
    this.used32[USED_RING_U32 + 2 * slot + 1] = len;
    this.nextUsed = (this.nextUsed + 1) & 0xffff;
    return true;
  }

  /** Expose the used elements staged so far (one store of used.idx, after the elements: §2.7.8). */
  publishUsed(): void {
    if (!this.ready) return;
    Atomics.store(this.used16, USED_IDX, this.nextUsed);
  }

  /**
   * Whether the driver wants a used buffer notification for what was added since the last call
   * (§2.7.7): with EVENT_IDX, when the used index passed used_event (vring_need_event); without
   * it, unless the driver set VIRTQ_AVAIL_F_NO_INTERRUPT.
   */
  needsNotification(): boolean {
    if (!this.active) return false;
    const now = this.nextUsed;
    const old = this.signalledUsed;
    this.signalledUsed = now;
    if (now === old) return false;
    if (this.eventIdx) {
      const usedEvent = Atomics.load(this.avail16, AVAIL_RING + this.size);
      return ((now - usedEvent - 1) & 0xffff) < ((now - old) & 0xffff);
    }
    return (Atomics.load(this.avail16, AVAIL_FLAGS) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
  }

  /**
   * Ask the driver for available buffer notifications again (§2.7.10): avail_event = the next
   * index the device will read, or clear VIRTQ_USED_F_NO_NOTIFY. Returns whether buffers arrived
   * meanwhile, in which case the caller must process them (else a kick may have been suppressed).
   * After pop() stopped for the pass budget: false, and notifications stay off; the pass the
   * queue asked for takes the rest.
   */
  enableNotification(): boolean {
    if (!this.ready || this.yielding) return false;
    if (this.eventIdx) Atomics.store(this.used16, USED_RING_U16 + 4 * this.size, this.nextAvail);
    else Atomics.store(this.used16, USED_FLAGS, 0);
    if (Atomics.load(this.avail16, AVAIL_IDX) === this.nextAvail) return false;
    // "Go round again" spends budget too: a driver whose used flags or avail_event lie over its
    // available index makes each enable/disable pair look like new buffers with none to pop.
    return this.spend();
  }

  /** Tell the driver notifications are not needed while the device is busy with the queue. */
  disableNotification(): void {
    if (this.ready && !this.eventIdx) Atomics.store(this.used16, USED_FLAGS, VIRTQ_USED_F_NO_NOTIFY);
  }

  /** Take one unit of the pass budget; when it is spent, ask for another pass (once) and return false. */
  private spend(): boolean {
    if (this.passBudget > 0) {
      this.passBudget--;
      return true;
    }
    if (!this.yielding) {
      this.yielding = true;
      this.onYield?.(this);
    }
    return false;
  }

  /** Mark the queue failed (once) and report it. Always returns false, for `return this.fail(...)`. */
  fail(reason: string): false {
    if (this.failure === undefined) {
      this.failure = reason;
      this.onFault?.(this, `queue ${this.index}: ${reason}`);
    }
    return false;
  }

  // ---- internals

  private walk(head: number, chain: DescriptorChain): boolean {
    chain.clear(head);
    // The table being read: the ring's, or an indirect one as words (tableBase: its first word)
    // or, off a 4-byte boundary, through the region's DataView (indirectView).
    let table = this.desc;
    let tableBase = 0;
    let inIndirect = false;
    let indirectView: DataView | undefined;
    let indirectBase = 0;
    let entries = this.size;
    let index = head;
    // At most Queue Size descriptors per chain, indirect ones included (§2.7.5.3.1).
    let budget = this.size;
    let writableSeen = false;
    for (;;) {
      if (index >= entries) return this.fail(`descriptor chain from head ${head} names descriptor ${index}, outside its ${entries}-entry table`);
      if (budget === 0) return this.fail(`descriptor chain from head ${head} is longer than the queue size ${this.size} (a loop?)`);
      budget--;
      let addressLow: number;
      let addressHigh: number;
      let len: number;
      let flags: number;
      let next: number;
      if (indirectView === undefined) {
        const w = tableBase + index * DESC_WORDS;
        addressLow = table[w]!;
        addressHigh = table[w + 1]!;
        len = table[w + 2]!;
        const flagsNext = table[w + 3]!;
        flags = flagsNext & 0xffff;
        next = flagsNext >>> 16;
      } else {
        const at = indirectBase + index * DESCRIPTOR_SIZE;
        addressLow = indirectView.getUint32(at, true);
        addressHigh = indirectView.getUint32(at + 4, true);
        len = indirectView.getUint32(at + 8, true);
        flags = indirectView.getUint16(at + 12, true);
        next = indirectView.getUint16(at + 14, true);
      }

      if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) {
        if (inIndirect) return this.fail(`descriptor chain from head ${head} nests an indirect table inside an indirect table`);
        if (!this.indirect) return this.fail(`descriptor chain from head ${head} uses an indirect table, but VIRTIO_F_INDIRECT_DESC was not negotiated`);
        if ((flags & VIRTQ_DESC_F_NEXT) !== 0) return this.fail(`descriptor chain from head ${head} sets both INDIRECT and NEXT`);
        if (len === 0 || len % DESCRIPTOR_SIZE !== 0) return this.fail(`indirect table of ${len} bytes is not a non-zero multiple of ${DESCRIPTOR_SIZE}`);
        const r = addressHigh < MAX_ADDRESS_HIGH ? this.regionOf(addressHigh * FOUR_GIB + addressLow, len) : -1;
        if (r < 0) return this.fail(`indirect table at 0x${(addressHigh * FOUR_GIB + addressLow).toString(16)} (+${len}) is not inside one region of guest RAM`);
        const region = this.regions[r]!;
        inIndirect = true;
        indirectBase = addressHigh * FOUR_GIB + addressLow - region.gpa;
        const words = this.regionWords[r];
        if (words !== undefined && indirectBase % 4 === 0) {
          table = words;
          tableBase = indirectBase / 4;
        } else indirectView = region.view;
        entries = len / DESCRIPTOR_SIZE;
        index = 0;
        budget++; // the descriptor pointing at the table carries no data of its own
        continue; // the WRITE flag of the pointing descriptor is ignored (§2.7.5.3.2)
      }

      const writable = (flags & VIRTQ_DESC_F_WRITE) !== 0;
      if (writable) writableSeen = true;
      else if (writableSeen) return this.fail(`descriptor chain from head ${head} has a device-readable buffer after a device-writable one`);
      if (len > 0 && !this.addSegments(chain, addressLow, addressHigh, len, writable)) return false;
      if ((flags & VIRTQ_DESC_F_NEXT) === 0) return true;
      index = next;
    }
  }

  /** Add [address, address + len) as one segment per host region it covers; fail outside RAM. */
  private addSegments(chain: DescriptorChain, addressLow: number, addressHigh: number, len: number, writable: boolean): boolean {
    if (chain.readableBytes + chain.writableBytes + len > MAX_CHAIN_BYTES) return this.fail(`descriptor chain from head ${chain.head} is longer than 2^32 bytes`);
    if (addressHigh === 0) {
      // The common case without floating-point arithmetic (host-iovecs.ts: it is slow in the
      // nested host): below 4 GiB, wholly inside the region of the last buffer.
      const last = this.regions[this.lastRegion];
      if (last !== undefined) {
        const offset = addressLow - last.gpa;
        if (offset >= 0 && offset < last.size && len <= last.size - offset) {
          chain.push(last.bytes, offset, len, addressLow, writable);
          return true;
        }
      }
    }
    let address = addressHigh * FOUR_GIB + addressLow;
    let r = addressHigh < MAX_ADDRESS_HIGH ? this.regionAt(address) : -1;
    let remaining = len;
    for (;;) {
      if (r < 0) return this.fail(`buffer at 0x${(addressHigh * FOUR_GIB + addressLow).toString(16)} (+${len}) is not guest RAM`);
      const region = this.regions[r]!;
      const offset = address - region.gpa;
      const piece = Math.min(remaining, region.size - offset);
      chain.push(region.bytes, offset, piece, address, writable);
      remaining -= piece;
      if (remaining === 0) return true;
      address += piece;
      r = r + 1 < this.regions.length && this.regions[r + 1]!.gpa === address ? r + 1 : -1;
    }
  }

  /** Index of the region holding `gpa`, or -1 (binary search, no allocation). */
  private regionAt(gpa: number): number {
    const last = this.regions[this.lastRegion];
    if (last !== undefined && gpa >= last.gpa && gpa - last.gpa < last.size) return this.lastRegion;
    const r = this.memory === undefined ? -1 : this.memory.regionIndexAt(gpa);
    if (r >= 0) this.lastRegion = r;
    return r;
  }


  /** Index of the region holding all of [gpa, gpa + len), or -1. */
  private regionOf(gpa: number, len: number): number {
    const r = this.regionAt(gpa);
    if (r < 0) return -1;
    const region = this.regions[r]!;
    return gpa - region.gpa + len <= region.size ? r : -1;
  }

  /** A byte view of one ring part, checked to lie in one region and to suit `align`-byte typed views. */
  private view(gpa: number, len: number, align: number, what: string): Uint8Array | undefined {
    const r = Number.isSafeInteger(gpa) ? this.regionOf(gpa, len) : -1;
    if (r < 0) {
      this.fail(`${what} at 0x${gpa.toString(16)} (+${len}) is not inside one region of guest RAM`);
      return undefined;
    }
    const region = this.regions[r]!;
    const byteOffset = region.bytes.byteOffset + (gpa - region.gpa);
    if (byteOffset % align !== 0) {
      this.fail(`${what}: the host buffer behind guest RAM is not ${align}-byte aligned`);
      return undefined;
    }
    return new Uint8Array(region.bytes.buffer, byteOffset, len);
  }
}

/** Whether `n` is a positive power of two. */
function isPowerOfTwo(n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && 2 ** Math.round(Math.log2(n)) === n;
}
