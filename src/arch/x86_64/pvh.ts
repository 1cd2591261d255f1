/**
 * PVH boot: struct hvm_start_info and what it points to (xen/include/public/arch-x86/hvm/
 * start_info.h). The kernel is entered at its XEN_ELFNOTE_PHYS32_ENTRY in 32-bit protected mode,
 * paging off, with EBX = the start_info's physical address.
 *
 *   hvm_start_info (version 1, 56 bytes)    hvm_modlist_entry (32 bytes)   hvm_memmap_table_entry (24 bytes)
 *    0 u32 magic 0x336ec578                   0 u64 paddr                    0 u64 addr
 *    4 u32 version                            8 u64 size                     8 u64 size
 *    8 u32 flags (SIF_*)                     16 u64 cmdline_paddr           16 u32 type (XEN_HVM_MEMMAP_TYPE_*)
 *   12 u32 nr_modules                        24 u64 reserved                20 u32 reserved
 *   16 u64 modlist_paddr
 *   24 u64 cmdline_paddr
 *   32 u64 rsdp_paddr
 *   40 u64 memmap_paddr    (version 1)
 *   48 u32 memmap_entries  (version 1)
 *   52 u32 reserved
 */
import { BootParamsError } from '../../loader/errors.js';
import { writePlacements, type GuestMemoryWriter, type GuestPlacement } from '../../loader/guest-memory.js';
import type { E820Entry } from './e820.js';
import {
  PVH_INFO_START,
  PVH_MEMMAP_MAX_ENTRIES,
  PVH_MEMMAP_START,
  PVH_MODLIST_MAX_ENTRIES,
  PVH_MODLIST_START,
} from './layout.js';

/** XEN_HVM_START_MAGIC_VALUE: "xEn3" with the 0x80 bit of the "E" set. */
export const XEN_HVM_START_MAGIC_VALUE = 0x336ec578;
/** Version 1 adds the memory map. */
export const HVM_START_INFO_VERSION = 1;
export const HVM_START_INFO_SIZE = 56;
export const HVM_MODLIST_ENTRY_SIZE = 32;
export const HVM_MEMMAP_ENTRY_SIZE = 24;

/** XEN_HVM_MEMMAP_TYPE_* (start_info.h): the same numbers as e820 types. */
export const HvmMemmapType = {
  RAM: 1,
  RESERVED: 2,
  ACPI: 3,
  NVS: 4,
  UNUSABLE: 5,
  DISABLED: 6,
  PMEM: 7,
} as const;

const StartInfo = {
  MAGIC: 0,
  VERSION: 4,
  FLAGS: 8,
  NR_MODULES: 12,
  MODLIST_PADDR: 16,
  CMDLINE_PADDR: 24,
  RSDP_PADDR: 32,
  MEMMAP_PADDR: 40,
  MEMMAP_ENTRIES: 48,
} as const;

/** What the PVH start_info describes. */
export interface PvhStartInfoOptions {
  /** The NUL-terminated command line already in guest memory. */
  readonly cmdline: { readonly gpa: number };
  /** Modules (the initrd first: Linux takes module 0 as its initrd, arch/x86/platform/pvh/enlighten.c). */
  readonly modules?: readonly { readonly gpa: number; readonly size: number }[];
  /** The memory map; e820 types map one to one onto XEN_HVM_MEMMAP_TYPE_*. */
  readonly memoryMap: readonly E820Entry[];
  /** Guest-physical address of the ACPI RSDP, if ACPI tables were written. */
  readonly rsdpAddr?: number;
  /** Where to put the structures; defaults from layout.ts. */
  readonly startInfoGpa?: number;
  readonly modlistGpa?: number;
  readonly memmapGpa?: number;
}

function bytesWithView(size: number): { bytes: Uint8Array; view: DataView } {
  const bytes = new Uint8Array(size);
  return { bytes, view: new DataView(bytes.buffer) };
}

function u64(view: DataView, off: number, v: number): void {
  if (!Number.isSafeInteger(v) || v < 0) throw new BootParamsError(`bad PVH address or size ${v}`);
  view.setBigUint64(off, BigInt(v), true);
}

/**
 * The start_info, module list and memory map as guest placements. Returns them and the
 * start_info address (for EBX).
 */
export function buildPvhStartInfo(options: PvhStartInfoOptions): { startInfoGpa: number; placements: GuestPlacement[] } {
  const modules = options.modules ?? [];
  const map = options.memoryMap;
  if (modules.length > PVH_MODLIST_MAX_ENTRIES && options.modlistGpa === undefined) {
    throw new BootParamsError(`${modules.length} PVH modules; the module list has room for ${PVH_MODLIST_MAX_ENTRIES}`);
  }
  if (map.length > PVH_MEMMAP_MAX_ENTRIES && options.memmapGpa === undefined) {
    throw new BootParamsError(`the memory map has ${map.length} entries; PVH has room for ${PVH_MEMMAP_MAX_ENTRIES}`);
  }
  const startInfoGpa = options.startInfoGpa ?? PVH_INFO_START;
  const modlistGpa = options.modlistGpa ?? PVH_MODLIST_START;
  const memmapGpa = options.memmapGpa ?? PVH_MEMMAP_START;

  const info = bytesWithView(HVM_START_INFO_SIZE);
  info.view.setUint32(StartInfo.MAGIC, XEN_HVM_START_MAGIC_VALUE, true);
  info.view.setUint32(StartInfo.VERSION, HVM_START_INFO_VERSION, true);
  info.view.setUint32(StartInfo.FLAGS, 0, true);
  info.view.setUint32(StartInfo.NR_MODULES, modules.length, true);
  u64(info.view, StartInfo.MODLIST_PADDR, modules.length > 0 ? modlistGpa : 0);
  u64(info.view, StartInfo.CMDLINE_PADDR, options.cmdline.gpa);
  u64(info.view, StartInfo.RSDP_PADDR, options.rsdpAddr ?? 0);
  u64(info.view, StartInfo.MEMMAP_PADDR, map.length > 0 ? memmapGpa : 0);
  info.view.setUint32(StartInfo.MEMMAP_ENTRIES, map.length, true);
  const placements: GuestPlacement[] = [{ gpa: startInfoGpa, bytes: info.bytes }];

  if (modules.length > 0) {
    const list = bytesWithView(modules.length * HVM_MODLIST_ENTRY_SIZE);
    modules.forEach((m, i) => {
      u64(list.view, i * HVM_MODLIST_ENTRY_SIZE, m.gpa);
      u64(list.view, i * HVM_MODLIST_ENTRY_SIZE + 8, m.size);
      // cmdline_paddr 0: no per-module command line.
    });
    placements.push({ gpa: modlistGpa, bytes: list.bytes });
  }
  if (map.length > 0) {
    const table = bytesWithView(map.length * HVM_MEMMAP_ENTRY_SIZE);
    map.forEach((e, i) => {
      u64(table.view, i * HVM_MEMMAP_ENTRY_SIZE, e.addr);
      u64(table.view, i * HVM_MEMMAP_ENTRY_SIZE + 8, e.size);
      table.view.setUint32(i * HVM_MEMMAP_ENTRY_SIZE + 16, e.type, true);
    });
    placements.push({ gpa: memmapGpa, bytes: table.bytes });
  }
  return { startInfoGpa, placements };
}

/** Write the start_info, module list and memory map; returns the start_info address for EBX. */
export function writePvhStartInfo(mem: GuestMemoryWriter, options: PvhStartInfoOptions): number {
  const { startInfoGpa, placements } = buildPvhStartInfo(options);
  writePlacements(mem, placements);
  return startInfoGpa;
}
