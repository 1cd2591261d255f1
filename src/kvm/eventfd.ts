/**
 * A Linux eventfd: the doorbell KVM rings for an ioeventfd and listens to for an irqfd.
 *
 * Signalling and resetting are on every queue notification's path, so they read and write
 * native cells by address (one per thread that loads this module): koffi then passes three
 * integers, where a Buffer argument costs a lookup and type checks of the buffer per call.
 */
import { EFD_CLOEXEC, EFD_NONBLOCK, close, eventfd, nativeCells, readAt, writeAt } from './libc.js';

/** eventfd(2) counters are 8-byte unsigned integers, read and written whole. */
const COUNTER_BYTES = 8;
const ONE = 0;
const VALUE = 8;
const READ = 16;
const cells = nativeCells(24);
cells.view.setBigUint64(ONE, 1n, true);

export class EventFd {
  readonly fd: number;
  private closed = false;

  /** A non-blocking, close-on-exec eventfd with counter 0. */
  constructor() {
    this.fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  }

  /** Add `value` to the counter (wakes a reader; for an irqfd, injects the interrupt). */
  signal(value = 1n): void {
    if (value === 1n) {
      writeAt(this.fd, cells.address + ONE, COUNTER_BYTES);
      return;
    }
    cells.view.setBigUint64(VALUE, value, true);
    writeAt(this.fd, cells.address + VALUE, COUNTER_BYTES);
  }

  /** Reset the counter; true when something had been signalled since the last reset. Allocates nothing. */
  reset(): boolean {
    return readAt(this.fd, cells.address + READ, COUNTER_BYTES) === COUNTER_BYTES;
  }

  /** Read and reset the counter; 0n when nothing was signalled since the last read. */
  consume(): bigint {
    return this.reset() ? cells.view.getBigUint64(READ, true) : 0n;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    close(this.fd);
  }
}
