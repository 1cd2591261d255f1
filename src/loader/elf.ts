/**
 * ELF64 x86-64 kernels (a vmlinux): parse and validate the header, PT_LOAD segments (loaded at
 * their physical addresses) and the PVH entry point from the Xen ELF note; load the segments.
 *
 * References: System V gABI "ELF-64 Object File Format" (header, program header, note layout);
 * Linux include/xen/interface/elfnote.h (XEN_ELFNOTE_PHYS32_ENTRY); Linux arch/x86/kernel/
 * vmlinux.lds.S (ENTRY(phys_startup_64): e_entry is a physical address).
 */
import { HIMEM_START, type RamRegion } from '../arch/x86_64/layout.js';
import { ElfImageError, GuestPlacementError, hex, mib } from './errors.js';
import { isInRam, zeroGuestRange, type GuestMemoryWriter, type GuestRange } from './guest-memory.js';

/** "\x7fELF" (gABI e_ident[EI_MAG0..3]). */
export const ELF_MAGIC = 0x464c457f;
/** e_ident[EI_CLASS] = ELFCLASS64. */
export const ELFCLASS64 = 2;
/** e_ident[EI_DATA] = ELFDATA2LSB. */
export const ELFDATA2LSB = 1;
/** EV_CURRENT, in e_ident[EI_VERSION] and e_version. */
export const EV_CURRENT = 1;
/** e_type: executable. */
export const ET_EXEC = 2;
/** e_machine: AMD x86-64. */
export const EM_X86_64 = 62;
/** p_type values. */
export const PT_LOAD = 1;
export const PT_NOTE = 4;
/** e_phnum value meaning "the count is in section 0" (gABI); a kernel never needs it. */
const PN_XNUM = 0xffff;
/** sizeof(Elf64_Ehdr), sizeof(Elf64_Phdr), sizeof(Elf64_Shdr). */
export const ELF64_EHDR_SIZE = 64;
export const ELF64_PHDR_SIZE = 56;
export const ELF64_SHDR_SIZE = 64;
/** sizeof(Elf64_Nhdr): namesz, descsz, type. */
const NOTE_HEADER_SIZE = 12;
/** XEN_ELFNOTE_PHYS32_ENTRY: the 32-bit physical PVH entry point (include/xen/interface/elfnote.h). */
export const XEN_ELFNOTE_PHYS32_ENTRY = 18;
/** Owner name of Xen notes. */
export const XEN_NOTE_NAME = 'Xen';
/** Guest-physical addresses beyond 2^52 cannot exist on x86-64 (MAXPHYADDR ≤ 52). */
const MAX_PHYS_ADDR = 2 ** 52;

/** Elf64_Ehdr field offsets (gABI). */
const Ehdr = {
  CLASS: 4,
  DATA: 5,
  IDENT_VERSION: 6,
  TYPE: 0x10,
  MACHINE: 0x12,
  VERSION: 0x14,
  ENTRY: 0x18,
  PHOFF: 0x20,
  SHOFF: 0x28,
  PHENTSIZE: 0x36,
  PHNUM: 0x38,
  SHENTSIZE: 0x3a,
  SHNUM: 0x3c,
} as const;

/** Elf64_Phdr field offsets (gABI). */
const Phdr = { TYPE: 0, FLAGS: 4, OFFSET: 8, VADDR: 16, PADDR: 24, FILESZ: 32, MEMSZ: 40, ALIGN: 48 } as const;

/** One PT_LOAD segment. */
export interface ElfSegment {
  /** Guest-physical load address (p_paddr). */
  readonly paddr: number;
  /** Virtual address (p_vaddr; a kernel's is in the upper half, beyond 2^53, hence bigint). */
  readonly vaddr: bigint;
  /** File offset of the segment's bytes. */
  readonly offset: number;
  readonly filesz: number;
  /** Bytes in memory; memsz − filesz bytes of zeros follow the file bytes (bss). */
  readonly memsz: number;
  /** p_flags: PF_X 1, PF_W 2, PF_R 4. */
  readonly flags: number;
}

/** A parsed, validated ELF64 x86-64 kernel. */
export interface ElfKernel {
  readonly source: string;
  /** The file; segments are views into it. */
  readonly bytes: Uint8Array;
  /** Physical 64-bit entry point (e_entry, translated to a physical address if it was virtual). */
  readonly entry: number;
  /** Physical 32-bit PVH entry point from XEN_ELFNOTE_PHYS32_ENTRY, if the kernel has one. */
  readonly pvhEntry: number | undefined;
  /** PT_LOAD segments with memsz > 0, in file order. */
  readonly segments: readonly ElfSegment[];
  /**
   * Bytes of the file the ELF structure accounts for (headers, segments, section headers).
   * Data after it (e.g. the relocation table Linux appends to vmlinux.bin) is not part of the ELF.
   */
  readonly extent: number;
}

/** Where an ELF kernel went. */
export interface LoadedElfKernel {
  /** 64-bit entry (Linux 64-bit boot protocol with a zero page in RSI). */
  readonly entry64: number;
  /** 32-bit PVH entry (EBX = hvm_start_info), if the kernel supports PVH. */
  readonly pvhEntry: number | undefined;
  /** [lowest segment start, highest segment end): memory the kernel image occupies. */
  readonly reserved: GuestRange;
}

class Reader {
  constructor(
    private readonly b: Uint8Array,
    private readonly source: string,
  ) {}
  u8(off: number): number {
    return this.b[off]!;
  }
  u16(off: number): number {
    return this.b[off]! | (this.b[off + 1]! << 8);
  }
  u32(off: number): number {
    return (this.b[off]! | (this.b[off + 1]! << 8) | (this.b[off + 2]! << 16) | (this.b[off + 3]! << 24)) >>> 0;
  }
  /** u64 as a number (offsets, sizes, physical addresses); ≥ 2^53 is an error, no valid kernel needs it. */
  u64(off: number, what: string): number {
    const lo = this.u32(off);
    const hi = this.u32(off + 4);
    if (hi >= 0x200000) throw new ElfImageError(`${what} 0x${hi.toString(16)}${lo.toString(16).padStart(8, '0')} is out of range in ${this.source}`);
    return hi * 0x100000000 + lo;
  }
  /** Any u64, for virtual addresses in the kernel's upper half. */
  u64Wide(off: number): bigint {
    return BigInt(this.u32(off)) | (BigInt(this.u32(off + 4)) << 32n);
  }
}

function align(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

/**
 * Parse and validate an ELF64 x86-64 executable kernel. Every header, segment and note is checked
 * against the file; anything wrong is an ElfImageError naming `source`.
 */
export function parseElfKernel(bytes: Uint8Array, source = 'ELF kernel'): ElfKernel {
  const r = new Reader(bytes, source);
  if (bytes.length < ELF64_EHDR_SIZE) {
    throw new ElfImageError(`not an ELF kernel: ${source} is only ${bytes.length} bytes, shorter than an ELF64 header`);
  }
  if (r.u32(0) !== ELF_MAGIC) throw new ElfImageError(`not an ELF kernel: no \\x7fELF magic at offset 0 of ${source}`);
  if (r.u8(Ehdr.CLASS) !== ELFCLASS64) throw new ElfImageError(`${source} is not a 64-bit ELF (EI_CLASS ${r.u8(Ehdr.CLASS)})`);
  if (r.u8(Ehdr.DATA) !== ELFDATA2LSB) throw new ElfImageError(`${source} is not a little-endian ELF (EI_DATA ${r.u8(Ehdr.DATA)})`);
  if (r.u8(Ehdr.IDENT_VERSION) !== EV_CURRENT || r.u32(Ehdr.VERSION) !== EV_CURRENT) {
    throw new ElfImageError(`${source} has an unknown ELF version`);
  }
  if (r.u16(Ehdr.MACHINE) !== EM_X86_64) throw new ElfImageError(`${source} is not an x86-64 ELF (e_machine ${r.u16(Ehdr.MACHINE)})`);
  if (r.u16(Ehdr.TYPE) !== ET_EXEC) {
    throw new ElfImageError(`${source} is not an executable ELF (e_type ${r.u16(Ehdr.TYPE)}; a vmlinux is ET_EXEC)`);
  }

  const phoff = r.u64(Ehdr.PHOFF, 'e_phoff');
  const phentsize = r.u16(Ehdr.PHENTSIZE);
  const phnum = r.u16(Ehdr.PHNUM);
  if (phnum === 0 || phnum === PN_XNUM) throw new ElfImageError(`${source} has no usable program headers (e_phnum ${phnum})`);
  if (phentsize < ELF64_PHDR_SIZE) throw new ElfImageError(`bad e_phentsize ${phentsize} in ${source} (ELF64 needs ${ELF64_PHDR_SIZE})`);
  const phEnd = phoff + phnum * phentsize;
  if (phEnd > bytes.length) {
    throw new ElfImageError(`${source} is truncated: program headers [${hex(phoff)}, ${hex(phEnd)}) run past its ${bytes.length} bytes`);
  }
  let extent = Math.max(ELF64_EHDR_SIZE, phEnd);

  const shoff = r.u64(Ehdr.SHOFF, 'e_shoff');
  const shnum = r.u16(Ehdr.SHNUM);
  const shentsize = r.u16(Ehdr.SHENTSIZE);
  if (shoff !== 0 && shnum !== 0) {
    if (shentsize < ELF64_SHDR_SIZE) throw new ElfImageError(`bad e_shentsize ${shentsize} in ${source}`);
    const shEnd = shoff + shnum * shentsize;
    if (shEnd > bytes.length) {
      throw new ElfImageError(`${source} is truncated: section headers [${hex(shoff)}, ${hex(shEnd)}) run past its ${bytes.length} bytes`);
    }
    extent = Math.max(extent, shEnd);
  }

  const segments: ElfSegment[] = [];
  const notes: { offset: number; size: number; align: number }[] = [];
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    const type = r.u32(ph + Phdr.TYPE);
    if (type !== PT_LOAD && type !== PT_NOTE) continue;
    const offset = r.u64(ph + Phdr.OFFSET, `p_offset of program header ${i}`);
    const filesz = r.u64(ph + Phdr.FILESZ, `p_filesz of program header ${i}`);
    if (offset + filesz > bytes.length) {
      throw new ElfImageError(
        `${source} is truncated or corrupt: program header ${i} has file bytes [${hex(offset)}, ${hex(offset + filesz)}) beyond its ${bytes.length} bytes`,
      );
    }
    extent = Math.max(extent, offset + filesz);
    if (type === PT_NOTE) {
      notes.push({ offset, size: filesz, align: r.u64(ph + Phdr.ALIGN, 'p_align') === 8 ? 8 : 4 });
      continue;
    }
    const memsz = r.u64(ph + Phdr.MEMSZ, `p_memsz of program header ${i}`);
    const paddr = r.u64(ph + Phdr.PADDR, `p_paddr of program header ${i}`);
    if (filesz > memsz) throw new ElfImageError(`bad program header ${i} in ${source}: p_filesz ${filesz} > p_memsz ${memsz}`);
    if (paddr + memsz > MAX_PHYS_ADDR) throw new ElfImageError(`bad program header ${i} in ${source}: p_paddr ${hex(paddr)} + p_memsz is beyond 2^52`);
    if (memsz === 0) continue;
    const vaddr = r.u64Wide(ph + Phdr.VADDR);
    segments.push({ paddr, vaddr, offset, filesz, memsz, flags: r.u32(ph + Phdr.FLAGS) });
  }
  if (segments.length === 0) throw new ElfImageError(`${source} has no PT_LOAD segment to load`);
  const sorted = [...segments].sort((a, b) => a.paddr - b.paddr);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!;
    if (sorted[i]!.paddr < prev.paddr + prev.memsz) {
      throw new ElfImageError(`${source} has overlapping PT_LOAD segments at ${hex(prev.paddr)} and ${hex(sorted[i]!.paddr)}`);
    }
  }

  const inSegment = (pa: number): boolean => segments.some((s) => pa >= s.paddr && pa < s.paddr + s.memsz);
  const entry = physicalEntry(r.u64Wide(Ehdr.ENTRY), segments, source);

  let pvhEntry: number | undefined;
  for (const n of notes) {
    const found = findPvhEntry(r, bytes, n.offset, n.size, n.align, source);
    if (found !== undefined) pvhEntry = found;
  }
  if (pvhEntry !== undefined && !inSegment(pvhEntry)) {
    throw new ElfImageError(`PVH entry point ${hex(pvhEntry)} in ${source} is outside every PT_LOAD segment`);
  }
  return { source, bytes, entry, pvhEntry, segments, extent };
}

/** e_entry is physical for vmlinux (ENTRY(phys_startup_64)); translate it if it is virtual. */
function physicalEntry(eEntry: bigint, segments: readonly ElfSegment[], source: string): number {
  for (const s of segments) {
    if (eEntry >= BigInt(s.paddr) && eEntry < BigInt(s.paddr + s.memsz)) return Number(eEntry);
  }
  for (const s of segments) {
    if (eEntry >= s.vaddr && eEntry < s.vaddr + BigInt(s.memsz)) return Number(eEntry - s.vaddr) + s.paddr;
  }
  throw new ElfImageError(`entry point 0x${eEntry.toString(16)} in ${source} is outside every PT_LOAD segment`);
}

/** Walk one PT_NOTE segment; return the XEN_ELFNOTE_PHYS32_ENTRY value if present. */
function findPvhEntry(r: Reader, bytes: Uint8Array, start: number, size: number, noteAlign: number, source: string): number | undefined {
  const end = start + size;
  let at = start;
  let found: number | undefined;
  while (end - at >= NOTE_HEADER_SIZE) {
    const namesz = r.u32(at);
    const descsz = r.u32(at + 4);
    const type = r.u32(at + 8);
    const nameAt = at + NOTE_HEADER_SIZE;
    const descAt = nameAt + align(namesz, noteAlign);
    const next = descAt + align(descsz, noteAlign);
    if (descAt + descsz > end || next > end + (noteAlign - 1)) {
      throw new ElfImageError(`corrupt ELF note at ${hex(at)} in ${source}: name/desc sizes (${namesz}, ${descsz}) run past the note segment`);
    }
    let nameLen = namesz;
    if (nameLen > 0 && bytes[nameAt + nameLen - 1] === 0) nameLen--;
    const name = Buffer.from(bytes.subarray(nameAt, nameAt + nameLen)).toString('latin1');
    if (name === XEN_NOTE_NAME && type === XEN_ELFNOTE_PHYS32_ENTRY) {
      // "Numeric types are either 4 or 8 bytes" (elfnote.h); the entry must be 32-bit physical.
      if (descsz === 4) found = r.u32(descAt);
      else if (descsz === 8) {
        if (r.u32(descAt + 4) !== 0) throw new ElfImageError(`PVH entry note in ${source} holds an address above 4 GiB`);
        found = r.u32(descAt);
      } else throw new ElfImageError(`PVH entry note in ${source} has a ${descsz}-byte value (expected 4 or 8)`);
    }
    at = next;
  }
  return found;
}

/** [lowest segment paddr, highest segment end). */
export function elfKernelRange(elf: ElfKernel): GuestRange {
  let start = Infinity;
  let end = 0;
  for (const s of elf.segments) {
    start = Math.min(start, s.paddr);
    end = Math.max(end, s.paddr + s.memsz);
  }
  return { start, end };
}

/**
 * Copy every PT_LOAD segment to its physical address and zero its bss. Checks first that all of
 * them are in guest RAM at or above 1 MiB (below is where the VMM's boot structures live).
 */
export function loadElfKernel(elf: ElfKernel, mem: GuestMemoryWriter, ram: readonly RamRegion[]): LoadedElfKernel {
  const total = ram.reduce((s, r) => s + r.size, 0);
  for (const s of elf.segments) {
    if (s.paddr < HIMEM_START) {
      throw new GuestPlacementError(`kernel ${elf.source} has a segment at ${hex(s.paddr)}, below 1 MiB where tsvmm keeps boot structures`);
    }
    if (!isInRam(ram, s.paddr, s.memsz)) {
      throw new GuestPlacementError(
        `kernel ${elf.source} needs guest memory [${mib(s.paddr)}, ${mib(s.paddr + s.memsz)}), but the guest has ${mib(total)}: give the VM more memory`,
      );
    }
  }
  for (const s of elf.segments) {
    mem.write(s.paddr, elf.bytes.subarray(s.offset, s.offset + s.filesz));
    if (s.memsz > s.filesz) zeroGuestRange(mem, s.paddr + s.filesz, s.memsz - s.filesz);
  }
  return { entry64: elf.entry, pvhEntry: elf.pvhEntry, reserved: elfKernelRange(elf) };
}
