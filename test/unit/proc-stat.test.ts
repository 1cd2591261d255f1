/** src/util/proc-stat.ts: fields of a /proc stat line, whatever the command name holds. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { statField, statFieldsFrom3 } from '../../src/util/proc-stat.js';

test('fields are counted from the last parenthesis, so a command name with spaces and parentheses cannot shift them', () => {
  const line = '4242 (a) b (c) d) S 1 4242 4242 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 987654 12345678 300\n';
  assert.equal(statField(line, 3), 'S');
  assert.equal(statField(line, 4), '1', 'ppid');
  assert.equal(statField(line, 14), '7', 'utime');
  assert.equal(statField(line, 15), '3', 'stime');
  assert.equal(statField(line, 22), '987654', 'starttime');
  assert.equal(statField(line, 24), '300', 'the last field, without its newline');
  assert.equal(statField(line, 25), undefined);
  assert.equal(statFieldsFrom3(line).length, 22);
});

test('this process: state R, its parent as ppid', () => {
  const own = readFileSync('/proc/self/stat', 'utf8');
  assert.equal(statField(own, 3), 'R');
  assert.equal(Number(statField(own, 4)), process.ppid);
});
