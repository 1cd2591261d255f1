import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MiB, guestRamRegions } from '../../src/arch/x86_64/layout.js';
import {
  HDRS_MAGIC,
  SetupHeaderOffset as O,
  XLoadFlags,
  bzImagePlacement,
  loadBzImage,
  parseBzImage,
} from '../../src/loader/bzimage.js';
import { GuestPlacementError, KernelImageError } from '../../src/loader/errors.js';
import { BufferGuestMemory } from '../../src/loader/guest-memory.js';
import { debianCloudKernel, rng, syntheticBzImage } from './loader-fixtures.js';

test('Debian cloud bzImage: setup header fields are sane', () => {
  const { kernel, image, file } = debianCloudKernel();
  const h = image.header;
  assert.ok(h.version >= 0x020f, `boot protocol ${h.version.toString(16)}`);
  assert.ok(h.xloadflags & XLoadFlags.XLF_KERNEL_64);
  assert.ok(h.xloadflags & XLoadFlags.XLF_CAN_BE_LOADED_ABOVE_4G);
  assert.equal(h.relocatable, true);
  assert.equal(h.prefAddress, 16 * MiB); // CONFIG_PHYSICAL_START
  assert.equal(h.kernelAlignment, 2 * MiB); // CONFIG_PHYSICAL_ALIGN
  assert.equal(h.cmdlineSize, 2047); // COMMAND_LINE_SIZE 2048 minus the NUL
  assert.equal(h.initrdAddrMax, 0x7fffffff);
  assert.ok(h.initSize > 16 * MiB && h.initSize < 256 * MiB, `init_size ${h.initSize}`);
  assert.ok(h.setupSects > 4 && h.setupSects < 128);
  assert.ok(h.kernelVersion?.startsWith(kernel.release), h.kernelVersion);
  // The protected-mode kernel starts after (setup_sects + 1) sectors and holds the payload.
  assert.equal(image.kernel.length, file.length - (h.setupSects + 1) * 512);
  assert.ok(h.payloadOffset + h.payloadLength <= image.kernel.length);
  assert.equal(image.payload.length, h.payloadLength);
  // The setup header bytes start at 0x1f1 (setup_sects) and end at 0x202 + the jump byte.
  assert.equal(image.setupHeaderBytes[0], file[0x1f1]);
  assert.equal(image.setupHeaderBytes.length, 0x202 + file[0x201]! - 0x1f1);
  assert.equal(new DataView(image.setupHeaderBytes.buffer, image.setupHeaderBytes.byteOffset).getUint32(0x202 - 0x1f1, true), HDRS_MAGIC);
});

test('Debian bzImage loads at pref_address with entry at +0x200 and reserves init_size', () => {
  const { image } = debianCloudKernel();
  const p = bzImagePlacement(image);
  assert.equal(p.loadAddress, 16 * MiB);
  assert.equal(p.entry64, 16 * MiB + 0x200);
  assert.equal(p.reserved.start, 16 * MiB);
  assert.equal(p.reserved.end, 16 * MiB + image.header.initSize);

  const ram = guestRamRegions(128 * MiB);
  const mem = new BufferGuestMemory(ram);
  const loaded = loadBzImage(image, mem, ram);
  assert.deepEqual(loaded, p);
  assert.ok(Buffer.from(mem.read(p.loadAddress, image.kernel.length)).equals(Buffer.from(image.kernel)));
  assert.deepEqual(mem.read(p.loadAddress - 16, 16), new Uint8Array(16)); // nothing before it

  const small = guestRamRegions(48 * MiB);
  assert.throws(() => loadBzImage(image, new BufferGuestMemory(small), small), (e: unknown) => {
    assert.ok(e instanceof GuestPlacementError);
    assert.match(e.message, /needs guest memory \[16 MiB, .*the guest has 48 MiB/);
    return true;
  });
});

/** A copy of a synthetic image with `patch` applied. */
function patched(patch: (v: DataView, b: Uint8Array) => void): Uint8Array {
  const b = syntheticBzImage(new Uint8Array([0x02, 0x21, 0x4c, 0x18]));
  patch(new DataView(b.buffer), b);
  return b;
}

test('synthetic image parses (baseline for the malformed cases)', () => {
  const img = parseBzImage(patched(() => {}), 'synthetic');
  assert.equal(img.payload.length, 4);
});

test('malformed bzImages give KernelImageError with a clear message', () => {
  const cases: [string, Uint8Array, RegExp][] = [
    ['empty', new Uint8Array(0), /too short for a setup header/],
    ['truncated header', debianCloudKernel().file.slice(0, 0x204), /too short/],
    ['wrong magic', patched((v) => v.setUint32(O.HEADER, 0x53726449, true)), /not a Linux kernel: no HdrS magic at 0x202 in FILE/],
    ['no boot flag', patched((v) => v.setUint16(O.BOOT_FLAG, 0, true)), /no 0xAA55 boot flag/],
    ['old protocol', patched((v) => v.setUint16(O.VERSION, 0x020a, true)), /boot protocol 2\.10; tsvmm needs 2\.12/],
    ['setup_sects beyond file', patched((v) => v.setUint8(O.SETUP_SECTS, 0xff)), /setup_sects 255 puts the kernel at 0x20000, but the file is/],
    ['header length', patched((v) => v.setUint8(O.JUMP + 1, 0x10)), /bad setup header length/],
    ['syssize beyond file', patched((v) => v.setUint32(O.SYSSIZE, 0x100000, true)), /truncated: its header says the kernel is/],
    ['zImage', patched((v) => v.setUint8(O.LOADFLAGS, 0)), /zImage/],
    ['32-bit only', patched((v) => v.setUint16(O.XLOADFLAGS, 0, true)), /no 64-bit entry point \(XLF_KERNEL_64/],
    ['alignment', patched((v) => v.setUint32(O.KERNEL_ALIGNMENT, 3 * MiB, true)), /kernel_alignment/],
    ['pref_address', patched((v) => v.setUint32(O.PREF_ADDRESS, 0x1000, true)), /bad pref_address/],
    ['pref_address huge', patched((v) => v.setUint32(O.PREF_ADDRESS + 4, 0xffffffff, true)), /bad pref_address/],
    ['init_size', patched((v) => v.setUint32(O.INIT_SIZE, 0, true)), /init_size/],
    ['payload beyond kernel', patched((v) => v.setUint32(O.PAYLOAD_LENGTH, 0x7fffffff, true)), /payload .* runs past/],
  ];
  for (const [name, bytes, re] of cases) {
    assert.throws(
      () => parseBzImage(bytes, 'FILE'),
      (e: unknown) => e instanceof KernelImageError && re.test(e.message),
      name,
    );
  }
  // A real kernel cut short: the header is intact, the kernel is not.
  const cut = debianCloudKernel().file.slice(0, 1 * MiB);
  assert.throws(() => parseBzImage(cut, 'cut'), /cut is truncated: its header says the kernel is \d+ bytes after the setup, but only \d+ are present/);
});

test('random header corruption gives KernelImageError or a valid parse, nothing else', () => {
  const base = patched(() => {});
  const next = rng(1234);
  let rejected = 0;
  for (let i = 0; i < 3000; i++) {
    const b = base.slice();
    const n = 1 + (next() % 6);
    for (let k = 0; k < n; k++) b[0x1f1 + (next() % (0x270 - 0x1f1))] = next() & 0xff;
    try {
      const img = parseBzImage(b, 'fuzz');
      assert.ok(img.payload.byteOffset + img.payload.length <= b.length);
      assert.ok(img.kernel.length > 0);
    } catch (e) {
      assert.ok(e instanceof KernelImageError, `iteration ${i}: ${String(e)}`);
      rejected++;
    }
  }
  assert.ok(rejected > 100, `only ${rejected} corruptions were caught`);
});
