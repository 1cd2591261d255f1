/**
 * Drive checks before boot (MicroVm's `drives`, the CLI's --disk), without KVM: each malformed
 * drive gives one line naming it, and the root drive is attached first.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { diskFlag, parseDiskFlag } from '../../src/cli/disk-flag.js';
import { DriveConfigError, validateDrives } from '../../src/vmm/drive-options.js';
import { openDrives } from '../../src/vmm/drives.js';

const dir = mkdtempSync(join(tmpdir(), 'tsvmm-drive-opts-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const image = join(dir, 'a.img');
writeFileSync(image, Buffer.alloc(1 << 20));
const other = join(dir, 'b.img');
writeFileSync(other, Buffer.alloc(1 << 20));
mkdirSync(join(dir, 'folder'));

function refused(drives: Parameters<typeof validateDrives>[0], pattern: RegExp): void {
  assert.throws(
    () => validateDrives(drives),
    (e: unknown) => e instanceof DriveConfigError && !e.message.includes('\n') && pattern.test(e.message),
  );
}

test('malformed drives are refused with one line naming the drive', () => {
  refused([{ id: 'data', path: join(dir, 'missing.img') }], /^drive 'data': .*missing\.img does not exist$/);
  refused([{ id: 'data', path: join(dir, 'folder') }], /^drive 'data': .*folder is a directory/);
  refused([{ id: 'x', path: image }, { id: 'x', path: other }], /^drive 'x': the drive id is used twice/);
  refused(
    [
      { id: 'a', path: image, root: true },
      { id: 'b', path: other, root: true },
    ],
    /^drive 'b': only one drive can be the root device, and 'a' already is$/,
  );
  refused([{ id: '', path: image }], /drive id must not be empty/);
});

test('the root drive is attached first; the others keep their order', () => {
  const order = validateDrives([
    { id: 'a', path: image },
    { id: 'b', path: other },
    { id: 'root', path: image, readOnly: true, root: true },
  ]).map((d) => d.id);
  assert.deepEqual(order, ['root', 'a', 'b']);
});

test('--disk text round-trips, with defaults, and bad options are refused', () => {
  assert.deepEqual(parseDiskFlag(image, 2), { id: 'disk2', path: image, readOnly: false, root: false, cacheType: 'Unsafe' });
  const d = parseDiskFlag(`${image},ro,id=data,root,cache=writeback`, 0);
  assert.deepEqual(d, { id: 'data', path: image, readOnly: true, root: true, cacheType: 'Writeback' });
  assert.deepEqual(parseDiskFlag(diskFlag(d), 5), d);
  assert.throws(() => parseDiskFlag(`${image},rw`, 0), /--disk: unknown option 'rw'/);
  assert.throws(() => parseDiskFlag(',ro', 0), /has no image path/);
});

test('opened drives carry their id, size and read-only flag', async () => {
  const [rw, ro] = openDrives([
    { id: 'data', path: image },
    { id: 'ro', path: other, readOnly: true },
  ]);
  assert.ok(rw !== undefined && ro !== undefined);
  assert.equal(rw.capacitySectors, 2048);
  assert.equal(rw.readOnly, false);
  assert.equal(ro.readOnly, true);
  await Promise.all([rw.close(), ro.close()]);
});
