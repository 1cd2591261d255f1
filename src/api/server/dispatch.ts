/**
 * One API request, from method, path and body text to a reply: find the endpoint in the OpenAPI
 * document, parse the JSON strictly, validate it against the document, and run the controller's
 * operation (one at a time). The HTTP server and the SDK's in-process transport both answer
 * through here, so a request means the same thing over a socket and in-process.
 */
import { JsonSyntaxError, parseJson } from '../config/json.js';
import { singleLine } from '../config/schema.js';
import { TsvmmError } from '../../util/errors.js';
import { ApiFault, type ApiReply, type VmmController } from './controller.js';
import { ROUTES, type RouteHandler } from './routes.js';

/** The OpenAPI document and its validator (request-validator.js), loaded when a request first needs them. */
type RequestValidator = typeof import('./request-validator.js');
let validator: Promise<RequestValidator> | undefined;
function loadValidator(): Promise<RequestValidator> {
  return (validator ??= import('./request-validator.js'));
}

/**
 * The GETs whose path has no parameter: with no body either, the document has nothing to check,
 * and answering them does not wait for it to load. These are what clients poll while waiting for
 * a fresh VMM (GET /, GET /machine-config), so they are answered as soon as the socket listens.
 * Every other request, including a GET with a body, goes through the document.
 */
function fixedGet(method: string, path: string, bodyText: string): RouteHandler | undefined {
  if (method !== 'GET' || path.includes('{') || bodyText.length > 0) return undefined;
  return ROUTES[`GET ${path}`];
}

/** A 4xx/5xx reply carrying Firecracker's `{"fault_message": …}` on one line. */
export function fault(message: string, status = 400): ApiReply {
  return { status, body: { fault_message: singleLine(message) } };
}

/** Answer one request; never throws. `path` may carry a query string (ignored). */
export async function dispatchApiRequest(vmm: VmmController, method: string, rawPath: string, bodyText: string): Promise<ApiReply> {
  const path = rawPath.split('?')[0]!;
  const direct = fixedGet(method, path, bodyText);
  // Checked in turn too: the first request may wait for the validator to load, and must not be
  // overtaken meanwhile by a later one.
  return run(vmm, method, path, () => (direct !== undefined ? direct(vmm, {}, undefined) : checkedOperation(vmm, method, path, bodyText)));
}

/** The request checked against the document: a fault reply, or what the controller answers. */
async function checkedOperation(vmm: VmmController, method: string, path: string, bodyText: string): Promise<ApiReply> {
  const { matchRoute, validateBody, validatePathParams } = await loadValidator();
  const route = matchRoute(method, path);
  if ('error' in route) return fault(`Invalid request method and/or path: ${method} ${singleLine(path)}.`);
  const handler = ROUTES[`${method} ${route.operation.pathTemplate}`];
  if (handler === undefined) return fault(`Invalid request method and/or path: ${method} ${singleLine(path)}.`, 500);
  const badParam = validatePathParams(route.operation, route.pathParams);
  if (badParam !== undefined) return fault(badParam);
  let body: unknown;
  if (bodyText.trim().length > 0) {
    try {
      body = parseJson(bodyText, 'the request body');
    } catch (e) {
      if (e instanceof JsonSyntaxError) return fault(e.message);
      return fault(`the request body cannot be read: ${e instanceof Error ? e.message : String(e)}`);
    }
  } else if (route.operation.bodyRequired) {
    return fault('The request body is empty; this request needs a JSON body.');
  }
  if (body !== undefined) {
    const problem = validateBody(route.operation, body);
    if (problem !== undefined) return fault(problem);
  }
  return handler(vmm, route.pathParams, body);
}

/** Run a controller operation in turn (one at a time, in arrival order) and turn its failures into faults. */
async function run(vmm: VmmController, method: string, path: string, op: () => ApiReply | Promise<ApiReply>): Promise<ApiReply> {
  try {
    return await vmm.serialize(op);
  } catch (e) {
    if (e instanceof ApiFault) return fault(e.message, e.status);
    if (e instanceof TsvmmError) return fault(e.message);
    const message = e instanceof Error ? e.message : String(e);
    vmm.logger.error(`internal error answering ${method} ${path}: ${message}`);
    return fault(`Internal error: ${message}`, 500);
  }
}
