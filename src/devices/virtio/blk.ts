/**
 * virtio-blk, the block device (virtio 1.2 §5.2), backed by a raw image file: one request queue,
 * or several with VIRTIO_BLK_F_MQ (one per vCPU, each with its own request slots), requests
 * served asynchronously and completed out of order (§5.2: "serviced (probably out of order) by
 * the device").
 *
 * A request (§5.2.6) is a device-readable header {le32 type, le32 reserved, le64 sector}, data,
 * and a status byte: the last byte of the device-writable part. The framing is free (§2.6.4), so
 * the header, data and status may be split over descriptors in any way; only the direction of
 * each part is fixed. Types served: IN (read), OUT (write), FLUSH, GET_ID, DISCARD and
 * WRITE_ZEROES; anything else completes with UNSUPP.
 *
 * Data moves straight between the file and guest memory. A transfer is first tried at once on
 * the main thread, by address: preadv2/pwritev2 over struct iovecs naming guest RAM's host
 * addresses, for an image in memory (tmpfs) always and elsewhere with RWF_NOWAIT, which fails
 * rather than wait for the disk (blk-file.ts). That serves page-cache hits without the two thread
 * switches of a threadpool call, and a whole batch of them completes within one queue
 * notification with one interrupt. What would wait goes to libuv's threadpool: preadv2/pwritev2
 * over the request slot's own iovec array of host addresses, so a slow disk delays only its own
 * requests and never the event loop or a vCPU. (Sending large transfers from memory to the pool
 * as well, so that a queue of 1 MiB copies runs in parallel as on QEMU's workers, was measured in
 * the nested host on 2026-11-27 and dropped: 1 MiB reads and writes took 8-10 ms of VMM CPU per
 * I/O against 6.1-7.2 ms done at once, and ran at 185-260 MB/s against 232-282.) (Guest memory
 * without host addresses, in unit tests, goes to pread/pwrite, or preadv/pwritev as views.) Each
 * request in flight owns one of BLK_QUEUE_SIZE preallocated request slots of its queue (its
 * DescriptorChain, cursor, callbacks and, once it needed one, its iovec array), so the immediate
 * path allocates nothing and the threadpool path only koffi's call.
 *
 * Caching, as Firecracker's `cache_type`:
 * - 'Unsafe' (the default): VIRTIO_BLK_F_FLUSH is not offered, writes complete once they are in
 *   the host page cache. §5.2.6.2 note: "Not offering VIRTIO_BLK_F_FLUSH is an absolute
 *   requirement for implementations that do not wish to be safe against such data losses."
 *   Data survives the VMM being killed, not a host crash. A FLUSH that arrives anyway completes
 *   OK without syncing. (Firecracker's device code also offers FLUSH only for Writeback; one
 *   version of its docs/api_requests/block-caching.md says Unsafe offers FLUSH and ignores
 *   flushes, which §5.2.6.2 does not allow: FLUSH offered means flushes make writes stable.)
 * - 'Writeback': FLUSH is offered and a flush is fdatasync(2) on the image. If the driver did not
 *   accept FLUSH, every write is made stable (fdatasync) before it completes (§5.2.6.2, case 1).
 *
 * DISCARD punches a hole (fallocate PUNCH_HOLE | KEEP_SIZE), so the range reads as zeroes and the
 * host gets the space back; where the file system cannot, the discard is a no-op that succeeds
 * (§5.2.6.2: the device "MAY deallocate"). WRITE_ZEROES uses ZERO_RANGE, or PUNCH_HOLE when the
 * driver set `unmap`, and writes zeroes where neither works; either way the range reads as zeroes.
 *
 * Capacity is the file size in 512-byte sectors, rounded down: the bytes of a last partial sector
 * are invisible to the guest and never written (as in Firecracker).
 *
 * Hostile guests: a request that breaks the rules but has a status byte completes with IOERR
 * (header shorter than 16 bytes, data in the wrong direction, a length that is not a multiple of
 * 512, a range beyond capacity, a write to a read-only drive). A chain without any device-writable
 * byte has nowhere to report, so the queue fails and the device needs a reset (§2.1.2). Header
 * and discard ranges are copied out of guest memory before they are checked, so the guest cannot
 * change them between check and use.
 *
 * Lifecycle: reset() drops the activation; requests still in flight finish their file I/O but are
 * then forgotten (their status and used element are never written). Before the VMM unmaps guest
 * memory it must `await close()`, which waits for every file call that may still write into it.
 */
import { closeSync, close as closeFile, constants as fsConstants, fstatSync, openSync } from 'node:fs';
import { EOPNOTSUPP } from '../../kvm/libc.js';
import { nodeBlockFileIo, type BlockFileIo, type DoneCallback, type TransferCallback } from './blk-file.js';
import { VIRTIO_ID_BLOCK, featureBit, hasFeature, type VirtioActivation, type VirtioDevice } from './device.js';
import { HostIovecs } from './host-iovecs.js';
import { DescriptorChain, type SplitQueue } from './queue.js';
import { deferAfterBatch } from '../end-of-batch.js';

// Feature bits (virtio 1.2 §5.2.3).
export const VIRTIO_BLK_F_SIZE_MAX = 1;
export const VIRTIO_BLK_F_SEG_MAX = 2;
export const VIRTIO_BLK_F_RO = 5;
export const VIRTIO_BLK_F_BLK_SIZE = 6;
export const VIRTIO_BLK_F_FLUSH = 9;
export const VIRTIO_BLK_F_MQ = 12;
export const VIRTIO_BLK_F_DISCARD = 13;
export const VIRTIO_BLK_F_WRITE_ZEROES = 14;

// Request types (§5.2.6).
export const VIRTIO_BLK_T_IN = 0;
export const VIRTIO_BLK_T_OUT = 1;
export const VIRTIO_BLK_T_FLUSH = 4;
export const VIRTIO_BLK_T_GET_ID = 8;
export const VIRTIO_BLK_T_GET_LIFETIME = 10;
export const VIRTIO_BLK_T_DISCARD = 11;
export const VIRTIO_BLK_T_WRITE_ZEROES = 13;
export const VIRTIO_BLK_T_SECURE_ERASE = 14;

// Request status (§5.2.6).
export const VIRTIO_BLK_S_OK = 0;
export const VIRTIO_BLK_S_IOERR = 1;
export const VIRTIO_BLK_S_UNSUPP = 2;

/** The protocol's sector: capacity, sector and num_sectors count 512-byte units (§5.2.4, §5.2.6). */
export const SECTOR_SIZE = 512;
/** Length of the GET_ID string: "a NUL-padded ASCII string up to 20 bytes long" (§5.2.6). */
export const VIRTIO_BLK_ID_BYTES = 20;
/** struct virtio_blk_req up to the data: le32 type, le32 reserved, le64 sector (§5.2.6). */
export const BLK_REQUEST_HEADER_BYTES = 16;
/** struct virtio_blk_discard_write_zeroes: le64 sector, le32 num_sectors, le32 flags (§5.2.6). */
export const BLK_RANGE_BYTES = 16;
/** flags.unmap of a discard / write-zeroes range (§5.2.6); every other flag bit is unknown. */
export const VIRTIO_BLK_RANGE_FLAG_UNMAP = 1;

// struct virtio_blk_config field offsets (§5.2.4).
export const BLK_CONFIG_CAPACITY = 0; // le64
export const BLK_CONFIG_SIZE_MAX = 8; // le32
export const BLK_CONFIG_SEG_MAX = 12; // le32
export const BLK_CONFIG_GEOMETRY = 16; // le16 cylinders, u8 heads, u8 sectors
export const BLK_CONFIG_BLK_SIZE = 20; // le32
export const BLK_CONFIG_TOPOLOGY = 24; // 8 bytes
export const BLK_CONFIG_WRITEBACK = 32; // u8
export const BLK_CONFIG_NUM_QUEUES = 34; // le16
export const BLK_CONFIG_MAX_DISCARD_SECTORS = 36; // le32
export const BLK_CONFIG_MAX_DISCARD_SEG = 40; // le32
export const BLK_CONFIG_DISCARD_SECTOR_ALIGNMENT = 44; // le32
export const BLK_CONFIG_MAX_WRITE_ZEROES_SECTORS = 48; // le32
export const BLK_CONFIG_MAX_WRITE_ZEROES_SEG = 52; // le32
export const BLK_CONFIG_WRITE_ZEROES_MAY_UNMAP = 56; // u8, then u8 unused1[3]
/** Configuration bytes exposed: up to the secure-erase fields, whose feature is not offered. */
export const BLK_CONFIG_SIZE = 60;

/** The first request queue, requestq1 (§5.2.2); with VIRTIO_BLK_F_MQ, num_queues of them follow. */
export const BLK_REQUEST_QUEUE = 0;
export const BLK_QUEUE_SIZE = 256;
/** Request queues at most: one per vCPU of the largest machine tsvmm builds (limits.ts: 32 vCPUs). */
export const BLK_MAX_QUEUES = 32;
/**
 * seg_max: data segments per request. A chain has at most Queue Size descriptors (§2.7.5.3.1),
 * two of them header and status (Linux's virtio_blk adds those two to seg_max).
 */
export const BLK_SEG_MAX = BLK_QUEUE_SIZE - 2;
/** blk_size: the logical block size the guest should use (§5.2.5 step 2). */
export const BLK_LOGICAL_BLOCK_SIZE = 512;
/** max_discard_sectors and max_write_zeroes_sectors per range: 2 GiB. */
export const BLK_MAX_DISCARD_SECTORS = 1 << 22;
/** max_discard_seg and max_write_zeroes_seg: ranges per request. */
export const BLK_MAX_DISCARD_SEGMENTS = 16;

/**
 * A request that moved at least this many data bytes and completed inside processQueue interrupts
 * the driver at once instead of at the end of the pass. Within a pass the transfers run one after
 * another on this thread; holding a large one's completion until the next large copies are done
 * too would leave the guest idle meanwhile, where it could reap it and queue the next request
 * (as it does on QEMU, whose pool threads complete large transfers one by one). Small requests
 * still share the pass's one interrupt: their copies are short, the interrupts would not be.
 */
export const BLK_EARLY_NOTIFY_BYTES = 128 * 1024;

/** Most buffers one preadv/pwritev takes (Linux's UIO_MAXIOV); longer requests take several calls. */
const IOV_MAX = 1024;
/** Sector high words at or above this put the byte offset past 2^53: beyond any capacity. */
const MAX_SECTOR_HIGH = 2 ** 21;
const FOUR_GIB = 2 ** 32;

/** Firecracker's cache_type (see the file comment). */
export type BlockCacheType = 'Unsafe' | 'Writeback';

export interface VirtioBlockOptions {
  /** The raw disk image: a regular file. */
  readonly path: string;
  /** Open the image read-only and offer VIRTIO_BLK_F_RO: every write request fails with IOERR. */
  readonly readOnly?: boolean;
  /**
   * The GET_ID string (Firecracker's drive_id), cut to VIRTIO_BLK_ID_BYTES bytes of UTF-8.
   * Default: the image's device, rdev and inode numbers, as Firecracker and kvmtool make it.
   */
  readonly driveId?: string;
  /** Default 'Unsafe', as in Firecracker. */
  readonly cacheType?: BlockCacheType;
  /**
   * Request queues (default 1). More than one offers VIRTIO_BLK_F_MQ with num_queues (§5.2.3,
   * §5.2.4): Linux then gives each vCPU its own queue and MSI-X vector, so vCPUs submit and
   * complete I/O without sharing a ring or an interrupt (QEMU's default is one per vCPU).
   */
  readonly numQueues?: number;
  /** Name in messages; default "virtio-blk". */
  readonly name?: string;
  /** File operations; tests inject counting or slow ones. Default: node's fs and fallocate(2). */
  readonly io?: BlockFileIo;
}

/** What the device did, for metrics and tests. */
export interface VirtioBlockMetrics {
  reads: number;
  writes: number;
  flushes: number;
  /** fdatasync calls made (flushes in Writeback mode, plus write-through writes). */
  syncs: number;
  discards: number;
  writeZeroes: number;
  getIds: number;
  bytesRead: number;
  bytesWritten: number;
  /** Requests completed with IOERR. */
  ioErrors: number;
  /** Requests completed with UNSUPP. */
  unsupported: number;
  /** Reads and writes done at once on the main thread (data in the page cache), not on the threadpool. */
  immediateTransfers: number;
}

/** The open image. A replaced image stays open until its last request in flight completes. */
class BackingFile {
  inFlight = 0;
  private retired = false;
  /** preadv2 flags for reads done at once on the main thread (BlockFileIo.transferNow); undefined: never. */
  readNowFlags: number | undefined;
  /** The same for writes (a file system may take RWF_NOWAIT for one direction only). */
  writeNowFlags: number | undefined;

  private constructor(
    readonly path: string,
    readonly fd: number,
    readonly sizeBytes: number,
    readonly blockSize: number,
    readonly defaultId: string,
  ) {}

  static open(path: string, readOnly: boolean, io: BlockFileIo): BackingFile {
    const fd = openSync(path, readOnly ? fsConstants.O_RDONLY : fsConstants.O_RDWR);
    try {
      const stat = fstatSync(fd);
      if (!stat.isFile()) throw new Error(`${path} is not a regular file (a raw disk image is needed)`);
      const file = new BackingFile(path, fd, stat.size, stat.blksize > 0 ? stat.blksize : 4096, `${stat.dev}${stat.rdev}${stat.ino}`);
      if (io.transferNow !== undefined) file.readNowFlags = file.writeNowFlags = io.immediateFlags?.(fd);
      return file;
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  /** The file's current size (it may have been resized on the host). */
  currentSize(): number {
    return fstatSync(this.fd).size;
  }

  acquire(): this {
    this.inFlight++;
    return this;
  }

  release(): void {
    this.inFlight--;
    this.closeIfIdle();
  }

  /** No new request will use this file: close it once the ones in flight are done. */
  retire(): void {
    this.retired = true;
    this.closeIfIdle();
  }

  private closeIfIdle(): void {
    if (this.retired && this.inFlight === 0) {
      this.retired = false; // close once
      closeFile(this.fd, () => {});
    }
  }
}

/** One request slot: a chain, where the request's data is, and how far it got. Reused. */
class BlockRequest {
  readonly chain = new DescriptorChain(16);
  /** The request queue this slot serves (each queue has its own slots). */
  queue = 0;
  /** The device activation this request belongs to; a reset makes it stale. */
  epoch = 0;
  type = 0;
  file: BackingFile | undefined;
  /** File offset of the next transfer. */
  position = 0;
  /** Data bytes (or, for a range, bytes of the range) still to do. */
  remaining = 0;
  /** Data cursor: chain segment index and bytes already done inside it. */
  segment = 0;
  skip = 0;
  /** Bytes written into device-writable data buffers: the used length, less the status byte. */
  toGuest = 0;
  /** Data bytes of a read or write (0 for other requests). */
  dataBytes = 0;
  /** Discard / write-zeroes ranges, copied out of guest memory, and the next one to do. */
  readonly ranges = new Uint8Array(BLK_MAX_DISCARD_SEGMENTS * BLK_RANGE_BYTES);
  readonly rangeView = new DataView(this.ranges.buffer);
  rangeCount = 0;
  rangeNext = 0;
  /** The current range is being punched (a discard, or write zeroes with unmap); a failed punch of write zeroes is written with zeroes instead. */
  punching = false;
  /** Buffers for preadv/pwritev as views, when the threadpool cannot take host addresses. */
  readonly iov: Uint8Array[] = [];
  /** The pieces by host address for a threadpool transfer (BlockFileIo.transferAsync); made on first use, kept with the slot. */
  iovecs: HostIovecs | undefined;

  /** Completion callbacks, made once per slot by the device so no closure is made per request. */
  constructor(
    readonly onTransfer: TransferCallback,
    readonly onSynced: DoneCallback,
    readonly onRangeDone: DoneCallback,
  ) {}
}

export class VirtioBlock implements VirtioDevice {
  readonly deviceType = VIRTIO_ID_BLOCK;
  /** Its queue and backend handlers queue no promise continuation or nextTick (VirtioDevice.holdSafe). */
  readonly holdSafe = true;
  readonly name: string;
  readonly deviceFeatures: bigint;
  readonly queueMaxSizes: readonly number[];
  readonly configSize = BLK_CONFIG_SIZE;
  readonly readOnly: boolean;
  readonly cacheType: BlockCacheType;
  /** What GET_ID answers (Firecracker's drive_id; the image's default id when none was given). */
  readonly driveId: string;
  readonly metrics: VirtioBlockMetrics = {
    reads: 0,
    writes: 0,
    flushes: 0,
    syncs: 0,
    discards: 0,
    writeZeroes: 0,
    getIds: 0,
    bytesRead: 0,
    bytesWritten: 0,
    ioErrors: 0,
    unsupported: 0,
    immediateTransfers: 0,
  };

  private readonly io: BlockFileIo;
  private file: BackingFile;
  private capacity = 0;
  private readonly id = new Uint8Array(VIRTIO_BLK_ID_BYTES);
  private readonly config = new Uint8Array(BLK_CONFIG_SIZE);
  private readonly configView = new DataView(this.config.buffer);
  private readonly header = new Uint8Array(BLK_REQUEST_HEADER_BYTES);
  private readonly headerView = new DataView(this.header.buffer);
  private readonly slots: BlockRequest[] = [];
  /** Free request slots of each queue: BLK_QUEUE_SIZE per queue, as many as its ring can hold. */
  private readonly free: BlockRequest[][] = [];
  private activation: VirtioActivation | undefined;
  private epoch = 0;
  /** Writeback mode without FLUSH negotiated: every write is synced before it completes. */
  private writeThrough = false;
  /** The queue processQueue is working on (-1: none): its completions are signalled once at the end (large ones at once: BLK_EARLY_NOTIFY_BYTES). */
  private processing = -1;
  /** Queues with completions whose interrupt waits for flushNotifications (notifyCompleted). */
  private readonly notifyPending: boolean[] = [];
  private notifyScheduled = false;
  /** Queues whose processQueue stopped for want of a free slot; a completion restarts them. */
  private readonly starved: boolean[] = [];
  private closed = false;
  private idleWaiters: (() => void)[] = [];
  /** The pieces of the transfer being issued (transfer() fills them; used before it returns). */
  private readonly pieceBuffers: Uint8Array[] = [];
  private readonly pieceOffsets = new Float64Array(IOV_MAX);
  private readonly pieceLengths = new Float64Array(IOV_MAX);
  /** The pieces by host address for transferNow (its calls are synchronous, one at a time). */
  private readonly iovecs = new HostIovecs(IOV_MAX);

  constructor(options: VirtioBlockOptions) {
    this.name = options.name ?? 'virtio-blk';
    this.readOnly = options.readOnly ?? false;
    this.cacheType = options.cacheType ?? 'Unsafe';
    this.io = options.io ?? nodeBlockFileIo;
    const numQueues = options.numQueues ?? 1;
    if (!Number.isInteger(numQueues) || numQueues < 1 || numQueues > BLK_MAX_QUEUES) {
      throw new RangeError(`${this.name}: numQueues must be an integer from 1 to ${BLK_MAX_QUEUES}, got ${numQueues}`);
    }
    this.queueMaxSizes = new Array<number>(numQueues).fill(BLK_QUEUE_SIZE);
    this.file = BackingFile.open(options.path, this.readOnly, this.io);

    let features = featureBit(VIRTIO_BLK_F_SEG_MAX) | featureBit(VIRTIO_BLK_F_BLK_SIZE);
    if (this.cacheType === 'Writeback') features |= featureBit(VIRTIO_BLK_F_FLUSH);
    if (numQueues > 1) features |= featureBit(VIRTIO_BLK_F_MQ);
    // Discard and write-zeroes change the disk: a read-only drive does not offer them (as Firecracker).
    if (this.readOnly) features |= featureBit(VIRTIO_BLK_F_RO);
    else features |= featureBit(VIRTIO_BLK_F_DISCARD) | featureBit(VIRTIO_BLK_F_WRITE_ZEROES);
    this.deviceFeatures = features;

    this.driveId = options.driveId ?? this.file.defaultId;
    new TextEncoder().encodeInto(this.driveId, this.id);

    const c = this.configView;
    c.setUint32(BLK_CONFIG_SEG_MAX, BLK_SEG_MAX, true);
    c.setUint32(BLK_CONFIG_BLK_SIZE, BLK_LOGICAL_BLOCK_SIZE, true);
    c.setUint16(BLK_CONFIG_NUM_QUEUES, numQueues, true);
    if (!this.readOnly) {
      c.setUint32(BLK_CONFIG_MAX_DISCARD_SECTORS, BLK_MAX_DISCARD_SECTORS, true);
      c.setUint32(BLK_CONFIG_MAX_DISCARD_SEG, BLK_MAX_DISCARD_SEGMENTS, true);
      // The host file system's block: punching less than one only zeroes it.
      c.setUint32(BLK_CONFIG_DISCARD_SECTOR_ALIGNMENT, Math.max(1, Math.floor(this.file.blockSize / SECTOR_SIZE)), true);
      c.setUint32(BLK_CONFIG_MAX_WRITE_ZEROES_SECTORS, BLK_MAX_DISCARD_SECTORS, true);
      c.setUint32(BLK_CONFIG_MAX_WRITE_ZEROES_SEG, BLK_MAX_DISCARD_SEGMENTS, true);
      // §5.2.6.2: set iff write zeroes may deallocate, which PUNCH_HOLE does.
      c.setUint8(BLK_CONFIG_WRITE_ZEROES_MAY_UNMAP, 1);
    }
    this.setCapacity(this.file.sizeBytes);

    for (let q = 0; q < numQueues; q++) {
      this.free.push([]);
      this.starved.push(false);
    }
    for (let i = 0; i < BLK_QUEUE_SIZE * numQueues; i++) {
      // Completions run from the event loop, outside the transport's guard: catch here too.
      const slot: BlockRequest = new BlockRequest(
        (error, bytes) => {
          try {
            this.transferred(slot, error, bytes);
          } catch (e) {
            this.failed(slot, e);
          }
        },
        (error) => {
          try {
            this.synced(slot, error);
          } catch (e) {
            this.failed(slot, e);
          }
        },
        (error) => {
          try {
            this.rangeDone(slot, error);
          } catch (e) {
            this.failed(slot, e);
          }
        },
      );
      slot.queue = i % numQueues;
      this.slots.push(slot);
      this.free[slot.queue]!.push(slot);
    }
  }

  /** Disk size in 512-byte sectors, as the guest sees it. */
  get capacitySectors(): number {
    return this.capacity;
  }

  /** The image currently behind the drive. */
  get path(): string {
    return this.file.path;
  }

  /** Requests taken from the queue and not yet completed (including ones made stale by a reset). */
  get inFlight(): number {
    let free = 0;
    for (const f of this.free) free += f.length;
    return this.slots.length - free;
  }

  /**
   * Put a new image behind the drive (Firecracker's PATCH /drives): requests from now on use it,
   * requests in flight finish on the old one, and the guest gets a configuration change
   * notification to read the new capacity (§5.2.6.2: "The device MAY change the content of the
   * capacity field ... SHOULD trigger a configuration change notification"). Throws, changing
   * nothing, when the file cannot be opened.
   */
  updateBackingFile(path: string): void {
    if (this.closed) throw new Error(`${this.name}: the drive has been closed`);
    const next = BackingFile.open(path, this.readOnly, this.io);
    const old = this.file;
    this.file = next;
    old.retire();
    this.setCapacity(next.sizeBytes);
    this.activation?.interrupt.signalConfigChange();
  }

  /** The image was resized on the host: read its size again and tell the guest. Returns the capacity in sectors. */
  capacityChanged(): number {
    this.setCapacity(this.file.currentSize());
    this.activation?.interrupt.signalConfigChange();
    return this.capacity;
  }

  /**
   * Stop serving, wait for every file call still in flight (they may write into guest memory),
   * and close the image; in Writeback mode fdatasync it first, as Firecracker does when a drive
   * goes away. Resolves even if that sync fails (the guest is gone; there is no one to tell).
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.reset();
    if (this.inFlight > 0) await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    if (this.cacheType === 'Writeback' && !this.readOnly) {
      this.metrics.syncs++;
      await new Promise<void>((resolve) => this.io.fdatasync(this.file.fd, () => resolve()));
    }
    this.file.retire();
  }

  // ---- VirtioDevice

  readConfig(offset: number, data: Uint8Array): void {
    for (let i = 0; i < data.length; i++) data[i] = this.config[offset + i] ?? 0;
  }

  /** Nothing is writable: `writeback` is the driver's only with VIRTIO_BLK_F_CONFIG_WCE, not offered. */
  writeConfig(_offset: number, _data: Uint8Array): void {}

  activate(activation: VirtioActivation): void {
    if (this.closed) {
      activation.fail('the drive has been closed');
      return;
    }
    this.epoch++;
    this.activation = activation;
    this.iovecs.useMemory(activation.memory);
    // §5.2.6.2 case 1: FLUSH offered but not negotiated means writes must be stable on completion.
    this.writeThrough = this.cacheType === 'Writeback' && !hasFeature(activation.features, VIRTIO_BLK_F_FLUSH);
  }

  reset(): void {
    this.epoch++;
    this.activation = undefined;
    this.starved.fill(false);
  }

  processQueue(index: number): void {
    const activation = this.activation;
    // Not re-entered: a request completing synchronously inside start() can restart a starved queue.
    if (activation === undefined || this.processing !== -1) return;
    const queue = activation.queues[index];
    const free = this.free[index];
    if (queue === undefined || free === undefined) return;
    this.processing = index;
    // SplitQueue bounds the pass (at most a ring's worth of chains, then pop() reports empty and the
    // transport runs another pass on a later turn): a guest cannot keep this loop going for ever.
    try {
      for (;;) {
        queue.disableNotification();
        while (free.length > 0) {
          const request = free.pop()!;
          if (!queue.pop(request.chain)) {
            free.push(request);
            break;
          }
          this.start(request, activation, queue);
        }
        if (free.length === 0) {
          // Every slot is busy: a completion restarts processing (notifications stay off meanwhile).
          this.starved[index] = true;
          break;
        }
        if (!queue.enableNotification()) break;
      }
    } finally {
      this.processing = -1;
    }
    activation.notifyIfNeeded(index);
  }

  // ---- requests

  /** Check a request just taken from the queue and start it (or complete it at once). */
  private start(request: BlockRequest, activation: VirtioActivation, queue: SplitQueue): void {
    const chain = request.chain;
    request.epoch = this.epoch;
    request.toGuest = 0;
    request.dataBytes = 0;
    request.file = undefined;
    if (chain.writableBytes === 0) {
      // The status byte must be device-writable (§5.2.6); without one the driver cannot be told anything.
      queue.fail(`virtio-blk request ${chain.head} has no device-writable status byte`);
      this.release(request);
      return;
    }
    if (chain.readableBytes < BLK_REQUEST_HEADER_BYTES) {
      this.complete(request, VIRTIO_BLK_S_IOERR);
      return;
    }
    chain.readBytes(this.header);
    const h = this.headerView;
    const type = h.getUint32(0, true);
    const sectorLow = h.getUint32(8, true);
    const sectorHigh = h.getUint32(12, true);
    request.type = type;
    const headerOnly = chain.readableBytes === BLK_REQUEST_HEADER_BYTES;
    const statusOnly = chain.writableBytes === 1;

    switch (type) {
      case VIRTIO_BLK_T_IN:
        // Data is device-writable: any readable byte past the header is data in the wrong direction.
        if (!headerOnly) return this.complete(request, VIRTIO_BLK_S_IOERR);
        return this.startTransfer(request, sectorLow, sectorHigh, chain.writableBytes - 1, chain.readableSegments, 0);
      case VIRTIO_BLK_T_OUT: {
        if (this.readOnly || !statusOnly) return this.complete(request, VIRTIO_BLK_S_IOERR);
        // The data follows the header in the readable part; find the segment it starts in.
        let segment = 0;
        let skip = BLK_REQUEST_HEADER_BYTES;
        while (skip >= chain.lengths[segment]! && segment < chain.readableSegments - 1) skip -= chain.lengths[segment++]!;
        return this.startTransfer(request, sectorLow, sectorHigh, chain.readableBytes - BLK_REQUEST_HEADER_BYTES, segment, skip);
      }
      case VIRTIO_BLK_T_FLUSH:
        if (!headerOnly || !statusOnly) return this.complete(request, VIRTIO_BLK_S_IOERR);
        this.metrics.flushes++;
        if (this.cacheType !== 'Writeback') return this.complete(request, VIRTIO_BLK_S_OK);
        request.file = this.file.acquire();
        this.metrics.syncs++;
        this.io.fdatasync(request.file.fd, request.onSynced);
        return;
      case VIRTIO_BLK_T_GET_ID:
        if (!headerOnly) return this.complete(request, VIRTIO_BLK_S_IOERR);
        // Writes up to 20 bytes; in a shorter buffer the status byte written last wins.
        chain.writeBytes(this.id);
        request.toGuest = Math.min(VIRTIO_BLK_ID_BYTES, chain.writableBytes - 1);
        this.metrics.getIds++;
        return this.complete(request, VIRTIO_BLK_S_OK);
      case VIRTIO_BLK_T_DISCARD:
      case VIRTIO_BLK_T_WRITE_ZEROES:
        return this.startRanges(request, activation);
      default:
        // GET_LIFETIME, SECURE_ERASE, zoned and legacy SCSI commands, and unknown types.
        return this.complete(request, VIRTIO_BLK_S_UNSUPP);
    }
  }

  /** IN or OUT of `length` data bytes at `sector`, the data starting at chain segment `segment`, `skip` bytes in. */
  private startTransfer(request: BlockRequest, sectorLow: number, sectorHigh: number, length: number, segment: number, skip: number): void {
    // §5.2.6.1: "The length of data MUST be a multiple of 512 bytes for VIRTIO_BLK_T_IN and VIRTIO_BLK_T_OUT requests."
    if (length % SECTOR_SIZE !== 0 || this.beyondCapacity(sectorLow, sectorHigh, length / SECTOR_SIZE)) {
      return this.complete(request, VIRTIO_BLK_S_IOERR);
    }
    if (request.type === VIRTIO_BLK_T_IN) this.metrics.reads++;
    else this.metrics.writes++;
    if (length === 0) return this.complete(request, VIRTIO_BLK_S_OK);
    request.file = this.file.acquire();
    request.position = (sectorHigh * FOUR_GIB + sectorLow) * SECTOR_SIZE;
    request.remaining = length;
    request.dataBytes = length;
    request.segment = segment;
    request.skip = skip;
    this.transfer(request);
  }

  /**
   * Issue the next transfer from the cursor: tried at once first (transferNow), then on the
   * threadpool by host address (transferAsync); guest memory without host addresses (unit tests)
   * has guest-contiguous segments merged into pieces (at most IOV_MAX): one piece goes to
   * pread/pwrite without any view, several to preadv/pwritev as views.
   */
  private transfer(request: BlockRequest): void {
    if (this.transferNow(request) || this.transferAsync(request)) return;
    const chain = request.chain;
    const pieceBuffers = this.pieceBuffers;
    const pieceOffsets = this.pieceOffsets;
    const pieceLengths = this.pieceLengths;
    let pieces = 0;
    let segment = request.segment;
    let skip = request.skip;
    let left = request.remaining;
    while (left > 0 && segment < chain.segmentCount) {
      const available = chain.lengths[segment]! - skip;
      if (available <= 0) {
        segment++;
        skip = 0;
        continue;
      }
      const n = Math.min(available, left);
      const segmentBuffer = chain.buffers[segment]!;
      const segmentOffset = chain.offsets[segment]! + skip;
      const last = pieces - 1;
      if (last >= 0 && segmentBuffer === pieceBuffers[last] && pieceOffsets[last]! + pieceLengths[last]! === segmentOffset) {
        pieceLengths[last]! += n;
      } else {
        if (pieces === IOV_MAX) break; // the rest goes in the next call
        pieceBuffers[pieces] = segmentBuffer;
        pieceOffsets[pieces] = segmentOffset;
        pieceLengths[pieces] = n;
        pieces++;
      }
      left -= n;
      segment++;
      skip = 0;
    }
    if (pieces === 0) {
      // The chain ran out before the data did: cannot happen for lengths taken from the chain.
      return this.complete(request, VIRTIO_BLK_S_IOERR);
    }
    const fd = request.file!.fd;
    const reading = request.type === VIRTIO_BLK_T_IN;
    if (pieces === 1) {
      const buffer = pieceBuffers[0]!;
      if (reading) this.io.read(fd, buffer, pieceOffsets[0]!, pieceLengths[0]!, request.position, request.onTransfer);
      else this.io.write(fd, buffer, pieceOffsets[0]!, pieceLengths[0]!, request.position, request.onTransfer);
      return;
    }
    // The threadpool call outlives this function: the request keeps its own views.
    const iov = request.iov;
    iov.length = 0;
    for (let i = 0; i < pieces; i++) iov.push(pieceBuffers[i]!.subarray(pieceOffsets[i]!, pieceOffsets[i]! + pieceLengths[i]!));
    if (reading) this.io.readv(fd, iov, request.position, request.onTransfer);
    else this.io.writev(fd, iov, request.position, request.onTransfer);
  }

  /**
   * Try the transfer from the cursor at once on this thread (BlockFileIo.transferNow: RWF_NOWAIT,
   * nothing that could wait for the disk). True when it moved bytes and the request went on
   * (completed, or its next part issued); false to go through the threadpool.
   */
  private transferNow(request: BlockRequest): boolean {
    const transferNow = this.io.transferNow;
    const file = request.file!;
    const write = request.type !== VIRTIO_BLK_T_IN;
    const flags = write ? file.writeNowFlags : file.readNowFlags;
    const iovecs = this.iovecs;
    if (transferNow === undefined || flags === undefined || !iovecs.usable) return false;
    if (!this.gatherIovecs(request, iovecs)) return false;
    const n = transferNow(file.fd, write, iovecs.address, iovecs.count, request.position, flags);
    if (n === -EOPNOTSUPP) {
      // This file system does not take RWF_NOWAIT this way: the threadpool from now on.
      if (write) file.writeNowFlags = undefined;
      else file.readNowFlags = undefined;
    }
    // 0 bytes (end of file) and real errors are left to the threadpool call, which reports them.
    if (n <= 0) return false;
    this.metrics.immediateTransfers++;
    this.transferred(request, null, n);
    return true;
  }

  /**
   * The transfer from the cursor on the threadpool, by host address (BlockFileIo.transferAsync):
   * one preadv2/pwritev2 over the slot's own iovec array, which stays as it is until the call
   * completes, and no view per piece. False when guest memory has no host addresses or the file
   * operations cannot do it.
   */
  private transferAsync(request: BlockRequest): boolean {
    const transferAsync = this.io.transferAsync;
    if (transferAsync === undefined || !this.iovecs.usable) return false;
    const iovecs = (request.iovecs ??= new HostIovecs(IOV_MAX));
    iovecs.useRegionsOf(this.iovecs);
    if (!this.gatherIovecs(request, iovecs)) return false;
    transferAsync(request.file!.fd, request.type !== VIRTIO_BLK_T_IN, iovecs.address, iovecs.count, request.position, request.onTransfer);
    return true;
  }

  /**
   * The request's data from its cursor into `iovecs`, in one pass over the chain's segments
   * (HostIovecs merges guest-contiguous ones), as far as the array's IOV_MAX entries reach; the
   * rest goes in the next call. A 1 MiB request has ~256 segments, and in the emulated nested host
   * every per-segment step costs microseconds (bench/profile/blk-stream.ts). False when nothing
   * was gathered (the chain ran out before the data) or a segment is not a region buffer.
   */
  private gatherIovecs(request: BlockRequest, iovecs: HostIovecs): boolean {
    iovecs.reset();
    const chain = request.chain;
    const buffers = chain.buffers;
    const offsets = chain.offsets;
    const lengths = chain.lengths;
    const segments = chain.segmentCount;
    let segment = request.segment;
    let skip = request.skip;
    let left = request.remaining;
    while (left > 0 && segment < segments) {
      const available = lengths[segment]! - skip;
      if (available > 0) {
        const n = available < left ? available : left;
        if (!iovecs.add(buffers[segment]!, offsets[segment]! + skip, n)) {
          if (iovecs.count < iovecs.capacity) return false; // not a region buffer: cannot happen for a chain's segments
          break; // IOV_MAX pieces: the rest goes in the next call
        }
        left -= n;
      }
      segment++;
      skip = 0;
    }
    return iovecs.count > 0;
  }

  /** A read or write call finished. */
  private transferred(request: BlockRequest, error: NodeJS.ErrnoException | null, bytes: number): void {
    if (request.epoch !== this.epoch) return this.release(request);
    // Zero bytes is the end of the file (it shrank on the host) or a full disk: an I/O error.
    if (error !== null || !(bytes > 0) || bytes > request.remaining) return this.complete(request, VIRTIO_BLK_S_IOERR);
    const reading = request.type === VIRTIO_BLK_T_IN;
    if (reading) {
      request.toGuest += bytes;
      this.metrics.bytesRead += bytes;
    } else {
      this.metrics.bytesWritten += bytes;
    }
    request.position += bytes;
    request.remaining -= bytes;
    if (request.remaining > 0) {
      // A short transfer (more than IOV_MAX pieces, or more than the kernel's 2 GiB per call): go on from there.
      const chain = request.chain;
      let skip = request.skip + bytes;
      let segment = request.segment;
      while (segment < chain.segmentCount && skip >= chain.lengths[segment]!) skip -= chain.lengths[segment++]!;
      request.segment = segment;
      request.skip = skip;
      return this.transfer(request);
    }
    if (reading) return this.complete(request, VIRTIO_BLK_S_OK);
    this.written(request);
  }

  /** A write-type request did its work: complete it, after making it stable in write-through mode. */
  private written(request: BlockRequest): void {
    if (!this.writeThrough) return this.complete(request, VIRTIO_BLK_S_OK);
    this.metrics.syncs++;
    this.io.fdatasync(request.file!.fd, request.onSynced);
  }

  /** fdatasync finished (a flush, or a write in write-through mode). */
  private synced(request: BlockRequest, error: NodeJS.ErrnoException | null): void {
    if (request.epoch !== this.epoch) return this.release(request);
    this.complete(request, error === null ? VIRTIO_BLK_S_OK : VIRTIO_BLK_S_IOERR);
  }

  /** DISCARD or WRITE_ZEROES: copy the ranges out of guest memory, check them all, then do them one by one. */
  private startRanges(request: BlockRequest, activation: VirtioActivation): void {
    const chain = request.chain;
    const discard = request.type === VIRTIO_BLK_T_DISCARD;
    // §5.2.6.2: a write request to a read-only device fails with IOERR.
    if (this.readOnly) return this.complete(request, VIRTIO_BLK_S_IOERR);
    if (!hasFeature(activation.features, discard ? VIRTIO_BLK_F_DISCARD : VIRTIO_BLK_F_WRITE_ZEROES)) {
      return this.complete(request, VIRTIO_BLK_S_UNSUPP);
    }
    const payload = chain.readableBytes - BLK_REQUEST_HEADER_BYTES;
    if (chain.writableBytes !== 1 || payload === 0 || payload % BLK_RANGE_BYTES !== 0 || payload > request.ranges.length) {
      return this.complete(request, VIRTIO_BLK_S_IOERR);
    }
    chain.readBytes(request.ranges, BLK_REQUEST_HEADER_BYTES);
    const count = payload / BLK_RANGE_BYTES;
    const v = request.rangeView;
    for (let i = 0; i < count; i++) {
      const at = i * BLK_RANGE_BYTES;
      const sectors = v.getUint32(at + 8, true);
      const flags = v.getUint32(at + 12, true);
      // §5.2.6.2: UNSUPP for an unknown flag, and for unmap on a discard.
      if ((flags & ~VIRTIO_BLK_RANGE_FLAG_UNMAP) !== 0 || (discard && flags !== 0)) return this.complete(request, VIRTIO_BLK_S_UNSUPP);
      if (sectors > BLK_MAX_DISCARD_SECTORS || this.beyondCapacity(v.getUint32(at, true), v.getUint32(at + 4, true), sectors)) {
        return this.complete(request, VIRTIO_BLK_S_IOERR);
      }
    }
    if (discard) this.metrics.discards++;
    else this.metrics.writeZeroes++;
    request.rangeCount = count;
    request.rangeNext = 0;
    request.file = this.file.acquire();
    this.nextRange(request);
  }

  private nextRange(request: BlockRequest): void {
    const v = request.rangeView;
    while (request.rangeNext < request.rangeCount) {
      const at = request.rangeNext++ * BLK_RANGE_BYTES;
      const sectors = v.getUint32(at + 8, true);
      if (sectors === 0) continue;
      const fd = request.file!.fd;
      request.position = (v.getUint32(at + 4, true) * FOUR_GIB + v.getUint32(at, true)) * SECTOR_SIZE;
      request.remaining = sectors * SECTOR_SIZE;
      request.punching = request.type === VIRTIO_BLK_T_DISCARD || (v.getUint32(at + 12, true) & VIRTIO_BLK_RANGE_FLAG_UNMAP) !== 0;
      if (request.punching) this.io.punchHole(fd, request.position, request.remaining, request.onRangeDone);
      else this.io.writeZeroes(fd, request.position, request.remaining, request.onRangeDone);
      return;
    }
    this.written(request);
  }

  /** One discard / write-zeroes range is done. */
  private rangeDone(request: BlockRequest, error: NodeJS.ErrnoException | null): void {
    if (request.epoch !== this.epoch) return this.release(request);
    if (error !== null) {
      // A discard MAY deallocate (§5.2.6.2): where holes cannot be punched it does nothing.
      if (request.type === VIRTIO_BLK_T_DISCARD) return this.nextRange(request);
      // Write zeroes with unmap: the range must still read as zeroes, so write them.
      if (request.punching) {
        request.punching = false;
        this.io.writeZeroes(request.file!.fd, request.position, request.remaining, request.onRangeDone);
        return;
      }
      return this.complete(request, VIRTIO_BLK_S_IOERR);
    }
    this.nextRange(request);
  }

  /** Whether `sectors` sectors from sector (high:low) run past the capacity. */
  private beyondCapacity(sectorLow: number, sectorHigh: number, sectors: number): boolean {
    return sectorHigh >= MAX_SECTOR_HIGH || sectorHigh * FOUR_GIB + sectorLow + sectors > this.capacity;
  }

  /**
   * Write the status byte (the last device-writable byte), return the chain with the bytes written
   * to the driver (data plus status), and notify it unless processQueue will (for a large transfer,
   * processQueue's pass notifies at once: BLK_EARLY_NOTIFY_BYTES).
   */
  private complete(request: BlockRequest, status: number): void {
    const activation = this.activation;
    if (activation !== undefined && request.epoch === this.epoch) {
      const chain = request.chain;
      const last = chain.segmentCount - 1;
      chain.buffers[last]![chain.offsets[last]! + chain.lengths[last]! - 1] = status;
      if (status === VIRTIO_BLK_S_IOERR) this.metrics.ioErrors++;
      else if (status === VIRTIO_BLK_S_UNSUPP) this.metrics.unsupported++;
      const queue = activation.queues[request.queue]!;
      queue.addUsed(chain.head, request.toGuest + 1);
      if (this.processing !== request.queue) this.notifyCompleted(request.queue, activation);
      else if (request.dataBytes >= BLK_EARLY_NOTIFY_BYTES) activation.notifyIfNeeded(request.queue);
    }
    this.release(request);
  }

  /**
   * Tell the driver of a completion outside processQueue. With other requests of the queue still
   * in flight, once at the end of this batch of events (deferAfterBatch: setImmediate, or the held
   * wait's end of batch, src/devices/end-of-batch.ts), so completions the
   * threadpool finished together (libuv hands them over in one pass) cost the guest one interrupt
   * and one wake-up, as QEMU's thread-pool completion handler batches them; the last request in
   * flight interrupts at once, so a lone request (QD 1) waits for nothing.
   */
  private notifyCompleted(index: number, activation: VirtioActivation): void {
    // This request still holds its slot: more than one slot taken means others are in flight.
    if (BLK_QUEUE_SIZE - this.free[index]!.length <= 1) {
      this.notifyPending[index] = false;
      activation.notifyIfNeeded(index);
      return;
    }
    this.notifyPending[index] = true;
    if (this.notifyScheduled) return;
    this.notifyScheduled = true;
    deferAfterBatch(this.flushNotifications);
  }

  private readonly flushNotifications = (): void => {
    this.notifyScheduled = false;
    const activation = this.activation;
    for (let index = 0; index < this.notifyPending.length; index++) {
      if (!this.notifyPending[index]) continue;
      this.notifyPending[index] = false;
      activation?.notifyIfNeeded(index);
    }
  };

  /** A device bug surfaced while completing a request: the guest sees DEVICE_NEEDS_RESET, the VMM keeps running. */
  private failed(request: BlockRequest, e: unknown): void {
    if (request.epoch === this.epoch) this.activation?.fail(`failed completing request ${request.chain.head}: ${e instanceof Error ? e.message : String(e)}`);
    if (!this.free[request.queue]!.includes(request)) this.release(request);
  }

  /** Give the slot back; restart a starved queue; wake close() when nothing is in flight. */
  private release(request: BlockRequest): void {
    request.file?.release();
    request.file = undefined;
    this.free[request.queue]!.push(request);
    if (this.starved[request.queue] === true && this.processing === -1 && this.activation !== undefined) {
      this.starved[request.queue] = false;
      this.processQueue(request.queue);
    }
    if (this.idleWaiters.length > 0 && this.inFlight === 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const wake of waiters) wake();
    }
  }

  private setCapacity(sizeBytes: number): void {
    this.capacity = Math.floor(sizeBytes / SECTOR_SIZE);
    this.configView.setUint32(BLK_CONFIG_CAPACITY, this.capacity % FOUR_GIB, true);
    this.configView.setUint32(BLK_CONFIG_CAPACITY + 4, Math.floor(this.capacity / FOUR_GIB), true);
  }
}
