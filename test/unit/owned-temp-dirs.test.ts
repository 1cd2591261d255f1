/**
 * Owned temporary folders (src/host/owned-temp-dirs.ts): a sweep removes the folders of dead
 * owners and of a reused PID, keeps the living owner's and a fresh unowned one, and touches
 * nothing without the prefix. Each test works in a folder of its own, not in /tmp itself.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { OWNER_FILE, UNOWNED_GRACE_MS, makeOwnedTempDir, processStartTime, removeStaleTempDirs } from '../../src/host/owned-temp-dirs.js';

const PREFIX = 'tsvmm-sweep-test-';

function withBase(body: (base: string) => void): void {
  const base = mkdtempSync(join(tmpdir(), 'tsvmm-owned-'));
  try {
    body(base);
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
}

/** The PID of a process that has exited (and been reaped). */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(r.stdout);
}

test('an owned folder names this process: its PID and its start time from /proc', () => {
  withBase((base) => {
    const dir = makeOwnedTempDir(PREFIX, base);
    const [pid, start] = readFileSync(join(dir, OWNER_FILE), 'utf8').trim().split(' ');
    assert.equal(Number(pid), process.pid);
    assert.match(start!, /^\d+$/);
    assert.equal(start, processStartTime(process.pid));
    assert.equal(processStartTime(deadPid()), undefined);
  });
});

test('the sweep removes a dead owner\'s folder and keeps a living owner\'s', () => {
  withBase((base) => {
    const mine = makeOwnedTempDir(PREFIX, base);
    const dead = makeOwnedTempDir(PREFIX, base);
    writeFileSync(join(dead, OWNER_FILE), `${deadPid()} 12345\n`);
    writeFileSync(join(dead, 'initrd.cpio'), 'x'.repeat(1000));
    assert.deepEqual(removeStaleTempDirs(PREFIX, base), [dead]);
    assert.equal(existsSync(dead), false);
    assert.equal(existsSync(mine), true);
  });
});

test('a living PID with another start time is a reused PID: its folder goes', () => {
  withBase((base) => {
    const reused = makeOwnedTempDir(PREFIX, base);
    writeFileSync(join(reused, OWNER_FILE), `${process.pid} 1\n`);
    assert.deepEqual(removeStaleTempDirs(PREFIX, base), [reused]);
  });
});

test('a folder without an owner file is kept while young and removed once past the grace period; other names are never touched', () => {
  withBase((base) => {
    const young = join(base, `${PREFIX}young`);
    const old = join(base, `${PREFIX}old`);
    const other = join(base, 'someone-else');
    for (const d of [young, old, other]) mkdirSync(d);
    const longAgo = (Date.now() - UNOWNED_GRACE_MS - 60_000) / 1000;
    utimesSync(old, longAgo, longAgo);
    utimesSync(other, longAgo, longAgo);
    writeFileSync(join(base, `${PREFIX}a-file`), '');
    assert.deepEqual(removeStaleTempDirs(PREFIX, base), [old]);
    assert.equal(existsSync(young), true);
    assert.equal(existsSync(other), true);
    assert.equal(existsSync(join(base, `${PREFIX}a-file`)), true, 'files with the prefix are not folders of ours');
  });
});

test('a garbled owner file counts as a dead owner; a missing base folder sweeps nothing', () => {
  withBase((base) => {
    const garbled = makeOwnedTempDir(PREFIX, base);
    writeFileSync(join(garbled, OWNER_FILE), 'not a pid\n');
    assert.deepEqual(removeStaleTempDirs(PREFIX, base), [garbled]);
    assert.deepEqual(removeStaleTempDirs(PREFIX, join(base, 'missing')), []);
  });
});
