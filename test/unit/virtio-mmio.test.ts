/**
 * The virtio-mmio transport driven by a guest-side driver that works as Linux's virtio_mmio.c
 * does: 32-bit register accesses through the MMIO Bus, two 32-bit halves for 64-bit ring
 * addresses, queue kicks as a 32-bit write of the queue index to QueueNotify, and InterruptStatus
 * read then acknowledged through InterruptACK. Rings and buffers live in the test machine's
 * guarded guest RAM (test/support/virtio-driver.ts), served by virtio-rng and virtio-blk.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { RecordingIrqLine, SharedIrqLines } from '../../src/devices/irq.js';
import { VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN, VirtioBlock } from '../../src/devices/virtio/blk.js';
import type { VirtioActivation, VirtioDevice } from '../../src/devices/virtio/device.js';
import { VIRTIO_MMIO_SIZE, VirtioMmioDevice } from '../../src/devices/virtio/mmio-transport.js';
import { VirtioRng } from '../../src/devices/virtio/rng.js';
import { write } from '../../src/kvm/libc.js';
import type { IoeventfdSpec } from '../../src/kvm/vm.js';
import { EventFdPoller } from '../../src/vmm/eventfd-poller.js';
import { VirtioMmioDevices } from '../../src/vmm/virtio-mmio-wiring.js';
import { DriverQueue, F_EVENT_IDX, F_INDIRECT_DESC, F_VERSION_1, STATUS, TestMachine, type DriverBuffer } from '../support/virtio-driver.js';
import { featureBit } from '../../src/devices/virtio/device.js';

// The register layout spelled out here, independently of the transport (virtio 1.2 §4.2.2).
const REG = {
  MAGIC_VALUE: 0x000,
  VERSION: 0x004,
  DEVICE_ID: 0x008,
  VENDOR_ID: 0x00c,
  DEVICE_FEATURES: 0x010,
  DEVICE_FEATURES_SEL: 0x014,
  DRIVER_FEATURES: 0x020,
  DRIVER_FEATURES_SEL: 0x024,
  QUEUE_SEL: 0x030,
  QUEUE_NUM_MAX: 0x034,
  QUEUE_NUM: 0x038,
  QUEUE_READY: 0x044,
  QUEUE_NOTIFY: 0x050,
  INTERRUPT_STATUS: 0x060,
  INTERRUPT_ACK: 0x064,
  STATUS: 0x070,
  QUEUE_DESC_LOW: 0x080,
  QUEUE_DESC_HIGH: 0x084,
  QUEUE_DRIVER_LOW: 0x090,
  QUEUE_DRIVER_HIGH: 0x094,
  QUEUE_DEVICE_LOW: 0x0a0,
  QUEUE_DEVICE_HIGH: 0x0a4,
  SHM_SEL: 0x0ac,
  SHM_LEN_LOW: 0x0b0,
  SHM_LEN_HIGH: 0x0b4,
  SHM_BASE_LOW: 0x0b8,
  SHM_BASE_HIGH: 0x0bc,
  QUEUE_RESET: 0x0c0,
  CONFIG_GENERATION: 0x0fc,
  CONFIG: 0x100,
} as const;
const INT_VRING = 1;
const INT_CONFIG = 2;

const bit = featureBit;
const MODERN = bit(F_VERSION_1) | bit(F_EVENT_IDX) | bit(F_INDIRECT_DESC);
const FOUR_GIB = 2 ** 32;
/** Where the tests put the window: inside the PCI hole, clear of the test machine's ECAM. */
const BASE = 0xd000_0000;
const SECTOR = 512;

/** A queue kicked the virtio-mmio way: a 32-bit write of its index to QueueNotify (Linux's vm_notify). */
class MmioDriverQueue extends DriverQueue {
  override kick(): void {
    this.machine.mmioWrite(this.notifyAddress, 4, this.index);
  }
}

/** The driver side of one virtio-mmio device, as Linux's virtio_mmio.c drives it. */
class MmioDriver {
  readonly queues: MmioDriverQueue[] = [];
  negotiated = 0n;

  constructor(
    readonly machine: TestMachine,
    readonly base: number,
  ) {}

  read(reg: number, width: 1 | 2 | 4 | 8 = 4): number {
    return this.machine.mmioRead(this.base + reg, width);
  }
  write(reg: number, value: number, width: 1 | 2 | 4 | 8 = 4): void {
    this.machine.mmioWrite(this.base + reg, width, value);
  }
  /** 64-bit ring addresses as two 32-bit writes, low half first (vm_setup_vq). */
  write64(lowReg: number, value: number): void {
    this.write(lowReg, value % FOUR_GIB);
    this.write(lowReg + 4, Math.floor(value / FOUR_GIB));
  }

  get status(): number {
    return this.read(REG.STATUS);
  }
  set status(value: number) {
    this.write(REG.STATUS, value);
  }

  reset(): void {
    this.status = 0;
    if (this.status !== 0) throw new Error('device did not reset');
    this.queues.length = 0;
  }

  deviceFeatures(): bigint {
    this.write(REG.DEVICE_FEATURES_SEL, 0);
    const low = this.read(REG.DEVICE_FEATURES);
    this.write(REG.DEVICE_FEATURES_SEL, 1);
    const high = this.read(REG.DEVICE_FEATURES);
    return (BigInt(high) << 32n) | BigInt(low);
  }

  writeDriverFeatures(features: bigint): void {
    this.write(REG.DRIVER_FEATURES_SEL, 0);
    this.write(REG.DRIVER_FEATURES, Number(features & 0xffffffffn));
    this.write(REG.DRIVER_FEATURES_SEL, 1);
    this.write(REG.DRIVER_FEATURES, Number((features >> 32n) & 0xffffffffn));
  }

  /** Check the identity registers as vm_probe does (§4.2.3.1.1). */
  probe(): { deviceId: number; vendorId: number } {
    if (this.read(REG.MAGIC_VALUE) !== 0x74726976) throw new Error('bad magic');
    if (this.read(REG.VERSION) !== 2) throw new Error('not a modern virtio-mmio device');
    const deviceId = this.read(REG.DEVICE_ID);
    if (deviceId === 0) throw new Error('placeholder device');
    return { deviceId, vendorId: this.read(REG.VENDOR_ID) };
  }

  /** §3.1.1 steps 1–6; returns whether FEATURES_OK stuck. */
  negotiate(wanted: bigint, options: { force?: boolean } = {}): boolean {
    this.reset();
    this.status = STATUS.ACKNOWLEDGE;
    this.status = STATUS.ACKNOWLEDGE | STATUS.DRIVER;
    const features = options.force ? wanted : this.deviceFeatures() & wanted;
    this.writeDriverFeatures(features);
    this.status = STATUS.ACKNOWLEDGE | STATUS.DRIVER | STATUS.FEATURES_OK;
    const ok = (this.status & STATUS.FEATURES_OK) !== 0;
    this.negotiated = ok ? features : 0n;
    return ok;
  }

  /** §4.2.3.2: select, check not in use, read the maximum, size, addresses, QueueReady = 1. */
  setupQueue(index: number, options: { size?: number } = {}): MmioDriverQueue {
    this.write(REG.QUEUE_SEL, index);
    if (this.read(REG.QUEUE_READY) !== 0) throw new Error(`queue ${index} already in use`);
    const max = this.read(REG.QUEUE_NUM_MAX);
    if (max === 0) throw new Error(`queue ${index} does not exist`);
    const size = options.size ?? max;
    this.write(REG.QUEUE_NUM, size);
    const a = this.machine.allocator;
    const desc = a.alloc(16 * size, 16);
    const avail = a.alloc(6 + 2 * size, 2);
    const used = a.alloc(6 + 8 * size, 4);
    this.write64(REG.QUEUE_DESC_LOW, desc);
    this.write64(REG.QUEUE_DRIVER_LOW, avail);
    this.write64(REG.QUEUE_DEVICE_LOW, used);
    this.write(REG.QUEUE_READY, 1);
    const queue = new MmioDriverQueue(this.machine, index, size, desc, avail, used, this.base + REG.QUEUE_NOTIFY, (this.negotiated & bit(F_EVENT_IDX)) !== 0n);
    this.queues[index] = queue;
    return queue;
  }

  driverOk(): void {
    this.status = this.status | STATUS.DRIVER_OK;
  }

  bringUp(wanted: bigint, queueCount = 1): MmioDriverQueue[] {
    this.probe();
    if (!this.negotiate(wanted)) throw new Error('features refused');
    for (let i = 0; i < queueCount; i++) this.setupQueue(i);
    this.driverOk();
    return this.queues;
  }

  get interruptStatus(): number {
    return this.read(REG.INTERRUPT_STATUS);
  }
  /** vm_interrupt: read InterruptStatus, acknowledge what was read. */
  ack(bits = this.interruptStatus): number {
    this.write(REG.INTERRUPT_ACK, bits);
    return bits;
  }
}

interface Rig<D extends VirtioDevice> {
  machine: TestMachine;
  device: D;
  transport: VirtioMmioDevice;
  driver: MmioDriver;
  irq: RecordingIrqLine;
  errors: string[];
}

function rig<D extends VirtioDevice>(device: D, regions?: [number, number][]): Rig<D> {
  const machine = new TestMachine(regions ? { regions } : {});
  const irq = new RecordingIrqLine();
  const errors: string[] = [];
  const transport = new VirtioMmioDevice(device, { memory: machine.memory, irq, onError: (reason) => errors.push(reason) });
  machine.mmio.insert(BASE, VIRTIO_MMIO_SIZE, transport, device.name);
  return { machine, device, transport, driver: new MmioDriver(machine, BASE), irq, errors };
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
  activations = 0;
  resets = 0;
  processed: number[] = [];
  readConfig(offset: number, data: Uint8Array): void {
    data.set(this.bytes.subarray(offset, offset + data.length));
  }
  writeConfig(offset: number, data: Uint8Array): void {
    this.bytes.set(data, offset);
  }
  activate(activation: VirtioActivation): void {
    this.activation = activation;
    this.activations++;
  }
  processQueue(index: number): void {
    this.processed.push(index);
  }
  reset(): void {
    this.resets++;
    this.activation = undefined;
  }
}

/** A device model with bugs: every call the guest can reach throws. */
class ThrowingDevice extends ConfigDevice {
  override readConfig(): void {
    throw new Error('readConfig bug');
  }
  override writeConfig(): void {
    throw new TypeError('writeConfig bug');
  }
  override processQueue(): void {
    throw new Error('processQueue bug');
  }
}

const scratch = mkdtempSync(join(tmpdir(), 'tsvmm-mmio-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

/** A temporary disk image of `sectors` sectors whose sector i is filled with byte (i + 1) & 0xff. */
function image(sectors: number): string {
  const path = join(scratch, `disk-${sectors}-${Math.random().toString(36).slice(2)}.img`);
  const data = new Uint8Array(sectors * SECTOR);
  for (let i = 0; i < data.length; i++) data[i] = (Math.floor(i / SECTOR) + 1) & 0xff;
  writeFileSync(path, data);
  return path;
}

/** Turn the event loop until `predicate` holds (file I/O completes on libuv's threadpool). */
async function until(predicate: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

const writable = (addr: number, len: number): DriverBuffer => ({ addr, len, writable: true });

test('identity: magic "virt", version 2, device and vendor IDs, queue sizes, absent features read as specified', async () => {
  const { driver } = rig(new VirtioRng());
  assert.deepEqual(driver.probe(), { deviceId: 4, vendorId: 0x554d4551 });
  assert.equal(driver.read(REG.MAGIC_VALUE), 0x74726976);
  assert.equal(driver.read(REG.VERSION), 2);
  driver.write(REG.QUEUE_SEL, 0);
  assert.equal(driver.read(REG.QUEUE_NUM_MAX), 256);
  assert.equal(driver.read(REG.QUEUE_READY), 0);
  driver.write(REG.QUEUE_SEL, 1);
  assert.equal(driver.read(REG.QUEUE_NUM_MAX), 0, 'a queue that does not exist is not available');
  driver.write(REG.QUEUE_SEL, 0xffffffff);
  assert.equal(driver.read(REG.QUEUE_NUM_MAX), 0);
  // No shared memory region: length -1, base all-ones (§4.2.2).
  driver.write(REG.SHM_SEL, 0);
  for (const reg of [REG.SHM_LEN_LOW, REG.SHM_LEN_HIGH, REG.SHM_BASE_LOW, REG.SHM_BASE_HIGH]) assert.equal(driver.read(reg), 0xffffffff);
  assert.equal(driver.read(REG.QUEUE_RESET), 0, 'VIRTIO_F_RING_RESET is not offered');
  assert.equal(driver.read(REG.CONFIG_GENERATION), 0);
  assert.equal(driver.read(REG.INTERRUPT_STATUS), 0);
  assert.equal(driver.status, 0);
  // Write-only registers read 0; read-only ones ignore writes.
  driver.write(REG.QUEUE_SEL, 0);
  driver.write(REG.QUEUE_NUM, 64);
  assert.equal(driver.read(REG.QUEUE_NUM), 0);
  assert.equal(driver.read(REG.QUEUE_SEL), 0);
  driver.write(REG.MAGIC_VALUE, 0);
  driver.write(REG.QUEUE_NUM_MAX, 4);
  assert.equal(driver.read(REG.MAGIC_VALUE), 0x74726976);
  assert.equal(driver.read(REG.QUEUE_NUM_MAX), 256);
  // Nothing in the rng's (empty) configuration space.
  assert.equal(driver.read(REG.CONFIG), 0);

  const blk = new VirtioBlock({ path: image(8) });
  try {
    assert.equal(rig(blk).driver.probe().deviceId, 2);
  } finally {
    await blk.close();
  }
});

test('constructor refuses devices the window cannot hold', () => {
  const machine = new TestMachine();
  const options = { memory: machine.memory, irq: new RecordingIrqLine() };
  const big = Object.assign(new ConfigDevice(), { configSize: VIRTIO_MMIO_SIZE - 0x100 + 1 });
  assert.throws(() => new VirtioMmioDevice(big, options), RangeError);
  const none = Object.assign(new ConfigDevice(), { queueMaxSizes: [] });
  assert.throws(() => new VirtioMmioDevice(none, options), RangeError);
  const fits = Object.assign(new ConfigDevice(), { configSize: VIRTIO_MMIO_SIZE - 0x100 });
  assert.doesNotThrow(() => new VirtioMmioDevice(fits, options));
});

test('feature negotiation: offered words, FEATURES_OK accepted, then frozen', () => {
  const { driver, transport } = rig(new ConfigDevice());
  driver.probe();
  driver.write(REG.DEVICE_FEATURES_SEL, 0);
  assert.equal(driver.read(REG.DEVICE_FEATURES), Number((bit(0) | bit(5) | bit(F_EVENT_IDX) | bit(F_INDIRECT_DESC)) & 0xffffffffn));
  driver.write(REG.DEVICE_FEATURES_SEL, 1);
  assert.equal(driver.read(REG.DEVICE_FEATURES), 1, 'VERSION_1 is bit 32');
  driver.write(REG.DEVICE_FEATURES_SEL, 2);
  assert.equal(driver.read(REG.DEVICE_FEATURES), 0, 'no feature above bit 63');
  assert.equal(driver.deviceFeatures(), MODERN | bit(0) | bit(5));
  assert.equal(driver.negotiate(bit(F_VERSION_1) | bit(5)), true);
  assert.equal(driver.status, STATUS.ACKNOWLEDGE | STATUS.DRIVER | STATUS.FEATURES_OK);
  assert.equal(transport.negotiatedFeatures, bit(F_VERSION_1) | bit(5));
  driver.writeDriverFeatures(bit(F_VERSION_1) | bit(0));
  assert.equal(transport.negotiatedFeatures, bit(F_VERSION_1) | bit(5), 'the negotiated set is frozen after FEATURES_OK');
});

test('FEATURES_OK is refused without VERSION_1, with unknown features, or without ACKNOWLEDGE and DRIVER', () => {
  const { driver, transport } = rig(new VirtioRng());
  driver.probe();
  assert.equal(driver.negotiate(bit(F_EVENT_IDX), { force: true }), false, 'VERSION_1 is required');
  assert.equal(driver.status & STATUS.FEATURES_OK, 0);
  assert.equal(driver.negotiate(MODERN | bit(0), { force: true }), false, 'bit 0 is not offered by rng');
  assert.equal(driver.negotiate(bit(F_VERSION_1) | bit(50), { force: true }), false);
  // DRIVER_OK without FEATURES_OK does not stick, and nothing is activated.
  driver.status = STATUS.ACKNOWLEDGE | STATUS.DRIVER | STATUS.DRIVER_OK;
  assert.equal(driver.status & STATUS.DRIVER_OK, 0);
  // Skipping ACKNOWLEDGE/DRIVER is refused too.
  driver.reset();
  driver.writeDriverFeatures(bit(F_VERSION_1));
  driver.status = STATUS.FEATURES_OK;
  assert.equal(driver.status & STATUS.FEATURES_OK, 0);
  // Feature words past the second are ignored, not folded in.
  driver.reset();
  driver.write(REG.DRIVER_FEATURES_SEL, 2);
  driver.write(REG.DRIVER_FEATURES, 0xffffffff);
  assert.equal(transport.negotiatedFeatures, 0n);
  assert.equal(driver.negotiate(MODERN), true);
});

test('rng served end to end: used buffer, InterruptStatus bit 0, line asserted until the ACK', () => {
  const { machine, driver, device, irq, transport } = rig(new VirtioRng());
  const [queue] = driver.bringUp(MODERN);
  assert.equal(driver.status, STATUS.ACKNOWLEDGE | STATUS.DRIVER | STATUS.FEATURES_OK | STATUS.DRIVER_OK);
  assert.equal(driver.read(REG.QUEUE_READY), 1);
  const q = transport.queues[0]!;
  assert.deepEqual([q.size, q.descTableAddress, q.availRingAddress, q.usedRingAddress], [256, queue!.desc, queue!.avail, queue!.used]);
  assert.equal(irq.level, false);

  const buffer = machine.allocator.alloc(256);
  const head = queue!.addChain([writable(buffer, 256)]);
  queue!.publish(head);
  queue!.kick();
  assert.deepEqual(queue!.takeUsed(), [{ id: head, len: 256 }]);
  assert.ok(new Set(machine.memory.read(buffer, 256)).size > 1, 'random bytes landed');
  assert.equal(device.requestsServed, 1);
  assert.equal(driver.interruptStatus, INT_VRING);
  assert.equal(irq.level, true);
  assert.equal(irq.raises, 1);

  // Another used buffer before the ACK keeps the line up without a new edge.
  queue!.setUsedEvent(1);
  queue!.publish(queue!.addChain([writable(buffer, 16)]));
  queue!.kick();
  assert.equal(queue!.takeUsed().length, 1);
  assert.equal(irq.level, true);
  assert.equal(irq.raises, 1);

  assert.equal(driver.ack(), INT_VRING);
  assert.equal(driver.interruptStatus, 0);
  assert.equal(irq.level, false);
  assert.ok(machine.guardsIntact());
});

test('the line stays up until every pending cause is acknowledged', () => {
  const { machine, driver, device, irq } = rig(new ConfigDevice());
  driver.bringUp(bit(F_VERSION_1), 2);
  device.activation!.interrupt.signalQueue(1);
  device.activation!.interrupt.signalConfigChange();
  assert.equal(driver.interruptStatus, INT_VRING | INT_CONFIG);
  driver.ack(INT_VRING);
  assert.equal(driver.interruptStatus, INT_CONFIG);
  assert.equal(irq.level, true);
  driver.ack(0xfffffffc); // undefined bits only: nothing changes
  assert.equal(driver.interruptStatus, INT_CONFIG);
  assert.equal(irq.level, true);
  driver.ack(INT_CONFIG);
  assert.equal(irq.level, false);
  assert.equal(irq.raises, 1);
  assert.ok(machine.guardsIntact());
});

test('configuration space: bytes, halves and words through 0x100; outside configSize reads 0 and writes nothing', () => {
  const { machine, driver, device, transport } = rig(new ConfigDevice());
  driver.probe();
  assert.equal(driver.read(REG.CONFIG, 4), 0x04030201);
  assert.equal(driver.read(REG.CONFIG + 4, 4), 0x08070605);
  assert.equal(driver.read(REG.CONFIG + 1, 1), 2);
  assert.equal(driver.read(REG.CONFIG + 6, 2), 0x0807);
  const eight = new Uint8Array(8);
  machine.mmio.read(BASE + REG.CONFIG, eight);
  assert.deepEqual([...eight], [1, 2, 3, 4, 5, 6, 7, 8], 'a 64-bit access inside the space');
  assert.equal(driver.read(REG.CONFIG + 6, 4), 0, 'an access past the end reads 0');
  assert.equal(driver.read(REG.CONFIG + 8, 1), 0);
  assert.equal(driver.read(REG.CONFIG + 0xfc, 4), 0);
  driver.write(REG.CONFIG, 0xbbaa, 2);
  assert.deepEqual([...device.bytes.subarray(0, 2)], [0xaa, 0xbb]);
  driver.write(REG.CONFIG + 7, 0xffff, 2);
  assert.equal(device.bytes[7], 8, 'a write straddling the end is ignored');
  const three = new Uint8Array(3);
  transport.read(REG.CONFIG, three);
  assert.deepEqual([...three], [0, 0, 0], 'an access width the bus cannot produce reads 0');
});

test('virtio-blk: capacity through 0x100 as two 32-bit halves; a resize bumps ConfigGeneration and raises bit 1', async () => {
  const path = image(64);
  const device = new VirtioBlock({ path });
  try {
    const { driver, irq } = rig(device, [[0, 4 << 20]]);
    driver.bringUp((1n << 64n) - 1n);
    const capacity = () => driver.read(REG.CONFIG) + driver.read(REG.CONFIG + 4) * FOUR_GIB;
    assert.equal(capacity(), 64);
    assert.equal(driver.read(REG.CONFIG + 20), 512, 'blk_size');
    const generation = driver.read(REG.CONFIG_GENERATION);
    truncateSync(path, 200 * SECTOR);
    assert.equal(device.capacityChanged(), 200);
    assert.equal(driver.read(REG.CONFIG_GENERATION), generation + 1);
    assert.equal(driver.interruptStatus, INT_CONFIG);
    assert.equal(irq.level, true);
    assert.equal(capacity(), 200);
    assert.equal(driver.read(REG.CONFIG + 1, 1), 0, 'byte access: 200 = 0xc8 fits the low byte');
    assert.equal(driver.read(REG.CONFIG, 1), 200);
    driver.ack();
    assert.equal(irq.level, false);
  } finally {
    await device.close();
  }
});

test('virtio-blk: a read request completes asynchronously and raises the line when it does', async () => {
  const device = new VirtioBlock({ path: image(16) });
  try {
    const { machine, driver, irq } = rig(device, [[0, 4 << 20]]);
    const [queue] = driver.bringUp(bit(F_VERSION_1) | bit(F_EVENT_IDX));
    const a = machine.allocator;
    const header = a.alloc(16);
    const data = a.alloc(SECTOR);
    const status = a.alloc(1);
    machine.memory.writeU32(header, VIRTIO_BLK_T_IN);
    machine.memory.writeU64(header + 8, 3n);
    machine.memory.write(status, new Uint8Array([0xff]));
    const head = queue!.addChain([{ addr: header, len: 16, writable: false }, writable(data, SECTOR), writable(status, 1)]);
    queue!.publish(head);
    queue!.kick();
    await until(() => queue!.usedIdx() === 1, 'the read to complete');
    assert.deepEqual(queue!.takeUsed(), [{ id: head, len: SECTOR + 1 }]);
    assert.equal(machine.memory.read(status, 1)[0], VIRTIO_BLK_S_OK);
    assert.ok(machine.memory.read(data, SECTOR).every((b) => b === 4), 'sector 3 holds byte 4');
    assert.equal(driver.interruptStatus, INT_VRING);
    assert.equal(irq.level, true);
    driver.ack();
    assert.equal(irq.level, false);
    assert.ok(machine.guardsIntact());
  } finally {
    await device.close();
  }
});

test('signalConfigChange bumps ConfigGeneration and sets InterruptStatus bit 1', () => {
  const { driver, device, irq } = rig(new ConfigDevice());
  driver.bringUp(bit(F_VERSION_1), 2);
  const before = driver.read(REG.CONFIG_GENERATION);
  device.activation!.interrupt.signalConfigChange();
  device.activation!.interrupt.signalConfigChange();
  assert.equal(driver.read(REG.CONFIG_GENERATION), before + 2);
  assert.equal(driver.interruptStatus, INT_CONFIG);
  assert.equal(irq.level, true);
  driver.ack(INT_CONFIG);
  assert.equal(irq.level, false);
});

test('writing 0 to Status resets everything the driver set up, and the device comes up again', () => {
  const { machine, driver, device, irq, transport } = rig(new ConfigDevice());
  driver.bringUp(bit(F_VERSION_1) | bit(5), 2);
  device.activation!.interrupt.signalQueue(0);
  assert.equal(irq.level, true);
  driver.write(REG.DEVICE_FEATURES_SEL, 1);
  driver.write(REG.QUEUE_SEL, 1);
  const generation = driver.read(REG.CONFIG_GENERATION);
  const resetsBefore = device.resets;

  driver.status = 0;
  assert.equal(driver.status, 0);
  assert.equal(device.resets, resetsBefore + 1);
  assert.equal(device.activation, undefined);
  assert.equal(driver.interruptStatus, 0);
  assert.equal(irq.level, false, 'the line drops with InterruptStatus');
  assert.equal(transport.negotiatedFeatures, 0n);
  assert.equal(driver.read(REG.DEVICE_FEATURES), Number(transport.features & 0xffffffffn), 'DeviceFeaturesSel back to 0');
  assert.equal(driver.read(REG.QUEUE_NUM_MAX), 64, 'QueueSel back to 0');
  for (const [i, q] of transport.queues.entries()) {
    driver.write(REG.QUEUE_SEL, i);
    assert.equal(driver.read(REG.QUEUE_READY), 0);
    assert.deepEqual([q.enabled, q.ready, q.size, q.descTableAddress, q.availRingAddress, q.usedRingAddress], [false, false, q.maxSize, 0, 0, 0]);
  }
  assert.equal(driver.read(REG.CONFIG_GENERATION), generation, 'the configuration did not change');
  // Kicks after reset reach nothing.
  driver.write(REG.QUEUE_NOTIFY, 0);
  assert.deepEqual(device.processed, []);

  driver.bringUp(bit(F_VERSION_1), 2);
  assert.ok(device.activation !== undefined);
  driver.write(REG.QUEUE_NOTIFY, 1);
  assert.deepEqual(device.processed, [1]);
  assert.ok(machine.guardsIntact());
});

test('QueueNotify before DRIVER_OK, for an absent queue, or for a stopped queue is ignored', () => {
  const { machine, driver, device, transport } = rig(new VirtioRng());
  driver.probe();
  assert.equal(driver.negotiate(MODERN), true);
  const queue = driver.setupQueue(0);
  queue.publish(queue.addChain([writable(machine.allocator.alloc(8), 8)]));
  queue.kick();
  driver.write(REG.QUEUE_NOTIFY, 9);
  driver.write(REG.QUEUE_NOTIFY, 0xffffffff);
  assert.equal(device.requestsServed, 0);
  assert.equal(transport.notifications, 3);
  driver.driverOk();
  queue.kick();
  assert.equal(device.requestsServed, 1);

  // §4.2.2.2: the driver stops a queue by writing 0 to QueueReady and reading it back.
  driver.write(REG.QUEUE_SEL, 0);
  driver.write(REG.QUEUE_READY, 0);
  assert.equal(driver.read(REG.QUEUE_READY), 0);
  queue.publish(queue.addChain([writable(machine.allocator.alloc(8), 8)]));
  queue.kick();
  assert.equal(device.requestsServed, 1, 'the device leaves a queue with QueueReady 0 alone');
  // Without VIRTIO_F_RING_RESET it cannot be enabled again until a reset.
  driver.write(REG.QUEUE_READY, 1);
  assert.equal(driver.read(REG.QUEUE_READY), 0);
  assert.equal(driver.status & STATUS.NEEDS_RESET, 0);
});

test('QueueReady 0 before DRIVER_OK releases the queue for a new setup', () => {
  const { driver, transport } = rig(new ConfigDevice());
  driver.probe();
  driver.negotiate(bit(F_VERSION_1));
  const first = driver.setupQueue(0, { size: 32 });
  driver.write(REG.QUEUE_NUM, 8);
  assert.equal(transport.queues[0]!.size, 32, 'QueueNum is fixed while QueueReady is 1');
  driver.write64(REG.QUEUE_DESC_LOW, 0x1000);
  assert.equal(transport.queues[0]!.descTableAddress, first.desc, 'so are the ring addresses');
  driver.write(REG.QUEUE_READY, 0);
  assert.equal(driver.read(REG.QUEUE_READY), 0);
  const second = driver.setupQueue(0, { size: 16 });
  assert.equal(transport.queues[0]!.size, 16);
  assert.equal(transport.queues[0]!.descTableAddress, second.desc);
  driver.driverOk();
  assert.equal(transport.queues[0]!.ready, true);
  assert.equal(transport.queues[1]!.ready, false, 'queue 1 was never enabled');
});

test('ring addresses: both halves kept exactly, in any order', () => {
  const { driver, transport } = rig(new ConfigDevice());
  driver.probe();
  driver.negotiate(bit(F_VERSION_1));
  driver.write(REG.QUEUE_SEL, 0);
  driver.write(REG.QUEUE_DESC_HIGH, 0x0020_0000); // past 2^53 for a moment
  driver.write(REG.QUEUE_DESC_LOW, 0x1234_5671);
  driver.write(REG.QUEUE_DESC_HIGH, 0);
  assert.equal(transport.queues[0]!.descTableAddress, 0x1234_5671, 'no low bit lost to rounding');
  driver.write(REG.QUEUE_DRIVER_HIGH, 3);
  driver.write(REG.QUEUE_DRIVER_LOW, 0x10);
  assert.equal(transport.queues[0]!.availRingAddress, 3 * FOUR_GIB + 0x10);
  driver.write(REG.QUEUE_DEVICE_LOW, 0xffff_fff0);
  driver.write(REG.QUEUE_DEVICE_HIGH, 0x1f_ffff);
  assert.equal(transport.queues[0]!.usedRingAddress, Number.MAX_SAFE_INTEGER - 15);
  driver.write(REG.QUEUE_SEL, 1);
  driver.write(REG.QUEUE_DESC_LOW, 0x40);
  assert.equal(transport.queues[1]!.descTableAddress, 0x40);
  assert.equal(transport.queues[0]!.descTableAddress, 0x1234_5671, 'each queue has its own');
});

test('an unusable queue layout is refused at DRIVER_OK with DEVICE_NEEDS_RESET and a configuration interrupt', () => {
  const cases: { name: string; setup: (d: MmioDriver) => void }[] = [
    { name: 'size not a power of two', setup: (d) => d.write(REG.QUEUE_NUM, 100) },
    { name: 'size above QueueNumMax', setup: (d) => d.write(REG.QUEUE_NUM, 512) },
    { name: 'size 0', setup: (d) => d.write(REG.QUEUE_NUM, 0) },
    { name: 'descriptor table outside RAM', setup: (d) => d.write64(REG.QUEUE_DESC_LOW, 0x4000_0000) },
    { name: 'descriptor table misaligned', setup: (d) => d.write64(REG.QUEUE_DESC_LOW, 0x2008) },
    { name: 'used ring straddling the end of RAM', setup: (d) => d.write64(REG.QUEUE_DEVICE_LOW, (1 << 20) - 8) },
    { name: 'address beyond 2^53', setup: (d) => d.write(REG.QUEUE_DRIVER_HIGH, 0xffff_ffff) },
  ];
  for (const { name, setup } of cases) {
    const { driver, device, irq, errors, transport } = rig(new VirtioRng());
    driver.probe();
    driver.negotiate(MODERN);
    driver.write(REG.QUEUE_SEL, 0);
    driver.write(REG.QUEUE_NUM, 256);
    driver.write64(REG.QUEUE_DESC_LOW, 0x2000);
    driver.write64(REG.QUEUE_DRIVER_LOW, 0x6000);
    driver.write64(REG.QUEUE_DEVICE_LOW, 0x7000);
    setup(driver);
    driver.write(REG.QUEUE_READY, 1);
    driver.driverOk();
    assert.equal(driver.status & STATUS.NEEDS_RESET, STATUS.NEEDS_RESET, name);
    assert.equal(errors.length, 1, name);
    assert.equal(transport.lastError, errors[0], name);
    assert.equal(driver.interruptStatus, INT_CONFIG, `${name}: the driver is told (§2.1.2)`);
    assert.equal(irq.level, true, name);
    driver.write(REG.QUEUE_NOTIFY, 0);
    assert.equal(device.requestsServed, 0, name);
    // The driver cannot clear DEVICE_NEEDS_RESET; only a reset does.
    driver.status = STATUS.ACKNOWLEDGE | STATUS.DRIVER | STATUS.FEATURES_OK | STATUS.DRIVER_OK;
    assert.equal(driver.status & STATUS.NEEDS_RESET, STATUS.NEEDS_RESET, name);
    driver.reset();
    assert.equal(transport.lastError, undefined, name);
    assert.equal(irq.level, false, name);
  }
});

test('a device error (activation.fail) sets DEVICE_NEEDS_RESET and stops notifications', () => {
  const { machine, driver, device, irq, errors } = rig(new VirtioRng());
  const [queue] = driver.bringUp(MODERN);
  // §5.4.6.1: entropy requests must be device-writable; this one is readable.
  queue!.publish(queue!.addChain([{ addr: machine.allocator.alloc(16), len: 16, writable: false }]));
  queue!.kick();
  assert.equal(driver.status & STATUS.NEEDS_RESET, STATUS.NEEDS_RESET);
  assert.match(errors[0]!, /virtio-rng: request \d+ has a device-readable buffer/);
  assert.equal(driver.interruptStatus, INT_CONFIG);
  assert.equal(irq.level, true);
  queue!.publish(queue!.addChain([writable(machine.allocator.alloc(16), 16)]));
  queue!.kick();
  assert.equal(device.requestsServed, 0);
  const [again] = driver.bringUp(MODERN);
  again!.publish(again!.addChain([writable(machine.allocator.alloc(16), 16)]));
  again!.kick();
  assert.equal(device.requestsServed, 1);
  assert.equal(driver.status & STATUS.NEEDS_RESET, 0);
});

test('exceptions from the device model become DEVICE_NEEDS_RESET, never escape the bus', () => {
  const { driver, errors } = rig(new ThrowingDevice());
  driver.bringUp(bit(F_VERSION_1), 2);
  assert.doesNotThrow(() => driver.write(REG.QUEUE_NOTIFY, 0));
  assert.match(errors[0]!, /failed processing queue 0: processQueue bug/);
  assert.equal(driver.status & STATUS.NEEDS_RESET, STATUS.NEEDS_RESET);
  driver.reset();
  assert.doesNotThrow(() => driver.read(REG.CONFIG, 4));
  assert.doesNotThrow(() => driver.write(REG.CONFIG, 1, 1));
  assert.match(errors[1]!, /failed reading its configuration: readConfig bug/);
  assert.equal(errors.length, 2, 'one report until the next reset');
});

test('status bits cannot be cleared but by a reset: clearing and setting DRIVER_OK again does not activate twice (§2.1.1, §4.2.2)', () => {
  const { driver, device } = rig(new ConfigDevice());
  driver.bringUp(bit(F_VERSION_1), 2);
  const all = STATUS.ACKNOWLEDGE | STATUS.DRIVER | STATUS.FEATURES_OK | STATUS.DRIVER_OK;
  // A non-zero Status write only sets flags (§4.2.2); the driver must not clear one (§2.1.1).
  driver.status = STATUS.ACKNOWLEDGE | STATUS.DRIVER | STATUS.FEATURES_OK;
  assert.equal(driver.status, all, 'DRIVER_OK stays set');
  driver.status = STATUS.ACKNOWLEDGE;
  assert.equal(driver.status, all, 'FEATURES_OK and DRIVER stay set too');
  driver.driverOk();
  assert.equal(device.activations, 1, 'activate() was not called again');
  driver.write(REG.QUEUE_NOTIFY, 0);
  assert.deepEqual(device.processed, [0], 'the device is still served');
});

test('doorbells for ioeventfds: one per queue on QueueNotify, 4 bytes, datamatch = index; notifyQueue serves the queue', () => {
  const { machine, transport, driver, device } = rig(new VirtioRng());
  assert.equal(transport.queueNotifyAddress(BASE), BASE + 0x50);
  assert.deepEqual(transport.queueDoorbells(BASE), [{ queue: 0, addr: BASE + 0x50, len: 4, datamatch: 0 }]);
  const two = new VirtioMmioDevice(new ConfigDevice(), { memory: machine.memory, irq: new RecordingIrqLine() });
  assert.deepEqual(
    two.queueDoorbells(0x1000).map((d) => [d.queue, d.addr, d.datamatch]),
    [
      [0, 0x1050, 0],
      [1, 0x1050, 1],
    ],
  );
  const [queue] = driver.bringUp(MODERN);
  queue!.publish(queue!.addChain([writable(machine.allocator.alloc(32), 32)]));
  transport.notifyQueue(0); // what the ioeventfd poller calls
  assert.equal(device.requestsServed, 1);
  for (const bad of [-1, 1, 0.5, Number.NaN, 2 ** 40]) assert.doesNotThrow(() => transport.notifyQueue(bad));
  assert.equal(device.requestsServed, 1);
});

test('misaligned and wrong-width register accesses read 0 and are ignored when written', () => {
  const { machine, driver, transport, device } = rig(new VirtioRng());
  for (const width of [1, 2, 8] as const) assert.equal(driver.read(REG.MAGIC_VALUE, width), 0, `${width}-byte read of MagicValue`);
  assert.equal(driver.read(REG.MAGIC_VALUE + 1), 0, 'misaligned 32-bit read');
  assert.equal(driver.read(REG.VERSION + 2, 2), 0);
  driver.write(REG.STATUS, STATUS.ACKNOWLEDGE, 1);
  driver.write(REG.STATUS, STATUS.ACKNOWLEDGE, 2);
  driver.write(REG.STATUS + 1, STATUS.ACKNOWLEDGE);
  driver.write(REG.STATUS, STATUS.ACKNOWLEDGE, 8);
  assert.equal(driver.status, 0);
  // A 64-bit ring address write is not how virtio-mmio takes addresses (§4.2.2.2).
  driver.write(REG.QUEUE_DESC_LOW, 0x3000, 8);
  assert.equal(transport.queues[0]!.descTableAddress, 0);
  // A 16-bit kick (the virtio-pci width) is not a QueueNotify write.
  const [queue] = driver.bringUp(MODERN);
  queue!.publish(queue!.addChain([writable(machine.allocator.alloc(8), 8)]));
  const before = transport.notifications;
  driver.write(REG.QUEUE_NOTIFY, 0, 2);
  driver.write(REG.QUEUE_NOTIFY + 2, 0, 2);
  assert.equal(transport.notifications, before);
  assert.equal(device.requestsServed, 0);
  // Status is a byte: the upper 24 bits of the register are ignored.
  driver.write(REG.STATUS, 0x100 | driver.status);
  assert.equal(driver.status, STATUS.ACKNOWLEDGE | STATUS.DRIVER | STATUS.FEATURES_OK | STATUS.DRIVER_OK);
  // Direct calls with widths and offsets no bus produces.
  for (const [offset, width] of [[0, 0], [0, 3], [0x70, 16], [0x1fe, 4], [0x200, 4], [0x7fffffff, 4], [-4, 4], [Number.NaN, 4], [2.5, 4]] as const) {
    const data = new Uint8Array(width).fill(0xee);
    assert.doesNotThrow(() => transport.read(offset, data));
    assert.ok(data.every((b) => b === 0), `read at ${offset}/${width} is 0`);
    assert.doesNotThrow(() => transport.write(offset, new Uint8Array(width).fill(0xff)));
  }
  assert.equal(driver.status & STATUS.NEEDS_RESET, 0);
});

test('garbage at every offset and width, before and after DRIVER_OK, never throws and never touches memory outside RAM', () => {
  // xorshift32 with a fixed seed: the run is the same every time.
  let seed = 0x9e3779b9;
  const random = (): number => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return seed >>> 0;
  };
  const widths = [1, 2, 4, 8] as const;
  for (let round = 0; round < 4; round++) {
    // A cheap fill: garbage rings may name many large buffers, and the bytes do not matter here.
    const device = round % 2 === 0 ? new VirtioRng({ fill: (b, o, l) => b.fill(0x5a, o, o + l) }) : new ConfigDevice();
    const { machine, driver, transport } = rig(device, [[0, 64 * 1024]]);
    if (round >= 2) driver.bringUp(round === 2 ? MODERN : bit(F_VERSION_1), round === 2 ? 1 : 2);
    // Some guest RAM full of noise, so garbage ring addresses find garbage rings.
    const noise = new Uint8Array(64 * 1024);
    for (let i = 0; i < noise.length; i += 4) new DataView(noise.buffer).setUint32(i, random());
    machine.memory.write(0, noise);
    for (let i = 0; i < 3000; i++) {
      const r = random();
      const width = widths[r & 3]!;
      // Mostly register offsets, aligned half the time; small values often, so they hit RAM and real queues.
      const offset = (r >>> 2) & 1 ? ((r >>> 3) & 0x7f) * 4 : (r >>> 3) % VIRTIO_MMIO_SIZE;
      const value = (r >>> 10) & 1 ? random() : random() & 0xffff;
      assert.doesNotThrow(() => {
        if ((r >>> 11) & 1) driver.read(offset, width);
        else driver.write(offset, value, width);
      });
    }
    assert.ok(machine.guardsIntact(), `round ${round}`);
    // Whatever state the garbage left, a reset brings the device back.
    assert.doesNotThrow(() => driver.reset());
    assert.equal(transport.deviceStatus, 0);
    assert.equal(transport.pendingInterrupts, 0);
  }
});

test('VMM wiring: one page per device from 0xf0000000, a level IOAPIC input each (shared beyond 8), an ioeventfd per queue, ACPI descriptions', async () => {
  const machine = new TestMachine();
  const ioeventfds = new Map<string, IoeventfdSpec>();
  const vm = {
    registerIoeventfd: (spec: IoeventfdSpec) => void ioeventfds.set(`${spec.addr}/${String(spec.datamatch)}`, spec),
    unregisterIoeventfd: (spec: IoeventfdSpec) => assert.ok(ioeventfds.delete(`${spec.addr}/${String(spec.datamatch)}`)),
  };
  const lines = new Map<number, RecordingIrqLine>();
  const poller = new EventFdPoller();
  const devices = new VirtioMmioDevices({
    vm,
    memory: machine.memory,
    mmioBus: machine.mmio,
    poller,
    irqLines: new SharedIrqLines((gsi) => {
      const line = new RecordingIrqLine();
      lines.set(gsi, line);
      return line;
    }),
  });
  const rngs = Array.from({ length: 9 }, () => new VirtioRng());
  for (const r of rngs) devices.add(r);
  const acpi = devices.acpiDevices;
  assert.deepEqual(
    acpi.map((d) => [d.base, d.size, d.gsi, d.trigger, d.shared]),
    rngs.map((_r, i) => [0xf000_0000 + i * 0x1000, 0x1000, 16 + (i % 8), 'level', i % 8 === 0]),
  );
  assert.equal(ioeventfds.size, 9, 'one ioeventfd per queue');
  const spec = ioeventfds.get(`${0xf000_0000 + 0x50}/0`)!;
  assert.equal(spec.len, 4);
  assert.equal(spec.pio, false);

  // Device 8 shares GSI 16 with device 0: the line is the OR of both.
  poller.start();
  const serve = async (i: number): Promise<MmioDriver> => {
    const driver = new MmioDriver(machine, acpi[i]!.base);
    const [queue] = driver.bringUp(MODERN);
    queue!.publish(queue!.addChain([writable(machine.allocator.alloc(16), 16)]));
    // What KVM does with the guest's QueueNotify write: signal the eventfd.
    const ring = Buffer.alloc(8);
    ring.writeBigUInt64LE(1n);
    write(ioeventfds.get(`${acpi[i]!.base + 0x50}/0`)!.fd, ring);
    for (let t = 0; rngs[i]!.requestsServed === 0; t++) {
      assert.ok(t < 2000, 'served through the doorbell');
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    return driver;
  };
  const first = await serve(0);
  const ninth = await serve(8);
  assert.equal(lines.get(16)!.level, true);
  assert.equal(lines.get(16)!.raises, 1, 'one assertion for both');
  first.ack();
  assert.equal(lines.get(16)!.level, true, 'device 8 still asserts');
  ninth.ack();
  assert.equal(lines.get(16)!.level, false);
  assert.equal(devices.doorbellWakeups, 2);
  assert.equal(devices.interrupts, 1);
  await poller.close();
  devices.close();
  assert.equal(ioeventfds.size, 0, 'close() unregisters every ioeventfd');
});
