/**
 * A host program's side of Firecracker's hybrid vsock: connect to the VMM's `uds_path`, send
 * `CONNECT <port>\n`, and get `OK <host port>\n` once the guest accepted. A guest that refuses
 * (nothing listening on that port: the guest answers the REQUEST with RST) shows up as the VMM
 * closing the socket before any byte came back.
 */
import { connect, type Socket } from 'node:net';

/** The guest refused the connection: the VMM closed the socket without a byte. */
export class VsockRefusedError extends Error {}

/**
 * A connection the guest accepted. `rest` holds what arrived in the same read as the "OK" line
 * (a guest program that writes at once can get its first bytes in with it). The socket stays in
 * flowing mode, so that a hang-up is still seen: attach 'data' listeners before going back to the
 * event loop (an `await` on this promise then doing so is fine).
 */
export interface GuestConnection {
  socket: Socket;
  hostPort: number;
  rest: Buffer;
}

/** Connect through the VMM's socket to guest `port`; resolves once "OK <n>" came back. */
export function connectToGuest(uds: string, port: number): Promise<GuestConnection> {
  return new Promise((resolve, reject) => {
    const socket = connect(uds);
    let line = '';
    const onData = (b: Buffer): void => {
      line += b.toString('latin1');
      const nl = line.indexOf('\n');
      if (nl < 0) return;
      socket.off('data', onData);
      socket.off('close', onClose);
      const m = /^OK (\d+)$/.exec(line.slice(0, nl));
      if (m === null) {
        socket.destroy();
        reject(new Error(`expected "OK <port>", got ${JSON.stringify(line.slice(0, nl))}`));
        return;
      }
      // Not unshift(): with no 'data' listener left, a flowing socket would emit it to nobody
      // (on the next tick, before the caller's continuation attaches its own).
      resolve({ socket, hostPort: Number(m[1]), rest: Buffer.from(line.slice(nl + 1), 'latin1') });
    };
    // The guest refusing (RST) closes the socket before any "OK": fail rather than wait for ever.
    const onClose = (): void => {
      const what = `CONNECT ${port}: closed before "OK" (got ${JSON.stringify(line)})`;
      reject(line === '' ? new VsockRefusedError(`${what}: the guest refused, nothing listens on port ${port}`) : new Error(what));
    };
    socket.on('data', onData);
    socket.once('error', reject);
    socket.once('close', onClose);
    socket.once('connect', () => socket.write(`CONNECT ${port}\n`));
  });
}

/**
 * connectToGuest, retried while the guest refuses, for up to `waitMs`. A guest program that
 * started its listener in the background may not be listening yet when the guest says it is
 * ready (socat's start-up in the nested test host can take longer than any fixed sleep); a
 * client of a service that is starting retries the same way. Any other failure is final.
 */
export async function connectToGuestWhenListening(uds: string, port: number, waitMs = 20_000): Promise<GuestConnection> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    try {
      return await connectToGuest(uds, port);
    } catch (e) {
      if (!(e instanceof VsockRefusedError) || Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}
