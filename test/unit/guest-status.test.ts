import assert from 'node:assert/strict';
import { test } from 'node:test';
import { GuestStatusDevice } from '../../src/devices/guest-status.js';

test('guest status register keeps the byte written at offset 0 and reports it', () => {
  const seen: number[] = [];
  const d = new GuestStatusDevice((s) => seen.push(s));
  const b = new Uint8Array(1);
  d.read(0, b);
  assert.equal(b[0], 0, 'nothing written yet reads 0');
  assert.equal(d.status, undefined);
  d.write(0, Uint8Array.of(7));
  d.write(3, Uint8Array.of(9)); // other offsets are ignored
  assert.deepEqual(seen, [7]);
  d.read(0, b);
  assert.equal(b[0], 7);
  d.write(0, Uint8Array.of(0xff, 0xff, 0xff, 0xff));
  assert.equal(d.status, 255);
});
