/**
 * The guest status register: one MMIO byte where the default guest's init writes its command's
 * exit status before powering off (see src/image/guest-protocol.ts). The VMM then exits with it,
 * so `tsvmm run -- cmd` behaves like running `cmd`. Reads return the last status written.
 */
import type { BusDevice } from './bus.js';

export class GuestStatusDevice implements BusDevice {
  /** The last status written, or undefined if the guest never wrote one. */
  status: number | undefined;

  constructor(private readonly onStatus?: (status: number) => void) {}

  read(offset: number, data: Uint8Array): void {
    if (offset === 0 && this.status !== undefined) data[0] = this.status;
  }

  write(offset: number, data: Uint8Array): void {
    // Only a write at offset 0 counts; other offsets and widths wider than the byte are ignored
    // beyond their first byte so a guest cannot confuse the VMM with odd accesses.
    if (offset !== 0 || data.length === 0) return;
    this.status = data[0]!;
    this.onStatus?.(this.status);
  }
}
