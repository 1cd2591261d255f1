import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, writeFileSync, chmodSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import {
  ConfigError,
  ConfigFileError,
  ConfigReadError,
  JsonSyntaxError,
  checkConfigFiles,
  loadConfigFile,
  parseVmConfig,
} from '../../src/api/config.js';
import { TsvmmError } from '../../src/util/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'tsvmm-config-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, content: string): string {
  const path = join(dir, name);
  writeFileSync(path, content);
  return path;
}

async function assertRejects(promise: Promise<unknown>, kind: new (...args: never[]) => Error, expected: string | RegExp): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof TsvmmError && err instanceof kind, `expected ${kind.name}, got ${String(err)}`);
    assert.ok(!err.message.includes('\n'), `message is not one line: ${JSON.stringify(err.message)}`);
    if (typeof expected === 'string') assert.equal(err.message, expected);
    else assert.match(err.message, expected);
    return true;
  });
}

const kernel = file('vmlinux', 'not really a kernel');
const rootfs = file('rootfs.ext4', 'not really ext4');
mkdirSync(join(dir, 'kernels'));

test('loadConfigFile reads, parses and validates a file', async () => {
  const path = file(
    'vm.json',
    JSON.stringify({ 'boot-source': { kernel_image_path: kernel }, 'machine-config': { vcpu_count: 2, mem_size_mib: 512 } }, null, 2),
  );
  const config = await loadConfigFile(path);
  assert.equal(config.machineConfig.vcpu_count, 2);
  assert.equal(config.bootSource.kernel_image_path, kernel);
});

test('loadConfigFile: missing file, directory, malformed JSON, invalid content', async () => {
  await assertRejects(loadConfigFile(join(dir, 'nope.json')), ConfigReadError, `config file ${join(dir, 'nope.json')} does not exist`);
  await assertRejects(loadConfigFile(join(dir, 'kernels')), ConfigReadError, `config file ${join(dir, 'kernels')} is a directory, expected a JSON file`);
  const bad = file('bad.json', '{\n  "boot-source": {\n    "kernel_image_path": "k",\n  }\n}\n');
  await assertRejects(loadConfigFile(bad), JsonSyntaxError, `malformed JSON in ${bad} at line 4 column 3: trailing comma before }`);
  const invalid = file('invalid.json', '{"boot-source": {"kernel_image_path": "k"}, "machine-config": {"vcpu_count": 1000, "mem_size_mib": 256}}');
  await assertRejects(loadConfigFile(invalid), ConfigError, 'machine-config.vcpu_count: must be an integer from 1 to 32, got 1000');
});

test('checkConfigFiles accepts existing files', async () => {
  const config = parseVmConfig({
    'boot-source': { kernel_image_path: kernel, initrd_path: rootfs },
    drives: [{ drive_id: 'root', path_on_host: rootfs, is_root_device: true }],
    vsock: { guest_cid: 3, uds_path: join(dir, 'v.sock') },
    logger: { log_path: join(dir, 'fc.log') },
  });
  await checkConfigFiles(config);
});

test('checkConfigFiles: relative paths resolve against baseDir', async () => {
  const config = parseVmConfig({ 'boot-source': { kernel_image_path: 'vmlinux' } });
  await checkConfigFiles(config, dir);
  await assertRejects(checkConfigFiles(config, join(dir, 'kernels')), ConfigFileError, 'boot-source.kernel_image_path: vmlinux does not exist');
});

test('checkConfigFiles names the field and the file in one line', async () => {
  const missing = join(dir, 'x', 'vmlinuz');
  await assertRejects(
    checkConfigFiles(parseVmConfig({ 'boot-source': { kernel_image_path: missing } })),
    ConfigFileError,
    `boot-source.kernel_image_path: ${missing} does not exist`,
  );
  await assertRejects(
    checkConfigFiles(parseVmConfig({ 'boot-source': { kernel_image_path: join(dir, 'kernels') } })),
    ConfigFileError,
    `boot-source.kernel_image_path: ${join(dir, 'kernels')} is a directory, expected a file`,
  );
  const empty = file('empty.img', '');
  await assertRejects(
    checkConfigFiles(parseVmConfig({ 'boot-source': { kernel_image_path: kernel, initrd_path: empty } })),
    ConfigFileError,
    `boot-source.initrd_path: ${empty} is empty`,
  );
  await assertRejects(
    checkConfigFiles(
      parseVmConfig({
        'boot-source': { kernel_image_path: kernel },
        drives: [
          { drive_id: 'root', path_on_host: rootfs, is_root_device: true },
          { drive_id: 'data', path_on_host: join(dir, 'data.img'), is_root_device: false },
        ],
      }),
    ),
    ConfigFileError,
    `drives[1].path_on_host: ${join(dir, 'data.img')} does not exist`,
  );
  await assertRejects(
    checkConfigFiles(parseVmConfig({ 'boot-source': { kernel_image_path: kernel }, vsock: { guest_cid: 3, uds_path: join(dir, 'no-dir', 'v.sock') } })),
    ConfigFileError,
    `vsock.uds_path: ${join(dir, 'no-dir', 'v.sock')} cannot be created: directory ${join(dir, 'no-dir')} does not exist`,
  );
  await assertRejects(
    checkConfigFiles(parseVmConfig({ 'boot-source': { kernel_image_path: kernel }, 'cpu-config': join(dir, 't2.json') })),
    ConfigFileError,
    `cpu-config: ${join(dir, 't2.json')} does not exist`,
  );
});

test('checkConfigFiles: an unreadable kernel or a read-only image opened read-write', async () => {
  const locked = file('locked.img', 'data');
  chmodSync(locked, 0o444);
  const writable = parseVmConfig({
    'boot-source': { kernel_image_path: kernel },
    drives: [{ drive_id: 'root', path_on_host: locked, is_root_device: true, is_read_only: false }],
  });
  const readOnly = parseVmConfig({
    'boot-source': { kernel_image_path: kernel },
    drives: [{ drive_id: 'root', path_on_host: locked, is_root_device: true, is_read_only: true }],
  });
  await checkConfigFiles(readOnly);
  // Root may write anything, so the refusal is only observable for other users.
  if (process.getuid?.() !== 0) {
    await assertRejects(checkConfigFiles(writable), ConfigFileError, /^drives\[0\]\.path_on_host: .* is not writable by this user \(set is_read_only/);
  } else {
    await checkConfigFiles(writable);
  }
});
