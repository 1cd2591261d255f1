/**
 * HeartbeatWatch with short timeouts: beats keep it quiet, their stopping is a wedge (reported
 * once), and a heartbeat that never arrived is no evidence of anything. The init prints the beats.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HeartbeatWatch, NESTED_HEARTBEAT_MARKER } from '../../src/host/nested-heartbeat.js';
import { MARKER_PREFIX, NESTED_HOST_INIT } from '../../src/host/nested-init.js';
import { NestedHostUsageError, runInNestedHost } from '../../src/host/nested.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

test('beats keep the watch quiet; once they stop the watch reports a wedge, once', async () => {
  const wedges: number[] = [];
  const watch = new HeartbeatWatch(300, (silentMs) => wedges.push(silentMs), 25);
  watch.beat();
  watch.start();
  for (let i = 0; i < 8; i++) {
    await sleep(100);
    watch.beat();
  }
  assert.deepEqual(wedges, [], 'a beat every 100 ms against a 300 ms limit: alive');
  await sleep(800);
  watch.stop();
  assert.equal(wedges.length, 1, 'reported once, not on every poll');
  assert.ok(wedges[0]! >= 300, `silent for ${wedges[0]} ms when reported`);
  assert.equal(watch.beats, 9);
});

test('no heartbeat at all is never taken for a wedge', async () => {
  let wedged = 0;
  const watch = new HeartbeatWatch(100, () => wedged++, 20);
  watch.start();
  await sleep(500);
  watch.stop();
  assert.equal(wedged, 0);
  assert.equal(watch.beats, 0);
});

test('the timeout counts from start() or a later first beat, not from beats before start()', async () => {
  let wedged = 0;
  const early = new HeartbeatWatch(300, () => wedged++, 20);
  early.beat();
  await sleep(400);
  early.start();
  await sleep(150);
  assert.equal(wedged, 0, 'the beat came 400 ms before start(): only 150 ms of watching since');
  await sleep(400);
  early.stop();
  assert.equal(wedged, 1);

  let late = 0;
  const watch = new HeartbeatWatch(300, () => late++, 20);
  watch.start();
  await sleep(400);
  watch.beat();
  await sleep(150);
  assert.equal(late, 0, 'the first beat came 400 ms after start(): only 150 ms of silence since');
  await sleep(400);
  watch.stop();
  assert.equal(late, 1);
});

test("the nested host's init prints the heartbeat marker on its console, at nice -20", () => {
  assert.ok(NESTED_HOST_INIT.includes(`( while :; do echo "${MARKER_PREFIX}$NONCE:${NESTED_HEARTBEAT_MARKER}"; sleep `));
  assert.match(NESTED_HOST_INIT, /done \) &\nrenice -n -20 -p \$! /);
});

test('a late beat is reported as it happens and again when beats resume, without a verdict', async () => {
  const events: string[] = [];
  const watch = new HeartbeatWatch(1000, () => events.push('wedged'), 20, { late: () => events.push('late'), back: () => events.push('back') }, 150);
  watch.beat();
  watch.start();
  await sleep(300);
  assert.deepEqual(events, ['late'], 'reported once while late');
  watch.beat();
  assert.deepEqual(events, ['late', 'back']);
  watch.beat();
  await sleep(50);
  watch.stop();
  assert.deepEqual(events, ['late', 'back'], 'on time again: nothing more');
});

test('a malformed TSVMM_NESTED_WEDGE_TIMEOUT_S is a one-line usage error before anything boots', async () => {
  const saved = process.env['TSVMM_NESTED_WEDGE_TIMEOUT_S'];
  try {
    for (const bad of ['abc', '0', '-5']) {
      process.env['TSVMM_NESTED_WEDGE_TIMEOUT_S'] = bad;
      await assert.rejects(runInNestedHost('true', { progress: () => {} }), (e: unknown) => {
        assert.ok(e instanceof NestedHostUsageError);
        assert.match(e.message, /^TSVMM_NESTED_WEDGE_TIMEOUT_S must be a positive number of seconds, got "/);
        assert.doesNotMatch(e.message, /\n/);
        return true;
      });
    }
  } finally {
    if (saved === undefined) delete process.env['TSVMM_NESTED_WEDGE_TIMEOUT_S'];
    else process.env['TSVMM_NESTED_WEDGE_TIMEOUT_S'] = saved;
  }
});
