/**
 * The boot GDT and the segment registers derived from it.
 *
 * Linux boot protocol (Documentation/arch/x86/boot.rst, "64-bit BOOT PROTOCOL"): the kernel is
 * entered with a GDT in which selector __BOOT_CS (0x10) is a 64-bit execute/read code segment and
 * __BOOT_DS (0x18) a read/write data segment; CS must be __BOOT_CS and DS, ES, SS __BOOT_DS.
 * The same GDT serves the PVH entry, where entry 0x10 must be a flat 32-bit code segment instead
 * (xen/include/public/arch-x86/hvm/start_info.h: "CS: 32-bit read/execute, base 0, limit 4G").
 */

import type { Segment } from '../../kvm/structs.js';

/** Selectors of the boot GDT (Linux's __BOOT_CS / __BOOT_DS, arch/x86/include/asm/segment.h). */
export const BOOT_CS = 0x10;
export const BOOT_DS = 0x18;
export const BOOT_TSS = 0x20;

/** Descriptor access bytes + flags, as 16-bit values: flags nibble << 12 | access byte (Intel SDM 3.4.5). */
const CODE64_FLAGS = 0xa09b; // G=1 L=1, P=1 DPL=0 S=1 type=0xb (execute/read, accessed)
const CODE32_FLAGS = 0xc09b; // G=1 D=1, P=1 DPL=0 S=1 type=0xb
const DATA_FLAGS = 0xc093; // G=1 B=1, P=1 DPL=0 S=1 type=0x3 (read/write, accessed)
const TSS_FLAGS = 0x808b; // G=1, P=1 DPL=0 S=0 type=0xb (busy 64-bit TSS)

/** Encode one 8-byte segment descriptor (Intel SDM vol. 3A Figure 3-8). */
export function gdtEntry(flags: number, base: number, limit: number): bigint {
  const b = BigInt(base >>> 0);
  const l = BigInt(limit >>> 0);
  const f = BigInt(flags);
  return (
    ((b & 0xff000000n) << 32n) |
    ((f & 0x0000f0ffn) << 40n) |
    ((l & 0x000f0000n) << 32n) |
    ((b & 0x00ffffffn) << 16n) |
    (l & 0x0000ffffn)
  );
}

/** Decode a descriptor back into the register form KVM wants, with `selector` attached. */
export function segmentFromEntry(entry: bigint, selector: number): Segment {
  const n = (shift: bigint, mask: bigint): number => Number((entry >> shift) & mask);
  const base = (n(16n, 0xffffffn) | (n(56n, 0xffn) << 24)) >>> 0;
  const rawLimit = n(0n, 0xffffn) | (n(48n, 0xfn) << 16);
  const g = n(55n, 1n) === 1;
  return {
    base: BigInt(base),
    // With G set the limit counts 4 KiB pages: the effective byte limit has the low 12 bits set.
    limit: g ? ((rawLimit << 12) | 0xfff) >>> 0 : rawLimit,
    selector,
    type: n(40n, 0xfn),
    s: n(44n, 1n),
    dpl: n(45n, 3n),
    present: n(47n, 1n),
    avl: n(52n, 1n),
    l: n(53n, 1n),
    db: n(54n, 1n),
    g: g ? 1 : 0,
    unusable: n(47n, 1n) === 0 ? 1 : 0,
  };
}

/** The boot GDT for a given entry mode: 64-bit code at 0x10 for the Linux 64-bit entry, 32-bit for PVH. */
export function bootGdt(mode: 'long' | 'protected32'): bigint[] {
  return [
    0n, // null descriptor
    0n, // unused: keeps __BOOT_CS at 0x10 as Linux expects
    gdtEntry(mode === 'long' ? CODE64_FLAGS : CODE32_FLAGS, 0, 0xfffff),
    gdtEntry(DATA_FLAGS, 0, 0xfffff),
    gdtEntry(TSS_FLAGS, 0, 0xfffff),
  ];
}

/** The GDT as guest bytes (little-endian descriptors). */
export function gdtBytes(entries: readonly bigint[]): Uint8Array {
  const out = new Uint8Array(entries.length * 8);
  const view = new DataView(out.buffer);
  entries.forEach((e, i) => view.setBigUint64(i * 8, e, true));
  return out;
}
