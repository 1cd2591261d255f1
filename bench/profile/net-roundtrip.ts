/**
 * What one ping costs the VMM's main thread, without a guest or KVM: round trips through
 * VirtioNet with the unit tests' guest-side driver (test/support/virtio-driver.ts) in guest
 * memory that has host addresses, a SOCK_SEQPACKET socket pair standing in for the tap, and the
 * VMM's own EventFdPoller. Each round trip: the peer writes a frame, the device reads it into a
 * receive buffer and interrupts (an eventfd write, as an irqfd costs), the driver reposts the
 * buffer and queues a frame for transmission with a kick, the peer reads that frame, and the
 * device's deferred transmit pass runs. Interrupts are asked for as a Linux driver asks (EVENT_IDX,
 * used_event moved past what it took).
 *
 * Also: what a system call costs through koffi against the same call from C (readv on an empty
 * socket, EAGAIN), since a ping makes about eight of them on the main thread.
 *
 *   node dist/bench/profile/net-roundtrip.js [ROUND_TRIPS] [--linux]   (add --cpu-prof for a profile)
 *
 * --linux sets receive up as a Linux guest on a tap does (ReceiveSetup below).
 *
 * A profiling aid for the network path (docs/benchmarks.md), not a comparison with peers.
 */
import { closeSync, readSync, writeSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { featureBit } from '../../src/devices/virtio/device.js';
import {
  NET_RX_QUEUE,
  NET_TX_QUEUE,
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_GUEST_TSO4,
  VIRTIO_NET_F_GUEST_TSO6,
  VIRTIO_NET_F_HOST_TSO4,
  VIRTIO_NET_F_HOST_TSO6,
  VIRTIO_NET_F_MAC,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_NET_F_STATUS,
  VIRTIO_NET_HDR_SIZE,
  VirtioNet,
} from '../../src/devices/virtio/net.js';
import { EventFd } from '../../src/kvm/eventfd.js';
import { AF_UNIX, SOCK_CLOEXEC, SOCK_NONBLOCK, SOCK_SEQPACKET, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, readvOrWritevNow, socketpair } from '../../src/kvm/libc.js';
import { EventFdPoller } from '../../src/vmm/eventfd-poller.js';
import { F_EVENT_IDX, F_INDIRECT_DESC, F_VERSION_1, TestMachine, VirtioPciDriver } from '../../test/support/virtio-driver.js';

const FEATURES = [F_VERSION_1, F_EVENT_IDX, F_INDIRECT_DESC, VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS, VIRTIO_NET_F_MRG_RXBUF].reduce((mask, f) => mask | featureBit(f), 0n);
/** An ICMP echo of ping's default 56 data bytes: 14 Ethernet + 20 IP + 8 ICMP + 56. */
const PING_FRAME_BYTES = 98;
const RX_BUFFERS = 64;
/** The offloads a Linux guest takes from a tap: checksums and TSO both ways. */
const OFFLOAD_FEATURES = [VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6].reduce((mask, f) => mask | featureBit(f), 0n);
/**
 * Linux's mergeable receive buffers for small packets (drivers/net/virtio_net.c,
 * get_mergeable_buf_len: GOOD_PACKET_LEN plus the header, cache-line aligned), carved one after
 * another out of 32 KiB page fragments, and as many as its 256-entry ring holds.
 */
const LINUX_RX_BUFFER_BYTES = 1536;
const LINUX_RX_FRAGMENT_BYTES = 32 << 10;
const LINUX_RX_BUFFERS = 256;

/**
 * How the driver sets up receive: 'simple' (64 buffers of 4 KiB, no guest offloads: the device
 * holds one buffer per frame) or 'linux' (what a Linux guest on a tap does: guest TSO negotiated,
 * so the device holds buffers for a 64 KiB frame before each read, in Linux's 1536-byte pieces).
 */
export type ReceiveSetup = 'simple' | 'linux';

export interface RoundTripResult {
  readonly roundTrips: number;
  /** Per round trip, µs. */
  readonly wallUs: number;
  readonly cpuUs: number;
  readonly userUs: number;
  readonly systemUs: number;
  /** What each side counted: frames the device received and sent, interrupts raised. */
  readonly rxFrames: number;
  readonly txFrames: number;
  readonly interrupts: number;
  readonly peerFrames: number;
}

/** Run `warmup` unmeasured then `roundTrips` measured round trips (see the file comment). */
export async function measureNetRoundTrips(roundTrips: number, warmup = Math.min(3000, roundTrips), setup: ReceiveSetup = 'simple'): Promise<RoundTripResult> {
  const machine = new TestMachine({ regions: [[0, 8 << 20]], hostMapped: true });
  const irqfd = new EventFd();
  let interrupts = 0;
  let onInterrupt = (): void => {};
  machine.msi.signal = (): void => {
    irqfd.signal();
    irqfd.reset();
    interrupts++;
    onInterrupt();
  };
  const [fd, peer] = socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC);
  const poller = new EventFdPoller();
  poller.start();
  const linux = setup === 'linux';
  const offloads = linux ? TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 : 0;
  const device = new VirtioNet({ backend: { fd, supportedOffloads: offloads, setOffloads: () => {}, close: () => closeSync(fd) }, readiness: poller, mac: '06:00:ac:10:00:02' });
  try {
    const { slot } = machine.addVirtio(device, {});
    const queues = new VirtioPciDriver(machine, slot).bringUp(linux ? FEATURES | OFFLOAD_FEATURES : FEATURES);
    const rx = queues[NET_RX_QUEUE]!;
    const tx = queues[NET_TX_QUEUE]!;
    if (linux) {
      const perFragment = Math.floor(LINUX_RX_FRAGMENT_BYTES / LINUX_RX_BUFFER_BYTES);
      let fragment = 0;
      for (let i = 0; i < LINUX_RX_BUFFERS - 1; i++) {
        if (i % perFragment === 0) fragment = machine.allocator.alloc(LINUX_RX_FRAGMENT_BYTES, 4096);
        rx.publish(rx.addChain([{ addr: fragment + (i % perFragment) * LINUX_RX_BUFFER_BYTES, len: LINUX_RX_BUFFER_BYTES, writable: true }]));
      }
    } else {
      for (let i = 0; i < RX_BUFFERS; i++) rx.publish(rx.addChain([{ addr: machine.allocator.alloc(4096), len: 4096, writable: true }]));
    }
    rx.kick();
    const frame = new Uint8Array(VIRTIO_NET_HDR_SIZE + PING_FRAME_BYTES).fill(0x5a).fill(0, 0, VIRTIO_NET_HDR_SIZE);
    const txAddr = machine.allocator.alloc(frame.length);
    machine.memory.write(txAddr, frame);
    const scratch = Buffer.alloc(4096);
    let rxUsed = 0;
    let txUsed = 0;
    let peerFrames = 0;
    rx.setUsedEvent(0);
    tx.setUsedEvent(0);
    const once = async (): Promise<void> => {
      const interrupted = new Promise<void>((resolve) => (onInterrupt = resolve));
      writeSync(peer, frame);
      await interrupted;
      onInterrupt = () => {};
      for (const used of rx.takeUsed()) {
        rx.publish(used.id);
        rxUsed++;
      }
      rx.setUsedEvent(rxUsed);
      tx.publish(tx.addChain([{ addr: txAddr, len: frame.length, writable: false }]));
      tx.kick();
      if (readSync(peer, scratch) !== frame.length) throw new Error('the peer did not get the transmitted frame whole');
      peerFrames++;
      await new Promise<void>((resolve) => setImmediate(resolve));
      txUsed += tx.takeUsed().length;
      tx.setUsedEvent(txUsed);
    };
    for (let i = 0; i < warmup; i++) await once();
    const cpu0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < roundTrips; i++) await once();
    const wallUs = Number(process.hrtime.bigint() - t0) / 1000 / roundTrips;
    const cpu = process.cpuUsage(cpu0);
    return {
      roundTrips,
      wallUs,
      cpuUs: (cpu.user + cpu.system) / roundTrips,
      userUs: cpu.user / roundTrips,
      systemUs: cpu.system / roundTrips,
      rxFrames: device.metrics.rxFrames,
      txFrames: device.metrics.txFrames,
      interrupts,
      peerFrames,
    };
  } finally {
    device.close();
    await poller.close();
    irqfd.close();
    closeSync(peer);
  }
}

/** ns per readv(2) through koffi on an empty non-blocking socket (EAGAIN, errno read too). */
export function koffiReadvNs(calls: number): number {
  const [fd, peer] = socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC);
  try {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < calls; i++) readvOrWritevNow(fd, false, 0, 0);
    return Number(process.hrtime.bigint() - t0) / calls;
  } finally {
    closeSync(fd);
    closeSync(peer);
  }
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const setup: ReceiveSetup = args.includes('--linux') ? 'linux' : 'simple';
  const count = args.find((a) => !a.startsWith('--'));
  const n = Number(count ?? '20000');
  if (!(Number.isInteger(n) && n > 0)) throw new Error(`ROUND_TRIPS must be a positive integer, got '${count}'`);
  const r = await measureNetRoundTrips(n, Math.min(3000, n), setup);
  const f = (x: number): string => x.toFixed(2);
  console.log(`${setup} receive buffers, ${r.roundTrips} round trips: ${f(r.wallUs)} us wall, ${f(r.cpuUs)} us CPU each (user ${f(r.userUs)}, system ${f(r.systemUs)}); ${r.interrupts} interrupts in all`);
  koffiReadvNs(100_000);
  console.log(`readv on an empty socket through koffi: ${koffiReadvNs(1_000_000).toFixed(0)} ns per call (EAGAIN)`);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((e: unknown) => {
    console.error(`net-roundtrip: ${e instanceof Error ? e.message : String(e)}`);
    process.exit(1);
  });
}
