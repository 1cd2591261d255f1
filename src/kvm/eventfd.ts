/** A Linux eventfd: the doorbell KVM rings for an ioeventfd and listens to for an irqfd. */
import { EFD_CLOEXEC, EFD_NONBLOCK, close, eventfd, read, write } from './libc.js';

export class EventFd {
  readonly fd: number;
  private readonly cell = Buffer.alloc(8);
  private closed = false;

  /** A non-blocking, close-on-exec eventfd with counter 0. */
  constructor() {
    this.fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  }

  /** Add `value` to the counter (wakes a reader; for an irqfd, injects the interrupt). */
  signal(value = 1n): void {
    this.cell.writeBigUInt64LE(value);
    write(this.fd, this.cell);
  }

  /** Read and reset the counter; 0n when nothing was signalled since the last read. */
  consume(): bigint {
    const n = read(this.fd, this.cell);
    return n === 8 ? this.cell.readBigUInt64LE() : 0n;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    close(this.fd);
  }
}
