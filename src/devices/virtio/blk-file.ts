/**
 * The file operations virtio-blk (blk.ts) performs on its backing image, as one small interface so
 * tests can count or delay them and the device never sees anything but callbacks.
 *
 * Every operation is asynchronous and runs on libuv's threadpool (node's fs calls, and koffi's
 * async call for fallocate), so a slow disk delays only the request, never the event loop or a
 * vCPU. Buffers are views of guest memory: data moves between the file and the guest with no
 * copy in between.
 */
import { fdatasync, read, readv, write, writev } from 'node:fs';
import { FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE, fallocateAsync } from '../../kvm/libc.js';

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
  fdatasync: (fd, done) => fdatasync(fd, done),
  punchHole: (fd, position, length, done) =>
    fallocateAsync(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, position, length, (ok) => done(ok ? null : fallocateFailed('PUNCH_HOLE'))),
  writeZeroes: (fd, position, length, done) =>
    fallocateAsync(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, position, length, (ok) => {
      if (ok) done(null);
      else writeZeroChunks(fd, position, length, done);
    }),
};
