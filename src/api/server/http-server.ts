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
import { JsonSyntaxError, parseJson } from '../config.js';
import { singleLine } from '../config/schema.js';
import { TsvmmError } from '../../util/errors.js';
import { ApiFault, type ApiReply, type VmmController } from './controller.js';
import { matchRoute, validateBody } from './request-validator.js';
import { ROUTES } from './routes.js';

/** Firecracker's API server refuses bodies above 50 KiB (micro_http, api_server MAX_PAYLOAD_SIZE). */
export const MAX_BODY_BYTES = 51_200;

export class ApiSocketError extends TsvmmError {}

export class ApiServer {
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private listening = false;

  private constructor(
    private readonly vmm: VmmController,
    readonly path: string,
  ) {
    this.server = createServer({ keepAlive: true }, (req, res) => this.handle(req, res));
    this.server.on('connection', (s: Socket) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    // Malformed HTTP (a bad request line, oversized headers): answer 400 and drop that connection.
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
      this.vmm.apiMetrics.requests++;
      this.vmm.apiMetrics.bad_requests++;
      if (socket.writable) {
        const body = JSON.stringify({ fault_message: `Malformed HTTP request: ${singleLine(err.code ?? err.message)}` });
        socket.end(`HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
      } else {
        socket.destroy();
      }
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
      void this.answer(req, Buffer.concat(chunks)).then((reply) => this.send(res, reply, false));
    });
    req.on('error', () => res.destroy());
  }

  private async answer(req: IncomingMessage, raw: Buffer): Promise<ApiReply> {
    const method = req.method ?? 'GET';
    const path = (req.url ?? '/').split('?')[0]!;
    const route = matchRoute(method, path);
    if ('error' in route) return fault(`Invalid request method and/or path: ${method} ${singleLine(path)}.`);
    const handler = ROUTES[`${method} ${route.operation.pathTemplate}`];
    if (handler === undefined) return fault(`Invalid request method and/or path: ${method} ${singleLine(path)}.`, 500);
    let body: unknown;
    const text = raw.toString('utf8');
    if (text.trim().length > 0) {
      try {
        body = parseJson(text, 'the request body');
      } catch (e) {
        if (e instanceof JsonSyntaxError) return fault(e.message);
        throw e;
      }
    } else if (route.operation.bodyRequired) {
      return fault('The request body is empty; this request needs a JSON body.');
    }
    if (body !== undefined) {
      const problem = validateBody(route.operation, body);
      if (problem !== undefined) return fault(problem);
    }
    try {
      return await this.vmm.serialize(() => handler(this.vmm, route.pathParams, body));
    } catch (e) {
      if (e instanceof ApiFault) return fault(e.message, e.status);
      if (e instanceof TsvmmError) return fault(e.message);
      const message = e instanceof Error ? e.message : String(e);
      this.vmm.logger.error(`internal error answering ${method} ${path}: ${message}`);
      return fault(`Internal error: ${message}`, 500);
    }
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

function fault(message: string, status = 400): ApiReply {
  return { status, body: { fault_message: singleLine(message) } };
}
