/**
 * bench/profile/net-roundtrip.ts, run short: every frame makes the whole trip, and the device
 * interrupts exactly as often as a Linux-like driver (EVENT_IDX) asks.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { koffiReadvNs, measureNetRoundTrips } from '../../bench/profile/net-roundtrip.js';

test('ping-like round trips through VirtioNet: each frame in and out once, one interrupt per direction per trip', async () => {
  const r = await measureNetRoundTrips(50, 10);
  assert.equal(r.roundTrips, 50);
  assert.equal(r.rxFrames, 60, 'the device received every frame the peer sent (warm-up included)');
  assert.equal(r.txFrames, 60);
  assert.equal(r.peerFrames, 60, 'the peer got every frame the driver queued');
  assert.equal(r.interrupts, 120, 'one receive and one transmit interrupt per trip: used_event moved each time');
  assert.ok(r.wallUs > 0 && r.cpuUs > 0);
});

test('ping-like round trips with receive set up as a Linux guest does (guest TSO, 1536-byte buffers): every frame makes the whole trip', async () => {
  const r = await measureNetRoundTrips(50, 10, 'linux');
  assert.equal(r.rxFrames, 60);
  assert.equal(r.txFrames, 60);
  assert.equal(r.peerFrames, 60);
  assert.equal(r.interrupts, 120);
});

test('the koffi system-call probe returns a time per call', () => {
  assert.ok(koffiReadvNs(1000) > 0);
});
