import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConsoleTail } from '../../src/vmm/console-tail.js';

test('the console tail keeps the last bytes', () => {
  const t = new ConsoleTail(8);
  t.push(Buffer.from('abc'));
  t.push(Buffer.from('defgh'));
  assert.equal(t.text(), 'abcdefgh');
  t.push(Buffer.from('ij'));
  assert.equal(t.text(), 'cdefghij');
  t.push(Buffer.from('0123456789'));
  assert.equal(t.text(), '23456789');
});

test('a marker split across pieces is found once', () => {
  let calls = 0;
  const t = new ConsoleTail(64, 'Kernel panic - not syncing', () => calls++);
  for (const piece of ['x'.repeat(60), '[ 5.2] Kernel pan', 'ic - not sy', 'ncing: sysrq\n', 'Kernel panic - not syncing again']) t.push(Buffer.from(piece));
  assert.equal(t.markerSeen, true);
  assert.equal(calls, 1);
});

test('a marker that arrives one byte at a time is found', () => {
  const t = new ConsoleTail(32, 'PANIC');
  for (const ch of 'no panic here, then PANIC!') t.push(Buffer.from(ch));
  assert.equal(t.markerSeen, true);
  const u = new ConsoleTail(32, 'PANIC');
  for (const ch of 'PANI C P A N I C') u.push(Buffer.from(ch));
  assert.equal(u.markerSeen, false);
});
