import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MAX_BYTES_PER_REQUEST, VirtioRng } from '../../src/devices/virtio/rng.js';
import { F_EVENT_IDX, F_INDIRECT_DESC, F_VERSION_1, STATUS, TestMachine, VirtioPciDriver, raceDevice, turnUntil } from '../support/virtio-driver.js';
import { featureBit } from '../../src/devices/virtio/device.js';

const bit = featureBit;
const MODERN = bit(F_VERSION_1) | bit(F_EVENT_IDX) | bit(F_INDIRECT_DESC);

function rng(features = MODERN, machineOptions: ConstructorParameters<typeof TestMachine>[0] = {}, queueSize?: number) {
  const machine = new TestMachine(machineOptions);
  const device = new VirtioRng();
  const { transport, slot } = machine.addVirtio(device);
  const driver = new VirtioPciDriver(machine, slot);
  const [queue] = driver.bringUp(features, queueSize === undefined ? {} : { queueSize });
  return { machine, device, transport, driver, queue: queue! };
}

/** Whether a buffer looks random: not all one value (2^-2048 odds of a false failure for 256 bytes). */
function looksRandom(bytes: Uint8Array): boolean {
  return bytes.length > 0 && new Set(bytes).size > 1;
}

test('random bytes land in the driver buffer and the used length says how many', () => {
  const { machine, queue, device } = rng();
  const buffer = machine.allocator.alloc(256);
  const head = queue.addChain([{ addr: buffer, len: 256, writable: true }]);
  queue.publish(head);
  queue.kick();
  assert.deepEqual(queue.takeUsed(), [{ id: head, len: 256 }]);
  assert.ok(looksRandom(machine.memory.read(buffer, 256)));
  assert.equal(device.bytesServed, 256);
  assert.equal(machine.msi.messages.length, 1);
  assert.ok(machine.guardsIntact());
});

test('several buffers, chained and indirect, in one kick', () => {
  const { machine, queue } = rng();
  const a = machine.allocator.alloc(64);
  const b = machine.allocator.alloc(64);
  const c = machine.allocator.alloc(32);
  const h1 = queue.addChain([
    { addr: a, len: 64, writable: true },
    { addr: b, len: 64, writable: true },
  ]);
  const h2 = queue.addChain([{ addr: c, len: 32, writable: true }], { indirect: true });
  queue.publish(h1);
  queue.publish(h2);
  queue.kick();
  assert.deepEqual(queue.takeUsed(), [
    { id: h1, len: 128 },
    { id: h2, len: 32 },
  ]);
  for (const [addr, len] of [[a, 64], [b, 64], [c, 32]] as const) assert.ok(looksRandom(machine.memory.read(addr, len)));
});

test('a huge request is served only up to the per-request cap', () => {
  const { machine, queue } = rng();
  const size = 2 * MAX_BYTES_PER_REQUEST;
  const buffer = machine.allocator.alloc(size);
  const head = queue.addChain([{ addr: buffer, len: size, writable: true }]);
  queue.publish(head);
  queue.kick();
  assert.deepEqual(queue.takeUsed(), [{ id: head, len: MAX_BYTES_PER_REQUEST }]);
  assert.ok(machine.memory.read(buffer + MAX_BYTES_PER_REQUEST, 64).every((x) => x === 0), 'the rest is untouched');
});

test('a buffer spanning two host regions of contiguous RAM is filled in both', () => {
  const half = 256 * 1024;
  const { machine, queue } = rng(MODERN, { regions: [[0, half], [half, half]] });
  const start = half - 100;
  const head = queue.addChain([{ addr: start, len: 200, writable: true }]);
  queue.publish(head);
  queue.kick();
  assert.deepEqual(queue.takeUsed(), [{ id: head, len: 200 }]);
  assert.ok(looksRandom(machine.regions[0]!.ram.subarray(half - 100)));
  assert.ok(looksRandom(machine.regions[1]!.ram.subarray(0, 100)));
  assert.ok(machine.guardsIntact());
});

test('EVENT_IDX: used_event suppresses interrupts; avail_event is published', () => {
  const { machine, queue } = rng();
  const buffer = machine.allocator.alloc(16);
  queue.setUsedEvent(5); // interrupt only once used idx passes 5
  for (let i = 0; i < 3; i++) {
    queue.publish(queue.addChain([{ addr: buffer, len: 16, writable: true }]));
    queue.kick();
  }
  assert.equal(machine.msi.messages.length, 0);
  assert.equal(queue.availEvent(), 3, 'the device asks to be kicked at the next index');
  for (let i = 0; i < 3; i++) {
    queue.publish(queue.addChain([{ addr: buffer, len: 16, writable: true }]));
    queue.kick();
  }
  assert.equal(machine.msi.messages.length, 1, 'exactly when used idx went from 5 to 6');
  assert.equal(queue.takeUsed().length, 6);
});

test('without EVENT_IDX: VIRTQ_AVAIL_F_NO_INTERRUPT suppresses interrupts', () => {
  const { machine, queue } = rng(bit(F_VERSION_1));
  const buffer = machine.allocator.alloc(16);
  queue.setAvailFlags(1);
  queue.publish(queue.addChain([{ addr: buffer, len: 16, writable: true }]));
  queue.kick();
  assert.equal(machine.msi.messages.length, 0);
  queue.setAvailFlags(0);
  queue.publish(queue.addChain([{ addr: buffer, len: 16, writable: true }]));
  queue.kick();
  assert.equal(machine.msi.messages.length, 1);
  assert.equal(queue.usedFlags(), 0, 'notifications re-enabled after processing');
});

test('reset stops the device; after a new bring-up it serves again', () => {
  const { machine, queue, driver, device } = rng();
  const buffer = machine.allocator.alloc(16);
  driver.reset();
  queue.publish(queue.addChain([{ addr: buffer, len: 16, writable: true }]));
  queue.kick();
  assert.equal(device.requestsServed, 0);
  const [again] = driver.bringUp(MODERN);
  again!.publish(again!.addChain([{ addr: buffer, len: 16, writable: true }]));
  again!.kick();
  assert.equal(device.requestsServed, 1);
  assert.equal(driver.status & STATUS.NEEDS_RESET, 0);
});

test('a driver that keeps requests coming cannot keep the device (and the VMM event loop) busy: one ring per pass', async () => {
  const SIZE = 8;
  const TOTAL = 10 * SIZE;
  const { machine, queue, transport, device } = rng(MODERN, {}, SIZE);
  const buffer = machine.allocator.alloc(16);
  const head = queue.addChain([{ addr: buffer, len: 16, writable: true }]);
  const race = raceDevice(transport.queues[0]!, () => queue.publish(head), TOTAL);
  queue.publish(head);
  queue.kick();
  assert.equal(race.taken(), SIZE, 'the kick took one ring of requests and returned');
  const turns = await turnUntil(() => race.taken() === TOTAL + 1);
  assert.equal(race.taken(), TOTAL + 1, 'the rest was served on later turns, without kicks');
  assert.ok(turns >= TOTAL / SIZE, `${turns} turns`);
  assert.equal(queue.takeUsed().length, TOTAL + 1);
  assert.equal(device.requestsServed, TOTAL + 1);
  assert.equal(transport.deviceStatus & STATUS.NEEDS_RESET, 0);
  // Notifications are back on: the next request needs, and gets, its kick.
  queue.publish(head);
  queue.kick();
  assert.deepEqual(queue.takeUsed(), [{ id: head, len: 16 }]);
});
