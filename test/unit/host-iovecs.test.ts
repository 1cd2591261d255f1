import assert from 'node:assert/strict';
import { test } from 'node:test';
import { HostIovecs } from '../../src/devices/virtio/host-iovecs.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';

// struct iovec on x86-64: u64 iov_base, u64 iov_len, in the host's (little-endian) byte order.
function entries(iovecs: HostIovecs): [bigint, bigint][] {
  const words = new BigUint64Array(iovecs.bytes.buffer, iovecs.bytes.byteOffset, 2 * iovecs.count);
  const out: [bigint, bigint][] = [];
  for (let i = 0; i < iovecs.count; i++) out.push([words[2 * i]!, words[2 * i + 1]!]);
  return out;
}

// add() only computes addresses; nothing is read or written through them, so made-up host addresses do.
function regions() {
  const a = new Uint8Array(0x4000);
  const b = new Uint8Array(0x4000);
  const memory = GuestMemory.fromBuffers([
    { gpa: 0, bytes: a, hostAddress: 0x1_ffff_f000n }, // its pages straddle 4 GiB of host address space
    { gpa: 0x4000, bytes: b, hostAddress: 0x7f12_3456_0000n },
  ]);
  return { memory, a, b };
}

test('host addresses are region base plus offset, with the carry into the high word', () => {
  const { memory, a, b } = regions();
  const iovecs = new HostIovecs(8);
  iovecs.useMemory(memory);
  assert.equal(iovecs.add(a, 0x800, 0x100), true);
  assert.equal(iovecs.add(a, 0x1800, 0x10), true); // 0x1_ffff_f000 + 0x1800 = 0x2_0000_0800
  assert.equal(iovecs.add(b, 0x10, 0x20), true); // another region: its own base
  assert.equal(iovecs.add(a, 0x0, 0x8), true); // back again
  assert.deepEqual(entries(iovecs), [
    [0x1_ffff_f800n, 0x100n],
    [0x2_0000_0800n, 0x10n],
    [0x7f12_3456_0010n, 0x20n],
    [0x1_ffff_f000n, 0x8n],
  ]);
  assert.equal(iovecs.length, 0x100 + 0x10 + 0x20 + 0x8);
});

test('a piece continuing the previous one is merged, and a merged length may pass 2^32', () => {
  const { memory, a } = regions();
  const iovecs = new HostIovecs(4);
  iovecs.useMemory(memory);
  assert.equal(iovecs.add(a, 0x100, 0x100), true);
  assert.equal(iovecs.add(a, 0x200, 0x300), true); // continues: merged
  assert.equal(iovecs.add(a, 0x600, 0x10), true); // a gap: new entry
  assert.deepEqual(entries(iovecs), [
    [0x1_ffff_f100n, 0x400n],
    [0x1_ffff_f600n, 0x10n],
  ]);
  // Lengths are arithmetic only here (see above): two pieces of a chain of 2^32 + 0x1000 bytes.
  iovecs.reset();
  assert.equal(iovecs.add(a, 0, 0xffff_f000), true);
  assert.equal(iovecs.add(a, 0xffff_f000, 0x2000), true);
  assert.deepEqual(entries(iovecs), [[0x1_ffff_f000n, 0x1_0000_1000n]]);
});

test('a buffer that is not a region of guest RAM, or a full array, is refused and nothing is added', () => {
  const { memory, a } = regions();
  const iovecs = new HostIovecs(2);
  iovecs.useMemory(memory);
  assert.equal(iovecs.add(new Uint8Array(16), 0, 16), false);
  assert.equal(iovecs.add(a.subarray(0, 16), 0, 16), false, 'a view of a region is not the region');
  assert.equal(iovecs.count, 0);
  assert.equal(iovecs.add(a, 0, 8), true);
  assert.equal(iovecs.add(a, 16, 8), true);
  assert.equal(iovecs.add(a, 32, 8), false, 'full');
  assert.equal(iovecs.add(a, 24, 8), true, 'a continuation still merges into the last entry');
  assert.equal(iovecs.add(a, 2 ** 32, 8), false, 'an offset beyond 32 bits');
  assert.deepEqual(entries(iovecs), [
    [0x1_ffff_f000n, 8n],
    [0x1_ffff_f010n, 16n],
  ]);
});

test('an array taking another one\'s regions (useRegionsOf) computes the same addresses', () => {
  const { memory, b } = regions();
  const first = new HostIovecs(2);
  first.useMemory(memory);
  const second = new HostIovecs(2);
  second.useRegionsOf(first);
  assert.equal(second.add(b, 0x100, 4), true);
  assert.deepEqual(entries(second), [[0x7f12_3456_0100n, 4n]]);
});
