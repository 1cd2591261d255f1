/**
 * Hostile-guest cases: each malformed queue or register setting must end in DEVICE_NEEDS_RESET
 * (with a configuration change interrupt once DRIVER_OK), never in an exception, never in a
 * write outside guest RAM, and the device must work again after a reset.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VirtioRng } from '../../src/devices/virtio/rng.js';
import {
  COMMON,
  DESC_F,
  F_EVENT_IDX,
  F_INDIRECT_DESC,
  F_VERSION_1,
  STATUS,
  TestMachine,
  VirtioPciDriver,
  turnUntil,
  type DriverQueue,
} from '../support/virtio-driver.js';
import { featureBit } from '../../src/devices/virtio/device.js';

const bit = featureBit;
const MODERN = bit(F_VERSION_1) | bit(F_EVENT_IDX) | bit(F_INDIRECT_DESC);
const RAM_END = 1 << 20;
const QUEUE_SIZE = 8;

function hostile(features = MODERN) {
  const machine = new TestMachine();
  const device = new VirtioRng();
  const errors: string[] = [];
  const { transport, slot } = machine.addVirtio(device, { onError: (r) => errors.push(r) });
  const driver = new VirtioPciDriver(machine, slot);
  const [queue] = driver.bringUp(features, { queueSize: QUEUE_SIZE });
  const buffer = machine.allocator.alloc(4096);
  return { machine, device, transport, driver, queue: queue!, buffer, errors };
}

/** The device is in DEVICE_NEEDS_RESET, told the driver with the config vector (0), and nothing escaped RAM. */
function assertNeedsReset(h: ReturnType<typeof hostile>, reason: RegExp): void {
  assert.equal(h.driver.status & STATUS.NEEDS_RESET, STATUS.NEEDS_RESET, 'DEVICE_NEEDS_RESET');
  assert.match(h.transport.lastError ?? '', reason);
  assert.equal(h.errors.length, 1);
  assert.ok(h.machine.msi.messages.some((m) => m.vector === 0), 'configuration change interrupt');
  assert.ok(h.machine.guardsIntact(), 'guard bytes intact');
  // Further kicks are ignored, then a reset brings the device back.
  h.queue.kick();
  const [queue] = h.driver.bringUp(MODERN, { queueSize: QUEUE_SIZE });
  const head = queue!.addChain([{ addr: h.buffer, len: 16, writable: true }]);
  queue!.publish(head);
  queue!.kick();
  assert.deepEqual(queue!.takeUsed(), [{ id: head, len: 16 }], 'works again after reset');
}

function kickRaw(queue: DriverQueue, head: number): void {
  queue.publish(head);
  queue.kick();
}

test('a descriptor loop', () => {
  const h = hostile();
  h.queue.writeDescriptor(0, h.buffer, 16, DESC_F.WRITE | DESC_F.NEXT, 1);
  h.queue.writeDescriptor(1, h.buffer, 16, DESC_F.WRITE | DESC_F.NEXT, 0);
  assert.doesNotThrow(() => kickRaw(h.queue, 0));
  assertNeedsReset(h, /longer than the queue size/);
});

test('a self-loop', () => {
  const h = hostile();
  h.queue.writeDescriptor(3, h.buffer, 16, DESC_F.WRITE | DESC_F.NEXT, 3);
  kickRaw(h.queue, 3);
  assertNeedsReset(h, /longer than the queue size/);
});

test('an indirect chain longer than the queue', () => {
  const h = hostile();
  const entries = 2 * QUEUE_SIZE;
  const table = h.machine.allocator.alloc(16 * entries, 16);
  for (let i = 0; i < entries; i++) h.queue.writeDescriptor(i, h.buffer, 8, DESC_F.WRITE | (i + 1 < entries ? DESC_F.NEXT : 0), i + 1, table);
  h.queue.writeDescriptor(0, table, 16 * entries, DESC_F.INDIRECT, 0);
  kickRaw(h.queue, 0);
  assertNeedsReset(h, /longer than the queue size/);
});

test('an indirect table inside an indirect table', () => {
  const h = hostile();
  const inner = h.machine.allocator.alloc(16, 16);
  const outer = h.machine.allocator.alloc(16, 16);
  h.queue.writeDescriptor(0, h.buffer, 16, DESC_F.WRITE, 0, inner);
  h.queue.writeDescriptor(0, inner, 16, DESC_F.INDIRECT, 0, outer);
  h.queue.writeDescriptor(0, outer, 16, DESC_F.INDIRECT, 0);
  kickRaw(h.queue, 0);
  assertNeedsReset(h, /nests an indirect table/);
});

test('INDIRECT together with NEXT, a bad indirect length, indirect without the feature', () => {
  {
    const h = hostile();
    const table = h.machine.allocator.alloc(16, 16);
    h.queue.writeDescriptor(0, h.buffer, 16, DESC_F.WRITE, 0, table);
    h.queue.writeDescriptor(0, table, 16, DESC_F.INDIRECT | DESC_F.NEXT, 1);
    kickRaw(h.queue, 0);
    assertNeedsReset(h, /both INDIRECT and NEXT/);
  }
  {
    const h = hostile();
    const table = h.machine.allocator.alloc(32, 16);
    h.queue.writeDescriptor(0, table, 20, DESC_F.INDIRECT, 0);
    kickRaw(h.queue, 0);
    assertNeedsReset(h, /not a non-zero multiple of 16/);
  }
  {
    const h = hostile(bit(F_VERSION_1));
    const table = h.machine.allocator.alloc(16, 16);
    h.queue.writeDescriptor(0, h.buffer, 16, DESC_F.WRITE, 0, table);
    h.queue.writeDescriptor(0, table, 16, DESC_F.INDIRECT, 0);
    kickRaw(h.queue, 0);
    assertNeedsReset(h, /not negotiated/);
  }
});

test('a device-readable buffer after a device-writable one', () => {
  const h = hostile();
  h.queue.writeDescriptor(0, h.buffer, 16, DESC_F.WRITE | DESC_F.NEXT, 1);
  h.queue.writeDescriptor(1, h.buffer + 16, 16, 0, 0);
  kickRaw(h.queue, 0);
  assertNeedsReset(h, /device-readable buffer after a device-writable/);
});

test('a device-readable buffer where the entropy device needs writable ones', () => {
  const h = hostile();
  h.machine.memory.fill(h.buffer, 16, 0x77);
  kickRaw(h.queue, h.queue.addChain([{ addr: h.buffer, len: 16, writable: false }]));
  assert.ok(h.machine.memory.read(h.buffer, 16).every((b) => b === 0x77), 'a readable buffer is never written');
  assertNeedsReset(h, /device-readable buffer; entropy requests/);
});

test('buffers outside guest memory', () => {
  for (const [addr, len] of [
    [RAM_END, 16], // just past RAM
    [RAM_END - 8, 16], // straddling the end of RAM
    [0x4000_0000, 1], // far away
    [2 ** 60, 16], // beyond 2^53
    [RAM_END - 16, 0xffff_ffff], // a length running off the end
  ] as const) {
    const h = hostile();
    h.queue.writeDescriptor(0, addr, len, DESC_F.WRITE, 0);
    assert.doesNotThrow(() => kickRaw(h.queue, 0));
    assertNeedsReset(h, /is not guest RAM/);
  }
});

test('an indirect table outside guest memory', () => {
  const h = hostile();
  h.queue.writeDescriptor(0, RAM_END - 16, 64, DESC_F.INDIRECT, 0);
  kickRaw(h.queue, 0);
  assertNeedsReset(h, /indirect table .* is not inside one region/);
});

test('head and next indices outside the table; the available index racing ahead', () => {
  {
    const h = hostile();
    kickRaw(h.queue, 200);
    assertNeedsReset(h, /outside the 8-entry table/);
  }
  {
    const h = hostile();
    h.queue.writeDescriptor(0, h.buffer, 16, DESC_F.WRITE | DESC_F.NEXT, 0xffff);
    kickRaw(h.queue, 0);
    assertNeedsReset(h, /names descriptor 65535/);
  }
  {
    const h = hostile();
    h.queue.setAvailIdx(QUEUE_SIZE + 1);
    h.queue.kick();
    assertNeedsReset(h, /more than the queue size/);
  }
});

test('absurd queue sizes and ring addresses are refused at DRIVER_OK', () => {
  const cases: [string, (d: VirtioPciDriver) => void, RegExp][] = [
    ['size 0', (d) => d.write(COMMON.QUEUE_SIZE, 2, 0), /not a power of two/],
    ['size 3', (d) => d.write(COMMON.QUEUE_SIZE, 2, 3), /not a power of two/],
    ['size 0xffff', (d) => d.write(COMMON.QUEUE_SIZE, 2, 0xffff), /not a power of two/],
    ['size above the maximum', (d) => d.write(COMMON.QUEUE_SIZE, 2, 512), /not a power of two between 1 and 256/],
    ['descriptor table outside RAM', (d) => d.write64(COMMON.QUEUE_DESC, RAM_END - 16), /descriptor table/],
    ['used ring beyond 2^53', (d) => d.write64(COMMON.QUEUE_DEVICE, 2 ** 62), /used ring/],
    ['misaligned descriptor table', (d) => d.write64(COMMON.QUEUE_DESC, 0x2008), /not aligned/],
  ];
  for (const [name, mutate, reason] of cases) {
    const machine = new TestMachine();
    const errors: string[] = [];
    const { transport, slot } = machine.addVirtio(new VirtioRng(), { onError: (r) => errors.push(r) });
    const driver = new VirtioPciDriver(machine, slot);
    driver.probe();
    assert.ok(driver.negotiate(MODERN));
    driver.enableMsix();
    driver.write(COMMON.CONFIG_MSIX_VECTOR, 2, 0);
    driver.write(COMMON.QUEUE_SELECT, 2, 0);
    const a = machine.allocator;
    driver.write64(COMMON.QUEUE_DESC, a.alloc(16 * 256, 16));
    driver.write64(COMMON.QUEUE_DRIVER, a.alloc(6 + 2 * 256, 2));
    driver.write64(COMMON.QUEUE_DEVICE, a.alloc(6 + 8 * 256, 4));
    mutate(driver);
    driver.write(COMMON.QUEUE_ENABLE, 2, 1);
    assert.doesNotThrow(() => driver.driverOk(), name);
    assert.equal(driver.status & STATUS.NEEDS_RESET, STATUS.NEEDS_RESET, name);
    assert.match(transport.lastError ?? '', reason, name);
    assert.ok(machine.guardsIntact(), name);
  }
});

test('garbage register writes do not throw', () => {
  const h = hostile();
  const bar = h.driver.barAddress;
  for (let offset = 0; offset < 0x8000; offset += 1) {
    for (const width of [1, 2, 4, 8] as const) {
      h.machine.mmioWrite(bar + offset, width, 0xffff_ffff);
      h.machine.mmioRead(bar + offset, width);
    }
    if (offset === 0x100) offset = 0xff0; // skip the empty middle of each page quickly
    else if (offset === 0x1100) offset = 0x1ff0;
    else if (offset === 0x2100) offset = 0x2ff0;
    else if (offset === 0x3100) offset = 0x3ff0;
    else if (offset === 0x4100) offset = 0x4ff0;
    else if (offset === 0x5100) offset = 0x7ff0;
  }
  for (let reg = 0; reg < 256; reg++) h.machine.conf1Write(0, h.driver.slot, 0, reg, 1, 0xff);
  assert.ok(h.machine.guardsIntact());
});

test('a used ring laid over the available index cannot hold the VMM: each pass is bounded, the event loop runs, reset ends it', async () => {
  // Without EVENT_IDX the device writes used.flags to ask for kicks or not. Here used.flags is the
  // available index: disabling notifications makes a buffer "available", enabling them takes it
  // away again, so "enable; more arrived? go round again" would never end on its own.
  const machine = new TestMachine();
  const device = new VirtioRng();
  const errors: string[] = [];
  const { transport, slot } = machine.addVirtio(device, { onError: (r) => errors.push(r) });
  const driver = new VirtioPciDriver(machine, slot);
  driver.probe();
  assert.ok(driver.negotiate(bit(F_VERSION_1)));
  driver.enableMsix();
  driver.write(COMMON.CONFIG_MSIX_VECTOR, 2, 0);
  const a = machine.allocator;
  const desc = a.alloc(16 * QUEUE_SIZE, 16);
  const avail = a.alloc(6 + 2 * QUEUE_SIZE + 16, 4) + 2;
  const queue = driver.setupQueue(0, { size: QUEUE_SIZE, vector: 1, rings: { desc, avail, used: avail + 2 } });
  driver.driverOk();
  const buffer = a.alloc(16);
  queue.writeDescriptor(0, buffer, 16, DESC_F.WRITE, 0);
  queue.publish(0);
  const served = (): number => device.requestsServed;
  queue.kick(); // returns: the pass is bounded
  assert.equal(served(), 1);
  let timerFired = false;
  setTimeout(() => (timerFired = true), 1);
  await turnUntil(() => timerFired);
  assert.ok(timerFired, 'timers still run while the guest keeps the queue looking busy');
  assert.ok(transport.notifications === 1, 'no kick needed: the queue asked for its own passes');
  // A reset ends the passes; the device then works normally.
  driver.reset();
  const before = served();
  await turnUntil(() => false, 20);
  assert.equal(served(), before);
  const [fresh] = driver.bringUp(MODERN, { queueSize: QUEUE_SIZE });
  const head = fresh!.addChain([{ addr: buffer, len: 16, writable: true }]);
  fresh!.publish(head);
  fresh!.kick();
  assert.deepEqual(fresh!.takeUsed(), [{ id: head, len: 16 }]);
  assert.ok(machine.guardsIntact());
  assert.deepEqual(errors, []);
});
