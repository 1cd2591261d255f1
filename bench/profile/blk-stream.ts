/**
 * What a large sequential read costs VirtioBlock per request, without a guest or KVM, split into
 * the system call itself and the JavaScript around it. bench/blk's 1 MiB read at queue depth 8 is
 * bound by tsvmm's main thread (about one core busy), and a V8 profile of it in the nested host
 * put only a third of that thread's time in preadv2: the rest is the device walking, checking and
 * gathering a request's ~256 descriptors. This measures that rest directly.
 *
 * The guest side is the unit tests' driver (test/support/virtio-driver.ts) in guest memory with
 * host addresses, laid out as Linux's virtio_blk lays out a 1 MiB direct read: one indirect
 * descriptor per request, naming the 16-byte header, SEGMENTS device-writable 4 KiB pages
 * scattered over guest RAM (a user buffer's pages are not contiguous), and the status byte. With
 * seg_max 254 Linux cuts a 1 MiB request of 256 scattered pages into 254 pages and 2, so the
 * default is 254 pages. The image is a file in /dev/shm (tmpfs), as bench/blk's: every read is a
 * copy, done at once on the calling thread.
 *
 * Each round queues DEPTH requests, kicks once (the device serves them all in that call) and
 * takes the used elements back. The baseline is the same preadv2 calls made directly on the same
 * iovec layout, so "JavaScript" is the device's time minus that. Device and baseline rounds
 * alternate (profile-tool.ts), so the machine's load weighs on both alike.
 *
 *   node dist/bench/profile/blk-stream.js [REQUESTS] [--segments N] [--depth N]   (add --cpu-prof for a profile)
 *
 * A profiling aid for the block path (docs/benchmarks.md), not a comparison with peers.
 */
import { closeSync, ftruncateSync, openSync, unlinkSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { alternate, runIfMain } from './profile-tool.js';
import { featureBit } from '../../src/devices/virtio/device.js';
import { HostIovecs } from '../../src/devices/virtio/host-iovecs.js';
import { BLK_REQUEST_HEADER_BYTES, VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN, VirtioBlock } from '../../src/devices/virtio/blk.js';
import { transferIovecsNow } from '../../src/kvm/libc.js';
import { DESC_F, F_EVENT_IDX, F_INDIRECT_DESC, F_VERSION_1, TestMachine, VirtioPciDriver, type DriverBuffer } from '../../test/support/virtio-driver.js';

const PAGE = 4096;
const QUEUE_SIZE = 256;
const FEATURES = [F_VERSION_1, F_EVENT_IDX, F_INDIRECT_DESC].reduce((mask, f) => mask | featureBit(f), 0n);

export interface BlkStreamResult {
  readonly requests: number;
  readonly bytesPerRequest: number;
  /** Per request, µs: the device's call, and the same preadv2 made directly. */
  readonly deviceUs: number;
  readonly syscallUs: number;
}

export function measureRead(requests: number, segments: number, depth: number): BlkStreamResult {
  const bytes = segments * PAGE;
  // Enough RAM for DEPTH requests' pages with room to scatter them, plus rings and tables.
  const ramBytes = Math.max(64 << 20, 4 * depth * bytes);
  const machine = new TestMachine({ regions: [[0, ramBytes]], hostMapped: true });
  const imagePath = `/dev/shm/tsvmm-blk-stream-${process.pid}.img`;
  const imageBytes = 64 << 20;
  const created = openSync(imagePath, 'w');
  ftruncateSync(created, imageBytes);
  closeSync(created);
  const device = new VirtioBlock({ path: imagePath });
  const { slot } = machine.addVirtio(device, {});
  const queue = new VirtioPciDriver(machine, slot).bringUp(FEATURES, { queueSize: QUEUE_SIZE })[0]!;
  try {
    // Every page of RAM after the allocator's start, shuffled: each request takes its own pages.
    const pool = machine.allocator.alloc(depth * (bytes + 2 * PAGE), PAGE);
    const pages: number[] = [];
    for (let i = 0; i < depth * segments; i++) pages.push(pool + i * PAGE);
    for (let i = pages.length - 1; i > 0; i--) {
      const j = (i * 2654435761) % (i + 1);
      [pages[i], pages[j]] = [pages[j]!, pages[i]!];
    }
    const headers = machine.allocator.alloc(depth * 32, 16);
    // Request r's indirect table, written once; each round its head descriptor is r.
    const tables: number[] = [];
    for (let r = 0; r < depth; r++) {
      const header = headers + 32 * r;
      machine.memory.writeU32(header, VIRTIO_BLK_T_IN);
      const chain: DriverBuffer[] = [{ addr: header, len: BLK_REQUEST_HEADER_BYTES, writable: false }];
      for (let s = 0; s < segments; s++) chain.push({ addr: pages[r * segments + s]!, len: PAGE, writable: true });
      chain.push({ addr: header + BLK_REQUEST_HEADER_BYTES, len: 1, writable: true });
      const table = machine.allocator.alloc(16 * chain.length, 16);
      chain.forEach((b, i) => queue.writeDescriptor(i, b.addr, b.len, (b.writable ? DESC_F.WRITE : 0) | (i + 1 < chain.length ? DESC_F.NEXT : 0), i + 1, table));
      tables.push(table);
    }
    const tableBytes = 16 * (segments + 2);
    let next = 0;
    const setSector = (r: number): void => {
      next = (next + bytes) % (imageBytes - bytes);
      machine.memory.writeU32(headers + 32 * r + 8, next / 512);
    };
    const device = (): [number, bigint] => {
      for (let r = 0; r < depth; r++) {
        setSector(r);
        machine.memory.writeU8(headers + 32 * r + BLK_REQUEST_HEADER_BYTES, 0xff);
        queue.writeDescriptor(r, tables[r]!, tableBytes, DESC_F.INDIRECT, 0);
        queue.publish(r);
      }
      const t0 = process.hrtime.bigint();
      queue.kick();
      const ns = process.hrtime.bigint() - t0;
      const used = queue.takeUsed();
      if (used.length !== depth) throw new Error(`the device completed ${used.length} of ${depth} requests in its call`);
      for (let r = 0; r < depth; r++) {
        const status = machine.memory.readU8(headers + 32 * r + BLK_REQUEST_HEADER_BYTES);
        if (status !== VIRTIO_BLK_S_OK || used[r]!.len !== bytes + 1) throw new Error(`request ${r}: status ${status}, used length ${used[r]!.len}`);
      }
      queue.setUsedEvent(0);
      return [depth, ns];
    };
    const fd = openSync(imagePath, 'r');
    const iov = new HostIovecs(1024);
    iov.useMemory(machine.memory);
    const region = machine.memory.regions[0]!;
    const baseline = (): [number, bigint] => {
      const t0 = process.hrtime.bigint();
      for (let r = 0; r < depth; r++) {
        const position = (next = (next + bytes) % (imageBytes - bytes));
        iov.reset();
        for (let s = 0; s < segments; s++) iov.add(region.bytes, pages[r * segments + s]!, PAGE);
        if (transferIovecsNow(fd, false, iov.address, iov.count, position, 0) !== bytes) throw new Error('baseline preadv2 failed');
      }
      return [depth, process.hrtime.bigint() - t0];
    };
    const r = alternate(Math.max(1, Math.ceil(requests / depth)), device, baseline, 200);
    closeSync(fd);
    return { requests: r.items, bytesPerRequest: bytes, deviceUs: r.deviceUs, syscallUs: r.baselineUs };
  } finally {
    void device.close();
    unlinkSync(imagePath);
  }
}

function main(): void {
  const { values, positionals } = parseArgs({ options: { segments: { type: 'string' }, depth: { type: 'string' } }, allowPositionals: true });
  const int = (s: string | undefined, fallback: number, what: string): number => {
    const n = Number(s ?? fallback);
    if (!(Number.isInteger(n) && n > 0)) throw new Error(`${what} must be a positive integer, got '${s}'`);
    return n;
  };
  const requests = int(positionals[0], 4000, 'REQUESTS');
  const segments = int(values.segments, 254, '--segments');
  if (segments > QUEUE_SIZE - 2) throw new Error(`--segments: at most ${QUEUE_SIZE - 2} (seg_max)`);
  const depth = int(values.depth, 8, '--depth');
  const r = measureRead(requests, segments, depth);
  const f = (x: number): string => x.toFixed(2);
  console.log(
    `read: ${r.requests} requests of ${r.bytesPerRequest} bytes in ${segments} pages, ${depth} per kick; device ${f(r.deviceUs)} us per request, ` +
      `the same preadv2 alone ${f(r.syscallUs)} us, JavaScript ${f(r.deviceUs - r.syscallUs)} us (${((100 * (r.deviceUs - r.syscallUs)) / r.deviceUs).toFixed(0)} %)`,
  );
}

runIfMain(import.meta.url, 'blk-stream', main);
