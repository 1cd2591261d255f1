/**
 * The Linux x86 bzImage: parse and validate its setup header and load its protected-mode kernel
 * for the 64-bit boot protocol (Documentation/arch/x86/boot.rst).
 *
 * A bzImage is [boot sector + real-mode setup: (setup_sects + 1) × 512 bytes][protected-mode
 * kernel]. The setup header sits at 0x1f1 in the file and is copied, as is, into the zero page at
 * the same offset; the protected-mode kernel is copied to its load address and entered at
 * load address + 0x200 (startup_64) in long mode.
 */
import { HIMEM_START, type RamRegion } from '../arch/x86_64/layout.js';
import { GuestPlacementError, KernelImageError, hex, mib } from './errors.js';
import { isInRam, type GuestMemoryWriter, type GuestRange } from './guest-memory.js';

/**
 * Setup header field offsets, from the start of the file (and of the zero page, where the header
 * sits at the same offset). Documentation/arch/x86/boot.rst, "The Real-Mode Kernel Header";
 * struct setup_header in arch/x86/include/uapi/asm/bootparam.h.
 */
export const SetupHeaderOffset = {
  /** u8: size of the setup in 512-byte sectors, boot sector not included; 0 means 4. */
  SETUP_SECTS: 0x1f1,
  /** u32: protected-mode code size in 16-byte paragraphs (2.04+). */
  SYSSIZE: 0x1f4,
  /** u16: video mode; the loader writes 0xffff ("normal"). */
  VID_MODE: 0x1fa,
  /** u16: 0xaa55. */
  BOOT_FLAG: 0x1fe,
  /** u8 jump + u8 displacement: the header ends at 0x202 + the byte at 0x201. */
  JUMP: 0x200,
  /** u32: "HdrS". */
  HEADER: 0x202,
  /** u16: boot protocol version, e.g. 0x020f = 2.15. */
  VERSION: 0x206,
  /** u16: offset − 0x200 of a NUL-terminated kernel version string in the setup. */
  KERNEL_VERSION: 0x20e,
  /** u8: boot loader id; 0xff = "undefined". */
  TYPE_OF_LOADER: 0x210,
  /** u8: LOADED_HIGH, KASLR_FLAG, QUIET_FLAG, KEEP_SEGMENTS, CAN_USE_HEAP. */
  LOADFLAGS: 0x211,
  /** u32: 32-bit entry; defaults to the load address. */
  CODE32_START: 0x214,
  /** u32: initrd load address (low 32 bits; high bits in ext_ramdisk_image at 0x0c0). */
  RAMDISK_IMAGE: 0x218,
  /** u32: initrd size (low 32 bits; high bits in ext_ramdisk_size at 0x0c4). */
  RAMDISK_SIZE: 0x21c,
  /** u16: end of setup stack/heap − 0x200 (2.01+). */
  HEAP_END_PTR: 0x224,
  /** u8, u8: extended boot loader version and type. */
  EXT_LOADER_VER: 0x226,
  EXT_LOADER_TYPE: 0x227,
  /** u32: command line address (low 32 bits; high bits in ext_cmd_line_ptr at 0x0c8) (2.02+). */
  CMD_LINE_PTR: 0x228,
  /** u32: highest address the initrd's last byte may occupy (2.03+). */
  INITRD_ADDR_MAX: 0x22c,
  /** u32: physical alignment the kernel needs when relocatable (2.05+). */
  KERNEL_ALIGNMENT: 0x230,
  /** u8: nonzero if the kernel is relocatable (2.05+). */
  RELOCATABLE_KERNEL: 0x234,
  /** u8: log2 of the minimum alignment (2.10+). */
  MIN_ALIGNMENT: 0x235,
  /** u16: XLF_* flags (2.12+). */
  XLOADFLAGS: 0x236,
  /** u32: longest command line without its NUL (2.06+). */
  CMDLINE_SIZE: 0x238,
  /** u32: hardware subarchitecture; 0 = PC (2.07+). */
  HARDWARE_SUBARCH: 0x23c,
  /** u64: subarchitecture data (2.07+). */
  HARDWARE_SUBARCH_DATA: 0x240,
  /** u32: offset of the compressed payload from the start of the protected-mode kernel (2.08+). */
  PAYLOAD_OFFSET: 0x248,
  /** u32: length of the compressed payload (2.08+). */
  PAYLOAD_LENGTH: 0x24c,
  /** u64: physical address of a linked list of struct setup_data (2.09+). */
  SETUP_DATA: 0x250,
  /** u64: preferred load address of a relocatable kernel (2.10+). */
  PREF_ADDRESS: 0x258,
  /** u32: bytes of linear memory the kernel needs from its runtime start while booting (2.10+). */
  INIT_SIZE: 0x260,
  /** u32: EFI handover protocol entry offset (2.11+). */
  HANDOVER_OFFSET: 0x264,
  /** u32: offset of the kernel_info structure (2.15+). */
  KERNEL_INFO_OFFSET: 0x268,
} as const;

/** "HdrS", little-endian u32 at 0x202 (boot.rst). */
export const HDRS_MAGIC = 0x53726448;
/** boot_flag (boot.rst). */
export const BOOT_FLAG_MAGIC = 0xaa55;
/** The setup header's first byte in the file and in the zero page (bootparam.h: hdr at 0x1f1). */
export const SETUP_HEADER_START = 0x1f1;
/** Everything after the setup header up to here is zero-page padding (bootparam.h: _pad7 ends at 0x290). */
export const SETUP_HEADER_LIMIT = 0x290;
/** The real-mode part is (setup_sects + 1) sectors of this size (boot.rst). */
export const SECTOR_SIZE = 512;
/** "If this field is 0, the real value is 4" (boot.rst, setup_sects). */
export const DEFAULT_SETUP_SECTS = 4;
/** startup_64 is 0x200 bytes into the protected-mode kernel (boot.rst, "64-bit Boot Protocol"). */
export const STARTUP_64_OFFSET = 0x200;
/** xloadflags appeared in 2.12, which the 64-bit entry needs (boot.rst). */
export const MIN_BOOT_PROTOCOL = 0x020c;

/** loadflags bits (boot.rst, loadflags). */
export const LoadFlags = {
  /** Protected-mode code is loaded at 0x100000 (bzImage); clear for an old zImage. */
  LOADED_HIGH: 1 << 0,
  /** Set by the kernel when KASLR ran. */
  KASLR_FLAG: 1 << 1,
  /** Suppress early messages. */
  QUIET_FLAG: 1 << 5,
  /** Obsolete (32-bit protocol). */
  KEEP_SEGMENTS: 1 << 6,
  /** heap_end_ptr is valid. */
  CAN_USE_HEAP: 1 << 7,
} as const;

/** xloadflags bits (boot.rst, xloadflags). */
export const XLoadFlags = {
  /** The kernel has the legacy 64-bit entry point at 0x200. */
  XLF_KERNEL_64: 1 << 0,
  /** Kernel, boot_params, command line and ramdisk may be above 4 GiB. */
  XLF_CAN_BE_LOADED_ABOVE_4G: 1 << 1,
  XLF_EFI_HANDOVER_32: 1 << 2,
  XLF_EFI_HANDOVER_64: 1 << 3,
  XLF_EFI_KEXEC: 1 << 4,
} as const;

/** Defaults for fields older protocols lack (boot.rst: initrd_addr_max before 2.03, cmdline_size before 2.06). */
const DEFAULT_INITRD_ADDR_MAX = 0x37ffffff;
const DEFAULT_CMDLINE_SIZE = 255;

/** The setup header fields tsvmm uses, decoded. */
export interface SetupHeader {
  /** Boot protocol version, e.g. 0x020f. */
  readonly version: number;
  /** setup_sects as the loader must use it (0 already replaced by 4). */
  readonly setupSects: number;
  readonly syssize: number;
  readonly loadflags: number;
  readonly xloadflags: number;
  readonly code32Start: number;
  readonly initrdAddrMax: number;
  readonly kernelAlignment: number;
  readonly relocatable: boolean;
  readonly cmdlineSize: number;
  readonly payloadOffset: number;
  readonly payloadLength: number;
  readonly prefAddress: number;
  readonly initSize: number;
  /** The kernel's version string, e.g. "6.1.0-56-cloud-amd64 (debian-kernel@…) #1 SMP …", if present. */
  readonly kernelVersion: string | undefined;
}

/** A parsed, validated bzImage. */
export interface BzImage {
  /** Where it came from, for messages. */
  readonly source: string;
  readonly header: SetupHeader;
  /**
   * The raw setup header bytes, file offsets [0x1f1, 0x202 + byte at 0x201): what goes into the
   * zero page at 0x1f1.
   */
  readonly setupHeaderBytes: Uint8Array;
  /** The protected-mode kernel (everything after the real-mode setup), a view into the file. */
  readonly kernel: Uint8Array;
  /** The compressed payload inside `kernel` (payload_offset/payload_length), a view. */
  readonly payload: Uint8Array;
}

/** Where a bzImage's kernel went and how to enter it. */
export interface LoadedBzImage {
  /** Guest-physical address the protected-mode kernel was copied to. */
  readonly loadAddress: number;
  /** 64-bit entry point (startup_64): loadAddress + 0x200. RSI must point at the zero page. */
  readonly entry64: number;
  /**
   * Memory the kernel owns until it has decompressed itself: the copy, plus init_size bytes
   * from where it will run. The initrd, command line and boot structures must stay out of it.
   */
  readonly reserved: GuestRange;
}

function u8(b: Uint8Array, off: number): number {
  return b[off]!;
}
function u16(b: Uint8Array, off: number): number {
  return b[off]! | (b[off + 1]! << 8);
}
function u32(b: Uint8Array, off: number): number {
  return (b[off]! | (b[off + 1]! << 8) | (b[off + 2]! << 16) | (b[off + 3]! << 24)) >>> 0;
}
function u64(b: Uint8Array, off: number, what: string, source: string): number {
  const lo = u32(b, off);
  const hi = u32(b, off + 4);
  // Guest-physical addresses fit in 2^53; anything larger is garbage in a kernel header.
  if (hi >= 0x200000) throw new KernelImageError(`bad ${what} 0x${hi.toString(16)}${lo.toString(16).padStart(8, '0')} in ${source}`);
  return hi * 0x100000000 + lo;
}

function isPowerOfTwo(n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0;
}

function readKernelVersion(b: Uint8Array, setupEnd: number): string | undefined {
  const ptr = u16(b, SetupHeaderOffset.KERNEL_VERSION);
  if (ptr === 0) return undefined;
  const start = ptr + 0x200;
  if (start >= setupEnd) return undefined;
  let end = start;
  const limit = Math.min(setupEnd, start + 256);
  while (end < limit && b[end] !== 0) end++;
  const s = Buffer.from(b.subarray(start, end)).toString('latin1');
  return /^[\x20-\x7e]+$/.test(s) ? s : undefined;
}

/**
 * Parse and validate a bzImage for the 64-bit boot protocol. Every offset and length is checked
 * against the file; anything wrong ends in a KernelImageError naming `source`.
 */
export function parseBzImage(file: Uint8Array, source = 'kernel image'): BzImage {
  const O = SetupHeaderOffset;
  if (file.length < O.VERSION + 2) {
    throw new KernelImageError(`not a Linux kernel: ${source} is only ${file.length} bytes, too short for a setup header`);
  }
  if (u32(file, O.HEADER) !== HDRS_MAGIC) {
    throw new KernelImageError(`not a Linux kernel: no HdrS magic at 0x202 in ${source}`);
  }
  if (u16(file, O.BOOT_FLAG) !== BOOT_FLAG_MAGIC) {
    throw new KernelImageError(`not a Linux kernel: no 0xAA55 boot flag at 0x1fe in ${source}`);
  }
  const version = u16(file, O.VERSION);
  const versionText = `${version >> 8}.${(version & 0xff).toString().padStart(2, '0')}`;
  if (version < MIN_BOOT_PROTOCOL) {
    throw new KernelImageError(
      `${source} speaks boot protocol ${versionText}; tsvmm needs 2.12 or later (Linux 3.8+) for the 64-bit entry point`,
    );
  }
  const headerEnd = 0x202 + u8(file, O.JUMP + 1);
  if (headerEnd < O.HANDOVER_OFFSET + 4 || headerEnd > SETUP_HEADER_LIMIT) {
    throw new KernelImageError(`bad setup header length in ${source}: it claims to end at ${hex(headerEnd)}`);
  }
  if (file.length < headerEnd) {
    throw new KernelImageError(`${source} is truncated: ${file.length} bytes, the setup header alone ends at ${hex(headerEnd)}`);
  }
  const rawSects = u8(file, O.SETUP_SECTS);
  const setupSects = rawSects === 0 ? DEFAULT_SETUP_SECTS : rawSects;
  const setupEnd = (setupSects + 1) * SECTOR_SIZE;
  if (setupEnd >= file.length) {
    throw new KernelImageError(
      `${source} is truncated or corrupt: setup_sects ${rawSects} puts the kernel at ${hex(setupEnd)}, but the file is ${file.length} bytes`,
    );
  }
  const kernel = file.subarray(setupEnd);
  const syssize = u32(file, O.SYSSIZE);
  if (syssize * 16 > kernel.length) {
    throw new KernelImageError(
      `${source} is truncated: its header says the kernel is ${syssize * 16} bytes after the setup, but only ${kernel.length} are present`,
    );
  }
  const loadflags = u8(file, O.LOADFLAGS);
  if ((loadflags & LoadFlags.LOADED_HIGH) === 0) {
    throw new KernelImageError(`${source} is a zImage (loadflags LOADED_HIGH clear); only bzImage kernels are supported`);
  }
  const xloadflags = u16(file, O.XLOADFLAGS);
  if ((xloadflags & XLoadFlags.XLF_KERNEL_64) === 0) {
    throw new KernelImageError(`${source} has no 64-bit entry point (XLF_KERNEL_64 not set in xloadflags); it is not an x86_64 kernel`);
  }
  const kernelAlignment = u32(file, O.KERNEL_ALIGNMENT);
  const relocatable = u8(file, O.RELOCATABLE_KERNEL) !== 0;
  if (relocatable && !isPowerOfTwo(kernelAlignment)) {
    throw new KernelImageError(`bad kernel_alignment ${hex(kernelAlignment)} in ${source}: not a power of two`);
  }
  const prefAddress = u64(file, O.PREF_ADDRESS, 'pref_address', source);
  if (prefAddress < HIMEM_START || (relocatable && prefAddress % kernelAlignment !== 0)) {
    throw new KernelImageError(`bad pref_address ${hex(prefAddress)} in ${source}: below 1 MiB or not aligned to kernel_alignment`);
  }
  const initSize = u32(file, O.INIT_SIZE);
  if (initSize === 0) throw new KernelImageError(`bad init_size 0 in ${source}`);
  const payloadOffset = u32(file, O.PAYLOAD_OFFSET);
  const payloadLength = u32(file, O.PAYLOAD_LENGTH);
  if (payloadOffset + payloadLength > kernel.length) {
    throw new KernelImageError(
      `${source} is truncated or corrupt: payload [${hex(payloadOffset)}, +${payloadLength}) runs past the ${kernel.length}-byte kernel`,
    );
  }
  const header: SetupHeader = {
    version,
    setupSects,
    syssize,
    loadflags,
    xloadflags,
    code32Start: u32(file, O.CODE32_START),
    initrdAddrMax: version >= 0x0203 ? u32(file, O.INITRD_ADDR_MAX) : DEFAULT_INITRD_ADDR_MAX,
    kernelAlignment,
    relocatable,
    cmdlineSize: version >= 0x0206 ? u32(file, O.CMDLINE_SIZE) : DEFAULT_CMDLINE_SIZE,
    payloadOffset,
    payloadLength,
    prefAddress,
    initSize,
    kernelVersion: readKernelVersion(file, setupEnd),
  };
  return {
    source,
    header,
    setupHeaderBytes: file.slice(SETUP_HEADER_START, headerEnd),
    kernel,
    payload: kernel.subarray(payloadOffset, payloadOffset + payloadLength),
  };
}

function alignUp(n: number, align: number): number {
  return Math.ceil(n / align) * align;
}

/**
 * Where the kernel goes and the memory it needs. A relocatable kernel is loaded at pref_address
 * (boot.rst); a fixed one at 1 MiB. Either way arch/x86/boot/compressed/head_64.S decompresses
 * into [max(load aligned to kernel_alignment, LOAD_PHYSICAL_ADDR = pref_address), + init_size).
 */
export function bzImagePlacement(image: BzImage): LoadedBzImage {
  const h = image.header;
  const loadAddress = h.relocatable ? h.prefAddress : HIMEM_START;
  const runStart = h.relocatable ? Math.max(alignUp(loadAddress, h.kernelAlignment), h.prefAddress) : h.prefAddress;
  const end = Math.max(loadAddress + image.kernel.length, runStart + h.initSize);
  return { loadAddress, entry64: loadAddress + STARTUP_64_OFFSET, reserved: { start: Math.min(loadAddress, runStart), end } };
}

/**
 * Copy the protected-mode kernel to its load address. Checks first that everything the kernel
 * will use while booting (see bzImagePlacement) is guest RAM.
 */
export function loadBzImage(image: BzImage, mem: GuestMemoryWriter, ram: readonly RamRegion[]): LoadedBzImage {
  const placed = bzImagePlacement(image);
  const { start, end } = placed.reserved;
  if (!isInRam(ram, start, end - start)) {
    const total = ram.reduce((s, r) => s + r.size, 0);
    throw new GuestPlacementError(
      `kernel ${image.source} needs guest memory [${mib(start)}, ${mib(end)}) to boot (init_size ${mib(image.header.initSize)}), ` +
        `but the guest has ${mib(total)}: give the VM more memory`,
    );
  }
  mem.write(placed.loadAddress, image.kernel);
  return placed;
}
