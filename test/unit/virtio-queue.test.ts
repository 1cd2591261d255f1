import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DescriptorChain, SplitQueue } from '../../src/devices/virtio/queue.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';

// virtio 1.2 §2.7 layout, spelled out independently of the implementation.
const NEXT = 1, WRITE = 2, INDIRECT = 4;
const DESC = 0x1000, AVAIL = 0x2000, USED = 0x3000, SIZE = 8;

function setup(options: { eventIdx?: boolean; indirect?: boolean; memory?: GuestMemory } = {}) {
  const memory = options.memory ?? GuestMemory.fromBuffers([{ gpa: 0, bytes: new Uint8Array(64 * 1024) }]);
  const faults: string[] = [];
  const yields: number[] = [];
  const queue = new SplitQueue(0, SIZE, (_q, reason) => faults.push(reason), (q) => yields.push(q.index));
  queue.descTableAddress = DESC;
  queue.availRingAddress = AVAIL;
  queue.usedRingAddress = USED;
  assert.equal(queue.activate(memory, { eventIdx: options.eventIdx ?? false, indirect: options.indirect ?? true }), true);
  let availIdx = 0;
  const desc = (i: number, addr: number, len: number, flags: number, next = 0, table = DESC) => {
    memory.writeU64(table + 16 * i, BigInt(addr));
    memory.writeU32(table + 16 * i + 8, len);
    memory.writeU16(table + 16 * i + 12, flags);
    memory.writeU16(table + 16 * i + 14, next);
  };
  const publish = (head: number) => {
    memory.writeU16(AVAIL + 4 + 2 * (availIdx % SIZE), head);
    availIdx = (availIdx + 1) & 0xffff;
    memory.writeU16(AVAIL + 2, availIdx);
  };
  return { memory, queue, faults, yields, desc, publish, chain: new DescriptorChain(4) };
}

test('a chain with readable then writable buffers becomes segments in order', () => {
  const { queue, desc, publish, chain, memory } = setup();
  memory.write(0x8000, new Uint8Array([1, 2, 3, 4, 5, 6]));
  desc(5, 0x8000, 4, NEXT, 2);
  desc(2, 0x8004, 2, NEXT, 7);
  desc(7, 0x9000, 100, WRITE);
  publish(5);
  assert.equal(queue.pop(chain), true);
  assert.equal(chain.head, 5);
  assert.equal(chain.readableSegments, 2);
  assert.equal(chain.writableSegments, 1);
  assert.equal(chain.readableBytes, 6);
  assert.equal(chain.writableBytes, 100);
  const header = new Uint8Array(5);
  assert.equal(chain.readBytes(header, 1), 5);
  assert.deepEqual([...header], [2, 3, 4, 5, 6]);
  assert.equal(chain.writeBytes(new Uint8Array([9, 9]), 98), 2);
  assert.deepEqual([...memory.read(0x9000 + 98, 2)], [9, 9]);
  assert.equal(queue.pop(chain), false, 'nothing more available');
});

test('an indirect table after a direct descriptor (§2.7.5.3.2 requires devices to accept it)', () => {
  const { queue, desc, publish, chain } = setup();
  const table = 0x5000;
  desc(0, 0x8000, 16, WRITE | NEXT, 1, table);
  desc(1, 0x8100, 16, WRITE, 0, table);
  desc(3, 0x7000, 8, NEXT, 4);
  desc(4, table, 32, INDIRECT | WRITE); // WRITE on the pointing descriptor is ignored
  publish(3);
  assert.equal(queue.pop(chain), true);
  assert.equal(chain.readableBytes, 8);
  assert.equal(chain.writableBytes, 32);
  assert.equal(chain.segmentCount, 3);
});

test('used elements, notification suppression flags and the used index', () => {
  const { queue, desc, publish, chain, memory } = setup();
  desc(0, 0x8000, 16, WRITE);
  publish(0);
  queue.disableNotification();
  assert.equal(memory.readU16(USED), 1, 'VIRTQ_USED_F_NO_NOTIFY while busy');
  assert.equal(queue.pop(chain), true);
  queue.addUsed(chain.head, 12);
  assert.equal(memory.readU16(USED + 2), 1);
  assert.equal(memory.readU32(USED + 4), 0);
  assert.equal(memory.readU32(USED + 8), 12);
  assert.equal(queue.enableNotification(), false);
  assert.equal(memory.readU16(USED), 0);
  assert.equal(queue.needsNotification(), true);
  assert.equal(queue.needsNotification(), false, 'nothing new since');
  // A buffer that arrives while notifications were off is reported by enableNotification.
  queue.disableNotification();
  publish(0);
  assert.equal(queue.enableNotification(), true);
});

test('staged used elements stay invisible until published, then appear together (a mergeable frame, §5.1.6.4.2)', () => {
  const { queue, desc, publish, chain, memory } = setup();
  for (let i = 0; i < 3; i++) {
    desc(i, 0x8000 + 0x100 * i, 0x100, WRITE);
    publish(i);
  }
  const heads: number[] = [];
  for (let i = 0; i < 3; i++) {
    assert.equal(queue.pop(chain), true);
    heads.push(chain.head);
  }
  queue.stageUsed(heads[0]!, 0x100);
  queue.stageUsed(heads[1]!, 0x100);
  assert.equal(memory.readU16(USED + 2), 0, 'a driver polling now sees none of the frame');
  queue.stageUsed(heads[2]!, 0x20);
  queue.publishUsed();
  assert.equal(memory.readU16(USED + 2), 3, 'all three at once');
  assert.deepEqual([0, 1, 2].map((i) => [memory.readU32(USED + 4 + 8 * i), memory.readU32(USED + 8 + 8 * i)]), [[heads[0], 0x100], [heads[1], 0x100], [heads[2], 0x20]]);
  assert.equal(queue.needsNotification(), true);
});

test('EVENT_IDX: vring_need_event across the 16-bit wrap', () => {
  const { queue, desc, publish, chain, memory } = setup({ eventIdx: true });
  desc(0, 0x8000, 16, WRITE);
  const usedEvent = AVAIL + 4 + 2 * SIZE;
  const availEvent = USED + 4 + 8 * SIZE;
  let notified = 0;
  // Drive the indices through 65535 -> 0 with used_event always one behind the new entry.
  for (let i = 0; i < 70000; i++) {
    queue.beginPass();
    publish(0);
    assert.equal(queue.pop(chain), true);
    queue.addUsed(0, 16);
    memory.writeU16(usedEvent, i & 0xffff);
    if (queue.needsNotification()) notified++;
    assert.equal(queue.enableNotification(), false);
    assert.equal(memory.readU16(availEvent), (i + 1) & 0xffff);
  }
  assert.equal(notified, 70000);
  // used_event far ahead: no notification.
  memory.writeU16(usedEvent, (70000 + 100) & 0xffff);
  publish(0);
  queue.pop(chain);
  queue.addUsed(0, 16);
  assert.equal(queue.needsNotification(), false);
});

test('a pass takes at most Queue Size chains, then asks for another pass with notifications left off', () => {
  for (const eventIdx of [false, true]) {
    const { queue, desc, publish, chain, memory, yields, faults } = setup({ eventIdx });
    desc(0, 0x8000, 16, WRITE);
    const availEvent = USED + 4 + 8 * SIZE;
    // A driver that makes a new chain available for every one the device takes (as a vCPU racing
    // the device can, for ever): the device loop "pop, complete, repeat" must still end.
    publish(0);
    let taken = 0;
    const pass = (): void => {
      for (;;) {
        queue.disableNotification();
        while (queue.pop(chain)) {
          taken++;
          queue.addUsed(chain.head, 16);
          if (taken < 5 * SIZE) publish(0);
        }
        if (!queue.enableNotification()) break;
      }
    };
    pass();
    assert.equal(taken, SIZE, 'one ring of chains in the first pass');
    assert.deepEqual(yields, [0], 'another pass asked for, once');
    assert.equal(queue.yielded, true);
    assert.equal(queue.hasAvailable(), true);
    // Notifications stay off: no kick is needed, the pass asked for takes the rest.
    if (eventIdx) assert.equal(memory.readU16(availEvent), 0, 'avail_event not moved');
    else assert.equal(memory.readU16(USED), 1, 'VIRTQ_USED_F_NO_NOTIFY still set');
    assert.equal(queue.pop(chain), false, 'pop() stays empty until the next pass');
    assert.deepEqual(yields, [0], 'asked once per pass');
    let passes = 1;
    while (queue.yielded) {
      queue.beginPass();
      pass();
      passes++;
    }
    assert.equal(taken, 5 * SIZE, 'every chain taken in the end');
    assert.equal(passes, 5);
    assert.equal(yields.length, 4);
    assert.equal(memory.readU16(USED + 2), 5 * SIZE);
    // Idle now: notifications are back on, as after any pass that emptied the queue.
    if (eventIdx) assert.equal(memory.readU16(availEvent), 5 * SIZE);
    else assert.equal(memory.readU16(USED), 0);
    assert.deepEqual(faults, []);
  }
});

test('an empty queue never asks for another pass, however often it is polled', () => {
  const { queue, chain, yields } = setup();
  for (let i = 0; i < 3 * SIZE; i++) assert.equal(queue.pop(chain), false);
  assert.deepEqual(yields, []);
  assert.equal(queue.yielded, false);
});

test('a buffer crossing adjacent regions splits into segments; a gap is a fault', () => {
  const memory = GuestMemory.fromBuffers([
    { gpa: 0, bytes: new Uint8Array(0x10000) },
    { gpa: 0x10000, bytes: new Uint8Array(0x10000) },
    { gpa: 0x30000, bytes: new Uint8Array(0x1000) },
  ]);
  const { queue, desc, publish, chain, faults } = setup({ memory });
  desc(0, 0xff00, 0x200, WRITE);
  publish(0);
  assert.equal(queue.pop(chain), true);
  assert.equal(chain.writableSegments, 2);
  assert.deepEqual([chain.addresses[0], chain.lengths[0], chain.addresses[1], chain.lengths[1]], [0xff00, 0x100, 0x10000, 0x100]);
  desc(1, 0x1ff00, 0x200, WRITE);
  publish(1);
  assert.equal(queue.pop(chain), false);
  assert.match(faults[0]!, /not guest RAM/);
  assert.equal(queue.ready, false);
});

test('faults are reported once; a failed queue does nothing more', () => {
  const { queue, desc, publish, chain, faults, memory } = setup();
  desc(0, 0x8000, 16, WRITE | NEXT, 0);
  publish(0);
  publish(0);
  assert.equal(queue.pop(chain), false);
  assert.equal(queue.pop(chain), false);
  assert.equal(faults.length, 1);
  queue.addUsed(0, 1);
  assert.equal(memory.readU16(USED + 2), 0, 'no used entry after failure');
  assert.equal(queue.hasAvailable(), false);
  queue.reset();
  assert.equal(queue.failure, undefined);
  assert.equal(queue.size, SIZE);
});

test('a device returning an impossible used element fails the queue instead of writing it', () => {
  const { queue, faults, memory } = setup();
  queue.addUsed(SIZE, 1);
  assert.match(faults[0]!, /impossible used element/);
  assert.equal(memory.readU16(USED + 2), 0);
});

test('maximum sizes must be powers of two up to 32768', () => {
  assert.throws(() => new SplitQueue(0, 3), RangeError);
  assert.throws(() => new SplitQueue(0, 65536), RangeError);
  assert.doesNotThrow(() => new SplitQueue(0, 32768));
});

test('an indirect table off a 4-byte boundary is read as one on it (the word path and the DataView path agree)', () => {
  const segmentsOf = (table: number): number[][] => {
    const { queue, desc, publish, chain } = setup();
    desc(0, 0x8000, 16, NEXT, 1, table);
    desc(1, 0x8f00, 0x300, WRITE | NEXT, 2, table); // crosses nothing: one region
    desc(2, 0x9ffe, 1, WRITE, 0, table);
    desc(6, table, 48, INDIRECT);
    publish(6);
    assert.equal(queue.pop(chain), true, `table at 0x${table.toString(16)}`);
    const out: number[][] = [];
    for (let s = 0; s < chain.segmentCount; s++) out.push([chain.offsets[s]!, chain.lengths[s]!, chain.addresses[s]!]);
    return out;
  };
  const aligned = segmentsOf(0x5000);
  assert.deepEqual(aligned, [
    [0x8000, 16, 0x8000],
    [0x8f00, 0x300, 0x8f00],
    [0x9ffe, 1, 0x9ffe],
  ]);
  assert.deepEqual(segmentsOf(0x5002), aligned);
});

test('buffers in two regions, one after the other and across their boundary, land in the right region', () => {
  const low = new Uint8Array(0x10000);
  const high = new Uint8Array(0x10000);
  const memory = GuestMemory.fromBuffers([
    { gpa: 0, bytes: low },
    { gpa: 0x10000, bytes: high },
  ]);
  const { queue, desc, publish, chain } = setup({ memory });
  desc(0, 0x12000, 8, NEXT, 1); // second region first: the last-region shortcut must not keep the first
  desc(1, 0x8000, 8, NEXT, 2);
  desc(2, 0xfff0, 0x20, WRITE); // 16 bytes in each region
  publish(0);
  assert.equal(queue.pop(chain), true);
  const seen: [Uint8Array, number, number][] = [];
  for (let s = 0; s < chain.segmentCount; s++) seen.push([chain.buffers[s]!, chain.offsets[s]!, chain.lengths[s]!]);
  assert.deepEqual(seen, [
    [high, 0x2000, 8],
    [low, 0x8000, 8],
    [low, 0xfff0, 0x10],
    [high, 0, 0x10],
  ]);
  assert.equal(seen[0]![0], high);
  assert.equal(seen[1]![0], low);
  assert.equal(seen[3]![0], high);
});
