/**
 * The file operations virtio-blk (blk.ts) performs on its backing image, as one small interface so
 * tests can count or delay them and the device never sees anything but callbacks.
 *
 * Every operation is asynchronous and runs on libuv's threadpool (node's fs calls, and koffi's
 * async call for fallocate), so a slow disk delays only the request, never the event loop or a
 * vCPU. Buffers are views of guest memory: data moves between the file and the guest with no
 * copy in between. Reads and writes can first be tried at once on the main thread (transferNow):
 * for an image in memory (tmpfs, ramfs) always, elsewhere with RWF_NOWAIT, so data already in the
 * host's page cache moves without the two thread switches of a threadpool call and anything that
 * would wait still goes to the threadpool. (A tmpfs page swapped out is read back synchronously:
 * the price of treating memory-backed files as memory.)
 */
import { fdatasync, read, readv, write, writev } from 'node:fs';
import {
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  FALLOC_FL_ZERO_RANGE,
  RAMFS_MAGIC,
  RWF_NOWAIT,
  TMPFS_MAGIC,
  fallocateAsync,
  fileSystemType,
  transferIovecsAsync,
  transferIovecsNow,
} from '../../kvm/libc.js';

/** Completion of a transfer: an error, or how many bytes moved (fewer than asked only at end of file or on a full disk). */
export type TransferCallback = (error: NodeJS.ErrnoException | null, bytes: number) => void;
/** Completion of an operation without a byte count. */
export type DoneCallback = (error: NodeJS.ErrnoException | null) => void;

export interface BlockFileIo {
  /** pread(2) of `length` bytes at file `position` into buffer[offset...]. */
  read(fd: number, buffer: Uint8Array, offset: number, length: number, position: number, done: TransferCallback): void;
  /** pwrite(2) of buffer[offset, offset + length) at file `position`. */
  write(fd: number, buffer: Uint8Array, offset: number, length: number, position: number, done: TransferCallback): void;
  /** preadv(2) into the buffers in order. */
  readv(fd: number, buffers: readonly Uint8Array[], position: number, done: TransferCallback): void;
  /** pwritev(2) from the buffers in order. */
  writev(fd: number, buffers: readonly Uint8Array[], position: number, done: TransferCallback): void;
  /**
   * Optional, with transferNow: the preadv2/pwritev2 flags that make a transfer on `fd` safe to do
   * at once on the main thread, or undefined when none does. A file in memory (tmpfs, ramfs) needs
   * none: its reads and writes are memory copies (0). Elsewhere RWF_NOWAIT: the call fails with
   * EAGAIN rather than wait for the disk or a lock.
   */
  immediateFlags?(fd: number): number | undefined;
  /**
   * Optional: the transfer done at once on the calling thread with `flags` (see immediateFlags):
   * preadv2/pwritev2 of `count` struct iovecs (IOVEC_SIZE bytes each: host address, length) in
   * native memory at `iovecsAddress` (HostIovecs.address). Returns the bytes moved (fewer than asked when only part was at hand), or a negative
   * errno: EAGAIN when it would have to wait (data not in the page cache, a lock taken),
   * EOPNOTSUPP when the file system does not do RWF_NOWAIT (for that direction). The caller then
   * uses the asynchronous call, which also reports real errors.
   */
  transferNow?(fd: number, write: boolean, iovecsAddress: number, count: number, position: number, flags: number): number;
  /**
   * Optional: preadv2/pwritev2 of `count` struct iovecs at `iovecsAddress` (as transferNow) on the
   * threadpool, for transfers that may wait. The iovecs stay untouched until `done`.
   * Without it, such transfers go through read/write/readv/writev with views.
   */
  transferAsync?(fd: number, write: boolean, iovecsAddress: number, count: number, position: number, done: TransferCallback): void;
  /** fdatasync(2): written data (and the metadata needed to read it back) reaches the disk. */
  fdatasync(fd: number, done: DoneCallback): void;
  /** Deallocate [position, position + length) keeping the file size; it then reads as zeroes. Fails where the file system cannot. */
  punchHole(fd: number, position: number, length: number, done: DoneCallback): void;
  /** Make [position, position + length) read as zeroes, keeping blocks allocated. */
  writeZeroes(fd: number, position: number, length: number, done: DoneCallback): void;
}

/** Chunk size for writing zeroes where FALLOC_FL_ZERO_RANGE is not supported. */
const ZERO_CHUNK_BYTES = 1024 * 1024;
let zeroChunk: Uint8Array | undefined;

/** Operation-not-supported, for a fallocate that failed (its errno stays on the worker thread). */
function fallocateFailed(what: string): NodeJS.ErrnoException {
  const error: NodeJS.ErrnoException = new Error(`fallocate (${what}) failed or is not supported by this file system`);
  error.code = 'EOPNOTSUPP';
  return error;
}

/** A failed preadv2/pwritev2 on the threadpool (its errno stays on the worker thread): the guest sees IOERR either way. */
function transferFailed(write: boolean): NodeJS.ErrnoException {
  const error: NodeJS.ErrnoException = new Error(`${write ? 'pwritev2' : 'preadv2'} on the image failed`);
  error.code = 'EIO';
  return error;
}

/** Write zeroes over the range in ZERO_CHUNK_BYTES pieces: the fallback for file systems without ZERO_RANGE. Rare, so not allocation-free. */
function writeZeroChunks(fd: number, position: number, length: number, done: DoneCallback): void {
  const zeroes = (zeroChunk ??= new Uint8Array(ZERO_CHUNK_BYTES));
  const step = (at: number, remaining: number): void => {
    if (remaining === 0) {
      done(null);
      return;
    }
    write(fd, zeroes, 0, Math.min(remaining, zeroes.length), at, (error, written) => {
      if (error !== null) done(error);
      else if (written === 0) done(fallocateFailed('writing zeroes made no progress'));
      else step(at + written, remaining - written);
    });
  };
  step(position, length);
}

/** The real thing: node's fs plus fallocate(2) from src/kvm/libc.ts. */
export const nodeBlockFileIo: BlockFileIo = {
  read: (fd, buffer, offset, length, position, done) => read(fd, buffer, offset, length, position, done),
  write: (fd, buffer, offset, length, position, done) => write(fd, buffer, offset, length, position, done),
  readv: (fd, buffers, position, done) => readv(fd, buffers, position, done),
  writev: (fd, buffers, position, done) => writev(fd, buffers, position, done),
  immediateFlags: (fd) => {
    const type = fileSystemType(fd);
    return type === TMPFS_MAGIC || type === RAMFS_MAGIC ? 0 : RWF_NOWAIT;
  },
  transferNow: (fd, write, iovecs, count, position, flags) => transferIovecsNow(fd, write, iovecs, count, position, flags),
  transferAsync: (fd, write, iovecs, count, position, done) =>
    transferIovecsAsync(fd, write, iovecs, count, position, (n) => (n >= 0 ? done(null, n) : done(transferFailed(write), 0))),
  fdatasync: (fd, done) => fdatasync(fd, done),
  punchHole: (fd, position, length, done) =>
    fallocateAsync(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, position, length, (ok) => done(ok ? null : fallocateFailed('PUNCH_HOLE'))),
  writeZeroes: (fd, position, length, done) =>
    fallocateAsync(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, position, length, (ok) => {
      if (ok) done(null);
      else writeZeroChunks(fd, position, length, done);
    }),
};
