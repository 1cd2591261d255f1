/**
 * The host side of virtio-vsock in Firecracker's hybrid model: guest vsock streams become host
 * Unix socket connections (Firecracker's docs/vsock.md; the design follows its
 * `vsock/unix/muxer.rs` and `vsock/csm/connection.rs`, written anew for Node's event loop).
 *
 * - Host → guest: the VMM listens on `uds_path`. A host program connects and writes
 *   `CONNECT <port>\n`; the backend picks a fresh host port, asks the guest with REQUEST and, on
 *   RESPONSE, answers `OK <host port>\n`. From then on bytes flow both ways; an RST from the guest
 *   (or no answer within 2 s) closes the host socket.
 * - Guest → host: a REQUEST to the host (CID 2) for port P connects to `${uds_path}_${P}`;
 *   success answers RESPONSE, failure RST.
 *
 * Flow control (virtio 1.2 §5.10.6.3). Every packet we send carries our buf_alloc
 * (CONN_BUF_BYTES) and fwd_cnt (bytes of guest data the host socket has taken). Guest data is
 * copied out of its TX buffer (the guest reuses the buffer once we return it) and handed to the
 * socket; the copies Node still holds are at most CONN_BUF_BYTES, because a guest that sends past
 * its credit loses the connection (RST). When the guest's view of our free space falls below
 * CREDIT_UPDATE_THRESHOLD and the socket has taken more, a CREDIT_UPDATE goes out; a
 * CREDIT_REQUEST is answered with one.
 * The other way, a connection never sends the guest more than peer_buf_alloc - (rx_cnt -
 * peer_fwd_cnt). Host socket data waits in a per-connection list of chunks; reading from the
 * socket pauses once that list holds the guest's credit or HOST_PENDING_MAX_BYTES, whichever is
 * less, so pending bytes stay bounded (by that plus one socket read) and a guest that reads
 * nothing stalls the host writer through the kernel socket buffer: no busy loop, no unbounded
 * buffer. Out of credit, the connection sends one CREDIT_REQUEST per stall.
 *
 * Shutdown. The guest's SHUTDOWN SEND ends the host socket's write side (after queued data), its
 * SHUTDOWN RECEIVE stops reading the socket and drops what is pending. The host socket's EOF
 * becomes SHUTDOWN SEND once pending data reached the guest (SEND | RECEIVE if the socket closed
 * altogether). Once each direction is shut, the connection sends RST and is forgotten (the host
 * socket is ended and closed once its queued data is written, or after 2 s). Errors on the
 * socket, and packets that make no sense on a connection, reset it.
 *
 * The backend never touches guest memory except through the DescriptorChain the device gives it,
 * never blocks (Node `net` sockets on the main event loop), never throws into the device for a
 * socket event, and keeps nothing alive on its own: its server, sockets and timers are unref'd.
 */
import { lstatSync, statSync } from 'node:fs';
import { createServer, connect as connectSocket, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import { TsvmmError } from '../../util/errors.js';
import type { DescriptorChain } from './queue.js';
import {
  VIRTIO_VSOCK_OP_CREDIT_REQUEST,
  VIRTIO_VSOCK_OP_CREDIT_UPDATE,
  VIRTIO_VSOCK_OP_REQUEST,
  VIRTIO_VSOCK_OP_RESPONSE,
  VIRTIO_VSOCK_OP_RST,
  VIRTIO_VSOCK_OP_RW,
  VIRTIO_VSOCK_OP_SHUTDOWN,
  VIRTIO_VSOCK_SHUTDOWN_F_RECEIVE,
  VIRTIO_VSOCK_SHUTDOWN_F_SEND,
  VIRTIO_VSOCK_TYPE_STREAM,
  VSOCK_MAX_PAYLOAD_BYTES,
  copyFromChain,
  copyToChain,
  type VsockHeader,
} from './vsock-packet.js';

/** Our receive buffer per connection (buf_alloc): guest data Node may hold for a slow host reader. Firecracker's CONN_TX_BUF_SIZE. */
export const CONN_BUF_BYTES = 64 * 1024;
/** Send a CREDIT_UPDATE once the guest believes we have less free space than this. */
export const CREDIT_UPDATE_THRESHOLD = CONN_BUF_BYTES / 2;
/** Host socket bytes kept per connection while waiting for guest credit or RX buffers. */
export const HOST_PENDING_MAX_BYTES = 64 * 1024;
/** Connections (with host clients still sending CONNECT) at most; Firecracker's MAX_CONNECTIONS. */
export const MAX_CONNECTIONS = 1023;
/** A host-initiated REQUEST the guest does not answer is reset after this (Firecracker's CONN_REQUEST_TIMEOUT_MS). */
export const REQUEST_TIMEOUT_MS = 2000;
/** A host socket being closed in order is destroyed after this even if its queued data is not written. */
export const CLOSE_TIMEOUT_MS = 2000;
/** Longest `CONNECT <port>\n` line accepted (Firecracker reads at most 32 bytes). */
export const CONNECT_LINE_MAX_BYTES = 32;
/** RST packets for unknown connections waiting for an RX buffer; more are dropped (the guest times out). */
export const RST_QUEUE_MAX = 1024;
/** sockaddr_un.sun_path holds 108 bytes including the terminating NUL. */
const UNIX_PATH_MAX_BYTES = 107;
/** Host-initiated connections get host ports from [2^30, 2^31), round-robin, as in Firecracker. */
const LOCAL_PORT_BASE = 1 << 30;

/** The host socket could not be set up: one line saying why and what to do. */
export class VsockListenError extends TsvmmError {
  constructor(
    readonly path: string,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** What the backend did, for metrics and tests. */
export interface VsockBackendMetrics {
  /** Connections established, each way. */
  hostConnections: number;
  guestConnections: number;
  /** Guest REQUESTs refused (nothing listening at `${uds_path}_${port}`, or too many connections). */
  refused: number;
  /** RST packets queued for the guest. */
  resetsSent: number;
  /** Packets from the guest dropped as invalid for their connection's state. */
  dropped: number;
  /** Bytes moved guest → host and host → guest. */
  bytesToHost: number;
  bytesToGuest: number;
  creditUpdatesSent: number;
  creditRequestsSent: number;
}

// Control packets a connection owes the guest (bit set).
const OWE_REQUEST = 1;
const OWE_RESPONSE = 2;
const OWE_SHUTDOWN = 4;
const OWE_CREDIT_UPDATE = 8;

type ConnectionState =
  /** A host client that has not sent its CONNECT line yet. */
  | 'handshake'
  /** Host-initiated: REQUEST queued or sent, no RESPONSE yet. */
  | 'local-init'
  /** Guest-initiated: connecting to `${uds_path}_${port}`. */
  | 'connecting'
  | 'established';

/** One host socket and, once it has ports, the guest stream it carries. */
class Connection {
  state: ConnectionState;
  localPort = 0;
  peerPort = 0;
  /** Forgotten: every later socket event is ignored. */
  dead = false;
  /** In the backend's ready list. */
  queued = false;
  /** OWE_* bits. */
  owed = 0;
  /** The guest has seen this connection (REQUEST delivered or REQUEST received), so an RST means something to it. */
  guestKnows = false;
  timer: NodeJS.Timeout | undefined;
  line: Buffer | undefined;

  // host → guest
  readonly chunks: Buffer[] = [];
  chunkHead = 0;
  /** Bytes of chunks[chunkHead] already delivered. */
  chunkOffset = 0;
  pendingBytes = 0;
  reading = true;
  /** The host socket reached EOF. */
  hostEof = false;
  /** The host socket closed altogether (after EOF): it takes no more data either. */
  hostClosed = false;
  /** SHUTDOWN SEND has reached the guest. */
  shutdownSent = false;
  /** Bytes sent to the guest (rx_cnt), and the guest's latest buf_alloc / fwd_cnt. */
  rxCnt = 0;
  peerBufAlloc = 0;
  peerFwdCnt = 0;
  creditRequested = false;

  // guest → host
  /** Bytes received from the guest, and how many of them the socket has taken (our fwd_cnt). */
  txCnt = 0;
  fwdCnt = 0;
  /** fwd_cnt as last told to the guest. */
  fwdCntSent = 0;
  /** Lengths of the socket writes not yet completed, oldest at writeHead (writes complete in order). */
  readonly writeLengths: number[] = [];
  writeHead = 0;
  guestShutSend = false;
  guestShutReceive = false;

  readonly onData: (chunk: Buffer) => void;
  readonly onEnd: () => void;
  readonly onClose: (hadError: boolean) => void;
  readonly onError: (error: Error) => void;
  readonly onWritten: (error?: Error | null) => void;
  readonly onConnect: () => void;

  constructor(
    readonly socket: Socket,
    state: ConnectionState,
    backend: VsockUnixBackend,
  ) {
    this.state = state;
    this.onData = (chunk) => backend.guard(() => backend.hostData(this, chunk));
    this.onEnd = () => backend.guard(() => backend.hostEnd(this));
    this.onClose = (hadError) => backend.guard(() => backend.hostClose(this, hadError));
    this.onError = () => backend.guard(() => backend.kill(this));
    this.onWritten = (error) => backend.guard(() => backend.hostWritten(this, error));
    this.onConnect = () => backend.guard(() => backend.hostConnected(this));
  }

  /** How many bytes the guest can take now (§5.10.6.3: buf_alloc - (rx_cnt - fwd_cnt)). */
  credit(): number {
    const inFlight = (this.rxCnt - this.peerFwdCnt) >>> 0;
    return inFlight >= this.peerBufAlloc ? 0 : this.peerBufAlloc - inFlight;
  }

  /** Guest data Node still holds for the socket (rx side of our buffer). */
  unforwarded(): number {
    return (this.txCnt - this.fwdCnt) >>> 0;
  }
}

export interface VsockUnixBackendOptions {
  /** Unix socket to listen on for host-initiated connections; guest-initiated ones go to `${udsPath}_${port}`. */
  readonly udsPath: string;
  /** Called when packets for the guest became pending outside a device call (a socket event). */
  readonly onRxPending?: () => void;
  /** A listen error after the constructor returned (the constructor throws the ones it can see). */
  readonly onError?: (error: VsockListenError) => void;
}

/**
 * The Unix-socket multiplexer. The device hands it each valid guest packet (sendPacket) and asks it
 * for packets to deliver (hasPendingRx / receivePacket).
 */
export class VsockUnixBackend {
  readonly udsPath: string;
  readonly metrics: VsockBackendMetrics = {
    hostConnections: 0,
    guestConnections: 0,
    refused: 0,
    resetsSent: 0,
    dropped: 0,
    bytesToHost: 0,
    bytesToGuest: 0,
    creditUpdatesSent: 0,
    creditRequestsSent: 0,
  };
  /** Resolves once listening; rejects with a VsockListenError. */
  readonly listening: Promise<void>;
  /** Set by the device: packets for the guest became pending during a socket event. */
  onRxPending: () => void;
  /** Set by the device: a bug surfaced in a socket event handler (the connections were dropped). */
  onFault: (reason: string) => void = () => {};

  private readonly server: Server;
  /** Connections by local (host) port, then peer (guest) port. */
  private readonly byPorts = new Map<number, Map<number, Connection>>();
  /** Every live socket, handshaking ones included. */
  private readonly all = new Set<Connection>();
  /** Host ports given to host-initiated connections. */
  private readonly localPorts = new Set<number>();
  private lastLocalPort = LOCAL_PORT_BASE - 1;
  /** Connections with something for the guest, oldest first, from readyHead. */
  private ready: Connection[] = [];
  private readyHead = 0;
  /** RSTs for connections that no longer exist (or never did): local, peer, local, peer... from rstHead. */
  private rsts: number[] = [];
  private rstHead = 0;
  private closed = false;
  private closing: Promise<void> | undefined;

  constructor(options: VsockUnixBackendOptions) {
    const path = options.udsPath;
    this.udsPath = path;
    this.onRxPending = options.onRxPending ?? (() => {});
    checkListenPath(path);
    this.server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (socket) => this.guard(() => this.accepted(socket)));
    this.listening = new Promise<void>((resolve, reject) => {
      this.server.once('listening', resolve);
      this.server.once('error', (e: NodeJS.ErrnoException) => {
        const error = listenError(path, e);
        options.onError?.(error);
        reject(error);
      });
    });
    // Nobody has to await `listening`: an unobserved failure is reported through onError only.
    this.listening.catch(() => {});
    // Node binds synchronously here and reports errors on the next tick.
    this.server.listen(path);
    this.server.unref();
  }

  /** Live connections (host clients still handshaking included). */
  get connectionCount(): number {
    return this.all.size;
  }

  /** Host socket bytes read and not yet delivered to the guest, over all connections (bounded per connection). */
  get pendingBytes(): number {
    let total = 0;
    for (const conn of this.all) total += conn.pendingBytes;
    return total;
  }

  /** @internal Run a socket event handler; an unexpected exception costs the connection table, never the VMM. */
  guard(action: () => void): void {
    try {
      action();
    } catch (e) {
      this.dropAll();
      this.onFault(`vsock backend failed handling a host socket event: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  // ---- the device's side

  /**
   * A guest packet whose header the device checked (CIDs, length within the chain and at most
   * VSOCK_MAX_PAYLOAD_BYTES). The payload, if any, is h.len bytes `skip` bytes into the chain's
   * readable part.
   */
  sendPacket(h: VsockHeader, chain: DescriptorChain, skip: number): void {
    if (this.closed) return;
    const conn = this.lookup(h.dstPort, h.srcPort);
    // §5.10.6.4: only stream sockets here; anything else is answered with RST (as Linux and Firecracker do).
    if (h.type !== VIRTIO_VSOCK_TYPE_STREAM) {
      if (conn !== undefined) this.kill(conn);
      else this.rstUnknown(h);
      return;
    }
    if (conn === undefined) {
      if (h.op === VIRTIO_VSOCK_OP_REQUEST) this.guestRequest(h);
      else this.rstUnknown(h);
      return;
    }
    // Every packet carries the sender's credit (§5.10.6.3).
    conn.peerBufAlloc = h.bufAlloc;
    conn.peerFwdCnt = h.fwdCnt;
    if (conn.credit() > 0) conn.creditRequested = false;
    switch (h.op) {
      case VIRTIO_VSOCK_OP_RESPONSE:
        if (conn.state !== 'local-init') return this.drop();
        this.hostInitiatedEstablished(conn);
        break;
      case VIRTIO_VSOCK_OP_RW:
        if (conn.state !== 'established' || conn.guestShutSend || h.len === 0) return this.drop();
        this.guestData(conn, chain, skip, h.len);
        break;
      case VIRTIO_VSOCK_OP_SHUTDOWN:
        if (conn.state !== 'established') return this.kill(conn);
        this.guestShutdown(conn, h.flags);
        break;
      case VIRTIO_VSOCK_OP_CREDIT_UPDATE:
        break; // the credit was taken above
      case VIRTIO_VSOCK_OP_CREDIT_REQUEST:
        this.owe(conn, OWE_CREDIT_UPDATE);
        break;
      case VIRTIO_VSOCK_OP_RST:
        this.forget(conn, false);
        this.destroy(conn.socket);
        return;
      case VIRTIO_VSOCK_OP_REQUEST:
        return this.drop(); // a second REQUEST on a live connection: ignored, as in Firecracker
      default:
        // An operation §5.10.6 does not define: the stream cannot be trusted any more.
        return this.kill(conn);
    }
    if (conn.dead) return;
    // New credit may let pending data go, and reading resume.
    this.updateReading(conn);
    this.owe(conn, 0);
  }

  /** A guest packet the device found malformed (length beyond the chain or the limit): reset what it belongs to. */
  rejectPacket(h: VsockHeader): void {
    if (this.closed) return;
    const conn = this.lookup(h.dstPort, h.srcPort);
    if (conn !== undefined) this.kill(conn);
    else this.rstUnknown(h);
  }

  /** Whether receivePacket has a packet to give (exact: it prunes connections that have nothing). */
  hasPendingRx(): boolean {
    if (this.rstHead < this.rsts.length) return true;
    return this.nextReady() !== undefined;
  }

  /**
   * Produce the next packet for the guest: fill `h` and write up to `capacity` payload bytes into
   * the chain's writable part from `skip` on. Returns the payload length, or -1 when nothing fits
   * (a chain with no payload room while only data is pending).
   */
  receivePacket(h: VsockHeader, chain: DescriptorChain, skip: number, capacity: number): number {
    if (this.rstHead < this.rsts.length) {
      h.set(this.rsts[this.rstHead]!, this.rsts[this.rstHead + 1]!, VIRTIO_VSOCK_OP_RST, 0, 0, 0, 0);
      this.rstHead += 2;
      if (this.rstHead === this.rsts.length) {
        this.rsts.length = 0;
        this.rstHead = 0;
      }
      return 0;
    }
    const conn = this.nextReady();
    if (conn === undefined) return -1;
    const op = this.nextOp(conn, capacity);
    if (op === 0) return -1;
    let len = 0;
    let flags = 0;
    switch (op) {
      case VIRTIO_VSOCK_OP_REQUEST:
        conn.owed &= ~OWE_REQUEST;
        conn.guestKnows = true;
        conn.timer = setTimeout(() => this.guard(() => this.kill(conn)), REQUEST_TIMEOUT_MS).unref();
        break;
      case VIRTIO_VSOCK_OP_RESPONSE:
        conn.owed &= ~OWE_RESPONSE;
        break;
      case VIRTIO_VSOCK_OP_RW:
        len = this.takePending(conn, chain, skip, Math.min(capacity, conn.credit(), VSOCK_MAX_PAYLOAD_BYTES));
        conn.rxCnt = (conn.rxCnt + len) >>> 0;
        this.metrics.bytesToGuest += len;
        break;
      case VIRTIO_VSOCK_OP_CREDIT_REQUEST:
        conn.creditRequested = true;
        this.metrics.creditRequestsSent++;
        break;
      case VIRTIO_VSOCK_OP_SHUTDOWN:
        conn.owed &= ~OWE_SHUTDOWN;
        conn.shutdownSent = true;
        flags = VIRTIO_VSOCK_SHUTDOWN_F_SEND | (conn.hostClosed ? VIRTIO_VSOCK_SHUTDOWN_F_RECEIVE : 0);
        break;
      case VIRTIO_VSOCK_OP_CREDIT_UPDATE:
        this.metrics.creditUpdatesSent++;
        break;
    }
    // Any packet tells the guest our current fwd_cnt, so a separate update is no longer owed.
    conn.owed &= ~OWE_CREDIT_UPDATE;
    conn.fwdCntSent = conn.fwdCnt;
    h.set(conn.localPort, conn.peerPort, op, len, flags, CONN_BUF_BYTES, conn.fwdCnt);
    // Round robin: a connection with more to say goes to the back of the line.
    this.readyHead++;
    if (this.nextOp(conn, VSOCK_MAX_PAYLOAD_BYTES) !== 0) this.ready.push(conn);
    else conn.queued = false;
    this.compactReady();
    if (op === VIRTIO_VSOCK_OP_RW) this.updateReading(conn);
    if (op === VIRTIO_VSOCK_OP_SHUTDOWN) this.closeIfBothShut(conn);
    return len;
  }

  /**
   * Device reset (or the device failed): drop every connection the guest knew or was about to
   * learn of, closing their host sockets. Host clients still typing CONNECT stay.
   */
  dropAll(): void {
    for (const conn of this.all) {
      if (conn.state === 'handshake') continue;
      this.forget(conn, false);
      this.destroy(conn.socket);
    }
    this.byPorts.clear();
    this.localPorts.clear();
    this.ready = [];
    this.readyHead = 0;
    this.rsts = [];
    this.rstHead = 0;
  }

  /** Stop listening (which removes the socket file) and close every host socket. Idempotent. */
  close(): Promise<void> {
    if (this.closing !== undefined) return this.closing;
    this.closed = true;
    this.dropAll();
    for (const conn of [...this.all]) {
      this.forget(conn, false);
      this.destroy(conn.socket);
    }
    this.closing = new Promise<void>((resolve) => {
      if (!this.server.listening) return resolve();
      this.server.close(() => resolve());
    });
    return this.closing;
  }

  // ---- host-initiated connections

  private accepted(socket: Socket): void {
    socket.unref();
    if (this.closed || this.all.size >= MAX_CONNECTIONS) {
      socket.destroy();
      return;
    }
    const conn = new Connection(socket, 'handshake', this);
    this.watch(conn);
    socket.resume();
  }

  /** Bytes of the CONNECT line; anything after the newline is the first data for the guest. */
  private handshake(conn: Connection, chunk: Buffer): void {
    const line = conn.line === undefined ? chunk : Buffer.concat([conn.line, chunk]);
    const newline = line.indexOf(0x0a);
    if (newline < 0) {
      if (line.length >= CONNECT_LINE_MAX_BYTES) return this.refuseClient(conn);
      conn.line = line;
      return;
    }
    conn.line = undefined;
    const port = parseConnectLine(line.toString('latin1', 0, newline));
    if (port === undefined) return this.refuseClient(conn);
    conn.localPort = this.allocateLocalPort(port);
    conn.peerPort = port;
    conn.state = 'local-init';
    this.localPorts.add(conn.localPort);
    this.insert(conn);
    if (newline + 1 < line.length) this.pushPending(conn, line.subarray(newline + 1));
    this.owe(conn, OWE_REQUEST);
    this.updateReading(conn);
  }

  private refuseClient(conn: Connection): void {
    this.forget(conn, false);
    this.destroy(conn.socket);
  }

  /** The guest accepted a host-initiated connection: tell the host client its port. */
  private hostInitiatedEstablished(conn: Connection): void {
    clearTimeout(conn.timer);
    conn.timer = undefined;
    conn.state = 'established';
    this.metrics.hostConnections++;
    conn.writeLengths.push(0); // the OK line carries no guest data: it forwards nothing
    conn.socket.write(`OK ${conn.localPort}\n`, conn.onWritten);
    // Data the client sent along with CONNECT (or its EOF) can go now; sendPacket enqueues it.
  }

  private allocateLocalPort(peerPort: number): number {
    for (;;) {
      this.lastLocalPort = ((this.lastLocalPort + 1) & 0x7fff_ffff) | LOCAL_PORT_BASE;
      if (!this.localPorts.has(this.lastLocalPort) && this.lookup(this.lastLocalPort, peerPort) === undefined) return this.lastLocalPort;
    }
  }

  // ---- guest-initiated connections

  private guestRequest(h: VsockHeader): void {
    if (this.all.size >= MAX_CONNECTIONS) {
      this.metrics.refused++;
      return this.rstUnknown(h);
    }
    const socket = connectSocket({ path: `${this.udsPath}_${h.dstPort}`, allowHalfOpen: true });
    socket.unref();
    const conn = new Connection(socket, 'connecting', this);
    conn.localPort = h.dstPort;
    conn.peerPort = h.srcPort;
    conn.peerBufAlloc = h.bufAlloc;
    conn.peerFwdCnt = h.fwdCnt;
    conn.guestKnows = true;
    // Nothing is read until the guest has the RESPONSE and credit to take data.
    conn.reading = false;
    socket.pause();
    this.watch(conn);
    socket.once('connect', conn.onConnect);
    this.insert(conn);
  }

  /** @internal A host socket event (Connection's listeners call these). */
  hostConnected(conn: Connection): void {
    if (conn.dead) return;
    conn.state = 'established';
    this.metrics.guestConnections++;
    this.owe(conn, OWE_RESPONSE);
    this.updateReading(conn);
  }

  // ---- data and shutdown

  /** @internal A host socket event (Connection's listeners call these). */
  hostData(conn: Connection, chunk: Buffer): void {
    if (conn.dead) return;
    if (conn.state === 'handshake') return this.handshake(conn, chunk);
    if (conn.guestShutReceive) return; // the guest takes nothing more: discard
    this.pushPending(conn, chunk);
    this.updateReading(conn);
    if (conn.state === 'established') this.owe(conn, 0);
  }

  /** @internal A host socket event (Connection's listeners call these). */
  hostEnd(conn: Connection): void {
    if (conn.dead) return;
    if (conn.state === 'handshake') return this.refuseClient(conn);
    conn.hostEof = true;
    // A guest that stopped receiving needs no SHUTDOWN SEND: that direction is already done.
    if (!conn.guestShutReceive) this.owe(conn, OWE_SHUTDOWN);
    this.closeIfBothShut(conn);
  }

  /** @internal A host socket event (Connection's listeners call these). */
  hostClose(conn: Connection, hadError: boolean): void {
    if (conn.dead) return;
    // Closed without an error after EOF: both of the socket's directions are done. Pending data still goes to the guest.
    if (!hadError && conn.hostEof && conn.state === 'established') {
      conn.hostClosed = true;
      this.closeIfBothShut(conn);
      return;
    }
    this.kill(conn);
  }

  /** @internal A host socket event (Connection's listeners call these). */
  hostWritten(conn: Connection, error: Error | null | undefined): void {
    if (conn.dead) return;
    if (error !== null && error !== undefined) return this.kill(conn);
    const length = conn.writeLengths[conn.writeHead++] ?? 0;
    if (conn.writeHead === conn.writeLengths.length) {
      conn.writeLengths.length = 0;
      conn.writeHead = 0;
    } else if (conn.writeHead >= 1024 && conn.writeHead * 2 >= conn.writeLengths.length) {
      conn.writeLengths.splice(0, conn.writeHead);
      conn.writeHead = 0;
    }
    if (length === 0) return;
    conn.fwdCnt = (conn.fwdCnt + length) >>> 0;
    this.metrics.bytesToHost += length;
    // The guest's view of our free space: buf_alloc minus what it sent since the fwd_cnt it last heard.
    const guestSeesFree = CONN_BUF_BYTES - ((conn.txCnt - conn.fwdCntSent) >>> 0);
    if (guestSeesFree < CREDIT_UPDATE_THRESHOLD) this.owe(conn, OWE_CREDIT_UPDATE);
  }

  /** An RW packet: copy the payload out of guest memory (the guest reuses the buffer) and hand it to the socket. */
  private guestData(conn: Connection, chain: DescriptorChain, skip: number, len: number): void {
    // §5.10.6.3: the sender must not exceed the receiver's credit; one that does loses the connection.
    if (conn.unforwarded() + len > CONN_BUF_BYTES) return this.kill(conn);
    const data = Buffer.allocUnsafe(len);
    copyFromChain(chain, skip, data, 0, len);
    conn.txCnt = (conn.txCnt + len) >>> 0;
    conn.writeLengths.push(len);
    conn.socket.write(data, conn.onWritten);
  }

  private guestShutdown(conn: Connection, flags: number): void {
    if ((flags & VIRTIO_VSOCK_SHUTDOWN_F_RECEIVE) !== 0 && !conn.guestShutReceive) {
      conn.guestShutReceive = true;
      this.dropPending(conn);
      conn.owed &= ~OWE_SHUTDOWN;
    }
    if ((flags & VIRTIO_VSOCK_SHUTDOWN_F_SEND) !== 0 && !conn.guestShutSend) {
      conn.guestShutSend = true;
      conn.socket.end(); // after the data already queued
    }
    this.closeIfBothShut(conn);
  }

  /**
   * Once neither direction can carry data any more, reset and forget the connection (§5.10.6.5:
   * the peer then frees it; Linux waits for this RST after a full shutdown). The host socket is
   * ended in order: its queued data is still written.
   */
  private closeIfBothShut(conn: Connection): void {
    if (conn.dead) return;
    const toGuestDone = conn.shutdownSent || conn.guestShutReceive;
    const toHostDone = conn.guestShutSend || conn.hostClosed;
    if (!toGuestDone || !toHostDone) return;
    this.forget(conn, true);
    const socket = conn.socket;
    if (socket.destroyed) return;
    const timer = setTimeout(() => socket.destroy(), CLOSE_TIMEOUT_MS).unref();
    socket.once('close', () => clearTimeout(timer));
    socket.end(() => socket.destroy());
    socket.resume(); // whatever the host still sends is discarded
  }

  // ---- host → guest pending data

  private pushPending(conn: Connection, chunk: Buffer): void {
    conn.chunks.push(chunk);
    conn.pendingBytes += chunk.length;
  }

  private dropPending(conn: Connection): void {
    conn.chunks.length = 0;
    conn.chunkHead = 0;
    conn.chunkOffset = 0;
    conn.pendingBytes = 0;
  }

  /** Move up to `max` pending bytes into the chain. */
  private takePending(conn: Connection, chain: DescriptorChain, skip: number, max: number): number {
    let done = 0;
    while (done < max && conn.chunkHead < conn.chunks.length) {
      const chunk = conn.chunks[conn.chunkHead]!;
      const n = Math.min(chunk.length - conn.chunkOffset, max - done);
      const copied = copyToChain(chain, skip + done, chunk, conn.chunkOffset, n);
      done += copied;
      conn.chunkOffset += copied;
      if (conn.chunkOffset === chunk.length) {
        conn.chunks[conn.chunkHead++] = EMPTY;
        conn.chunkOffset = 0;
      }
      if (copied < n) break; // the chain is full
    }
    if (conn.chunkHead === conn.chunks.length) {
      conn.chunks.length = 0;
      conn.chunkHead = 0;
    } else if (conn.chunkHead >= 64) {
      conn.chunks.splice(0, conn.chunkHead);
      conn.chunkHead = 0;
    }
    conn.pendingBytes -= done;
    return done;
  }

  /** Read from the host socket only while the guest could take more than is pending (back-pressure). */
  private updateReading(conn: Connection): void {
    if (conn.dead || conn.state === 'handshake') return;
    const want =
      conn.state === 'established' && !conn.hostEof && !conn.guestShutReceive && conn.pendingBytes < Math.min(HOST_PENDING_MAX_BYTES, conn.credit());
    if (want === conn.reading) return;
    conn.reading = want;
    if (want) conn.socket.resume();
    else conn.socket.pause();
  }

  // ---- the ready list

  /** What the connection would send now (0: nothing), given `capacity` bytes of payload room. */
  private nextOp(conn: Connection, capacity: number): number {
    if (conn.dead) return 0;
    if ((conn.owed & OWE_REQUEST) !== 0) return VIRTIO_VSOCK_OP_REQUEST;
    if ((conn.owed & OWE_RESPONSE) !== 0) return VIRTIO_VSOCK_OP_RESPONSE;
    if (conn.state !== 'established') return 0;
    if (conn.pendingBytes > 0 && !conn.guestShutReceive) {
      if (conn.credit() > 0) {
        if (capacity > 0) return VIRTIO_VSOCK_OP_RW;
      } else if (!conn.creditRequested) return VIRTIO_VSOCK_OP_CREDIT_REQUEST;
    } else if ((conn.owed & OWE_SHUTDOWN) !== 0) return VIRTIO_VSOCK_OP_SHUTDOWN;
    if ((conn.owed & OWE_CREDIT_UPDATE) !== 0) return VIRTIO_VSOCK_OP_CREDIT_UPDATE;
    return 0;
  }

  /** The first ready connection that has something to send, dropping the ones that do not. */
  private nextReady(): Connection | undefined {
    while (this.readyHead < this.ready.length) {
      const conn = this.ready[this.readyHead]!;
      if (this.nextOp(conn, VSOCK_MAX_PAYLOAD_BYTES) !== 0) return conn;
      conn.queued = false;
      this.readyHead++;
    }
    this.compactReady();
    return undefined;
  }

  private compactReady(): void {
    if (this.readyHead === this.ready.length) {
      this.ready.length = 0;
      this.readyHead = 0;
    } else if (this.readyHead >= 256 && this.readyHead * 2 >= this.ready.length) {
      this.ready.splice(0, this.readyHead);
      this.readyHead = 0;
    }
  }

  /** Record that `conn` owes the guest `bits` (0: data may be pending) and tell the device if it now has something to send. */
  private owe(conn: Connection, bits: number): void {
    conn.owed |= bits;
    this.enqueue(conn);
  }

  private enqueue(conn: Connection): void {
    if (conn.dead || conn.queued || this.nextOp(conn, VSOCK_MAX_PAYLOAD_BYTES) === 0) return;
    conn.queued = true;
    this.ready.push(conn);
    this.onRxPending();
  }

  private rstUnknown(h: VsockHeader): void {
    // Never answer an RST with an RST (two peers would bounce them forever).
    if (h.op === VIRTIO_VSOCK_OP_RST) return;
    this.queueRst(h.dstPort, h.srcPort);
  }

  private queueRst(localPort: number, peerPort: number): void {
    if (this.rsts.length - this.rstHead >= 2 * RST_QUEUE_MAX) return;
    if (this.rstHead >= 2048 && this.rstHead * 2 >= this.rsts.length) {
      this.rsts.splice(0, this.rstHead);
      this.rstHead = 0;
    }
    this.rsts.push(localPort, peerPort);
    this.metrics.resetsSent++;
    this.onRxPending();
  }

  private drop(): void {
    this.metrics.dropped++;
  }

  // ---- connection table

  private lookup(localPort: number, peerPort: number): Connection | undefined {
    return this.byPorts.get(localPort)?.get(peerPort);
  }

  private insert(conn: Connection): void {
    let peers = this.byPorts.get(conn.localPort);
    if (peers === undefined) {
      peers = new Map();
      this.byPorts.set(conn.localPort, peers);
    }
    peers.set(conn.peerPort, conn);
  }

  private watch(conn: Connection): void {
    const socket = conn.socket;
    this.all.add(conn);
    socket.on('data', conn.onData);
    socket.on('end', conn.onEnd);
    socket.on('close', conn.onClose);
    socket.on('error', conn.onError);
  }

  /** @internal Reset a connection: RST to the guest if it knows of it, and close the host socket at once. */
  kill(conn: Connection): void {
    if (conn.dead) return;
    if (conn.state === 'connecting') this.metrics.refused++;
    this.forget(conn, conn.guestKnows);
    this.destroy(conn.socket);
  }

  /** Take the connection out of every table; with `rst`, queue an RST for the guest. The socket is the caller's. */
  private forget(conn: Connection, rst: boolean): void {
    if (conn.dead) return;
    conn.dead = true;
    clearTimeout(conn.timer);
    conn.timer = undefined;
    this.all.delete(conn);
    this.dropPending(conn);
    conn.line = undefined;
    if (conn.state !== 'handshake') {
      const peers = this.byPorts.get(conn.localPort);
      if (peers?.get(conn.peerPort) === conn) {
        peers.delete(conn.peerPort);
        if (peers.size === 0) this.byPorts.delete(conn.localPort);
      }
      this.localPorts.delete(conn.localPort);
      if (rst) this.queueRst(conn.localPort, conn.peerPort);
    }
  }

  private destroy(socket: Socket): void {
    // A destroyed socket may still emit 'error' for writes in flight; the listener stays to absorb it.
    socket.destroy();
  }
}

const EMPTY = Buffer.alloc(0);

/** `CONNECT <port>` (any case, surrounding blanks allowed) → the port, or undefined. */
export function parseConnectLine(line: string): number | undefined {
  const match = /^\s*connect\s+(\d{1,10})\s*$/i.exec(line);
  if (match === null) return undefined;
  const port = Number(match[1]);
  return port <= 0xffff_ffff ? port : undefined;
}

/** The errors listen() would report late, found before binding so the caller gets them synchronously. */
function checkListenPath(path: string): void {
  const bytes = Buffer.byteLength(path, 'utf8');
  if (bytes === 0 || bytes > UNIX_PATH_MAX_BYTES) {
    throw new VsockListenError(path, 'ENAMETOOLONG', `vsock: uds_path ${JSON.stringify(path)} is ${bytes} bytes long; a Unix socket path must be 1 to ${UNIX_PATH_MAX_BYTES} bytes`);
  }
  let exists = true;
  try {
    lstatSync(path);
  } catch {
    exists = false;
  }
  if (exists) {
    throw new VsockListenError(path, 'EEXIST', `vsock: uds_path ${path} already exists; remove it (a socket left by an earlier run?) or choose another path`);
  }
  const folder = dirname(path);
  let isFolder = false;
  try {
    isFolder = statSync(folder).isDirectory();
  } catch {
    throw new VsockListenError(path, 'ENOENT', `vsock: the folder ${folder} for uds_path ${path} does not exist; create it first`);
  }
  if (!isFolder) throw new VsockListenError(path, 'ENOTDIR', `vsock: ${folder} (the folder of uds_path ${path}) is not a folder`);
}

function listenError(path: string, e: NodeJS.ErrnoException): VsockListenError {
  const code = e.code ?? 'EIO';
  switch (code) {
    case 'EADDRINUSE':
      return new VsockListenError(path, code, `vsock: uds_path ${path} already exists; remove it (a socket left by an earlier run?) or choose another path`);
    case 'EACCES':
    case 'EPERM':
      return new VsockListenError(path, code, `vsock: no permission to create the socket ${path}`);
    case 'ENOENT':
      return new VsockListenError(path, code, `vsock: the folder ${dirname(path)} for uds_path ${path} does not exist; create it first`);
    default:
      return new VsockListenError(path, code, `vsock: cannot listen on ${path}: ${(e.message ?? code).split('\n')[0]}`);
  }
}
