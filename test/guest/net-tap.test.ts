/**
 * The tap backend: its one-line errors, and (as root with /dev/net/tun) a real tap carrying
 * frames between the test driver's guest and the host's network stack: a UDP datagram the guest
 * sends arrives on a host socket, and one a host socket sends lands in a guest receive buffer.
 *
 * The tap is created on the fly (not persistent: it disappears when closed) and given
 * 198.18.77.1/30 (RFC 2544 benchmarking space, unused on real networks) for the test's duration.
 * It sits in the guest layer, which runs inside the nested host on machines without VT-x/AMD-V,
 * so the tap is made there and not in this machine's network namespace.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createSocket, type RemoteInfo } from 'node:dgram';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { test, type TestContext } from 'node:test';
import { Tap, TapError, attachError, openError } from '../../src/devices/virtio/net-tap.js';
import {
  NET_RX_QUEUE,
  NET_TX_QUEUE,
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_GUEST_TSO4,
  VIRTIO_NET_F_HOST_TSO4,
  VIRTIO_NET_F_MAC,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_NET_F_STATUS,
  VIRTIO_NET_HDR_SIZE,
  VirtioNet,
  parseMac,
} from '../../src/devices/virtio/net.js';
import { SystemCallError, TUN_F_CSUM, TUN_F_TSO4, errno } from '../../src/kvm/libc.js';
import { EventFdPoller } from '../../src/vmm/eventfd-poller.js';
import { F_EVENT_IDX, F_INDIRECT_DESC, F_VERSION_1, TestMachine, VirtioPciDriver, waitUntil } from '../support/virtio-driver.js';

const sysError = (code: string) => new SystemCallError('ioctl', errno[code]!, 'test');

test('each tap error is one line that says what to do', () => {
  const cases: [TapError, TapError['kind'], RegExp][] = [
    [attachError('tap0', sysError('EBUSY')), 'busy', /^tap0 is in use by another process/],
    [attachError('tap0', sysError('EPERM')), 'permission', /ip tuntap add dev tap0 mode tap user \$\(id -u\)/],
    [attachError('tap0', sysError('EINVAL')), 'not-a-tap', /tap0 exists but is not a single-queue tap/],
    [openError('tap0', '/dev/net/tun', sysError('ENOENT')), 'no-tun-device', /\/dev\/net\/tun does not exist.*modprobe tun/],
    [openError('tap0', '/dev/net/tun', sysError('EACCES')), 'tun-access', /no permission to open \/dev\/net\/tun.*chmod 0666/],
    [attachError('tap0', sysError('ENOMEM')), 'failed', /cannot attach tap tap0 \(TUNSETIFF: ENOMEM\)/],
  ];
  for (const [error, kind, message] of cases) {
    assert.ok(error instanceof TapError);
    assert.equal(error.kind, kind);
    assert.match(error.message, message);
    assert.ok(!error.message.includes('\n'), 'one line');
    assert.equal(error.tapName, 'tap0');
  }
});

test('a name Linux would refuse, and a missing /dev/net/tun, are reported before any ioctl', () => {
  for (const name of ['', 'a'.repeat(16), 'a/b', 'tap 0', 'tap%d']) {
    assert.throws(() => Tap.open(name), (e: unknown) => e instanceof TapError && e.kind === 'bad-name', JSON.stringify(name));
  }
  assert.throws(
    () => Tap.open('tap0', { tunPath: '/nonexistent/net/tun' }),
    (e: unknown) => e instanceof TapError && e.kind === 'no-tun-device' && /\/nonexistent\/net\/tun does not exist \(ENOENT\)/.test(e.message),
  );
});

/** Why real taps cannot be used here, or undefined when they can. */
function tapUnavailable(): string | undefined {
  if (!existsSync('/dev/net/tun')) return '/dev/net/tun does not exist';
  if (process.getuid?.() !== 0) return 'not root: creating a tap needs CAP_NET_ADMIN';
  try {
    Tap.open(`tsvmmp${process.pid % 1_000_000}`).close();
  } catch (e) {
    return `/dev/net/tun is not usable here: ${e instanceof Error ? e.message : String(e)}`;
  }
  return undefined;
}
const unavailable = tapUnavailable();
/**
 * npm test runs this layer as root inside the nested host (or on a host with VT-x/AMD-V), with
 * tun, iproute2 and util-linux there: a missing piece is a failure to see, not a skip to count.
 */
function requireTaps(): void {
  assert.equal(unavailable, undefined, `real taps are needed here: ${unavailable}`);
}

function tapName(suffix: string): string {
  return `tsvmm${suffix}${process.pid % 100_000}`;
}

test('a tap open elsewhere is busy; an interface that is no tap is refused', (t) => {
  requireTaps();
  const name = tapName('b');
  const tap = Tap.open(name);
  t.after(() => tap.close());
  assert.equal(tap.name, name);
  assert.ok((tap.supportedOffloads & TUN_F_CSUM) !== 0, 'every tap kernel knows TUN_F_CSUM');
  assert.throws(() => Tap.open(name), (e: unknown) => e instanceof TapError && e.kind === 'busy' && e.message.startsWith(`${name} is in use by another process`));
  assert.throws(() => Tap.open('lo'), (e: unknown) => e instanceof TapError && e.kind === 'not-a-tap');
});

test('without CAP_NET_ADMIN a missing tap cannot be created, and the error says how to create it', (t) => {
  requireTaps();
  let setpriv: string;
  try {
    setpriv = execFileSync('sh', ['-c', 'command -v setpriv'], { encoding: 'utf8' }).trim();
  } catch {
    assert.fail('setpriv (util-linux) is not installed: cannot drop CAP_NET_ADMIN for a child');
  }
  const module = fileURLToPath(new URL('../../src/devices/virtio/net-tap.js', import.meta.url));
  const script = `import { Tap } from ${JSON.stringify(module)};
try { Tap.open(${JSON.stringify(tapName('p'))}); console.log('opened'); } catch (e) { console.log(e.kind + ' ' + e.message); }`;
  const out = execFileSync(setpriv, ['--inh-caps=-net_admin', '--bounding-set=-net_admin', process.execPath, '--input-type=module', '-e', script], { encoding: 'utf8' }).trim();
  assert.match(out, /^permission no permission to create or attach tap tsvmmp\d+ \(TUNSETIFF: EPERM\); create it for this user as root first: ip tuntap add dev tsvmmp\d+ mode tap user \$\(id -u\)$/);
});

// ---- a real tap between the test driver and the host's network stack

const HOST_IP = '198.18.77.1';
const GUEST_IP = '198.18.77.2';
const GUEST_MAC = '06:00:c6:12:4d:02';
const GUEST_PORT = 40000;

function ipBytes(ip: string): number[] {
  return ip.split('.').map(Number);
}

/** RFC 1071 one's-complement sum over `bytes`. */
function checksum(bytes: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < bytes.length; i += 2) sum += (bytes[i]! << 8) | (bytes[i + 1] ?? 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** virtio_net_hdr_v1 (all zero: a complete frame) + Ethernet + IPv4 + UDP (checksum 0: none, allowed for IPv4). */
function udpFrame(dstMac: Uint8Array, srcMac: Uint8Array, dstIp: string, srcIp: string, dstPort: number, srcPort: number, payload: Uint8Array): Uint8Array {
  const ipLength = 20 + 8 + payload.length;
  const f = new Uint8Array(VIRTIO_NET_HDR_SIZE + 14 + ipLength);
  const v = new DataView(f.buffer);
  let at = VIRTIO_NET_HDR_SIZE;
  f.set(dstMac, at);
  f.set(srcMac, at + 6);
  v.setUint16(at + 12, 0x0800);
  at += 14;
  const ip = at;
  f.set([0x45, 0], ip);
  v.setUint16(ip + 2, ipLength);
  v.setUint16(ip + 4, 1);
  v.setUint16(ip + 6, 0x4000); // don't fragment
  f.set([64, 17], ip + 8); // TTL, UDP
  f.set(ipBytes(srcIp), ip + 12);
  f.set(ipBytes(dstIp), ip + 16);
  v.setUint16(ip + 10, checksum(f.subarray(ip, ip + 20)));
  const udp = ip + 20;
  v.setUint16(udp, srcPort);
  v.setUint16(udp + 2, dstPort);
  v.setUint16(udp + 4, 8 + payload.length);
  f.set(payload, udp + 8);
  return f;
}

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

function indexOf(haystack: Uint8Array, needle: Uint8Array): number {
  return Buffer.from(haystack.buffer, haystack.byteOffset, haystack.length).indexOf(Buffer.from(needle));
}

test('a real tap: a guest frame reaches a host UDP socket, and a host datagram lands in a guest buffer', async (t: TestContext) => {
  requireTaps();
  try {
    execFileSync('ip', ['-V'], { stdio: 'ignore' });
  } catch {
    assert.fail('the ip tool (iproute2) is not installed: cannot configure the tap');
  }
  const name = tapName('e');
  const tap = Tap.open(name);
  const poller = new EventFdPoller();
  poller.start();
  const warnings: string[] = [];
  const device = new VirtioNet({ backend: tap, readiness: poller, mac: GUEST_MAC, onWarning: (m) => warnings.push(m) });
  const socket = createSocket('udp4');
  t.after(async () => {
    socket.close();
    device.close(); // closes the tap, which removes it with its address and routes
    await poller.close();
  });

  // Link configuration is the user's job (as with Firecracker); here the test is the user.
  const ipv6 = `/proc/sys/net/ipv6/conf/${name}/disable_ipv6`;
  if (existsSync(ipv6)) writeFileSync(ipv6, '1'); // no router solicitations or MLD reports in the guest's buffers
  ip('addr', 'add', `${HOST_IP}/30`, 'dev', name);
  ip('link', 'set', name, 'up');
  ip('neigh', 'replace', GUEST_IP, 'lladdr', GUEST_MAC, 'dev', name, 'nud', 'permanent');
  const hostMac = parseMac(readFileSync(`/sys/class/net/${name}/address`, 'utf8').trim());
  await new Promise<void>((resolve) => socket.bind({ address: HOST_IP, port: 0 }, resolve));
  const hostPort = socket.address().port;
  const received: { data: Buffer; from: RemoteInfo }[] = [];
  socket.on('message', (data, from) => received.push({ data, from }));

  const machine = new TestMachine({ regions: [[0, 4 << 20]] });
  const { slot } = machine.addVirtio(device);
  const driver = new VirtioPciDriver(machine, slot);
  const bit = (n: number) => 1n << BigInt(n);
  const features =
    bit(F_VERSION_1) | bit(F_EVENT_IDX) | bit(F_INDIRECT_DESC) | bit(VIRTIO_NET_F_MAC) | bit(VIRTIO_NET_F_STATUS) | bit(VIRTIO_NET_F_MRG_RXBUF) |
    bit(VIRTIO_NET_F_CSUM) | bit(VIRTIO_NET_F_HOST_TSO4) | bit(VIRTIO_NET_F_GUEST_CSUM) | bit(VIRTIO_NET_F_GUEST_TSO4);
  const queues = driver.bringUp(features);
  const rx = queues[NET_RX_QUEUE]!;
  const tx = queues[NET_TX_QUEUE]!;
  assert.equal(driver.negotiated, features, 'the tap supports checksum and TSO offloads');
  assert.equal(tap.offloads, TUN_F_CSUM | TUN_F_TSO4, 'TUNSETOFFLOAD follows the guest features');

  // Guest to host.
  const hello = Buffer.from('hello from the guest');
  const out = udpFrame(hostMac, parseMac(GUEST_MAC), HOST_IP, GUEST_IP, hostPort, GUEST_PORT, hello);
  const outAddr = machine.allocator.alloc(out.length);
  machine.memory.write(outAddr, out);
  const head = tx.addChain([
    { addr: outAddr, len: VIRTIO_NET_HDR_SIZE, writable: false },
    { addr: outAddr + VIRTIO_NET_HDR_SIZE, len: out.length - VIRTIO_NET_HDR_SIZE, writable: false },
  ]);
  tx.publish(head);
  tx.kick();
  // A kick sends at once; the device's second pass (setImmediate) re-arms notifications: let it run too.
  await new Promise<void>((resolve) => setImmediate(resolve));
  assert.deepEqual(tx.takeUsed(), [{ id: head, len: 0 }]);
  assert.ok(await waitUntil(() => received.length > 0, 3000), `the host socket got nothing (${warnings.join('; ')})`);
  assert.deepEqual(received[0]!.data, hello);
  assert.equal(received[0]!.from.address, GUEST_IP);
  assert.equal(received[0]!.from.port, GUEST_PORT);

  // Host to guest.
  const buffers = new Map<number, number>();
  for (let i = 0; i < 64; i++) {
    const addr = machine.allocator.alloc(2048);
    const h = rx.addChain([{ addr, len: 2048, writable: true }]);
    rx.publish(h);
    buffers.set(h, addr);
  }
  rx.kick();
  const reply = Buffer.from('hello from the host');
  socket.send(reply, GUEST_PORT, GUEST_IP);
  let found: Uint8Array | undefined;
  let numBuffers = 0;
  const done = await waitUntil(() => {
    for (const u of rx.takeUsed()) {
      const bytes = machine.memory.read(buffers.get(u.id)!, u.len);
      if (indexOf(bytes, reply) >= 0) {
        found = bytes;
        numBuffers = bytes[10]! | (bytes[11]! << 8);
      }
    }
    return found !== undefined;
  }, 3000);
  assert.ok(done, `no frame with the datagram reached the guest (${device.metrics.rxFrames} frames, warnings: ${warnings.join('; ')})`);
  assert.equal(numBuffers, 1);
  const frame = found!;
  const ipStart = VIRTIO_NET_HDR_SIZE + 14;
  assert.deepEqual(frame.subarray(VIRTIO_NET_HDR_SIZE, VIRTIO_NET_HDR_SIZE + 6), parseMac(GUEST_MAC), 'to the guest MAC');
  assert.deepEqual(Array.from(frame.subarray(ipStart + 16, ipStart + 20)), ipBytes(GUEST_IP));
  assert.equal((frame[ipStart + 22]! << 8) | frame[ipStart + 23]!, GUEST_PORT);
  assert.ok(machine.guardsIntact());
});
