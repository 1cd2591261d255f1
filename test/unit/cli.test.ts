/**
 * The `tsvmm` command as a user runs it: help, usage errors and bad input each give one line on
 * stderr, no stack trace, and a non-zero status. Every case here fails before KVM is needed.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { fetchDebianKernel } from '../../src/image/debian.js';
import { silentProgress } from '../../src/util/progress.js';

const bin = fileURLToPath(new URL('../../../bin/tsvmm.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'tsvmm-cli-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function tsvmm(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [bin, ...args], { cwd: dir, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function assertOneLineError(r: { status: number | null; stderr: string }, pattern: RegExp): void {
  assert.notEqual(r.status, 0, 'non-zero status');
  const lines = r.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `exactly one line on stderr, got:\n${r.stderr}`);
  assert.match(lines[0]!, /^tsvmm: /);
  assert.match(lines[0]!, pattern);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
}

test('--help prints usage and exits 0', () => {
  const r = tsvmm('--help');
  assert.equal(r.status, 0);
  assert.match(r.stdout, /^Usage:/m);
  assert.match(r.stdout, /tsvmm run --kernel/);
  assert.match(r.stdout, /--config-file/);
});

test('--version prints the package version', () => {
  const r = tsvmm('--version');
  assert.equal(r.status, 0);
  assert.match(r.stdout, /^tsvmm \d+\.\d+\.\d+\n$/);
});

test('an unknown flag or command gives one line and a non-zero status', () => {
  assertOneLineError(tsvmm('--frobnicate'), /unknown option '--frobnicate'/);
  assertOneLineError(tsvmm('start', '--frobnicate'), /unknown option '--frobnicate'/);
  assertOneLineError(tsvmm('frobnicate'), /unknown command 'frobnicate'/);
  assertOneLineError(tsvmm('run'), /--kernel PATH is required/);
});

test('bad sizes and counts on the command line are refused', () => {
  assertOneLineError(tsvmm('start', '--mem', '12M'), /--mem: must be from 128M/);
  assertOneLineError(tsvmm('start', '--mem', 'lots'), /'lots' is not a size/);
  assertOneLineError(tsvmm('start', '--cpus', '0'), /--cpus: must be from 1 to 32/);
  assertOneLineError(tsvmm('start', '--cpus', '1000'), /--cpus: must be from 1 to 32/);
  assertOneLineError(tsvmm('start', '--virtio-transport', 'usb'), /--virtio-transport: 'usb' is not a transport; use pci or mmio/);
});

const kernel = fetchDebianKernel('cloud-amd64', silentProgress).bzImage;

function config(obj: unknown, name = 'vm.json'): string {
  const p = join(dir, name);
  writeFileSync(p, typeof obj === 'string' ? obj : JSON.stringify(obj));
  return p;
}

test('kernel and initrd problems are one line each', () => {
  assertOneLineError(tsvmm('run', '--kernel', join(dir, 'missing')), /kernel .*missing does not exist/);
  assertOneLineError(tsvmm('run', '--kernel', dir), /is a directory/);
  const notKernel = config('just some text\n', 'not-a-kernel');
  assertOneLineError(tsvmm('run', '--kernel', notKernel), /neither a bzImage nor an ELF vmlinux/);
  const big = join(dir, 'big.cpio');
  writeFileSync(big, '');
  truncateSync(big, 200 * 1024 * 1024);
  assertOneLineError(tsvmm('run', '--kernel', kernel, '--initrd', big, '--mem', '128M'), /initrd \(200 MiB\) does not fit in guest memory \(128 MiB\)/);
  assertOneLineError(tsvmm('run', '--kernel', kernel, '--initrd', join(dir, 'nope.cpio')), /initrd .* does not exist/);
});

test('Firecracker config files with bad values are refused with the field named', () => {
  const boot = { kernel_image_path: kernel };
  const cases: Array<[unknown, RegExp]> = [
    [{ 'boot-source': boot, 'machine-config': { vcpu_count: 0, mem_size_mib: 128 } }, /machine-config\.vcpu_count: .*got 0/],
    [{ 'boot-source': boot, 'machine-config': { vcpu_count: 1000, mem_size_mib: 128 } }, /machine-config\.vcpu_count: .*got 1000/],
    [{ 'boot-source': boot, 'machine-config': { vcpu_count: 1, mem_size_mib: 0 } }, /machine-config\.mem_size_mib: .*got 0/],
    [{ 'boot-source': boot, 'machine-config': { vcpu_count: '2', mem_size_mib: 128 } }, /machine-config\.vcpu_count/],
    [{ 'boot-source': boot, 'machine-config': { vcpu_count: 1, mem_size_mib: 128 }, bogus: 1 }, /unknown field 'bogus'/],
    [{ 'boot-source': { ...boot, kernal: 1 }, 'machine-config': { vcpu_count: 1, mem_size_mib: 128 } }, /boot-source.*unknown field 'kernal'/],
    ['{"boot-source": {"kernel_image_path": "x",}', /malformed JSON .* line 1 column/],
    [{ 'boot-source': { kernel_image_path: join(dir, 'missing') }, 'machine-config': { vcpu_count: 1, mem_size_mib: 128 } }, /kernel_image_path: .*does not exist/],
    // The entropy device is supported; its rate limiter is not yet.
    [
      { 'boot-source': boot, 'machine-config': { vcpu_count: 1, mem_size_mib: 128 }, entropy: { rate_limiter: { bandwidth: { size: 1000, refill_time: 100 } } } },
      /entropy\.rate_limiter: tsvmm does not support rate limiters yet/,
    ],
  ];
  for (const [body, pattern] of cases) assertOneLineError(tsvmm('--config-file', config(body), '--no-api'), pattern);
  assertOneLineError(tsvmm('--config-file', join(dir, 'absent.json'), '--no-api'), /absent\.json/);
});

test('malformed drives (--disk or config drives) are one line each, before any boot', () => {
  const img = join(dir, 'disk.img');
  writeFileSync(img, Buffer.alloc(1 << 20));
  assertOneLineError(tsvmm('start', '--disk', join(dir, 'nope.img')), /drive 'disk0': .*nope\.img does not exist/);
  assertOneLineError(tsvmm('start', '--disk', dir), /drive 'disk0': .* is a directory/);
  assertOneLineError(tsvmm('start', '--disk', `${img},id=a`, '--disk', `${img},id=a,ro`), /drive 'a': the drive id is used twice/);
  assertOneLineError(tsvmm('start', '--disk', `${img},root`, '--disk', `${img},root,ro`), /drive 'disk1': only one drive can be the root device/);
  assertOneLineError(tsvmm('start', '--disk', `${img},bogus`), /--disk: unknown option 'bogus'/);
  const boot = { kernel_image_path: kernel };
  const drive = (id: string, path: string, root = false): unknown => ({ drive_id: id, path_on_host: path, is_root_device: root, is_read_only: true });
  const cases: Array<[unknown, RegExp]> = [
    [{ 'boot-source': boot, drives: [drive('d', join(dir, 'nope.img'))] }, /drives\[0\]\.path_on_host: .*nope\.img does not exist/],
    [{ 'boot-source': boot, drives: [drive('d', dir)] }, /drives\[0\]\.path_on_host: .* is a directory/],
    [{ 'boot-source': boot, drives: [drive('d', img), drive('d', img)] }, /drives\[1\]\.drive_id: .*d/],
    [{ 'boot-source': boot, drives: [drive('a', img, true), drive('b', img, true)] }, /drives\[1\]\.is_root_device: only one device can be the root device/],
  ];
  for (const [body, pattern] of cases) assertOneLineError(tsvmm('--config-file', config(body), '--no-api'), pattern);
});

test('image build makes an ext4 image from a folder; bad input gives one line', () => {
  const src = join(dir, 'image-src');
  mkdirSync(src);
  writeFileSync(join(src, 'hello'), 'hi\n');
  const out = join(dir, 'image.ext4');
  const r = tsvmm('image', 'build', '--from', src, '--output', out, '--size', '20M');
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, `${out} (ext4, 20 MiB)\n`);
  assert.equal(statSync(out).size, 20 * 1024 * 1024);
  assertOneLineError(tsvmm('image'), /image: a subcommand is needed/);
  assertOneLineError(tsvmm('image', 'frob'), /unknown subcommand 'frob'/);
  assertOneLineError(tsvmm('image', 'build', '--from', src), /--from DIR and --output FILE are required/);
  assertOneLineError(tsvmm('image', 'build', '--from', join(dir, 'missing'), '--output', out), /does not exist/);
  assertOneLineError(tsvmm('image', 'build', '--from', join(src, 'hello'), '--output', out), /is not a directory/);
  assertOneLineError(tsvmm('image', 'build', '--from', src, '--output', out, '--size', 'big'), /--size: 'big' is not a size/);
});

test('--net and --vsock: malformed values are one line each, before any boot', () => {
  assertOneLineError(tsvmm('start', '--net', 'tap0,mac=01:00:00:00:00:01'), /--net: mac: must be a unicast address/);
  assertOneLineError(tsvmm('start', '--net', 'tap0,mac=zz'), /--net: mac: must be a MAC address/);
  assertOneLineError(tsvmm('start', '--net', 'a-very-long-tap-name'), /--net: 'a-very-long-tap-name' is not a Linux interface name/);
  assertOneLineError(tsvmm('start', '--net', 'tap0,mtu=9'), /--net: cannot use 'mtu=9'/);
  assertOneLineError(tsvmm('start', '--net', 'tap0,id=x', '--net', 'tap1,id=x'), /--net: the interface id 'x' is used twice/);
  assertOneLineError(tsvmm('start', '--vsock', 'v.sock,cid=2'), /--vsock: cannot use 'cid=2'/);
  const boot = { kernel_image_path: kernel };
  const iface = (id: string, tap: string, mac?: string): unknown => ({ iface_id: id, host_dev_name: tap, ...(mac !== undefined ? { guest_mac: mac } : {}) });
  const cases: Array<[unknown, RegExp]> = [
    [{ 'boot-source': boot, 'network-interfaces': [iface('eth0', 'tap0', '06:00:00:00:00:0g')] }, /network-interfaces\[0\]\.guest_mac: must be a MAC address/],
    [{ 'boot-source': boot, 'network-interfaces': [iface('eth0', 'tap0'), iface('eth0', 'tap1')] }, /network-interfaces\[1\]\.iface_id/],
    [{ 'boot-source': boot, vsock: { guest_cid: 3, uds_path: join(dir, 'no-such-folder', 'v.sock') } }, /vsock\.uds_path: .*no-such-folder/],
  ];
  for (const [body, pattern] of cases) assertOneLineError(tsvmm('--config-file', config(body), '--no-api'), pattern);
});
