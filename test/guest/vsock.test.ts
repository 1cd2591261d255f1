/**
 * virtio-vsock with Firecracker's hybrid model, end to end, with socat in the guest:
 * - host → guest: a host program connects to uds_path, writes "CONNECT 5001\n", gets "OK <port>\n"
 *   and talks to a guest echo listener: 10 MB echoed intact, then 50 connections at once;
 * - guest → host: the guest connects to host port 5000, which reaches the listener on
 *   `${uds_path}_5000`: 10 MB echoed intact;
 * - closes: the host hanging up mid-transfer, the guest closing its side, and the VMM exiting with
 *   a connection open (the host socket is closed, not left hanging).
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { startToolsGuest } from '../support/tools-guest.js';
import { connectToGuest, connectToGuestWhenListening } from '../support/vsock-client.js';

const dir = mkdtempSync(join(tmpdir(), 'tsvmm-vsock-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const MB10 = 10 * 1024 * 1024;
const md5 = (b: Uint8Array): string => createHash('md5').update(b).digest('hex');

/** Send `data` and collect the echo until `data.length` bytes came back (or the stream ended). */
function echo(socket: Socket, data: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let got = 0;
    socket.on('data', (b: Buffer) => {
      chunks.push(b);
      got += b.length;
      if (got >= data.length) resolve(Buffer.concat(chunks));
    });
    socket.on('end', () => resolve(Buffer.concat(chunks)));
    socket.on('error', reject);
    socket.write(data);
  });
}

/** `promise`, or an error naming `what` (and the guest's last output) after `ms`: a stuck step says which. */
function within<T>(what: string, ms: number, promise: Promise<T>, context: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no result in ${ms / 1000} s\n${context().slice(-2000)}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

test('vsock both ways: 10 MB echoed intact each way, 50 connections at once, clean closes, and the VMM exiting closes open connections', { timeout: 330_000 }, async () => {
  const uds = join(dir, 'v.sock');
  // Guest → host: the guest's connections to host port 5000 land here; echo them.
  let guestConnections = 0;
  const hostListener = createServer({ allowHalfOpen: true }, (s) => {
    guestConnections++;
    s.pipe(s);
  });
  await new Promise<void>((r) => hostListener.listen(`${uds}_5000`, r));
  const command = [
    `head -c ${MB10} /dev/urandom > /tmp/d && echo "DATA_MD5=$(md5sum < /tmp/d)"`,
    // The echo listener for host-initiated connections, one process per connection; a backlog
    // for 50 connections arriving at once (socat's default is 5: the rest would be refused).
    'socat VSOCK-LISTEN:5001,reuseaddr,fork,backlog=64 EXEC:cat &',
    // The listener may not be up yet when this prints: the host retries while the guest refuses.
    'echo LISTENING',
    // Guest → host: send the file, read the echo back until the host closes its side.
    'socat -t 60 VSOCK-CONNECT:2:5000 STDIO < /tmp/d > /tmp/e && echo "ECHO_MD5=$(md5sum < /tmp/e)"',
    // Stay up until the host connects to 5009 and hangs up.
    'socat -u VSOCK-LISTEN:5009 STDOUT & echo READY_TO_END; wait $!; echo DONE',
  ].join('\n');
  const g = await startToolsGuest(command, { vsock: { guestCid: 3, udsPath: uds } });
  try {
    await g.waitFor(/^LISTENING$/m);

    // Host → guest, 10 MB through one connection.
    const big = randomBytes(MB10);
    const ctx = (): string => g.output();
    const { socket: s1, hostPort } = await within('CONNECT 5001', 30_000, connectToGuestWhenListening(uds, 5001), ctx);
    assert.ok(hostPort > 0);
    const back = await within('host → guest 10 MB echo', 150_000, echo(s1, big), ctx);
    assert.equal(back.length, big.length, 'host → guest: the echo came back short');
    assert.equal(md5(back), md5(big), 'host → guest: the echo differs');
    // The host half-closes; the guest's cat sees EOF and its side closes too.
    await within(
      'the guest closing its side after the host half-closed',
      30_000,
      new Promise<void>((resolve) => {
        s1.once('close', () => resolve());
        s1.end();
      }),
      ctx,
    );

    // 50 connections at once, 64 KiB each.
    const many = await within('50 concurrent connections', 120_000, Promise.all(
      Array.from({ length: 50 }, async () => {
        const data = randomBytes(64 * 1024);
        const { socket } = await connectToGuest(uds, 5001);
        const got = await echo(socket, data);
        socket.end();
        return md5(got) === md5(data);
      }),
    ), ctx);
    assert.equal(many.filter(Boolean).length, 50, 'every one of 50 concurrent connections echoes intact');

    // The host hanging up in the middle of a transfer: the VMM resets that connection and carries on.
    const { socket: rude } = await within('CONNECT after 50', 30_000, connectToGuest(uds, 5001), ctx);
    rude.write(randomBytes(256 * 1024));
    rude.destroy();
    const { socket: after } = await within('CONNECT after a reset', 30_000, connectToGuest(uds, 5001), ctx);
    const small = randomBytes(4096);
    assert.equal(md5(await within('echo after a reset', 30_000, echo(after, small), ctx)), md5(small), 'a connection after a reset still works');
    after.end();

    // Guest → host.
    const [, sent] = (await g.waitFor(/^DATA_MD5=([0-9a-f]{32})/m)) as RegExpMatchArray & [string, string];
    const [, echoed] = (await g.waitFor(/^ECHO_MD5=([0-9a-f]{32})/m, 240_000)) as RegExpMatchArray & [string, string];
    assert.equal(echoed, sent, 'guest → host: the echo differs');
    assert.ok(guestConnections >= 1);

    // The VMM exiting with a connection open: the host's socket is closed, not left hanging.
    const { socket: open } = await within('CONNECT for the open connection', 30_000, connectToGuest(uds, 5001), ctx);
    const closed = new Promise<void>((resolve) => open.once('close', () => resolve()));
    open.on('error', () => undefined);
    await g.waitFor(/^READY_TO_END$/m, 60_000);
    const { socket: bye } = await within('CONNECT 5009', 30_000, connectToGuestWhenListening(uds, 5009), ctx);
    bye.end();
    await g.waitFor(/^DONE$/m, 60_000);
    const exit = await g.vm.wait();
    assert.equal(exit.reason, 'poweroff', exit.message);
    const outcome = await Promise.race([closed.then(() => 'closed'), new Promise((r) => setTimeout(() => r('hanging'), 10_000))]);
    assert.equal(outcome, 'closed', 'an open connection outlived the VMM');
  } finally {
    await g.vm.stop().catch(() => undefined);
    hostListener.close();
  }
});
