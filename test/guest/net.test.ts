/**
 * virtio-net on a TAP device, end to end. The tap is made here (inside the nested host on a
 * machine without VT-x/AMD-V), with link-local addresses (169.254.0.0/16), and the guest talks only
 * to this host: eth0 comes up with the configured MAC, ping works both ways, 100 MB go each way
 * over TCP with matching checksums, and two interfaces work at once.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { createHash, randomBytes } from 'node:crypto';
import { connect, createServer } from 'node:net';
import { after, test } from 'node:test';
import { startToolsGuest } from '../support/tools-guest.js';

const execFileAsync = promisify(execFile);
const made: string[] = [];
after(() => {
  for (const tap of made) spawnSync('ip', ['link', 'del', tap]);
});

/** A tap owned by this test with `address`/24 on the host side, up. */
function makeTap(name: string, address: string): void {
  spawnSync('ip', ['link', 'del', name]);
  execFileSync('ip', ['tuntap', 'add', 'dev', name, 'mode', 'tap']);
  made.push(name);
  execFileSync('ip', ['addr', 'add', `${address}/24`, 'dev', name]);
  execFileSync('ip', ['link', 'set', name, 'up']);
}

const MB100 = 100 * 1000 * 1000;

test('eth0 has the configured MAC, ping works both ways, and 100 MB cross each way over TCP intact', { timeout: 330_000 }, async () => {
  makeTap('tsvmmnet0', '169.254.10.1');
  // Host → guest: a listener in the guest hashes what arrives. Guest → host: the guest sends a
  // file of random bytes whose hash it printed first.
  const command = [
    'ip link set eth0 up && ip addr add 169.254.10.2/24 dev eth0',
    'echo "MAC=$(cat /sys/class/net/eth0/address)"',
    'ping -c 3 -W 5 169.254.10.1 >/dev/null && echo PING_HOST=ok || echo PING_HOST=fail',
    '(socat -u TCP-LISTEN:5001,reuseaddr STDOUT | md5sum | sed "s/^/RECEIVED=/") &',
    'echo LISTENING',
    `head -c ${MB100} /dev/urandom > /tmp/out && echo "SENT_MD5=$(md5sum < /tmp/out)"`,
    'socat -u FILE:/tmp/out TCP:169.254.10.1:5002 && echo SENT=ok',
    'wait',
    'echo DONE',
  ].join('\n');
  const received = new Promise<{ md5: string; bytes: number }>((resolve, reject) => {
    const server = createServer((s) => {
      const h = createHash('md5');
      let bytes = 0;
      s.on('data', (b: Buffer) => {
        h.update(b);
        bytes += b.length;
      });
      s.on('end', () => {
        server.close();
        resolve({ md5: h.digest('hex'), bytes });
      });
      s.on('error', reject);
    });
    server.listen(5002, '169.254.10.1');
  });
  const g = await startToolsGuest(command, {
    networkInterfaces: [{ id: 'eth0', hostDevName: 'tsvmmnet0', guestMac: '06:00:a9:fe:0a:02' }],
  });
  try {
    await g.waitFor(/^MAC=06:00:a9:fe:0a:02$/m);
    await g.waitFor(/^PING_HOST=ok$/m, 60_000);
    // Host → guest ping while the guest is up. Asynchronously: the VMM's devices run on this
    // process's event loop, which a spawnSync would stop for the whole ping.
    const ping = await execFileAsync('ping', ['-c', '3', '-W', '5', '169.254.10.2'], { encoding: 'utf8' });
    assert.match(ping.stdout, /3 received/);

    await g.waitFor(/^LISTENING$/m);
    const data = randomBytes(MB100);
    const expected = createHash('md5').update(data).digest('hex');
    await new Promise<void>((resolve, reject) => {
      const s = connect(5001, '169.254.10.2', () => {
        s.end(data);
      });
      s.on('close', () => resolve());
      s.on('error', reject);
    });
    const [, inGuest] = (await g.waitFor(/^RECEIVED=([0-9a-f]{32})/m, 240_000)) as RegExpMatchArray & [string, string];
    assert.equal(inGuest, expected, 'host → guest: the guest received different bytes');

    const [, sent] = (await g.waitFor(/^SENT_MD5=([0-9a-f]{32})/m, 240_000)) as RegExpMatchArray & [string, string];
    const got = await received;
    assert.equal(got.bytes, MB100);
    assert.equal(got.md5, sent, 'guest → host: the host received different bytes');
    await g.waitFor(/^DONE$/m, 60_000);
    const exit = await g.vm.wait();
    assert.equal(exit.reason, 'poweroff', exit.message);
  } finally {
    await g.vm.stop().catch(() => undefined);
  }
});

test('two interfaces at once: each with its MAC, each reaching its own host address', { timeout: 200_000 }, async () => {
  makeTap('tsvmmnet1', '169.254.11.1');
  makeTap('tsvmmnet2', '169.254.12.1');
  const command = [
    'ip link set eth0 up && ip addr add 169.254.11.2/24 dev eth0',
    'ip link set eth1 up && ip addr add 169.254.12.2/24 dev eth1',
    'echo "MACS=$(cat /sys/class/net/eth0/address) $(cat /sys/class/net/eth1/address)"',
    'ping -c 2 -W 5 -I eth0 169.254.11.1 >/dev/null && echo PING0=ok || echo PING0=fail',
    'ping -c 2 -W 5 -I eth1 169.254.12.1 >/dev/null && echo PING1=ok || echo PING1=fail',
  ].join('\n');
  const g = await startToolsGuest(command, {
    networkInterfaces: [
      { id: 'eth0', hostDevName: 'tsvmmnet1', guestMac: '06:00:a9:fe:0b:02' },
      { id: 'eth1', hostDevName: 'tsvmmnet2', guestMac: '06:00:a9:fe:0c:02' },
    ],
  });
  try {
    const exit = await g.vm.wait();
    assert.equal(exit.reason, 'poweroff', `${exit.message}\n${g.output().slice(-2000)}`);
    assert.match(g.output(), /^MACS=06:00:a9:fe:0b:02 06:00:a9:fe:0c:02$/m);
    assert.match(g.output(), /^PING0=ok$/m);
    assert.match(g.output(), /^PING1=ok$/m);
  } finally {
    await g.vm.stop().catch(() => undefined);
  }
});

test('a tap another process holds is a one-line error naming it', async () => {
  makeTap('tsvmmnet3', '169.254.13.1');
  const { Tap, TapError } = await import('../../src/devices/virtio/net-tap.js');
  const holder = Tap.open('tsvmmnet3');
  try {
    assert.throws(() => Tap.open('tsvmmnet3'), (e: unknown) => e instanceof TapError && /tsvmmnet3 is in use/.test(e.message) && !e.message.includes('\n'));
  } finally {
    holder.close();
  }
});
