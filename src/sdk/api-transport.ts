/**
 * How the SDK reaches a VMM's API: over HTTP on a Unix socket (a running `tsvmm --api-sock`, or
 * Firecracker itself), or in-process, straight into a VmmController through the same dispatch the
 * HTTP server uses. Either way a request is a method, a path and a JSON body, and the reply is a
 * status and a JSON body.
 */
import { request } from 'node:http';
import type { VmmController } from '../api/server/controller.js';
import { dispatchApiRequest } from '../api/server/dispatch.js';
import { TsvmmError } from '../util/errors.js';

export interface ApiResponse {
  status: number;
  body: unknown;
}

export interface ApiTransport {
  send(method: 'GET' | 'PUT' | 'PATCH', path: string, body?: unknown): Promise<ApiResponse>;
}

/** The VMM refused a request: its status and Firecracker's fault_message. */
export class ApiRequestError extends TsvmmError {
  constructor(
    readonly method: string,
    readonly path: string,
    readonly status: number,
    readonly faultMessage: string,
  ) {
    super(`${method} ${path}: ${faultMessage} (HTTP ${status})`);
  }
}

/** The API socket could not be reached (no VMM there, or it went away). */
export class ApiUnreachableError extends TsvmmError {}

/** Requests straight into a controller in this process. */
export class InProcessTransport implements ApiTransport {
  constructor(private readonly vmm: VmmController) {}

  async send(method: 'GET' | 'PUT' | 'PATCH', path: string, body?: unknown): Promise<ApiResponse> {
    // Counted as the HTTP server counts its requests, so metrics read the same either way.
    this.vmm.apiMetrics.requests++;
    const reply = await dispatchApiRequest(this.vmm, method, path, body === undefined ? '' : JSON.stringify(body));
    if (reply.status >= 400 && reply.status < 500) this.vmm.apiMetrics.bad_requests++;
    return { status: reply.status, body: reply.body };
  }
}

/** Requests over HTTP/1.1 on a Unix socket. */
export class UnixSocketTransport implements ApiTransport {
  constructor(readonly socketPath: string) {}

  send(method: 'GET' | 'PUT' | 'PATCH', path: string, body?: unknown): Promise<ApiResponse> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return new Promise<ApiResponse>((resolve, reject) => {
      const req = request(
        {
          socketPath: this.socketPath,
          method,
          path,
          headers: { Accept: 'application/json', ...(payload !== undefined ? { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(payload) } : {}) },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let parsed: unknown;
            try {
              parsed = text.length > 0 ? JSON.parse(text) : undefined;
            } catch {
              parsed = { fault_message: text };
            }
            resolve({ status: res.statusCode ?? 0, body: parsed });
          });
          res.on('error', reject);
        },
      );
      req.on('error', (e: NodeJS.ErrnoException) => reject(new ApiUnreachableError(`cannot reach the VMM's API at ${this.socketPath}: ${e.code ?? e.message}`)));
      req.end(payload);
    });
  }
}

/** Send, and turn a 4xx/5xx reply into an ApiRequestError. */
export async function call(transport: ApiTransport, method: 'GET' | 'PUT' | 'PATCH', path: string, body?: unknown): Promise<unknown> {
  const r = await transport.send(method, path, body);
  if (r.status >= 400) {
    const message = typeof r.body === 'object' && r.body !== null && typeof (r.body as { fault_message?: unknown }).fault_message === 'string' ? (r.body as { fault_message: string }).fault_message : `HTTP ${r.status}`;
    throw new ApiRequestError(method, path, r.status, message);
  }
  return r.body;
}
