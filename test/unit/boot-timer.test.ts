import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BootTimer, type BootTimerEvent, formatFirecrackerBootTime } from '../../src/devices/legacy/boot-timer.js';

function timer(trigger?: 'magic' | 'any-byte') {
  const time = { ns: 1_000_000_000n, cpuUs: 500 };
  const events: BootTimerEvent[] = [];
  const dev = new BootTimer({
    onEvent: (e) => events.push(e),
    clock: { monotonicNs: () => time.ns, cpuUs: () => time.cpuUs },
    ...(trigger ? { trigger } : {}),
  });
  return { dev, time, events };
}

test('fires on a byte write of 123 at offset 0 only', () => {
  const { dev, time, events } = timer();
  for (let v = 0; v < 256; v++) if (v !== 123) dev.write(0, new Uint8Array([v]));
  dev.write(1, new Uint8Array([123])); // wrong offset
  dev.write(0, new Uint8Array([123, 0])); // wrong width
  dev.write(0, new Uint8Array([123, 0, 0, 0]));
  dev.write(0, new Uint8Array(0));
  assert.equal(events.length, 0);
  time.ns += 125_432_100n; // 125.4321 ms later
  time.cpuUs += 8_000;
  dev.write(0, new Uint8Array([123]));
  assert.deepEqual(events, [{ value: 123, elapsedUs: 125_432, cpuUs: 8_000 }]);
});

test("Firecracker's log line format", () => {
  assert.equal(
    formatFirecrackerBootTime({ value: 123, elapsedUs: 125_432, cpuUs: 8_000 }),
    'Guest-boot-time = 125432 us 125 ms,   8000 CPU us 8 CPU ms',
  );
});

test("'any-byte' (Cloud Hypervisor debug port) records every byte-wide write", () => {
  const { dev, events } = timer('any-byte');
  dev.write(0, new Uint8Array([0x41]));
  dev.write(0, new Uint8Array([0x61]));
  assert.deepEqual(events.map((e) => e.value), [0x41, 0x61]);
});

test('reads do nothing and never throw', () => {
  const { dev, events } = timer();
  const data = new Uint8Array(8);
  dev.read(0, data);
  assert.deepEqual([...data], [0, 0, 0, 0, 0, 0, 0, 0]);
  assert.equal(events.length, 0);
});
