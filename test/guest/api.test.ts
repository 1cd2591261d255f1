/**
 * Firecracker's REST API and the SDK boot real guests:
 * - a real HTTP client (node:http) on the Unix socket of a `tsvmm --api-sock` child process boots
 *   the default guest with firecracker-go-sdk's call order, pauses it (its ticking stops), resumes
 *   it (the ticking carries on), swaps a drive's image with PATCH /drives (the guest sees the new
 *   size), flushes metrics, and ends it with SendCtrlAltDel;
 * - curl with Firecracker's getting-started sequence (boot-source, a root drive, InstanceStart);
 * - the SDK's MicroVM in-process, the same flow in TypeScript.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { commandCmdlineArg } from '../../src/image/guest-protocol.js';
import { buildExt4Image } from '../../src/image/rootfs.js';
import { MicroVM } from '../../src/sdk/microvm.js';
import { silentProgress } from '../../src/util/progress.js';
import { defaultGuest } from '../support/guest.js';

const bin = fileURLToPath(new URL('../../../bin/tsvmm.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'tsvmm-api-guest-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** Prints TICK n five times a second, forever: pausing the VM must stop it, resuming restart it. */
const TICKER = 'echo "SERIAL=$(cat /sys/block/vda/serial)"; echo "MAC=$(cat /sys/class/net/eth0/address 2>/dev/null)"; i=0; while true; do i=$((i + 1)); echo "TICK $i $(cat /sys/block/vda/size)"; sleep 0.2; done';

function lastTick(output: string): number {
  const all = [...output.matchAll(/^TICK (\d+) \d+$/gm)];
  return all.length === 0 ? 0 : Number(all[all.length - 1]![1]);
}

async function until(what: string, check: () => boolean, timeoutMs: number, context: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}:\n${context().slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function http(socketPath: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: unknown }> {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, method, path, headers: payload === undefined ? {} : { 'Content-Type': 'application/json' } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text.length > 0 ? (JSON.parse(text) as unknown) : undefined }));
    });
    req.on('error', reject);
    req.end(payload);
  });
}

function startApiServer(socket: string, extra: string[] = []): { child: ChildProcess; out: { stdout: string; stderr: string }; exited: Promise<number | null> } {
  const child = spawn(process.execPath, [bin, '--api-sock', socket, ...extra], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  const out = { stdout: '', stderr: '' };
  child.stdout!.on('data', (b: Buffer) => (out.stdout += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (out.stderr += b.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, out, exited };
}

function dataDrive(name: string, mib = 1): string {
  const path = join(dir, name);
  writeFileSync(path, Buffer.alloc(mib * 1024 * 1024));
  return path;
}

test("HTTP on the API socket boots a guest in firecracker-go-sdk's order; pause stops it, resume carries on, SendCtrlAltDel ends it", { timeout: 300_000 }, async () => {
  const guest = defaultGuest();
  const socket = join(dir, 'go-sdk-order.sock');
  const log = join(dir, 'vmm.log');
  const metrics = join(dir, 'metrics.json');
  const drive = dataDrive('data.img');
  const server = startApiServer(socket, ['--id', 'api-guest-test']);
  const context = (): string => `${server.out.stdout}\n--- stderr ---\n${server.out.stderr}`;
  try {
    await until('the API socket', () => existsSync(socket), 30_000, context);
    const put = async (path: string, body: unknown): Promise<void> => {
      const r = await http(socket, 'PUT', path, body);
      assert.equal(r.status, 204, `PUT ${path}: ${JSON.stringify(r.body)}`);
    };
    // firecracker-go-sdk's default handlers, in order (handlers.go): logger, metrics, machine config, boot source, drives, network, vsock, start.
    await put('/logger', { log_path: log, level: 'Info', show_level: true, show_log_origin: false });
    await put('/metrics', { metrics_path: metrics });
    await put('/machine-config', { vcpu_count: 1, mem_size_mib: 256, smt: false });
    await put('/boot-source', { kernel_image_path: guest.kernel, initrd_path: guest.initrd, boot_args: `${guest.bootArgs} ${commandCmdlineArg(TICKER)}` });
    await put('/drives/data', { drive_id: 'data', path_on_host: drive, is_root_device: false, is_read_only: true });
    // The VMM creates the tap (it runs as root here) and removes it when it exits.
    await put('/network-interfaces/eth0', { iface_id: 'eth0', host_dev_name: 'tsvmmapi0', guest_mac: '06:00:a9:fe:14:02' });
    await put('/vsock', { guest_cid: 3, uds_path: join(dir, 'api-vsock.sock') });
    const version = (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
    assert.deepEqual((await http(socket, 'GET', '/')).body, { id: 'api-guest-test', state: 'Not started', vmm_version: version, app_name: 'tsvmm' });
    assert.deepEqual((await http(socket, 'GET', '/version')).body, { firecracker_version: version });
    await put('/actions', { action_type: 'InstanceStart' });
    await until('the guest ticking', () => lastTick(server.out.stdout) >= 3, 200_000, context);
    assert.match(server.out.stdout, /^SERIAL=data$/m);
    assert.match(server.out.stdout, /^MAC=06:00:a9:fe:14:02$/m);
    assert.ok(existsSync(join(dir, 'api-vsock.sock')), 'the vsock socket listens');
    assert.equal(((await http(socket, 'GET', '/')).body as { state: string }).state, 'Running');
    // Pre-boot resources are refused now, with Firecracker's words.
    const late = await http(socket, 'PUT', '/machine-config', { vcpu_count: 2, mem_size_mib: 256 });
    assert.equal(late.status, 400);
    assert.match((late.body as { fault_message: string }).fault_message, /not supported after starting the microVM/);

    await put('/actions', { action_type: 'FlushMetrics' }).catch(() => undefined);
    const pause = await http(socket, 'PATCH', '/vm', { state: 'Paused' });
    assert.equal(pause.status, 204, JSON.stringify(pause.body));
    assert.equal(((await http(socket, 'GET', '/')).body as { state: string }).state, 'Paused');
    const atPause = lastTick(server.out.stdout);
    await new Promise((r) => setTimeout(r, 3000));
    const duringPause = lastTick(server.out.stdout) - atPause;
    // A tick already in the UART when the vCPU stopped may still come out; a running guest prints ~15.
    assert.ok(duringPause <= 1, `the guest kept running while paused: ${duringPause} ticks in 3 s`);
    const resume = await http(socket, 'PATCH', '/vm', { state: 'Resumed' });
    assert.equal(resume.status, 204, JSON.stringify(resume.body));
    const atResume = lastTick(server.out.stdout);
    await until('ticks after resume', () => lastTick(server.out.stdout) >= atResume + 3, 60_000, context);

    // PATCH /drives after boot: a bigger image behind the drive, and the guest sees the new size.
    assert.match(server.out.stdout, /^TICK \d+ 2048$/m, 'the 1 MiB drive is 2048 sectors');
    const bigger = dataDrive('data-2m.img', 2);
    const patch = await http(socket, 'PATCH', '/drives/data', { drive_id: 'data', path_on_host: bigger });
    assert.equal(patch.status, 204, JSON.stringify(patch.body));
    await until('the guest to see the new capacity', () => /^TICK \d+ 4096$/m.test(server.out.stdout), 60_000, context);

    const flush = await http(socket, 'PUT', '/actions', { action_type: 'FlushMetrics' });
    assert.equal(flush.status, 204, JSON.stringify(flush.body));
    const lines = readFileSync(metrics, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { api_server: { requests: number }; vcpu: { exits: number }; uart: { tx_bytes: number }; block: Record<string, { read_count: number }>; virtio: { doorbell_wakeups: number; notifications: number; interrupts: number } });
    const last = lines[lines.length - 1]!;
    assert.ok(last.vcpu.exits > 0 && last.uart.tx_bytes > 0 && last.api_server.requests >= 10, JSON.stringify(last));
    assert.ok(last.block['data']!.read_count > 0, JSON.stringify(last.block));
    // The guest's virtio drivers kicked their queues (through ioeventfds) and were interrupted back.
    assert.ok(last.virtio.notifications > 0 && last.virtio.doorbell_wakeups > 0 && last.virtio.interrupts > 0, JSON.stringify(last.virtio));

    const cad = await http(socket, 'PUT', '/actions', { action_type: 'SendCtrlAltDel' });
    assert.equal(cad.status, 204, JSON.stringify(cad.body));
    const code = await Promise.race([server.exited, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 60_000))]);
    assert.equal(code, 0, `after Ctrl-Alt-Del the VMM should exit 0:\n${context()}`);
    assert.ok(!existsSync(socket), 'the API socket is removed on exit');
    const logText = readFileSync(log, 'utf8');
    assert.match(logText, /\[api-guest-test:main:Info\] started/);
    assert.match(logText, /\[api-guest-test:main:Info\] paused/);
    assert.match(logText, /\[api-guest-test:main:Info\] resumed/);
  } finally {
    server.child.kill('SIGKILL');
  }
});

test("curl with Firecracker's getting-started sequence boots a guest from a root drive", { timeout: 300_000 }, async () => {
  // test/run.ts installs curl: a missing curl fails here rather than skipping the acceptance test.
  assert.equal(spawnSync('curl', ['--version']).status, 0, 'curl is needed (npm test installs it)');
  const guest = defaultGuest();
  const socket = join(dir, 'curl.sock');
  const hello = `hello-${randomBytes(6).toString('hex')}`;
  const root = join(dir, 'root');
  for (const d of ['bin', 'etc', 'proc', 'sys', 'dev', 'tmp']) mkdirSync(join(root, d), { recursive: true });
  copyFileSync('/bin/busybox', join(root, 'bin', 'busybox'));
  symlinkSync('busybox', join(root, 'bin', 'sh'));
  writeFileSync(join(root, 'etc', 'hello'), `${hello}\n`);
  const image = join(dir, 'rootfs.ext4');
  buildExt4Image({ sourceDir: root, output: image, progress: silentProgress });
  const server = startApiServer(socket);
  const context = (): string => `${server.out.stdout}\n--- stderr ---\n${server.out.stderr}`;
  try {
    await until('the API socket', () => existsSync(socket), 30_000, context);
    const curl = (method: string, path: string, body: unknown): void => {
      const r = spawnSync('curl', ['--silent', '--show-error', '--unix-socket', socket, '-i', '-X', method, `http://localhost${path}`, '-H', 'Accept: application/json', '-H', 'Content-Type: application/json', '-d', JSON.stringify(body)], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /^HTTP\/1\.1 204/, `${method} ${path}: ${r.stdout}`);
    };
    curl('PUT', '/boot-source', { kernel_image_path: guest.kernel, initrd_path: guest.initrd, boot_args: `${guest.bootArgs} ${commandCmdlineArg('echo "HELLO=$(busybox cat /etc/hello)"')}` });
    curl('PUT', '/drives/rootfs', { drive_id: 'rootfs', path_on_host: image, is_root_device: true, is_read_only: false });
    curl('PUT', '/actions', { action_type: 'InstanceStart' });
    const code = await Promise.race([server.exited, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 240_000))]);
    assert.equal(code, 0, context());
    assert.match(server.out.stdout, new RegExp(`^HELLO=${hello}$`, 'm'), context());
  } finally {
    server.child.kill('SIGKILL');
  }
});

test('the SDK boots the same guest in-process: console stream, pause and resume, Ctrl-Alt-Del, exit event', { timeout: 300_000 }, async () => {
  const guest = defaultGuest();
  const vm = new MicroVM({
    kernel: guest.kernel,
    initrd: guest.initrd,
    bootArgs: `${guest.bootArgs} ${commandCmdlineArg(TICKER)}`,
    memoryMib: 256,
    drives: [{ id: 'sdkdata', path: dataDrive('sdk.img'), readOnly: true }],
    entropy: true,
  });
  let output = '';
  vm.console!.output.on('data', (b: Buffer) => (output += b.toString()));
  let booted = false;
  vm.on('booted', () => (booted = true));
  const exitEvent = new Promise((resolve) => vm.once('exit', resolve));
  try {
    await vm.start();
    assert.equal((await vm.describe()).state, 'Running');
    await until('the guest ticking', () => lastTick(output) >= 3, 200_000, () => output);
    assert.match(output, /^SERIAL=sdkdata$/m);
    assert.ok(booted, 'the booted event fired');
    await vm.pause();
    assert.equal((await vm.describe()).state, 'Paused');
    const atPause = lastTick(output);
    await new Promise((r) => setTimeout(r, 3000));
    assert.ok(lastTick(output) - atPause <= 1, 'paused guest kept ticking');
    await vm.resume();
    const atResume = lastTick(output);
    await until('ticks after resume', () => lastTick(output) >= atResume + 3, 60_000, () => output);
    await assert.rejects(vm.updateDrive('nope', '/nonexistent'), /no drive has drive_id 'nope'/);
    await vm.sendCtrlAltDel();
    const exit = await Promise.race([vm.wait(), new Promise<'hung'>((r) => setTimeout(() => r('hung'), 60_000))]);
    assert.notEqual(exit, 'hung', output.slice(-2000));
    assert.equal((exit as { reason: string }).reason, 'reboot');
    assert.deepEqual(await exitEvent, exit);
  } finally {
    await Promise.race([vm.stop().catch(() => undefined), new Promise((r) => setTimeout(r, 10_000))]);
  }
});
