import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BootParamsOffset, E820_ENTRY_SIZE, buildBootParams, writeBootParams, type BootParamsOptions } from '../../src/arch/x86_64/boot-params.js';
import { E820Type, buildE820Map, type E820Entry } from '../../src/arch/x86_64/e820.js';
import { ACPI_RSDP_ADDR, CMDLINE_START, MiB, ZERO_PAGE_START, guestRamRegions } from '../../src/arch/x86_64/layout.js';
import { SETUP_HEADER_START, SetupHeaderOffset as O } from '../../src/loader/bzimage.js';
import { BootParamsError } from '../../src/loader/errors.js';
import { BufferGuestMemory } from '../../src/loader/guest-memory.js';
import { debianCloudKernel } from './loader-fixtures.js';

function options(over: Partial<BootParamsOptions> = {}): BootParamsOptions {
  return {
    setupHeader: debianCloudKernel().image.setupHeaderBytes,
    cmdline: { gpa: CMDLINE_START, size: 42 },
    initrd: { gpa: 118 * MiB, size: 10 * MiB + 5 },
    e820: buildE820Map(guestRamRegions(128 * MiB)),
    rsdpAddr: ACPI_RSDP_ADDR,
    ...over,
  };
}

const view = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);

test('zero page fields sit at their bootparam.h offsets', () => {
  const zp = buildBootParams(options());
  const v = view(zp);
  assert.equal(zp.length, 4096);
  assert.equal(v.getUint16(0x1fe, true), 0xaa55); // boot_flag
  assert.equal(v.getUint32(0x202, true), 0x53726448); // "HdrS"
  assert.ok(v.getUint16(0x206, true) >= 0x020f); // version
  assert.equal(v.getUint16(0x1fa, true), 0xffff); // vid_mode
  assert.equal(zp[0x210], 0xff); // type_of_loader
  assert.equal(zp[0x211], 0x81); // loadflags: LOADED_HIGH | CAN_USE_HEAP
  assert.equal(v.getUint16(0x224, true), 0xfe00); // heap_end_ptr
  assert.equal(v.getUint32(0x228, true), 0x20000); // cmd_line_ptr
  assert.equal(v.getUint32(0x0c8, true), 0); // ext_cmd_line_ptr
  assert.equal(v.getUint32(0x218, true), 118 * MiB); // ramdisk_image
  assert.equal(v.getUint32(0x21c, true), 10 * MiB + 5); // ramdisk_size
  assert.equal(v.getUint32(0x0c0, true), 0); // ext_ramdisk_image
  assert.equal(v.getUint32(0x0c4, true), 0); // ext_ramdisk_size
  assert.equal(v.getBigUint64(0x070, true), 0xe0000n); // acpi_rsdp_addr
  assert.equal(zp[0x1e8], 5); // e820_entries
  const e820: [number, number, number][] = [];
  for (let i = 0; i < zp[0x1e8]!; i++) {
    const at = 0x2d0 + i * 20;
    e820.push([Number(v.getBigUint64(at, true)), Number(v.getBigUint64(at + 8, true)), v.getUint32(at + 16, true)]);
  }
  assert.deepEqual(e820[0], [0, 0x9fc00, E820Type.RAM]);
  assert.deepEqual(e820[3], [0x100000, 127 * MiB, E820Type.RAM]);
  assert.equal(BootParamsOffset.E820_TABLE + 128 * E820_ENTRY_SIZE, 0xcd0); // table ends where bootparam.h's _pad8 starts
});

test('only the setup header and loader fields are nonzero; nothing stale', () => {
  const hdr = debianCloudKernel().image.setupHeaderBytes;
  const zp = buildBootParams(options());
  const allowed = new Set<number>();
  const span = (at: number, n: number) => { for (let i = 0; i < n; i++) allowed.add(at + i); };
  span(SETUP_HEADER_START, hdr.length);
  span(0x070, 8);
  span(0x1e8, 1);
  span(0x2d0, 5 * 20);
  for (let i = 0; i < zp.length; i++) if (!allowed.has(i)) assert.equal(zp[i], 0, `byte at 0x${i.toString(16)}`);
  assert.equal(zp[BootParamsOffset.SENTINEL], 0);
  // Header bytes the loader does not own are the image's, unchanged.
  const owned = new Set<number>();
  const own = (at: number, n: number) => { for (let i = 0; i < n; i++) owned.add(at + i); };
  own(O.VID_MODE, 2); own(O.TYPE_OF_LOADER, 1); own(O.LOADFLAGS, 1); own(O.RAMDISK_IMAGE, 8); own(O.HEAP_END_PTR, 4);
  own(O.CMD_LINE_PTR, 4); own(O.HARDWARE_SUBARCH, 12); own(O.SETUP_DATA, 8);
  for (let i = 0; i < hdr.length; i++) {
    if (!owned.has(SETUP_HEADER_START + i)) assert.equal(zp[SETUP_HEADER_START + i], hdr[i], `header byte 0x${(SETUP_HEADER_START + i).toString(16)}`);
  }
});

test('stale or hostile header fields are cleared', () => {
  const hdr = debianCloudKernel().image.setupHeaderBytes.slice();
  const h = view(hdr);
  const rel = (off: number) => off - SETUP_HEADER_START;
  h.setBigUint64(rel(O.SETUP_DATA), 0xdeadbeefn, true);
  h.setUint32(rel(O.HARDWARE_SUBARCH), 2, true);
  h.setUint32(rel(O.RAMDISK_IMAGE), 0x1234, true);
  h.setUint8(rel(O.LOADFLAGS), 0xff);
  const zp = buildBootParams(options({ setupHeader: hdr, initrd: undefined }));
  const v = view(zp);
  assert.equal(v.getBigUint64(O.SETUP_DATA, true), 0n);
  assert.equal(v.getUint32(O.HARDWARE_SUBARCH, true), 0);
  assert.equal(v.getUint32(O.RAMDISK_IMAGE, true), 0);
  assert.equal(v.getUint32(O.RAMDISK_SIZE, true), 0);
  assert.equal(zp[O.LOADFLAGS], 0x81);
});

test('64-bit fields split into low and ext_ halves above 4 GiB', () => {
  const zp = buildBootParams(options({ cmdline: { gpa: 0x1_2000_0000, size: 10 }, initrd: { gpa: 0x1_4000_1000, size: 0x1_0000_0002 } }));
  const v = view(zp);
  assert.equal(v.getUint32(0x228, true), 0x2000_0000);
  assert.equal(v.getUint32(0x0c8, true), 1);
  assert.equal(v.getUint32(0x218, true), 0x4000_1000);
  assert.equal(v.getUint32(0x0c0, true), 1);
  assert.equal(v.getUint32(0x21c, true), 2);
  assert.equal(v.getUint32(0x0c4, true), 1);
  // A kernel without XLF_CAN_BE_LOADED_ABOVE_4G is refused.
  const hdr = debianCloudKernel().image.setupHeaderBytes.slice();
  view(hdr).setUint16(O.XLOADFLAGS - SETUP_HEADER_START, 1, true);
  assert.throws(() => buildBootParams(options({ setupHeader: hdr, initrd: { gpa: 0x1_4000_0000, size: 10 } })), /above 4 GiB/);
});

test('acpi_rsdp_addr only for protocol 2.14+; e820 capped at 128 entries; header checked', () => {
  const old = debianCloudKernel().image.setupHeaderBytes.slice();
  view(old).setUint16(O.VERSION - SETUP_HEADER_START, 0x020d, true);
  assert.equal(view(buildBootParams(options({ setupHeader: old }))).getBigUint64(0x070, true), 0n);
  const many: E820Entry[] = Array.from({ length: 129 }, (_, i) => ({ addr: i * 0x1000, size: 0x1000, type: E820Type.RAM }));
  assert.throws(() => buildBootParams(options({ e820: many })), (e: unknown) => e instanceof BootParamsError && /129 entries; the zero page holds at most 128/.test(e.message));
  assert.equal(buildBootParams(options({ e820: many.slice(0, 128) }))[0x1e8], 128);
  assert.throws(() => buildBootParams(options({ setupHeader: new Uint8Array(10) })), BootParamsError);
  assert.throws(() => buildBootParams(options({ setupHeader: new Uint8Array(0x7b) })), /no HdrS magic/);
});

test('ELF boot without a setup header gets a minimal one; writeBootParams writes at 0x7000', () => {
  const zp = buildBootParams(options({ setupHeader: undefined }));
  const v = view(zp);
  assert.equal(v.getUint16(0x1fe, true), 0xaa55);
  assert.equal(v.getUint32(0x202, true), 0x53726448);
  assert.equal(v.getBigUint64(0x070, true), 0xe0000n);
  const mem = new BufferGuestMemory(guestRamRegions(4 * MiB));
  assert.equal(writeBootParams(mem, options()), ZERO_PAGE_START);
  assert.deepEqual(mem.read(ZERO_PAGE_START, 4096), buildBootParams(options()));
});
