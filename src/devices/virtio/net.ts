/**
 * virtio-net, the network device (virtio 1.2 §5.1), with one receive and one transmit queue and
 * a backend that moves whole Ethernet frames, each preceded by the 12-byte struct
 * virtio_net_hdr_v1: a tap opened with IFF_VNET_HDR and TUNSETVNETHDRSZ 12 (net-tap.ts), or in
 * tests one end of an AF_UNIX SOCK_SEQPACKET pair. As in QEMU and Firecracker the header passes
 * through unchanged, so checksum and segmentation offloads (VIRTIO_NET_F_CSUM, _HOST_TSO4...,
 * _GUEST_CSUM, _GUEST_TSO4...) cost the device nothing: the host kernel does the work, the guest
 * offloads it, and frames up to 64 KiB cross in one system call.
 *
 * Transmit (guest to host): each chain of the transmit queue, header and frame, device-readable,
 * goes to the backend in one write(2) or writev(2) straight from guest memory, no copy. When the
 * backend answers EAGAIN the chain is kept, the device watches the descriptor for EPOLLOUT and
 * resumes when it is writable (or at the next kick): it never retries in a loop.
 *
 * Receive (host to guest): while the descriptor is readable the device reads each frame straight
 * into guest receive buffers with read(2)/readv(2). With VIRTIO_NET_F_MRG_RXBUF a frame may
 * span several chains (§5.1.6.4): before reading, the device takes chains from the queue until
 * they hold the largest frame that can arrive (65562 bytes with guest TSO/UFO, else header plus an
 * MTU-sized VLAN frame), as Firecracker does; the chains one frame did not need are kept, in
 * order, for the next. num_buffers (the chains used) goes into the first chain's header. Without
 * MRG_RXBUF each frame gets one chain and num_buffers is 1. A frame larger than the buffers given
 * (the tap reports the full length on a truncated read) is dropped and the buffers reused.
 * Without receive buffers the device stops watching readability, so frames wait in the backend's
 * queue (the tap's own limit, 500 frames by default, drops the rest, as a real NIC does), and
 * asks for the guest's next kick (§2.7.10); the kick turns reading back on. Nothing polls.
 *
 * Reads and writes are synchronous system calls on the main thread: on a non-blocking descriptor
 * they only copy between kernel and guest memory. They name guest buffers by host address
 * (HostIovecs: one readv(2)/writev(2) over an iovec array filled in place), so nothing is allocated
 * per frame and EAGAIN is a return value, not an exception. Guest memory without host addresses
 * (unit tests over plain buffers) goes through Node's readv/writev with views instead.
 *
 * A hostile guest: a transmit chain with a device-writable buffer, shorter than the header, longer
 * than 65562 bytes, or asking for an offload it did not negotiate, and a receive chain shorter
 * than the header (§5.1.6.3.1: each buffer MUST hold one), are returned unused (used length 0)
 * and counted; a receive chain with a device-readable buffer (§5.1.6.3.1 forbids them) fails the
 * device (DEVICE_NEEDS_RESET). Nothing throws, and all guest memory is reached through the
 * bounds-checked descriptor chains of queue.ts.
 */
import { readSync, readvSync, writeSync, writevSync } from 'node:fs';
import { EAGAIN, EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLOUT, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN, TUN_F_UFO, errnoName, readvOrWritevNow } from '../../kvm/libc.js';
import { VIRTIO_ID_NET, featureBit, hasFeature, type VirtioActivation, type VirtioDevice } from './device.js';
import { DescriptorChain, type SplitQueue } from './queue.js';
import { HostIovecs } from './host-iovecs.js';
import { deferAfterBatch } from '../end-of-batch.js';

// Feature bits (virtio 1.2 §5.1.3).
export const VIRTIO_NET_F_CSUM = 0;
export const VIRTIO_NET_F_GUEST_CSUM = 1;
export const VIRTIO_NET_F_MTU = 3;
export const VIRTIO_NET_F_MAC = 5;
export const VIRTIO_NET_F_GUEST_TSO4 = 7;
export const VIRTIO_NET_F_GUEST_TSO6 = 8;
export const VIRTIO_NET_F_GUEST_ECN = 9;
export const VIRTIO_NET_F_GUEST_UFO = 10;
export const VIRTIO_NET_F_HOST_TSO4 = 11;
export const VIRTIO_NET_F_HOST_TSO6 = 12;
export const VIRTIO_NET_F_HOST_ECN = 13;
export const VIRTIO_NET_F_HOST_UFO = 14;
export const VIRTIO_NET_F_MRG_RXBUF = 15;
export const VIRTIO_NET_F_STATUS = 16;
export const VIRTIO_NET_F_CTRL_VQ = 17;
export const VIRTIO_NET_F_MQ = 22;

/** status: the link is up (§5.1.4). */
export const VIRTIO_NET_S_LINK_UP = 1;

// struct virtio_net_config (§5.1.4).
export const NET_CONFIG_MAC = 0; // u8 mac[6]
export const NET_CONFIG_STATUS = 6; // le16
export const NET_CONFIG_MAX_VIRTQUEUE_PAIRS = 8; // le16
export const NET_CONFIG_MTU = 10; // le16
/** Bytes exposed: up to mtu; speed, duplex and the RSS fields belong to features not offered. */
export const NET_CONFIG_SIZE = 12;

// struct virtio_net_hdr_v1 (§5.1.6): u8 flags, u8 gso_type, le16 hdr_len, le16 gso_size,
// le16 csum_start, le16 csum_offset, le16 num_buffers.
/** The header every frame carries once VIRTIO_F_VERSION_1 is negotiated (§5.1.6: "le16 num_buffers" always present). */
export const VIRTIO_NET_HDR_SIZE = 12;
export const NET_HDR_FLAGS = 0;
export const NET_HDR_GSO_TYPE = 1;
export const NET_HDR_NUM_BUFFERS = 10;
export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
export const VIRTIO_NET_HDR_F_DATA_VALID = 2;
export const VIRTIO_NET_HDR_GSO_NONE = 0;
export const VIRTIO_NET_HDR_GSO_TCPV4 = 1;
export const VIRTIO_NET_HDR_GSO_UDP = 3;
export const VIRTIO_NET_HDR_GSO_TCPV6 = 4;
export const VIRTIO_NET_HDR_GSO_ECN = 0x80;

/**
 * The largest frame with its header: 12 + 65550, a 64 KiB TSO/UFO frame with Ethernet and VLAN
 * headers (Firecracker's MAX_BUFFER_SIZE; Linux's virtio_net sizes its big receive buffers alike).
 */
export const MAX_FRAME_BYTES = 65562;
/** Ethernet header plus one VLAN tag: a frame is at most this much longer than the MTU. */
const ETHERNET_OVERHEAD = 14 + 4;
export const DEFAULT_MTU = 1500;
/** MTU range a link can have (the config parser's range, api/config/network-interface.ts). */
export const NET_MTU_RANGE = { min: 68, max: 65535 } as const;

// Queue indices (§5.1.2): receiveq1, transmitq1; no control queue (VIRTIO_NET_F_CTRL_VQ not offered).
export const NET_RX_QUEUE = 0;
export const NET_TX_QUEUE = 1;
/** Queue size offered, as Firecracker's; Linux keeps its receive ring full of buffers. */
export const NET_QUEUE_SIZE = 256;
/** Most frames read per readiness wake-up, so one busy interface cannot hold the event loop. */
export const RX_FRAMES_PER_WAKE = 64;
/** Linux's UIO_MAXIOV: most views one readv/writev takes. */
const IOV_MAX = 1024;

/**
 * Where frames go and come from: a non-blocking descriptor on which each read returns one frame
 * and each write sends one, the 12-byte virtio_net_hdr_v1 in front (a tap with IFF_VNET_HDR, or a
 * SOCK_SEQPACKET socket). The device owns it once constructed and closes it in close().
 */
export interface NetBackend {
  readonly fd: number;
  /** TUN_F_* offloads (linux/if_tun.h) the backend can take: the matching guest features are offered. 0 for none. */
  readonly supportedOffloads: number;
  /** Which TUN_F_* offloads frames towards the guest may use from now on (TUNSETOFFLOAD). May throw. */
  setOffloads(flags: number): void;
  close(): void;
}

/** A readiness watch on the backend descriptor: EventFdPoller.watchFd's FdWatch. */
export interface NetFdWatch {
  /** Watch EPOLLIN and/or EPOLLOUT from now on; 0 stops watching. */
  setEvents(events: number): void;
  remove(): void;
}

/** What tells the device its backend is readable or writable: the VMM's EventFdPoller. */
export interface NetReadiness {
  watchFd(fd: number, onReady: (events: number) => void, events?: number, options?: { readonly holdSafe?: boolean }): NetFdWatch;
}

export interface VirtioNetOptions {
  readonly backend: NetBackend;
  readonly readiness: NetReadiness;
  /** The guest's MAC "xx:xx:xx:xx:xx:xx" (offers VIRTIO_NET_F_MAC); absent lets the guest pick one. */
  readonly mac?: string;
  /** MTU to advertise with VIRTIO_NET_F_MTU (68..65535); absent: not advertised. */
  readonly mtu?: number;
  /** Name in messages; default "virtio-net". */
  readonly name?: string;
  /** Backend trouble worth a line in the VMM's log (hang-up, failed TUNSETOFFLOAD, first write error). */
  readonly onWarning?: (message: string) => void;
}

/** What the device did, for metrics and tests. */
export interface VirtioNetMetrics {
  txFrames: number;
  txBytes: number;
  /** Transmit chains returned unsent: malformed, or refused by the backend with an error other than EAGAIN. */
  txDropped: number;
  /** Times a write met EAGAIN (the device then waited for EPOLLOUT). */
  txBlocked: number;
  rxFrames: number;
  rxBytes: number;
  /** Frames read but not delivered: shorter than the header, or larger than the buffers. */
  rxDropped: number;
  /** Receive chains returned unused because they cannot hold the header. */
  rxBadBuffers: number;
  /** Times the device ran out of receive buffers and stopped reading. */
  rxStalls: number;
}

/** Parse "xx:xx:xx:xx:xx:xx" into 6 bytes; RangeError otherwise. */
export function parseMac(mac: string): Uint8Array {
  if (!/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(mac)) throw new RangeError(`MAC address ${JSON.stringify(mac)} is not of the form xx:xx:xx:xx:xx:xx`);
  return Uint8Array.from(mac.split(':'), (octet) => parseInt(octet, 16));
}

/**
 * The guest features matching tap offloads (§5.1.3.1: each TSO/UFO/ECN feature requires the
 * matching checksum feature, ECN requires TSO), with the TUN_F_* flag each needs.
 */
const GUEST_OFFLOADS: readonly (readonly [feature: number, tunFlag: number])[] = [
  [VIRTIO_NET_F_GUEST_CSUM, TUN_F_CSUM],
  [VIRTIO_NET_F_GUEST_TSO4, TUN_F_TSO4],
  [VIRTIO_NET_F_GUEST_TSO6, TUN_F_TSO6],
  [VIRTIO_NET_F_GUEST_ECN, TUN_F_TSO_ECN],
  [VIRTIO_NET_F_GUEST_UFO, TUN_F_UFO],
];
const HOST_OFFLOADS: readonly (readonly [feature: number, tunFlag: number])[] = [
  [VIRTIO_NET_F_HOST_TSO4, TUN_F_TSO4],
  [VIRTIO_NET_F_HOST_TSO6, TUN_F_TSO6],
  [VIRTIO_NET_F_HOST_ECN, TUN_F_TSO_ECN],
  [VIRTIO_NET_F_HOST_UFO, TUN_F_UFO],
];

/** The features offered for a backend supporting `offloads` (TUN_F_*). */
export function netFeatures(offloads: number, options: { mac: boolean; mtu: boolean }): bigint {
  let features = featureBit(VIRTIO_NET_F_MRG_RXBUF) | featureBit(VIRTIO_NET_F_STATUS);
  if (options.mac) features |= featureBit(VIRTIO_NET_F_MAC);
  if (options.mtu) features |= featureBit(VIRTIO_NET_F_MTU);
  if ((offloads & TUN_F_CSUM) === 0) return features;
  // The backend takes partial checksums from the guest (the tap finishes them) and, with TSO/UFO
  // support in the kernel, super-frames it segments itself.
  features |= featureBit(VIRTIO_NET_F_CSUM);
  for (const [feature, flag] of HOST_OFFLOADS) if ((offloads & flag) === flag) features |= featureBit(feature);
  for (const [feature, flag] of GUEST_OFFLOADS) if ((offloads & flag) === flag) features |= featureBit(feature);
  // §5.1.3.1: ECN needs TSO4 or TSO6.
  if (!hasFeature(features, VIRTIO_NET_F_HOST_TSO4) && !hasFeature(features, VIRTIO_NET_F_HOST_TSO6)) features &= ~featureBit(VIRTIO_NET_F_HOST_ECN);
  if (!hasFeature(features, VIRTIO_NET_F_GUEST_TSO4) && !hasFeature(features, VIRTIO_NET_F_GUEST_TSO6)) features &= ~featureBit(VIRTIO_NET_F_GUEST_ECN);
  return features;
}

/**
 * TUNSETOFFLOAD flags for negotiated `features`: what the guest accepted. The tap refuses TSO/UFO
 * without TUN_F_CSUM, and a guest that accepted those without GUEST_CSUM broke §5.1.3.1 anyway.
 */
export function tapOffloadsFor(features: bigint): number {
  if (!hasFeature(features, VIRTIO_NET_F_GUEST_CSUM)) return 0;
  let flags = 0;
  for (const [feature, flag] of GUEST_OFFLOADS) if (hasFeature(features, feature)) flags |= flag;
  if ((flags & (TUN_F_TSO4 | TUN_F_TSO6)) === 0) flags &= ~TUN_F_TSO_ECN;
  return flags;
}

const AGAIN = -1;

export class VirtioNet implements VirtioDevice {
  readonly deviceType = VIRTIO_ID_NET;
  /** Its queue and backend handlers queue no promise continuation or nextTick (VirtioDevice.holdSafe). */
  readonly holdSafe = true;
  readonly name: string;
  readonly deviceFeatures: bigint;
  readonly queueMaxSizes: readonly number[] = [NET_QUEUE_SIZE, NET_QUEUE_SIZE];
  readonly configSize = NET_CONFIG_SIZE;
  readonly metrics: VirtioNetMetrics = { txFrames: 0, txBytes: 0, txDropped: 0, txBlocked: 0, rxFrames: 0, rxBytes: 0, rxDropped: 0, rxBadBuffers: 0, rxStalls: 0 };

  private readonly backend: NetBackend;
  private readonly fd: number;
  private readonly watch: NetFdWatch;
  private readonly onWarning: (message: string) => void;
  private readonly config = new Uint8Array(NET_CONFIG_SIZE);
  private readonly mtu: number;
  private activation: VirtioActivation | undefined;
  /** The device reported a driver error (DEVICE_NEEDS_RESET) or the backend hung up: stay quiet until reset. */
  private stopped = false;
  private backendGone = false;
  /** close() ran: the backend is gone for good. */
  private closed = false;
  private mergeable = false;
  private guestCsum = false;
  /** gso_type values (ECN bit cleared) the guest may send: those of the negotiated HOST_* features. */
  private hostGso = 0;
  private hostEcn = false;
  private hostCsum = false;
  /** Receive capacity to gather before reading (see the file comment). */
  private rxNeed = MAX_FRAME_BYTES;
  private warnedTx = false;

  // Transmit.
  private readonly txChain = new DescriptorChain(16);
  /** txChain holds a frame the backend refused with EAGAIN: send it before taking another. */
  private txPending = false;
  /** A pass over the transmit queue is waiting for the end of the batch (scheduleTransmit). */
  private txScheduled = false;
  /** Waiting for EPOLLOUT. */
  private txBlocked = false;
  private readonly txHeader = new Uint8Array(VIRTIO_NET_HDR_SIZE);
  private readonly txIov: Uint8Array[] = [];

  // Receive: chains taken from the queue and not yet used, a ring of rxCount from rxStart.
  private readonly rxChains: DescriptorChain[] = [];
  private rxStart = 0;
  private rxCount = 0;
  /** Writable bytes of the chains held. */
  private rxCapacity = 0;
  /** Out of receive buffers: not watching readability, waiting for a kick. */
  private rxStalled = false;
  private readonly rxIov: Uint8Array[] = [];
  /**
   * Frames by host address (readv/writev with no views and no exceptions), when guest memory has
   * host addresses: the held receive chains for the next read, and one transmit frame.
   */
  private readonly rxIovecs = new HostIovecs(IOV_MAX);
  private readonly txIovecs = new HostIovecs(IOV_MAX);
  /**
   * rxIovecs still names exactly the chains held now: the next read can go without rebuilding it.
   * A wake-up after a read that found the backend empty (a lone frame: a ping, a request) then
   * reads at once, instead of first walking every held chain again (with guest TSO, 64 KiB of
   * Linux's 1536-byte buffers: over 40 chains) on its way to the interrupt.
   */
  private rxIovecsCurrent = false;
  private readonly numBuffers = new Uint8Array(2);
  private readonly zeroByte = new Uint8Array(1);

  constructor(options: VirtioNetOptions) {
    this.name = options.name ?? 'virtio-net';
    this.backend = options.backend;
    this.fd = options.backend.fd;
    this.onWarning = options.onWarning ?? (() => {});
    const mac = options.mac === undefined ? undefined : parseMac(options.mac);
    if (options.mtu !== undefined && (!Number.isInteger(options.mtu) || options.mtu < NET_MTU_RANGE.min || options.mtu > NET_MTU_RANGE.max)) {
      throw new RangeError(`${this.name}: MTU ${options.mtu} is outside ${NET_MTU_RANGE.min}..${NET_MTU_RANGE.max}`);
    }
    this.mtu = options.mtu ?? DEFAULT_MTU;
    this.deviceFeatures = netFeatures(options.backend.supportedOffloads, { mac: mac !== undefined, mtu: options.mtu !== undefined });
    const view = new DataView(this.config.buffer);
    if (mac !== undefined) this.config.set(mac, NET_CONFIG_MAC);
    // The link is always up: the tap's carrier is the host's business (Firecracker reports it the same way).
    view.setUint16(NET_CONFIG_STATUS, VIRTIO_NET_S_LINK_UP, true);
    view.setUint16(NET_CONFIG_MAX_VIRTQUEUE_PAIRS, 1, true);
    view.setUint16(NET_CONFIG_MTU, options.mtu ?? 0, true);
    for (let i = 0; i < NET_QUEUE_SIZE; i++) this.rxChains.push(new DescriptorChain(4));
    this.watch = options.readiness.watchFd(this.fd, (events) => this.onReady(events), 0, { holdSafe: true });
  }

  readConfig(offset: number, data: Uint8Array): void {
    data.set(this.config.subarray(offset, offset + data.length));
  }

  /** The driver MUST NOT write the configuration (§5.1.4.2, without the legacy interface): ignored. */
  writeConfig(_offset: number, _data: Uint8Array): void {}

  activate(activation: VirtioActivation): void {
    if (this.closed) return;
    this.clear();
    this.activation = activation;
    this.rxIovecs.useMemory(activation.memory);
    this.txIovecs.useRegionsOf(this.rxIovecs);
    const features = activation.features;
    this.mergeable = hasFeature(features, VIRTIO_NET_F_MRG_RXBUF);
    this.guestCsum = hasFeature(features, VIRTIO_NET_F_GUEST_CSUM);
    this.hostCsum = hasFeature(features, VIRTIO_NET_F_CSUM);
    this.hostGso =
      (hasFeature(features, VIRTIO_NET_F_HOST_TSO4) ? 1 << VIRTIO_NET_HDR_GSO_TCPV4 : 0) |
      (hasFeature(features, VIRTIO_NET_F_HOST_TSO6) ? 1 << VIRTIO_NET_HDR_GSO_TCPV6 : 0) |
      (hasFeature(features, VIRTIO_NET_F_HOST_UFO) ? 1 << VIRTIO_NET_HDR_GSO_UDP : 0);
    this.hostEcn = hasFeature(features, VIRTIO_NET_F_HOST_ECN);
    const offloads = tapOffloadsFor(features);
    const guestGso = (offloads & (TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_UFO)) !== 0;
    this.rxNeed = guestGso ? MAX_FRAME_BYTES : VIRTIO_NET_HDR_SIZE + ETHERNET_OVERHEAD + Math.max(this.mtu, DEFAULT_MTU);
    try {
      this.backend.setOffloads(offloads);
    } catch (e) {
      // The guest still gets complete frames: GUEST_* features allow offloaded frames, they do not require them.
      this.onWarning(`${this.name}: cannot set the backend's offloads to 0x${offloads.toString(16)}: ${e instanceof Error ? e.message : String(e)}`);
    }
    activation.queues[NET_RX_QUEUE]?.disableNotification();
    this.updateInterest();
  }

  reset(): void {
    this.clear();
    this.activation = undefined;
    if (this.closed) return;
    this.updateInterest();
    try {
      this.backend.setOffloads(0);
    } catch {
      // The next activation sets them again; nothing reaches the guest meanwhile.
    }
  }

  processQueue(index: number): void {
    if (this.activation === undefined || this.stopped) return;
    if (index === NET_RX_QUEUE) {
      // The guest added receive buffers. Without a stall the device already reads when frames arrive.
      if (!this.rxStalled) return;
      this.rxStalled = false;
      this.activation.queues[NET_RX_QUEUE]!.disableNotification();
      this.updateInterest();
      this.receive();
    } else if (index === NET_TX_QUEUE) {
      this.scheduleTransmit();
    }
  }

  /** Stop watching the backend and close it. The device is unusable afterwards. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.activation = undefined;
    this.stopped = true;
    this.watch.remove();
    this.backend.close();
  }

  // ---- readiness

  private onReady(events: number): void {
    if (this.activation === undefined || this.stopped) return;
    if ((events & (EPOLLERR | EPOLLHUP)) !== 0) {
      // A tap never hangs up; a socket backend whose peer went away would wake us for ever.
      this.backendGone = true;
      this.updateInterest();
      this.onWarning(`${this.name}: the backend ${(events & EPOLLHUP) !== 0 ? 'hung up' : 'reported an error'}; no more frames in either direction until the device is reset`);
      return;
    }
    // A readiness callback is a turn of the event loop of its own: each queue gets a fresh pop
    // budget (SplitQueue.beginPass), so steady traffic needs no extra pass per ring's worth.
    const queues = this.activation.queues;
    if ((events & EPOLLOUT) !== 0 && this.txBlocked) {
      this.txBlocked = false;
      this.updateInterest();
      queues[NET_TX_QUEUE]!.beginPass();
      this.transmit(true);
    }
    if ((events & EPOLLIN) !== 0) {
      queues[NET_RX_QUEUE]!.beginPass();
      this.receive();
    }
  }

  /** Watch readability unless out of receive buffers, writability while a write waits. */
  private updateInterest(): void {
    const live = this.activation !== undefined && !this.stopped && !this.backendGone;
    this.watch.setEvents(live ? (this.rxStalled ? 0 : EPOLLIN) | (this.txBlocked ? EPOLLOUT : 0) : 0);
  }

  /** A driver error: DEVICE_NEEDS_RESET, and silence until reset. */
  private fail(reason: string): void {
    this.stopped = true;
    this.updateInterest();
    this.activation?.fail(reason);
  }

  /** Forget everything taken from the queues: after reset they belong to the driver again. */
  private clear(): void {
    this.stopped = this.closed;
    this.backendGone = false;
    this.txPending = false;
    this.txBlocked = false;
    this.rxStalled = false;
    this.rxStart = 0;
    this.rxCount = 0;
    this.rxCapacity = 0;
    this.rxIovecsCurrent = false;
    this.txIov.length = 0;
    this.rxIov.length = 0;
  }

  // ---- transmit

  /**
   * A kick: send what is there at once, then once more at the end of the batch of events
   * (deferAfterBatch: setImmediate, or inside the held wait after the batch), with the queue's
   * notifications off in between, so frames the guest queues meanwhile ride along without kicks of
   * their own (QEMU's tx=bh batches the same way, in a bottom half). Sending the first frames
   * before the hop matters to latency: a ping's reply is one frame, and in the nested host the
   * hop through setImmediate was measured (ftrace of the main thread, per ping) as a good part of
   * the 1275 us tsvmm took from the kick's wake-up to the tap write, against QEMU's 406 us.
   * Batching measured in the nested host with bench/net when the whole transmit waited for the
   * hop (two A/B pairs, 5 s iperf3 tests): guest → host +30–60 %, host → guest +5–45 %.
   */
  private scheduleTransmit(): void {
    this.activation?.queues[NET_TX_QUEUE]?.disableNotification();
    this.transmit(false);
    if (this.txScheduled) return;
    this.txScheduled = true;
    deferAfterBatch(this.runScheduledTransmit);
  }

  private readonly runScheduledTransmit = (): void => {
    this.txScheduled = false;
    // EPOLLOUT resumes a blocked transmit (and turns notifications back on).
    if (this.txBlocked) return;
    // A turn of the event loop of its own: a fresh pop budget (SplitQueue.beginPass).
    this.activation?.queues[NET_TX_QUEUE]?.beginPass();
    this.transmit(true);
  };

  /**
   * Send every available frame. With `rearm`, then ask for kicks again (§2.7.10) and go on with
   * what arrived meanwhile; without it, leave notifications off (a pass is coming).
   */
  private transmit(rearm: boolean): void {
    const activation = this.activation;
    if (activation === undefined || this.stopped || this.backendGone) return;
    const queue = activation.queues[NET_TX_QUEUE]!;
    const chain = this.txChain;
    outer: for (;;) {
      queue.disableNotification();
      for (;;) {
        if (!this.txPending && !queue.pop(chain)) break;
        this.txPending = false;
        const sent = this.send(chain);
        if (sent === AGAIN) {
          // Keep the chain; EPOLLOUT (or the next kick) resumes. The guest gets its other buffers back meanwhile.
          this.txPending = true;
          this.txBlocked = true;
          this.metrics.txBlocked++;
          this.updateInterest();
          break outer;
        }
        // Transmit buffers are device-readable: the device wrote nothing (§2.7.8 used length).
        queue.addUsed(chain.head, 0);
        // Tell the driver at once, not after the batch (QEMU's virtio_net_flush_tx does the same):
        // it frees the frame's socket buffer and queues more while the next frames go out, instead
        // of stalling on its per-socket limit of bytes in flight (TCP small queues). EVENT_IDX keeps
        // this to the interrupts the driver asked for.
        activation.notifyIfNeeded(NET_TX_QUEUE);
      }
      if (!rearm || !queue.enableNotification()) break;
    }
    activation.notifyIfNeeded(NET_TX_QUEUE);
  }

  /** Write one chain's frame to the backend: bytes written, AGAIN, or 0 when dropped. */
  private send(chain: DescriptorChain): number {
    const length = chain.readableBytes;
    if (chain.writableSegments > 0 || length < VIRTIO_NET_HDR_SIZE || length > MAX_FRAME_BYTES || !this.headerAllowed(chain)) {
      this.metrics.txDropped++;
      return 0;
    }
    if (this.txIovecs.usable) return this.sendByAddress(chain, length);
    let written: number;
    try {
      if (chain.readableSegments === 1) {
        written = writeSync(this.fd, chain.buffers[0]!, chain.offsets[0]!, length);
      } else {
        this.gather(chain, 0, chain.readableSegments, this.txIov, Infinity);
        written = writevSync(this.fd, this.txIov);
        this.txIov.length = 0;
      }
    } catch (e) {
      this.txIov.length = 0;
      if ((e as NodeJS.ErrnoException).code === 'EAGAIN') return AGAIN;
      // EIO while the tap is down, EINVAL for a header the kernel refuses: that frame is lost, as on a wire.
      this.metrics.txDropped++;
      if (!this.warnedTx) {
        this.warnedTx = true;
        this.onWarning(`${this.name}: the backend refused a frame (${(e as NodeJS.ErrnoException).code ?? String(e)}); frames are dropped while this lasts (is the tap up?)`);
      }
      return 0;
    }
    this.metrics.txFrames++;
    this.metrics.txBytes += length - VIRTIO_NET_HDR_SIZE;
    return written;
  }

  /** send() through an iovec array of host addresses: one writev(2), nothing allocated. */
  private sendByAddress(chain: DescriptorChain, length: number): number {
    const iovecs = this.txIovecs;
    iovecs.reset();
    for (let s = 0; s < chain.readableSegments; s++) {
      if (!iovecs.add(chain.buffers[s]!, chain.offsets[s]!, chain.lengths[s]!)) {
        // More pieces than IOV_MAX (the kernel's limit too): a frame no writev can take.
        this.metrics.txDropped++;
        return 0;
      }
    }
    const written = readvOrWritevNow(this.fd, true, iovecs.address, iovecs.count);
    if (written === -EAGAIN) return AGAIN;
    if (written < 0) {
      // EIO while the tap is down, EINVAL for a header the kernel refuses: that frame is lost, as on a wire.
      this.metrics.txDropped++;
      if (!this.warnedTx) {
        this.warnedTx = true;
        this.onWarning(`${this.name}: the backend refused a frame (${errnoName(-written)}); frames are dropped while this lasts (is the tap up?)`);
      }
      return 0;
    }
    this.metrics.txFrames++;
    this.metrics.txBytes += length - VIRTIO_NET_HDR_SIZE;
    return written;
  }

  /**
   * Whether the header asks only for offloads the guest negotiated (§5.1.6.2.1: no NEEDS_CSUM
   * without VIRTIO_NET_F_CSUM, no gso_type without the matching HOST_* feature).
   */
  private headerAllowed(chain: DescriptorChain): boolean {
    const header = this.txHeader;
    chain.readBytes(header);
    if ((header[NET_HDR_FLAGS]! & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0 && !this.hostCsum) return false;
    const gsoType = header[NET_HDR_GSO_TYPE]!;
    if (gsoType === VIRTIO_NET_HDR_GSO_NONE) return true;
    if ((gsoType & VIRTIO_NET_HDR_GSO_ECN) !== 0 && !this.hostEcn) return false;
    const type = gsoType & ~VIRTIO_NET_HDR_GSO_ECN;
    return type < 8 && (this.hostGso & (1 << type)) !== 0;
  }

  // ---- receive

  /** Read frames into guest buffers until the backend is empty, buffers run out, or the per-wake budget is spent. */
  private receive(): void {
    const activation = this.activation;
    if (activation === undefined || this.stopped || this.backendGone || this.rxStalled) return;
    const queue = activation.queues[NET_RX_QUEUE]!;
    for (let frames = 0; frames < RX_FRAMES_PER_WAKE; frames++) {
      if (!this.gatherBuffers(queue)) {
        // Ask for a kick (§2.7.10). Buffers added before avail_event moved would not kick: take
        // them and ask again, until the request stands with nothing new behind it (with EVENT_IDX
        // a stale avail_event would let the driver's next buffers pass without a kick).
        let ready = false;
        while (!this.stopped && queue.enableNotification()) {
          if (this.gatherBuffers(queue)) {
            ready = true;
            break;
          }
        }
        if (this.stopped) break;
        if (!ready) {
          // Out of buffers, or out of this pass's budget (the transport then runs processQueue
          // again on the next turn, which resumes here): either way wait without polling the backend.
          this.rxStalled = true;
          if (!queue.yielded) this.metrics.rxStalls++;
          this.updateInterest();
          break;
        }
        queue.disableNotification();
      }
      let capacity: number;
      let n: number;
      if (this.rxIovecs.usable) {
        capacity = this.rxIovecsCurrent ? this.rxIovecs.length : this.fillIovecs();
        n = readvOrWritevNow(this.fd, false, this.rxIovecs.address, this.rxIovecs.count);
        if (n === -EAGAIN) break;
        if (n < 0) {
          this.readFailed(errnoName(-n));
          break;
        }
      } else {
        capacity = this.fillIov();
        try {
          n = this.rxIov.length === 1 ? readSync(this.fd, this.rxIov[0]!) : readvSync(this.fd, this.rxIov);
        } catch (e) {
          this.rxIov.length = 0;
          if ((e as NodeJS.ErrnoException).code === 'EAGAIN') break;
          this.readFailed((e as NodeJS.ErrnoException).code ?? String(e));
          break;
        }
        this.rxIov.length = 0;
      }
      // The tap returns a truncated frame's full length: more than the buffers held means it did not fit.
      if (n < VIRTIO_NET_HDR_SIZE || n > capacity) {
        this.metrics.rxDropped++;
        continue; // the buffers are reused for the next frame
      }
      this.deliver(queue, n);
      // The wake's first frame interrupts at once, before the reads that follow: a lone frame (a
      // ping, a request) does not wait for the read that finds the backend empty and the chains
      // gathered for it (in the nested host's traces, 0.3-0.6 ms of tsvmm's 2.2 ms from the tap
      // to the interrupt; QEMU interrupts before that read too). The rest of the wake's frames
      // share one interrupt at its end: per-frame interrupts measured worse (725c620, reverted).
      if (frames === 0) activation.notifyIfNeeded(NET_RX_QUEUE);
    }
    // One interrupt for the rest of what this wake read, after the read that found the backend empty.
    activation.notifyIfNeeded(NET_RX_QUEUE);
  }

  private readFailed(why: string): void {
    this.backendGone = true;
    this.updateInterest();
    this.onWarning(`${this.name}: reading from the backend failed (${why}); no more frames until the device is reset`);
  }

  /**
   * Hold enough receive chains for the next frame: one without MRG_RXBUF; with it, chains until
   * they hold rxNeed bytes or the driver has no more to give (all its buffers are then held, and
   * waiting for more would wait for ever). Returns whether reading may go ahead.
   */
  private gatherBuffers(queue: SplitQueue): boolean {
    if (!this.mergeable) return this.rxCount > 0 || this.takeRxChain(queue);
    const limit = Math.min(queue.size, NET_QUEUE_SIZE);
    while (this.rxCapacity < this.rxNeed && this.rxCount < limit) {
      if (!this.takeRxChain(queue)) break;
    }
    return this.rxCount > 0 && (this.rxCapacity >= this.rxNeed || this.rxCount >= limit);
  }

  /** Take one usable receive chain into the ring; false when the queue has none. */
  private takeRxChain(queue: SplitQueue): boolean {
    for (;;) {
      if (this.rxCount >= NET_QUEUE_SIZE) return false;
      const chain = this.rxChains[(this.rxStart + this.rxCount) % NET_QUEUE_SIZE]!;
      if (!queue.pop(chain)) return false;
      if (chain.readableSegments > 0) {
        this.fail(`receive buffer ${chain.head} has a device-readable descriptor; receive buffers are device-writable only (virtio 1.2 §5.1.6.3.1)`);
        return false;
      }
      if (chain.writableBytes < VIRTIO_NET_HDR_SIZE) {
        // §5.1.6.3.1: each buffer MUST hold at least the header. Hand it back unused.
        this.metrics.rxBadBuffers++;
        queue.addUsed(chain.head, 0);
        continue;
      }
      this.rxCount++;
      this.rxCapacity += chain.writableBytes;
      this.rxIovecsCurrent = false;
      return true;
    }
  }

  /** Views of the held chains for the next read (the first chain only without MRG_RXBUF). Returns their total length. */
  private fillIov(): number {
    const iov = this.rxIov;
    iov.length = 0;
    let capacity = 0;
    const chains = this.mergeable ? this.rxCount : 1;
    for (let c = 0; c < chains && iov.length < IOV_MAX; c++) {
      const chain = this.rxChains[(this.rxStart + c) % NET_QUEUE_SIZE]!;
      capacity += this.gather(chain, chain.readableSegments, chain.segmentCount, iov, IOV_MAX);
    }
    return capacity;
  }

  /** fillIov() by host address: the held chains' buffers into rxIovecs. Returns their total length. */
  private fillIovecs(): number {
    const iovecs = this.rxIovecs;
    iovecs.reset();
    this.rxIovecsCurrent = true;
    const chains = this.mergeable ? this.rxCount : 1;
    for (let c = 0; c < chains; c++) {
      const chain = this.rxChains[(this.rxStart + c) % NET_QUEUE_SIZE]!;
      for (let s = chain.readableSegments; s < chain.segmentCount; s++) {
        if (!iovecs.add(chain.buffers[s]!, chain.offsets[s]!, chain.lengths[s]!)) return iovecs.length;
      }
    }
    return iovecs.length;
  }

  /**
   * Append views of segments [first, end) of `chain` to `iov`, merging pieces contiguous in one
   * host buffer (Linux's mergeable buffers are consecutive fragments of one page), up to `max`
   * views. Returns the bytes added.
   */
  private gather(chain: DescriptorChain, first: number, end: number, iov: Uint8Array[], max: number): number {
    let bytes = 0;
    for (let s = first; s < end; s++) {
      const buffer = chain.buffers[s]!;
      const offset = chain.offsets[s]!;
      const length = chain.lengths[s]!;
      const last = iov.length - 1;
      const previous = last >= 0 ? iov[last]! : undefined;
      if (previous !== undefined && previous.buffer === buffer.buffer && previous.byteOffset + previous.length === buffer.byteOffset + offset) {
        iov[last] = new Uint8Array(previous.buffer, previous.byteOffset, previous.length + length);
      } else {
        if (iov.length >= max) break;
        iov.push(buffer.subarray(offset, offset + length));
      }
      bytes += length;
    }
    return bytes;
  }

  /** A frame of `n` bytes (header included) sits in the held chains: give the chains it used to the driver. */
  private deliver(queue: SplitQueue, n: number): void {
    // How many chains the frame filled (one without MRG_RXBUF: n fits the first).
    let count = 0;
    for (let left = n; left > 0; count++) left -= this.rxChains[(this.rxStart + count) % NET_QUEUE_SIZE]!.writableBytes;
    const first = this.rxChains[this.rxStart]!;
    // The header is in the first chain (each holds at least 12 bytes). num_buffers before the used
    // element exposes the chain (§5.1.6.4: the chains used with MRG_RXBUF, else 1).
    this.numBuffers[0] = count & 0xff;
    this.numBuffers[1] = count >>> 8;
    first.writeBytes(this.numBuffers, NET_HDR_NUM_BUFFERS);
    // §5.1.6.4.1: without VIRTIO_NET_F_GUEST_CSUM the device sets flags to zero (the tap may say DATA_VALID).
    if (!this.guestCsum) first.writeBytes(this.zeroByte, NET_HDR_FLAGS);
    // Every chain of the frame becomes visible at once (§5.1.6.4.2; SplitQueue.stageUsed says why).
    let left = n;
    for (let c = 0; c < count; c++) {
      const chain = this.rxChains[this.rxStart]!;
      const used = Math.min(left, chain.writableBytes);
      queue.stageUsed(chain.head, used);
      left -= used;
      this.rxCapacity -= chain.writableBytes;
      this.rxStart = (this.rxStart + 1) % NET_QUEUE_SIZE;
      this.rxCount--;
    }
    queue.publishUsed();
    this.rxIovecsCurrent = false;
    this.metrics.rxFrames++;
    this.metrics.rxBytes += n - VIRTIO_NET_HDR_SIZE;
  }
}
