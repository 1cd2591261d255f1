/**
 * The newc writer, checked three ways: byte-level header fields, Debian's `cpio -t -v` listing,
 * and `cpio -i` unpacking into a temporary folder (contents, modes, links, device numbers).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { lstatSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CpioError, CpioWriter } from '../../src/image/cpio.js';
import { ensureAptPackages } from '../../src/image/debian.js';

/** Decode a newc archive back into entries, checking alignment as the kernel would. */
function parseNewc(buf: Buffer): { name: string; fields: number[]; data: Buffer; headerOffset: number }[] {
  const out: { name: string; fields: number[]; data: Buffer; headerOffset: number }[] = [];
  let off = 0;
  for (;;) {
    assert.equal(off % 4, 0, 'every header starts 4-byte aligned');
    assert.equal(buf.toString('latin1', off, off + 6), '070701', `magic at ${off}`);
    const fields: number[] = [];
    for (let i = 0; i < 13; i++) fields.push(parseInt(buf.toString('latin1', off + 6 + i * 8, off + 14 + i * 8), 16));
    const nameSize = fields[11]!;
    const name = buf.toString('utf8', off + 110, off + 110 + nameSize - 1);
    assert.equal(buf[off + 110 + nameSize - 1], 0, 'name is NUL-terminated');
    let dataOff = off + 110 + nameSize;
    dataOff += (4 - (dataOff % 4)) % 4;
    const size = fields[6]!;
    out.push({ name, fields, data: buf.subarray(dataOff, dataOff + size), headerOffset: off });
    off = dataOff + size;
    off += (4 - (off % 4)) % 4;
    if (name === 'TRAILER!!!') break;
  }
  assert.equal(off, buf.length, 'nothing follows the trailer but padding');
  return out;
}

function sample(hostFile: string): CpioWriter {
  const w = new CpioWriter({ mtime: 1_700_000_000 });
  w.file('/init', '#!/bin/sh\necho hello\n', 0o755);
  w.dir('/bin');
  w.fileFrom('/bin/tool', hostFile);
  w.symlink('/bin/sh', 'tool');
  w.device('/dev/console', 'char', 5, 1, 0o600);
  w.device('/dev/vda', 'block', 254, 0, 0o660);
  w.file('/etc/odd-size', new Uint8Array([1, 2, 3, 4, 5]), 0o640);
  w.dir('/tmp', 0o1777);
  return w;
}

function withTemp<T>(fn: (dir: string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), 'tsvmm-cpio-test-'));
  try {
    return fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const cpioInstalled = (): boolean => spawnSync('cpio', ['--version']).status === 0;
/** Debian's cpio is the reference reader; like everything else it is installed on first use. */
function referenceCpio(): boolean {
  if (cpioInstalled()) return true;
  try {
    ensureAptPackages(['cpio'], (m) => process.stderr.write(`  ${m}\n`));
  } catch (e) {
    process.stderr.write(`  cannot install Debian's cpio: ${(e as Error).message}\n`);
  }
  return cpioInstalled();
}
const cpioSkip = referenceCpio() ? false : "Debian's cpio is not installed and could not be (apt-get install cpio)";

test('headers: magic, uid/gid 0, fixed mtime, sizes, namesize, alignment, trailer', () =>
  withTemp((dir) => {
    const host = join(dir, 'tool');
    writeFileSync(host, Buffer.alloc(1001, 7));
    chmodSync(host, 0o751);
    const entries = parseNewc(sample(host).finish());
    const names = entries.map((e) => e.name);
    assert.deepEqual(names, ['bin', 'bin/sh', 'bin/tool', 'dev', 'dev/console', 'dev/vda', 'etc', 'etc/odd-size', 'init', 'tmp', 'TRAILER!!!']);
    const by = new Map(entries.map((e) => [e.name, e]));
    for (const e of entries.slice(0, -1)) {
      assert.equal(e.fields[2], 0, `${e.name} uid`);
      assert.equal(e.fields[3], 0, `${e.name} gid`);
      assert.equal(e.fields[5], 1_700_000_000, `${e.name} mtime`);
      assert.equal(e.fields[11], Buffer.byteLength(e.name) + 1, `${e.name} namesize`);
    }
    assert.equal(new Set(entries.slice(0, -1).map((e) => e.fields[0])).size, entries.length - 1, 'unique inode numbers');
    assert.equal(by.get('init')!.fields[1], 0o100755);
    assert.equal(by.get('init')!.data.toString(), '#!/bin/sh\necho hello\n');
    assert.equal(by.get('bin/tool')!.fields[1], 0o100751, 'host file mode taken from the host');
    assert.equal(by.get('bin/tool')!.fields[6], 1001);
    assert.equal(by.get('bin/sh')!.fields[1], 0o120777);
    assert.equal(by.get('bin/sh')!.data.toString(), 'tool');
    assert.equal(by.get('dev/console')!.fields[1], 0o020600);
    assert.deepEqual(by.get('dev/console')!.fields.slice(9, 11), [5, 1]);
    assert.equal(by.get('dev/vda')!.fields[1], 0o060660);
    assert.equal(by.get('dev')!.fields[1], 0o040755, 'implicit parent directory');
    assert.equal(by.get('tmp')!.fields[1], 0o041777);
    assert.equal(by.get('bin')!.fields[4], 2, 'directories have nlink 2');
    assert.equal(by.get('TRAILER!!!')!.fields[6], 0);
  }));

test('output is reproducible and independent of insertion order', () => {
  const a = new CpioWriter().file('/b', 'x').file('/a/c', 'y').symlink('/z', 'b').finish();
  const b = new CpioWriter().symlink('/z', 'b').file('/a/c', 'y').file('/b', 'x').finish();
  assert.deepEqual(a, b);
  // The empty archive is just the trailer: 110 + 11 bytes, padded to 124.
  assert.equal(new CpioWriter().finish().length, 124);
});

test('bad entries fail with clear errors', () => {
  const w = new CpioWriter().file('/a', 'x');
  assert.throws(() => w.file('/a', 'y'), CpioError);
  assert.throws(() => w.file('/a/b', 'y'), /not a directory/);
  assert.throws(() => w.file('/../etc/passwd', 'y'), /"\.\."/);
  assert.throws(() => w.file('/', 'y'), /archive root/);
  assert.throws(() => w.file('/m', 'y', 0o100644), /permission mask/);
  assert.throws(() => w.fileFrom('/h', '/nonexistent/file'), /cannot read/);
  // An implicit directory may be redefined by an explicit one, once.
  const d = new CpioWriter().file('/x/y', 'z');
  d.dir('/x', 0o700);
  assert.throws(() => d.dir('/x'), /already/);
});

test('Debian cpio lists the archive with the right types, modes and owners', { skip: cpioSkip }, () =>
  withTemp((dir) => {
    const host = join(dir, 'tool');
    writeFileSync(host, 'tool contents\n');
    chmodSync(host, 0o755);
    const archive = join(dir, 'a.cpio');
    sample(host).writeToFile(archive);
    const r = spawnSync('cpio', ['-t', '-v', '--quiet', '-F', archive], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    const find = (name: string): string => {
      const l = lines.find((x) => x.endsWith(` ${name}`) || x.includes(` ${name} -> `));
      assert.ok(l, `${name} listed in:\n${r.stdout}`);
      return l;
    };
    assert.match(find('init'), /^-rwxr-xr-x\s+1 root\s+root\s+21 /);
    assert.match(find('bin/tool'), /^-rwxr-xr-x /);
    assert.match(find('bin/sh'), /^lrwxrwxrwx .* bin\/sh -> tool$/);
    assert.match(find('dev/console'), /^crw------- .*\s5,\s+1 /);
    assert.match(find('dev/vda'), /^brw-rw---- .*\s254,\s+0 /);
    assert.match(find('tmp'), /^drwxrwxrwt /);
    assert.match(find('etc/odd-size'), /^-rw-r----- .*\s5 /);
  }));

test('Debian cpio unpacks the archive with identical contents and modes', { skip: cpioSkip }, () =>
  withTemp((dir) => {
    const host = join(dir, 'tool');
    const big = Buffer.alloc(3 * 1024 * 1024 + 3);
    for (let i = 0; i < big.length; i++) big[i] = (i * 31) & 0xff;
    writeFileSync(host, big);
    chmodSync(host, 0o700);
    const out = join(dir, 'out');
    const w = sample(host);
    const archive = join(dir, 'a.cpio');
    w.writeToFile(archive);
    // Device nodes need root to create; unpack them only when we have it.
    const asRoot = process.getuid?.() === 0;
    const r = spawnSync('sh', ['-c', `mkdir -p "${out}" && cd "${out}" && cpio -i -d -m --quiet --no-absolute-filenames ${asRoot ? '' : '--nonmatching "dev/*"'} < "${archive}"`], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(readFileSync(join(out, 'init'), 'utf8'), '#!/bin/sh\necho hello\n');
    assert.equal(lstatSync(join(out, 'init')).mode & 0o7777, 0o755);
    assert.deepEqual(readFileSync(join(out, 'bin/tool')), big);
    assert.equal(lstatSync(join(out, 'bin/tool')).mode & 0o7777, 0o700);
    assert.equal(readlinkSync(join(out, 'bin/sh')), 'tool');
    assert.deepEqual([...readFileSync(join(out, 'etc/odd-size'))], [1, 2, 3, 4, 5]);
    assert.equal(lstatSync(join(out, 'etc/odd-size')).mode & 0o7777, 0o640);
    assert.equal(lstatSync(join(out, 'tmp')).mode & 0o7777, 0o1777);
    assert.equal(lstatSync(join(out, 'init')).mtimeMs, 1_700_000_000_000);
    if (asRoot) {
      const c = lstatSync(join(out, 'dev/console'));
      assert.ok(c.isCharacterDevice());
      assert.equal(c.rdev, (5 << 8) | 1);
      assert.ok(lstatSync(join(out, 'dev/vda')).isBlockDevice());
    }
  }));
