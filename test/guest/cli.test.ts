/**
 * The CLI boots real guests: a Firecracker-style config file, and `tsvmm start` with a command
 * whose exit status becomes tsvmm's. Runs the CLI as a child process, as a user would.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { commandCmdlineArg, DEFAULT_GUEST_COMMAND } from '../../src/image/guest-protocol.js';
import { defaultGuest } from '../support/guest.js';

const bin = fileURLToPath(new URL('../../../bin/tsvmm.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'tsvmm-cli-guest-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function tsvmm(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [bin, ...args], { cwd: dir, encoding: 'utf8', timeout: 300_000, stdio: ['ignore', 'pipe', 'pipe'] });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('a Firecracker-style config file boots, with vcpu_count 2 online in the guest', () => {
  const guest = defaultGuest();
  const file = join(dir, 'vm.json');
  writeFileSync(
    file,
    JSON.stringify({
      'boot-source': {
        kernel_image_path: guest.kernel,
        initrd_path: guest.initrd,
        boot_args: `${guest.bootArgs} ${commandCmdlineArg('echo "NPROC=$(nproc)"')}`,
      },
      'machine-config': { vcpu_count: 2, mem_size_mib: 256 },
    }),
  );
  const r = tsvmm('--config-file', file, '--no-api', '--boot-timer');
  assert.equal(r.status, 0, r.stderr + r.stdout);
  assert.match(r.stdout, /^NPROC=2$/m);
  assert.match(r.stderr, /guest booted in [\d.]+ ms/);
});

test("`tsvmm start -- COMMAND` shows the command's output and exits with its status", () => {
  const r = tsvmm('start', '--', 'uname -r; exit 3');
  assert.equal(r.status, 3, r.stderr + r.stdout);
  assert.match(r.stdout, /^6\.1\.0-\d+-cloud-amd64$/m);
  // And the default greeting is what `npm start` shows.
  assert.match(DEFAULT_GUEST_COMMAND, /uname -r/);
});

test('a guest that reboots ends the VM with status 0 and one line saying how it reset', () => {
  const r = tsvmm('start', '--', 'reboot -f');
  assert.equal(r.status, 0, r.stderr + r.stdout);
  // reboot=k (the default guest's) resets through the i8042 controller.
  assert.match(r.stderr, /^tsvmm: the guest reset the CPU through the i8042$/m);
});

test('SIGTERM stops a running VM cleanly: a status line, non-zero exit, no hang; with TSVMM_STOP_REPORT=1 the devices\' state first', async () => {
  const child = spawn(process.execPath, [bin, 'start', '--', 'echo READY; sleep 600'], {
    cwd: dir,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, TSVMM_STOP_REPORT: '1' },
  });
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`guest never printed READY:\n${stdout}\n${stderr}`)), 240_000);
    child.stdout.on('data', (b: Buffer) => {
      stdout += b.toString();
      if (/^READY$/m.test(stdout)) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  child.kill('SIGTERM');
  const killer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  const { code, signal } = await exited;
  clearTimeout(killer);
  assert.equal(signal, null, 'tsvmm handled SIGTERM itself rather than dying of it or being killed');
  assert.notEqual(code, 0);
  assert.match(stderr, /stopped by SIGTERM/);
  // The guest sleeps with its console quiet: the UART has sent bytes (READY) and nothing waits in it.
  assert.match(stderr, /state: serial COM1: ier=0x[0-9a-f]{2} iir=0x[0-9a-f]{2} .* tx_buffered=0$/m);
  assert.match(stderr, /state: vcpu 0: exits [1-9]\d* \(io [1-9]\d*, /);
  const metrics = /state: metrics: (\{.*\})$/m.exec(stderr);
  assert.ok(metrics !== null, stderr);
  assert.ok((JSON.parse(metrics[1]!) as { uart: { tx_bytes: number } }).uart.tx_bytes > 0);
});
