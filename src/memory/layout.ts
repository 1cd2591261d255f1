/**
 * Where guest RAM goes in the guest physical address space. x86 machines keep a hole below
 * 4 GiB for MMIO (PCI BARs, IOAPIC at 0xfec00000, LAPIC at 0xfee00000, firmware at the top);
 * RAM that would fall into the hole continues above 4 GiB instead.
 */

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

/** A range of guest physical addresses: [start, start + size). */
export interface GpaRange {
  readonly start: number;
  readonly size: number;
}

/** The default MMIO hole, [3 GiB, 4 GiB), the 1 GiB gap Firecracker leaves below 4 GiB. */
export const DEFAULT_MMIO_HOLE: GpaRange = { start: 3 * GiB, size: 1 * GiB };

/** Guest RAM must come in whole 4 KiB pages: KVM memory slots are page-granular. */
export const PAGE_SIZE = 4 * KiB;

/**
 * Split `ramBytes` of RAM around `hole`: RAM from 0 up to the hole, the rest from the hole's end.
 * Returns one or two ranges, lowest first.
 */
export function ramRanges(ramBytes: number, hole: GpaRange = DEFAULT_MMIO_HOLE): GpaRange[] {
  if (!Number.isSafeInteger(ramBytes) || ramBytes <= 0 || ramBytes % PAGE_SIZE !== 0) {
    throw new RangeError(`guest RAM size must be a positive multiple of ${PAGE_SIZE} bytes, got ${ramBytes}`);
  }
  if (hole.start % PAGE_SIZE !== 0 || hole.size % PAGE_SIZE !== 0 || hole.start <= 0 || hole.size < 0) {
    throw new RangeError(`MMIO hole must be page-aligned and start above 0, got start ${hole.start} size ${hole.size}`);
  }
  if (ramBytes <= hole.start) return [{ start: 0, size: ramBytes }];
  return [
    { start: 0, size: hole.start },
    { start: hole.start + hole.size, size: ramBytes - hole.start },
  ];
}
