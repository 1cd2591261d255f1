/**
 * virtio-vsock driven by the guest-side test driver over PCI, with real Unix sockets in a
 * temporary folder: host-initiated (CONNECT) and guest-initiated connections, data both ways,
 * credit flow control both ways, shutdown and RST from each side, reset, close, listen errors,
 * the transport-reset event and hostile packets.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test as nodeTest } from 'node:test';
import { VIRTIO_ID_VSOCK } from '../../src/devices/virtio/device.js';
import { CONN_BUF_BYTES, HOST_PENDING_MAX_BYTES, VsockListenError } from '../../src/devices/virtio/vsock-backend.js';
import { VIRTIO_VSOCK_F_STREAM, VirtioVsock } from '../../src/devices/virtio/vsock.js';
import { TsvmmError } from '../../src/util/errors.js';
import {
  COMMON,
  F_EVENT_IDX,
  F_INDIRECT_DESC,
  F_VERSION_1,
  GuestVsock,
  STATUS,
  TestMachine,
  VSOCK_HDR_BYTES,
  VSOCK_HOST_CID,
  VSOCK_OP,
  VSOCK_SHUTDOWN,
  VirtioPciDriver,
  raceDevice,
  turnUntil,
  writeVsockHeader,
  type DriverQueue,
  type VsockPacket,
} from '../support/virtio-driver.js';
import { featureBit } from '../../src/devices/virtio/device.js';

const bit = featureBit;
const FEATURES = bit(F_VERSION_1) | bit(F_EVENT_IDX) | bit(F_INDIRECT_DESC) | bit(VIRTIO_VSOCK_F_STREAM);
const CID = 3;
const GUEST_BUF = 256 * 1024;

const scratch = mkdtempSync(join(tmpdir(), 'tsvmm-vsock-'));
after(() => rmSync(scratch, { recursive: true, force: true }));
let socketCount = 0;
/** Host listeners still open, closed after all tests even if one failed half-way. */
const openListeners = new Set<Listener>();
after(async () => {
  for (const l of openListeners) {
    for (const c of l.accepted) c.socket.destroy();
    l.server.close();
  }
});
const freshPath = () => join(scratch, `v${socketCount++}.sock`);

interface Rig {
  machine: TestMachine;
  device: VirtioVsock;
  driver: VirtioPciDriver;
  queues: DriverQueue[];
  guest: GuestVsock;
  uds: string;
  errors: string[];
  /** Every packet received so far, in order. */
  inbox: VsockPacket[];
}

async function rig(options: { rxBuffers?: number; rxBufferBytes?: number; rxSplit?: boolean; features?: bigint } = {}): Promise<Rig> {
  const uds = freshPath();
  const device = await VirtioVsock.create({ guestCid: CID, udsPath: uds });
  const machine = new TestMachine({ regions: [[0, 8 << 20]] });
  const errors: string[] = [];
  const { slot } = machine.addVirtio(device, { onError: (reason) => errors.push(reason) });
  const driver = new VirtioPciDriver(machine, slot);
  const queues = driver.bringUp(options.features ?? FEATURES);
  const guest = new GuestVsock(machine, queues[0]!, queues[1]!, { cid: CID, ...options });
  queues[0]!.kick();
  return { machine, device, driver, queues, guest, uds, errors, inbox: [] };
}

/** Every test is bounded: a hang fails it instead of the whole file. */
const test = (name: string, fn: () => Promise<void>) => nodeTest(name, { timeout: 20_000 }, fn);

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Receive packets into the inbox until `pick` finds one (which is removed from the inbox and returned). */
async function expectPacket(r: Rig, pick: (p: VsockPacket) => boolean, what: string, timeoutMs = 3000): Promise<VsockPacket> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    r.inbox.push(...r.guest.receive());
    const i = r.inbox.findIndex(pick);
    if (i >= 0) return r.inbox.splice(i, 1)[0]!;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}; inbox: ${JSON.stringify(r.inbox.map(brief))}`);
    await sleep(2);
  }
}

/** Receive for `ms` and assert nothing matching `pick` arrived. */
async function expectNoPacket(r: Rig, pick: (p: VsockPacket) => boolean, what: string, ms = 100): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    r.inbox.push(...r.guest.receive());
    const p = r.inbox.find(pick);
    if (p !== undefined) assert.fail(`unexpected ${what}: ${JSON.stringify(brief(p))}`);
    await sleep(2);
  }
}

function brief(p: VsockPacket) {
  return { op: p.op, src: p.srcPort, dst: p.dstPort, len: p.len, flags: p.flags, bufAlloc: p.bufAlloc, fwdCnt: p.fwdCnt };
}

async function until(cond: () => boolean, what: string, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

/** A host client socket that collects what it reads. */
interface Client {
  socket: Socket;
  data: () => Buffer;
  closed: () => boolean;
  ended: () => boolean;
  /** The VMM side went away: EOF or close (a half-open-capable socket only sees EOF). */
  gone: () => boolean;
}

function watchSocket(socket: Socket): Client {
  const chunks: Buffer[] = [];
  let closed = false;
  let ended = false;
  socket.on('data', (c: Buffer) => chunks.push(c));
  socket.on('end', () => (ended = true));
  socket.on('close', () => (closed = true));
  socket.on('error', () => {});
  return { socket, data: () => Buffer.concat(chunks), closed: () => closed, ended: () => ended, gone: () => ended || closed };
}

function hostClient(uds: string, line?: string): Client {
  const socket = createConnection({ path: uds, allowHalfOpen: true });
  if (line !== undefined) socket.write(line);
  return watchSocket(socket);
}

/** A listener at `${uds}_${port}` collecting its accepted sockets. */
interface Listener {
  server: Server;
  accepted: Client[];
}

async function hostListener(uds: string, port: number): Promise<Listener> {
  const accepted: Client[] = [];
  const server = createServer({ allowHalfOpen: true }, (s) => accepted.push(watchSocket(s)));
  await new Promise<void>((resolve) => server.listen(`${uds}_${port}`, resolve));
  const listener = { server, accepted };
  openListeners.add(listener);
  return listener;
}

/** Host CONNECT → guest REQUEST → guest RESPONSE → client OK. Returns the client and the host port. */
async function hostConnect(r: Rig, guestPort: number, bufAlloc = GUEST_BUF): Promise<{ client: Client; hostPort: number }> {
  const client = hostClient(r.uds, `CONNECT ${guestPort}\n`);
  const request = await expectPacket(r, (p) => p.op === VSOCK_OP.REQUEST && p.dstPort === guestPort, 'REQUEST');
  r.guest.send({ op: VSOCK_OP.RESPONSE, srcPort: guestPort, dstPort: request.srcPort, bufAlloc });
  await until(() => client.data().toString().includes('\n'), 'the OK line');
  assert.equal(client.data().toString(), `OK ${request.srcPort}\n`);
  return { client, hostPort: request.srcPort };
}

/** Guest REQUEST to host port `port` with a listener there; returns the accepted host socket. */
async function guestConnect(r: Rig, port: number, guestPort: number, bufAlloc = GUEST_BUF): Promise<{ peer: Client; server: Listener }> {
  const server = await hostListener(r.uds, port);
  const accepted = server.accepted;
  r.guest.send({ op: VSOCK_OP.REQUEST, srcPort: guestPort, dstPort: port, bufAlloc });
  const response = await expectPacket(r, (p) => p.dstPort === guestPort, 'the answer to REQUEST');
  assert.equal(response.op, VSOCK_OP.RESPONSE, `answer was ${JSON.stringify(brief(response))}`);
  await until(() => accepted.length === 1, 'the host accept');
  return { peer: accepted[0]!, server };
}

async function teardown(r: Rig, ...listeners: Listener[]): Promise<void> {
  await r.device.close();
  for (const l of listeners) {
    openListeners.delete(l);
    for (const c of l.accepted) c.socket.destroy();
    await new Promise<void>((resolve) => l.server.close(() => resolve()));
  }
}

test('identity: device id 19, three queues, F_STREAM offered, guest_cid in the configuration space', async () => {
  const uds = freshPath();
  const device = await VirtioVsock.create({ guestCid: 0x1234_5678, udsPath: uds });
  const machine = new TestMachine();
  const { slot } = machine.addVirtio(device);
  const driver = new VirtioPciDriver(machine, slot);
  assert.equal(driver.probe().deviceId, 0x1040 + VIRTIO_ID_VSOCK);
  assert.ok((driver.deviceFeatures() & bit(VIRTIO_VSOCK_F_STREAM)) !== 0n);
  driver.bringUp(FEATURES);
  assert.equal(driver.read(COMMON.NUM_QUEUES, 2), 3);
  const cfg = driver.barAddress + driver.deviceCfg!.offset;
  assert.equal(machine.mmioRead(cfg, 4), 0x1234_5678);
  assert.equal(machine.mmioRead(cfg + 4, 4), 0);
  assert.equal(machine.mmioRead(cfg, 8), 0x1234_5678);
  assert.ok(existsSync(uds), 'listening on uds_path');
  await device.close();
  assert.ok(!existsSync(uds), 'close() removes the socket file');
});

test('host CONNECT: the guest sees REQUEST, answers RESPONSE, the client gets OK <port>; bytes flow both ways', async () => {
  const r = await rig();
  const client = hostClient(r.uds, 'connect 5000\n');
  const request = await expectPacket(r, (p) => p.op === VSOCK_OP.REQUEST, 'REQUEST');
  assert.equal(request.srcCid, VSOCK_HOST_CID);
  assert.equal(request.dstCid, CID);
  assert.equal(request.dstPort, 5000);
  assert.ok(request.srcPort >= 2 ** 30 && request.srcPort < 2 ** 31, `host port ${request.srcPort} in [2^30, 2^31)`);
  assert.equal(request.type, 1);
  assert.equal(request.bufAlloc, CONN_BUF_BYTES);
  assert.equal(client.data().length, 0, 'no OK before the guest answers');
  r.guest.send({ op: VSOCK_OP.RESPONSE, srcPort: 5000, dstPort: request.srcPort, bufAlloc: GUEST_BUF });
  await until(() => client.data().length > 0, 'OK');
  assert.equal(client.data().toString(), `OK ${request.srcPort}\n`);

  const toGuest = randomBytes(3000);
  client.socket.write(toGuest);
  const rw = await expectPacket(r, (p) => p.op === VSOCK_OP.RW, 'RW');
  assert.equal(rw.srcPort, request.srcPort);
  assert.equal(rw.dstPort, 5000);
  assert.deepEqual(Buffer.from(rw.payload), toGuest);

  const toHost = randomBytes(5000);
  r.guest.send({ op: VSOCK_OP.RW, srcPort: 5000, dstPort: request.srcPort, payload: toHost, bufAlloc: GUEST_BUF, fwdCnt: toGuest.length });
  const ok = `OK ${request.srcPort}\n`.length;
  await until(() => client.data().length === ok + toHost.length, 'guest data at the host');
  assert.deepEqual(client.data().subarray(ok), toHost);
  assert.equal(r.device.backendMetrics.hostConnections, 1);
  assert.ok(r.machine.guardsIntact());
  assert.deepEqual(r.errors, []);
  await teardown(r);
  await until(() => client.gone(), 'the client closed by close()');
});

test('bytes a client sends right behind CONNECT reach the guest after RESPONSE, in two-descriptor rx buffers', async () => {
  const r = await rig({ rxSplit: true });
  const client = hostClient(r.uds, 'CONNECT 7\nearly bytes');
  const request = await expectPacket(r, (p) => p.op === VSOCK_OP.REQUEST, 'REQUEST');
  await expectNoPacket(r, (p) => p.op === VSOCK_OP.RW, 'data before RESPONSE', 50);
  r.guest.send({ op: VSOCK_OP.RESPONSE, srcPort: 7, dstPort: request.srcPort, bufAlloc: GUEST_BUF });
  const rw = await expectPacket(r, (p) => p.op === VSOCK_OP.RW, 'RW');
  assert.equal(Buffer.from(rw.payload).toString(), 'early bytes');
  await until(() => client.data().toString() === `OK ${request.srcPort}\n`, 'OK');
  await teardown(r);
});

test('host → guest: a transfer larger than the guest credit honours it and completes through CREDIT_UPDATEs', async () => {
  const r = await rig({ rxBuffers: 32 });
  const credit = 16 * 1024;
  const { client, hostPort } = await hostConnect(r, 80, credit);
  const total = 300 * 1024;
  const sent = randomBytes(total);
  client.socket.write(sent);
  const received: Buffer[] = [];
  let bytes = 0;
  let fwd = 0;
  let creditRequests = 0;
  const deadline = Date.now() + 10_000;
  while (bytes < total) {
    assert.ok(Date.now() < deadline, `stalled at ${bytes} of ${total} bytes`);
    const packets = r.guest.receive();
    for (const p of packets) {
      if (p.op === VSOCK_OP.CREDIT_REQUEST) {
        creditRequests++;
        continue;
      }
      assert.equal(p.op, VSOCK_OP.RW, `unexpected ${JSON.stringify(brief(p))}`);
      received.push(Buffer.from(p.payload));
      bytes += p.len;
      assert.ok(bytes - fwd <= credit, `the device sent ${bytes - fwd} bytes on ${credit} of credit`);
    }
    if (packets.length === 0) {
      // Nothing more comes while the credit is used up: make sure, then "read" it all and say so.
      if (bytes - fwd === credit) {
        await expectNoPacket(r, (p) => p.op === VSOCK_OP.RW, 'data beyond the credit', 20);
        for (const p of r.inbox.splice(0)) if (p.op === VSOCK_OP.CREDIT_REQUEST) creditRequests++;
      }
      if (bytes > fwd) {
        fwd = bytes;
        r.guest.send({ op: VSOCK_OP.CREDIT_UPDATE, srcPort: 80, dstPort: hostPort, bufAlloc: credit, fwdCnt: fwd });
      }
      await sleep(1);
    }
  }
  assert.deepEqual(Buffer.concat(received), sent);
  assert.ok(creditRequests > 0, 'a stalled connection asks for credit');
  assert.ok(r.machine.guardsIntact());
  await teardown(r);
});

test('back-pressure: a guest that grants no more credit stalls the host writer; pending bytes stay bounded', async () => {
  const r = await rig();
  const credit = 16 * 1024;
  const { client, hostPort } = await hostConnect(r, 81, credit);
  const sent = randomBytes(4 << 20);
  client.socket.write(sent);
  let got = 0;
  const deadline = Date.now() + 300;
  while (Date.now() < deadline) {
    for (const p of r.guest.receive()) if (p.op === VSOCK_OP.RW) got += p.len;
    await sleep(5);
  }
  assert.equal(got, credit, 'exactly the credit, no more');
  assert.ok(r.device.pendingToGuestBytes <= HOST_PENDING_MAX_BYTES + 64 * 1024, `${r.device.pendingToGuestBytes} bytes pending`);
  assert.ok(client.socket.writableLength > 0, 'the host writer is blocked');
  // Credit for everything: the rest flows.
  r.guest.send({ op: VSOCK_OP.CREDIT_UPDATE, srcPort: 81, dstPort: hostPort, bufAlloc: sent.length, fwdCnt: 0 });
  const chunks: Buffer[] = [];
  let total = 0;
  const end = Date.now() + 10_000;
  for (const p of r.inbox.splice(0)) if (p.op === VSOCK_OP.RW) chunks.push(Buffer.from(p.payload));
  while (total + credit < sent.length) {
    assert.ok(Date.now() < end, `stalled at ${total}`);
    for (const p of r.guest.receive()) {
      if (p.op !== VSOCK_OP.RW) continue;
      chunks.push(Buffer.from(p.payload));
      total += p.len;
    }
    await sleep(1);
  }
  assert.deepEqual(Buffer.concat(chunks), sent.subarray(credit));
  await teardown(r);
});

test('guest → host: a transfer larger than our buf_alloc completes as CREDIT_UPDATEs arrive; overrunning the credit resets', async () => {
  const r = await rig();
  const { peer, server } = await guestConnect(r, 1024, 4000);
  const total = 512 * 1024;
  const data = randomBytes(total);
  let sent = 0;
  let peerBuf = CONN_BUF_BYTES;
  let peerFwd = 0;
  let updates = 0;
  const deadline = Date.now() + 10_000;
  while (sent < total) {
    assert.ok(Date.now() < deadline, `stalled at ${sent} of ${total}`);
    for (const p of r.guest.receive()) {
      assert.equal(p.op, VSOCK_OP.CREDIT_UPDATE, `unexpected ${JSON.stringify(brief(p))}`);
      updates++;
      peerBuf = p.bufAlloc;
      peerFwd = p.fwdCnt;
    }
    const credit = peerBuf - (sent - peerFwd);
    if (credit <= 0) {
      await sleep(1);
      continue;
    }
    const n = Math.min(credit, 4096, total - sent);
    r.guest.send({ op: VSOCK_OP.RW, srcPort: 4000, dstPort: 1024, payload: data.subarray(sent, sent + n), bufAlloc: GUEST_BUF });
    sent += n;
  }
  await until(() => peer.data().length === total, 'every byte at the host');
  assert.deepEqual(peer.data(), data);
  assert.ok(updates > 0, 'the device sent CREDIT_UPDATEs');

  // A second connection that ignores the credit: 2 x 64 KiB in one kick, before the socket took any of it.
  const server2 = await hostListener(r.uds, 1025);
  const accepted = server2.accepted;
  r.guest.send({ op: VSOCK_OP.REQUEST, srcPort: 4001, dstPort: 1025, bufAlloc: GUEST_BUF });
  await expectPacket(r, (p) => p.op === VSOCK_OP.RESPONSE && p.dstPort === 4001, 'RESPONSE');
  const big = randomBytes(CONN_BUF_BYTES);
  r.guest.send({ op: VSOCK_OP.RW, srcPort: 4001, dstPort: 1025, payload: big }, { kick: false });
  r.guest.send({ op: VSOCK_OP.RW, srcPort: 4001, dstPort: 1025, payload: big });
  await expectPacket(r, (p) => p.op === VSOCK_OP.RST && p.dstPort === 4001, 'RST for the overrun');
  await until(() => accepted.length === 1 && accepted[0]!.gone(), 'the overrun connection closed on the host');
  await teardown(r, server, server2);
});

test('guest connect: to ${uds}_${port} with a listener gets RESPONSE and carries data; without one, RST', async () => {
  const r = await rig();
  const { peer, server } = await guestConnect(r, 52, 1111);
  peer.socket.write('from host');
  const rw = await expectPacket(r, (p) => p.op === VSOCK_OP.RW, 'RW');
  assert.equal(rw.srcPort, 52);
  assert.equal(rw.dstPort, 1111);
  assert.equal(Buffer.from(rw.payload).toString(), 'from host');
  r.guest.send({ op: VSOCK_OP.RW, srcPort: 1111, dstPort: 52, payload: new TextEncoder().encode('from guest'), bufAlloc: GUEST_BUF });
  await until(() => peer.data().toString() === 'from guest', 'guest data at the host');

  r.guest.send({ op: VSOCK_OP.REQUEST, srcPort: 2222, dstPort: 53, bufAlloc: GUEST_BUF });
  const rst = await expectPacket(r, (p) => p.dstPort === 2222, 'the answer to a REQUEST with no listener');
  assert.equal(rst.op, VSOCK_OP.RST);
  assert.equal(rst.srcPort, 53);
  assert.equal(r.device.backendMetrics.refused, 1);
  assert.deepEqual(r.errors, []);
  await teardown(r, server);
});

test('guest shutdown: SEND ends the host socket; the host end comes back as SHUTDOWN SEND, then RST closes it', async () => {
  const r = await rig();
  const { peer, server } = await guestConnect(r, 60, 3000);
  r.guest.send({ op: VSOCK_OP.RW, srcPort: 3000, dstPort: 60, payload: new TextEncoder().encode('last words') });
  r.guest.send({ op: VSOCK_OP.SHUTDOWN, srcPort: 3000, dstPort: 60, flags: VSOCK_SHUTDOWN.SEND });
  await until(() => peer.ended(), 'EOF at the host');
  assert.equal(peer.data().toString(), 'last words');
  assert.ok(!peer.closed(), 'half-closed: the host may still send');
  peer.socket.end('reply');
  const rw = await expectPacket(r, (p) => p.op === VSOCK_OP.RW, 'the reply');
  assert.equal(Buffer.from(rw.payload).toString(), 'reply');
  const shutdown = await expectPacket(r, (p) => p.op === VSOCK_OP.SHUTDOWN, 'SHUTDOWN');
  assert.equal(shutdown.flags & VSOCK_SHUTDOWN.SEND, VSOCK_SHUTDOWN.SEND);
  await expectPacket(r, (p) => p.op === VSOCK_OP.RST && p.dstPort === 3000, 'RST once both directions are shut');
  await until(() => peer.closed(), 'the host socket closed');
  await until(() => r.device.connectionCount === 0, 'the connection forgotten');
  await teardown(r, server);
});

test('host shutdown: EOF becomes SHUTDOWN SEND after the data; the guest still sends; its full shutdown gets RST', async () => {
  const r = await rig();
  const { client, hostPort } = await hostConnect(r, 90);
  client.socket.end('bye');
  const rw = await expectPacket(r, (p) => p.op === VSOCK_OP.RW, 'RW');
  assert.equal(Buffer.from(rw.payload).toString(), 'bye');
  const shutdown = await expectPacket(r, (p) => p.op === VSOCK_OP.SHUTDOWN, 'SHUTDOWN');
  assert.equal(shutdown.flags, VSOCK_SHUTDOWN.SEND);
  r.guest.send({ op: VSOCK_OP.RW, srcPort: 90, dstPort: hostPort, payload: new TextEncoder().encode('still here') });
  await until(() => client.data().toString().endsWith('still here'), 'data after the host half-closed');
  r.guest.send({ op: VSOCK_OP.SHUTDOWN, srcPort: 90, dstPort: hostPort, flags: VSOCK_SHUTDOWN.SEND | VSOCK_SHUTDOWN.RCV });
  await expectPacket(r, (p) => p.op === VSOCK_OP.RST, 'RST');
  await until(() => client.ended() && client.closed(), 'the client closed');
  await teardown(r);
});

test('RST from the guest closes the host socket; a host socket that vanishes resets the stream on the next write', async () => {
  const r = await rig();
  const a = await hostConnect(r, 100);
  r.guest.send({ op: VSOCK_OP.RST, srcPort: 100, dstPort: a.hostPort });
  await until(() => a.client.gone(), 'the client closed by RST');
  await expectNoPacket(r, (p) => p.op === VSOCK_OP.RST, 'an RST answering an RST', 30);

  const b = await hostConnect(r, 101);
  b.client.socket.destroy();
  const shutdown = await expectPacket(r, (p) => p.op === VSOCK_OP.SHUTDOWN, 'SHUTDOWN after the host went away');
  assert.equal(shutdown.dstPort, 101);
  r.guest.send({ op: VSOCK_OP.RW, srcPort: 101, dstPort: b.hostPort, payload: new Uint8Array(10) });
  await expectPacket(r, (p) => p.op === VSOCK_OP.RST && p.dstPort === 101, 'RST after writing to the closed socket');
  await until(() => r.device.connectionCount === 0, 'both connections forgotten');
  await teardown(r);
});

test('host REQUEST refused by the guest (RST) or left unanswered (2 s) closes the client without OK', async () => {
  const r = await rig();
  const refused = hostClient(r.uds, 'CONNECT 9\n');
  const request = await expectPacket(r, (p) => p.op === VSOCK_OP.REQUEST, 'REQUEST');
  r.guest.send({ op: VSOCK_OP.RST, srcPort: 9, dstPort: request.srcPort });
  await until(() => refused.gone(), 'the refused client closed');
  assert.equal(refused.data().length, 0);

  const ignored = hostClient(r.uds, 'CONNECT 10\n');
  await expectPacket(r, (p) => p.op === VSOCK_OP.REQUEST, 'REQUEST');
  await until(() => ignored.gone(), 'the unanswered client closed', 4000);
  await expectPacket(r, (p) => p.op === VSOCK_OP.RST && p.dstPort === 10, 'RST for the timed-out REQUEST');
  assert.equal(ignored.data().length, 0);

  const garbage = hostClient(r.uds, 'HELLO 10\n');
  const tooLong = hostClient(r.uds, 'CONNECT 1' + '0'.repeat(40));
  await until(() => garbage.gone() && tooLong.gone(), 'bad CONNECT lines refused');
  await teardown(r);
});

test('device reset drops every connection and closes the host sockets; after a new bring-up it serves again', async () => {
  const r = await rig();
  const a = await hostConnect(r, 200);
  const { peer, server } = await guestConnect(r, 201, 5000);
  assert.equal(r.device.connectionCount, 2);
  r.driver.reset();
  await until(() => a.client.gone() && peer.gone(), 'both host sockets closed');
  assert.equal(r.device.connectionCount, 0);

  const queues = r.driver.bringUp(FEATURES);
  const r2: Rig = { ...r, queues, guest: new GuestVsock(r.machine, queues[0]!, queues[1]!, { cid: CID }), inbox: [] };
  queues[0]!.kick();
  const b = await hostConnect(r2, 202);
  b.client.socket.write('again');
  const rw = await expectPacket(r2, (p) => p.op === VSOCK_OP.RW, 'RW after reset');
  assert.equal(Buffer.from(rw.payload).toString(), 'again');
  await teardown(r2, server);
});

test('close() closes every host socket, stops listening and removes the socket file', async () => {
  const r = await rig();
  const a = await hostConnect(r, 300);
  const waiting = hostClient(r.uds); // connected, no CONNECT yet
  await until(() => r.device.connectionCount === 2, 'the waiting client accepted');
  await r.device.close();
  await until(() => a.client.gone() && waiting.gone(), 'clients closed');
  assert.ok(!existsSync(r.uds));
  await r.device.close(); // idempotent
});

test('listen errors are one line, typed: an existing uds_path, a missing folder, a path too long', async () => {
  const existing = freshPath();
  writeFileSync(existing, '');
  const missing = join(scratch, 'no-such-folder', 'v.sock');
  const long = join(scratch, 'x'.repeat(120));
  for (const [path, code] of [[existing, 'EEXIST'], [missing, 'ENOENT'], [long, 'ENAMETOOLONG']] as const) {
    await assert.rejects(VirtioVsock.create({ guestCid: CID, udsPath: path }), (e: unknown) => {
      assert.ok(e instanceof VsockListenError && e instanceof TsvmmError, String(e));
      assert.equal(e.code, code);
      assert.ok(!e.message.includes('\n'), 'one line');
      assert.ok(e.message.includes(path.slice(0, 40)), e.message);
      return true;
    });
  }
  // A socket file left by a live device counts as existing too.
  const live = await VirtioVsock.create({ guestCid: CID, udsPath: freshPath() });
  assert.throws(() => new VirtioVsock({ guestCid: CID, udsPath: live.udsPath }), /already exists/);
  await live.close();
  assert.throws(() => new VirtioVsock({ guestCid: 2, udsPath: freshPath() }), RangeError);
});

test('transportReset posts VIRTIO_VSOCK_EVENT_TRANSPORT_RESET and drops the connections', async () => {
  const r = await rig();
  const events = r.queues[2]!;
  const eventBuffer = r.machine.allocator.alloc(8);
  r.machine.memory.writeU32(eventBuffer, 0xdead_beef);
  events.publish(events.addChain([{ addr: eventBuffer, len: 4, writable: true }]));
  events.kick();
  const a = await hostConnect(r, 400);
  assert.equal(r.device.transportReset(), true);
  assert.deepEqual(events.takeUsed(), [{ id: 0, len: 4 }]);
  assert.equal(r.machine.memory.readU32(eventBuffer), 0);
  await until(() => a.client.gone(), 'the client closed');
  assert.equal(r.device.transportReset(), false, 'no event buffer left');
  assert.equal(r.device.metrics.eventsLost, 1);
  await teardown(r);
});

test('hostile packets: wrong CIDs dropped; other types, unknown connections and bad lengths answered with RST; unknown ops reset', async () => {
  const r = await rig();
  const hello = new TextEncoder().encode('hello');
  // Wrong destination / source CID: dropped without an answer.
  r.guest.send({ op: VSOCK_OP.REQUEST, srcPort: 1, dstPort: 52, dstCid: 7 });
  r.guest.send({ op: VSOCK_OP.REQUEST, srcPort: 1, dstPort: 52, srcCid: CID + 1 });
  r.guest.send({ op: VSOCK_OP.REQUEST, srcPort: 1, dstPort: 52, dstCid: VSOCK_HOST_CID + 2 ** 32 });
  await expectNoPacket(r, () => true, 'an answer to a packet with a wrong CID', 30);
  assert.equal(r.device.metrics.wrongCid, 3);
  // A seqpacket REQUEST, and packets for connections that do not exist: RST.
  r.guest.send({ op: VSOCK_OP.REQUEST, srcPort: 2, dstPort: 52, type: 2 });
  await expectPacket(r, (p) => p.op === VSOCK_OP.RST && p.dstPort === 2, 'RST for a non-stream type');
  r.guest.send({ op: VSOCK_OP.RW, srcPort: 3, dstPort: 52, payload: hello });
  await expectPacket(r, (p) => p.op === VSOCK_OP.RST && p.dstPort === 3, 'RST for data on no connection');
  // len larger than the chain, or than 64 KiB: RST, and an existing connection is reset.
  const a = await hostConnect(r, 500);
  r.guest.send({ op: VSOCK_OP.RW, srcPort: 500, dstPort: a.hostPort, payload: hello, len: 6 });
  await expectPacket(r, (p) => p.op === VSOCK_OP.RST && p.dstPort === 500, 'RST for len beyond the chain');
  await until(() => a.client.gone(), 'the connection reset');
  r.guest.send({ op: VSOCK_OP.RW, srcPort: 4, dstPort: 52, len: 0xffff_ffff });
  await expectPacket(r, (p) => p.op === VSOCK_OP.RST && p.dstPort === 4, 'RST for a 4 GiB len');
  // An operation the spec does not define resets the connection.
  const b = await hostConnect(r, 501);
  r.guest.send({ op: 99, srcPort: 501, dstPort: b.hostPort });
  await expectPacket(r, (p) => p.op === VSOCK_OP.RST && p.dstPort === 501, 'RST for op 99');
  await until(() => b.client.gone(), 'the connection reset');
  // The header split over two descriptors is fine.
  const c = await hostConnect(r, 502);
  r.guest.send({ op: VSOCK_OP.RW, srcPort: 502, dstPort: c.hostPort, payload: hello }, { splitHeader: true });
  await until(() => c.client.data().toString().endsWith('hello'), 'split-header data');
  assert.equal(r.device.metrics.malformed, 2);
  assert.deepEqual(r.errors, [], 'none of this needs a device reset');
  assert.ok(r.machine.guardsIntact());
  await teardown(r);
});

test('hostile chains: a short header is dropped, a too-small rx buffer returned empty, wrong directions need a reset', async () => {
  const r = await rig({ rxBuffers: 0 });
  const m = r.machine;
  const [rx, tx] = [r.queues[0]!, r.queues[1]!];
  // A 20-byte "header": dropped, the chain returned.
  const short = m.allocator.alloc(64);
  const head = tx.addChain([{ addr: short, len: 20, writable: false }]);
  tx.publish(head);
  tx.kick();
  assert.deepEqual(tx.takeUsed(), [{ id: head, len: 0 }]);
  assert.equal(r.device.metrics.malformed, 1);
  // An rx buffer of 16 bytes while an RST is pending: returned with len 0, the RST still waits.
  r.guest.send({ op: VSOCK_OP.RW, srcPort: 3, dstPort: 52, payload: new Uint8Array(1) });
  const small = rx.addChain([{ addr: m.allocator.alloc(16), len: 16, writable: true }]);
  rx.publish(small);
  rx.kick();
  assert.deepEqual(rx.takeUsed(), [{ id: small, len: 0 }]);
  const fine = m.allocator.alloc(VSOCK_HDR_BYTES);
  const ok = rx.addChain([{ addr: fine, len: VSOCK_HDR_BYTES, writable: true }]);
  rx.publish(ok);
  rx.kick();
  assert.deepEqual(rx.takeUsed(), [{ id: ok, len: VSOCK_HDR_BYTES }], 'a header-only buffer takes the RST');
  assert.equal(m.memory.readU16(fine + 30), VSOCK_OP.RST);
  assert.deepEqual(r.errors, []);
  // A tx chain with a device-writable buffer breaks §2.7.4 / §5.10.6: the device needs a reset.
  const header = m.allocator.alloc(VSOCK_HDR_BYTES);
  m.memory.write(header, writeVsockHeader({ srcCid: CID, dstCid: 2, srcPort: 1, dstPort: 2, len: 0, type: 1, op: VSOCK_OP.REQUEST, flags: 0, bufAlloc: 0, fwdCnt: 0, payload: new Uint8Array(0) }));
  tx.publish(tx.addChain([{ addr: header, len: VSOCK_HDR_BYTES, writable: false }, { addr: m.allocator.alloc(8), len: 8, writable: true }]));
  tx.kick();
  assert.ok(r.driver.status & STATUS.NEEDS_RESET);
  assert.match(r.errors[0] ?? '', /device-writable/);
  // Same for device-readable bytes in an rx buffer: posted behind two good ones, reached by the third packet.
  const r2 = await rig({ rxBuffers: 2 });
  const a = await hostConnect(r2, 1);
  const rx2 = r2.queues[0]!;
  rx2.publish(rx2.addChain([{ addr: r2.machine.allocator.alloc(64), len: 64, writable: false }]));
  for (const port of [11, 12, 13]) r2.guest.send({ op: VSOCK_OP.RW, srcPort: port, dstPort: 52, payload: new Uint8Array(1) });
  assert.ok(r2.driver.status & STATUS.NEEDS_RESET);
  assert.match(r2.errors[0] ?? '', /device-readable/);
  await until(() => a.client.gone(), 'connections dropped when the device failed');
  assert.ok(m.guardsIntact() && r2.machine.guardsIntact());
  await teardown(r);
  await teardown(r2);
});

test('a driver that keeps tx packets coming cannot keep the device (and the VMM event loop) busy: one ring per pass', async () => {
  const SIZE = 8;
  const TOTAL = 10 * SIZE;
  const device = await VirtioVsock.create({ guestCid: CID, udsPath: freshPath() });
  const machine = new TestMachine();
  const errors: string[] = [];
  const { transport, slot } = machine.addVirtio(device, { onError: (reason) => errors.push(reason) });
  const driver = new VirtioPciDriver(machine, slot);
  const tx = driver.bringUp(FEATURES, { queueSize: SIZE })[1]!;
  // Shorter than a header: counted as malformed and returned at once, the cheapest packet there is.
  const head = tx.addChain([{ addr: machine.allocator.alloc(8), len: 8, writable: false }]);
  const race = raceDevice(transport.queues[1]!, () => tx.publish(head), TOTAL);
  tx.publish(head);
  tx.kick();
  assert.equal(race.taken(), SIZE, 'the kick took one ring of packets and returned');
  await turnUntil(() => race.taken() === TOTAL + 1);
  assert.equal(race.taken(), TOTAL + 1, 'the rest was taken on later turns, without kicks');
  assert.equal(tx.takeUsed().length, TOTAL + 1);
  assert.equal(device.metrics.malformed, TOTAL + 1);
  assert.deepEqual(errors, []);
  tx.publish(head);
  tx.kick();
  assert.equal(tx.takeUsed().length, 1, 'notifications are back on after the backlog');
  await device.close();
});
