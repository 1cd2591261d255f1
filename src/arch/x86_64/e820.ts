/**
 * The BIOS e820 memory map the guest sees (through the zero page, or PVH's memory map): which
 * guest-physical ranges are RAM, which are reserved.
 *
 * From the RAM regions (layout.ts guestRamRegions): conventional RAM [0, EBDA), the legacy area
 * [EBDA, 1 MiB) reserved except the ACPI tables [0xe0000, 1 MiB) marked ACPI, RAM from 1 MiB up
 * to the MMIO hole, the PCI ECAM window reserved (Linux only trusts MMCONFIG that is reserved in
 * e820 or ACPI resources: arch/x86/pci/mmconfig-shared.c is_mmconf_reserved), RAM above 4 GiB.
 */
import { BootParamsError } from '../../loader/errors.js';
import { ACPI_TABLES_END, ACPI_TABLES_START, EBDA_START, HIMEM_START, PCI_ECAM_SIZE, PCI_ECAM_START, type RamRegion } from './layout.js';

/** e820 entry types (arch/x86/include/asm/e820/types.h enum e820_type; ACPI spec 6.5 table 15.1). */
export const E820Type = {
  RAM: 1,
  RESERVED: 2,
  /** ACPI tables; reclaimable by the OS once it has read them. */
  ACPI: 3,
  NVS: 4,
  UNUSABLE: 5,
  PMEM: 7,
} as const;
export type E820Type = (typeof E820Type)[keyof typeof E820Type];

/** One e820 entry (struct boot_e820_entry: u64 addr, u64 size, u32 type). */
export interface E820Entry {
  readonly addr: number;
  readonly size: number;
  readonly type: E820Type;
}

/** Options for buildE820Map. */
export interface E820Options {
  /** Reserve the PCI ECAM window (default true; harmless without PCI). */
  readonly reservePciEcam?: boolean;
}

/**
 * Build the e820 map for these RAM regions. The first region must start at 0 and reach past
 * 1 MiB (layout.ts guarantees it); regions must not overlap.
 */
export function buildE820Map(ram: readonly RamRegion[], options: E820Options = {}): E820Entry[] {
  const sorted = [...ram].filter((r) => r.size > 0).sort((a, b) => a.gpa - b.gpa);
  const first = sorted[0];
  if (first === undefined || first.gpa !== 0 || first.size <= HIMEM_START) {
    throw new BootParamsError('guest RAM must start at address 0 and extend past 1 MiB to build an e820 map');
  }
  for (let i = 1; i < sorted.length; i++) {
    const p = sorted[i - 1]!;
    if (sorted[i]!.gpa < p.gpa + p.size) throw new BootParamsError(`guest RAM regions overlap at 0x${sorted[i]!.gpa.toString(16)}`);
  }
  const entries: E820Entry[] = [
    { addr: 0, size: EBDA_START, type: E820Type.RAM },
    { addr: EBDA_START, size: ACPI_TABLES_START - EBDA_START, type: E820Type.RESERVED },
    { addr: ACPI_TABLES_START, size: ACPI_TABLES_END - ACPI_TABLES_START, type: E820Type.ACPI },
    { addr: HIMEM_START, size: first.size - HIMEM_START, type: E820Type.RAM },
  ];
  for (const r of sorted.slice(1)) entries.push({ addr: r.gpa, size: r.size, type: E820Type.RAM });
  if (options.reservePciEcam ?? true) {
    const overlapsRam = sorted.some((r) => r.gpa < PCI_ECAM_START + PCI_ECAM_SIZE && PCI_ECAM_START < r.gpa + r.size);
    if (overlapsRam) throw new BootParamsError('guest RAM overlaps the PCI ECAM window; RAM must stay out of the MMIO hole');
    entries.push({ addr: PCI_ECAM_START, size: PCI_ECAM_SIZE, type: E820Type.RESERVED });
  }
  return entries.sort((a, b) => a.addr - b.addr);
}
