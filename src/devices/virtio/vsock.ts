/**
 * virtio-vsock, the socket device (virtio 1.2 §5.10), with Firecracker's hybrid model on the host:
 * guest vsock streams are carried by host Unix sockets (vsock-backend.ts says how). Linux binds it
 * with vmw_vsock_virtio_transport; guest programs use AF_VSOCK with the host at CID 2.
 *
 * Three queues (§5.10.2): rx (packets for the guest, in device-writable buffers the driver
 * posts), tx (packets from the guest, device-readable) and event (device-writable buffers for
 * struct virtio_vsock_event, used for VIRTIO_VSOCK_EVENT_TRANSPORT_RESET). The configuration space
 * is one le64, guest_cid (§5.10.4). Only stream sockets (VIRTIO_VSOCK_TYPE_STREAM) are supported.
 *
 * This file moves packets between the queues and the backend and checks everything the guest
 * wrote before the backend sees it: the 44-byte header must sit in the chain's device-readable
 * bytes, dst_cid must be the host, src_cid the guest's CID, len at most VSOCK_MAX_PAYLOAD_BYTES
 * and within the chain. A packet failing those checks is dropped (a bad length also resets its
 * connection: the stream lost bytes); a chain in the wrong direction (device-writable bytes on tx,
 * device-readable ones on rx or event) breaks a MUST of §2.7.4 / §5.10.6 and fails the device
 * (DEVICE_NEEDS_RESET). An RX buffer too small for a header is returned unused (len 0), as
 * Firecracker does.
 *
 * Packets for the guest are written header and payload straight into the posted rx buffer (the
 * payload copied from the host socket's chunk, once). With nothing to write into, they wait in the
 * backend (bounded per connection) until the driver posts buffers and notifies the rx queue. Header
 * buffers are reused; the per-packet allocations are the guest data copies the host socket needs.
 *
 * Lifecycle: activate() starts delivery; reset() (the driver wrote 0 to device_status) drops every
 * connection and closes their host sockets; close() (the VMM exits) also stops listening and removes
 * the socket file. Socket events arrive on the main event loop outside any transport call, so they
 * are guarded here: an exception fails the device, it never reaches Node.
 */
import { VIRTIO_ID_VSOCK, featureBit, type VirtioActivation, type VirtioDevice } from './device.js';
import { DescriptorChain } from './queue.js';
import { VsockUnixBackend, type VsockBackendMetrics, type VsockListenError } from './vsock-backend.js';
import {
  VSOCK_HDR_DST_CID,
  VSOCK_HDR_SRC_CID,
  VSOCK_HEADER_BYTES,
  VSOCK_HOST_CID,
  VSOCK_MAX_PAYLOAD_BYTES,
  VsockHeader,
} from './vsock-packet.js';

export * from './vsock-packet.js';
export { VsockListenError, type VsockBackendMetrics } from './vsock-backend.js';

// Queues (§5.10.2).
export const VSOCK_RX_QUEUE = 0;
export const VSOCK_TX_QUEUE = 1;
export const VSOCK_EVENT_QUEUE = 2;
/** Queue size offered for each queue (Firecracker's VSOCK_QUEUE_SIZES). */
export const VSOCK_QUEUE_SIZE = 256;

/** Feature bit (§5.10.3): stream sockets are supported. Seqpacket (bit 1) is not offered. */
export const VIRTIO_VSOCK_F_STREAM = 0;

/** Configuration space: le64 guest_cid (§5.10.4). */
export const VSOCK_CONFIG_GUEST_CID = 0;
export const VSOCK_CONFIG_SIZE = 8;

/** struct virtio_vsock_event { le32 id; } and its only id (§5.10.6.7). */
export const VSOCK_EVENT_BYTES = 4;
export const VIRTIO_VSOCK_EVENT_TRANSPORT_RESET = 0;

/** Guest CIDs: 0-2 are reserved and 0xFFFFFFFF is VMADDR_CID_ANY (§5.10.4); tsvmm takes 32-bit ones, as Firecracker's API does. */
export const GUEST_CID_MIN = 3;
export const GUEST_CID_MAX = 0xffff_fffe;

export interface VirtioVsockOptions {
  /** The guest's context ID, GUEST_CID_MIN to GUEST_CID_MAX. */
  readonly guestCid: number;
  /** Firecracker's uds_path: the Unix socket the VMM listens on; guest-initiated connections go to `${udsPath}_${port}`. */
  readonly udsPath: string;
  /** Name in messages; default "virtio-vsock". */
  readonly name?: string;
  /** A listen error found after the constructor returned (EACCES, a race on the path): one line. */
  readonly onError?: (error: VsockListenError) => void;
}

/** What the device did, for metrics and tests. */
export interface VirtioVsockMetrics {
  /** Packets taken from the tx queue and handed to the backend. */
  txPackets: number;
  /** Packets written into rx buffers. */
  rxPackets: number;
  /** tx packets dropped: header shorter than 44 bytes, or len beyond the chain or VSOCK_MAX_PAYLOAD_BYTES. */
  malformed: number;
  /** tx packets dropped for a dst_cid other than the host or a src_cid other than the guest's. */
  wrongCid: number;
  /** rx buffers returned unused because they cannot hold a header. */
  rxBuffersTooSmall: number;
  /** TRANSPORT_RESET events delivered, and ones lost for want of an event buffer. */
  events: number;
  eventsLost: number;
}

export class VirtioVsock implements VirtioDevice {
  readonly deviceType = VIRTIO_ID_VSOCK;
  readonly name: string;
  readonly deviceFeatures = featureBit(VIRTIO_VSOCK_F_STREAM);
  readonly queueMaxSizes: readonly number[] = [VSOCK_QUEUE_SIZE, VSOCK_QUEUE_SIZE, VSOCK_QUEUE_SIZE];
  readonly configSize = VSOCK_CONFIG_SIZE;
  readonly guestCid: number;
  readonly metrics: VirtioVsockMetrics = { txPackets: 0, rxPackets: 0, malformed: 0, wrongCid: 0, rxBuffersTooSmall: 0, events: 0, eventsLost: 0 };

  private readonly backend: VsockUnixBackend;
  private readonly config = new Uint8Array(VSOCK_CONFIG_SIZE);
  private readonly chain = new DescriptorChain(16);
  // One header buffer per direction, reused for every packet.
  private readonly txBytes = new Uint8Array(VSOCK_HEADER_BYTES);
  private readonly txView = new DataView(this.txBytes.buffer);
  private readonly txHeader = new VsockHeader();
  private readonly rxBytes = new Uint8Array(VSOCK_HEADER_BYTES);
  private readonly rxView = new DataView(this.rxBytes.buffer);
  private readonly rxHeader = new VsockHeader();
  private readonly eventBytes = new Uint8Array(VSOCK_EVENT_BYTES);
  private activation: VirtioActivation | undefined;
  private failed = false;
  private closed = false;
  /** Inside processQueue or rx delivery: a backend request for rx delivery waits for the end of it. */
  private busy = false;
  private rxAgain = false;

  /**
   * Binds `udsPath` (synchronously; the existing-path, missing-folder and too-long errors throw a
   * VsockListenError here, later ones reject `listening` and go to onError).
   */
  constructor(options: VirtioVsockOptions) {
    const cid = options.guestCid;
    if (!Number.isInteger(cid) || cid < GUEST_CID_MIN || cid > GUEST_CID_MAX) {
      throw new RangeError(`vsock: guest CID ${cid} is outside ${GUEST_CID_MIN}..${GUEST_CID_MAX} (0-2 are reserved, 0xFFFFFFFF is VMADDR_CID_ANY)`);
    }
    this.guestCid = cid;
    this.name = options.name ?? 'virtio-vsock';
    const view = new DataView(this.config.buffer);
    view.setUint32(VSOCK_CONFIG_GUEST_CID, cid, true);
    view.setUint32(VSOCK_CONFIG_GUEST_CID + 4, 0, true);
    // RX headers always go from the host to this guest.
    this.rxView.setUint32(VSOCK_HDR_SRC_CID, VSOCK_HOST_CID, true);
    this.rxView.setUint32(VSOCK_HDR_DST_CID, cid, true);
    this.eventBytes.fill(0); // le32 id = VIRTIO_VSOCK_EVENT_TRANSPORT_RESET
    this.backend = new VsockUnixBackend({
      udsPath: options.udsPath,
      onRxPending: () => this.deliver(),
      ...(options.onError !== undefined ? { onError: options.onError } : {}),
    });
    this.backend.onFault = (reason) => {
      const activation = this.activation;
      if (activation !== undefined) this.fail(activation, reason);
    };
  }

  /** A device listening on `udsPath`, or a VsockListenError. */
  static async create(options: VirtioVsockOptions): Promise<VirtioVsock> {
    const device = new VirtioVsock(options);
    try {
      await device.listening;
    } catch (e) {
      await device.close();
      throw e;
    }
    return device;
  }

  /** Resolves once the host socket listens; rejects with a VsockListenError. */
  get listening(): Promise<void> {
    return this.backend.listening;
  }

  get udsPath(): string {
    return this.backend.udsPath;
  }

  /** Open host sockets (connections, and host clients that have not sent CONNECT yet). */
  get connectionCount(): number {
    return this.backend.connectionCount;
  }

  /** Host socket bytes waiting for guest credit or rx buffers, over all connections. */
  get pendingToGuestBytes(): number {
    return this.backend.pendingBytes;
  }

  get backendMetrics(): Readonly<VsockBackendMetrics> {
    return this.backend.metrics;
  }

  /**
   * Drop every connection and, while the driver is active, post VIRTIO_VSOCK_EVENT_TRANSPORT_RESET
   * (§5.10.6.7): the guest then closes its connections and reads guest_cid again. For a VMM that
   * restores or moves a guest. Returns whether the event was delivered (it needs an event buffer).
   */
  transportReset(): boolean {
    this.backend.dropAll();
    const activation = this.activation;
    if (activation === undefined || this.failed) return false;
    const queue = activation.queues[VSOCK_EVENT_QUEUE]!;
    const chain = this.chain;
    if (!queue.pop(chain)) {
      this.metrics.eventsLost++;
      return false;
    }
    if (chain.readableSegments > 0) {
      this.fail(activation, `event buffer ${chain.head} has device-readable bytes; the event queue takes device-writable buffers only`);
      return false;
    }
    const fits = chain.writableBytes >= VSOCK_EVENT_BYTES;
    if (fits) {
      chain.writeBytes(this.eventBytes);
      this.metrics.events++;
    } else {
      this.metrics.eventsLost++;
    }
    queue.addUsed(chain.head, fits ? VSOCK_EVENT_BYTES : 0);
    activation.notifyIfNeeded(VSOCK_EVENT_QUEUE);
    return fits;
  }

  /** The VMM is exiting: drop every connection, stop listening and remove the socket file. */
  close(): Promise<void> {
    this.closed = true;
    this.activation = undefined;
    return this.backend.close();
  }

  // ---- VirtioDevice

  readConfig(offset: number, data: Uint8Array): void {
    for (let i = 0; i < data.length; i++) data[i] = this.config[offset + i] ?? 0;
  }

  /** guest_cid is read-only for the driver (§5.10.4). */
  writeConfig(_offset: number, _data: Uint8Array): void {}

  activate(activation: VirtioActivation): void {
    if (this.closed) {
      activation.fail('the vsock device has been closed');
      return;
    }
    this.activation = activation;
    this.failed = false;
    // Host clients may have asked for connections before the driver was ready.
    this.deliver();
  }

  reset(): void {
    this.activation = undefined;
    this.failed = false;
    this.backend.dropAll();
  }

  processQueue(index: number): void {
    const activation = this.activation;
    if (activation === undefined || this.failed) return;
    switch (index) {
      case VSOCK_TX_QUEUE:
        this.busy = true;
        try {
          this.processTx(activation);
        } finally {
          this.busy = false;
        }
        // The backend may have answers (RESPONSE, RST, credit) for what the guest sent.
        this.deliver();
        break;
      case VSOCK_RX_QUEUE:
        this.deliver();
        break;
      default:
        // The event queue: its buffers wait for transportReset().
        break;
    }
  }

  // ---- tx: guest → host

  private processTx(activation: VirtioActivation): void {
    const queue = activation.queues[VSOCK_TX_QUEUE]!;
    const chain = this.chain;
    for (;;) {
      queue.disableNotification();
      while (queue.pop(chain)) {
        if (!this.transmit(activation, chain)) return;
        queue.addUsed(chain.head, 0);
      }
      if (!queue.enableNotification()) break;
    }
    if (queue.failure !== undefined) this.fail(activation, queue.failure);
    else activation.notifyIfNeeded(VSOCK_TX_QUEUE);
  }

  /** Check one tx packet and hand it to the backend. Returns false when the device failed. */
  private transmit(activation: VirtioActivation, chain: DescriptorChain): boolean {
    if (chain.writableSegments > 0) {
      this.fail(activation, `tx packet ${chain.head} has device-writable buffers; the tx queue takes device-readable buffers only`);
      return false;
    }
    if (chain.readableBytes < VSOCK_HEADER_BYTES) {
      this.metrics.malformed++;
      return true;
    }
    // Copied out first, so the guest cannot change the header between check and use.
    chain.readBytes(this.txBytes);
    const v = this.txView;
    const h = this.txHeader;
    h.decode(v);
    if (v.getUint32(VSOCK_HDR_DST_CID, true) !== VSOCK_HOST_CID || v.getUint32(VSOCK_HDR_DST_CID + 4, true) !== 0 ||
        v.getUint32(VSOCK_HDR_SRC_CID, true) !== this.guestCid || v.getUint32(VSOCK_HDR_SRC_CID + 4, true) !== 0) {
      // Not ours to route (Firecracker drops these too); an RST would carry a made-up address.
      this.metrics.wrongCid++;
      return true;
    }
    if (h.len > VSOCK_MAX_PAYLOAD_BYTES || h.len > chain.readableBytes - VSOCK_HEADER_BYTES) {
      this.metrics.malformed++;
      this.backend.rejectPacket(h);
      return true;
    }
    this.metrics.txPackets++;
    this.backend.sendPacket(h, chain, VSOCK_HEADER_BYTES);
    return true;
  }

  // ---- rx: host → guest

  /** Write pending packets into rx buffers; re-entered calls (from backend callbacks) fold into the running one. */
  private deliver(): void {
    const activation = this.activation;
    if (activation === undefined || this.failed) return;
    if (this.busy) {
      this.rxAgain = true;
      return;
    }
    this.busy = true;
    try {
      do {
        this.rxAgain = false;
        this.fillRx(activation);
      } while (this.rxAgain && this.activation === activation && !this.failed);
    } catch (e) {
      // Reached from socket events, outside the transport's guard: never let it escape.
      this.fail(activation, `failed delivering packets: ${e instanceof Error ? e.message : String(e)}`);
    } finally {
      this.busy = false;
    }
  }

  private fillRx(activation: VirtioActivation): void {
    const queue = activation.queues[VSOCK_RX_QUEUE]!;
    const chain = this.chain;
    const backend = this.backend;
    for (;;) {
      while (backend.hasPendingRx() && queue.pop(chain)) {
        if (chain.readableSegments > 0) {
          this.fail(activation, `rx buffer ${chain.head} has device-readable bytes; the rx queue takes device-writable buffers only`);
          return;
        }
        const room = chain.writableBytes - VSOCK_HEADER_BYTES;
        if (room < 0) {
          this.metrics.rxBuffersTooSmall++;
          queue.addUsed(chain.head, 0);
          continue;
        }
        const len = backend.receivePacket(this.rxHeader, chain, VSOCK_HEADER_BYTES, Math.min(room, VSOCK_MAX_PAYLOAD_BYTES));
        if (len < 0) {
          this.metrics.rxBuffersTooSmall++;
          queue.addUsed(chain.head, 0);
          continue;
        }
        this.rxHeader.encode(this.rxView);
        chain.writeBytes(this.rxBytes);
        queue.addUsed(chain.head, VSOCK_HEADER_BYTES + len);
        this.metrics.rxPackets++;
      }
      // Out of buffers with packets waiting: ask for a kick when the driver posts more (§2.7.10),
      // and go on if some arrived meanwhile.
      if (!backend.hasPendingRx() || !queue.enableNotification()) break;
    }
    if (queue.failure !== undefined) this.fail(activation, queue.failure);
    else activation.notifyIfNeeded(VSOCK_RX_QUEUE);
  }

  /** The device cannot go on: connections are dropped and the transport sets DEVICE_NEEDS_RESET. */
  private fail(activation: VirtioActivation, reason: string): void {
    if (this.failed) return;
    this.failed = true;
    this.backend.dropAll();
    activation.fail(reason);
  }
}
