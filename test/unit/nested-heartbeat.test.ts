/**
 * HeartbeatWatch on a real file, with short timeouts: a growing file keeps the machine alive, a
 * file that stops growing is a wedge (reported once), and a heartbeat that never arrived is no
 * evidence of anything.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HeartbeatWatch, NESTED_HEARTBEAT_LINE } from '../../src/host/nested-heartbeat.js';
import { NESTED_HOST_INIT } from '../../src/host/nested-init.js';
import { nestedQemuArgs, NestedHostUsageError } from '../../src/host/nested.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function withDir(fn: (dir: string) => Promise<void>): () => Promise<void> {
  return async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tsvmm-heartbeat-'));
    try {
      await fn(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
}

test(
  'a growing file keeps the watch quiet; once it stops growing the watch reports a wedge, once',
  withDir(async (dir) => {
    const file = join(dir, 'heartbeat');
    writeFileSync(file, `${NESTED_HEARTBEAT_LINE}\r\n`);
    const wedges: number[] = [];
    const watch = new HeartbeatWatch(file, 300, (silentMs) => wedges.push(silentMs), 25);
    watch.start();
    for (let i = 0; i < 8; i++) {
      await sleep(100);
      appendFileSync(file, `${NESTED_HEARTBEAT_LINE}\r\n`);
    }
    assert.deepEqual(wedges, [], 'beats every 100 ms against a 300 ms limit: alive');
    await sleep(800);
    watch.stop();
    assert.equal(wedges.length, 1, 'reported once, not on every poll');
    assert.ok(wedges[0]! >= 300, `silent for ${wedges[0]} ms when reported`);
    assert.equal(watch.beats(), 9);
  }),
);

test(
  'no heartbeat at all (no file, or an empty one) is never taken for a wedge',
  withDir(async (dir) => {
    const missing = join(dir, 'missing');
    const empty = join(dir, 'empty');
    writeFileSync(empty, '');
    let wedged = 0;
    const a = new HeartbeatWatch(missing, 100, () => wedged++, 20);
    const b = new HeartbeatWatch(empty, 100, () => wedged++, 20);
    a.start();
    b.start();
    await sleep(500);
    a.stop();
    b.stop();
    assert.equal(wedged, 0);
    assert.equal(a.beats(), 0);
    assert.equal(b.beats(), 0);
  }),
);

test(
  'the timeout counts from the first heartbeat, not from start()',
  withDir(async (dir) => {
    const file = join(dir, 'heartbeat');
    let wedged = 0;
    const watch = new HeartbeatWatch(file, 300, () => wedged++, 20);
    watch.start();
    await sleep(400);
    appendFileSync(file, `${NESTED_HEARTBEAT_LINE}\n`);
    await sleep(150);
    assert.equal(wedged, 0, 'the first beat came 400 ms after start: only 150 ms of silence since');
    await sleep(400);
    watch.stop();
    assert.equal(wedged, 1);
  }),
);

test("the nested host's QEMU gets a second serial port writing to the heartbeat file, and its init writes to it", () => {
  const assets = { qemu: '/usr/bin/qemu-system-x86_64', kernel: '/k', bzImage: '/k', kernelRelease: 'r', initramfs: '/i' };
  const args = nestedQemuArgs(assets, '/i', 1024, 2, [], undefined, '/tmp/x/heartbeat');
  const serials = args.flatMap((a, i) => (a === '-serial' ? [args[i + 1]] : []));
  assert.deepEqual(serials, ['stdio', 'chardev:tsvmmhb'], 'ttyS0 is the console, ttyS1 the heartbeat');
  assert.ok(args.includes('file,id=tsvmmhb,path=/tmp/x/heartbeat'));
  assert.match(NESTED_HOST_INIT, new RegExp(`echo ${NESTED_HEARTBEAT_LINE}; sleep \\d+; done \\) >/dev/ttyS1`));
  assert.throws(() => nestedQemuArgs(assets, '/i', 1024, 2, [], undefined, '/tmp/a,b/heartbeat'), NestedHostUsageError);
});
