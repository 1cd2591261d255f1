/**
 * The Linux zero page (struct boot_params, arch/x86/include/uapi/asm/bootparam.h) for the 64-bit
 * boot protocol (Documentation/arch/x86/boot.rst): 4096 bytes, all zero but for the setup header
 * copied from the bzImage and the fields a boot loader must fill in. Nothing from a previous boot
 * or from the image beyond its setup header survives.
 */
import { BootParamsError, hex } from '../../loader/errors.js';
import { LoadFlags, SETUP_HEADER_LIMIT, SETUP_HEADER_START, SetupHeaderOffset, XLoadFlags, HDRS_MAGIC, BOOT_FLAG_MAGIC } from '../../loader/bzimage.js';
import type { GuestMemoryWriter } from '../../loader/guest-memory.js';
import type { E820Entry } from './e820.js';
import { FIRST_ADDR_PAST_32BITS, ZERO_PAGE_SIZE, ZERO_PAGE_START } from './layout.js';

/** struct boot_params offsets outside the setup header (bootparam.h comments). */
export const BootParamsOffset = {
  /** u64: physical address of the ACPI RSDP (protocol 2.14+). */
  ACPI_RSDP_ADDR: 0x070,
  /** u32: high 32 bits of ramdisk_image. */
  EXT_RAMDISK_IMAGE: 0x0c0,
  /** u32: high 32 bits of ramdisk_size. */
  EXT_RAMDISK_SIZE: 0x0c4,
  /** u32: high 32 bits of cmd_line_ptr. */
  EXT_CMD_LINE_PTR: 0x0c8,
  /** u8: number of e820_table entries. */
  E820_ENTRIES: 0x1e8,
  /** u8: if nonzero the kernel assumes a careless loader and zeroes fields (arch/x86/include/asm/bootparam_utils.h). */
  SENTINEL: 0x1ef,
  /** struct boot_e820_entry[128]. */
  E820_TABLE: 0x2d0,
} as const;

/** E820_MAX_ENTRIES_ZEROPAGE (bootparam.h). */
export const E820_MAX_ENTRIES_ZEROPAGE = 128;
/** sizeof(struct boot_e820_entry): u64 addr, u64 size, u32 type, packed. */
export const E820_ENTRY_SIZE = 20;
/** type_of_loader 0xff: "undefined" boot loader (boot.rst, type_of_loader; Firecracker KERNEL_LOADER_OTHER). */
export const LOADER_TYPE_UNDEFINED = 0xff;
/** vid_mode 0xffff: "normal" VGA text mode, asking for no mode change (boot.rst, vid_mode). */
export const VID_MODE_NORMAL = 0xffff;
/**
 * heap_end_ptr: end of the real-mode setup heap minus 0x200 (boot.rst). Only the 16-bit setup
 * code uses it; 0xfe00 is the customary value (64 KiB segment minus the 0x200 offset) that
 * boot.rst's sample loader uses, and with CAN_USE_HEAP it tells the kernel the heap is valid.
 */
export const HEAP_END_PTR = 0xfe00;
/** acpi_rsdp_addr appeared in boot protocol 2.14 (boot.rst). */
const RSDP_MIN_PROTOCOL = 0x020e;

/** What writeBootParams needs. */
export interface BootParamsOptions {
  /**
   * The bzImage's setup header (BzImage.setupHeaderBytes: file [0x1f1, header end)). Left out
   * for an ELF vmlinux booted through the 64-bit protocol, which has none: a minimal header
   * (boot flag and HdrS magic, as Firecracker writes) is made up.
   */
  readonly setupHeader?: Uint8Array;
  /** The NUL-terminated command line already in guest memory. */
  readonly cmdline: { readonly gpa: number; readonly size: number };
  /** The initrd already in guest memory, if any. */
  readonly initrd?: { readonly gpa: number; readonly size: number };
  readonly e820: readonly E820Entry[];
  /** Guest-physical address of the ACPI RSDP, if ACPI tables were written. */
  readonly rsdpAddr?: number;
}

class Page {
  readonly bytes = new Uint8Array(ZERO_PAGE_SIZE);
  private readonly view = new DataView(this.bytes.buffer);
  u8(off: number, v: number): void {
    this.view.setUint8(off, v);
  }
  u16(off: number, v: number): void {
    this.view.setUint16(off, v, true);
  }
  u32(off: number, v: number): void {
    this.view.setUint32(off, v >>> 0, true);
  }
  u64(off: number, v: number): void {
    this.view.setBigUint64(off, BigInt(v), true);
  }
  get16(off: number): number {
    return this.view.getUint16(off, true);
  }
  get32(off: number): number {
    return this.view.getUint32(off, true);
  }
}

function low32(n: number): number {
  return n % FIRST_ADDR_PAST_32BITS;
}
function high32(n: number): number {
  return Math.floor(n / FIRST_ADDR_PAST_32BITS);
}

function checkAddress(what: string, gpa: number, size: number): void {
  if (!Number.isSafeInteger(gpa) || !Number.isSafeInteger(size) || gpa < 0 || size < 0) {
    throw new BootParamsError(`bad ${what} placement [${gpa}, +${size})`);
  }
}

/** Build the 4096-byte zero page. */
export function buildBootParams(options: BootParamsOptions): Uint8Array {
  const O = SetupHeaderOffset;
  const page = new Page();
  const hdr = options.setupHeader;
  if (hdr !== undefined) {
    const minLength = O.HANDOVER_OFFSET + 4 - SETUP_HEADER_START;
    if (hdr.length < minLength || hdr.length > SETUP_HEADER_LIMIT - SETUP_HEADER_START) {
      throw new BootParamsError(`setup header is ${hdr.length} bytes; expected ${minLength}–${SETUP_HEADER_LIMIT - SETUP_HEADER_START} (copy it from offset 0x1f1 of the bzImage)`);
    }
    page.bytes.set(hdr, SETUP_HEADER_START);
    if (page.get32(O.HEADER) !== HDRS_MAGIC) throw new BootParamsError('setup header has no HdrS magic: it was not copied from offset 0x1f1 of a bzImage');
  } else {
    page.u16(O.BOOT_FLAG, BOOT_FLAG_MAGIC);
    page.u32(O.HEADER, HDRS_MAGIC);
  }
  const version = page.get16(O.VERSION);
  const xloadflags = page.get16(O.XLOADFLAGS);

  // Loader-owned header fields (boot.rst marks them "write"/"modify"); the rest stays as the image has it.
  page.u16(O.VID_MODE, VID_MODE_NORMAL);
  page.u8(O.TYPE_OF_LOADER, LOADER_TYPE_UNDEFINED);
  page.u8(O.EXT_LOADER_VER, 0);
  page.u8(O.EXT_LOADER_TYPE, 0);
  const imageFlags = hdr === undefined ? LoadFlags.LOADED_HIGH : page.bytes[O.LOADFLAGS]!;
  page.u8(O.LOADFLAGS, (imageFlags & LoadFlags.LOADED_HIGH) | LoadFlags.CAN_USE_HEAP);
  page.u16(O.HEAP_END_PTR, HEAP_END_PTR);
  // A hostile or odd image could carry nonzero values here; the kernel would follow setup_data.
  page.u64(O.SETUP_DATA, 0);
  page.u32(O.HARDWARE_SUBARCH, 0); // X86_SUBARCH_PC
  page.u64(O.HARDWARE_SUBARCH_DATA, 0);

  const above4G = (xloadflags & XLoadFlags.XLF_CAN_BE_LOADED_ABOVE_4G) !== 0 || hdr === undefined;
  const { cmdline, initrd } = options;
  checkAddress('command line', cmdline.gpa, cmdline.size);
  if (cmdline.gpa + cmdline.size > FIRST_ADDR_PAST_32BITS && !above4G) {
    throw new BootParamsError(`command line at ${hex(cmdline.gpa)} is above 4 GiB, which this kernel does not accept (no XLF_CAN_BE_LOADED_ABOVE_4G)`);
  }
  page.u32(O.CMD_LINE_PTR, low32(cmdline.gpa));
  page.u32(BootParamsOffset.EXT_CMD_LINE_PTR, high32(cmdline.gpa));
  if (initrd !== undefined) {
    checkAddress('initrd', initrd.gpa, initrd.size);
    if (initrd.gpa + initrd.size > FIRST_ADDR_PAST_32BITS && !above4G) {
      throw new BootParamsError(`initrd at ${hex(initrd.gpa)} is above 4 GiB, which this kernel does not accept (no XLF_CAN_BE_LOADED_ABOVE_4G)`);
    }
    page.u32(O.RAMDISK_IMAGE, low32(initrd.gpa));
    page.u32(O.RAMDISK_SIZE, low32(initrd.size));
    page.u32(BootParamsOffset.EXT_RAMDISK_IMAGE, high32(initrd.gpa));
    page.u32(BootParamsOffset.EXT_RAMDISK_SIZE, high32(initrd.size));
  } else {
    page.u32(O.RAMDISK_IMAGE, 0);
    page.u32(O.RAMDISK_SIZE, 0);
  }

  if (options.rsdpAddr !== undefined && (version >= RSDP_MIN_PROTOCOL || hdr === undefined)) {
    checkAddress('RSDP', options.rsdpAddr, 0);
    page.u64(BootParamsOffset.ACPI_RSDP_ADDR, options.rsdpAddr);
  }

  const e820 = options.e820;
  if (e820.length > E820_MAX_ENTRIES_ZEROPAGE) {
    throw new BootParamsError(`the e820 map has ${e820.length} entries; the zero page holds at most ${E820_MAX_ENTRIES_ZEROPAGE}`);
  }
  page.u8(BootParamsOffset.E820_ENTRIES, e820.length);
  e820.forEach((e, i) => {
    checkAddress('e820 entry', e.addr, e.size);
    const at = BootParamsOffset.E820_TABLE + i * E820_ENTRY_SIZE;
    page.u64(at, e.addr);
    page.u64(at + 8, e.size);
    page.u32(at + 16, e.type);
  });
  return page.bytes;
}

/** Build the zero page and write it at ZERO_PAGE_START (or `gpa`); RSI must point there on entry. */
export function writeBootParams(mem: GuestMemoryWriter, options: BootParamsOptions, gpa: number = ZERO_PAGE_START): number {
  mem.write(gpa, buildBootParams(options));
  return gpa;
}
