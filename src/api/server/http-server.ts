/**
 * Firecracker's REST API on a Unix socket: HTTP/1.1 (node:http), JSON bodies, `{"fault_message": …}`
 * errors. This file is the HTTP side only: it reads at most MAX_BODY_BYTES of body, finds the
 * endpoint, parses the JSON strictly, checks it against the OpenAPI document and hands it to the
 * controller. Nothing a client sends can throw out of here: every failure becomes an answer, and
 * the server keeps serving.
 */
import { existsSync, statSync, unlinkSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { dirname } from 'node:path';
import { singleLine } from '../config/schema.js';
import { TsvmmError } from '../../util/errors.js';
import type { ApiReply, VmmController } from './controller.js';
import { dispatchApiRequest, fault } from './dispatch.js';

/** Firecracker's API server refuses bodies above 50 KiB (micro_http, api_server MAX_PAYLOAD_SIZE). */
export const MAX_BODY_BYTES = 51_200;

export class ApiSocketError extends TsvmmError {}

/** True when a request read in full (`complete`, set as soon as the parser reaches its end) has no answer yet. */
function awaitingAnswer(requests: ReadonlySet<IncomingMessage> | undefined): boolean {
  return requests !== undefined && [...requests].some((r) => r.complete);
}

/** Throws on invalid UTF-8; keeps a byte-order mark for parseJson to skip. */
const STRICT_UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

export class ApiServer {
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  /** Requests on each connection not answered yet (pipelined requests queue up behind each other). */
  private readonly unanswered = new WeakMap<Socket, Set<IncomingMessage>>();
  /** The 400 for a malformed request that came behind unanswered ones: sent once they are answered. */
  private readonly deferredFaults = new WeakMap<Socket, () => void>();
  private listening = false;

  private constructor(
    private readonly vmm: VmmController,
    readonly path: string,
  ) {
    // requireHostHeader: false — Firecracker (micro_http) does not require a Host header, and Node 20 would
    // otherwise answer an HTTP/1.1 request without one with an empty 400 of its own, not a fault_message.
    this.server = createServer({ keepAlive: true, requireHostHeader: false }, (req, res) => this.handle(req, res));
    this.server.on('connection', (s: Socket) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    // Malformed HTTP (a bad request line, oversized headers): answer 400 and drop that connection.
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
      this.vmm.apiMetrics.requests++;
      this.vmm.apiMetrics.bad_requests++;
      const answer = (): void => {
        if (socket.writable) {
          const body = JSON.stringify({ fault_message: `Malformed HTTP request: ${singleLine(err.code ?? err.message)}` });
          socket.end(`HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
        } else {
          socket.destroy();
        }
      };
      // Garbage pipelined behind a request still being answered (an InstanceStart, say) must not
      // overtake that answer: written now, the 400 would be read as the answer to the earlier request.
      // Only requests read in full wait for an answer; one the error cut short gets this 400 as its answer.
      if (awaitingAnswer(this.unanswered.get(socket))) this.deferredFaults.set(socket, answer);
      else answer();
    });
  }

  /**
   * Listen on `path`. Like Firecracker, refuses a path that already exists (a stale socket from a
   * VMM that died is the client's to remove, as it may still be someone else's).
   */
  static async listen(vmm: VmmController, path: string): Promise<ApiServer> {
    if (existsSync(path)) {
      const kind = statSync(path).isSocket() ? 'a socket (another VMM, or a stale one)' : 'a file';
      throw new ApiSocketError(`cannot listen on ${path}: it already exists as ${kind}; remove it or pick another --api-sock path`);
    }
    const folder = dirname(path);
    if (!existsSync(folder)) throw new ApiSocketError(`cannot listen on ${path}: the folder ${folder} does not exist`);
    const api = new ApiServer(vmm, path);
    await new Promise<void>((resolve, reject) => {
      api.server.once('error', (e: NodeJS.ErrnoException) => reject(new ApiSocketError(`cannot listen on ${path}: ${e.code ?? e.message}`)));
      api.server.listen(path, () => resolve());
    });
    api.listening = true;
    return api;
  }

  /** Stop listening, drop open connections, remove the socket file. */
  async close(): Promise<void> {
    if (!this.listening) return;
    this.listening = false;
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    try {
      unlinkSync(this.path);
    } catch {
      // Already gone.
    }
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    this.vmm.apiMetrics.requests++;
    const socket = req.socket;
    const unanswered = this.unanswered.get(socket) ?? new Set<IncomingMessage>();
    this.unanswered.set(socket, unanswered.add(req));
    const answered = (): void => {
      unanswered.delete(req);
      const deferred = this.deferredFaults.get(socket);
      if (deferred !== undefined && !awaitingAnswer(unanswered)) {
        this.deferredFaults.delete(socket);
        deferred();
      }
    };
    res.on('finish', answered);
    res.on('close', answered);
    const chunks: Buffer[] = [];
    let size = 0;
    let refused = false;
    req.on('data', (chunk: Buffer) => {
      if (refused) return;
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        refused = true;
        // The rest of an oversized body is not read: answer and close, as Firecracker does.
        this.send(res, { status: 413, body: { fault_message: `Request payload with size ${size} is larger than the limit of ${MAX_BODY_BYTES} allowed by server.` } }, true);
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (refused) return;
      // JSON is UTF-8 (RFC 8259): invalid bytes are refused, not turned into U+FFFD (a path with a
      // Latin-1 byte would otherwise name a different file), as serde_json refuses them in Firecracker.
      let text: string;
      try {
        text = STRICT_UTF8.decode(Buffer.concat(chunks));
      } catch {
        this.send(res, fault('The request body is not valid UTF-8; JSON must be sent as UTF-8.'), false);
        return;
      }
      void dispatchApiRequest(this.vmm, req.method ?? 'GET', req.url ?? '/', text).then((reply) => this.send(res, reply, false));
    });
    req.on('error', () => res.destroy());
  }

  private send(res: ServerResponse, reply: ApiReply, close: boolean): void {
    if (reply.status >= 400 && reply.status < 500) this.vmm.apiMetrics.bad_requests++;
    if (res.headersSent || res.destroyed) return;
    if (close) res.setHeader('Connection', 'close');
    if (reply.body === undefined) {
      res.writeHead(reply.status).end();
      return;
    }
    const json = JSON.stringify(reply.body);
    res.writeHead(reply.status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(json) }).end(json);
  }
}
