/**
 * Bounded-time fuzzing of the virtio core through the PCI transport and the entropy device (and,
 * in the second test, the block device with its asynchronous file I/O):
 * random queue sizes, ring addresses, feature sets, descriptor tables (direct and indirect),
 * available rings and register writes. Checks that no exception escapes a device model and that
 * no byte outside guest RAM changes (guard bytes around every RAM region).
 *
 * FUZZ_SEED=<n> replays a run; FUZZ_MS=<ms> changes its length (default 2000 ms).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
  VirtioBlock,
} from '../../src/devices/virtio/blk.js';
import { VirtioRng } from '../../src/devices/virtio/rng.js';
import { COMMON, DESC_F, F_EVENT_IDX, F_INDIRECT_DESC, F_VERSION_1, STATUS, TestMachine, VirtioPciDriver } from '../support/virtio-driver.js';
import { FUZZ_DURATION_MS, FUZZ_REGIONS, FUZZ_SEED, prng } from '../support/fuzz.js';
import { featureBit } from '../../src/devices/virtio/device.js';

const DURATION_MS = FUZZ_DURATION_MS;
const SEED = FUZZ_SEED;

const REGIONS = FUZZ_REGIONS;
const bit = featureBit;

test(`fuzz: random queues through virtio-pci and virtio-rng never throw or write outside RAM (seed ${SEED})`, (t) => {
  const random = prng(SEED);
  const int = (n: number) => Math.floor(random() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
  const chance = (p: number) => random() < p;

  const machine = new TestMachine({ regions: REGIONS });
  const device = new VirtioRng();
  const { transport, slot } = machine.addVirtio(device, { onError: () => {} });
  const driver = new VirtioPciDriver(machine, slot);
  driver.probe();
  const memory = machine.memory;

  const ramAddress = (): number => {
    const [gpa, size] = pick(REGIONS);
    return gpa + int(size);
  };
  const anyAddress = (): number => {
    switch (int(6)) {
      case 0:
        return int(2 ** 32) * 2 ** 21 + int(2 ** 21); // anywhere below 2^53
      case 1: {
        const [gpa, size] = pick(REGIONS);
        return gpa + size - int(64); // at the end of a region
      }
      case 2:
        return 2 ** 53 + int(1000) * 2 ** 20; // beyond safe integers
      default:
        return ramAddress();
    }
  };
  const anyLength = (): number => pick([() => int(64), () => int(4096), () => int(2 ** 17), () => int(2 ** 32), () => 16 * (1 + int(8))])();
  const aligned = (address: number, align: number) => address - (address % align);
  const inRam = (gpa: number, len: number) => memory.contains(gpa, len);

  let iterations = 0;
  let kicks = 0;
  let needsReset = 0;
  const deadline = Date.now() + DURATION_MS;
  try {
    while (Date.now() < deadline) {
      iterations++;
      // Bring-up with random features and queue layout.
      const size = chance(0.85) ? 2 ** int(9) : pick([0, 3, 300, 0xffff, 512, 1024]);
      const features = chance(0.9) ? bit(F_VERSION_1) | (chance(0.5) ? bit(F_EVENT_IDX) : 0n) | (chance(0.7) ? bit(F_INDIRECT_DESC) : 0n) : BigInt(int(2 ** 32)) << BigInt(int(33));
      driver.negotiate(features, { force: true });
      if (chance(0.8)) {
        driver.enableMsix();
        driver.write(COMMON.CONFIG_MSIX_VECTOR, 2, int(3));
      }
      driver.write(COMMON.QUEUE_SELECT, 2, chance(0.95) ? 0 : int(4));
      driver.write(COMMON.QUEUE_SIZE, 2, size);
      const layout = chance(0.9)
        ? { desc: aligned(ramAddress(), 16), avail: aligned(ramAddress(), 2), used: aligned(ramAddress(), 4) }
        : { desc: anyAddress(), avail: anyAddress(), used: anyAddress() };
      driver.write64(COMMON.QUEUE_DESC, layout.desc);
      driver.write64(COMMON.QUEUE_DRIVER, layout.avail);
      driver.write64(COMMON.QUEUE_DEVICE, layout.used);
      driver.write(COMMON.QUEUE_MSIX_VECTOR, 2, int(3));
      driver.write(COMMON.QUEUE_ENABLE, 2, 1);
      driver.driverOk();

      const n = Math.max(1, Math.min(size & 0xffff, 256));
      // Half the rounds are "sane": mostly well-formed chains that reach the device; the rest are wild.
      const wild = chance(0.5);
      const error = wild ? 0.3 : 0.01;
      for (let round = 0; round < 4; round++) {
        // Random descriptors, some pointing at random indirect tables.
        if (inRam(layout.desc, 16 * n)) {
          for (let i = 0; i < n; i++) {
            const indirect = chance(wild ? 0.15 : 0.05);
            let addr = chance(error) ? anyAddress() : ramAddress();
            let len = chance(error) ? anyLength() : int(256);
            if (indirect && chance(0.8)) {
              const entries = 1 + int(12);
              addr = aligned(ramAddress(), 16);
              len = 16 * entries;
              if (inRam(addr, len)) {
                for (let k = 0; k < entries; k++) {
                  const flags = chance(error / 3) ? DESC_F.INDIRECT : (chance(1 - error) ? DESC_F.WRITE : 0) | (chance(0.7) ? DESC_F.NEXT : 0);
                  memory.writeU64(addr + 16 * k, BigInt(chance(error) ? anyAddress() : ramAddress()));
                  memory.writeU32(addr + 16 * k + 8, chance(error) ? anyLength() % 2 ** 32 : int(256));
                  memory.writeU16(addr + 16 * k + 12, flags);
                  memory.writeU16(addr + 16 * k + 14, chance(1 - error) ? k + 1 : int(0x10000));
                }
              }
            }
            const flags = (indirect ? DESC_F.INDIRECT : 0) | (chance(1 - error) ? DESC_F.WRITE : 0) | (chance(indirect ? error : 0.3) ? DESC_F.NEXT : 0) | (chance(error / 10) ? int(0x10000) : 0);
            memory.writeU64(layout.desc + 16 * i, BigInt(addr));
            memory.writeU32(layout.desc + 16 * i + 8, len % 2 ** 32);
            memory.writeU16(layout.desc + 16 * i + 12, flags & 0xffff);
            memory.writeU16(layout.desc + 16 * i + 14, chance(1 - error) ? int(n) : int(0x10000));
          }
        }
        if (inRam(layout.avail, 6 + 2 * n)) {
          const idx = memory.readU16(layout.avail + 2);
          const added = chance(1 - error / 5) ? int(n + 1) : int(0x10000);
          for (let k = 0; k < Math.min(added, n); k++) memory.writeU16(layout.avail + 4 + 2 * ((idx + k) % n), chance(1 - error / 5) ? int(n) : int(0x10000));
          memory.writeU16(layout.avail + 2, (idx + added) & 0xffff);
          if (chance(0.3)) memory.writeU16(layout.avail + 4 + 2 * n, int(0x10000)); // used_event
          if (chance(0.1)) memory.writeU16(layout.avail, int(4)); // flags
        }
        for (let k = 1 + int(3); k > 0; k--) {
          kicks++;
          machine.mmioWrite(driver.barAddress + 0x3000 + 4 * (chance(0.9) ? 0 : int(8)), 2, 0);
        }
        // Occasionally hit the common configuration with garbage.
        if (chance(0.05)) driver.write(int(0x40) & ~1, 2, int(0x10000));
        if (chance(0.03)) driver.write(COMMON.DEVICE_STATUS, 1, int(256));
        if (!machine.guardsIntact()) throw new Error('a write landed outside guest RAM');
      }
      if (driver.status & STATUS.NEEDS_RESET) needsReset++;
    }
  } catch (e) {
    assert.fail(`fuzz failed after ${iterations} iterations with FUZZ_SEED=${SEED}: ${e instanceof Error ? e.stack : String(e)}`);
  }
  t.diagnostic(`seed ${SEED}: ${iterations} bring-ups, ${kicks} kicks, ${needsReset} ended in DEVICE_NEEDS_RESET, ${device.requestsServed} requests served, ${transport.notifications} notifications`);
  assert.ok(machine.guardsIntact(), `FUZZ_SEED=${SEED}`);
  assert.ok(iterations > 10, `FUZZ_SEED=${SEED}: only ${iterations} iterations ran`);
  assert.ok(device.requestsServed > 0, `FUZZ_SEED=${SEED}: no request was ever served, the fuzzer is too hostile to reach the device`);
});

test(`fuzz: random requests through virtio-pci and virtio-blk never throw, write outside RAM or beyond the image (seed ${SEED})`, async (t) => {
  const random = prng(SEED ^ 0x5bd1e995);
  const int = (n: number) => Math.floor(random() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
  const chance = (p: number) => random() < p;

  const scratch = mkdtempSync(join(tmpdir(), 'tsvmm-blk-fuzz-'));
  const imageBytes = 64 * 512;
  const path = join(scratch, 'disk.img');
  writeFileSync(path, new Uint8Array(imageBytes));
  const machine = new TestMachine({ regions: REGIONS });
  const device = new VirtioBlock({ path, cacheType: chance(0.5) ? 'Writeback' : 'Unsafe', driveId: 'fuzz' });
  const { transport, slot } = machine.addVirtio(device, { onError: () => {} });
  const driver = new VirtioPciDriver(machine, slot);
  driver.probe();
  const memory = machine.memory;
  const ramAddress = (): number => {
    const [gpa, size] = pick(REGIONS);
    return gpa + int(size);
  };
  /** An address with `len` bytes of RAM after it (mostly). */
  const buffer = (len: number): number => {
    for (let i = 0; i < 8; i++) {
      const at = ramAddress();
      if (memory.contains(at, len)) return at;
    }
    return ramAddress();
  };
  const aligned = (address: number, align: number) => address - (address % align);
  const types = [VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES];

  let iterations = 0;
  let kicks = 0;
  let needsReset = 0;
  let finalSize = -1;
  const deadline = Date.now() + DURATION_MS;
  try {
    while (Date.now() < deadline) {
      iterations++;
      const size = chance(0.9) ? 2 ** (2 + int(7)) : pick([0, 3, 300, 1024]);
      const features = chance(0.95) ? (1n << 64n) - 1n : BigInt(int(2 ** 32)) << BigInt(int(33));
      driver.negotiate(chance(0.5) ? features : features & ~bit(F_EVENT_IDX), { force: false });
      if (chance(0.8)) {
        driver.enableMsix();
        driver.write(COMMON.CONFIG_MSIX_VECTOR, 2, 0);
      }
      driver.write(COMMON.QUEUE_SELECT, 2, 0);
      driver.write(COMMON.QUEUE_SIZE, 2, size);
      const n = Math.max(1, Math.min(size & 0xffff, 256));
      const layout = { desc: aligned(buffer(16 * n), 16), avail: aligned(buffer(6 + 2 * n), 2), used: aligned(buffer(6 + 8 * n), 4) };
      driver.write64(COMMON.QUEUE_DESC, layout.desc);
      driver.write64(COMMON.QUEUE_DRIVER, layout.avail);
      driver.write64(COMMON.QUEUE_DEVICE, layout.used);
      driver.write(COMMON.QUEUE_MSIX_VECTOR, 2, 1);
      driver.write(COMMON.QUEUE_ENABLE, 2, 1);
      driver.driverOk();

      const error = chance(0.5) ? 0.01 : 0.15;
      const indirect = (features & bit(F_INDIRECT_DESC)) !== 0n;
      for (let round = 0; round < 4; round++) {
        // Chains shaped like block requests, with random faults: wrong directions, odd lengths, wild sectors.
        let next = 0;
        const heads: number[] = [];
        while (next < n && heads.length < 8) {
          const header = buffer(16);
          if (memory.contains(header, 16)) {
            memory.writeU32(header, chance(error) ? int(2 ** 32) : pick(types));
            memory.writeU64(header + 8, BigInt(chance(error) ? int(2 ** 32) * 2 ** 21 : int(80)));
          }
          const parts: { addr: number; len: number; flags: number }[] = [{ addr: header, len: chance(error) ? int(32) : 16, flags: 0 }];
          for (let k = int(3); k > 0; k--) {
            const len = chance(error) ? int(5000) : 512 * (1 + int(8));
            parts.push({ addr: buffer(len), len, flags: chance(0.5) ? DESC_F.WRITE : 0 });
          }
          if (chance(1 - error / 3)) parts.push({ addr: buffer(1), len: 1, flags: DESC_F.WRITE });
          // Readable before writable, as the queue insists (a violation is covered by the other fuzz test).
          if (chance(1 - error)) parts.sort((a, b) => (a.flags & DESC_F.WRITE) - (b.flags & DESC_F.WRITE));
          const useIndirect = indirect && chance(0.3);
          if (useIndirect) {
            const table = aligned(buffer(16 * parts.length + 16), 16);
            if (!memory.contains(table, 16 * parts.length)) continue;
            parts.forEach((p, k) => {
              memory.writeU64(table + 16 * k, BigInt(p.addr));
              memory.writeU32(table + 16 * k + 8, p.len);
              memory.writeU16(table + 16 * k + 12, p.flags | (k + 1 < parts.length ? DESC_F.NEXT : 0));
              memory.writeU16(table + 16 * k + 14, k + 1);
            });
            if (!memory.contains(layout.desc, 16 * n)) break;
            memory.writeU64(layout.desc + 16 * next, BigInt(table));
            memory.writeU32(layout.desc + 16 * next + 8, 16 * parts.length);
            memory.writeU16(layout.desc + 16 * next + 12, DESC_F.INDIRECT);
            heads.push(next++);
            continue;
          }
          if (next + parts.length > n || !memory.contains(layout.desc, 16 * n)) break;
          heads.push(next);
          parts.forEach((p, k) => {
            const i = next + k;
            memory.writeU64(layout.desc + 16 * i, BigInt(p.addr));
            memory.writeU32(layout.desc + 16 * i + 8, p.len);
            memory.writeU16(layout.desc + 16 * i + 12, p.flags | (k + 1 < parts.length ? DESC_F.NEXT : 0));
            memory.writeU16(layout.desc + 16 * i + 14, chance(error / 10) ? int(0x10000) : i + 1);
          });
          next += parts.length;
        }
        if (memory.contains(layout.avail, 6 + 2 * n)) {
          const idx = memory.readU16(layout.avail + 2);
          heads.forEach((head, k) => memory.writeU16(layout.avail + 4 + 2 * ((idx + k) % n), head));
          memory.writeU16(layout.avail + 2, (idx + (chance(error / 10) ? int(0x10000) : heads.length)) & 0xffff);
        }
        kicks++;
        machine.mmioWrite(driver.barAddress + 0x3000, 2, 0);
        // Let file I/O complete (or not) before the next round; sometimes reset under its feet.
        for (let k = int(4); k > 0; k--) await new Promise((resolve) => setImmediate(resolve));
        if (chance(0.03)) driver.write(COMMON.DEVICE_STATUS, 1, int(256));
        if (!machine.guardsIntact()) throw new Error('a write landed outside guest RAM');
      }
      if (driver.status & STATUS.NEEDS_RESET) needsReset++;
    }
    await device.close();
    finalSize = statSync(path).size;
  } catch (e) {
    assert.fail(`blk fuzz failed after ${iterations} iterations with FUZZ_SEED=${SEED}: ${e instanceof Error ? e.stack : String(e)}`);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  const m = device.metrics;
  const served = m.reads + m.writes + m.flushes + m.getIds + m.discards + m.writeZeroes;
  t.diagnostic(`seed ${SEED}: ${iterations} bring-ups, ${kicks} kicks, ${needsReset} ended in DEVICE_NEEDS_RESET, ${served} requests served (${m.ioErrors} IOERR, ${m.unsupported} UNSUPP), ${transport.notifications} notifications`);
  assert.ok(machine.guardsIntact(), `FUZZ_SEED=${SEED}`);
  assert.equal(device.inFlight, 0, 'close() waited for every request');
  assert.equal(finalSize, imageBytes, `FUZZ_SEED=${SEED}: the image changed size`);
  assert.ok(iterations > 10, `FUZZ_SEED=${SEED}: only ${iterations} iterations ran`);
  assert.ok(served > 0, `FUZZ_SEED=${SEED}: no request was ever served`);
});
