/**
 * What bulk traffic costs VirtioNet per 64 KB frame, without a guest or KVM, split into the
 * system calls themselves and the JavaScript around them. bench/net found tsvmm's device model
 * spending 0.9-1.0 ms of CPU per ms of guest CPU in iperf3 against QEMU's 0.72, and a V8 profile
 * put about a fifth of it in JavaScript between the calls; this measures that fifth directly.
 *
 * The guest side is the unit tests' driver (test/support/virtio-driver.ts) in guest memory with
 * host addresses, laid out as Linux's virtio_net lays it out in a TCP stream with GSO:
 * - receive: 4 KB mergeable buffers cut one after another from 32 KB page fragments
 *   (virtio_net.c add_recvbuf_mergeable: consecutive pieces of one page_frag), 256 of them;
 * - transmit: one indirect descriptor per frame, naming the header with the packet headers and
 *   two 32 KB page fragments of data (an skb's linear part and frags).
 * The backend is a SOCK_SEQPACKET socket pair (one frame per message, as a tap). Only the
 * device's own calls are timed (the readiness callback and processQueue); the peer's writes and
 * reads and the driver's bookkeeping are not. The baseline is the same system calls made
 * directly on the same iovec layout, so "JavaScript" is the device's time minus that.
 *
 * Device and baseline calls alternate, so the machine's load weighs on both alike; FRAMES is
 * about how many frames each direction moves (receive rounds take what the socket holds, ~4).
 *
 *   node dist/bench/profile/net-stream.js [FRAMES]        (add --cpu-prof for a profile)
 *
 * A profiling aid for the network path (docs/benchmarks.md), not a comparison with peers.
 */
import { closeSync, readSync, writeSync } from 'node:fs';
import { alternate, runIfMain, type Round } from './profile-tool.js';
import { featureBit } from '../../src/devices/virtio/device.js';
import { HostIovecs } from '../../src/devices/virtio/host-iovecs.js';
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
  NET_HDR_NUM_BUFFERS,
  VirtioNet,
  type NetReadiness,
} from '../../src/devices/virtio/net.js';
import { AF_UNIX, EAGAIN, EPOLLIN, SOCK_CLOEXEC, SOCK_NONBLOCK, SOCK_SEQPACKET, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, readvOrWritevNow, socketpair } from '../../src/kvm/libc.js';
import { F_EVENT_IDX, F_INDIRECT_DESC, F_VERSION_1, TestMachine, VirtioPciDriver, type DriverQueue } from '../../test/support/virtio-driver.js';

const FEATURES = [
  F_VERSION_1,
  F_EVENT_IDX,
  F_INDIRECT_DESC,
  VIRTIO_NET_F_MAC,
  VIRTIO_NET_F_STATUS,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_HOST_TSO4,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_GUEST_TSO4,
].reduce((mask, f) => mask | featureBit(f), 0n);
/** A TSO frame as iperf3's stream sends it: 44 segments of 1448 bytes plus 66 bytes of headers. */
const FRAME_BYTES = 66 + 44 * 1448;
const QUEUE_SIZE = 256;
/** Linux's mergeable buffer length for a bulk stream: a page less the header (EWMA at its cap), cache-aligned. */
const RX_BUFFER_BYTES = 4032;
/** SKB_FRAG_PAGE_ORDER: receive buffers and a socket's data come out of 32 KB page fragments. */
const PAGE_FRAG_BYTES = 32768;
const FRAG_BYTES = 32768;

export interface StreamResult {
  readonly frames: number;
  /** Per frame, µs: the device's calls, and the same system calls made directly. */
  readonly deviceUs: number;
  readonly syscallUs: number;
  /** Frames per readiness wake-up (receive) or per kick (transmit). */
  readonly framesPerCall: number;
}

interface Bench {
  readonly machine: TestMachine;
  readonly device: VirtioNet;
  readonly rx: DriverQueue;
  readonly tx: DriverQueue;
  readonly fd: number;
  readonly peer: number;
  ready: (events: number) => void;
  close(): void;
}

function setUp(): Bench {
  const machine = new TestMachine({ regions: [[0, 32 << 20]], hostMapped: true });
  const [fd, peer] = socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC);
  // The device's readiness callback, called by hand so that only the device's work is timed.
  const bench = { ready: (_events: number): void => {} } as Bench & { ready: (events: number) => void };
  const readiness: NetReadiness = {
    watchFd: (_fd, onReady) => {
      bench.ready = onReady;
      return { setEvents: () => {}, remove: () => {} };
    },
  };
  const device = new VirtioNet({
    backend: { fd, supportedOffloads: TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6, setOffloads: () => {}, close: () => closeSync(fd) },
    readiness,
    mac: '06:00:ac:10:00:02',
  });
  const { slot } = machine.addVirtio(device, {});
  const queues = new VirtioPciDriver(machine, slot).bringUp(FEATURES, { queueSize: QUEUE_SIZE });
  Object.assign(bench, { machine, device, rx: queues[NET_RX_QUEUE]!, tx: queues[NET_TX_QUEUE]!, fd, peer });
  bench.close = () => {
    device.close();
    closeSync(peer);
  };
  return bench;
}

/** Fresh 4 KB receive buffers cut from 32 KB fragments, as Linux posts them. */
function receiveBufferAddresses(machine: TestMachine, count: number): number[] {
  const perFrag = Math.floor(PAGE_FRAG_BYTES / RX_BUFFER_BYTES);
  const out: number[] = [];
  while (out.length < count) {
    const frag = machine.allocator.alloc(PAGE_FRAG_BYTES, 4096);
    for (let i = 0; i < perFrag && out.length < count; i++) out.push(frag + i * RX_BUFFER_BYTES);
  }
  return out;
}

/** profile-tool.ts's loop, its result named as this tool reports it. */
function alternateFrames(rounds: number, device: Round, baseline: Round): StreamResult {
  const r = alternate(rounds, device, baseline);
  return { frames: r.items, deviceUs: r.deviceUs, syscallUs: r.baselineUs, framesPerCall: r.itemsPerRound };
}

/** Receive: the peer fills the socket, the device reads it dry into guest buffers. */
export function measureReceive(frames: number): StreamResult {
  const b = setUp();
  try {
    const addresses = receiveBufferAddresses(b.machine, QUEUE_SIZE);
    const addressOfHead = new Map<number, number>();
    for (const addr of addresses) {
      const head = b.rx.addChain([{ addr, len: RX_BUFFER_BYTES, writable: true }]);
      addressOfHead.set(head, addr);
      b.rx.publish(head);
    }
    const frame = Buffer.alloc(VIRTIO_NET_HDR_SIZE + FRAME_BYTES, 0x5a).fill(0, 0, VIRTIO_NET_HDR_SIZE);
    const fill = (): number => {
      let written = 0;
      while (writeFrame(b.peer, frame)) written++;
      if (written === 0) throw new Error('the socket took no frame');
      return written;
    };
    // Once: the first frame's bytes are in guest memory and its header counts the buffers it took.
    let checked = false;
    const checkFirstFrame = (used: readonly { id: number; len: number }[]): void => {
      checked = true;
      const numBuffers = b.machine.memory.readU16(addressOfHead.get(used[0]!.id)! + NET_HDR_NUM_BUFFERS);
      const bytes = used.slice(0, numBuffers).reduce((sum, u) => sum + u.len, 0);
      const tail = b.machine.memory.read(addressOfHead.get(used[numBuffers - 1]!.id)! + used[numBuffers - 1]!.len - 64, 64);
      if (bytes !== frame.length || !tail.every((x) => x === 0x5a)) throw new Error(`the first frame did not arrive whole in guest memory (${numBuffers} buffers, ${bytes} bytes)`);
    };
    const device = (): [number, bigint] => {
      const written = fill();
      const before = b.device.metrics.rxFrames;
      const t0 = process.hrtime.bigint();
      b.ready(EPOLLIN);
      const ns = process.hrtime.bigint() - t0;
      if (b.device.metrics.rxFrames - before !== written) throw new Error(`the device delivered ${b.device.metrics.rxFrames - before} of ${written} frames`);
      // The driver takes the used buffers and posts them again (not timed).
      const used = b.rx.takeUsed();
      if (!checked) checkFirstFrame(used);
      for (const { id } of used) b.rx.publish(id);
      b.rx.setUsedEvent(0);
      return [written, ns];
    };
    // The same reads straight into buffers laid out alike (17 per frame, merged where contiguous),
    // and the one that finds the socket empty.
    const iov = new HostIovecs(64);
    iov.useMemory(b.machine.memory);
    const region = b.machine.memory.regions[0]!;
    const perFrame = Math.ceil((VIRTIO_NET_HDR_SIZE + FRAME_BYTES) / RX_BUFFER_BYTES) + 1;
    const baseline = (): [number, bigint] => {
      const written = fill();
      const t0 = process.hrtime.bigint();
      for (let k = 0; k <= written; k++) {
        iov.reset();
        for (let i = 0; i < perFrame; i++) iov.add(region.bytes, addresses[(k * perFrame + i) % addresses.length]!, RX_BUFFER_BYTES);
        const n = readvOrWritevNow(b.fd, false, iov.address, iov.count);
        if (k === written ? n !== -EAGAIN : n !== frame.length) throw new Error(`baseline readv returned ${n}`);
      }
      return [written, process.hrtime.bigint() - t0];
    };
    return alternateFrames(Math.ceil(frames / 4), device, baseline);
  } finally {
    b.close();
  }
}

/** Transmit: the driver queues frames and kicks, the device writes them to the socket. */
export function measureTransmit(frames: number): StreamResult {
  const b = setUp();
  try {
    const header = b.machine.allocator.alloc(VIRTIO_NET_HDR_SIZE + 66, 64);
    b.machine.memory.write(header + VIRTIO_NET_HDR_SIZE, new Uint8Array(66).fill(0x45));
    const fragBytes = (FRAME_BYTES - 66) / 2;
    const chain = [
      { addr: header, len: VIRTIO_NET_HDR_SIZE + 66, writable: false },
      { addr: b.machine.allocator.alloc(FRAG_BYTES, 4096), len: fragBytes, writable: false },
      { addr: b.machine.allocator.alloc(FRAG_BYTES, 4096), len: fragBytes, writable: false },
    ];
    const scratch = Buffer.alloc(2 * FRAME_BYTES);
    // Frames per kick: what the socket takes before EAGAIN (the device would otherwise wait for EPOLLOUT).
    const perKick = 2;
    const drain = (): void => {
      for (let i = 0; i < perKick; i++) if (readSync(b.peer, scratch) !== VIRTIO_NET_HDR_SIZE + FRAME_BYTES) throw new Error('the peer did not get a whole frame');
    };
    const device = (): [number, bigint] => {
      for (let i = 0; i < perKick; i++) b.tx.publish(b.tx.addChain(chain, { indirect: true }));
      const t0 = process.hrtime.bigint();
      b.tx.kick();
      const ns = process.hrtime.bigint() - t0;
      drain();
      b.tx.takeUsed();
      return [perKick, ns];
    };
    // The same writes straight from the same buffers.
    const iov = new HostIovecs(4);
    iov.useMemory(b.machine.memory);
    const region = b.machine.memory.regions[0]!;
    const baseline = (): [number, bigint] => {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < perKick; i++) {
        iov.reset();
        for (const piece of chain) iov.add(region.bytes, piece.addr, piece.len);
        if (readvOrWritevNow(b.fd, true, iov.address, iov.count) !== VIRTIO_NET_HDR_SIZE + FRAME_BYTES) throw new Error('baseline writev failed');
      }
      const ns = process.hrtime.bigint() - t0;
      drain();
      return [perKick, ns];
    };
    return alternateFrames(Math.ceil(frames / perKick), device, baseline);
  } finally {
    b.close();
  }
}

/** One frame from a Node buffer into the socket; false when it is full (EAGAIN). */
function writeFrame(fd: number, frame: Buffer): boolean {
  try {
    if (writeSync(fd, frame) !== frame.length) throw new Error('the peer wrote part of a frame');
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EAGAIN') return false;
    throw e;
  }
}

function main(): void {
  const frames = Number(process.argv[2] ?? '20000');
  if (!(Number.isInteger(frames) && frames > 0)) throw new Error(`FRAMES must be a positive integer, got '${process.argv[2]}'`);
  const f = (x: number): string => x.toFixed(2);
  for (const [what, r] of [
    ['receive (host → guest)', measureReceive(frames)],
    ['transmit (guest → host)', measureTransmit(frames)],
  ] as const) {
    console.log(
      `${what}: ${r.frames} frames of ${FRAME_BYTES} bytes, ${f(r.framesPerCall)} per call; device ${f(r.deviceUs)} us per frame, ` +
        `the same system calls alone ${f(r.syscallUs)} us, JavaScript ${f(r.deviceUs - r.syscallUs)} us (${((100 * (r.deviceUs - r.syscallUs)) / r.deviceUs).toFixed(0)} %)`,
    );
  }
}

runIfMain(import.meta.url, 'net-stream', main);
