import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { DecompressionError } from '../../src/loader/errors.js';
import { LZ4_LEGACY_BLOCK_SIZE, decodeLz4Block, decodeLz4Legacy } from '../../src/loader/lz4.js';
import { hexBytes, rng } from './loader-fixtures.js';

// Vectors made with `lz4 -l` (lz4 v1.9): legacy frame magic, u32 block size, block.
const V1_TEXT = 'hello hello hello hello world! abcabcabcabcabcabcabcabcabcabc xyz';
const V1 = hexBytes('02214c181d0000006e68656c6c6f200600af776f726c64212061626303000750632078797a');
// 3000 × 'Q' + 'tail': a long overlapping match whose length needs 255-continuation bytes.
const V2_TEXT = 'Q'.repeat(3000) + 'tail';
const V2 = hexBytes('02214c18160000001f510100ffffffffffffffffffffffae50517461696c');
const EMPTY = hexBytes('02214c18');
const LIMIT = { maxOutput: 1 << 20 };

const text = (b: Uint8Array) => Buffer.from(b).toString('latin1');

test('decodes lz4 -l vectors', () => {
  assert.equal(text(decodeLz4Legacy(V1, LIMIT)), V1_TEXT);
  assert.equal(text(decodeLz4Legacy(V2, LIMIT)), V2_TEXT);
  assert.equal(decodeLz4Legacy(EMPTY, LIMIT).length, 0);
  assert.equal(text(decodeLz4Legacy(V2, { maxOutput: 1 << 20, expectedSize: V2_TEXT.length })), V2_TEXT);
});

test('concatenated legacy streams decode back to back', () => {
  const both = new Uint8Array([...V1, ...V2]);
  assert.equal(text(decodeLz4Legacy(both, LIMIT)), V1_TEXT + V2_TEXT);
});

test('hand-made blocks: literals only, overlapping match, empty final sequence', () => {
  const out = new Uint8Array(64);
  assert.equal(decodeLz4Block(hexBytes('30616263'), out), 3); // 3 literals "abc"
  assert.equal(text(out.subarray(0, 3)), 'abc');
  // 1 literal 'a', match offset 1 length 9, then an empty last sequence: ten 'a'.
  const n = decodeLz4Block(hexBytes('1561010000'), out);
  assert.equal(text(out.subarray(0, n)), 'a'.repeat(10));
  // "ab" then offset 2, length 6 → "abababab".
  const m = decodeLz4Block(hexBytes('2261620200' + '00'), out);
  assert.equal(text(out.subarray(0, m)), 'abababab');
});

test('wrong size field and limits are DecompressionErrors', () => {
  assert.throws(() => decodeLz4Legacy(V1, { maxOutput: 1 << 20, expectedSize: V1_TEXT.length + 1 }), DecompressionError);
  assert.throws(() => decodeLz4Legacy(V2, { maxOutput: 100 }), DecompressionError);
  assert.throws(() => decodeLz4Legacy(V1, { maxOutput: 10, expectedSize: 1000 }), DecompressionError);
  assert.throws(() => decodeLz4Legacy(hexBytes('04224d18'), LIMIT), /no legacy frame magic/); // LZ4 frame format
  assert.throws(() => decodeLz4Legacy(hexBytes('0221'), LIMIT), DecompressionError);
});

test('corrupted block lengths are DecompressionErrors', () => {
  const withSize = (size: number) => {
    const b = V1.slice();
    new DataView(b.buffer).setUint32(4, size, true);
    return b;
  };
  assert.throws(() => decodeLz4Legacy(withSize(0x1e), LIMIT), /claims 30 bytes but only 29 remain/);
  assert.throws(() => decodeLz4Legacy(withSize(0), LIMIT), /corrupt block length 0/);
  assert.throws(() => decodeLz4Legacy(withSize(0x7fffffff), LIMIT), /corrupt block length/);
  // Shorter than the block: the block's tail is read as the next block size.
  assert.throws(() => decodeLz4Legacy(withSize(0x10), LIMIT), DecompressionError);
  // Stray bytes after the last block.
  assert.throws(() => decodeLz4Legacy(new Uint8Array([...V1, 1, 2]), LIMIT), /stray bytes/);
});

test('corrupted block contents are DecompressionErrors', () => {
  const out = new Uint8Array(64);
  const bad: [string, RegExp][] = [
    ['1061000000', /offset 0/], // match offset 0
    ['1061050000', /points before the start/], // offset 5 with 1 byte decoded
    ['f0', /truncated inside a literal length/],
    ['f00a61', /runs past/], // 15+10 literals, 1 present
    ['106101', /truncated inside a match offset/],
    ['1f610100', /truncated inside a match length/],
    ['156101', /truncated inside a match offset/],
    ['15610100', /ends with a match/],
    ['', /empty block/],
  ];
  for (const [hex, re] of bad) assert.throws(() => decodeLz4Block(hexBytes(hex), out), re, hex);
  // Output overflow: 10 bytes into a 4-byte window, literals and matches.
  assert.throws(() => decodeLz4Block(hexBytes('1561010000'), out, 0, 4), /overflows the output/);
  assert.throws(() => decodeLz4Block(hexBytes('5061626364650000'), out, 0, 4), /overflows the output/);
  // A match may not reach into an earlier block's output.
  out.fill(7);
  assert.throws(() => decodeLz4Block(hexBytes('0001000000'), out, 10), /points before the start/);
});

test('mutated streams decode or throw DecompressionError, nothing else', () => {
  const next = rng(0x5eed);
  for (let i = 0; i < 5000; i++) {
    const base = i % 2 === 0 ? V1 : V2;
    const b = base.slice(0, base.length - (next() % 3 === 0 ? next() % base.length : 0));
    const flips = 1 + (next() % 4);
    for (let f = 0; f < flips && b.length > 4; f++) b[4 + (next() % (b.length - 4))]! ^= 1 << (next() % 8);
    try {
      const out = decodeLz4Legacy(b, { maxOutput: 1 << 16 });
      assert.ok(out.length <= 1 << 16);
    } catch (e) {
      assert.ok(e instanceof DecompressionError, `iteration ${i}: ${String(e)}`);
    }
  }
});

test('multi-block stream round-trips through the lz4 CLI', (t) => {
  if (spawnSync('lz4', ['--version']).status !== 0) {
    t.skip('lz4 command not installed');
    return;
  }
  // 20 MiB: three 8 MiB legacy blocks; mixed compressible and random data.
  const next = rng(42);
  const data = new Uint8Array(20 * 1024 * 1024 + 12345);
  for (let i = 0; i < data.length; i += 4096) {
    const kind = next() % 3;
    for (let j = i; j < Math.min(data.length, i + 4096); j++) data[j] = kind === 0 ? next() & 0xff : kind === 1 ? j & 0x3f : 0;
  }
  const r = spawnSync('lz4', ['-l', '-c', '-q'], { input: data, maxBuffer: 64 * 1024 * 1024 });
  assert.equal(r.status, 0);
  const compressed = new Uint8Array(r.stdout);
  const out = decodeLz4Legacy(compressed, { maxOutput: 64 * 1024 * 1024 });
  assert.equal(out.length, data.length);
  assert.ok(Buffer.from(out).equals(Buffer.from(data)));
  assert.ok(data.length > 2 * LZ4_LEGACY_BLOCK_SIZE);
});
