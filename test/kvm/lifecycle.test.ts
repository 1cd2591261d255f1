/** pause(), resume() and stop() kick a spinning vCPU out of the guest promptly. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Machine } from '../../src/vmm/machine.js';
import { enterRealMode } from '../../src/vmm/cpu-modes.js';
import { MiB } from '../../src/memory/layout.js';
import { sleep, until, withTimeout } from './harness.js';

const COUNTER = 0x3000;

test('pause, resume and stop a vCPU that never exits on its own', async () => {
  const m = Machine.create({ memory: { ramBytes: 2 * MiB }, irqchip: false });
  try {
    // prettier-ignore
    m.memory.write(0x1000, Uint8Array.from([
      0x66, 0xff, 0x06, 0x00, 0x30, // loop: inc dword [0x3000]
      0xeb, 0xf9,                   //       jmp loop
    ]));
    enterRealMode(m.vcpu(0), { cs: 0, ip: 0x1000 });
    m.start();
    // Worker threads start slowly in the emulated nested host: wait for the guest to count.
    await withTimeout(until(() => m.memory.readU32(COUNTER) > 0), 20_000, 'the guest to start counting');

    let t = Date.now();
    await withTimeout(m.pause(), 5_000, 'pause');
    const pauseMs = Date.now() - t;
    const frozen = m.memory.readU32(COUNTER);
    await sleep(200);
    assert.equal(m.memory.readU32(COUNTER), frozen, 'a paused vCPU must not run');
    assert.ok(m.exitCounts()[0]!.intr >= 1);

    m.resume();
    await withTimeout(until(() => m.memory.readU32(COUNTER) > frozen), 5_000, 'the resumed guest to count again');

    t = Date.now();
    const exit = await withTimeout(m.stop(), 5_000, 'stop');
    const stopMs = Date.now() - t;
    assert.deepEqual(exit, { reason: 'stopped' });
    // Generous bounds: the nested host is emulated; a missed kick would take forever, not 2 s.
    assert.ok(pauseMs < 2_000, `pause took ${pauseMs} ms`);
    assert.ok(stopMs < 2_000, `stop took ${stopMs} ms`);
  } finally {
    await m.close();
  }
});

test('two vCPUs: stop ends both; stopping a paused machine works', async () => {
  const m = Machine.create({ memory: { ramBytes: 2 * MiB }, vcpuCount: 2, irqchip: false });
  try {
    m.memory.write(0x1000, Uint8Array.from([0xeb, 0xfe])); // jmp $
    enterRealMode(m.vcpu(0), { cs: 0, ip: 0x1000 });
    enterRealMode(m.vcpu(1), { cs: 0, ip: 0x1000 });
    m.start();
    await sleep(100);
    await withTimeout(m.pause(), 5_000, 'pause');
    const exit = await withTimeout(m.stop(), 5_000, 'stop');
    assert.deepEqual(exit, { reason: 'stopped' });
  } finally {
    await m.close();
  }
});
