/**
 * Issue #6's acceptance, as a user runs it: a Firecracker-style JSON with `network-interfaces` and
 * `vsock` boots with `tsvmm --config-file … --no-api`; the guest reaches this host over the tap
 * (ping); a host program talks to a guest listener through `CONNECT <port>`; a guest program talks
 * to a host listener on `${uds_path}_<port>`.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { commandCmdlineArg } from '../../src/image/guest-protocol.js';
import { defaultGuest } from '../support/guest.js';
import { socatInitrd } from '../support/tools-guest.js';
import { connectToGuestWhenListening } from '../support/vsock-client.js';

const bin = fileURLToPath(new URL('../../../bin/tsvmm.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'tsvmm-net-vsock-'));
const TAP = 'tsvmmacc0';
after(() => {
  spawnSync('ip', ['link', 'del', TAP]);
  rmSync(dir, { recursive: true, force: true });
});

test('a config file with network-interfaces and vsock boots; tap and vsock work both ways', { timeout: 300_000 }, async () => {
  spawnSync('ip', ['link', 'del', TAP]);
  execFileSync('ip', ['tuntap', 'add', 'dev', TAP, 'mode', 'tap']);
  execFileSync('ip', ['addr', 'add', '169.254.20.1/24', 'dev', TAP]);
  execFileSync('ip', ['link', 'set', TAP, 'up']);
  const uds = join(dir, 'v.sock');
  // The host listener a guest program reaches as host port 6000.
  let fromGuest = '';
  const listener = createServer((s) => {
    s.setEncoding('utf8');
    s.on('data', (d: string) => (fromGuest += d));
    s.end('hello from the host\n');
  });
  await new Promise<void>((r) => listener.listen(`${uds}_6000`, r));
  const guest = defaultGuest();
  const command = [
    'ip link set eth0 up && ip addr add 169.254.20.2/24 dev eth0',
    'ping -c 2 -W 5 169.254.20.1 >/dev/null && echo PING=ok || echo PING=fail',
    `socat VSOCK-LISTEN:6001 SYSTEM:'echo hello from the guest' &`,
    'echo READY',
    'echo "FROM_HOST=$(echo hi host | socat -t 10 - VSOCK-CONNECT:2:6000)"',
    'wait; echo DONE',
  ].join('\n');
  const config = join(dir, 'vm.json');
  writeFileSync(
    config,
    JSON.stringify({
      'boot-source': { kernel_image_path: guest.kernel, initrd_path: socatInitrd(), boot_args: `${guest.bootArgs} ${commandCmdlineArg(command)}` },
      'machine-config': { vcpu_count: 1, mem_size_mib: 256 },
      'network-interfaces': [{ iface_id: 'eth0', host_dev_name: TAP, guest_mac: '06:00:a9:fe:14:02' }],
      vsock: { guest_cid: 3, uds_path: uds },
    }),
  );
  // Asynchronously: this process must keep serving its listener while the VM runs.
  const child = spawn(process.execPath, [bin, '--config-file', config, '--no-api'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  try {
    const deadline = Date.now() + 240_000;
    while (!/^READY$/m.test(stdout)) {
      if (Date.now() > deadline || child.exitCode !== null) throw new Error(`the guest never got ready:\n${stdout}\n${stderr}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.match(stdout, /^PING=ok$/m, 'the guest reaches the host over the tap');
    // A host program talks to the guest's listener through CONNECT.
    // (the guest's socat may still be starting when READY prints: retried while the guest refuses)
    const { socket: s, hostPort, rest } = await connectToGuestWhenListening(uds, 6001);
    assert.ok(hostPort > 0);
    const reply = await new Promise<string>((resolve, reject) => {
      let text = rest.toString('utf8');
      s.setEncoding('utf8');
      s.on('data', (d: string) => (text += d));
      s.on('close', () => resolve(text));
      s.on('error', reject);
    });
    assert.equal(reply, 'hello from the guest\n');
    const code = await Promise.race([exited, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 120_000))]);
    assert.equal(code, 0, `${stdout}\n${stderr}`);
    assert.match(stdout, /^FROM_HOST=hello from the host$/m, 'a guest program reaches the host listener');
    assert.equal(fromGuest, 'hi host\n');
  } finally {
    child.kill('SIGKILL');
    listener.close();
  }
});
