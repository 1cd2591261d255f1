import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { MiB, guestRamRegions } from '../../src/arch/x86_64/layout.js';
import { parseBzImage } from '../../src/loader/bzimage.js';
import { EM_X86_64, PT_LOAD, loadElfKernel } from '../../src/loader/elf.js';
import { DecompressionError, ElfImageError } from '../../src/loader/errors.js';
import { BufferGuestMemory } from '../../src/loader/guest-memory.js';
import { detectCompression, extractVmlinux } from '../../src/loader/vmlinux.js';
import { debianCloudKernel, debianCloudVmlinux, elfNote, makeElf, syntheticBzImage } from './loader-fixtures.js';

test('extracts the ELF vmlinux from the Debian cloud bzImage', (t) => {
  const { image } = debianCloudKernel();
  const t0 = performance.now();
  const x = extractVmlinux(image);
  const ms = performance.now() - t0;
  t.diagnostic(`vmlinux extraction: ${ms.toFixed(0)} ms for ${x.compressedSize} → ${x.decompressedSize} bytes (${x.compression})`);
  assert.equal(x.compression, 'lz4');
  assert.equal(x.compressedSize, image.header.payloadLength);
  // An ELF64 little-endian x86-64 executable…
  const e = x.elf;
  assert.deepEqual([...e.subarray(0, 6)], [0x7f, 0x45, 0x4c, 0x46, 2, 1]);
  assert.equal(e[0x12]! | (e[0x13]! << 8), EM_X86_64);
  // …followed, in the payload, by the relocation table (CONFIG_X86_NEED_RELOCS), which is cut off.
  assert.ok(x.decompressedSize > e.length);
  const k = x.kernel;
  assert.ok(k.segments.length >= 2);
  // The kernel is linked to run at CONFIG_PHYSICAL_START = pref_address; e_entry is physical.
  assert.equal(k.entry, image.header.prefAddress);
  assert.equal(Math.min(...k.segments.map((s) => s.paddr)), image.header.prefAddress);
  for (const s of k.segments) assert.ok(s.offset + s.filesz <= e.length && s.filesz <= s.memsz);
  // The PVH note (XEN_ELFNOTE_PHYS32_ENTRY) points into the first (text) segment.
  assert.ok(k.pvhEntry !== undefined);
  const text = k.segments[0]!;
  assert.ok(k.pvhEntry >= text.paddr && k.pvhEntry < text.paddr + text.memsz);
  assert.ok(k.pvhEntry < 2 ** 32);
});

test('extraction matches the lz4 CLI byte for byte', (t) => {
  if (spawnSync('lz4', ['--version']).status !== 0) {
    t.skip('lz4 command not installed');
    return;
  }
  const { image } = debianCloudKernel();
  const payload = image.payload;
  // Linux appends the decompressed size as a u32; the lz4 tool does not know it.
  const r = spawnSync('lz4', ['-d', '-c', '-q'], { input: payload.subarray(0, payload.length - 4), maxBuffer: 512 * MiB });
  assert.equal(r.status, 0);
  const x = debianCloudVmlinux();
  const ref = r.stdout as Buffer;
  assert.equal(ref.length, x.decompressedSize);
  const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
  assert.equal(sha(x.elf), sha(ref.subarray(0, x.elf.length)));
});

test('the extracted vmlinux loads at its physical addresses', () => {
  const { kernel, elf } = debianCloudVmlinux();
  const ram = guestRamRegions(128 * MiB);
  const mem = new BufferGuestMemory(ram);
  const loaded = loadElfKernel(kernel, mem, ram);
  assert.equal(loaded.pvhEntry, kernel.pvhEntry);
  for (const s of kernel.segments) {
    assert.ok(Buffer.from(mem.read(s.paddr, Math.min(4096, s.filesz))).equals(Buffer.from(elf.subarray(s.offset, s.offset + Math.min(4096, s.filesz)))));
  }
  assert.ok(loaded.reserved.start === 16 * MiB && loaded.reserved.end > loaded.reserved.start);
  const small = guestRamRegions(32 * MiB);
  assert.throws(() => loadElfKernel(kernel, new BufferGuestMemory(small), small), /the guest has 32 MiB: give the VM more memory/);
});

test('corrupted LZ4 block length in the real payload is a DecompressionError', () => {
  const { file, image } = debianCloudKernel();
  const b = file.slice();
  const payloadAt = (image.header.setupSects + 1) * 512 + image.header.payloadOffset;
  const v = new DataView(b.buffer);
  v.setUint32(payloadAt + 4, v.getUint32(payloadAt + 4, true) + 1000, true); // first block size
  assert.throws(() => extractVmlinux(parseBzImage(b, 'corrupt.bz')), (e: unknown) => e instanceof DecompressionError && /corrupt\.bz/.test(e.message));
  // Zeros over the middle of the first block: a zero token followed by a zero match offset.
  const c = file.slice();
  c.fill(0, payloadAt + 8 + 1000, payloadAt + 8 + 1000 + 1 * MiB);
  assert.throws(() => extractVmlinux(parseBzImage(c, 'zeroed.bz')), /cannot decompress the kernel in zeroed\.bz: LZ4: match offset 0/);
  // A wrong size trailer (the u32 Linux appends after the LZ4 stream).
  const d = file.slice();
  const trailer = payloadAt + image.header.payloadLength - 4;
  new DataView(d.buffer).setUint32(trailer, new DataView(d.buffer).getUint32(trailer, true) + 1, true);
  assert.throws(() => extractVmlinux(parseBzImage(d, 'size.bz')), /stream's size field says/);
});

test('compression is detected by magic; unsupported ones are named', () => {
  const magic = (hex: string) => new Uint8Array(Buffer.from(hex.padEnd(64, '0'), 'hex'));
  const kinds: [string, string][] = [
    ['02214c18', 'lz4'],
    ['1f8b08', 'gzip'],
    ['425a6839', 'bzip2'],
    ['5d000080', 'lzma'],
    ['fd377a585a00', 'xz'],
    ['894c5a4f', 'lzo'],
    ['28b52ffd', 'zstd'],
    ['7f454c46', 'elf'],
    ['deadbeef', 'unknown'],
  ];
  for (const [hex, kind] of kinds) assert.equal(detectCompression(magic(hex)), kind, hex);
  for (const [hex, kind] of kinds.filter(([, k]) => ['bzip2', 'lzma', 'xz', 'lzo', 'zstd'].includes(k))) {
    const img = parseBzImage(syntheticBzImage(magic(hex)), 'k.bz');
    assert.throws(() => extractVmlinux(img), new RegExp(`unsupported compression ${kind} in k\\.bz`));
  }
  assert.throws(() => extractVmlinux(parseBzImage(syntheticBzImage(magic('deadbeef')), 'k.bz')), /unsupported compression in k\.bz: unknown payload magic deadbeef/);
});

test('gzip and uncompressed ELF payloads are extracted too', () => {
  const pvh = elfNote('Xen', 18, new Uint8Array([0x20, 0x00, 0x20, 0x00]));
  const elf = makeElf({ notes: pvh });
  for (const payload of [gzipSync(elf), elf]) {
    const x = extractVmlinux(parseBzImage(syntheticBzImage(payload), 'small.bz'));
    assert.equal(x.kernel.pvhEntry, 0x200020);
    assert.equal(x.elf.length, elf.length);
  }
  // A corrupt gzip stream.
  const gz = gzipSync(elf);
  gz[20]! ^= 0xff;
  gz[21]! ^= 0xff;
  assert.throws(() => extractVmlinux(parseBzImage(syntheticBzImage(gz), 'small.bz')), DecompressionError);
  // A payload that decompresses to something that is not an ELF.
  assert.throws(() => extractVmlinux(parseBzImage(syntheticBzImage(gzipSync(Buffer.from('not an elf, really not'))), 'x.bz')), ElfImageError);
  assert.equal(PT_LOAD, 1);
});
