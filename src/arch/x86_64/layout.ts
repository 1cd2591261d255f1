/**
 * The guest-physical memory layout of an x86_64 tsvmm guest, in one place.
 *
 * Low memory (below 1 MiB) holds the structures the VMM builds for the guest before its first
 * instruction: GDT, IDT, PVH start_info, zero page, boot page tables, command line and ACPI
 * tables. The values follow Firecracker's `src/vmm/src/arch/x86_64/layout.rs` and `regs.rs`
 * (zero page 0x7000, command line 0x20000, GDT 0x500, IDT 0x520, PML4/PDPT/PD at
 * 0x9000/0xa000/0xb000, stack 0x8ff0) so that their behaviour is a known-good reference.
 *
 * Above 1 MiB is guest RAM up to the 32-bit MMIO hole [3 GiB, 4 GiB); RAM that does not fit
 * below the hole continues at 4 GiB.
 */
import { TsvmmError } from '../../util/errors.js';

/** One contiguous range of guest RAM. */
export interface RamRegion {
  /** Guest-physical start address. */
  readonly gpa: number;
  /** Length in bytes. */
  readonly size: number;
}

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

/** x86 page size; initrd and table placements are page aligned. */
export const PAGE_SIZE = 4 * KiB;

// ---------------------------------------------------------------------------------------------
// Low memory: boot structures the VMM writes (all below the EBDA at 0x9fc00).
// ---------------------------------------------------------------------------------------------

/**
 * Boot GDT: null, (unused), code 0x10 (64-bit, L=1), data 0x18, TSS 0x20 — 8 bytes each.
 * Firecracker regs.rs BOOT_GDT_OFFSET. Above the real-mode IVT (0x0–0x3ff) and BDA (0x400–0x4ff)
 * so firmware-style scans by the guest find nothing of ours there.
 */
export const BOOT_GDT_START = 0x500;
/** Room for 4 GDT entries (null, code, data, TSS low) before the IDT. */
export const BOOT_GDT_MAX_ENTRIES = 4;
/** Boot IDT (an empty one; the kernel installs its own). Firecracker regs.rs BOOT_IDT_OFFSET. */
export const BOOT_IDT_START = 0x520;

/**
 * PVH `struct hvm_start_info` (xen/include/public/arch-x86/hvm/start_info.h), passed in EBX on
 * PVH entry. Firecracker layout.rs PVH_INFO_START. 56 bytes (version 1).
 */
export const PVH_INFO_START = 0x6000;
/** The PVH module list (`hvm_modlist_entry`, 32 bytes each); Firecracker layout.rs MODLIST_START. */
export const PVH_MODLIST_START = 0x6040;
/** Room for this many modules between PVH_MODLIST_START and PVH_MEMMAP_START. */
export const PVH_MODLIST_MAX_ENTRIES = 6;
/**
 * The PVH memory map (`hvm_memmap_table_entry`, 24 bytes each). Firecracker puts it at 0x7000,
 * sharing the zero page's page because only one boot protocol is used per boot; we keep the two
 * apart (0x6100 + 128 × 24 = 0x6d00 < 0x7000) so both can be written without clobbering.
 */
export const PVH_MEMMAP_START = 0x6100;
/** The most memory-map entries PVH_MEMMAP_START has room for (same cap as the zero page's e820). */
export const PVH_MEMMAP_MAX_ENTRIES = 128;

/**
 * The Linux zero page (`struct boot_params`, 4096 bytes, arch/x86/include/uapi/asm/bootparam.h),
 * passed in RSI on 64-bit entry. Firecracker layout.rs ZERO_PAGE_START.
 */
export const ZERO_PAGE_START = 0x7000;
/** sizeof(struct boot_params). */
export const ZERO_PAGE_SIZE = 0x1000;

/** Initial RSP/RBP for the boot vCPU: top of the page below the page tables (Firecracker). */
export const BOOT_STACK_POINTER = 0x8ff0;

/** Boot identity-map page tables (Firecracker regs.rs PML4_START / PDPTE_START / PDE_START). */
export const PML4_START = 0x9000;
export const PDPT_START = 0xa000;
/**
 * First page-directory page; 2 MiB pages, one PD page maps 1 GiB. Pages from here up to (not
 * including) CMDLINE_START are free for more PDs if more than 1 GiB must be identity-mapped.
 */
export const PD_START = 0xb000;

/** Kernel command line, NUL-terminated. Firecracker layout.rs CMDLINE_START. */
export const CMDLINE_START = 0x20000;
/**
 * Bytes reserved for the command line including its NUL. Debian's kernels have
 * COMMAND_LINE_SIZE 2048 (setup header cmdline_size 2047 = without the NUL), as Firecracker's
 * CMDLINE_MAX_SIZE.
 */
export const CMDLINE_MAX_SIZE = 2048;

// ---------------------------------------------------------------------------------------------
// The legacy PC area below 1 MiB.
// ---------------------------------------------------------------------------------------------

/**
 * Start of the Extended BIOS Data Area: conventional RAM ends here (639 KiB). Firecracker
 * layout.rs SYSTEM_MEM_START / MPTABLE_START; e820 marks [EBDA_START, 1 MiB) reserved.
 */
export const EBDA_START = 0x9fc00;

/**
 * ACPI tables live in the BIOS area [0xe0000, 0x100000), which Linux searches for the RSDP when
 * a boot loader gives no acpi_rsdp_addr (drivers/acpi/acpica/tbxfroot.c ACPI_HI_RSDP_WINDOW_BASE).
 * The RSDP comes first (Firecracker layout.rs RSDP_ADDR = 0xe0000), the other tables after it.
 */
export const ACPI_TABLES_START = 0xe0000;
export const ACPI_TABLES_END = 0x100000;
export const ACPI_RSDP_ADDR = ACPI_TABLES_START;

/** First byte above the legacy PC area; the kernel and initrd go at or above this. */
export const HIMEM_START = 0x100000;

// ---------------------------------------------------------------------------------------------
// The 32-bit MMIO hole [3 GiB, 4 GiB).
// ---------------------------------------------------------------------------------------------

/** 4 GiB: the first address that does not fit in 32 bits. */
export const FIRST_ADDR_PAST_32BITS = 4 * GiB;
/**
 * Start of the MMIO hole below 4 GiB. A 1 GiB gap, as the DESIGN notes and Firecracker's
 * pre-PCI layout (MMIO_MEM_START) have it: RAM beyond 3 GiB continues at 4 GiB.
 */
export const MMIO_HOLE_START = 3 * GiB;
export const MMIO_HOLE_END = FIRST_ADDR_PAST_32BITS;

/** 32-bit PCI BAR window: [3 GiB, 3.25 GiB). */
export const PCI_MMIO32_START = MMIO_HOLE_START;
export const PCI_MMIO32_SIZE = 256 * MiB;

/**
 * Firecracker-compatible platform devices: [0xd000_0000, 0xe000_0000). Firecracker's x86_64
 * MMIO_MEM_START is 0xd000_0000 and its boot timer sits there, so guest programs written for
 * Firecracker (`devmem 0xd0000000 8 123`) find it in the same place; the next page is tsvmm's
 * guest status register (src/image/guest-protocol.ts).
 */
export const LEGACY_MMIO_START = PCI_MMIO32_START + PCI_MMIO32_SIZE; // 0xd000_0000
export const LEGACY_MMIO_SIZE = 256 * MiB;

/**
 * PCI Express enhanced configuration (ECAM/MMCONFIG) for segment 0, buses 0–255:
 * 256 buses × 32 devices × 8 functions × 4 KiB = 256 MiB (PCI Firmware spec, MCFG table).
 */
export const PCI_ECAM_START = LEGACY_MMIO_START + LEGACY_MMIO_SIZE; // 0xe000_0000
export const PCI_ECAM_SIZE = 256 * MiB;

/** Platform devices (virtio-mmio, boot timer…): [0xf000_0000, IOAPIC). */
export const PLATFORM_MMIO_START = PCI_ECAM_START + PCI_ECAM_SIZE; // 0xf000_0000
export const PLATFORM_MMIO_SIZE = 0xfec00000 - PLATFORM_MMIO_START;

/** The IOAPIC's register window (Intel 82093AA datasheet default base; one 4 KiB page). */
export const IOAPIC_START = 0xfec00000;
export const IOAPIC_SIZE = 0x1000;

/**
 * The local APIC's default base (Intel SDM vol. 3A §10.4.1, IA32_APIC_BASE reset value); the
 * 1 MiB around it [0xfee00000, 0xfef00000) is also where MSIs are written, so nothing else may
 * be mapped there.
 */
export const LAPIC_START = 0xfee00000;
export const LAPIC_MSI_WINDOW_SIZE = 0x100000;

// ---------------------------------------------------------------------------------------------
// RAM split.
// ---------------------------------------------------------------------------------------------

/**
 * The smallest guest tsvmm lays out: low memory boot structures plus room above 1 MiB.
 * (A real kernel needs far more; that is checked when it is loaded.)
 */
export const MIN_GUEST_MEMORY = 2 * MiB;

/** Thrown when a requested memory size cannot be laid out. */
export class GuestLayoutError extends TsvmmError {}

/**
 * Where `memoryBytes` of guest RAM go: [0, min(size, 3 GiB)) and, for the rest, [4 GiB, …).
 * The single source for guest memory, e820 and the PVH memory map.
 */
export function guestRamRegions(memoryBytes: number): RamRegion[] {
  if (!Number.isSafeInteger(memoryBytes) || memoryBytes < MIN_GUEST_MEMORY) {
    throw new GuestLayoutError(`guest memory must be a whole number of bytes ≥ ${MIN_GUEST_MEMORY / MiB} MiB, got ${memoryBytes}`);
  }
  if (memoryBytes % PAGE_SIZE !== 0) {
    throw new GuestLayoutError(`guest memory (${memoryBytes} bytes) must be a multiple of the ${PAGE_SIZE}-byte page size`);
  }
  const low = Math.min(memoryBytes, MMIO_HOLE_START);
  const regions: RamRegion[] = [{ gpa: 0, size: low }];
  if (memoryBytes > low) regions.push({ gpa: FIRST_ADDR_PAST_32BITS, size: memoryBytes - low });
  return regions;
}

/** End (exclusive) of the highest RAM region; the 64-bit PCI window can start above it. */
export function ramEnd(regions: readonly RamRegion[]): number {
  return regions.reduce((end, r) => Math.max(end, r.gpa + r.size), 0);
}
