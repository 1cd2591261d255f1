/**
 * Booting the default guest from an ext4 root drive built by buildExt4Image: the init mounts
 * /dev/vda read-write (root=/dev/vda rw) and runs the command chrooted into it. The guest reads a
 * file the host put in the image, writes a new one and syncs; after the VM has ended the host
 * reads that file out of the image with debugfs.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { buildExt4Image } from '../../src/image/rootfs.js';
import { silentProgress } from '../../src/util/progress.js';
import { commandCmdlineArg } from '../../src/image/guest-protocol.js';
import { bootGuest, defaultGuest, field } from '../support/guest.js';

const dir = mkdtempSync(join(tmpdir(), 'tsvmm-rootfs-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const bin = fileURLToPath(new URL('../../../bin/tsvmm.js', import.meta.url));

/** A minimal root folder: static busybox as /bin/sh (so chroot works) and /etc/hello. */
function rootFolder(name: string, hello: string): string {
  const src = join(dir, name);
  for (const d of ['bin', 'etc', 'proc', 'sys', 'dev', 'tmp']) mkdirSync(join(src, d), { recursive: true });
  copyFileSync('/bin/busybox', join(src, 'bin', 'busybox'));
  symlinkSync('busybox', join(src, 'bin', 'sh'));
  writeFileSync(join(src, 'etc', 'hello'), `${hello}\n`);
  return src;
}

test('the default guest boots with an ext4 root drive, runs the command inside it, and its synced write is in the image', async () => {
  const hello = `hello-${randomBytes(8).toString('hex')}`;
  const token = `written-${randomBytes(8).toString('hex')}`;
  const src = rootFolder('root', hello);
  const image = join(dir, 'rootfs.ext4');
  buildExt4Image({ sourceDir: src, output: image, progress: silentProgress });

  const command = [
    // Inside the chroot only busybox is there: call its applets by name.
    'echo "HELLO=$(busybox cat /etc/hello)"',
    'echo "HAS_INIT=$(busybox test -e /init && echo yes || echo no)"',
    'echo "ROOT_MOUNT=$(busybox grep " / ext4 " /proc/mounts | busybox cut -d" " -f4 | busybox cut -d, -f1)"',
    `echo ${token} > /etc/written; echo "WRITE=$?"`,
    'busybox sync; echo "SYNC=$?"',
  ].join('; ');
  const r = await bootGuest({
    command,
    cmdline: `${defaultGuest().bootArgs} root=/dev/vda rw`,
    drives: [{ id: 'rootfs', path: image, root: true }],
  });
  const context = `${r.exit.message}\n${r.output}`;
  assert.equal(r.exit.reason, 'poweroff', context);
  assert.equal(r.exit.status, 0, context);
  assert.equal(field(r.output, 'HELLO'), hello, `the guest reads the file the host put in the image\n${context}`);
  assert.equal(field(r.output, 'HAS_INIT'), 'no', `the command ran chrooted into the root drive, not in the initramfs\n${context}`);
  assert.equal(field(r.output, 'ROOT_MOUNT'), 'rw', `root=/dev/vda rw mounts the root read-write\n${context}`);
  assert.equal(field(r.output, 'WRITE'), '0', context);
  assert.equal(field(r.output, 'SYNC'), '0', context);

  // The VM has ended: the guest's file is in the image.
  const cat = spawnSync('debugfs', ['-R', 'cat /etc/written', image], { encoding: 'utf8' });
  assert.equal(cat.status, 0, cat.stderr);
  assert.equal(cat.stdout, `${token}\n`, `debugfs reads the guest's file from the image\n${cat.stderr}`);
  // The init unmounted the root before powering off: the file system is clean.
  const fsck = spawnSync('e2fsck', ['-fn', image], { encoding: 'utf8' });
  assert.equal(fsck.status, 0, `e2fsck finds no errors\n${fsck.stdout}${fsck.stderr}`);
});

test('the CLI: `tsvmm image build`, then `tsvmm start --disk IMAGE,root,ro` runs the command in the read-only root', () => {
  const hello = `cli-${randomBytes(8).toString('hex')}`;
  const src = rootFolder('cli-root', hello);
  const image = join(dir, 'cli.ext4');
  const tsvmm = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], { cwd: dir, encoding: 'utf8', timeout: 300_000, stdio: ['ignore', 'pipe', 'pipe'] });
  const built = tsvmm('image', 'build', '--from', src, '--output', image);
  assert.equal(built.status, 0, built.stderr);
  const r = tsvmm('start', '--disk', `${image},root,ro`, '--', 'echo "HELLO=$(busybox cat /etc/hello)"; busybox touch /etc/new 2>/dev/null; echo "TOUCH=$?"');
  assert.equal(r.status, 0, r.stderr + r.stdout);
  assert.equal(field(r.stdout, 'HELLO'), hello, r.stderr + r.stdout);
  assert.notEqual(field(r.stdout, 'TOUCH'), '0', `a read-only root refuses writes\n${r.stdout}`);
  const ls = spawnSync('debugfs', ['-R', 'stat /etc/new', image], { encoding: 'utf8' });
  assert.match(ls.stderr + ls.stdout, /File not found/, 'the image is unchanged');
});

test('a Firecracker config file with a root drive, a read-only data drive and entropy boots; the synced write is in the root image', async () => {
  const hello = `hello-${randomBytes(8).toString('hex')}`;
  const token = `fc-${randomBytes(8).toString('hex')}`;
  const root = join(dir, 'fc-root.ext4');
  buildExt4Image({ sourceDir: rootFolder('fc-root', hello), output: root, progress: silentProgress });
  const marker = `data-${randomBytes(8).toString('hex')}`;
  const data = join(dir, 'fc-data.img');
  const dataContent = Buffer.alloc(1 << 20);
  dataContent.write(marker, 0, 'ascii');
  writeFileSync(data, dataContent);

  const guest = defaultGuest();
  const command = [
    'echo "HELLO=$(busybox cat /etc/hello)"',
    `echo "DATA=$(busybox head -c ${marker.length} /dev/vdb)"`,
    'echo "VDB_RO=$(busybox cat /sys/block/vdb/ro)"',
    'echo "RNG=$(busybox dd if=/dev/hwrng bs=16 count=1 2>/dev/null | busybox od -An -tx1 | busybox tr -d " \\n")"',
    `echo ${token} > /etc/fc-written; busybox sync; echo "SYNC=$?"`,
  ].join('; ');
  const config = join(dir, 'fc.json');
  // Firecracker's schema: the root drive is the one with is_root_device; drive_id names the device.
  writeFileSync(
    config,
    JSON.stringify({
      'boot-source': { kernel_image_path: guest.kernel, initrd_path: guest.initrd, boot_args: `${guest.bootArgs} ${commandCmdlineArg(command)}` },
      drives: [
        { drive_id: 'rootfs', path_on_host: root, is_root_device: true, is_read_only: false },
        { drive_id: 'data', path_on_host: data, is_root_device: false, is_read_only: true },
      ],
      'machine-config': { vcpu_count: 2, mem_size_mib: 256 },
      entropy: {},
    }),
  );
  const r = spawnSync(process.execPath, [bin, '--config-file', config, '--no-api'], { encoding: 'utf8', timeout: 300_000 });
  const context = `status ${r.status}\n${r.stderr}\n${r.stdout}`;
  assert.equal(r.status, 0, context);
  assert.match(r.stdout, new RegExp(`^HELLO=${hello}$`, 'm'), `the command ran in the root drive\n${context}`);
  assert.match(r.stdout, new RegExp(`^DATA=${marker}$`, 'm'), context);
  assert.match(r.stdout, /^VDB_RO=1$/m, context);
  assert.match(r.stdout, /^RNG=[0-9a-f]{32}$/m, context);
  assert.match(r.stdout, /^SYNC=0$/m, context);
  const cat = spawnSync('debugfs', ['-R', 'cat /etc/fc-written', root], { encoding: 'utf8' });
  assert.equal(cat.stdout, `${token}\n`, `debugfs reads the guest's file from the root image\n${cat.stderr}`);
});
