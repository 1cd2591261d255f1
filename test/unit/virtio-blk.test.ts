/**
 * virtio-blk driven by the guest-side test driver over PCI, on temporary image files: every
 * request type, error statuses, flush durability, discard and write zeroes, out-of-order
 * completion, hostile chains, reset with requests in flight, and resizing.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { nodeBlockFileIo, type BlockFileIo } from '../../src/devices/virtio/blk-file.js';
import {
  BLK_EARLY_NOTIFY_BYTES,
  BLK_CONFIG_BLK_SIZE,
  BLK_CONFIG_CAPACITY,
  BLK_CONFIG_MAX_DISCARD_SEG,
  BLK_CONFIG_NUM_QUEUES,
  BLK_CONFIG_SEG_MAX,
  BLK_CONFIG_WRITE_ZEROES_MAY_UNMAP,
  BLK_SEG_MAX,
  VIRTIO_BLK_F_BLK_SIZE,
  VIRTIO_BLK_F_DISCARD,
  VIRTIO_BLK_F_FLUSH,
  VIRTIO_BLK_F_MQ,
  VIRTIO_BLK_F_RO,
  VIRTIO_BLK_F_SEG_MAX,
  VIRTIO_BLK_F_WRITE_ZEROES,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_GET_LIFETIME,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
  VirtioBlock,
  type VirtioBlockOptions,
} from '../../src/devices/virtio/blk.js';
import type { VirtioPciDevice } from '../../src/devices/virtio/pci-transport.js';
import { DESC_F, F_EVENT_IDX, F_INDIRECT_DESC, F_VERSION_1, STATUS, TestMachine, VirtioPciDriver, raceDevice, turnUntil, type DriverBuffer, type DriverQueue } from '../support/virtio-driver.js';
import { featureBit } from '../../src/devices/virtio/device.js';

const bit = featureBit;
/** Accept whatever the device offers. */
const EVERYTHING = (1n << 64n) - 1n;
const SECTOR = 512;

const scratch = mkdtempSync(join(tmpdir(), 'tsvmm-blk-'));
after(() => rmSync(scratch, { recursive: true, force: true }));
let imageCount = 0;

/** A temporary image of `bytes` bytes whose sector i is filled with byte (i + 1) & 0xff. */
function image(bytes: number): string {
  const path = join(scratch, `disk-${imageCount++}.img`);
  const data = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i++) data[i] = (Math.floor(i / SECTOR) + 1) & 0xff;
  writeFileSync(path, data);
  return path;
}

interface Rig {
  machine: TestMachine;
  device: VirtioBlock;
  transport: VirtioPciDevice;
  driver: VirtioPciDriver;
  queue: DriverQueue;
  path: string;
  errors: string[];
}

function rig(options: Partial<VirtioBlockOptions> & { bytes?: number; features?: bigint; regions?: [number, number][]; hostMapped?: boolean; queueSize?: number } = {}): Rig {
  const path = options.path ?? image(options.bytes ?? 64 * SECTOR);
  const machine = new TestMachine({ regions: options.regions ?? [[0, 4 << 20]], hostMapped: options.hostMapped ?? false });
  const device = new VirtioBlock({ ...options, path });
  const errors: string[] = [];
  const { transport, slot } = machine.addVirtio(device, { onError: (reason) => errors.push(reason) });
  const driver = new VirtioPciDriver(machine, slot);
  const [queue] = driver.bringUp(options.features ?? EVERYTHING, options.queueSize === undefined ? {} : { queueSize: options.queueSize });
  return { machine, device, transport, driver, queue: queue!, path, errors };
}

interface Submitted {
  head: number;
  data: number;
  status: number;
}

/**
 * Lay out a request as Linux does (header, data, 1-byte status, each its own buffer) and publish
 * it. `data` is written into the guest for device-readable data; `dataLength` sizes a
 * device-writable one. `split` cuts the data into that many descriptors.
 */
function submit(r: Rig, type: number, sector: number, request: { data?: Uint8Array; dataLength?: number; split?: number; indirect?: boolean; kick?: boolean } = {}): Submitted {
  const m = r.machine;
  const header = m.allocator.alloc(16);
  m.memory.writeU32(header, type);
  m.memory.writeU32(header + 4, 0);
  m.memory.writeU64(header + 8, BigInt(sector));
  const length = request.data?.length ?? request.dataLength ?? 0;
  const data = m.allocator.alloc(Math.max(length, 1), 512);
  if (request.data) m.memory.write(data, request.data);
  const status = m.allocator.alloc(1, 1);
  m.memory.writeU8(status, 0xee);
  const buffers: DriverBuffer[] = [{ addr: header, len: 16, writable: false }];
  const pieces = request.split ?? 1;
  const dataWritable = request.data === undefined;
  for (let i = 0, at = 0; i < pieces && length > 0; i++) {
    const n = i === pieces - 1 ? length - at : Math.floor(length / pieces);
    buffers.push({ addr: data + at, len: n, writable: dataWritable });
    at += n;
  }
  buffers.push({ addr: status, len: 1, writable: true });
  const head = r.queue.addChain(buffers, { indirect: request.indirect ?? false });
  r.queue.publish(head);
  if (request.kick ?? true) r.queue.kick();
  return { head, data, status };
}

/** Wait (turning the event loop so file I/O can complete) until `count` used elements arrived. */
async function used(queue: DriverQueue, count: number, timeoutMs = 5000): Promise<{ id: number; len: number }[]> {
  const seen: { id: number; len: number }[] = [];
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    seen.push(...queue.takeUsed());
    if (seen.length >= count) return seen;
    if (Date.now() > deadline) throw new Error(`only ${seen.length} of ${count} requests completed`);
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

/** Submit, wait for the completion, return its status byte and used length. */
async function run(r: Rig, type: number, sector: number, request: Parameters<typeof submit>[3] = {}): Promise<{ status: number; len: number; data: number }> {
  const s = submit(r, type, sector, request);
  const [u] = await used(r.queue, 1);
  assert.equal(u!.id, s.head);
  return { status: r.machine.memory.readU8(s.status), len: u!.len, data: s.data };
}

function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (i * 31 + seed) & 0xff;
  return out;
}

function configU32(r: Rig, offset: number): number {
  return r.machine.mmioRead(r.driver.barAddress + r.driver.deviceCfg!.offset + offset, 4);
}

/** Counts calls and can hold callbacks back, around the real file operations. */
class SpyIo implements BlockFileIo {
  readonly calls = { read: 0, write: 0, readv: 0, writev: 0, fdatasync: 0, punchHole: 0, writeZeroes: 0 };
  /** While set, completions (or only fdatasync's) are queued instead of delivered. */
  hold: boolean | 'fdatasync' = false;
  readonly held: (() => void)[] = [];
  /** Largest transfer per read/write call (to force short transfers). */
  maxTransfer = Infinity;
  failPunch = false;

  private deliver(fn: () => void, sync = false): void {
    if (this.hold === true || (this.hold === 'fdatasync' && sync)) this.held.push(fn);
    else fn();
  }
  release(order: 'fifo' | 'lifo' = 'fifo'): void {
    const all = this.held.splice(0);
    if (order === 'lifo') all.reverse();
    for (const fn of all) fn();
  }

  read: BlockFileIo['read'] = (fd, buffer, offset, length, position, done) => {
    this.calls.read++;
    nodeBlockFileIo.read(fd, buffer, offset, Math.min(length, this.maxTransfer), position, (e, n) => this.deliver(() => done(e, n)));
  };
  write: BlockFileIo['write'] = (fd, buffer, offset, length, position, done) => {
    this.calls.write++;
    nodeBlockFileIo.write(fd, buffer, offset, Math.min(length, this.maxTransfer), position, (e, n) => this.deliver(() => done(e, n)));
  };
  readv: BlockFileIo['readv'] = (fd, buffers, position, done) => {
    this.calls.readv++;
    if (this.maxTransfer !== Infinity) return this.read(fd, buffers[0]!, 0, buffers[0]!.length, position, done);
    nodeBlockFileIo.readv(fd, buffers, position, (e, n) => this.deliver(() => done(e, n)));
  };
  writev: BlockFileIo['writev'] = (fd, buffers, position, done) => {
    this.calls.writev++;
    if (this.maxTransfer !== Infinity) return this.write(fd, buffers[0]!, 0, buffers[0]!.length, position, done);
    nodeBlockFileIo.writev(fd, buffers, position, (e, n) => this.deliver(() => done(e, n)));
  };
  fdatasync: BlockFileIo['fdatasync'] = (fd, done) => {
    this.calls.fdatasync++;
    nodeBlockFileIo.fdatasync(fd, (e) => this.deliver(() => done(e), true));
  };
  punchHole: BlockFileIo['punchHole'] = (fd, position, length, done) => {
    this.calls.punchHole++;
    if (this.failPunch) return setImmediate(() => done(Object.assign(new Error('no holes here'), { code: 'EOPNOTSUPP' })));
    nodeBlockFileIo.punchHole(fd, position, length, (e) => this.deliver(() => done(e)));
  };
  writeZeroes: BlockFileIo['writeZeroes'] = (fd, position, length, done) => {
    this.calls.writeZeroes++;
    nodeBlockFileIo.writeZeroes(fd, position, length, (e) => this.deliver(() => done(e)));
  };
}

// ---- identity, features, configuration

/** Poll (not a fixed sleep: the threadpool can be slow on a loaded machine) until `count` file operations are held. */
async function waitForHeld(io: SpyIo, count = 1): Promise<void> {
  for (let i = 0; io.held.length < count; i++) {
    assert.ok(i < 4000, `only ${io.held.length} of ${count} file operations reached the file layer`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

test('identity, offered features and configuration space (§5.2.3, §5.2.4)', () => {
  const r = rig({ bytes: 10 * SECTOR + 100 });
  const { deviceId } = r.driver.probe();
  assert.equal(deviceId, 0x1042, 'virtio-pci modern device ID 0x1040 + 2');
  const offered = r.driver.deviceFeatures();
  for (const f of [VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_WRITE_ZEROES, F_VERSION_1, F_EVENT_IDX, F_INDIRECT_DESC]) {
    assert.ok((offered & bit(f)) !== 0n, `feature ${f} offered`);
  }
  assert.equal(offered & bit(VIRTIO_BLK_F_FLUSH), 0n, 'Unsafe does not offer FLUSH');
  assert.equal(offered & bit(VIRTIO_BLK_F_RO), 0n);
  assert.equal(configU32(r, BLK_CONFIG_CAPACITY), 10, 'the partial last sector is not exposed');
  assert.equal(configU32(r, BLK_CONFIG_CAPACITY + 4), 0);
  assert.equal(r.device.capacitySectors, 10);
  assert.equal(configU32(r, BLK_CONFIG_SEG_MAX), BLK_SEG_MAX);
  assert.equal(configU32(r, BLK_CONFIG_BLK_SIZE), 512);
  assert.ok(configU32(r, BLK_CONFIG_MAX_DISCARD_SEG) >= 1);
  assert.equal(configU32(r, BLK_CONFIG_WRITE_ZEROES_MAY_UNMAP) & 0xff, 1);
});

test('Writeback offers FLUSH; a read-only drive offers RO and neither DISCARD nor WRITE_ZEROES', () => {
  const wb = rig({ cacheType: 'Writeback' });
  assert.ok((wb.driver.deviceFeatures() & bit(VIRTIO_BLK_F_FLUSH)) !== 0n);
  const ro = rig({ readOnly: true });
  const offered = ro.driver.deviceFeatures();
  assert.ok((offered & bit(VIRTIO_BLK_F_RO)) !== 0n);
  assert.equal(offered & (bit(VIRTIO_BLK_F_DISCARD) | bit(VIRTIO_BLK_F_WRITE_ZEROES)), 0n);
});

test('a missing image or a directory is refused with a clear error', () => {
  assert.throws(() => new VirtioBlock({ path: join(scratch, 'nope.img') }), /ENOENT/);
  assert.throws(() => new VirtioBlock({ path: scratch }), /EISDIR|not a regular file/);
});

// ---- data

test('OUT then IN: data reaches the file and comes back to the guest', async () => {
  const r = rig();
  const data = pattern(3 * SECTOR, 7);
  const w = await run(r, VIRTIO_BLK_T_OUT, 5, { data });
  assert.deepEqual({ status: w.status, len: w.len }, { status: VIRTIO_BLK_S_OK, len: 1 }, 'a write returns only the status byte');
  const file = readFileSync(r.path);
  assert.deepEqual(new Uint8Array(file.subarray(5 * SECTOR, 8 * SECTOR)), data);
  assert.equal(file[5 * SECTOR - 1], 5, 'the sector before is untouched');
  assert.equal(file[8 * SECTOR], 9, 'the sector after is untouched');

  const rd = await run(r, VIRTIO_BLK_T_IN, 5, { dataLength: 3 * SECTOR });
  assert.deepEqual({ status: rd.status, len: rd.len }, { status: VIRTIO_BLK_S_OK, len: 3 * SECTOR + 1 }, 'used length counts data and status');
  assert.deepEqual(r.machine.memory.read(rd.data, 3 * SECTOR), data);
  assert.equal(r.device.metrics.bytesRead, 3 * SECTOR);
  assert.equal(r.device.metrics.bytesWritten, 3 * SECTOR);
  assert.ok(r.machine.guardsIntact());
});

/** An image on a memory file system (tmpfs): its transfers are done at once, always. */
function memoryImage(bytes: number): string {
  const dir = mkdtempSync(join('/dev/shm', 'tsvmm-blk-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'disk.img');
  writeFileSync(path, new Uint8Array(bytes));
  return path;
}

/** The real file operations, with transferNow wrapped: `now` decides what each immediate call does (`real(n)` makes it with the first n iovecs). */
function immediateIo(now: (real: (count: number) => number, count: number) => number): BlockFileIo & { nowCalls: number } {
  const io = {
    ...nodeBlockFileIo,
    nowCalls: 0,
    transferNow: (fd: number, write: boolean, iovecsAddress: number, count: number, position: number, flags: number): number => {
      io.nowCalls++;
      return now((n) => nodeBlockFileIo.transferNow!(fd, write, iovecsAddress, n, position, flags), count);
    },
  };
  return io;
}

/** OUT then IN of scattered data (3 and 4 pieces, one straddling two host regions), checked in the file, the guest and the guards. */
async function roundTrip(r: Rig): Promise<void> {
  const data = pattern(4 * SECTOR, 11);
  assert.equal((await run(r, VIRTIO_BLK_T_OUT, 8, { data, split: 3 })).status, VIRTIO_BLK_S_OK);
  assert.deepEqual(new Uint8Array(readFileSync(r.path).subarray(8 * SECTOR, 12 * SECTOR)), data);
  const rd = await run(r, VIRTIO_BLK_T_IN, 8, { dataLength: 4 * SECTOR, split: 4, indirect: true });
  assert.equal(rd.status, VIRTIO_BLK_S_OK);
  assert.deepEqual(r.machine.memory.read(rd.data, 4 * SECTOR), data);
  const m = r.machine;
  const header = m.allocator.alloc(16);
  m.memory.writeU32(header, VIRTIO_BLK_T_IN);
  m.memory.writeU64(header + 8, 8n);
  const status = m.allocator.alloc(1);
  const straddle = (1 << 20) - 1000;
  const head = r.queue.addChain([
    { addr: header, len: 16, writable: false },
    { addr: straddle, len: 4 * SECTOR, writable: true },
    { addr: status, len: 1, writable: true },
  ]);
  r.queue.publish(head);
  r.queue.kick();
  assert.deepEqual(await used(r.queue, 1), [{ id: head, len: 4 * SECTOR + 1 }]);
  assert.equal(m.memory.readU8(status), VIRTIO_BLK_S_OK);
  assert.deepEqual(m.memory.read(straddle, 4 * SECTOR), data);
  assert.ok(m.guardsIntact(), 'the system calls wrote only inside guest RAM');
}

test('scattered data: several descriptors, indirect tables, and a buffer across two host regions', async () => {
  const half = 1 << 20;
  // RAM without host addresses: every transfer goes through the threadpool with views.
  const r = rig({ regions: [[0, half], [half, half]] });
  await roundTrip(r);
  assert.equal(r.device.metrics.immediateTransfers, 0);
});

test('an image in memory: reads and writes are done at once into guest RAM by address, with the same results', async () => {
  const half = 1 << 20;
  const r = rig({ path: memoryImage(64 * SECTOR), regions: [[0, half], [half, half]], hostMapped: true });
  await roundTrip(r);
  // Three requests, each one call, none through the threadpool.
  assert.equal(r.device.metrics.immediateTransfers, 3);
  assert.equal(r.device.metrics.bytesRead, 8 * SECTOR);
  assert.equal(r.device.metrics.bytesWritten, 4 * SECTOR);
});

test('immediate transfers that would wait, move part, or are refused fall back to the threadpool correctly', async () => {
  const half = 1 << 20;
  // EAGAIN every time (data not in the page cache): all through the threadpool, nothing lost.
  const waiting = immediateIo(() => -11);
  const r1 = rig({ path: memoryImage(64 * SECTOR), regions: [[0, half], [half, half]], hostMapped: true, io: waiting });
  await roundTrip(r1);
  assert.equal(r1.device.metrics.immediateTransfers, 0);
  assert.equal(waiting.nowCalls, 3, 'tried once per request');
  // Only the first iovec each time (a partial transfer): the request goes on from where it stopped.
  const partial = immediateIo((real) => real(1));
  const r2 = rig({ path: memoryImage(64 * SECTOR), regions: [[0, half], [half, half]], hostMapped: true, io: partial });
  await roundTrip(r2);
  // Guest-contiguous descriptors merge into one piece: the write and the read are one call each,
  // the buffer straddling two host regions two.
  assert.equal(r2.device.metrics.immediateTransfers, 1 + 1 + 2);
  assert.equal(partial.nowCalls, 4);
  // EOPNOTSUPP (a file system without RWF_NOWAIT): not tried again for that direction.
  const refused = immediateIo(() => -95);
  const r3 = rig({ path: memoryImage(64 * SECTOR), regions: [[0, half], [half, half]], hostMapped: true, io: refused });
  await roundTrip(r3);
  assert.equal(refused.nowCalls, 2, 'one refusal for writes, one for reads, then the threadpool only');
  assert.equal(r3.device.metrics.immediateTransfers, 0);
  // Guest memory without host addresses (no mapping to name): never tried.
  const unmapped = immediateIo((real, count) => real(count));
  const r4 = rig({ path: memoryImage(64 * SECTOR), regions: [[0, half], [half, half]], io: unmapped });
  await roundTrip(r4);
  assert.equal(unmapped.nowCalls, 0);
});

test('threadpool transfers name guest memory by host address: one preadv2/pwritev2 per request and no views; a failed call completes with IOERR', async () => {
  const half = 1 << 20;
  const calls = { async: 0, views: 0 };
  const counted = (failing: boolean): BlockFileIo => ({
    ...nodeBlockFileIo,
    // Never at once (as for data not in the page cache), so every transfer takes the threadpool.
    transferNow: () => -11,
    transferAsync: (fd, write, iovecs, count, position, done) => {
      calls.async++;
      // fd -1 makes the real call fail on the worker thread.
      nodeBlockFileIo.transferAsync!(failing ? -1 : fd, write, iovecs, count, position, done);
    },
    read: (...a) => (calls.views++, nodeBlockFileIo.read(...a)),
    write: (...a) => (calls.views++, nodeBlockFileIo.write(...a)),
    readv: (...a) => (calls.views++, nodeBlockFileIo.readv(...a)),
    writev: (...a) => (calls.views++, nodeBlockFileIo.writev(...a)),
  });
  const r = rig({ path: memoryImage(64 * SECTOR), regions: [[0, half], [half, half]], hostMapped: true, io: counted(false) });
  await roundTrip(r);
  assert.deepEqual(calls, { async: 3, views: 0 }, 'one call per request, the buffer across two regions included');
  const bad = rig({ path: memoryImage(64 * SECTOR), hostMapped: true, io: counted(true) });
  assert.equal((await run(bad, VIRTIO_BLK_T_OUT, 0, { data: pattern(SECTOR, 1) })).status, VIRTIO_BLK_S_IOERR);
  assert.equal((await run(bad, VIRTIO_BLK_T_IN, 0, { dataLength: SECTOR })).status, VIRTIO_BLK_S_IOERR);
  assert.equal(bad.device.metrics.ioErrors, 2);
});

test('header, data and status framed freely (§2.6.4): one readable buffer for header + data', async () => {
  const r = rig();
  const m = r.machine;
  const data = pattern(SECTOR, 11);
  const buffer = m.allocator.alloc(16 + SECTOR);
  m.memory.writeU32(buffer, VIRTIO_BLK_T_OUT);
  m.memory.writeU64(buffer + 8, 2n);
  m.memory.write(buffer + 16, data);
  // The status byte shares a writable buffer with nothing, but the header is split 10 + 6 + data.
  const status = m.allocator.alloc(1);
  const head = r.queue.addChain([
    { addr: buffer, len: 10, writable: false },
    { addr: buffer + 10, len: 6 + SECTOR, writable: false },
    { addr: status, len: 1, writable: true },
  ]);
  r.queue.publish(head);
  r.queue.kick();
  assert.deepEqual(await used(r.queue, 1), [{ id: head, len: 1 }]);
  assert.equal(m.memory.readU8(status), VIRTIO_BLK_S_OK);
  assert.deepEqual(new Uint8Array(readFileSync(r.path).subarray(2 * SECTOR, 3 * SECTOR)), data);
});

test('short transfers from the file continue where they stopped', async () => {
  const io = new SpyIo();
  io.maxTransfer = 700;
  const r = rig({ io });
  const data = pattern(4 * SECTOR, 5);
  assert.equal((await run(r, VIRTIO_BLK_T_OUT, 1, { data, split: 2 })).status, VIRTIO_BLK_S_OK);
  const rd = await run(r, VIRTIO_BLK_T_IN, 1, { dataLength: 4 * SECTOR, split: 3 });
  assert.equal(rd.status, VIRTIO_BLK_S_OK);
  assert.equal(rd.len, 4 * SECTOR + 1);
  assert.deepEqual(r.machine.memory.read(rd.data, 4 * SECTOR), data);
  assert.ok(io.calls.read + io.calls.readv >= 3, 'several calls for one request');
});

test('a zero-length read or write is OK and touches nothing', async () => {
  const r = rig();
  const before = readFileSync(r.path);
  const read = await run(r, VIRTIO_BLK_T_IN, 3);
  assert.deepEqual([read.status, read.len], [VIRTIO_BLK_S_OK, 1]);
  const write = await run(r, VIRTIO_BLK_T_OUT, 3, { data: new Uint8Array(0) });
  assert.deepEqual([write.status, write.len], [VIRTIO_BLK_S_OK, 1]);
  assert.deepEqual(readFileSync(r.path), before);
});

// ---- error statuses

test('IOERR: beyond capacity, a length not a multiple of 512, an absurd sector', async () => {
  const r = rig({ bytes: 16 * SECTOR });
  const before = readFileSync(r.path);
  assert.deepEqual(await run(r, VIRTIO_BLK_T_IN, 16, { dataLength: SECTOR }).then(({ status, len }) => ({ status, len })), { status: VIRTIO_BLK_S_IOERR, len: 1 });
  assert.equal((await run(r, VIRTIO_BLK_T_OUT, 15, { data: pattern(2 * SECTOR, 1) })).status, VIRTIO_BLK_S_IOERR, 'runs past the end');
  assert.equal((await run(r, VIRTIO_BLK_T_OUT, 0, { data: pattern(100, 1) })).status, VIRTIO_BLK_S_IOERR, 'not a multiple of 512');
  assert.equal((await run(r, VIRTIO_BLK_T_IN, 0, { dataLength: 700 })).status, VIRTIO_BLK_S_IOERR);
  assert.equal((await run(r, VIRTIO_BLK_T_IN, 2 ** 52, { dataLength: SECTOR })).status, VIRTIO_BLK_S_IOERR, 'sector far beyond 2^53 bytes');
  assert.equal((await run(r, VIRTIO_BLK_T_IN, 15, { dataLength: SECTOR })).status, VIRTIO_BLK_S_OK, 'the last sector is fine');
  assert.deepEqual(readFileSync(r.path), before, 'nothing was written');
  assert.equal(statSync(r.path).size, 16 * SECTOR, 'the file did not grow');
  assert.equal(r.device.metrics.ioErrors, 5);
});

test('IOERR: writes to a read-only drive, and the image is unchanged', async () => {
  const r = rig({ readOnly: true });
  const before = readFileSync(r.path);
  assert.equal((await run(r, VIRTIO_BLK_T_OUT, 0, { data: pattern(SECTOR, 1) })).status, VIRTIO_BLK_S_IOERR);
  const discard = new Uint8Array(16);
  new DataView(discard.buffer).setUint32(8, 1, true);
  assert.equal((await run(r, VIRTIO_BLK_T_DISCARD, 0, { data: discard })).status, VIRTIO_BLK_S_IOERR);
  assert.equal((await run(r, VIRTIO_BLK_T_WRITE_ZEROES, 0, { data: discard })).status, VIRTIO_BLK_S_IOERR);
  assert.equal((await run(r, VIRTIO_BLK_T_IN, 0, { dataLength: SECTOR })).status, VIRTIO_BLK_S_OK, 'reads work');
  assert.deepEqual(readFileSync(r.path), before);
});

test('UNSUPP: unknown and unimplemented request types', async () => {
  const r = rig();
  for (const type of [VIRTIO_BLK_T_GET_LIFETIME, 2, 99, 0xffffffff]) {
    const res = await run(r, type, 0, { dataLength: 16 });
    assert.deepEqual({ status: res.status, len: res.len }, { status: VIRTIO_BLK_S_UNSUPP, len: 1 }, `type ${type}`);
  }
  assert.equal(r.device.metrics.unsupported, 4);
});

test('GET_ID returns the drive id NUL-padded to 20 bytes, or cut to 20', async () => {
  const r = rig({ driveId: 'rootfs' });
  const res = await run(r, VIRTIO_BLK_T_GET_ID, 0, { dataLength: 20 });
  assert.deepEqual({ status: res.status, len: res.len }, { status: VIRTIO_BLK_S_OK, len: 21 });
  const id = r.machine.memory.read(res.data, 20);
  assert.equal(Buffer.from(id.subarray(0, 6)).toString(), 'rootfs');
  assert.ok(id.subarray(6).every((b) => b === 0));

  const long = rig({ driveId: 'a-drive-id-longer-than-twenty-bytes' });
  const res2 = await run(long, VIRTIO_BLK_T_GET_ID, 0, { dataLength: 20 });
  assert.equal(Buffer.from(long.machine.memory.read(res2.data, 20)).toString(), 'a-drive-id-longer-th');

  const fallback = rig();
  const res3 = await run(fallback, VIRTIO_BLK_T_GET_ID, 0, { dataLength: 20 });
  assert.ok(fallback.machine.memory.read(res3.data, 20)[0] !== 0, 'a default id derived from the file');
});

// ---- flush and durability

test('Writeback: FLUSH is fdatasync; Unsafe: FLUSH completes without syncing', async () => {
  const io = new SpyIo();
  const wb = rig({ cacheType: 'Writeback', io });
  assert.equal((await run(wb, VIRTIO_BLK_T_OUT, 0, { data: pattern(SECTOR, 2) })).status, VIRTIO_BLK_S_OK);
  assert.equal(io.calls.fdatasync, 0, 'FLUSH negotiated: a write alone does not sync');
  const res = await run(wb, VIRTIO_BLK_T_FLUSH, 0);
  assert.deepEqual({ status: res.status, len: res.len }, { status: VIRTIO_BLK_S_OK, len: 1 });
  assert.equal(io.calls.fdatasync, 1);
  assert.equal(wb.device.metrics.syncs, 1);

  const unsafeIo = new SpyIo();
  const unsafe = rig({ io: unsafeIo });
  assert.equal((await run(unsafe, VIRTIO_BLK_T_FLUSH, 0)).status, VIRTIO_BLK_S_OK);
  assert.equal(unsafeIo.calls.fdatasync, 0);
});

test('Writeback without FLUSH negotiated: each write is synced before it completes (§5.2.6.2)', async () => {
  const io = new SpyIo();
  const r = rig({ cacheType: 'Writeback', io, features: EVERYTHING & ~bit(VIRTIO_BLK_F_FLUSH) });
  assert.equal((await run(r, VIRTIO_BLK_T_OUT, 0, { data: pattern(SECTOR, 2) })).status, VIRTIO_BLK_S_OK);
  assert.equal(io.calls.fdatasync, 1);
  assert.equal((await run(r, VIRTIO_BLK_T_IN, 0, { dataLength: SECTOR })).status, VIRTIO_BLK_S_OK);
  assert.equal(io.calls.fdatasync, 1, 'reads do not sync');
});

test('a write completes only after its fdatasync in write-through mode', async () => {
  const io = new SpyIo();
  const r = rig({ cacheType: 'Writeback', io, features: EVERYTHING & ~bit(VIRTIO_BLK_F_FLUSH) });
  io.hold = 'fdatasync';
  submit(r, VIRTIO_BLK_T_OUT, 0, { data: pattern(SECTOR, 2) });
  await waitForHeld(io);
  assert.equal(io.held.length, 1, 'the sync is outstanding');
  assert.deepEqual(r.queue.takeUsed(), [], 'and the write has not completed');
  io.hold = false;
  io.release();
  assert.equal((await used(r.queue, 1)).length, 1);
});

// ---- discard and write zeroes

function ranges(...list: [sector: number, sectors: number, flags?: number][]): Uint8Array {
  const out = new Uint8Array(16 * list.length);
  const v = new DataView(out.buffer);
  list.forEach(([sector, sectors, flags], i) => {
    v.setBigUint64(16 * i, BigInt(sector), true);
    v.setUint32(16 * i + 8, sectors, true);
    v.setUint32(16 * i + 12, flags ?? 0, true);
  });
  return out;
}

function zeroed(path: string, fromSector: number, sectors: number): boolean {
  return readFileSync(path).subarray(fromSector * SECTOR, (fromSector + sectors) * SECTOR).every((b) => b === 0);
}

test('DISCARD punches holes: the ranges read as zeroes, the file keeps its size', async () => {
  const r = rig({ bytes: 64 * SECTOR });
  const res = await run(r, VIRTIO_BLK_T_DISCARD, 0, { data: ranges([8, 16], [40, 8]) });
  assert.deepEqual({ status: res.status, len: res.len }, { status: VIRTIO_BLK_S_OK, len: 1 });
  assert.ok(zeroed(r.path, 8, 16) && zeroed(r.path, 40, 8));
  assert.equal(readFileSync(r.path)[24 * SECTOR], 25, 'between the ranges untouched');
  assert.equal(statSync(r.path).size, 64 * SECTOR);
  const back = await run(r, VIRTIO_BLK_T_IN, 8, { dataLength: SECTOR });
  assert.ok(r.machine.memory.read(back.data, SECTOR).every((b) => b === 0), 'and the guest reads zeroes');
});

test('WRITE_ZEROES with and without unmap; falls back to writing zeroes where holes cannot be punched', async () => {
  const r = rig({ bytes: 64 * SECTOR });
  assert.equal((await run(r, VIRTIO_BLK_T_WRITE_ZEROES, 0, { data: ranges([1, 3]) })).status, VIRTIO_BLK_S_OK);
  assert.equal((await run(r, VIRTIO_BLK_T_WRITE_ZEROES, 0, { data: ranges([20, 4, 1]) })).status, VIRTIO_BLK_S_OK);
  assert.ok(zeroed(r.path, 1, 3) && zeroed(r.path, 20, 4));
  assert.equal(readFileSync(r.path)[0], 1);
  assert.equal(statSync(r.path).size, 64 * SECTOR);

  const io = new SpyIo();
  io.failPunch = true;
  const noHoles = rig({ bytes: 64 * SECTOR, io });
  assert.equal((await run(noHoles, VIRTIO_BLK_T_WRITE_ZEROES, 0, { data: ranges([30, 2, 1]) })).status, VIRTIO_BLK_S_OK);
  assert.equal(io.calls.writeZeroes, 1);
  assert.ok(zeroed(noHoles.path, 30, 2));
  assert.equal((await run(noHoles, VIRTIO_BLK_T_DISCARD, 0, { data: ranges([10, 2]) })).status, VIRTIO_BLK_S_OK, 'a discard that cannot punch is a successful no-op');
});

test('DISCARD / WRITE_ZEROES errors: unknown flags and unmap on discard are UNSUPP, bad ranges IOERR', async () => {
  const r = rig({ bytes: 64 * SECTOR });
  const before = readFileSync(r.path);
  assert.equal((await run(r, VIRTIO_BLK_T_DISCARD, 0, { data: ranges([0, 1, 1]) })).status, VIRTIO_BLK_S_UNSUPP, 'unmap on a discard');
  assert.equal((await run(r, VIRTIO_BLK_T_WRITE_ZEROES, 0, { data: ranges([0, 1, 2]) })).status, VIRTIO_BLK_S_UNSUPP, 'unknown flag');
  assert.equal((await run(r, VIRTIO_BLK_T_WRITE_ZEROES, 0, { data: ranges([0, 1], [60, 8]) })).status, VIRTIO_BLK_S_IOERR, 'second range past the end');
  assert.equal((await run(r, VIRTIO_BLK_T_DISCARD, 0, { data: new Uint8Array(20) })).status, VIRTIO_BLK_S_IOERR, 'not whole ranges');
  assert.equal((await run(r, VIRTIO_BLK_T_DISCARD, 0, {})).status, VIRTIO_BLK_S_IOERR, 'no ranges');
  assert.equal((await run(r, VIRTIO_BLK_T_DISCARD, 0, { data: ranges(...Array.from({ length: 17 }, (): [number, number] => [0, 1])) })).status, VIRTIO_BLK_S_IOERR, 'more than max_discard_seg');
  assert.deepEqual(readFileSync(r.path), before, 'no range of a failed request was touched');

  const plain = rig({ features: EVERYTHING & ~bit(VIRTIO_BLK_F_DISCARD) });
  assert.equal((await run(plain, VIRTIO_BLK_T_DISCARD, 0, { data: ranges([0, 1]) })).status, VIRTIO_BLK_S_UNSUPP, 'not negotiated');
});

// ---- asynchrony

/** MSI messages sent so far for the request queue (MSI-X vector 1; vector 0 is configuration changes). */
function queueInterrupts(r: Rig): number {
  return r.machine.msi.messages.filter((m) => m.vector === 1).length;
}

test('completions the threadpool hands over together cost one interrupt; the last request in flight interrupts at once', async () => {
  const io = new SpyIo();
  // Without EVENT_IDX every completion wants an interrupt (§2.7.7), so only the device can batch them.
  const r = rig({ io, features: EVERYTHING & ~bit(F_EVENT_IDX) });
  const interrupts = (): number => queueInterrupts(r);
  io.hold = true;
  for (let i = 0; i < 4; i++) submit(r, VIRTIO_BLK_T_IN, i, { dataLength: SECTOR, kick: false });
  r.queue.kick();
  await waitForHeld(io, 4);
  const before = interrupts();
  // Three complete in one turn with a fourth still in flight: their interrupt waits for the turn's end.
  io.hold = false;
  const held = io.held.splice(0);
  for (const deliver of held.slice(0, 3)) deliver();
  assert.equal(interrupts(), before, 'no interrupt while the turn still runs');
  assert.equal(r.queue.takeUsed().length, 3, 'the used elements are there already');
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(interrupts(), before + 1, 'one interrupt for the three');
  // The last one in flight: its interrupt goes out from its own completion.
  held[3]!();
  assert.equal(interrupts(), before + 2);
  assert.equal(r.queue.takeUsed().length, 1);
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(interrupts(), before + 2, 'nothing left over for the end of the turn');
});

test('a large transfer done at once interrupts at once; small ones share the end of the pass', async () => {
  // Without EVENT_IDX every completion wants an interrupt (§2.7.7): the count shows where the device sends them.
  const r = rig({ path: memoryImage(1 << 20), features: EVERYTHING & ~bit(F_EVENT_IDX), hostMapped: true });
  const interrupts = (): number => queueInterrupts(r);
  const before = interrupts();
  const sizes = [SECTOR, SECTOR, BLK_EARLY_NOTIFY_BYTES, 2 * BLK_EARLY_NOTIFY_BYTES, SECTOR, BLK_EARLY_NOTIFY_BYTES - SECTOR];
  for (const [i, size] of sizes.entries()) submit(r, VIRTIO_BLK_T_IN, i * 256, { dataLength: size, kick: false });
  r.queue.kick();
  // All six were done inside the kick's pass, without the threadpool.
  assert.equal(r.device.metrics.immediateTransfers, 6);
  assert.equal(r.queue.takeUsed().length, 6);
  // One interrupt after each large one (the first also covers the two small ones before it), one at the end for the last two.
  assert.equal(interrupts(), before + 3);
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(interrupts(), before + 3, 'nothing left over');
});

test('requests complete out of order, and all of them complete', async () => {
  const io = new SpyIo();
  const r = rig({ io });
  io.hold = true;
  const first = submit(r, VIRTIO_BLK_T_IN, 0, { dataLength: SECTOR });
  // Wait until the first read has reached the file layer and its completion is held (polling,
  // not a fixed sleep: the threadpool may be slow on a loaded machine).
  await waitForHeld(io);
  io.hold = false;
  const second = submit(r, VIRTIO_BLK_T_IN, 1, { dataLength: SECTOR });
  const third = submit(r, VIRTIO_BLK_T_GET_ID, 0, { dataLength: 20 });
  const early = await used(r.queue, 2);
  assert.deepEqual(early.map((u) => u.id).sort(), [second.head, third.head].sort());
  assert.equal(r.device.inFlight, 1);
  io.release();
  const late = await used(r.queue, 1);
  assert.deepEqual(late, [{ id: first.head, len: SECTOR + 1 }]);
  assert.equal(r.machine.memory.readU8(first.status), VIRTIO_BLK_S_OK);
  assert.ok(r.machine.memory.read(first.data, SECTOR).every((b) => b === 1));
});

test('100 concurrent writes, then 100 concurrent reads (indirect chains), all complete with the right data', async () => {
  const r = rig({ bytes: 256 * SECTOR, regions: [[0, 8 << 20]] });
  const writes = Array.from({ length: 100 }, (_, i) => submit(r, VIRTIO_BLK_T_OUT, i, { data: pattern(SECTOR, i), kick: false, indirect: true }));
  r.queue.kick();
  assert.equal((await used(r.queue, writes.length)).length, 100);
  const reads = Array.from({ length: 100 }, (_, i) => submit(r, VIRTIO_BLK_T_IN, i, { dataLength: SECTOR, kick: false, indirect: true }));
  r.queue.kick();
  await used(r.queue, reads.length);
  reads.forEach((s, i) => assert.deepEqual(r.machine.memory.read(s.data, SECTOR), pattern(SECTOR, i), `sector ${i}`));
});

test('reset with requests in flight: their completions are dropped, the device works again', async () => {
  const io = new SpyIo();
  const r = rig({ io });
  io.hold = true;
  const stale = submit(r, VIRTIO_BLK_T_IN, 0, { dataLength: SECTOR });
  await waitForHeld(io);
  const [queue] = r.driver.bringUp(EVERYTHING); // reset, new rings
  io.hold = false;
  io.release();
  await new Promise((resolve) => setTimeout(resolve, 5));
  assert.equal(r.machine.memory.readU8(stale.status), 0xee, 'no status for a request from before the reset');
  assert.equal(r.device.inFlight, 0);
  r.queue = queue!;
  assert.equal((await run(r, VIRTIO_BLK_T_IN, 0, { dataLength: SECTOR })).status, VIRTIO_BLK_S_OK);
});

test('close() waits for file I/O in flight', async () => {
  const io = new SpyIo();
  const r = rig({ io });
  io.hold = true;
  submit(r, VIRTIO_BLK_T_IN, 0, { dataLength: SECTOR });
  await waitForHeld(io);
  let closed = false;
  const closing = r.device.close().then(() => (closed = true));
  await new Promise((resolve) => setTimeout(resolve, 5));
  assert.equal(closed, false);
  io.hold = false;
  io.release();
  await closing;
  assert.equal(r.device.inFlight, 0);
});

// ---- resizing

test('updateBackingFile and capacityChanged raise a configuration change with the new capacity', async () => {
  const r = rig({ bytes: 8 * SECTOR });
  r.machine.msi.messages.length = 0;
  const bigger = image(32 * SECTOR);
  r.device.updateBackingFile(bigger);
  assert.equal(configU32(r, BLK_CONFIG_CAPACITY), 32);
  assert.ok(r.machine.msi.messages.some((m) => m.vector === 0), 'configuration vector');
  assert.equal(r.device.path, bigger);
  const res = await run(r, VIRTIO_BLK_T_IN, 20, { dataLength: SECTOR });
  assert.equal(res.status, VIRTIO_BLK_S_OK);
  assert.ok(r.machine.memory.read(res.data, SECTOR).every((b) => b === 21));

  writeFileSync(bigger, new Uint8Array(40 * SECTOR));
  assert.equal(r.device.capacityChanged(), 40);
  assert.equal(configU32(r, BLK_CONFIG_CAPACITY), 40);
  assert.throws(() => r.device.updateBackingFile(join(scratch, 'missing.img')), /ENOENT/);
  assert.equal(r.device.path, bigger, 'a failed update changes nothing');
});

// ---- hostile chains

test('hostile: a chain with no device-writable byte needs a reset; nothing throws', async () => {
  const r = rig();
  const m = r.machine;
  const header = m.allocator.alloc(17);
  m.memory.writeU32(header, VIRTIO_BLK_T_IN);
  const head = r.queue.addChain([{ addr: header, len: 17, writable: false }]); // "status" in a readable buffer
  r.queue.publish(head);
  r.queue.kick();
  assert.equal(r.driver.status & STATUS.NEEDS_RESET, STATUS.NEEDS_RESET);
  assert.match(r.errors[0] ?? '', /no device-writable status byte/);
  assert.ok(m.guardsIntact());
  r.queue = r.driver.bringUp(EVERYTHING)[0]!;
  assert.equal((await run(r, VIRTIO_BLK_T_IN, 0, { dataLength: SECTOR })).status, VIRTIO_BLK_S_OK, 'works after reset');
});

test('hostile: short header, data in the wrong direction, extra buffers → IOERR with the status reachable', async () => {
  const r = rig();
  const m = r.machine;
  const before = readFileSync(r.path);
  const chain = async (buffers: DriverBuffer[]): Promise<number> => {
    const head = r.queue.addChain(buffers);
    r.queue.publish(head);
    r.queue.kick();
    const [u] = await used(r.queue, 1);
    assert.equal(u!.id, head);
    assert.equal(u!.len, 1);
    const last = buffers[buffers.length - 1]!;
    return m.memory.readU8(last.addr + last.len - 1);
  };
  const header = (type: number): number => {
    const at = m.allocator.alloc(16);
    m.memory.writeU32(at, type);
    return at;
  };
  const data = m.allocator.alloc(SECTOR);
  const status = m.allocator.alloc(1);
  const shortHeader = m.allocator.alloc(8);
  assert.equal(await chain([{ addr: shortHeader, len: 8, writable: false }, { addr: status, len: 1, writable: true }]), VIRTIO_BLK_S_IOERR, 'header too short');
  assert.equal(await chain([{ addr: status, len: 1, writable: true }]), VIRTIO_BLK_S_IOERR, 'no header at all');
  assert.equal(
    await chain([{ addr: header(VIRTIO_BLK_T_IN), len: 16, writable: false }, { addr: data, len: SECTOR, writable: false }, { addr: status, len: 1, writable: true }]),
    VIRTIO_BLK_S_IOERR,
    'IN with a device-readable data buffer',
  );
  assert.equal(
    await chain([{ addr: header(VIRTIO_BLK_T_OUT), len: 16, writable: false }, { addr: data, len: SECTOR, writable: true }, { addr: status, len: 1, writable: true }]),
    VIRTIO_BLK_S_IOERR,
    'OUT with a device-writable data buffer',
  );
  assert.equal(
    await chain([{ addr: header(VIRTIO_BLK_T_FLUSH), len: 16, writable: false }, { addr: data, len: SECTOR, writable: true }, { addr: status, len: 1, writable: true }]),
    VIRTIO_BLK_S_IOERR,
    'FLUSH with data',
  );
  assert.equal(
    await chain([{ addr: header(VIRTIO_BLK_T_GET_ID), len: 16, writable: false }, { addr: data, len: 20, writable: false }, { addr: status, len: 1, writable: true }]),
    VIRTIO_BLK_S_IOERR,
    'GET_ID into a readable buffer',
  );
  assert.deepEqual(readFileSync(r.path), before);
  assert.equal(r.driver.status & STATUS.NEEDS_RESET, 0, 'the device keeps working');
  assert.ok(m.guardsIntact());
});

test('hostile: the guest rewrites the ranges after submitting; what was checked is what is done', async () => {
  const io = new SpyIo();
  const r = rig({ io, bytes: 64 * SECTOR });
  io.hold = true;
  const s = submit(r, VIRTIO_BLK_T_WRITE_ZEROES, 0, { data: ranges([0, 1], [2, 1]) });
  // After the device checked both ranges, point the second one far past the end.
  r.machine.memory.writeU64(s.data + 16, 10_000n);
  r.machine.memory.writeU32(s.data + 24, 100_000);
  await waitForHeld(io);
  io.hold = false;
  io.release();
  assert.equal((await used(r.queue, 1)).length, 1);
  assert.equal(r.machine.memory.readU8(s.status), VIRTIO_BLK_S_OK);
  assert.equal(statSync(r.path).size, 64 * SECTOR, 'the file did not grow');
  assert.ok(zeroed(r.path, 2, 1));
});

test('hostile: a status byte inside an indirect table written by the device is still guest memory', async () => {
  const r = rig();
  const m = r.machine;
  const table = m.allocator.alloc(48, 16);
  const header = m.allocator.alloc(16);
  m.memory.writeU32(header, VIRTIO_BLK_T_GET_ID);
  r.queue.writeDescriptor(0, header, 16, DESC_F.NEXT, 1, table);
  r.queue.writeDescriptor(1, table, 21, DESC_F.WRITE, 0, table); // the id lands on the table itself
  r.queue.writeDescriptor(0, table, 32, DESC_F.INDIRECT, 0);
  r.queue.publish(0);
  r.queue.kick();
  await used(r.queue, 1);
  assert.ok(m.guardsIntact());
});

test('every slot busy: the device waits for a completion, then takes the next request (stale ones free slots too)', async () => {
  const io = new SpyIo();
  const r = rig({ io, regions: [[0, 8 << 20]] });
  io.hold = true;
  // 256 one-descriptor (indirect) requests fill every slot; a reset then makes them all stale.
  for (let i = 0; i < 256; i++) submit(r, VIRTIO_BLK_T_IN, i % 64, { dataLength: SECTOR, indirect: true, kick: false });
  r.queue.kick();
  await waitForHeld(io, 256);
  assert.equal(r.device.inFlight, 256);
  r.queue = r.driver.bringUp(EVERYTHING)[0]!;
  io.hold = false;
  const waiting = submit(r, VIRTIO_BLK_T_IN, 3, { dataLength: SECTOR });
  assert.equal(r.machine.memory.readU8(waiting.status), 0xee, 'no free slot yet');
  io.release();
  assert.deepEqual(await used(r.queue, 1), [{ id: waiting.head, len: SECTOR + 1 }]);
  assert.ok(r.machine.memory.read(waiting.data, SECTOR).every((b) => b === 4));
  assert.equal(r.device.inFlight, 0);
});

test('close() in Writeback mode syncs the image', async () => {
  const io = new SpyIo();
  const r = rig({ io, cacheType: 'Writeback' });
  await run(r, VIRTIO_BLK_T_OUT, 0, { data: pattern(SECTOR, 1) });
  await r.device.close();
  assert.equal(io.calls.fdatasync, 1);
  await r.device.close(); // twice is harmless
});

test('multi-queue: VIRTIO_BLK_F_MQ and num_queues; each queue completes on its own ring and MSI-X vector; a full queue does not stall another', async () => {
  const io = new SpyIo();
  const r = rig({ io, numQueues: 3, regions: [[0, 8 << 20]] });
  assert.ok((r.device.deviceFeatures & bit(VIRTIO_BLK_F_MQ)) !== 0n, 'MQ offered');
  assert.ok((r.driver.negotiated & bit(VIRTIO_BLK_F_MQ)) !== 0n, 'MQ negotiated');
  assert.equal(configU32(r, BLK_CONFIG_NUM_QUEUES) & 0xffff, 3, 'num_queues');
  const queues = r.driver.queues;
  assert.equal(queues.length, 3);
  const on = (q: number): Rig => ({ ...r, queue: queues[q]! });

  // Queue 0 fills all 256 of its slots and waits on the file; queues 1 and 2 still serve.
  io.hold = true;
  for (let i = 0; i < 256; i++) submit(r, VIRTIO_BLK_T_IN, i % 64, { dataLength: SECTOR, indirect: true, kick: false });
  queues[0]!.kick();
  await waitForHeld(io, 256);
  const extra = submit(r, VIRTIO_BLK_T_IN, 5, { dataLength: SECTOR });
  io.hold = false;
  const before = r.machine.msi.messages.length;
  const w = await run(on(1), VIRTIO_BLK_T_OUT, 7, { data: pattern(SECTOR, 9) });
  assert.equal(w.status, VIRTIO_BLK_S_OK);
  const g = await run(on(2), VIRTIO_BLK_T_IN, 7, { dataLength: SECTOR });
  assert.equal(g.status, VIRTIO_BLK_S_OK);
  assert.deepEqual(r.machine.memory.read(g.data, SECTOR), pattern(SECTOR, 9), 'queue 2 reads what queue 1 wrote');
  // bringUp gives queue i vector i + 1 (vector 0 is configuration changes).
  assert.deepEqual(r.machine.msi.messages.slice(before).map((m) => m.vector), [2, 3], 'each completion on its own queue vector');
  assert.equal(queues[0]!.takeUsed().length, 0, 'queue 0 still waits');

  io.release();
  const done = await used(queues[0]!, 257);
  assert.ok(done.some((u) => u.id === extra.head), 'the request that waited for a slot completed too');
  assert.equal(r.device.inFlight, 0);
  assert.ok(r.machine.msi.messages.slice(before).some((m) => m.vector === 1), 'queue 0 completions on vector 1');
  assert.deepEqual(r.errors, []);
});

test('numQueues outside 1..32 is refused; one queue offers no MQ', () => {
  const path = image(8 * SECTOR);
  for (const numQueues of [0, 33, 1.5]) assert.throws(() => new VirtioBlock({ path, numQueues }), /numQueues must be an integer from 1 to 32/);
  const one = new VirtioBlock({ path });
  assert.equal(one.deviceFeatures & bit(VIRTIO_BLK_F_MQ), 0n);
  assert.deepEqual(one.queueMaxSizes, [256]);
  void one.close();
});

test('a driver that keeps requests coming cannot keep the device (and the VMM event loop) busy: one ring per pass', async () => {
  const SIZE = 8;
  const TOTAL = 10 * SIZE;
  const r = rig({ queueSize: SIZE });
  const m = r.machine;
  // GET_ID completes inside the pass that takes it, so only the pass budget can end the pass.
  const header = m.allocator.alloc(16);
  m.memory.writeU32(header, VIRTIO_BLK_T_GET_ID);
  const id = m.allocator.alloc(20);
  const status = m.allocator.alloc(1, 1);
  const head = r.queue.addChain([
    { addr: header, len: 16, writable: false },
    { addr: id, len: 20, writable: true },
    { addr: status, len: 1, writable: true },
  ]);
  const race = raceDevice(r.transport.queues[0]!, () => r.queue.publish(head), TOTAL);
  r.queue.publish(head);
  r.queue.kick();
  assert.equal(race.taken(), SIZE, 'the kick took one ring of requests and returned');
  await turnUntil(() => race.taken() === TOTAL + 1);
  assert.equal(race.taken(), TOTAL + 1, 'the rest was served on later turns, without kicks');
  const done = r.queue.takeUsed();
  assert.equal(done.length, TOTAL + 1);
  assert.ok(done.every((u) => u.id === head && u.len === 21));
  assert.equal(m.memory.readU8(status), VIRTIO_BLK_S_OK);
  assert.deepEqual(r.errors, []);
  assert.equal((await run(r, VIRTIO_BLK_T_IN, 3, { dataLength: SECTOR })).status, VIRTIO_BLK_S_OK, 'a kick is heard again after the backlog');
});
