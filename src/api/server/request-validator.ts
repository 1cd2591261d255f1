/**
 * Routing and validation driven by the OpenAPI document (openapi.ts): which operation a request
 * names, whether its body fits the operation's schema, and (for conformance tests) whether an
 * answer fits the declared response.
 *
 * It implements exactly the JSON Schema subset the document uses: type (with "integer"),
 * nullable, enum, minimum/maximum, minLength/maxLength, pattern, items/maxItems, properties,
 * required, additionalProperties: false, minProperties, $ref to #/components/schemas/…, allOf,
 * and the x-tsvmm-* extensions described in openapi.ts. Semantics chosen to agree with the
 * resource parsers (src/api/config/*.ts), which the server runs after this check:
 * - a null value is accepted where the schema is nullable (for a nullable enum, only if the enum
 *   lists null), before any other keyword, so `{ allOf: [$ref], nullable: true }` takes null;
 * - `minProperties` counts members that are not null (serde and the parsers read null as absent);
 * - an integer is a JSON number with no fraction; the document's bounds keep it a safe integer.
 *
 * Messages copy the parsers' wording (schema.ts) and name the field path, so a 400 reads the same
 * whichever of the two refuses the body: `drive_id: must be a string, got 5`,
 * `unknown field 'vcpus' (did you mean 'vcpu_count'?)`.
 */
import {
  closestMatch,
  describeValue,
  fieldPath,
  indexPath,
  isJsonObject,
  singleLine,
} from '../config/schema.js';
import {
  HTTP_METHODS,
  OPENAPI_DOCUMENT,
  type OpenApiDocument,
  type OperationObject,
  type ResponseObject,
  SCHEMA_REF_PREFIX,
  type SchemaObject,
} from './openapi.js';

/** One operation of the document, ready for routing. */
export interface ApiOperation {
  /** Upper case, as on the wire: "GET", "PUT", "PATCH". */
  readonly method: string;
  /** The path as the document writes it, e.g. "/drives/{drive_id}". */
  readonly pathTemplate: string;
  readonly operationId: string;
  /** True when the operation declares a request body and `requestBody.required` is true. */
  readonly bodyRequired: boolean;
  /** The request body's schema, or undefined for an operation that takes no body (the GETs). */
  readonly bodySchema: SchemaObject | undefined;
  readonly definition: OperationObject;
  /** The document the operation comes from, for resolving its `$ref`s. */
  readonly document: OpenApiDocument;
}

export type RouteMatch =
  | { readonly operation: ApiOperation; readonly pathParams: Readonly<Record<string, string>> }
  /** No path of the document matches (Firecracker: 400 "Invalid request method and/or path"). */
  | { readonly error: 'unknown-path' }
  /** The path exists but not with this method; `allowed` is for an `Allow` header, e.g. ["PUT", "PATCH"]. */
  | { readonly error: 'wrong-verb'; readonly allowed: readonly string[] };

/** Request bodies may use the x-tsvmm leniencies (case-insensitive enums); responses must be canonical. */
export type ValidationMode = 'request' | 'response';

/** Every operation of `document`, in document order. */
export function listOperations(document: OpenApiDocument = OPENAPI_DOCUMENT): ApiOperation[] {
  const operations: ApiOperation[] = [];
  for (const [pathTemplate, item] of Object.entries(document.paths)) {
    for (const method of HTTP_METHODS) {
      const definition = item[method];
      if (definition === undefined) continue;
      const body = definition.requestBody;
      operations.push({
        method: method.toUpperCase(),
        pathTemplate,
        operationId: definition.operationId,
        bodyRequired: body?.required === true,
        bodySchema: body?.content['application/json'].schema,
        definition,
        document,
      });
    }
  }
  return operations;
}

/** The operation with this operationId (e.g. "putGuestDriveByID"); throws if there is none. */
export function operationById(operationId: string, document: OpenApiDocument = OPENAPI_DOCUMENT): ApiOperation {
  const found = listOperations(document).find((op) => op.operationId === operationId);
  if (found === undefined) throw new Error(`the API document has no operation '${operationId}'`);
  return found;
}

/** True when the operation expects a JSON request body (`requestBody.required`). */
export function expectsBody(operation: ApiOperation): boolean {
  return operation.bodyRequired;
}

const DEFAULT_OPERATIONS = listOperations();

/** Path segments; "/" is [""], "/drives/x" is ["drives", "x"]. */
function segments(path: string): string[] {
  return path.slice(1).split('/');
}

/** Percent-decoding of one path segment; a malformed escape is kept as written. */
function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

/** The parameters of `template` taken from `path`, or undefined when the path does not fit. */
function matchTemplate(template: string, path: string): Record<string, string> | undefined {
  const want = segments(template);
  const got = segments(path);
  if (want.length !== got.length) return undefined;
  const params: Record<string, string> = {};
  for (let i = 0; i < want.length; i++) {
    const w = want[i]!;
    const g = got[i]!;
    const param = /^\{(.+)\}$/.exec(w);
    if (param === null) {
      if (w !== g) return undefined;
    } else {
      // An empty segment ("/drives/") names no drive: the path is unknown, as in Firecracker.
      if (g === '') return undefined;
      params[param[1]!] = decodeSegment(g);
    }
  }
  return params;
}

/**
 * The operation a request names. `path` is the request target; a query string or fragment is
 * ignored. Paths match exactly (no trailing-slash folding). Literal segments win over templates.
 */
export function matchRoute(method: string, path: string, operations: readonly ApiOperation[] = DEFAULT_OPERATIONS): RouteMatch {
  const bare = path.replace(/[?#].*$/s, '');
  if (!bare.startsWith('/')) return { error: 'unknown-path' };
  const verb = method.toUpperCase();
  let best: { operation: ApiOperation; pathParams: Record<string, string> } | undefined;
  const allowed: string[] = [];
  for (const operation of operations) {
    const params = matchTemplate(operation.pathTemplate, bare);
    if (params === undefined) continue;
    if (operation.method !== verb) {
      if (!allowed.includes(operation.method)) allowed.push(operation.method);
      continue;
    }
    if (best === undefined || Object.keys(params).length < Object.keys(best.pathParams).length) {
      best = { operation, pathParams: params };
    }
  }
  if (best !== undefined) return best;
  return allowed.length === 0 ? { error: 'unknown-path' } : { error: 'wrong-verb', allowed };
}

/** Checks the path parameters against their declared schemas; the first problem, or undefined. */
export function validatePathParams(operation: ApiOperation, pathParams: Readonly<Record<string, string>>): string | undefined {
  for (const parameter of operation.definition.parameters ?? []) {
    const problems = validateValue(parameter.schema, pathParams[parameter.name], {
      document: operation.document,
      mode: 'request',
      path: `path parameter ${parameter.name}`,
    });
    if (problems.length > 0) return problems[0];
  }
  return undefined;
}

/**
 * Checks a request body (already parsed from JSON; undefined when the request has none) against
 * the operation. Returns the first problem as one actionable line, or undefined when it fits.
 */
export function validateBody(operation: ApiOperation, body: unknown): string | undefined {
  const what = `${operation.method} ${operation.pathTemplate}`;
  if (operation.bodySchema === undefined) {
    return body === undefined ? undefined : singleLine(`${what} takes no request body, got ${describeValue(body)}`);
  }
  if (body === undefined) {
    if (!operation.bodyRequired) return undefined;
    return `${what} needs a JSON body (${schemaTitle(operation.bodySchema)})`;
  }
  return validateValue(operation.bodySchema, body, { document: operation.document, mode: 'request' })[0];
}

/**
 * Checks an answer against the operation's responses: the status must be declared (a 2xx
 * explicitly; anything else may fall to `default`), a response with content needs a body that
 * fits its schema, one without content needs no body. Returns every problem found ([] if none).
 * `body` is the parsed JSON, or undefined for an empty body.
 */
export function validateResponse(operation: ApiOperation, status: number, body: unknown): string[] {
  const what = `${operation.method} ${operation.pathTemplate}`;
  const responses = operation.definition.responses;
  let response: ResponseObject | undefined = responses[String(status)];
  if (response === undefined && (status < 200 || status > 299)) response = responses.default;
  if (response === undefined) {
    return [`${what} does not declare status ${status} (declared: ${Object.keys(responses).join(', ')})`];
  }
  const schema = response.content?.['application/json'].schema;
  if (schema === undefined) {
    return body === undefined ? [] : [singleLine(`${what} ${status} must have no body, got ${describeValue(body)}`)];
  }
  if (body === undefined) return [`${what} ${status} needs a JSON body (${schemaTitle(schema)})`];
  return validateValue(schema, body, { document: operation.document, mode: 'response' });
}

export interface ValidateOptions {
  document?: OpenApiDocument;
  mode?: ValidationMode;
  /** Where `value` sits, for messages; "" (the default) is the body itself. */
  path?: string;
}

/** Every problem of `value` against `schema`, each one line naming its field path. */
export function validateValue(schema: SchemaObject, value: unknown, options: ValidateOptions = {}): string[] {
  const problems: string[] = [];
  const context: Context = {
    document: options.document ?? OPENAPI_DOCUMENT,
    mode: options.mode ?? 'request',
    report: (path, problem) => problems.push(singleLine(path === '' ? problem : `${path}: ${problem}`)),
  };
  check(schema, value, options.path ?? '', context);
  return problems;
}

/** The schema a `$ref` names; throws for a reference the document does not hold (a document bug). */
export function resolveRef(ref: string, document: OpenApiDocument = OPENAPI_DOCUMENT): SchemaObject {
  const name = ref.startsWith(SCHEMA_REF_PREFIX) ? ref.slice(SCHEMA_REF_PREFIX.length) : undefined;
  const schema = name === undefined ? undefined : document.components.schemas[name];
  if (schema === undefined) throw new Error(`unresolvable $ref '${ref}' in the API document`);
  return schema;
}

// ---------------------------------------------------------------------------------------------

interface Context {
  readonly document: OpenApiDocument;
  readonly mode: ValidationMode;
  readonly report: (path: string, problem: string) => void;
}

/** "a Drive object" for a $ref, for "needs a JSON body (…)". */
function schemaTitle(schema: SchemaObject): string {
  if (schema.$ref !== undefined) return `a ${schema.$ref.slice(SCHEMA_REF_PREFIX.length)} object`;
  return schema.type === undefined ? 'JSON' : `a JSON ${schema.type}`;
}

function check(schema: SchemaObject, value: unknown, path: string, context: Context): void {
  if (schema.$ref !== undefined) {
    check(resolveRef(schema.$ref, context.document), value, path, context);
    return;
  }
  if (value === null && schema.nullable === true && (schema.enum === undefined || schema.enum.includes(null))) return;
  for (const part of schema.allOf ?? []) check(part, value, path, context);

  if (schema.type !== undefined && !hasType(value, schema.type)) {
    // For an enum the list of values says more than the type ("must be one of …", as readEnum).
    context.report(path, schema.enum !== undefined ? enumProblem(schema, value) : typeProblem(schema, value, path));
    return;
  }
  if (schema.enum !== undefined && !enumAccepts(schema, value, context.mode)) {
    context.report(path, enumProblem(schema, value));
    return;
  }
  if (typeof value === 'string') checkString(schema, value, path, context);
  else if (typeof value === 'number') checkNumber(schema, value, path, context);
  else if (Array.isArray(value)) checkArray(schema, value, path, context);
  else if (isJsonObject(value)) checkObject(schema, value, path, context);
}

function hasType(value: unknown, type: SchemaObject['type']): boolean {
  switch (type) {
    case 'object':
      return isJsonObject(value);
    case 'array':
      return Array.isArray(value);
    case 'string':
      return typeof value === 'string';
    case 'boolean':
      return typeof value === 'boolean';
    case 'number':
      return typeof value === 'number' && Number.isFinite(value);
    case 'integer':
      return typeof value === 'number' && Number.isInteger(value);
    default:
      return true;
  }
}

/** The parsers' wording: "must be a string", "must be an integer from 1 to 32", "must be true or false". */
function typeProblem(schema: SchemaObject, value: unknown, path: string): string {
  const got = `got ${describeValue(value)}`;
  switch (schema.type) {
    case 'object':
      return path === '' ? `expected a JSON object, ${got}` : `must be an object, ${got}`;
    case 'array':
      return `must be an array, ${got}`;
    case 'string':
      return `must be a string, ${got}`;
    case 'boolean':
      return `must be true or false, ${got}`;
    case 'integer':
      return `must be ${integerRange(schema)}, ${got}`;
    default:
      return `must be a number, ${got}`;
  }
}

function integerRange(schema: SchemaObject): string {
  const { minimum: min, maximum: max } = schema;
  if (min !== undefined && max !== undefined) return `an integer from ${min} to ${max}`;
  if (min !== undefined) return `an integer of at least ${min}`;
  if (max !== undefined) return `an integer of at most ${max}`;
  return 'an integer';
}

function enumAccepts(schema: SchemaObject, value: unknown, mode: ValidationMode): boolean {
  const allowed = schema.enum ?? [];
  if (allowed.some((a) => a === value)) return true;
  if (mode !== 'request' || typeof value !== 'string') return false;
  const folded = schema['x-tsvmm-enum-case-insensitive'] === true;
  if (folded && allowed.some((a) => typeof a === 'string' && a.toLowerCase() === value.toLowerCase())) return true;
  const aliases = schema['x-tsvmm-enum-aliases'] ?? {};
  return Object.prototype.hasOwnProperty.call(aliases, folded ? value.toLowerCase() : value);
}

/** `must be one of "A", "B", got "x" (did you mean "A"?)`, as schema.ts readEnum says it. */
function enumProblem(schema: SchemaObject, value: unknown): string {
  const names = (schema.enum ?? []).filter((a): a is string | number | boolean => a !== null);
  if (names.length === 0) return `must be null, got ${describeValue(value)}`;
  const list = names.map((a) => JSON.stringify(a)).join(', ');
  const strings = names.filter((a): a is string => typeof a === 'string');
  const aliases = schema['x-tsvmm-enum-aliases'] ?? {};
  const suggestion =
    typeof value === 'string'
      ? (strings.find((a) => a.toLowerCase() === value.toLowerCase()) ??
        (Object.prototype.hasOwnProperty.call(aliases, value.toLowerCase()) ? aliases[value.toLowerCase()] : undefined) ??
        closestMatch(value, strings))
      : undefined;
  return `must be one of ${list}, got ${describeValue(value)}${suggestion === undefined ? '' : ` (did you mean "${suggestion}"?)`}`;
}

function checkString(schema: SchemaObject, value: string, path: string, context: Context): void {
  const length = [...value].length; // JSON Schema counts code points, not UTF-16 units
  if (schema.minLength !== undefined && length < schema.minLength) {
    context.report(path, schema.minLength === 1 ? 'must not be empty' : `must be at least ${schema.minLength} characters long, got ${length}`);
    return;
  }
  const maxBytes = schema['x-tsvmm-max-utf8-bytes'];
  const bytes = Buffer.byteLength(value, 'utf8');
  if (maxBytes !== undefined && bytes > maxBytes) {
    context.report(path, `is ${bytes} bytes long, the limit is ${maxBytes}`);
    return;
  }
  if (schema.maxLength !== undefined && length > schema.maxLength) {
    context.report(path, `is ${length} characters long, the limit is ${schema.maxLength}`);
    return;
  }
  if (schema.pattern !== undefined && !new RegExp(schema.pattern, 'u').test(value)) {
    const hint = schema['x-tsvmm-pattern-hint'];
    context.report(path, `must be ${hint ?? `a string matching /${schema.pattern}/`}, got ${describeValue(value)}`);
  }
}

function checkNumber(schema: SchemaObject, value: number, path: string, context: Context): void {
  const tooSmall = schema.minimum !== undefined && value < schema.minimum;
  const tooBig = schema.maximum !== undefined && value > schema.maximum;
  if (!tooSmall && !tooBig) return;
  const range = schema.type === 'integer' ? integerRange(schema) : `a number from ${schema.minimum ?? '-∞'} to ${schema.maximum ?? '∞'}`;
  context.report(path, `must be ${range}, got ${describeValue(value)}`);
}

function checkArray(schema: SchemaObject, value: readonly unknown[], path: string, context: Context): void {
  if (schema.maxItems !== undefined && value.length > schema.maxItems) {
    context.report(path, schema.maxItems === 0 ? `must be empty, got ${value.length} items` : `must have at most ${schema.maxItems} items, got ${value.length}`);
    return;
  }
  const items = schema.items;
  if (items !== undefined) value.forEach((item, i) => check(items, item, indexPath(path, i), context));
}

function checkObject(schema: SchemaObject, value: Record<string, unknown>, path: string, context: Context): void {
  const properties = schema.properties ?? {};
  const known = Object.keys(properties);
  // Unknown fields first, as the parsers do, so a misspelt optional field is never just ignored.
  if (schema.additionalProperties === false) {
    for (const key of Object.keys(value)) {
      if (!Object.prototype.hasOwnProperty.call(properties, key)) {
        context.report(path, `unknown field '${key}'${unknownFieldHint(key, known, schema['x-tsvmm-renamed-fields'] ?? {})}`);
      }
    }
  }
  for (const key of schema.required ?? []) {
    if (!Object.prototype.hasOwnProperty.call(value, key)) context.report(path, `missing required field '${key}'`);
  }
  for (const [key, propertySchema] of Object.entries(properties)) {
    if (Object.prototype.hasOwnProperty.call(value, key)) check(propertySchema, value[key], fieldPath(path, key), context);
  }
  if (schema.minProperties !== undefined) {
    const set = Object.values(value).filter((v) => v !== null).length;
    if (set < schema.minProperties) {
      context.report(path, `must set at least ${schema.minProperties === 1 ? 'one' : schema.minProperties} of ${known.join(', ')}`);
    }
  }
}

/** The "(…)" after "unknown field 'x'": the renamed-field note, a suggestion, or the known fields. */
function unknownFieldHint(key: string, known: readonly string[], renamed: Readonly<Record<string, string>>): string {
  if (Object.prototype.hasOwnProperty.call(renamed, key)) return ` (${renamed[key]})`;
  // "vcpus" for "vcpu_count": try the singular too, which then matches a whole part of the name.
  const suggestion = closestMatch(key, known) ?? (key.length > 4 && key.endsWith('s') ? closestMatch(key.slice(0, -1), known) : undefined);
  if (suggestion !== undefined) return ` (did you mean '${suggestion}'?)`;
  return known.length === 0 ? ' (this object takes no fields)' : ` (known fields: ${known.join(', ')})`;
}
