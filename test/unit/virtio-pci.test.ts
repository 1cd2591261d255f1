import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RecordingIrqLine } from '../../src/devices/irq.js';
import type { VirtioActivation, VirtioDevice } from '../../src/devices/virtio/device.js';
import { VirtioRng } from '../../src/devices/virtio/rng.js';
import {
  COMMON,
  F_EVENT_IDX,
  F_INDIRECT_DESC,
  F_VERSION_1,
  NO_VECTOR,
  STATUS,
  TestMachine,
  VirtioPciDriver,
} from '../support/virtio-driver.js';
import { featureBit } from '../../src/devices/virtio/device.js';

const bit = featureBit;
const MODERN = bit(F_VERSION_1) | bit(F_EVENT_IDX) | bit(F_INDIRECT_DESC);

function rngMachine(options: { intx?: RecordingIrqLine } = {}) {
  const machine = new TestMachine(options.intx ? { intx: options.intx } : {});
  const rng = new VirtioRng();
  const { transport, slot } = machine.addVirtio(rng);
  const driver = new VirtioPciDriver(machine, slot);
  return { machine, rng, transport, driver };
}

/** A device with a small configuration space and two queues, to exercise the transport alone. */
class ConfigDevice implements VirtioDevice {
  readonly deviceType = 42;
  readonly name = 'test-device';
  readonly deviceFeatures = bit(0) | bit(5);
  readonly queueMaxSizes = [64, 16];
  readonly configSize = 8;
  readonly bytes = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]);
  activation: VirtioActivation | undefined;
  resets = 0;
  readConfig(offset: number, data: Uint8Array): void {
    data.set(this.bytes.subarray(offset, offset + data.length));
  }
  writeConfig(offset: number, data: Uint8Array): void {
    this.bytes.set(data, offset);
  }
  activate(activation: VirtioActivation): void {
    this.activation = activation;
  }
  processQueue(): void {}
  reset(): void {
    this.resets++;
    this.activation = undefined;
  }
}

test('identity: vendor 0x1af4, device 0x1040 + type, revision 1, subsystem IDs, capabilities', () => {
  const { driver, machine } = rngMachine();
  const { vendorId, deviceId } = driver.probe();
  assert.equal(vendorId, 0x1af4);
  assert.equal(deviceId, 0x1044, 'entropy is device type 4');
  assert.equal(machine.conf1Read(0, driver.slot, 0, 0x08, 1), 1, 'revision');
  assert.equal(machine.conf1Read(0, driver.slot, 0, 0x2c, 2), 0x1af4);
  assert.ok(machine.conf1Read(0, driver.slot, 0, 0x2e, 2) >= 0x40);
  assert.deepEqual(driver.common, { offset: 0, length: 0x3c });
  assert.deepEqual(driver.isr, { offset: 0x1000, length: 1 });
  assert.equal(driver.deviceCfg, undefined, 'virtio-rng has no device configuration');
  assert.equal(driver.notify.offset, 0x3000);
  assert.equal(driver.notifyMultiplier, 4);
  assert.equal(driver.msixVectors, 2, 'one config vector and one per queue');
  assert.equal(driver.read(COMMON.NUM_QUEUES, 2), 1);
});

test('feature negotiation: offered features accepted, FEATURES_OK set', () => {
  const { driver } = rngMachine();
  driver.probe();
  const offered = driver.deviceFeatures();
  assert.equal(offered, MODERN, 'rng offers only the transport features');
  assert.equal(driver.negotiate(MODERN), true);
  assert.equal(driver.status, STATUS.ACKNOWLEDGE | STATUS.DRIVER | STATUS.FEATURES_OK);
  // The negotiated set is frozen after FEATURES_OK.
  driver.writeDriverFeatures(bit(F_VERSION_1));
  driver.write(COMMON.DRIVER_FEATURE_SELECT, 4, 0);
  assert.equal(driver.read(COMMON.DRIVER_FEATURE, 4), Number(MODERN & 0xffffffffn));
});

test('FEATURES_OK is refused for unknown features and without VERSION_1', () => {
  const { driver } = rngMachine();
  driver.probe();
  assert.equal(driver.negotiate(MODERN | bit(0), { force: true }), false, 'bit 0 is not offered by rng');
  assert.equal(driver.status & STATUS.FEATURES_OK, 0);
  assert.equal(driver.negotiate(bit(50) | bit(F_VERSION_1), { force: true }), false);
  assert.equal(driver.negotiate(bit(F_EVENT_IDX), { force: true }), false, 'VERSION_1 is required');
  // DRIVER_OK without FEATURES_OK does not stick either.
  driver.status = STATUS.ACKNOWLEDGE | STATUS.DRIVER | STATUS.DRIVER_OK;
  assert.equal(driver.status & STATUS.DRIVER_OK, 0);
  // Skipping ACKNOWLEDGE/DRIVER is refused too.
  driver.reset();
  driver.writeDriverFeatures(bit(F_VERSION_1));
  driver.status = STATUS.FEATURES_OK;
  assert.equal(driver.status & STATUS.FEATURES_OK, 0);
});

test('queue setup: sizes, vectors, enable, notify offsets and exported notify addresses', () => {
  const machine = new TestMachine();
  const device = new ConfigDevice();
  const { transport, slot } = machine.addVirtio(device);
  const driver = new VirtioPciDriver(machine, slot);
  driver.probe();
  assert.equal(driver.negotiate(bit(F_VERSION_1) | bit(5)), true);
  driver.write(COMMON.QUEUE_SELECT, 2, 1);
  assert.equal(driver.read(COMMON.QUEUE_SIZE, 2), 16);
  assert.equal(driver.read(COMMON.QUEUE_NOTIFY_OFF, 2), 1);
  driver.write(COMMON.QUEUE_SELECT, 2, 7);
  assert.equal(driver.read(COMMON.QUEUE_SIZE, 2), 0, 'a queue that does not exist has size 0');
  driver.enableMsix();
  driver.write(COMMON.CONFIG_MSIX_VECTOR, 2, 99);
  assert.equal(driver.read(COMMON.CONFIG_MSIX_VECTOR, 2), NO_VECTOR, 'an impossible vector reads back as NO_VECTOR');
  const q0 = driver.setupQueue(0, { size: 32, vector: 1 });
  const q1 = driver.setupQueue(1, { vector: 2 });
  driver.write(COMMON.QUEUE_SELECT, 2, 0);
  assert.equal(driver.read(COMMON.QUEUE_ENABLE, 2), 1);
  assert.equal(driver.read(COMMON.QUEUE_SIZE, 2), 32);
  // 64-bit address reads in two halves.
  assert.equal(driver.read(COMMON.QUEUE_DESC, 4), q0.desc);
  assert.equal(driver.read(COMMON.QUEUE_DESC + 4, 4), 0);
  // Once enabled, the queue's registers are fixed.
  driver.write(COMMON.QUEUE_SIZE, 2, 8);
  assert.equal(driver.read(COMMON.QUEUE_SIZE, 2), 32);
  assert.equal(transport.queueNotifyAddress(0), q0.notifyAddress);
  assert.equal(transport.queueNotifyAddress(1), q1.notifyAddress);
  assert.equal(q1.notifyAddress - q0.notifyAddress, 4);
  driver.driverOk();
  assert.ok(device.activation !== undefined);
  assert.equal(device.activation.features, bit(F_VERSION_1) | bit(5));
  assert.equal(device.activation.queues[0]!.ready, true);
  // Device configuration through BAR 0.
  assert.deepEqual(driver.deviceCfg, { offset: 0x2000, length: 8 });
  assert.equal(machine.mmioRead(driver.barAddress + 0x2000 + 4, 4), 0x08070605);
  machine.mmioWrite(driver.barAddress + 0x2000, 2, 0xbbaa);
  assert.deepEqual([...device.bytes.subarray(0, 2)], [0xaa, 0xbb]);
  assert.equal(machine.mmioRead(driver.barAddress + 0x2000 + 6, 4), 0, 'an access past the end reads 0');
});

test('writing 0 to device_status resets everything the driver set up', () => {
  const machine = new TestMachine();
  const device = new ConfigDevice();
  const { slot } = machine.addVirtio(device);
  const driver = new VirtioPciDriver(machine, slot);
  driver.bringUp(bit(F_VERSION_1));
  assert.equal(driver.status & STATUS.DRIVER_OK, STATUS.DRIVER_OK);
  const resetsBefore = device.resets;
  driver.status = 0;
  assert.equal(driver.status, 0);
  assert.equal(device.resets, resetsBefore + 1);
  assert.equal(device.activation, undefined);
  driver.write(COMMON.QUEUE_SELECT, 2, 0);
  assert.equal(driver.read(COMMON.QUEUE_ENABLE, 2), 0);
  assert.equal(driver.read(COMMON.QUEUE_SIZE, 2), 64, 'back to the maximum');
  assert.equal(driver.read(COMMON.QUEUE_MSIX_VECTOR, 2), NO_VECTOR);
  assert.equal(driver.read(COMMON.CONFIG_MSIX_VECTOR, 2), NO_VECTOR);
  assert.equal(driver.read(COMMON.QUEUE_DESC, 4), 0);
  driver.write(COMMON.DRIVER_FEATURE_SELECT, 4, 1);
  assert.equal(driver.read(COMMON.DRIVER_FEATURE, 4), 0);
  // And it comes up again.
  driver.bringUp(bit(F_VERSION_1));
  assert.ok(device.activation !== undefined);
});

test('status bits cannot be cleared but by a reset: clearing and setting DRIVER_OK again does not activate twice (§2.1.1)', () => {
  const machine = new TestMachine();
  const device = new ConfigDevice();
  const { slot } = machine.addVirtio(device);
  const driver = new VirtioPciDriver(machine, slot);
  driver.bringUp(bit(F_VERSION_1));
  const first = device.activation;
  assert.ok(first !== undefined);
  const all = STATUS.ACKNOWLEDGE | STATUS.DRIVER | STATUS.FEATURES_OK | STATUS.DRIVER_OK;
  driver.status = STATUS.ACKNOWLEDGE | STATUS.DRIVER | STATUS.FEATURES_OK;
  assert.equal(driver.status, all, 'DRIVER_OK stays set');
  driver.status = all;
  assert.equal(device.activation, first, 'the same activation: activate() was not called again');
});

test('without MSI-X, interrupts go through ISR and INTx; reading ISR clears it', () => {
  const intx = new RecordingIrqLine();
  const { driver, machine } = rngMachine({ intx });
  const [queue] = driver.bringUp(MODERN, { msix: false });
  assert.equal(machine.conf1Read(0, driver.slot, 0, 0x3d, 1), 1, 'interrupt pin INTA');
  const buffer = machine.allocator.alloc(16);
  queue!.publish(queue!.addChain([{ addr: buffer, len: 16, writable: true }]));
  queue!.kick();
  assert.equal(intx.level, true);
  assert.ok((machine.conf1Read(0, driver.slot, 0, 0x06, 2) & 0x08) !== 0, 'PCI status interrupt bit');
  assert.equal(driver.readIsr(), 1, 'queue interrupt');
  assert.equal(intx.level, false);
  assert.equal(driver.readIsr(), 0, 'read-to-clear');
  // Interrupt Disable in the command register masks the line.
  const command = machine.conf1Read(0, driver.slot, 0, 0x04, 2);
  machine.conf1Write(0, driver.slot, 0, 0x04, 2, command | 0x400);
  queue!.setUsedEvent(1); // EVENT_IDX: ask for an interrupt when the second buffer is used
  queue!.publish(queue!.addChain([{ addr: buffer, len: 16, writable: true }]));
  queue!.kick();
  assert.equal(intx.level, false);
  machine.conf1Write(0, driver.slot, 0, 0x04, 2, command);
  assert.equal(intx.level, true);
});

test('with MSI-X, the queue vector fires and no ISR bit is left behind', () => {
  const { driver, machine } = rngMachine();
  const [queue] = driver.bringUp(MODERN);
  const buffer = machine.allocator.alloc(16);
  queue!.publish(queue!.addChain([{ addr: buffer, len: 16, writable: true }]));
  queue!.kick();
  assert.deepEqual(machine.msi.messages, [{ vector: 1, addressLow: 0xfee0_0000, addressHigh: 0, data: 0x41 }]);
  assert.equal(driver.readIsr(), 0);
});

test('queue notifications before DRIVER_OK, for absent queues or without bus mastering are ignored', () => {
  const { driver, machine, rng } = rngMachine();
  driver.probe();
  driver.negotiate(MODERN);
  const queue = driver.setupQueue(0);
  queue.publish(queue.addChain([{ addr: machine.allocator.alloc(8), len: 8, writable: true }]));
  queue.kick();
  machine.mmioWrite(driver.barAddress + 0x3000 + 4 * 9, 2, 9);
  assert.equal(rng.requestsServed, 0);
  driver.driverOk();
  // Bus Master Enable clear: the function may not touch memory.
  const command = machine.conf1Read(0, driver.slot, 0, 0x04, 2);
  machine.conf1Write(0, driver.slot, 0, 0x04, 2, command & ~0x4);
  queue.kick();
  assert.equal(rng.requestsServed, 0);
  machine.conf1Write(0, driver.slot, 0, 0x04, 2, command);
  queue.kick();
  assert.equal(rng.requestsServed, 1);
});
