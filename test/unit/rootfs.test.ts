/**
 * buildExt4Image without KVM: the image holds the folder's files (read back with e2fsprogs'
 * debugfs, no mount needed) and bad input gives one-line errors.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { buildExt4Image, defaultImageSizeMiB, RootfsImageError } from '../../src/image/rootfs.js';
import { silentProgress } from '../../src/util/progress.js';

const dir = mkdtempSync(join(tmpdir(), 'tsvmm-rootfs-unit-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function debugfs(image: string, request: string): string {
  const r = spawnSync('debugfs', ['-R', request, image], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}

test('the image holds the folder: files, nested folders, symlinks, label rootfs', () => {
  const src = join(dir, 'src');
  mkdirSync(join(src, 'etc', 'deep'), { recursive: true });
  writeFileSync(join(src, 'etc', 'hello'), 'hello from the host\n');
  const big = Buffer.alloc(300 * 1024, 0x5a);
  writeFileSync(join(src, 'etc', 'deep', 'big.bin'), big);
  symlinkSync('hello', join(src, 'etc', 'link'));
  const out = join(dir, 'a.img');
  const image = buildExt4Image({ sourceDir: src, output: out, progress: silentProgress });
  assert.equal(image.path, out);
  assert.equal(statSync(out).size, image.sizeMiB * 1024 * 1024);
  assert.equal(image.sizeMiB, 17, 'small content: 16 MiB + 1.5 × content, rounded up');
  assert.equal(debugfs(out, 'cat /etc/hello'), 'hello from the host\n');
  assert.equal(debugfs(out, 'cat /etc/deep/big.bin').length, big.length);
  assert.match(debugfs(out, 'stat /etc/link'), /Fast link dest: "hello"/);
  const label = spawnSync('dumpe2fs', ['-h', out], { encoding: 'utf8' }).stdout;
  assert.match(label, /Filesystem volume name:\s+rootfs/);
});

test('an explicit size is used', () => {
  const src = join(dir, 'sized');
  mkdirSync(src);
  writeFileSync(join(src, 'f'), 'x');
  const out = join(dir, 'sized.img');
  assert.equal(buildExt4Image({ sourceDir: src, output: out, sizeMiB: 40, progress: silentProgress }).sizeMiB, 40);
  assert.equal(statSync(out).size, 40 * 1024 * 1024);
});

test('default size: content × 1.5 + 16 MiB, rounded up', () => {
  assert.equal(defaultImageSizeMiB(0), 16);
  assert.equal(defaultImageSizeMiB(1), 17);
  assert.equal(defaultImageSizeMiB(100 * 1024 * 1024), 166);
});

function oneLineError(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof RootfsImageError, String(e));
    assert.ok(!e.message.includes('\n'), `one line: ${e.message}`);
    assert.match(e.message, pattern);
    return true;
  });
}

test('errors are one line: missing source, a file as source, content that does not fit', () => {
  oneLineError(() => buildExt4Image({ sourceDir: join(dir, 'nope'), output: join(dir, 'x.img'), progress: silentProgress }), /does not exist/);
  const file = join(dir, 'plain');
  writeFileSync(file, 'x');
  oneLineError(() => buildExt4Image({ sourceDir: file, output: join(dir, 'x.img'), progress: silentProgress }), /is not a directory/);
  const src = join(dir, 'toobig');
  mkdirSync(src);
  writeFileSync(join(src, 'big'), Buffer.alloc(8 * 1024 * 1024, 1));
  oneLineError(() => buildExt4Image({ sourceDir: src, output: join(dir, 'small.img'), sizeMiB: 4, progress: silentProgress }), /mkfs\.ext4 could not build .*larger --size/);
  assert.throws(() => statSync(join(dir, 'small.img')), 'no image is left behind');
  assert.throws(() => statSync(join(dir, 'small.img.partial')), 'no partial image is left behind');
});
