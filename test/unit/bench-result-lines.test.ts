/**
 * bench/blk/result-lines.ts: a benchmark's result leaves the nested host as console lines, a
 * partial result after every guest boot and the whole one at the end. Should the emulated host die
 * mid-run, the latest complete generation is what is left.
 */
import { strict as assert } from 'node:assert';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { decodeResultLines, encodeResultLines } from '../../bench/blk/result-lines.js';

// Random text does not compress: several lines per generation.
const partial = { runs: [1], incomplete: '1 of 4 guest boots done', pad: randomBytes(3000).toString('base64') };
const whole = { runs: [1, 2, 3, 4], pad: randomBytes(3000).toString('base64') };

test('the latest complete generation wins, with other console lines in between', () => {
  const p = encodeResultLines(partial, 0);
  const w = encodeResultLines(whole, 1);
  assert.ok(p.length > 1 && w.length > 1, 'each generation spans several lines');
  const console = ['booting…', ...p, 'round 2/2: qemu', ...w, 'done'].join('\r\n');
  assert.deepEqual(decodeResultLines(console), whole);
});

test('a generation cut short by a dying host falls back to the one before', () => {
  const p = encodeResultLines(partial, 0);
  const w = encodeResultLines(whole, 1);
  assert.deepEqual(decodeResultLines([...p, ...w.slice(0, -1)].join('\n')), partial);
  assert.deepEqual(decodeResultLines([...p.slice(1), ...w].join('\n')), whole, 'a damaged earlier generation does not matter');
});

test('no complete generation is an error that says what arrived', () => {
  const w = encodeResultLines(whole, 0);
  assert.throws(() => decodeResultLines(w.slice(1).join('\n')), new RegExp(`incomplete \\(parts: ${w.length - 1} of ${w.length}\\)`));
  assert.throws(() => decodeResultLines('nothing here\n'), /no result lines/);
});
