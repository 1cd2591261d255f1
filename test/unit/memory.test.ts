/** Guest memory: layout around the MMIO hole and exhaustive bounds checks, without KVM. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { GuestMemory, GuestMemoryError, HUGE_PAGE_BYTES } from '../../src/memory/guest-memory.js';
import { DEFAULT_MMIO_HOLE, GiB, MiB, ramRanges } from '../../src/memory/layout.js';

test('ramRanges keeps small guests below the hole and splits large ones around it', () => {
  assert.deepEqual(ramRanges(128 * MiB), [{ start: 0, size: 128 * MiB }]);
  assert.deepEqual(ramRanges(3 * GiB), [{ start: 0, size: 3 * GiB }]);
  assert.deepEqual(ramRanges(5 * GiB), [
    { start: 0, size: 3 * GiB },
    { start: 4 * GiB, size: 2 * GiB },
  ]);
  assert.deepEqual(ramRanges(64 * MiB, { start: 32 * MiB, size: 16 * MiB }), [
    { start: 0, size: 32 * MiB },
    { start: 48 * MiB, size: 32 * MiB },
  ]);
  assert.deepEqual(DEFAULT_MMIO_HOLE, { start: 3 * GiB, size: GiB });
  for (const bad of [0, -4096, 4095, 1.5, NaN, Infinity]) {
    assert.throws(() => ramRanges(bad), RangeError, `size ${bad}`);
  }
});

/** Two regions like a guest split by a hole: [0x0, 0x2000) and [0x10000, 0x11000). */
function twoRegions(): GuestMemory {
  return GuestMemory.fromBuffers([
    { gpa: 0x10000, bytes: new Uint8Array(0x1000) },
    { gpa: 0, bytes: new Uint8Array(0x2000) },
  ]);
}

test('typed accessors are little-endian and round-trip in both regions', () => {
  const mem = twoRegions();
  mem.writeU8(0x10, 0xab);
  mem.writeU16(0x20, 0xbeef);
  mem.writeU32(0x30, 0xdeadbeef);
  mem.writeU64(0x40, 0x0123456789abcdefn);
  assert.equal(mem.readU8(0x10), 0xab);
  assert.equal(mem.readU16(0x20), 0xbeef);
  assert.equal(mem.readU32(0x30), 0xdeadbeef);
  assert.equal(mem.readU64(0x40), 0x0123456789abcdefn);
  assert.deepEqual([...mem.read(0x30, 4)], [0xef, 0xbe, 0xad, 0xde]);
  mem.writeU32(0x10ffc, 0x11223344); // last 4 bytes of the high region
  assert.equal(mem.readU32(0x10ffc), 0x11223344);
  mem.writeU32(0x10000, 0xffffffff);
  assert.equal(mem.readU32(0x10000), 0xffffffff);
  mem.writeU64(0x1ff8, -1n); // two's complement wraps to all-ones
  assert.equal(mem.readU64(0x1ff8), 0xffffffffffffffffn);
  assert.equal(mem.totalBytes, 0x3000);
});

test('slice is a zero-copy view: writes through it are visible to reads and vice versa', () => {
  const mem = twoRegions();
  const view = mem.slice(0x100, 16);
  view[0] = 7;
  assert.equal(mem.readU8(0x100), 7);
  mem.writeU8(0x10f, 9);
  assert.equal(view[15], 9);
  assert.equal(mem.slice(0x2000, 0).length, 0); // empty slice at the end of a region
  mem.write(0x10800, Uint8Array.from([1, 2, 3]));
  assert.deepEqual([...mem.slice(0x10800, 3)], [1, 2, 3]);
  mem.fill(0x10800, 3, 0xee);
  assert.deepEqual([...mem.read(0x10800, 3)], [0xee, 0xee, 0xee]);
});

test('every access outside RAM throws GuestMemoryError', () => {
  const mem = twoRegions();
  const outside: [string, () => unknown][] = [
    ['negative address', () => mem.readU8(-1)],
    ['NaN address', () => mem.readU8(NaN)],
    ['fractional address', () => mem.readU32(1.5)],
    ['Infinity address', () => mem.read(Infinity, 1)],
    ['huge address', () => mem.readU8(2 ** 53)],
    ['unsafe sum', () => mem.read(2 ** 53 - 2, 4)],
    ['in the gap', () => mem.readU8(0x2000)],
    ['just below the second region', () => mem.readU8(0xffff)],
    ['past the end of RAM', () => mem.readU8(0x11000)],
    ['u16 straddling the end of the first region into the gap', () => mem.readU16(0x1fff)],
    ['u32 straddling the end of RAM', () => mem.readU32(0x10ffd)],
    ['u64 straddling the end of RAM', () => mem.readU64(0x10ff9)],
    ['u64 write straddling into the gap', () => mem.writeU64(0x1ffc, 1n)],
    ['read straddling into the gap', () => mem.read(0x1000, 0x1001)],
    ['write straddling into the gap', () => mem.write(0x1fff, new Uint8Array(2))],
    ['write past the end', () => mem.write(0x10fff, new Uint8Array(2))],
    ['slice straddling the gap', () => mem.slice(0x1ff0, 0x20)],
    ['fill past the end', () => mem.fill(0x10000, 0x1001)],
    ['negative length', () => mem.read(0, -1)],
    ['NaN length', () => mem.read(0, NaN)],
    ['huge length', () => mem.read(0, 2 ** 40)],
    ['zero-length in the gap', () => mem.read(0x3000, 0)],
    ['readInto past the end', () => mem.readInto(0x10ff0, new Uint8Array(0x11))],
  ];
  for (const [what, access] of outside) {
    assert.throws(access, GuestMemoryError, what);
  }
  // Nothing was written by the failed writes.
  assert.equal(mem.readU32(0x1ffc), 0);
  assert.equal(mem.readU8(0x10fff), 0);
});

test('accesses exactly up to a region end succeed', () => {
  const mem = twoRegions();
  assert.equal(mem.read(0, 0x2000).length, 0x2000);
  assert.equal(mem.readU64(0x1ff8), 0n);
  assert.equal(mem.readU8(0x10fff), 0);
  assert.equal(mem.read(0x11000, 0).length, 0);
  assert.ok(mem.contains(0x10000, 0x1000));
  assert.ok(!mem.contains(0x10000, 0x1001));
  assert.ok(!mem.contains(-5, 1));
});

test('adjacent regions act as contiguous RAM for copies and typed access; slice refuses to span them', () => {
  const mem = GuestMemory.fromBuffers([
    { gpa: 0, bytes: new Uint8Array(0x1000) },
    { gpa: 0x1000, bytes: new Uint8Array(0x1000) },
  ]);
  mem.writeU64(0xffc, 0x1122334455667788n);
  assert.equal(mem.readU64(0xffc), 0x1122334455667788n);
  assert.equal(mem.readU32(0x1000), 0x11223344);
  assert.equal(mem.readU16(0xfff), 0x4455);
  mem.write(0xff0, new Uint8Array(0x20).fill(5));
  assert.deepEqual([...mem.read(0xfee, 4)], [0, 0, 5, 5]);
  assert.throws(() => mem.slice(0xff0, 0x20), /spans two host regions/);
  assert.match(mem.describe(), /\[0x0, 0x2000\)/);
});

test('overlapping regions are rejected; errors name the address and the RAM layout', () => {
  assert.throws(
    () => GuestMemory.fromBuffers([
      { gpa: 0, bytes: new Uint8Array(0x2000) },
      { gpa: 0x1000, bytes: new Uint8Array(0x1000) },
    ]),
    /overlap/,
  );
  const mem = twoRegions();
  assert.throws(() => mem.readU32(0x5000), (e: unknown) => {
    assert.ok(e instanceof GuestMemoryError);
    assert.equal(e.gpa, 0x5000);
    assert.equal(e.length, 4);
    assert.match(e.message, /GPA 0x5000 length 0x4: the address is not guest RAM \(RAM is \[0x0, 0x2000\) \[0x10000, 0x11000\)\)/);
    return true;
  });
});

test('plain-buffer memory cannot be registered with KVM', () => {
  const mem = twoRegions();
  const fakeVm = { setUserMemoryRegion: () => assert.fail('must not be called') };
  assert.throws(() => mem.registerWith(fakeVm as never), /plain buffer/);
});

test('anonymous memory maps lazily, splits large ranges, and reports closed access', () => {
  // 3 GiB + 8 MiB: low part cut into 1 GiB pieces, the rest above 4 GiB. Only touched pages cost memory.
  const mem = GuestMemory.create(3 * GiB + 8 * MiB);
  try {
    assert.deepEqual(
      mem.regions.map((r) => [r.gpa / MiB, r.size / MiB]),
      [[0, 1024], [1024, 1024], [2048, 1024], [4096, 8]],
    );
    assert.ok(mem.regions.every((r) => typeof r.hostAddress === 'bigint'));
    mem.writeU32(3 * GiB - 4, 0xa5a5a5a5);
    mem.writeU32(4 * GiB + 8 * MiB - 4, 0x5a5a5a5a);
    mem.writeU64(GiB - 4, 0x0102030405060708n); // straddles two host mappings
    assert.equal(mem.readU64(GiB - 4), 0x0102030405060708n);
    assert.equal(mem.readU32(3 * GiB - 4), 0xa5a5a5a5);
    assert.equal(mem.readU32(4 * GiB + 8 * MiB - 4), 0x5a5a5a5a);
    assert.throws(() => mem.readU8(3 * GiB), GuestMemoryError); // the hole
    assert.throws(() => mem.readU8(4 * GiB - 1), GuestMemoryError);
    assert.throws(() => mem.readU32(3 * GiB - 2), GuestMemoryError); // straddles into the hole
  } finally {
    mem.close();
  }
  assert.throws(() => mem.readU8(0), /closed/);
});

/** The VmFlags line of the /proc/self/smaps entry that starts at `address`, or undefined. */
function vmFlagsAt(address: bigint): string[] | undefined {
  const entry = readFileSync('/proc/self/smaps', 'utf8')
    .split(/\n(?=[0-9a-f]+-[0-9a-f]+ )/)
    .find((e) => BigInt(`0x${e.slice(0, e.indexOf('-'))}`) === address);
  return entry?.match(/^VmFlags:(.*)$/m)?.[1]?.trim().split(/\s+/);
}

test('guest RAM starts on 2 MiB boundaries and asks for transparent huge pages unless told not to', () => {
  const advised = GuestMemory.create(64 * MiB);
  const plain = GuestMemory.create(64 * MiB, undefined, { transparentHugePages: false });
  try {
    for (const mem of [advised, plain]) {
      for (const r of mem.regions) assert.equal(r.hostAddress! % BigInt(HUGE_PAGE_BYTES), 0n, `region at GPA ${r.gpa} is not 2 MiB aligned`);
    }
    // "hg" in VmFlags is MADV_HUGEPAGE (fs/proc/task_mmu.c); the kernel records it even where THP is
    // "never", and refuses the advice (EINVAL) only when built without THP, which has no such file.
    const thpBuiltIn = existsSync('/sys/kernel/mm/transparent_hugepage/enabled');
    assert.equal(vmFlagsAt(advised.regions[0]!.hostAddress!)?.includes('hg'), thpBuiltIn);
    assert.equal(vmFlagsAt(plain.regions[0]!.hostAddress!)?.includes('hg'), false);
    // The whole mapping is usable, to its last byte.
    advised.writeU32(64 * MiB - 4, 0xfeedf00d);
    assert.equal(advised.readU32(64 * MiB - 4), 0xfeedf00d);
  } finally {
    advised.close();
    plain.close();
  }
});
