/**
 * bench/profile/wake-paths.ts, run short: each way of waiting answers every ring and lets go of
 * its threads and descriptors afterwards (the test process could not end otherwise).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WAKE_PATHS, measureWakePath } from '../../bench/profile/wake-paths.js';

for (const path of WAKE_PATHS) {
  test(`wake path ${path}: every ring is answered, and a time per round trip comes back`, async () => {
    const us = await measureWakePath(path, 200, 20);
    assert.ok(Number.isFinite(us) && us > 0, `got ${us}`);
  });
}

test('wake paths with a pause between round trips (ping-like): every ring is answered', async () => {
  const us = await measureWakePath('main-loop', 5, 2, 2);
  assert.ok(Number.isFinite(us) && us > 0, `got ${us}`);
});
