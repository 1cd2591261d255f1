import assert from 'node:assert/strict';
import { test } from 'node:test';
import { GiB, MiB, HIMEM_START, MMIO_HOLE_START, PAGE_SIZE, guestRamRegions } from '../../src/arch/x86_64/layout.js';
import { bzImagePlacement } from '../../src/loader/bzimage.js';
import { encodeCmdline, writeCmdline } from '../../src/loader/cmdline.js';
import { CmdlineError, GuestPlacementError } from '../../src/loader/errors.js';
import { BufferGuestMemory, rangesOverlap } from '../../src/loader/guest-memory.js';
import { loadInitrd, placeInitrd } from '../../src/loader/initrd.js';
import { debianCloudKernel } from './loader-fixtures.js';

const DEBIAN_KERNEL = { start: 16 * MiB, end: 16 * MiB + 51.5 * MiB };

test('initrd goes at the top of low RAM, page aligned, clear of the kernel', () => {
  const ram = guestRamRegions(128 * MiB);
  const p = placeInitrd({ size: 10 * MiB, ram, kernel: DEBIAN_KERNEL, addrMax: 0x7fffffff });
  assert.equal(p.gpa, 118 * MiB);
  const odd = placeInitrd({ size: 10 * MiB + 123, ram, kernel: DEBIAN_KERNEL });
  assert.equal(odd.gpa % PAGE_SIZE, 0);
  assert.ok(odd.gpa + odd.size <= 128 * MiB && odd.gpa + odd.size > 128 * MiB - PAGE_SIZE);
});

test('initrd too big for the guest is a GuestPlacementError saying so', () => {
  const ram = guestRamRegions(128 * MiB);
  assert.throws(
    () => placeInitrd({ size: 70 * MiB, ram, kernel: DEBIAN_KERNEL }),
    (e: unknown) => e instanceof GuestPlacementError && /^initrd \(70 MiB\) does not fit in guest memory \(128 MiB\)/.test(e.message),
  );
  assert.throws(() => placeInitrd({ size: 0, ram, kernel: DEBIAN_KERNEL }), GuestPlacementError);
});

test('initrd goes below the kernel when there is no room above it', () => {
  const ram = guestRamRegions(128 * MiB);
  const kernel = { start: 64 * MiB, end: 120 * MiB };
  const p = placeInitrd({ size: 20 * MiB, ram, kernel });
  assert.equal(p.gpa, 44 * MiB);
  // Neither above nor below: [1 MiB, 64 MiB) is 63 MiB.
  assert.throws(() => placeInitrd({ size: 64 * MiB, ram, kernel }), /initrd \(64 MiB\) does not fit/);
  // Never below 1 MiB, where the boot structures live.
  const q = placeInitrd({ size: 62 * MiB, ram, kernel });
  assert.ok(q.gpa >= HIMEM_START);
});

test('initrd respects initrd_addr_max and never crosses into the MMIO hole', () => {
  const ram = guestRamRegions(8 * GiB); // [0, 3 GiB) + [4 GiB, 9 GiB)
  const p = placeInitrd({ size: 100 * MiB, ram, kernel: DEBIAN_KERNEL, addrMax: 0x7fffffff });
  assert.equal(p.gpa, 2 * GiB - 100 * MiB);
  assert.ok(p.gpa + p.size - 1 <= 0x7fffffff);
  const q = placeInitrd({ size: 100 * MiB, ram, kernel: DEBIAN_KERNEL });
  assert.equal(q.gpa + q.size, MMIO_HOLE_START);
  // A tiny initrd_addr_max inside the kernel: only room below it.
  const r = placeInitrd({ size: 4 * MiB, ram, kernel: DEBIAN_KERNEL, addrMax: 32 * MiB - 1 });
  assert.equal(r.gpa, 12 * MiB);
  assert.throws(() => placeInitrd({ size: 4 * MiB, ram, kernel: DEBIAN_KERNEL, addrMax: 4 * MiB }), GuestPlacementError);
});

test('real kernel + initrd in 128 MiB: no overlap, bytes written', () => {
  const { image } = debianCloudKernel();
  const ram = guestRamRegions(128 * MiB);
  const kernel = bzImagePlacement(image).reserved;
  const mem = new BufferGuestMemory(ram);
  const initrd = new Uint8Array(5 * MiB + 7).fill(0x5a);
  const p = loadInitrd(mem, initrd, { ram, kernel, addrMax: image.header.initrdAddrMax });
  assert.ok(!rangesOverlap({ start: p.gpa, end: p.gpa + p.size }, kernel));
  assert.deepEqual(mem.read(p.gpa, initrd.length), initrd);
});

test('command line: NUL-terminated, length checked against cmdline_size', () => {
  assert.deepEqual([...encodeCmdline('console=ttyS0', 2047)], [...Buffer.from('console=ttyS0'), 0]);
  assert.equal(encodeCmdline('', 2047).length, 1);
  assert.equal(encodeCmdline('x'.repeat(2047), 2047).length, 2048);
  assert.throws(() => encodeCmdline('x'.repeat(2048), 2047), (e: unknown) => e instanceof CmdlineError && /is 2048 bytes; this kernel accepts at most 2047/.test(e.message));
  assert.throws(() => encodeCmdline('x'.repeat(256), 255), /accepts at most 255/);
  // UTF-8 bytes count, not characters.
  assert.throws(() => encodeCmdline('é'.repeat(200), 255), /is 400 bytes/);
  assert.throws(() => encodeCmdline('a\0b', 2047), /NUL/);
  // The VMM's own 2048-byte buffer caps a kernel that claims more.
  assert.throws(() => encodeCmdline('x'.repeat(3000), 1 << 20), /at most 2047/);
  const mem = new BufferGuestMemory(guestRamRegions(4 * MiB));
  const placed = writeCmdline(mem, 'quiet', 2047);
  assert.deepEqual(placed, { gpa: 0x20000, size: 6 });
  assert.deepEqual([...mem.read(0x20000, 6)], [...Buffer.from('quiet'), 0]);
});
