import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MiB, guestRamRegions } from '../../src/arch/x86_64/layout.js';
import { loadElfKernel, parseElfKernel } from '../../src/loader/elf.js';
import { ElfImageError, GuestPlacementError } from '../../src/loader/errors.js';
import { BufferGuestMemory } from '../../src/loader/guest-memory.js';
import { elfNote, makeElf, phdrOffset, rng } from './loader-fixtures.js';

const u32le = (n: number) => new Uint8Array(new Uint32Array([n]).buffer);
const u64le = (n: bigint) => new Uint8Array(new BigUint64Array([n]).buffer);
const fill = (n: number, v: number) => new Uint8Array(n).fill(v);

function twoSegmentElf(notes?: Uint8Array): Uint8Array {
  return makeElf({
    entry: 0x200010n,
    segments: [
      { paddr: 0x200000, vaddr: 0xffffffff80200000n, data: fill(0x100, 0xcc) },
      { paddr: 0x300000, vaddr: 0xffffffff80300000n, data: fill(0x80, 0xdd), memsz: 0x2000 },
    ],
    ...(notes ? { notes } : {}),
  });
}

test('parses PT_LOAD segments, physical entry and the PVH note (4- and 8-byte forms)', () => {
  for (const desc of [u32le(0x200020), u64le(0x200020n)]) {
    const notes = new Uint8Array([...elfNote('GNU', 3, fill(20, 1)), ...elfNote('Xen', 18, desc), ...elfNote('Xen', 6, fill(6, 0x41))]);
    const k = parseElfKernel(twoSegmentElf(notes), 'k');
    assert.equal(k.entry, 0x200010);
    assert.equal(k.pvhEntry, 0x200020);
    assert.deepEqual(
      k.segments.map((s) => [s.paddr, s.filesz, s.memsz]),
      [
        [0x200000, 0x100, 0x100],
        [0x300000, 0x80, 0x2000],
      ],
    );
    assert.equal(k.segments[0]!.vaddr, 0xffffffff80200000n);
  }
  assert.equal(parseElfKernel(twoSegmentElf(), 'k').pvhEntry, undefined);
});

test('a virtual e_entry is translated to its physical address', () => {
  const b = makeElf({ entry: 0xffffffff80200008n, segments: [{ paddr: 0x200000, vaddr: 0xffffffff80200000n, data: fill(16, 0x90) }] });
  assert.equal(parseElfKernel(b).entry, 0x200008);
});

test('loads segments and zeroes bss over stale memory', () => {
  const ram = guestRamRegions(8 * MiB);
  const mem = new BufferGuestMemory(ram);
  mem.write(0x300000, fill(0x3000, 0xaa)); // stale contents from an earlier boot
  const k = parseElfKernel(twoSegmentElf(elfNote('Xen', 18, u32le(0x200020))));
  const loaded = loadElfKernel(k, mem, ram);
  assert.deepEqual(loaded, { entry64: 0x200010, pvhEntry: 0x200020, reserved: { start: 0x200000, end: 0x302000 } });
  assert.deepEqual(mem.read(0x200000, 0x100), fill(0x100, 0xcc));
  assert.deepEqual(mem.read(0x300000, 0x80), fill(0x80, 0xdd));
  assert.deepEqual(mem.read(0x300080, 0x2000 - 0x80), new Uint8Array(0x2000 - 0x80));
  assert.equal(mem.read(0x302000, 1)[0], 0xaa); // past memsz: untouched
  // Below 1 MiB (boot structures) and beyond RAM are refused before anything is written.
  const low = parseElfKernel(makeElf({ segments: [{ paddr: 0x7000, data: fill(16, 1) }] }));
  assert.throws(() => loadElfKernel(low, mem, ram), (e: unknown) => e instanceof GuestPlacementError && /below 1 MiB/.test(e.message));
  const high = parseElfKernel(makeElf({ segments: [{ paddr: 0x200000, data: fill(16, 1), memsz: 16 * MiB }] }));
  assert.throws(() => loadElfKernel(high, mem, ram), /needs guest memory \[2 MiB, 18 MiB\), but the guest has 8 MiB/);
});

function corrupt(patch: (v: DataView, b: Uint8Array) => void, notes?: Uint8Array): Uint8Array {
  const b = twoSegmentElf(notes);
  patch(new DataView(b.buffer), b);
  return b;
}

test('malformed ELF files give ElfImageError', () => {
  const pvh = elfNote('Xen', 18, u32le(0x200020));
  // A note whose descsz runs past the note segment.
  const badNote = twoSegmentElf(pvh);
  const noteAt = Number(new DataView(badNote.buffer).getBigUint64(phdrOffset(2) + 8, true));
  new DataView(badNote.buffer).setUint32(noteAt + 4, 0x1000, true);
  const cases: [string, Uint8Array, RegExp][] = [
    ['short', new Uint8Array(10), /shorter than an ELF64 header/],
    ['magic', corrupt((v) => v.setUint8(0, 0)), /no \\x7fELF magic/],
    ['32-bit', corrupt((v) => v.setUint8(4, 1)), /not a 64-bit ELF/],
    ['big-endian', corrupt((v) => v.setUint8(5, 2)), /not a little-endian ELF/],
    ['machine', corrupt((v) => v.setUint16(0x12, 3, true)), /not an x86-64 ELF \(e_machine 3\)/],
    ['type', corrupt((v) => v.setUint16(0x10, 3, true)), /not an executable ELF/],
    ['no phdrs', corrupt((v) => v.setUint16(0x38, 0, true)), /no usable program headers/],
    ['phentsize', corrupt((v) => v.setUint16(0x36, 32, true)), /e_phentsize/],
    ['phdrs beyond file', corrupt((v) => v.setBigUint64(0x20, 0x10000n, true)), /program headers .* run past/],
    ['phoff huge', corrupt((v) => v.setBigUint64(0x20, 0xffffffffffff0000n, true)), /e_phoff .* out of range/],
    ['segment offset beyond file', corrupt((v) => v.setBigUint64(phdrOffset(1) + 8, 0x100000n, true)), /program header 1 has file bytes .* beyond/],
    ['segment filesz beyond file', corrupt((v) => v.setBigUint64(phdrOffset(0) + 32, 0x7fffffffn, true)), /program header 0 has file bytes/],
    ['filesz > memsz', corrupt((v) => v.setBigUint64(phdrOffset(0) + 40, 0x10n, true)), /p_filesz 256 > p_memsz 16/],
    ['paddr beyond 2^52', corrupt((v) => v.setBigUint64(phdrOffset(0) + 24, 0xffffffffffff0n, true)), /beyond 2\^52/],
    ['overlap', corrupt((v) => v.setBigUint64(phdrOffset(1) + 24, 0x200080n, true)), /overlapping PT_LOAD/],
    ['entry outside', corrupt((v) => v.setBigUint64(0x18, 0x900000n, true)), /entry point 0x900000 .* outside every PT_LOAD/],
    ['no PT_LOAD', corrupt((v) => { v.setUint32(phdrOffset(0), 6, true); v.setUint32(phdrOffset(1), 6, true); }), /no PT_LOAD/],
    ['shdrs beyond file', corrupt((v) => { v.setBigUint64(0x28, 0x1000n, true); v.setUint16(0x3c, 10, true); }), /section headers .* run past/],
    ['pvh outside', twoSegmentElf(elfNote('Xen', 18, u32le(0x900000))), /PVH entry point 0x900000 .* outside/],
    ['pvh above 4G', twoSegmentElf(elfNote('Xen', 18, u64le(0x100200020n))), /above 4 GiB/],
    ['pvh odd size', twoSegmentElf(elfNote('Xen', 18, fill(2, 0))), /2-byte value/],
    ['note sizes', badNote, /corrupt ELF note .* run past the note segment/],
  ];
  for (const [name, bytes, re] of cases) {
    assert.throws(() => parseElfKernel(bytes, 'vmlinux'), (e: unknown) => e instanceof ElfImageError && re.test(e.message), name);
  }
});

test('random corruption gives ElfImageError or a self-consistent parse, nothing else', () => {
  const base = twoSegmentElf(elfNote('Xen', 18, u32le(0x200020)));
  const next = rng(99);
  let rejected = 0;
  for (let i = 0; i < 5000; i++) {
    const b = base.slice(0, next() % 8 === 0 ? next() % base.length : base.length);
    const n = 1 + (next() % 4);
    for (let k = 0; k < n && b.length > 0; k++) b[next() % Math.min(b.length, 0x200)] = next() & 0xff;
    try {
      const k = parseElfKernel(b, 'fuzz');
      for (const s of k.segments) assert.ok(s.offset + s.filesz <= b.length && s.filesz <= s.memsz);
      assert.ok(k.extent <= b.length);
    } catch (e) {
      assert.ok(e instanceof ElfImageError, `iteration ${i}: ${String(e)}`);
      rejected++;
    }
  }
  assert.ok(rejected > 500, `only ${rejected} corruptions were caught`);
});
