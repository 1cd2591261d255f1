/**
 * virtio-net through the virtio-pci test driver, with a real backend that keeps frame boundaries:
 * one end of an AF_UNIX SOCK_SEQPACKET socket pair is the device's "tap", the test holds the
 * other. Readiness comes from the VMM's EventFdPoller (real epoll) or, where a test drives it by
 * hand (the fuzzer), from a recorded watch the test fires itself.
 *
 * FUZZ_SEED=<n> replays the fuzz run; FUZZ_MS=<ms> changes its length (default 2000 ms).
 */
import assert from 'node:assert/strict';
import { closeSync, readSync, writeSync } from 'node:fs';
import { test, type TestContext } from 'node:test';
import {
  MAX_FRAME_BYTES,
  NET_CONFIG_MAC,
  NET_CONFIG_MAX_VIRTQUEUE_PAIRS,
  NET_CONFIG_MTU,
  NET_CONFIG_STATUS,
  NET_RX_QUEUE,
  NET_TX_QUEUE,
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_CTRL_VQ,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_GUEST_ECN,
  VIRTIO_NET_F_GUEST_TSO4,
  VIRTIO_NET_F_GUEST_TSO6,
  VIRTIO_NET_F_GUEST_UFO,
  VIRTIO_NET_F_HOST_ECN,
  VIRTIO_NET_F_HOST_TSO4,
  VIRTIO_NET_F_HOST_TSO6,
  VIRTIO_NET_F_HOST_UFO,
  VIRTIO_NET_F_MAC,
  VIRTIO_NET_F_MQ,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_NET_F_MTU,
  VIRTIO_NET_F_STATUS,
  VIRTIO_NET_HDR_F_DATA_VALID,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_SIZE,
  VIRTIO_NET_S_LINK_UP,
  VirtioNet,
  netFeatures,
  parseMac,
  tapOffloadsFor,
  type NetBackend,
  type NetFdWatch,
  type NetReadiness,
} from '../../src/devices/virtio/net.js';
import { EventFd } from '../../src/kvm/eventfd.js';
import {
  AF_UNIX,
  EPOLLERR,
  EPOLLHUP,
  EPOLLIN,
  EPOLLOUT,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  SOCK_SEQPACKET,
  TUN_F_CSUM,
  TUN_F_TSO4,
  TUN_F_TSO6,
  TUN_F_TSO_ECN,
  TUN_F_UFO,
  socketpair,
} from '../../src/kvm/libc.js';
import { EventFdPoller } from '../../src/vmm/eventfd-poller.js';
import {
  COMMON,
  DESC_F,
  F_EVENT_IDX,
  F_INDIRECT_DESC,
  F_VERSION_1,
  STATUS,
  TestMachine,
  VirtioPciDriver,
  readDeviceConfig,
  raceDevice,
  readDeviceConfigBytes,
  turnUntil,
  waitForUsed,
  waitUntil,
  type DriverQueue,
} from '../support/virtio-driver.js';
import { FUZZ_DURATION_MS, FUZZ_SEED, prng } from '../support/fuzz.js';
import { featureBit } from '../../src/devices/virtio/device.js';

const bit = featureBit;
const MODERN = bit(F_VERSION_1) | bit(F_EVENT_IDX) | bit(F_INDIRECT_DESC);
const BASIC = MODERN | bit(VIRTIO_NET_F_MAC) | bit(VIRTIO_NET_F_STATUS) | bit(VIRTIO_NET_F_MRG_RXBUF);
const ALL_TUN_OFFLOADS = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_UFO;
const MAC = '06:00:ac:10:00:02';
const RAM_BYTES = 8 << 20;

/** A SOCK_SEQPACKET pair: `fd` is the device's, `peer` the test's; each write is one frame. */
class SocketBackend implements NetBackend {
  readonly fd: number;
  readonly peer: number;
  readonly offloadCalls: number[] = [];
  private closed = false;
  private readonly scratch = Buffer.alloc(MAX_FRAME_BYTES + 4096);

  constructor(readonly supportedOffloads = 0) {
    [this.fd, this.peer] = socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC);
  }
  setOffloads(flags: number): void {
    this.offloadCalls.push(flags);
  }
  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeSync(this.fd);
    closeSync(this.peer);
  }
  /** Every frame the device wrote so far, each read whole. */
  received(): Uint8Array[] {
    const frames: Uint8Array[] = [];
    for (;;) {
      try {
        const n = readSync(this.peer, this.scratch);
        frames.push(new Uint8Array(this.scratch.subarray(0, n)));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'EAGAIN') return frames;
        throw e;
      }
    }
  }
  /** Send a frame towards the device; false on EAGAIN (or a message too large for the socket). */
  send(frame: Uint8Array): boolean {
    try {
      writeSync(this.peer, frame);
      return true;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EAGAIN' || code === 'EMSGSIZE' || code === 'ENOBUFS') return false;
      throw e;
    }
  }
}

/** Readiness the test fires by hand, delivering only what epoll would (interest, plus ERR/HUP). */
class ManualReadiness implements NetReadiness {
  events = 0;
  changes = 0;
  removed = false;
  private handler: ((events: number) => void) | undefined;
  watchFd(_fd: number, onReady: (events: number) => void, events = 0): NetFdWatch {
    this.handler = onReady;
    this.events = events;
    return {
      setEvents: (e) => {
        if (e !== this.events) this.changes++;
        this.events = e;
      },
      remove: () => {
        this.removed = true;
        this.events = 0;
      },
    };
  }
  fire(mask: number): void {
    if (this.events === 0 || this.removed) return;
    const delivered = mask & (this.events | EPOLLERR | EPOLLHUP);
    if (delivered !== 0) this.handler?.(delivered);
  }
}

interface NetOptions {
  features?: bigint;
  offloads?: number;
  mac?: string | null;
  mtu?: number;
  queueSize?: number;
  manual?: boolean;
  bringUp?: boolean;
  /**
   * Guest RAM without host addresses, as plain buffers: the device then reads and writes frames
   * through Node's readv/writev with views. By default RAM is host-mapped, as the VMM's is, and
   * frames go by address (HostIovecs).
   */
  viewsOnly?: boolean;
}

function net(t: TestContext, options: NetOptions = {}) {
  const machine = new TestMachine({ regions: [[0, RAM_BYTES]], hostMapped: options.viewsOnly !== true });
  const backend = new SocketBackend(options.offloads ?? 0);
  const manual = options.manual ? new ManualReadiness() : undefined;
  const poller = manual === undefined ? new EventFdPoller() : undefined;
  poller?.start();
  const warnings: string[] = [];
  const errors: string[] = [];
  const device = new VirtioNet({
    backend,
    readiness: manual ?? poller!,
    ...(options.mac === null ? {} : { mac: options.mac ?? MAC }),
    ...(options.mtu !== undefined ? { mtu: options.mtu } : {}),
    onWarning: (m) => warnings.push(m),
  });
  const { transport, slot } = machine.addVirtio(device, { onError: (r) => errors.push(r) });
  const driver = new VirtioPciDriver(machine, slot);
  t.after(async () => {
    device.close();
    await poller?.close();
  });
  let rx: DriverQueue | undefined;
  let tx: DriverQueue | undefined;
  if (options.bringUp ?? true) {
    const queues = driver.bringUp(options.features ?? BASIC, options.queueSize ? { queueSize: options.queueSize } : {});
    rx = queues[NET_RX_QUEUE];
    tx = queues[NET_TX_QUEUE];
  } else driver.probe();
  return { machine, backend, manual, poller, device, transport, driver, rx: rx!, tx: tx!, warnings, errors, memory: machine.memory };
}
type Net = ReturnType<typeof net>;

/** A frame with its virtio_net_hdr_v1: header bytes as given, then `length` bytes of a pattern. */
function frame(length: number, seed: number, header: { flags?: number; gsoType?: number } = {}): Uint8Array {
  const bytes = new Uint8Array(VIRTIO_NET_HDR_SIZE + length);
  bytes[0] = header.flags ?? 0;
  bytes[1] = header.gsoType ?? 0;
  for (let i = VIRTIO_NET_HDR_SIZE; i < bytes.length; i++) bytes[i] = (i * 31 + seed * 7) & 0xff;
  return bytes;
}

/** Lay `bytes` into guest memory in pieces of `split` bytes (default one piece) and queue them for transmission. */
function queueTx(n: Net, bytes: Uint8Array, options: { split?: number[]; indirect?: boolean } = {}): number {
  const pieces = options.split ?? [bytes.length];
  let at = 0;
  const buffers = pieces.map((len) => {
    const addr = n.machine.allocator.alloc(Math.max(len, 1));
    n.memory.write(addr, bytes.subarray(at, at + len));
    at += len;
    return { addr, len, writable: false };
  });
  const head = n.tx.addChain(buffers, options.indirect ? { indirect: true } : {});
  n.tx.publish(head);
  return head;
}

/** Post `count` receive buffers of `size` bytes (one descriptor each); returns head → address. */
function postRx(n: Net, count: number, size: number): Map<number, number> {
  const heads = new Map<number, number>();
  for (let i = 0; i < count; i++) {
    const addr = n.machine.allocator.alloc(size);
    const head = n.rx.addChain([{ addr, len: size, writable: true }]);
    n.rx.publish(head);
    heads.set(head, addr);
  }
  return heads;
}

/** The header as the guest should see it: num_buffers set, flags cleared unless kept. */
function expectedHeader(sent: Uint8Array, numBuffers: number, keepFlags: boolean): Uint8Array {
  const h = sent.slice(0, VIRTIO_NET_HDR_SIZE);
  if (!keepFlags) h[0] = 0;
  h[10] = numBuffers & 0xff;
  h[11] = numBuffers >> 8;
  return h;
}

/** Kick the transmit queue, then let the device's second pass run (from setImmediate: what was queued meanwhile, then notifications back on). */
async function kickTx(n: Net): Promise<void> {
  n.tx.kick();
  await new Promise<void>((resolve) => setImmediate(resolve));
}

// ---- configuration and features

test('config space: MAC, link up, one queue pair; MTU only when configured', (t) => {
  const n = net(t);
  assert.deepEqual(readDeviceConfigBytes(n.driver, NET_CONFIG_MAC, 6), parseMac(MAC));
  assert.equal(readDeviceConfig(n.driver, NET_CONFIG_STATUS, 2), VIRTIO_NET_S_LINK_UP);
  assert.equal(readDeviceConfig(n.driver, NET_CONFIG_MAX_VIRTQUEUE_PAIRS, 2), 1);
  const offered = n.driver.deviceFeatures();
  for (const f of [VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS, VIRTIO_NET_F_MRG_RXBUF]) assert.ok(offered & bit(f), `feature ${f} offered`);
  for (const f of [VIRTIO_NET_F_MTU, VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_MQ, VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_HOST_TSO4]) {
    assert.equal(offered & bit(f), 0n, `feature ${f} not offered (no MTU configured, no offloads in the backend)`);
  }
  assert.equal(n.device.queueMaxSizes.length, 2, 'receiveq1 and transmitq1, no control queue');

  const jumbo = net(t, { mtu: 9000, mac: null });
  assert.ok(jumbo.driver.deviceFeatures() & bit(VIRTIO_NET_F_MTU));
  assert.equal(jumbo.driver.deviceFeatures() & bit(VIRTIO_NET_F_MAC), 0n, 'no MAC configured: the guest picks one');
  assert.equal(readDeviceConfig(jumbo.driver, NET_CONFIG_MTU, 2), 9000);
  assert.ok(n.driver.status & STATUS.DRIVER_OK);
});

test('offloads are offered only as far as the backend supports them, with their dependencies', () => {
  const none = netFeatures(0, { mac: false, mtu: false });
  assert.equal(none, bit(VIRTIO_NET_F_MRG_RXBUF) | bit(VIRTIO_NET_F_STATUS));
  assert.equal(netFeatures(TUN_F_CSUM, { mac: false, mtu: false }), none | bit(VIRTIO_NET_F_CSUM) | bit(VIRTIO_NET_F_GUEST_CSUM));
  const all = netFeatures(ALL_TUN_OFFLOADS, { mac: true, mtu: true });
  for (const f of [
    VIRTIO_NET_F_CSUM,
    VIRTIO_NET_F_GUEST_CSUM,
    VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_GUEST_ECN,
    VIRTIO_NET_F_GUEST_UFO,
    VIRTIO_NET_F_HOST_TSO4,
    VIRTIO_NET_F_HOST_TSO6,
    VIRTIO_NET_F_HOST_ECN,
    VIRTIO_NET_F_HOST_UFO,
    VIRTIO_NET_F_MAC,
    VIRTIO_NET_F_MTU,
  ]) {
    assert.ok(all & bit(f), `feature ${f}`);
  }
  // ECN without TSO would break §5.1.3.1; TSO without the checksum offload too.
  assert.equal(netFeatures(TUN_F_CSUM | TUN_F_TSO_ECN, { mac: false, mtu: false }) & (bit(VIRTIO_NET_F_GUEST_ECN) | bit(VIRTIO_NET_F_HOST_ECN)), 0n);
  assert.equal(netFeatures(TUN_F_TSO4, { mac: false, mtu: false }) & bit(VIRTIO_NET_F_GUEST_TSO4), 0n);
  // Negotiated guest offloads become TUNSETOFFLOAD flags.
  assert.equal(tapOffloadsFor(bit(VIRTIO_NET_F_GUEST_CSUM) | bit(VIRTIO_NET_F_GUEST_TSO4) | bit(VIRTIO_NET_F_GUEST_ECN)), TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO_ECN);
  assert.equal(tapOffloadsFor(bit(VIRTIO_NET_F_GUEST_TSO4)), 0, 'TSO without GUEST_CSUM: nothing (the tap would refuse it)');
  assert.equal(tapOffloadsFor(bit(VIRTIO_NET_F_GUEST_CSUM) | bit(VIRTIO_NET_F_GUEST_ECN)), TUN_F_CSUM, 'ECN without TSO: dropped');
});

test('negotiated guest offloads go to the backend at DRIVER_OK; reset turns them off', (t) => {
  const features = BASIC | bit(VIRTIO_NET_F_CSUM) | bit(VIRTIO_NET_F_GUEST_CSUM) | bit(VIRTIO_NET_F_GUEST_TSO4) | bit(VIRTIO_NET_F_GUEST_TSO6) | bit(VIRTIO_NET_F_HOST_TSO4);
  const n = net(t, { offloads: ALL_TUN_OFFLOADS, features });
  assert.equal(n.driver.negotiated, features);
  assert.equal(n.backend.offloadCalls.at(-1), TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6);
  n.driver.reset();
  assert.equal(n.backend.offloadCalls.at(-1), 0);
  n.driver.bringUp(BASIC);
  assert.equal(n.backend.offloadCalls.at(-1), 0, 'no guest offloads negotiated');
});

test('a malformed MAC or MTU is refused when the device is made', () => {
  const readiness = new ManualReadiness();
  const backend = { fd: -1, supportedOffloads: 0, setOffloads: () => {}, close: () => {} };
  assert.throws(() => new VirtioNet({ backend, readiness, mac: '06:00:ac:10:00' }), /MAC address "06:00:ac:10:00" is not of the form/);
  assert.throws(() => new VirtioNet({ backend, readiness, mac: '06-00-ac-10-00-02' }), RangeError);
  assert.throws(() => new VirtioNet({ backend, readiness, mtu: 67 }), /MTU 67 is outside 68\.\.65535/);
  assert.throws(() => new VirtioNet({ backend, readiness, mtu: 65536 }), RangeError);
});

// ---- transmit

for (const [path, viewsOnly] of [['by address', false], ['views (RAM without host addresses)', true]] as const) {
  test(`${path}: TX: frames reach the backend byte for byte with their header, whatever the descriptor layout`, async (t) => {
    const n = net(t, { viewsOnly });
    const frames = [frame(60, 1), frame(1500, 2), frame(3000, 3), frame(MAX_FRAME_BYTES - VIRTIO_NET_HDR_SIZE, 4)];
    const heads = [
      queueTx(n, frames[0]!),
      queueTx(n, frames[1]!, { split: [12, 700, 800] }),
      queueTx(n, frames[2]!, { split: [5, 1000, 2007], indirect: true }),
      queueTx(n, frames[3]!, { split: [VIRTIO_NET_HDR_SIZE, MAX_FRAME_BYTES - VIRTIO_NET_HDR_SIZE] }),
    ];
    await kickTx(n);
    assert.deepEqual(n.backend.received(), frames);
    assert.deepEqual(n.tx.takeUsed(), heads.map((id) => ({ id, len: 0 })));
    assert.equal(n.device.metrics.txFrames, 4);
    assert.equal(n.device.metrics.txBytes, 60 + 1500 + 3000 + MAX_FRAME_BYTES - VIRTIO_NET_HDR_SIZE);
    assert.ok(n.machine.msi.messages.length >= 1, 'used buffer notification');
    assert.ok(n.machine.guardsIntact());
  });
}

/** `read()` taken at each MSI message the device sends from now on: what the driver had been given by then. */
function atEachInterrupt(n: ReturnType<typeof net>, read: () => number): number[] {
  const seen: number[] = [];
  const messages = n.machine.msi.messages;
  const record = messages.push.bind(messages);
  messages.push = (...m) => {
    seen.push(read());
    return record(...m);
  };
  return seen;
}

test('TX: the driver hears of each sent frame at once, not after the whole batch (EVENT_IDX respected)', async (t) => {
  const n = net(t);
  const frames = [frame(1000, 1), frame(1000, 2), frame(1000, 3), frame(1000, 4)];
  // used_event 0: the driver wants an interrupt once used->idx passes 0, i.e. after the first frame (§2.7.7.2).
  n.tx.setUsedEvent(0);
  const heads = frames.map((f) => queueTx(n, f));
  const sentAtInterrupt = atEachInterrupt(n, () => n.device.metrics.txFrames);
  await kickTx(n);
  assert.deepEqual(n.backend.received(), frames);
  assert.deepEqual(n.tx.takeUsed(), heads.map((id) => ({ id, len: 0 })));
  // One interrupt, the one asked for, raised while three frames were still to go (a Linux guest
  // frees the first socket buffer and queues more meanwhile); none for frames 2–4.
  assert.deepEqual(sentAtInterrupt, [1]);
});

test('TX: malformed chains come back unused, the backend sees nothing of them, the device goes on', async (t) => {
  const n = net(t);
  const good = frame(100, 9);
  const mixed = n.tx.addChain([
    { addr: n.machine.allocator.alloc(72), len: 72, writable: false },
    { addr: n.machine.allocator.alloc(16), len: 16, writable: true },
  ]);
  n.tx.publish(mixed);
  const heads = [
    mixed,
    queueTx(n, new Uint8Array(8)), // shorter than the header
    queueTx(n, frame(MAX_FRAME_BYTES - VIRTIO_NET_HDR_SIZE + 1, 5), { split: [40000, MAX_FRAME_BYTES + 1 - 40000] }), // too long
    queueTx(n, frame(100, 6, { gsoType: VIRTIO_NET_HDR_GSO_TCPV4 })), // TSO without HOST_TSO4
    queueTx(n, frame(100, 7, { flags: VIRTIO_NET_HDR_F_NEEDS_CSUM })), // partial checksum without VIRTIO_NET_F_CSUM
    queueTx(n, good),
  ];
  await kickTx(n);
  assert.deepEqual(n.backend.received(), [good]);
  assert.deepEqual(n.tx.takeUsed(), heads.map((id) => ({ id, len: 0 })));
  assert.equal(n.device.metrics.txDropped, 5);
  assert.equal(n.driver.status & STATUS.NEEDS_RESET, 0);
  assert.ok(n.machine.guardsIntact());
});

for (const [path, viewsOnly] of [['by address', false], ['views (RAM without host addresses)', true]] as const) {
  test(`${path}: TX: EAGAIN keeps the frame and waits for EPOLLOUT; everything arrives in order`, async (t) => {
    const n = net(t, { viewsOnly });
    const frames = Array.from({ length: 12 }, (_, i) => frame(60000, i));
    const heads = frames.map((f) => queueTx(n, f));
    await kickTx(n);
    const early = n.tx.takeUsed();
    assert.ok(n.device.metrics.txBlocked >= 1, 'the socket buffer filled up');
    assert.ok(early.length < frames.length, `only ${early.length} sent before EAGAIN`);
    const got: Uint8Array[] = [];
    const used = [...early];
    const done = await waitUntil(() => {
      got.push(...n.backend.received()); // reading makes the socket writable again: EPOLLOUT
      used.push(...n.tx.takeUsed());
      return got.length === frames.length && used.length === frames.length;
    }, 5000);
    assert.ok(done, `${got.length} frames arrived, ${used.length} used`);
    assert.deepEqual(got, frames);
    assert.deepEqual(used.map((u) => u.id), heads);
    assert.equal(n.device.metrics.txDropped, 0);
  });

  // ---- receive
}

for (const [path, viewsOnly] of [['by address', false], ['views (RAM without host addresses)', true]] as const) {
  test(`${path}: RX: frames land in guest buffers; num_buffers is 1, flags are cleared without GUEST_CSUM`, async (t) => {
    const n = net(t, { viewsOnly });
    const buffers = postRx(n, 8, 2048);
    n.rx.kick();
    const frames = [frame(100, 1, { flags: VIRTIO_NET_HDR_F_DATA_VALID }), frame(1514, 2), frame(60, 3), frame(1000, 4)];
    for (const f of frames) assert.ok(n.backend.send(f));
    const used = await waitForUsed(n.rx, frames.length);
    assert.equal(used.length, frames.length);
    used.forEach((u, i) => {
      const f = frames[i]!;
      assert.equal(u.len, f.length);
      const got = n.memory.read(buffers.get(u.id)!, f.length);
      assert.deepEqual(got.subarray(0, VIRTIO_NET_HDR_SIZE), expectedHeader(f, 1, false));
      assert.deepEqual(got.subarray(VIRTIO_NET_HDR_SIZE), f.subarray(VIRTIO_NET_HDR_SIZE));
    });
    assert.deepEqual(used.map((u) => u.id), [...buffers.keys()].slice(0, frames.length), 'buffers used in order');
    assert.equal(n.device.metrics.rxFrames, frames.length);
    assert.ok(n.machine.msi.messages.length >= 1);
    assert.ok(n.machine.guardsIntact());
  });
}

for (const [path, viewsOnly] of [['by address', false], ['views (RAM without host addresses)', true]] as const) {
  test(`${path}: RX mergeable buffers: a frame spans several chains and num_buffers counts them`, async (t) => {
    const n = net(t, { viewsOnly });
    const buffers = postRx(n, 16, 256);
    const heads = [...buffers.keys()];
    n.rx.kick();
    const big = frame(1000 - VIRTIO_NET_HDR_SIZE, 5);
    assert.ok(n.backend.send(big));
    const used = await waitForUsed(n.rx, 4);
    assert.deepEqual(used, [
      { id: heads[0]!, len: 256 },
      { id: heads[1]!, len: 256 },
      { id: heads[2]!, len: 256 },
      { id: heads[3]!, len: 1000 - 3 * 256 },
    ]);
    const got = new Uint8Array(1000);
    used.forEach((u, i) => got.set(n.memory.read(buffers.get(u.id)!, u.len), i * 256));
    assert.deepEqual(got.subarray(0, VIRTIO_NET_HDR_SIZE), expectedHeader(big, 4, false));
    assert.deepEqual(got.subarray(VIRTIO_NET_HDR_SIZE), big.subarray(VIRTIO_NET_HDR_SIZE));
    // The chains the device already held for the first frame serve the next one, in order.
    const small = frame(50, 6);
    assert.ok(n.backend.send(small));
    const next = await waitForUsed(n.rx, 1);
    assert.deepEqual(next, [{ id: heads[4]!, len: small.length }]);
    assert.deepEqual(n.memory.read(buffers.get(heads[4]!)! + 10, 2), Uint8Array.of(1, 0));
    assert.ok(n.machine.guardsIntact());
  });
}

test('RX: the first frame of a wake interrupts before the next read; the rest share one interrupt at the end (EVENT_IDX respected)', async (t) => {
  /** Receive three frames in one wake with used_event at `usedEvent`: rxFrames at each interrupt. */
  const wake = (usedEvent: number): number[] => {
    const n = net(t, { manual: true });
    postRx(n, 8, 2048);
    n.rx.kick();
    n.rx.setUsedEvent(usedEvent);
    for (const f of [frame(100, 1), frame(200, 2), frame(300, 3)]) assert.ok(n.backend.send(f));
    const deliveredAtInterrupt = atEachInterrupt(n, () => n.device.metrics.rxFrames);
    n.manual!.fire(EPOLLIN);
    assert.equal(n.rx.takeUsed().length, 3);
    return deliveredAtInterrupt;
  };
  // used_event 0: the driver wants an interrupt once used->idx passes 0 (§2.7.7.2): raised as soon
  // as the first frame is in the ring, not after the read that found the backend empty.
  assert.deepEqual(wake(0), [1]);
  // used_event 1: not for the first frame; frames 2 and 3 share the one at the wake's end.
  assert.deepEqual(wake(1), [3]);
});

test('RX: a frame after the read that found the backend empty lands in the buffer held for it, a transmit in between notwithstanding', async (t) => {
  // The device keeps the iovecs of the chains it holds from one wake to the next (a lone frame
  // is read at once); the transmit between the wakes names its own frame by address meanwhile.
  const n = net(t, { manual: true });
  const buffers = postRx(n, 2, 2048); // no guest TSO: one 2 KiB chain holds any frame
  n.rx.kick();
  const first = frame(100, 1);
  assert.ok(n.backend.send(first));
  n.manual!.fire(EPOLLIN); // reads `first`, takes the second buffer, then finds the backend empty
  const [u1] = n.rx.takeUsed();
  assert.equal(u1?.len, first.length);
  const out = frame(300, 9);
  const outHead = queueTx(n, out);
  await kickTx(n);
  assert.deepEqual(n.backend.received(), [out]);
  assert.deepEqual(n.tx.takeUsed(), [{ id: outHead, len: 0 }]);
  const second = frame(200, 2);
  assert.ok(n.backend.send(second));
  n.manual!.fire(EPOLLIN);
  const [u2] = n.rx.takeUsed();
  assert.notEqual(u2?.id, u1!.id);
  assert.equal(u2?.len, second.length);
  assert.deepEqual(n.memory.read(buffers.get(u2!.id)!, second.length), Uint8Array.from([...expectedHeader(second, 1, false), ...second.subarray(VIRTIO_NET_HDR_SIZE)]));
  // After a reset and new buffers, nothing of the old activation's chains is used.
  n.driver.reset();
  const [rx, tx] = n.driver.bringUp(BASIC);
  n.rx = rx!;
  n.tx = tx!;
  const fresh = postRx(n, 1, 2048);
  n.rx.kick();
  const third = frame(150, 3);
  assert.ok(n.backend.send(third));
  n.manual!.fire(EPOLLIN);
  const [u3] = n.rx.takeUsed();
  assert.equal(u3?.len, third.length);
  assert.deepEqual(n.memory.read(fresh.get(u3!.id)! + VIRTIO_NET_HDR_SIZE, 150), third.subarray(VIRTIO_NET_HDR_SIZE));
});

test('RX mergeable with guest TSO: a ring too small for a 64 KiB frame is used rather than waited on for ever', async (t) => {
  const features = BASIC | bit(VIRTIO_NET_F_GUEST_CSUM) | bit(VIRTIO_NET_F_GUEST_TSO4);
  const n = net(t, { offloads: ALL_TUN_OFFLOADS, features, queueSize: 16 });
  // 16 × 1024 bytes: less than the 65562 a TSO frame may need, but every buffer the driver can give.
  const buffers = postRx(n, 16, 1024);
  n.rx.kick();
  const f = frame(3000, 4);
  assert.ok(n.backend.send(f));
  const used = await waitForUsed(n.rx, 3);
  assert.deepEqual(used.map((u) => u.len), [1024, 1024, f.length - 2048]);
  assert.deepEqual(n.memory.read(buffers.get(used[0]!.id)! + 10, 2), Uint8Array.of(3, 0));
});

test('RX without MRG_RXBUF: one chain per frame, header and data in separate descriptors', async (t) => {
  const n = net(t, { features: BASIC & ~bit(VIRTIO_NET_F_MRG_RXBUF) });
  const chains: { head: number; header: number; data: number }[] = [];
  for (let i = 0; i < 4; i++) {
    const header = n.machine.allocator.alloc(VIRTIO_NET_HDR_SIZE);
    const data = n.machine.allocator.alloc(1518);
    const head = n.rx.addChain([
      { addr: header, len: VIRTIO_NET_HDR_SIZE, writable: true },
      { addr: data, len: 1518, writable: true },
    ]);
    n.rx.publish(head);
    chains.push({ head, header, data });
  }
  n.rx.kick();
  const frames = [frame(200, 1), frame(1518, 2)];
  for (const f of frames) assert.ok(n.backend.send(f));
  const used = await waitForUsed(n.rx, 2);
  assert.deepEqual(used, frames.map((f, i) => ({ id: chains[i]!.head, len: f.length })));
  frames.forEach((f, i) => {
    assert.deepEqual(n.memory.read(chains[i]!.header, VIRTIO_NET_HDR_SIZE), expectedHeader(f, 1, false));
    assert.deepEqual(n.memory.read(chains[i]!.data, f.length - VIRTIO_NET_HDR_SIZE), f.subarray(VIRTIO_NET_HDR_SIZE));
  });
});

test('RX with GUEST_CSUM: the header flags pass through (DATA_VALID, NEEDS_CSUM)', async (t) => {
  const n = net(t, { offloads: TUN_F_CSUM, features: BASIC | bit(VIRTIO_NET_F_GUEST_CSUM) });
  assert.equal(n.backend.offloadCalls.at(-1), TUN_F_CSUM);
  const buffers = postRx(n, 4, 2048);
  n.rx.kick();
  const f = frame(300, 3, { flags: VIRTIO_NET_HDR_F_DATA_VALID });
  f.set([34, 0, 16, 0], 6); // csum_start 34, csum_offset 16: passed through untouched
  assert.ok(n.backend.send(f));
  const [u] = await waitForUsed(n.rx, 1);
  assert.ok(u);
  assert.deepEqual(n.memory.read(buffers.get(u.id)!, VIRTIO_NET_HDR_SIZE), expectedHeader(f, 1, true));
});

for (const [path, viewsOnly] of [['by address', false], ['views (RAM without host addresses)', true]] as const) {
  test(`${path}: RX back-pressure: without buffers frames stay queued, nothing spins, and they arrive once the guest adds buffers`, async (t) => {
    const n = net(t, { viewsOnly });
    const frames = [frame(100, 1), frame(200, 2), frame(300, 3)];
    for (const f of frames) assert.ok(n.backend.send(f));
    assert.ok(await waitUntil(() => n.device.metrics.rxStalls >= 1), 'the device saw the frames and no buffers');
    assert.equal(n.rx.availEvent(), 0, 'a kick is wanted for the first buffer');
    const wakeups = n.poller!.wakeups;
    await new Promise((resolve) => setTimeout(resolve, 150));
    assert.ok(n.poller!.wakeups - wakeups <= 1, `the poller woke ${n.poller!.wakeups - wakeups} times while the device had no buffers`);
    assert.equal(n.rx.takeUsed().length, 0);
    assert.equal(n.device.metrics.rxDropped, 0);
    // Transmit still works meanwhile.
    const out = frame(64, 8);
    queueTx(n, out);
    await kickTx(n);
    assert.deepEqual(n.backend.received(), [out]);

    const buffers = postRx(n, 8, 2048);
    n.rx.kick();
    const used = await waitForUsed(n.rx, frames.length);
    assert.deepEqual(used.map((u) => u.len), frames.map((f) => f.length));
    used.forEach((u, i) => assert.deepEqual(n.memory.read(buffers.get(u.id)! + VIRTIO_NET_HDR_SIZE, frames[i]!.length - VIRTIO_NET_HDR_SIZE), frames[i]!.subarray(VIRTIO_NET_HDR_SIZE)));
    // Out of buffers again after 8 frames (one chain each: 2048 bytes hold the 1530 a frame may need).
    for (let i = 0; i < 7; i++) assert.ok(n.backend.send(frame(100, 10 + i)));
    assert.ok(await waitUntil(() => n.device.metrics.rxStalls >= 2));
    assert.equal(n.device.metrics.rxFrames, 8);
    assert.equal(n.rx.availEvent(), 8, 'EVENT_IDX: the device asks for a kick at the very next buffer (§2.7.10)');
    postRx(n, 2, 2048);
    n.rx.kick();
    assert.equal((await waitForUsed(n.rx, 7)).length, 7);
  });
}

test('RX: a receive chain too short for the header comes back unused; a device-readable one needs a reset', async (t) => {
  const n = net(t);
  const tiny = n.machine.allocator.alloc(8);
  const tinyHead = n.rx.addChain([{ addr: tiny, len: 8, writable: true }]);
  n.rx.publish(tinyHead);
  const buffers = postRx(n, 2, 2048);
  n.rx.kick();
  const f = frame(100, 1);
  assert.ok(n.backend.send(f));
  const used = await waitForUsed(n.rx, 2);
  assert.deepEqual(used, [
    { id: tinyHead, len: 0 },
    { id: [...buffers.keys()][0]!, len: f.length },
  ]);
  assert.equal(n.device.metrics.rxBadBuffers, 1);

  const m = net(t);
  const bad = m.rx.addChain([{ addr: m.machine.allocator.alloc(2048), len: 2048, writable: false }]);
  m.rx.publish(bad);
  m.rx.kick();
  assert.ok(m.backend.send(frame(100, 2)));
  assert.ok(await waitUntil(() => (m.driver.status & STATUS.NEEDS_RESET) !== 0));
  assert.match(m.errors[0] ?? '', /device-readable/);
  assert.ok(m.machine.guardsIntact());
});

// ---- reset

test('reset: the device lets go of the backend until the next DRIVER_OK, then serves again', async (t) => {
  const n = net(t);
  postRx(n, 4, 2048);
  n.rx.kick();
  assert.ok(n.backend.send(frame(100, 1)));
  assert.equal((await waitForUsed(n.rx, 1)).length, 1);
  n.driver.reset();
  assert.ok(n.backend.send(frame(200, 2)));
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(n.device.metrics.rxFrames, 1, 'nothing read while reset');
  const [rx, tx] = n.driver.bringUp(BASIC);
  n.rx = rx!;
  n.tx = tx!;
  const buffers = postRx(n, 4, 2048);
  n.rx.kick();
  const [u] = await waitForUsed(n.rx, 1);
  assert.equal(u?.len, VIRTIO_NET_HDR_SIZE + 200, 'the frame queued during the reset arrives after it');
  assert.ok(buffers.has(u.id));
  const out = frame(70, 3);
  queueTx(n, out);
  await kickTx(n);
  assert.deepEqual(n.backend.received(), [out]);
  assert.equal(n.driver.status & STATUS.NEEDS_RESET, 0);
});

test('the backend hanging up stops the device watching it (no spin) until a reset', async (t) => {
  const n = net(t, { manual: true });
  const readiness = n.manual!;
  assert.equal(readiness.events, EPOLLIN);
  readiness.fire(EPOLLIN | EPOLLHUP);
  assert.equal(readiness.events, 0);
  assert.match(n.warnings[0] ?? '', /hung up/);
  n.driver.reset();
  n.driver.bringUp(BASIC);
  assert.equal(readiness.events, EPOLLIN);
});

// ---- the poller's fd watches

for (const mode of ['main-loop', 'threadpool'] as const) test(`EventFdPoller.watchFd (${mode}): level-triggered readiness that can be switched off and on, next to eventfds; a hang-up is EPOLLHUP`, async (t) => {
  const poller = new EventFdPoller(undefined, mode);
  const [a, peer] = socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC);
  let b = peer;
  const doorbell = new EventFd();
  t.after(async () => {
    await poller.close();
    closeSync(a);
    if (b >= 0) closeSync(b);
    doorbell.close();
  });
  const seen: number[] = [];
  const scratch = Buffer.alloc(64);
  const watch = poller.watchFd(a, (events) => {
    seen.push(events);
    if (events & EPOLLIN) {
      for (;;) {
        try {
          readSync(a, scratch);
        } catch {
          break;
        }
      }
    }
    if (events & EPOLLOUT) watch.setEvents(watch.events & ~EPOLLOUT);
  }, EPOLLIN);
  let rings = 0;
  poller.add(doorbell, () => rings++);
  assert.throws(() => poller.watchFd(a, () => {}), /already watched/);
  poller.start();

  writeSync(b, Buffer.from('one'));
  assert.ok(await waitUntil(() => seen.length === 1));
  assert.equal(seen[0], EPOLLIN);

  watch.setEvents(0);
  writeSync(b, Buffer.from('two'));
  doorbell.signal();
  assert.ok(await waitUntil(() => rings === 1), 'eventfds still work');
  await new Promise((resolve) => setTimeout(resolve, 30));
  assert.equal(seen.length, 1, 'not watched: the pending frame does not wake anyone');

  watch.setEvents(EPOLLIN | EPOLLOUT);
  assert.ok(await waitUntil(() => seen.length >= 2));
  assert.equal(seen[1], EPOLLIN | EPOLLOUT);
  await new Promise((resolve) => setTimeout(resolve, 30));
  const settled = seen.length;
  assert.equal(watch.events, EPOLLIN, 'the handler dropped EPOLLOUT');
  assert.ok(settled <= 3, `woken ${settled} times`);

  watch.remove();
  writeSync(b, Buffer.from('three'));
  await new Promise((resolve) => setTimeout(resolve, 30));
  assert.equal(seen.length, settled, 'removed');
  const again: number[] = [];
  const rewatch = poller.watchFd(a, (events) => {
    again.push(events);
    rewatch.setEvents(0);
  });
  assert.equal(rewatch.events, 0, 'the fd can be watched again once removed; interest 0 until set');
  rewatch.setEvents(EPOLLIN);
  assert.ok(await waitUntil(() => again.length === 1), 'the frame left from before wakes the new watch');
  assert.equal(again[0], EPOLLIN);

  // The peer goes away: either way of waiting reports the hang-up as epoll would.
  closeSync(b);
  b = -1;
  rewatch.setEvents(EPOLLIN);
  assert.ok(await waitUntil(() => again.length === 2));
  assert.ok((again[1]! & EPOLLHUP) !== 0, `events 0x${again[1]!.toString(16)} include EPOLLHUP`);
});

// ---- fuzz

const DURATION_MS = FUZZ_DURATION_MS;
const SEED = FUZZ_SEED;

test(`fuzz: malformed chains, random frames, kicks, readiness and resets never throw or write outside RAM (seed ${SEED})`, async (t) => {
  const random = prng(SEED);
  const int = (k: number) => Math.floor(random() * k);
  const chance = (p: number) => random() < p;
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;

  const HALF = 512 * 1024;
  const regions: [number, number][] = [
    [0, HALF],
    [HALF, HALF],
    [4 * HALF, 128 * 1024],
  ];
  // Host-mapped like the VMM's RAM: frames go to readv/writev by address, and the guards check those calls too.
  const machine = new TestMachine({ regions, hostMapped: true });
  const backend = new SocketBackend(ALL_TUN_OFFLOADS);
  const readiness = new ManualReadiness();
  const device = new VirtioNet({ backend, readiness, mac: MAC, mtu: 1500 });
  const { transport, slot } = machine.addVirtio(device, { onError: () => {} });
  const driver = new VirtioPciDriver(machine, slot);
  driver.probe();
  t.after(() => device.close());
  const memory = machine.memory;
  /** Buffers live in the first two regions (contiguous RAM over two host buffers), rings in the third. */
  const ramAddress = () => int(2 * HALF);
  const RING_AREA = 4 * HALF;
  const wildAddress = () => (chance(0.5) ? int(2 ** 32) * 2 ** 21 : pick(regions)[0] + pick(regions)[1] - int(64));
  const aligned = (address: number, align: number) => address - (address % align);
  const offered = driver.deviceFeatures();
  const sendBuffer = new Uint8Array(MAX_FRAME_BYTES + 100);

  let iterations = 0;
  let kicks = 0;
  let needsReset = 0;
  const deadline = Date.now() + DURATION_MS;
  try {
    while (Date.now() < deadline) {
      iterations++;
      const features = chance(0.9) ? MODERN | (offered & BigInt(int(2 ** 24))) | (chance(0.7) ? bit(VIRTIO_NET_F_MRG_RXBUF) : 0n) : BigInt(int(2 ** 32)) << BigInt(int(33));
      driver.negotiate(features, { force: chance(0.2) });
      if (chance(0.8)) driver.enableMsix();
      const layouts: { desc: number; avail: number; used: number; size: number; notify: number }[] = [];
      for (const q of [NET_RX_QUEUE, NET_TX_QUEUE]) {
        const size = chance(0.9) ? 2 ** int(9) : pick([0, 3, 300, 512]);
        // Mostly where a driver puts rings: apart from each other and from buffers; sometimes anywhere at all.
        const wild = chance(0.1);
        const base = RING_AREA + q * 64 * 1024;
        const layout = {
          desc: wild ? (chance(0.5) ? wildAddress() : aligned(ramAddress(), 16)) : base,
          avail: wild ? (chance(0.5) ? wildAddress() : aligned(ramAddress(), 2)) : base + 16 * 512,
          used: wild ? (chance(0.5) ? wildAddress() : aligned(ramAddress(), 4)) : base + 16 * 512 + 2048,
          size,
          notify: 0,
        };
        if (!wild && memory.contains(base, 64 * 1024)) memory.fill(base, 64 * 1024, 0); // a fresh driver's zeroed rings
        driver.write(COMMON.QUEUE_SELECT, 2, q);
        driver.write(COMMON.QUEUE_SIZE, 2, size);
        driver.write64(COMMON.QUEUE_DESC, layout.desc);
        driver.write64(COMMON.QUEUE_DRIVER, layout.avail);
        driver.write64(COMMON.QUEUE_DEVICE, layout.used);
        driver.write(COMMON.QUEUE_MSIX_VECTOR, 2, int(3));
        layout.notify = driver.barAddress + driver.notify.offset + driver.read(COMMON.QUEUE_NOTIFY_OFF, 2) * driver.notifyMultiplier;
        if (chance(0.97)) driver.write(COMMON.QUEUE_ENABLE, 2, 1);
        layouts.push(layout);
      }
      driver.driverOk();
      // Half the bring-ups are sane (rare mistakes, so traffic flows), half wild; some never drain the socket (EAGAIN).
      const error = chance(0.5) ? 0.003 : 0.2;
      const drain = chance(0.3) ? 0.05 : 0.8;

      for (let round = 0; round < 6; round++) {
        for (const [q, layout] of layouts.entries()) {
          const n = Math.max(1, Math.min(layout.size & 0xffff, 256));
          if (memory.contains(layout.desc, 16 * n)) {
            for (let i = 0; i < n; i++) {
              if (round > 0 && !chance(0.3)) continue; // all of them at first, then some
              // Receive chains should be writable and transmit chains readable; sometimes not.
              const writable = (q === NET_RX_QUEUE) !== chance(error / 4);
              const len = chance(error) ? pick([0, 1, 11, 12, int(2 ** 32), MAX_FRAME_BYTES + 1]) : 12 + int(q === NET_RX_QUEUE ? 4096 : chance(0.1) ? 60000 : 2048);
              const addr = chance(error) ? wildAddress() : ramAddress();
              const flags = (writable ? DESC_F.WRITE : 0) | (chance(0.1 + error) ? DESC_F.NEXT : 0) | (chance(error / 3) ? DESC_F.INDIRECT : 0);
              memory.writeU64(layout.desc + 16 * i, BigInt(addr));
              memory.writeU32(layout.desc + 16 * i + 8, len % 2 ** 32);
              memory.writeU16(layout.desc + 16 * i + 12, flags);
              memory.writeU16(layout.desc + 16 * i + 14, chance(1 - error) ? (i + 1) % n : int(0x10000));
              // Transmit headers: sometimes offload requests, sometimes garbage.
              if (q === NET_TX_QUEUE && memory.contains(addr, 2) && chance(0.3)) {
                memory.writeU8(addr, pick([0, VIRTIO_NET_HDR_F_NEEDS_CSUM, int(256)]));
                memory.writeU8(addr + 1, pick([0, 1, 3, 4, 0x81, int(256)]));
              }
            }
          }
          if (memory.contains(layout.avail, 6 + 2 * n)) {
            const idx = memory.readU16(layout.avail + 2);
            const added = chance(1 - error / 5) ? int(Math.min(n, 16) + 1) : int(0x10000);
            for (let k = 0; k < Math.min(added, n); k++) memory.writeU16(layout.avail + 4 + 2 * ((idx + k) % n), chance(1 - error / 5) ? int(n) : int(0x10000));
            memory.writeU16(layout.avail + 2, (idx + added) & 0xffff);
            if (chance(0.3)) memory.writeU16(layout.avail + 4 + 2 * n, int(0x10000));
          }
          if (chance(0.8)) {
            kicks++;
            machine.mmioWrite(layout.notify, 2, q);
          }
        }
        // Frames from the host side: mostly normal, some runts and giants.
        for (let k = int(4); k > 0; k--) {
          const len = pick([() => 12 + int(1600), () => int(12), () => 12 + int(MAX_FRAME_BYTES), () => MAX_FRAME_BYTES + int(64)])();
          for (let i = 0; i < Math.min(len, 16); i++) sendBuffer[i] = int(256);
          backend.send(sendBuffer.subarray(0, len));
        }
        // Readiness as epoll would report it (only what is watched), now and then an error or hang-up.
        readiness.fire(EPOLLIN | (chance(0.3) ? EPOLLOUT : 0) | (chance(0.01) ? pick([EPOLLERR, EPOLLHUP]) : 0));
        if (chance(drain)) backend.received(); // else let the socket fill up: EAGAIN on transmit
        if (chance(0.03)) driver.write(int(0x40) & ~1, 2, int(0x10000));
        if (chance(0.03)) driver.write(COMMON.DEVICE_STATUS, 1, int(256));
        if (![0, EPOLLIN, EPOLLOUT, EPOLLIN | EPOLLOUT].includes(readiness.events)) throw new Error(`odd interest ${readiness.events}`);
        if (!machine.guardsIntact()) throw new Error('a write landed outside guest RAM');
      }
      if (driver.status & STATUS.NEEDS_RESET) needsReset++;
      // Let the device's second transmit passes (setImmediate) run, whatever state the bring-up left.
      await new Promise<void>((resolve) => setImmediate(resolve));
      if (!machine.guardsIntact()) throw new Error('a write landed outside guest RAM');
    }
  } catch (e) {
    assert.fail(`fuzz failed after ${iterations} iterations with FUZZ_SEED=${SEED}: ${e instanceof Error ? e.stack : String(e)}`);
  }
  const m = device.metrics;
  t.diagnostic(
    `seed ${SEED}: ${iterations} bring-ups, ${kicks} kicks, ${needsReset} ended in DEVICE_NEEDS_RESET; tx ${m.txFrames} sent / ${m.txDropped} dropped / ${m.txBlocked} EAGAIN; ` +
      `rx ${m.rxFrames} delivered / ${m.rxDropped} dropped / ${m.rxBadBuffers} bad buffers / ${m.rxStalls} stalls; ${transport.notifications} notifications`,
  );
  assert.ok(machine.guardsIntact(), `FUZZ_SEED=${SEED}`);
  assert.ok(iterations > 10, `FUZZ_SEED=${SEED}: only ${iterations} iterations ran`);
  assert.ok(m.txFrames > 0 && m.rxFrames > 0, `FUZZ_SEED=${SEED}: the fuzzer never reached the device (tx ${m.txFrames}, rx ${m.rxFrames})`);
});

test('a driver that keeps frames or buffers coming cannot keep the device (and the VMM event loop) busy: one ring per pass', async (t) => {
  const SIZE = 8;
  const TOTAL = 10 * SIZE;
  {
    // TX: every chain is a small frame the backend takes at once.
    const n = net(t, { queueSize: SIZE });
    const f = frame(40, 1);
    const head = queueTx(n, f);
    const race = raceDevice(n.transport.queues[NET_TX_QUEUE]!, () => n.tx.publish(head), TOTAL);
    n.tx.kick();
    assert.equal(race.taken(), SIZE, 'the kick sent one ring of frames and returned');
    await turnUntil(() => race.taken() === TOTAL + 1);
    assert.equal(race.taken(), TOTAL + 1, 'the rest went out on later turns, without kicks');
    assert.equal(n.tx.takeUsed().length, TOTAL + 1);
    assert.equal(n.backend.received().length, TOTAL + 1);
    queueTx(n, f);
    await kickTx(n);
    assert.equal(n.tx.takeUsed().length, 1, 'notifications are back on after the backlog');
    assert.deepEqual(n.errors, []);
  }
  {
    // RX: every chain is too short for the header, so the device hands it back and takes the next.
    const n = net(t, { queueSize: SIZE, manual: true });
    const head = n.rx.addChain([{ addr: n.machine.allocator.alloc(8), len: 8, writable: true }]);
    const race = raceDevice(n.transport.queues[NET_RX_QUEUE]!, () => n.rx.publish(head), TOTAL);
    n.rx.publish(head);
    assert.ok(n.backend.send(frame(100, 2)));
    n.manual!.fire(EPOLLIN);
    assert.equal(race.taken(), SIZE, 'the readiness callback took one ring of buffers and returned');
    await turnUntil(() => race.taken() === TOTAL + 1);
    assert.equal(race.taken(), TOTAL + 1, 'the rest was taken on later turns, without kicks');
    assert.equal(n.device.metrics.rxBadBuffers, TOTAL + 1);
    assert.equal(n.rx.takeUsed().length, TOTAL + 1);
    assert.equal(n.device.metrics.rxStalls, 1, 'only the real stall (no buffers left) counts, not the yields');
    // The frame is still waiting: a proper buffer and a kick deliver it.
    postRx(n, 1, 2048);
    n.rx.kick();
    assert.deepEqual(n.rx.takeUsed().map((u) => u.len), [100 + VIRTIO_NET_HDR_SIZE]);
    assert.deepEqual(n.errors, []);
  }
});

test('TX: a kick sends at once; frames queued before the next turn ride along without a kick; then kicks are needed again', async (t) => {
  const n = net(t);
  const turn = () => new Promise<void>((resolve) => setImmediate(resolve));
  queueTx(n, frame(60, 1));
  n.tx.kick();
  assert.equal(n.backend.received().length, 1, 'sent before the kick returned (a ping reply waits for nothing)');
  // The guest queues another frame right away, without a kick: the pass after the hop takes it.
  queueTx(n, frame(60, 2));
  await turn();
  assert.equal(n.backend.received().length, 1, 'the second frame went out without a kick of its own');
  assert.equal(n.tx.takeUsed().length, 2);
  // Idle again: notifications are back on, so a frame without a kick waits for one.
  queueTx(n, frame(60, 3));
  await turn();
  await turn();
  assert.equal(n.backend.received().length, 0, 'no kick, no transmit once the pass re-armed notifications');
  n.tx.kick();
  assert.equal(n.backend.received().length, 1);
  assert.deepEqual(n.errors, []);
});
