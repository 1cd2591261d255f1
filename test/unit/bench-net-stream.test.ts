/**
 * bench/profile/net-stream.ts, run short: 64 KB frames cross VirtioNet whole in both directions
 * (the profiler itself checks each round's frame count and the first frame's bytes in guest
 * memory, and throws otherwise), and it reports a time for the device and for the bare calls.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { measureReceive, measureTransmit } from '../../bench/profile/net-stream.js';

test("receive: the socket's 64 KB frames land in 4 KB mergeable buffers, several per readiness wake-up", () => {
  const r = measureReceive(40);
  assert.ok(r.frames >= 40, `moved ${r.frames} frames`);
  assert.ok(r.framesPerCall >= 1);
  assert.ok(r.deviceUs > 0 && r.syscallUs > 0);
});

test('transmit: indirect 64 KB frames reach the peer whole, two per kick', () => {
  const r = measureTransmit(40);
  assert.equal(r.frames, 40);
  assert.equal(r.framesPerCall, 2);
  assert.ok(r.deviceUs > 0 && r.syscallUs > 0);
});
