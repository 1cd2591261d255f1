/**
 * Conformance of the REST API server (src/api/server/*): a real ApiServer on a Unix socket in a
 * temp folder, a real VmmController, real HTTP clients (node:http, and raw `net` sockets for what
 * node:http will not send). Only the microVM is fake: `launch` returns a RecordingVm that notes
 * every call the controller makes, so this runs without KVM (the guest tests boot real Linux
 * behind the same API).
 *
 * Every answer any test gets is checked against the OpenAPI document (validateResponse for a
 * known operation, the Error schema otherwise), so a status or body the document does not
 * declare fails whichever test provoked it.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { Agent, type IncomingHttpHeaders, request } from 'node:http';
import { connect, createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { CONFIG_FEATURES, type ConfigFeature } from '../../src/api/config.js';
import { NOT_SUPPORTED_AFTER_START, NOT_SUPPORTED_BEFORE_START, VmmController } from '../../src/api/server/controller.js';
import { ApiServer, ApiSocketError, MAX_BODY_BYTES } from '../../src/api/server/http-server.js';
import { SCHEMA_REF_PREFIX } from '../../src/api/server/openapi.js';
import { type ApiOperation, listOperations, matchRoute, validateResponse, validateValue } from '../../src/api/server/request-validator.js';
import { TsvmmError } from '../../src/util/errors.js';
import type { VmControl, VmExitSummary, VmMetrics } from '../../src/vmm/vm-control.js';
import type { VmSpec } from '../../src/vmm/vm-spec.js';
import { prng } from '../support/fuzz.js';

// ---------------------------------------------------------------------------------------------
// The fake microVM and the fixture

/** What `launch` returns: does nothing, remembers everything. */
class RecordingVm implements VmControl {
  readonly calls: string[] = [];
  /** What sendCtrlAltDel() answers (false: the keyboard buffer is full). */
  ctrlAltDelAccepted = true;
  /** How long pause() and resume() take, to make a request that overlaps them visible. */
  delayMs = 0;
  private finish: (exit: VmExitSummary) => void = () => {};
  private readonly ended = new Promise<VmExitSummary>((resolve) => (this.finish = resolve));

  constructor(readonly spec: VmSpec) {}

  async pause(): Promise<void> {
    await sleep(this.delayMs);
    this.calls.push('pause');
  }
  async resume(): Promise<void> {
    await sleep(this.delayMs);
    this.calls.push('resume');
  }
  async sendCtrlAltDel(): Promise<boolean> {
    this.calls.push('ctrl-alt-del');
    return this.ctrlAltDelAccepted;
  }
  async updateDrive(driveId: string, pathOnHost: string): Promise<void> {
    this.calls.push(`update-drive ${driveId} ${pathOnHost}`);
  }
  async metrics(): Promise<VmMetrics> {
    // Asserted rather than typed, so devices growing counters (VmMetrics is being extended) do not break this file.
    return {
      vcpu: { exits: 11, io_exits: 5, mmio_exits: 3, intr_exits: 2 },
      uart: { tx_bytes: 1234, rx_bytes: 0 },
      block: { rootfs: { read_count: 7, write_count: 1, read_bytes: 28672, write_bytes: 4096, flush_count: 1, errors: 0, immediate_count: 5 } },
      net: {},
      virtio: { doorbell_wakeups: 9, notifications: 11, interrupts: 7 },
    } as VmMetrics;
  }
  stop(detail = 'stopped from the host'): void {
    this.calls.push('stop');
    this.end({ reason: 'stopped', status: 143, message: detail });
  }
  wait(): Promise<VmExitSummary> {
    return this.ended;
  }
  /** The guest ends (as a poweroff, panic, … would end it). */
  end(exit: VmExitSummary): void {
    this.finish(exit);
  }
}

/** The features the API boots today (src/cli/api-mode.ts API_SUPPORTED_FEATURES at the time of writing). */
const TODAY: readonly ConfigFeature[] = ['initrd', 'entropy', 'drives', 'logger', 'metrics'];
/** Every feature, for exercising the endpoints whose features are not supported yet. */
const ALL_FEATURES = Object.keys(CONFIG_FEATURES) as ConfigFeature[];
const INSTANCE_ID = 'conf-vm';

interface Fixture {
  readonly dir: string;
  readonly sock: string;
  readonly vmm: VmmController;
  readonly server: ApiServer;
  /** Kept-alive connections (up to 4), the default for requests. */
  readonly agent: Agent;
  /** Non-empty files the config can name. */
  readonly kernel: string;
  readonly rootfs: string;
  readonly data: string;
  readonly data2: string;
  readonly launched: RecordingVm[];
  readonly exits: VmExitSummary[];
  /** While set, launch() waits for it (InstanceStart stays in progress). */
  launchGate: Promise<void> | undefined;
  /** While set, launch() throws it (once). */
  launchFailure: Error | undefined;
  /** delayMs of the VMs launch() makes. */
  vmDelayMs: number;
  close(): Promise<void>;
}

async function startFixture(supported: readonly ConfigFeature[] = TODAY): Promise<Fixture> {
  const dir = mkdtempSync(join(tmpdir(), 'tsvmm-api-'));
  const file = (name: string, size: number): string => {
    const path = join(dir, name);
    writeFileSync(path, Buffer.alloc(size, 0x5a));
    return path;
  };
  const launched: RecordingVm[] = [];
  const exits: VmExitSummary[] = [];
  const fixture: Partial<Fixture> & Pick<Fixture, 'launchGate' | 'launchFailure' | 'vmDelayMs'> = { launchGate: undefined, launchFailure: undefined, vmDelayMs: 0 };
  const vmm = new VmmController({
    id: INSTANCE_ID,
    version: '0.1.0',
    supported,
    baseDir: dir,
    launch: async (spec) => {
      if (fixture.launchGate !== undefined) await fixture.launchGate;
      const failure = fixture.launchFailure;
      fixture.launchFailure = undefined;
      if (failure !== undefined) throw failure;
      const vm = new RecordingVm(spec);
      vm.delayMs = fixture.vmDelayMs;
      launched.push(vm);
      return vm;
    },
    onExit: (exit) => exits.push(exit),
  });
  const sock = join(dir, 'api.sock');
  const server = await ApiServer.listen(vmm, sock);
  const agent = new Agent({ keepAlive: true, maxSockets: 4 });
  Object.assign(fixture, {
    dir,
    sock,
    vmm,
    server,
    agent,
    kernel: file('vmlinux', 4096),
    rootfs: file('rootfs.ext4', 64 * 1024),
    data: file('data.img', 16 * 1024),
    data2: file('data2.img', 32 * 1024),
    launched,
    exits,
    close: async () => {
      agent.destroy();
      await server.close();
      vmm.close();
      rmSync(dir, { recursive: true, force: true });
    },
  });
  return fixture as Fixture;
}

/** Run `body` with a fresh fixture, closed afterwards whatever happens. */
async function withFixture(supported: readonly ConfigFeature[], body: (f: Fixture) => Promise<void>): Promise<void> {
  const f = await startFixture(supported);
  try {
    await body(f);
  } finally {
    await f.close();
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Wait until `cond()` holds (polling), or fail after `ms`. */
async function until(cond: () => boolean, what: string, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(1);
  }
}

// ---------------------------------------------------------------------------------------------
// HTTP clients, and the check every answer goes through

interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
  /** The parsed JSON body; undefined when the body is empty. */
  body: unknown;
}

interface SendOptions {
  /** false: a new connection for this request; default: the fixture's kept-alive agent. */
  agent?: Agent | false;
  headers?: Record<string, string>;
}

/** The `Error` schema, for answers to requests that name no operation. */
const ERROR_SCHEMA = { $ref: `${SCHEMA_REF_PREFIX}Error` };

/** Operations (METHOD /template) answered 2xx at least once, for the coverage check. */
const answeredOk = new Set<string>();

/**
 * Every answer must fit the document: validateResponse for the operation the request named (a
 * 2xx must be declared; a 204 has no body), otherwise a 400 with an Error body.
 */
function checkAgainstDocument(method: string, path: string, reply: Reply): void {
  const where = `${method} ${path} → ${reply.status} ${reply.text.slice(0, 300)}`;
  const route = matchRoute(method, path);
  if ('operation' in route) {
    assert.deepEqual(validateResponse(route.operation, reply.status, reply.body), [], where);
    if (reply.status >= 200 && reply.status < 300) answeredOk.add(`${route.operation.method} ${route.operation.pathTemplate}`);
  } else {
    // 413 comes before routing: the body is refused before the path is looked at.
    assert.ok(reply.status === 400 || reply.status === 413, where);
    assert.deepEqual(validateValue(ERROR_SCHEMA, reply.body), [], where);
  }
  if (reply.status === 204) {
    assert.equal(reply.text, '', `${where}: a 204 has no body`);
  } else {
    assert.match(String(reply.headers['content-type']), /^application\/json/, where);
  }
}

/** One request with `text` as its body (undefined: none). */
function send(f: Fixture, method: string, path: string, text: string | Buffer | undefined, options: SendOptions = {}): Promise<Reply> {
  return new Promise<Reply>((resolve, reject) => {
    const headers: Record<string, string | number> = { Accept: 'application/json', ...options.headers };
    if (text !== undefined) {
      headers['Content-Type'] = 'application/json';
      headers['Content-Length'] = Buffer.byteLength(text);
    }
    const req = request({ socketPath: f.sock, method, path, headers, agent: options.agent ?? f.agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const raw = Buffer.concat(chunks).toString('utf8');
        let body: unknown;
        try {
          body = raw === '' ? undefined : JSON.parse(raw);
        } catch {
          reject(new Error(`${method} ${path}: the answer is not JSON: ${raw.slice(0, 200)}`));
          return;
        }
        const reply = { status: res.statusCode ?? 0, headers: res.headers, text: raw, body };
        try {
          checkAgainstDocument(method, path, reply);
        } catch (e) {
          reject(e as Error);
          return;
        }
        resolve(reply);
      });
    });
    req.setTimeout(5000, () => req.destroy(new Error(`${method} ${path}: no answer in 5 s`)));
    req.on('error', reject);
    req.end(text);
  });
}

const get = (f: Fixture, path: string, options?: SendOptions): Promise<Reply> => send(f, 'GET', path, undefined, options);
const put = (f: Fixture, path: string, body: unknown, options?: SendOptions): Promise<Reply> => send(f, 'PUT', path, JSON.stringify(body), options);
const patch = (f: Fixture, path: string, body: unknown, options?: SendOptions): Promise<Reply> => send(f, 'PATCH', path, JSON.stringify(body), options);
const action = (f: Fixture, type: string): Promise<Reply> => put(f, '/actions', { action_type: type });

/** Asserts a 204. */
function ok(reply: Reply, what = ''): void {
  assert.equal(reply.status, 204, `${what} ${reply.text}`);
}

/** Asserts a 400 (or `status`) and returns its fault_message, which is one line. */
function faultOf(reply: Reply, status = 400): string {
  assert.equal(reply.status, status, reply.text);
  const message = (reply.body as { fault_message: string }).fault_message;
  assert.equal(typeof message, 'string');
  assert.doesNotMatch(message, /[\r\n]/);
  return message;
}

/** A raw exchange on a new connection: write `data`, read until the server closes (or `ms`). */
function rawExchange(f: Fixture, data: string | Buffer, ms = 3000): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const s = connect(f.sock);
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`raw exchange: the server did not close the connection in ${ms} ms; got ${Buffer.concat(chunks).toString('utf8').slice(0, 200)}`));
    }, ms);
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('error', () => undefined); // A reset after the answer is fine: the answer is what counts.
    s.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks).toString('utf8'));
    });
    s.write(data);
  });
}

interface RawResponse {
  status: number;
  headers: string;
  body: unknown;
}

/** Every HTTP response in `raw`, in order (bodies by Content-Length; none without one). */
function parseRawResponses(raw: string): RawResponse[] {
  const out: RawResponse[] = [];
  let rest = raw;
  while (rest.length > 0) {
    const m = /^HTTP\/1\.1 (\d{3}) [^\r\n]*\r\n([\s\S]*?)\r\n\r\n/.exec(rest);
    assert.ok(m !== null, `not an HTTP response: ${JSON.stringify(rest.slice(0, 200))}`);
    const headers = m[2]!;
    const length = /content-length: *(\d+)/i.exec(headers);
    const size = length === null ? 0 : Number(length[1]);
    const text = rest.slice(m[0].length, m[0].length + size);
    out.push({ status: Number(m[1]), headers, body: text === '' ? undefined : JSON.parse(text) });
    rest = rest.slice(m[0].length + size);
  }
  return out;
}

/** The only HTTP response in `raw`. */
function parseRawResponse(raw: string): RawResponse {
  const all = parseRawResponses(raw);
  assert.equal(all.length, 1, raw);
  return all[0]!;
}

/** Open a connection, send a request's head and part of its body, then drop the connection. */
function abortMidBody(f: Fixture, path: string, body: string): Promise<void> {
  return new Promise<void>((resolve) => {
    const s = connect(f.sock, () => {
      const head = `PUT ${path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body) + 100}\r\n\r\n`;
      s.write(head + body.slice(0, Math.floor(body.length / 2)), () => s.destroy());
    });
    s.on('error', () => undefined);
    s.on('close', () => resolve());
  });
}

// ---------------------------------------------------------------------------------------------
// Bodies: a valid one for every operation, and each kind of invalid one

type Json = Record<string, unknown>;

/** A valid request for every operation that takes a body, keyed "METHOD /template". */
function validRequests(f: Fixture): Record<string, { path: string; body: Json }> {
  return {
    'PUT /boot-source': { path: '/boot-source', body: { kernel_image_path: f.kernel, boot_args: 'console=ttyS0 reboot=k panic=1' } },
    'PUT /machine-config': { path: '/machine-config', body: { vcpu_count: 2, mem_size_mib: 256 } },
    'PATCH /machine-config': { path: '/machine-config', body: { mem_size_mib: 512 } },
    'PUT /drives/{drive_id}': { path: '/drives/data', body: { drive_id: 'data', is_root_device: false, path_on_host: f.data, is_read_only: true } },
    'PATCH /drives/{drive_id}': { path: '/drives/data', body: { drive_id: 'data', path_on_host: f.data2 } },
    'PUT /network-interfaces/{iface_id}': { path: '/network-interfaces/eth0', body: { iface_id: 'eth0', host_dev_name: 'tap0', guest_mac: '06:00:ac:10:00:02' } },
    'PATCH /network-interfaces/{iface_id}': {
      path: '/network-interfaces/eth0',
      body: { iface_id: 'eth0', rx_rate_limiter: { bandwidth: { size: 1_000_000, refill_time: 100 } } },
    },
    'PUT /vsock': { path: '/vsock', body: { guest_cid: 3, uds_path: join(f.dir, 'vsock.sock') } },
    'PUT /entropy': { path: '/entropy', body: {} },
    'PUT /logger': { path: '/logger', body: { log_path: join(f.dir, 'vmm.log'), level: 'Info', show_level: true } },
    'PUT /metrics': { path: '/metrics', body: { metrics_path: join(f.dir, 'metrics.json') } },
    'PUT /actions': { path: '/actions', body: { action_type: 'FlushMetrics' } },
    'PATCH /vm': { path: '/vm', body: { state: 'Paused' } },
  };
}

/** One way to break a body: the change, and the field the fault_message must name. */
interface Breakage {
  /** A change to the valid body: fields to set (undefined: delete). */
  change: Json;
  names: string;
}

interface InvalidSet {
  unknownField: Breakage;
  wrongType: Breakage;
  outOfRange: Breakage;
  /** undefined: the schema has no required field (Logger). */
  missingRequired: Breakage | undefined;
}

const INVALID: Record<string, InvalidSet> = {
  'PUT /boot-source': {
    unknownField: { change: { kernel: '/vmlinux' }, names: 'kernel' },
    wrongType: { change: { boot_args: 42 }, names: 'boot_args' },
    outOfRange: { change: { boot_args: 'x'.repeat(4096) }, names: 'boot_args' },
    missingRequired: { change: { kernel_image_path: undefined }, names: 'kernel_image_path' },
  },
  'PUT /machine-config': {
    unknownField: { change: { vcpus: 2 }, names: 'vcpus' },
    wrongType: { change: { vcpu_count: '2' }, names: 'vcpu_count' },
    outOfRange: { change: { vcpu_count: 33 }, names: 'vcpu_count' },
    missingRequired: { change: { mem_size_mib: undefined }, names: 'mem_size_mib' },
  },
  'PATCH /machine-config': {
    unknownField: { change: { ht_enabled: true }, names: 'ht_enabled' },
    wrongType: { change: { smt: 'yes' }, names: 'smt' },
    outOfRange: { change: { mem_size_mib: 64 }, names: 'mem_size_mib' },
    // A patch has no required field but must set one: {} is refused, listing the fields.
    missingRequired: { change: { mem_size_mib: undefined }, names: 'vcpu_count' },
  },
  'PUT /drives/{drive_id}': {
    unknownField: { change: { read_only: true }, names: 'read_only' },
    wrongType: { change: { is_root_device: 'no' }, names: 'is_root_device' },
    outOfRange: { change: { cache_type: 'Fast' }, names: 'cache_type' },
    missingRequired: { change: { is_root_device: undefined }, names: 'is_root_device' },
  },
  'PATCH /drives/{drive_id}': {
    unknownField: { change: { path: '/x' }, names: 'path' },
    wrongType: { change: { path_on_host: 7 }, names: 'path_on_host' },
    outOfRange: { change: { rate_limiter: { bandwidth: { size: -1, refill_time: 100 } } }, names: 'rate_limiter.bandwidth.size' },
    missingRequired: { change: { drive_id: undefined }, names: 'drive_id' },
  },
  'PUT /network-interfaces/{iface_id}': {
    unknownField: { change: { mac: '06:00:ac:10:00:02' }, names: 'mac' },
    wrongType: { change: { host_dev_name: 5 }, names: 'host_dev_name' },
    outOfRange: { change: { mtu: 10 }, names: 'mtu' },
    missingRequired: { change: { host_dev_name: undefined }, names: 'host_dev_name' },
  },
  'PATCH /network-interfaces/{iface_id}': {
    unknownField: { change: { rate_limiter: {} }, names: 'rate_limiter' },
    wrongType: { change: { rx_rate_limiter: 'fast' }, names: 'rx_rate_limiter' },
    outOfRange: { change: { rx_rate_limiter: { ops: { size: -1, refill_time: 100 } } }, names: 'rx_rate_limiter.ops.size' },
    missingRequired: { change: { iface_id: undefined }, names: 'iface_id' },
  },
  'PUT /vsock': {
    unknownField: { change: { cid: 3 }, names: 'cid' },
    wrongType: { change: { guest_cid: '3' }, names: 'guest_cid' },
    outOfRange: { change: { guest_cid: 2 }, names: 'guest_cid' },
    missingRequired: { change: { uds_path: undefined }, names: 'uds_path' },
  },
  'PUT /entropy': {
    unknownField: { change: { rate: 1 }, names: 'rate' },
    wrongType: { change: { rate_limiter: 5 }, names: 'rate_limiter' },
    outOfRange: { change: { rate_limiter: { bandwidth: { size: 2 ** 60, refill_time: 1 } } }, names: 'rate_limiter.bandwidth.size' },
    missingRequired: { change: { rate_limiter: { bandwidth: { size: 1 } } }, names: 'refill_time' },
  },
  'PUT /logger': {
    unknownField: { change: { log_fifo: '/tmp/x' }, names: 'log_fifo' },
    wrongType: { change: { show_level: 'yes' }, names: 'show_level' },
    outOfRange: { change: { level: 'Loud' }, names: 'level' },
    missingRequired: undefined,
  },
  'PUT /metrics': {
    unknownField: { change: { metrics_fifo: '/tmp/x' }, names: 'metrics_fifo' },
    wrongType: { change: { metrics_path: 1 }, names: 'metrics_path' },
    outOfRange: { change: { metrics_path: '' }, names: 'metrics_path' },
    missingRequired: { change: { metrics_path: undefined }, names: 'metrics_path' },
  },
  'PUT /actions': {
    unknownField: { change: { type: 'InstanceStart' }, names: 'type' },
    wrongType: { change: { action_type: 1 }, names: 'action_type' },
    outOfRange: { change: { action_type: 'Reboot' }, names: 'action_type' },
    missingRequired: { change: { action_type: undefined }, names: 'action_type' },
  },
  'PATCH /vm': {
    unknownField: { change: { status: 'Paused' }, names: 'status' },
    wrongType: { change: { state: true }, names: 'state' },
    outOfRange: { change: { state: 'Stopped' }, names: 'state' },
    missingRequired: { change: { state: undefined }, names: 'state' },
  },
};

function applyChange(body: Json, change: Json): Json {
  const out: Json = { ...body };
  for (const [k, v] of Object.entries(change)) {
    if (v === undefined) delete out[k];
    else out[k] = v;
  }
  return out;
}

/** Bodies that are not JSON, or not one JSON value (the parser names line and column). */
const MALFORMED_JSON = ['{', '{"a": 1,}', "{'a': 1}", '{"a": 1} {"b": 2}', '{"a": 1, "a": 2}', '{"a": tru}', '{"a": "\u0001"}', '// c\n{}', '['.repeat(100) + ']'.repeat(100)];
/** JSON values that are not objects. */
const NOT_OBJECTS = ['[]', '[{"drive_id": "x"}]', '"text"', '42', 'null', 'true'];

type InvalidKind = 'malformed-json' | 'unknown-field' | 'wrong-type' | 'out-of-range' | 'missing-required' | 'not-an-object';
const INVALID_KINDS: readonly InvalidKind[] = ['malformed-json', 'unknown-field', 'wrong-type', 'out-of-range', 'missing-required', 'not-an-object'];

/** The body text for one kind of invalid body, and what its fault_message must contain (undefined: no such case). */
function invalidBody(valid: Json, set: InvalidSet, kind: InvalidKind, pick: number): { text: string; names: string | RegExp } | undefined {
  const breakage = (b: Breakage | undefined): { text: string; names: string } | undefined =>
    b === undefined ? undefined : { text: JSON.stringify(applyChange(valid, b.change)), names: b.names };
  switch (kind) {
    case 'malformed-json':
      return { text: MALFORMED_JSON[pick % MALFORMED_JSON.length]!, names: /malformed JSON in the request body at line \d+ column \d+/ };
    case 'unknown-field':
      return breakage(set.unknownField);
    case 'wrong-type':
      return breakage(set.wrongType);
    case 'out-of-range':
      return breakage(set.outOfRange);
    case 'missing-required':
      return breakage(set.missingRequired);
    case 'not-an-object':
      return { text: NOT_OBJECTS[pick % NOT_OBJECTS.length]!, names: /expected a JSON object|must be a JSON object/ };
  }
}

/** The resources a client sets first in most tests. */
async function configureBasics(f: Fixture): Promise<void> {
  ok(await put(f, '/boot-source', { kernel_image_path: f.kernel, boot_args: 'console=ttyS0' }), 'boot-source');
  ok(await put(f, '/machine-config', { vcpu_count: 2, mem_size_mib: 256 }), 'machine-config');
  ok(await put(f, '/drives/rootfs', { drive_id: 'rootfs', is_root_device: true, path_on_host: f.rootfs }), 'rootfs');
}

/** Everything a GET can see of the configuration, to show a refused request changed nothing. */
async function snapshot(f: Fixture): Promise<unknown> {
  const [info, config, machine] = await Promise.all([get(f, '/'), get(f, '/vm/config'), get(f, '/machine-config')]);
  return { info: info.body, config: config.body, machine: machine.body };
}

function opKey(op: ApiOperation): string {
  return `${op.method} ${op.pathTemplate}`;
}

// ---------------------------------------------------------------------------------------------
// Every operation

test('every operation of the document answers a valid request as the document says', async () => {
  await withFixture(ALL_FEATURES, async (f) => {
    const valid = validRequests(f);
    const called = new Set<string>();
    const call = async (key: string, status: number, pathOverride?: string, body?: Json): Promise<Reply> => {
      const [method, template] = key.split(' ') as [string, string];
      const known = valid[key];
      const path = pathOverride ?? known?.path ?? template;
      const reply = method === 'GET' ? await get(f, path) : await send(f, method, path, JSON.stringify(body ?? known!.body));
      assert.equal(reply.status, status, `${key}: ${reply.text}`);
      called.add(key);
      return reply;
    };

    // Before InstanceStart: the GETs on an empty configuration.
    assert.deepEqual((await call('GET /', 200)).body, { id: INSTANCE_ID, state: 'Not started', vmm_version: '0.1.0', app_name: 'tsvmm' });
    assert.deepEqual((await call('GET /version', 200)).body, { firecracker_version: '0.1.0' });
    const machine = (await call('GET /machine-config', 200)).body as Json;
    assert.equal(machine['vcpu_count'], 1);
    assert.equal(machine['mem_size_mib'], 128);
    const empty = (await call('GET /vm/config', 200)).body as Json;
    assert.equal(empty['boot-source'], undefined, 'no boot-source until one is PUT');

    // Every pre-boot resource.
    await call('PUT /boot-source', 204);
    await call('PUT /machine-config', 204);
    await call('PATCH /machine-config', 204);
    await call('PUT /drives/{drive_id}', 204, '/drives/rootfs', { drive_id: 'rootfs', is_root_device: true, path_on_host: f.rootfs });
    await call('PUT /drives/{drive_id}', 204);
    await call('PUT /network-interfaces/{iface_id}', 204);
    await call('PUT /vsock', 204);
    await call('PUT /entropy', 204);
    await call('PUT /logger', 204);
    await call('PUT /metrics', 204);
    await call('PUT /actions', 204); // FlushMetrics works before boot too

    const config = (await call('GET /vm/config', 200)).body as Record<string, Json & Json[]>;
    assert.equal(config['boot-source']!['kernel_image_path'], f.kernel);
    assert.deepEqual(
      { vcpu_count: config['machine-config']!['vcpu_count'], mem_size_mib: config['machine-config']!['mem_size_mib'] },
      { vcpu_count: 2, mem_size_mib: 512 },
      'PATCH kept vcpu_count from the PUT and changed mem_size_mib',
    );
    assert.deepEqual(
      config['drives']!.map((d) => (d as Json)['drive_id']),
      ['rootfs', 'data'],
    );
    assert.equal((config['network-interfaces']![0] as Json)['host_dev_name'], 'tap0');
    assert.equal(config['vsock']!['guest_cid'], 3);
    assert.deepEqual(config['entropy'], {});
    assert.equal(config['logger']!['log_path'], join(f.dir, 'vmm.log'));
    assert.equal(config['metrics']!['metrics_path'], join(f.dir, 'metrics.json'));
    assert.deepEqual((await call('GET /machine-config', 200)).body, config['machine-config']);

    // Boot, then every runtime operation.
    await call('PUT /actions', 204, undefined, { action_type: 'InstanceStart' });
    assert.equal(f.launched.length, 1);
    const vm = f.launched[0]!;
    assert.equal(vm.spec.kernel, f.kernel);
    assert.equal(vm.spec.vcpus, 2);
    assert.equal(vm.spec.memoryMib, 512);
    assert.equal(vm.spec.cmdline, 'console=ttyS0 reboot=k panic=1 root=/dev/vda rw');
    assert.deepEqual(vm.spec.drives?.map((d) => [d.id, d.path, d.readOnly, d.root]), [
      ['rootfs', f.rootfs, false, true],
      ['data', f.data, true, false],
    ]);
    assert.deepEqual(vm.spec.entropy, {});
    assert.equal(((await call('GET /', 200)).body as Json)['state'], 'Running');

    await call('PATCH /vm', 204);
    assert.equal(((await get(f, '/')).body as Json)['state'], 'Paused');
    await call('PATCH /vm', 204, undefined, { state: 'Resumed' });
    await call('PATCH /drives/{drive_id}', 204);
    // tsvmm has no rate limiters yet: a valid PATCH is refused, with the document's 400.
    const netPatch = await call('PATCH /network-interfaces/{iface_id}', 400);
    assert.match(faultOf(netPatch), /rx_rate_limiter: tsvmm does not support rate limiters yet/);
    await call('PUT /actions', 204, undefined, { action_type: 'SendCtrlAltDel' });
    await call('PUT /actions', 204, undefined, { action_type: 'FlushMetrics' });
    assert.deepEqual(vm.calls, ['pause', 'resume', `update-drive data ${f.data2}`, 'ctrl-alt-del']);

    assert.deepEqual([...called].sort(), listOperations().map(opKey).sort(), 'every operation of the document was called');
  });
});

// ---------------------------------------------------------------------------------------------
// Invalid bodies

test('each kind of invalid body is a 400 naming the field, and changes nothing', async () => {
  await withFixture(TODAY, async (f) => {
    await configureBasics(f);
    ok(await put(f, '/entropy', {}));
    const before = await snapshot(f);
    const valid = validRequests(f);
    const withBody = listOperations().filter((op) => op.bodySchema !== undefined);
    assert.deepEqual(withBody.map(opKey).sort(), Object.keys(INVALID).sort(), 'an invalid set for every operation with a body');
    let cases = 0;
    for (const op of withBody) {
      const key = opKey(op);
      const { path, body } = valid[key]!;
      for (const kind of INVALID_KINDS) {
        // Each malformed-JSON and non-object variant on some operation.
        const variants = kind === 'malformed-json' ? MALFORMED_JSON.length : kind === 'not-an-object' ? NOT_OBJECTS.length : 1;
        for (let pick = 0; pick < variants; pick++) {
          const bad = invalidBody(body, INVALID[key]!, kind, pick);
          if (bad === undefined) continue;
          const what = `${key} ${kind}: ${bad.text.slice(0, 80)}`;
          const reply = await send(f, op.method, path, bad.text);
          const message = faultOf(reply);
          if (typeof bad.names === 'string') assert.ok(message.includes(bad.names), `${what}: "${message}" names ${bad.names}`);
          else assert.match(message, bad.names, what);
          cases++;
        }
        assert.deepEqual(await snapshot(f), before, `${key} ${kind}: nothing changed`);
      }
    }
    // Every operation: each malformed text, each non-object, and four breakages (Logger: three).
    assert.equal(cases, withBody.length * (MALFORMED_JSON.length + NOT_OBJECTS.length + 4) - 1);
    assert.deepEqual(f.launched, [], 'no invalid request started the VM');
  });
});

test('a body the schema takes but the resource refuses (cross-field rules) is a 400 that changes nothing', async () => {
  await withFixture(TODAY, async (f) => {
    await configureBasics(f);
    const before = await snapshot(f);
    // smt takes 1 or an even vCPU count; the patch is checked with the current values.
    assert.match(faultOf(await patch(f, '/machine-config', { smt: true, vcpu_count: 3 })), /vcpu_count: must be 1 or an even number when smt is true/);
    assert.match(faultOf(await put(f, '/machine-config', { vcpu_count: 2, mem_size_mib: 257, huge_pages: '2M' })), /mem_size_mib|huge pages/);
    // A log file in a folder that does not exist.
    assert.match(faultOf(await put(f, '/logger', { log_path: join(f.dir, 'no', 'such', 'vmm.log') })), /cannot open the log file .*ENOENT/);
    assert.match(faultOf(await put(f, '/metrics', { metrics_path: join(f.dir, 'no', 'metrics.json') })), /cannot open the metrics file .*ENOENT/);
    assert.deepEqual(await snapshot(f), before);
    // …and a failed PUT /metrics did not count as the one allowed initialization.
    ok(await put(f, '/metrics', { metrics_path: join(f.dir, 'metrics.json') }));
  });
});

// ---------------------------------------------------------------------------------------------
// HTTP-level faults

test('bodies above 51,200 bytes are refused with 413; exactly 51,200 is taken', async () => {
  await withFixture(TODAY, async (f) => {
    const json = JSON.stringify({ kernel_image_path: f.kernel });
    const padded = (size: number): string => json + ' '.repeat(size - json.length);
    ok(await send(f, 'PUT', '/boot-source', padded(MAX_BODY_BYTES)), 'a body of exactly the limit');
    for (const size of [MAX_BODY_BYTES + 1, 60_000, 1_000_000]) {
      for (const agent of [false as const, undefined]) {
        const reply = await send(f, 'PUT', '/boot-source', padded(size), agent === false ? { agent } : {});
        const message = faultOf(reply, 413);
        assert.match(message, /larger than the limit of 51200/, message);
        assert.equal(reply.headers.connection, 'close');
      }
    }
    // An oversized body on a path that does not exist, or on a GET, is refused just the same.
    faultOf(await send(f, 'PUT', '/nowhere', 'x'.repeat(MAX_BODY_BYTES + 10)), 413);
    assert.equal((await get(f, '/')).status, 200);
  });
});

test('unknown paths, wrong verbs, missing and unexpected bodies are 400s', async () => {
  await withFixture(TODAY, async (f) => {
    await configureBasics(f);
    const before = await snapshot(f);
    const invalidPath = /^Invalid request method and\/or path: /;
    for (const [method, path] of [
      ['GET', '/nowhere'],
      ['PUT', '/boot-source/extra'],
      ['PUT', '/drives/'],
      ['PUT', '/drives'],
      ['GET', '//'],
      ['GET', '/VERSION'],
      ['POST', '/actions'],
      ['DELETE', '/drives/rootfs'],
      ['GET', '/boot-source'],
      ['GET', '/actions'],
      ['PUT', '/'],
      ['PATCH', '/boot-source'],
      ['PUT', '/vm'],
      ['OPTIONS', '/'],
    ] as const) {
      const body = method === 'GET' || method === 'OPTIONS' || method === 'DELETE' ? undefined : JSON.stringify({ kernel_image_path: f.kernel });
      const message = faultOf(await send(f, method, path, body));
      assert.match(message, invalidPath, `${method} ${path}`);
      assert.ok(message.includes(`${method} ${path}`), message);
    }
    // A query string does not change the operation.
    assert.equal((await get(f, '/version?x=1')).status, 200);
    // No body where one is needed (none at all, an empty one, only whitespace).
    for (const path of ['/boot-source', '/machine-config', '/drives/rootfs', '/actions', '/logger', '/metrics']) {
      assert.match(faultOf(await send(f, 'PUT', path, undefined)), /body is empty|needs a JSON body/, path);
      assert.match(faultOf(await send(f, 'PUT', path, '')), /body is empty|needs a JSON body/, path);
      assert.match(faultOf(await send(f, 'PUT', path, ' \r\n\t ')), /body is empty|needs a JSON body/, path);
    }
    assert.match(faultOf(await send(f, 'PATCH', '/vm', undefined)), /body is empty|needs a JSON body/);
    // A GET with a body.
    assert.match(faultOf(await send(f, 'GET', '/machine-config', '{"vcpu_count": 1}')), /takes no request body/);
    assert.deepEqual(await snapshot(f), before);
  });
});

test('a malformed HTTP request is a 400, and the server answers the next connection', async () => {
  await withFixture(TODAY, async (f) => {
    const malformed = [
      'THIS IS NOT HTTP\r\n\r\n',
      'GET / HTTP/1.1\r\nHost localhost\r\n\r\n',
      'PUT /boot-source HTTP/1.1\r\nHost: localhost\r\nContent-Length: abc\r\n\r\n{}',
      'PUT /boot-source HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}',
      'GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: ' + 'a'.repeat(20_000) + '\r\n\r\n',
      '\u0000\u0001\u0002\r\n\r\n',
    ];
    for (const text of malformed) {
      const raw = await rawExchange(f, text);
      const answer = parseRawResponse(raw);
      assert.equal(answer.status, 400, JSON.stringify(text.slice(0, 60)));
      assert.deepEqual(validateValue(ERROR_SCHEMA, answer.body), [], raw);
      assert.match((answer.body as { fault_message: string }).fault_message, /^Malformed HTTP request: /);
      assert.match(answer.headers, /connection: close/i);
      const info = await get(f, '/', { agent: false });
      assert.equal(info.status, 200, 'the next connection is answered');
    }
    // A valid request on a raw connection works, so the raw client above is not the problem.
    const answer = parseRawResponse(await rawExchange(f, 'GET /version HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n'));
    assert.deepEqual(answer.body, { firecracker_version: '0.1.0' });
  });
});

test('HTTP/1.1 requests without a Host header are served (Firecracker does not require one)', async () => {
  await withFixture(TODAY, async (f) => {
    const body = JSON.stringify({ kernel_image_path: f.kernel });
    const answers = parseRawResponses(
      await rawExchange(
        f,
        `PUT /boot-source HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}` +
          'GET /vm/config HTTP/1.1\r\nConnection: close\r\n\r\n',
      ),
    );
    assert.deepEqual(
      answers.map((a) => a.status),
      [204, 200],
    );
    assert.equal(((answers[1]!.body as Json)['boot-source'] as Json)['kernel_image_path'], f.kernel);
  });
});

test('pipelined requests are answered in order, and garbage behind them does not overtake them', async () => {
  await withFixture(TODAY, async (f) => {
    await configureBasics(f);
    let release: () => void = () => {};
    f.launchGate = new Promise<void>((resolve) => (release = resolve));
    const start = JSON.stringify({ action_type: 'InstanceStart' });
    const pause = JSON.stringify({ state: 'Paused' });
    const exchange = rawExchange(
      f,
      `PUT /actions HTTP/1.1\r\nHost: localhost\r\nContent-Length: ${start.length}\r\n\r\n${start}` +
        'GET / HTTP/1.1\r\nHost: localhost\r\n\r\n' +
        `PATCH /vm HTTP/1.1\r\nHost: localhost\r\nContent-Length: ${pause.length}\r\n\r\n${pause}` +
        'GET /nowhere HTTP/1.1\r\nHost: localhost\r\n\r\n' +
        'NOT HTTP AT ALL\r\n\r\n',
    );
    await sleep(30);
    f.launchGate = undefined;
    release();
    const answers = parseRawResponses(await exchange);
    assert.deepEqual(
      answers.map((a) => a.status),
      [204, 200, 204, 400, 400],
      'one answer per request, in order, the malformed one last',
    );
    for (const [i, key] of ['PUT /actions', 'GET /', 'PATCH /vm'].entries()) {
      const [method, path] = key.split(' ') as [string, string];
      const route = matchRoute(method, path);
      assert.ok('operation' in route);
      assert.deepEqual(validateResponse(route.operation, answers[i]!.status, answers[i]!.body), [], key);
    }
    for (const answer of answers.slice(3)) assert.deepEqual(validateValue(ERROR_SCHEMA, answer.body), []);
    assert.equal((answers[1]!.body as Json)['state'], 'Running');
    assert.match((answers[3]!.body as { fault_message: string }).fault_message, /Invalid request method and\/or path: GET \/nowhere/);
    assert.match((answers[4]!.body as { fault_message: string }).fault_message, /^Malformed HTTP request: /);
    assert.deepEqual(f.launched[0]!.calls, ['pause']);
    assert.equal(((await get(f, '/')).body as Json)['state'], 'Paused');
  });
});

test('a body that is not UTF-8 is a 400; UTF-8 text and a byte-order mark are taken', async () => {
  await withFixture(TODAY, async (f) => {
    await configureBasics(f);
    const before = await snapshot(f);
    const latin1 = Buffer.concat([Buffer.from(`{"kernel_image_path": "${f.dir}/caf`), Buffer.from([0xe9]), Buffer.from('.bin"}')]);
    assert.match(faultOf(await send(f, 'PUT', '/boot-source', latin1)), /not valid UTF-8/);
    const truncated = Buffer.concat([Buffer.from('{"boot_args": "x'), Buffer.from([0xe2, 0x82]), Buffer.from(`", "kernel_image_path": "${f.kernel}"}`)]);
    assert.match(faultOf(await send(f, 'PUT', '/boot-source', truncated)), /not valid UTF-8/);
    assert.deepEqual(await snapshot(f), before);
    // A file name in UTF-8, sent with a byte-order mark, arrives intact.
    const name = join(f.dir, 'café-ядро-🐧.bin');
    writeFileSync(name, 'kernel');
    ok(await send(f, 'PUT', '/boot-source', Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(JSON.stringify({ kernel_image_path: name }))])));
    assert.equal((((await get(f, '/vm/config')).body as Json)['boot-source'] as Json)['kernel_image_path'], name);
    ok(await action(f, 'InstanceStart'));
    assert.equal(f.launched[0]!.spec.kernel, name);
  });
});

// ---------------------------------------------------------------------------------------------
// State rules

test('pre-boot resources are refused after InstanceStart, runtime ones before it', async () => {
  await withFixture(TODAY, async (f) => {
    await configureBasics(f);
    ok(await put(f, '/drives/data', { drive_id: 'data', is_root_device: false, path_on_host: f.data }));
    // Runtime operations before boot.
    assert.equal(faultOf(await patch(f, '/vm', { state: 'Paused' })), NOT_SUPPORTED_BEFORE_START);
    assert.equal(faultOf(await patch(f, '/vm', { state: 'Resumed' })), NOT_SUPPORTED_BEFORE_START);
    assert.equal(faultOf(await patch(f, '/drives/data', { drive_id: 'data', path_on_host: f.data2 })), NOT_SUPPORTED_BEFORE_START);
    assert.equal(faultOf(await patch(f, '/network-interfaces/eth0', { iface_id: 'eth0' })), NOT_SUPPORTED_BEFORE_START);
    assert.equal(faultOf(await action(f, 'SendCtrlAltDel')), NOT_SUPPORTED_BEFORE_START);
    assert.equal(((await get(f, '/')).body as Json)['state'], 'Not started');

    ok(await action(f, 'InstanceStart'));
    assert.equal(f.launched.length, 1);
    const before = await snapshot(f);
    const valid = validRequests(f);
    const preBoot = [
      'PUT /boot-source',
      'PUT /machine-config',
      'PATCH /machine-config',
      'PUT /drives/{drive_id}',
      'PUT /network-interfaces/{iface_id}',
      'PUT /vsock',
      'PUT /entropy',
      'PUT /logger',
      'PUT /metrics',
    ];
    for (const key of preBoot) {
      const { path, body } = valid[key]!;
      const method = key.split(' ')[0]!;
      assert.equal(faultOf(await send(f, method, path, JSON.stringify(body))), NOT_SUPPORTED_AFTER_START, key);
    }
    // A second InstanceStart.
    assert.equal(faultOf(await action(f, 'InstanceStart')), NOT_SUPPORTED_AFTER_START);
    assert.equal(f.launched.length, 1, 'launched once');
    assert.deepEqual(await snapshot(f), before);
    assert.deepEqual(f.launched[0]!.calls, []);
  });
});

test('InstanceStart needs a boot source and the files the configuration names', async () => {
  await withFixture(TODAY, async (f) => {
    assert.match(faultOf(await action(f, 'InstanceStart')), /without kernel configuration: PUT \/boot-source first/);
    ok(await put(f, '/boot-source', { kernel_image_path: join(f.dir, 'missing-vmlinux') }));
    assert.match(faultOf(await action(f, 'InstanceStart')), /^boot-source\.kernel_image_path: .*missing-vmlinux does not exist$/);
    ok(await put(f, '/boot-source', { kernel_image_path: 'vmlinux' })); // relative to baseDir
    ok(await put(f, '/drives/rootfs', { drive_id: 'rootfs', is_root_device: true, path_on_host: join(f.dir, 'gone.ext4') }));
    assert.match(faultOf(await action(f, 'InstanceStart')), /^drives\[0\]\.path_on_host: .*gone\.ext4 does not exist$/);
    assert.equal(((await get(f, '/')).body as Json)['state'], 'Not started');
    assert.equal(f.launched.length, 0);
    // A failed start leaves the API usable: fix the drive and start.
    ok(await put(f, '/drives/rootfs', { drive_id: 'rootfs', is_root_device: true, path_on_host: f.rootfs }));
    ok(await action(f, 'InstanceStart'));
    assert.equal(f.launched.length, 1);
    assert.equal(((await get(f, '/')).body as Json)['state'], 'Running');
  });
});

test('InstanceStart that fails in launch leaves the VMM not started and able to retry', async () => {
  await withFixture(TODAY, async (f) => {
    await configureBasics(f);
    f.launchFailure = new TsvmmError('cannot open /dev/kvm: ENOENT (test)');
    assert.equal(faultOf(await action(f, 'InstanceStart')), 'cannot open /dev/kvm: ENOENT (test)');
    assert.equal(((await get(f, '/')).body as Json)['state'], 'Not started');
    ok(await put(f, '/machine-config', { vcpu_count: 1, mem_size_mib: 128 }), 'still pre-boot');
    ok(await action(f, 'InstanceStart'));
    assert.equal(f.launched.length, 1);
  });
});

test('drives: ids must match, one root, a PUT replaces, a rate limiter is refused', async () => {
  await withFixture(TODAY, async (f) => {
    await configureBasics(f);
    assert.equal(
      faultOf(await put(f, '/drives/data', { drive_id: 'other', is_root_device: false, path_on_host: f.data })),
      'The id from the path [data] does not match the id from the body [other]!',
    );
    const before = await snapshot(f);
    assert.match(
      faultOf(await put(f, '/drives/root2', { drive_id: 'root2', is_root_device: true, path_on_host: f.data })),
      /drives\[1\]\.is_root_device: only one device can be the root device, and drives\[0\] already is/,
    );
    // A rate limiter that limits something is a feature tsvmm does not have yet.
    assert.match(
      faultOf(
        await put(f, '/drives/data', {
          drive_id: 'data',
          is_root_device: false,
          path_on_host: f.data,
          rate_limiter: { bandwidth: { size: 1_000_000, refill_time: 100 } },
        }),
      ),
      /^drives\[1\]\.rate_limiter: tsvmm does not support rate limiters yet; remove it from the configuration$/,
    );
    assert.deepEqual(await snapshot(f), before, 'refused drives were not added');

    // PUT of an existing drive_id replaces it (and may make another drive the root).
    ok(await put(f, '/drives/data', { drive_id: 'data', is_root_device: false, path_on_host: f.data }));
    ok(await put(f, '/drives/data', { drive_id: 'data', is_root_device: false, path_on_host: f.data2, is_read_only: true }));
    let drives = ((await get(f, '/vm/config')).body as { drives: Json[] }).drives;
    assert.deepEqual(
      drives.map((d) => [d['drive_id'], d['path_on_host'], d['is_read_only']]),
      [
        ['rootfs', f.rootfs, false],
        ['data', f.data2, true],
      ],
    );
    ok(await put(f, '/drives/rootfs', { drive_id: 'rootfs', is_root_device: false, path_on_host: f.rootfs }));
    ok(await put(f, '/drives/data', { drive_id: 'data', is_root_device: true, path_on_host: f.data2 }));
    drives = ((await get(f, '/vm/config')).body as { drives: Json[] }).drives;
    assert.deepEqual(
      drives.map((d) => [d['drive_id'], d['is_root_device']]),
      [
        ['rootfs', false],
        ['data', true],
      ],
    );
    // Percent-encoded ids in the path are decoded before the comparison.
    ok(await put(f, '/drives/scratch%20disk', { drive_id: 'scratch disk', is_root_device: false, path_on_host: f.data }));
    ok(await action(f, 'InstanceStart'));
    assert.deepEqual(f.launched[0]!.spec.drives?.map((d) => d.id), ['rootfs', 'data', 'scratch disk']);
    assert.match(f.launched[0]!.spec.cmdline, / root=\/dev\/vda rw$/);

    // PATCH /drives after boot: ids must match, the drive must exist, and a new image reaches the VM.
    assert.equal(
      faultOf(await patch(f, '/drives/data', { drive_id: 'rootfs', path_on_host: f.data })),
      'The id from the path [data] does not match the id from the body [rootfs]!',
    );
    assert.match(faultOf(await patch(f, '/drives/nope', { drive_id: 'nope', path_on_host: f.data })), /Invalid block device ID: no drive has drive_id 'nope'/);
    assert.match(
      faultOf(await patch(f, '/drives/data', { drive_id: 'data', path_on_host: f.data, rate_limiter: { ops: { size: 10, refill_time: 1 } } })),
      /rate_limiter: tsvmm does not support rate limiters yet/,
    );
    assert.deepEqual(f.launched[0]!.calls, [], 'refused PATCHes did not reach the VM');
    ok(await patch(f, '/drives/data', { drive_id: 'data', path_on_host: f.data }));
    ok(await patch(f, '/drives/data', { drive_id: 'data' }), 'a PATCH that changes nothing');
    assert.deepEqual(f.launched[0]!.calls, [`update-drive data ${f.data}`]);
    drives = ((await get(f, '/vm/config')).body as { drives: Json[] }).drives;
    assert.equal(drives.find((d) => d['drive_id'] === 'data')!['path_on_host'], f.data, 'GET /vm/config shows the new image');
  });
});

test('features tsvmm does not support yet are refused when PUT, with one line', async () => {
  await withFixture(TODAY, async (f) => {
    await configureBasics(f);
    const before = await snapshot(f);
    const valid = validRequests(f);
    assert.equal(
      faultOf(await put(f, valid['PUT /network-interfaces/{iface_id}']!.path, valid['PUT /network-interfaces/{iface_id}']!.body)),
      'network-interfaces[0]: tsvmm does not support network interfaces (virtio-net) yet; remove it from the configuration',
    );
    assert.equal(faultOf(await put(f, '/vsock', valid['PUT /vsock']!.body)), 'vsock: tsvmm does not support vsock (virtio-vsock) yet; remove it from the configuration');
    assert.match(faultOf(await put(f, '/entropy', { rate_limiter: { ops: { size: 100, refill_time: 1000 } } })), /^entropy\.rate_limiter: tsvmm does not support rate limiters yet/);
    assert.match(faultOf(await patch(f, '/machine-config', { smt: true })), /^machine-config\.smt: tsvmm does not support SMT/);
    assert.match(faultOf(await put(f, '/machine-config', { vcpu_count: 2, mem_size_mib: 256, huge_pages: '2M' })), /^machine-config\.huge_pages: tsvmm does not support huge pages/);
    assert.match(
      faultOf(await put(f, '/drives/vhost', { drive_id: 'vhost', is_root_device: false, socket: join(f.dir, 'vhost.sock') })),
      /^drives\[1\]\.socket: tsvmm does not support vhost-user block devices yet/,
    );
    assert.deepEqual(await snapshot(f), before);
    // A rate limiter that limits nothing is no rate limiter.
    ok(await put(f, '/entropy', { rate_limiter: { bandwidth: { size: 0, refill_time: 0 } } }));
  });
});

test('PATCH /vm pauses and resumes the VM; Ctrl-Alt-Del reaches it', async () => {
  await withFixture(TODAY, async (f) => {
    await configureBasics(f);
    ok(await action(f, 'InstanceStart'));
    const vm = f.launched[0]!;
    const state = async (): Promise<unknown> => ((await get(f, '/')).body as Json)['state'];
    assert.equal(await state(), 'Running');
    ok(await patch(f, '/vm', { state: 'Paused' }));
    assert.equal(await state(), 'Paused');
    ok(await patch(f, '/vm', { state: 'Paused' }), 'pausing a paused VM is a no-op');
    assert.equal(await state(), 'Paused');
    ok(await patch(f, '/vm', { state: 'Resumed' }));
    assert.equal(await state(), 'Running');
    ok(await patch(f, '/vm', { state: 'Resumed' }), 'resuming a running VM is a no-op');
    assert.deepEqual(vm.calls, ['pause', 'resume']);

    ok(await action(f, 'SendCtrlAltDel'));
    assert.deepEqual(vm.calls, ['pause', 'resume', 'ctrl-alt-del']);
    vm.ctrlAltDelAccepted = false;
    assert.match(faultOf(await action(f, 'SendCtrlAltDel')), /did not take Ctrl-Alt-Del/);
  });
});

test('FlushMetrics needs PUT /metrics, then appends a JSON line with the API and VM counters', async () => {
  await withFixture(TODAY, async (f) => {
    await configureBasics(f);
    assert.match(faultOf(await action(f, 'FlushMetrics')), /Metrics are not configured: PUT \/metrics/);
    const path = join(f.dir, 'metrics.json');
    ok(await put(f, '/metrics', { metrics_path: path }));
    assert.match(faultOf(await put(f, '/metrics', { metrics_path: join(f.dir, 'other.json') })), /Reinitialization of metrics not allowed/);
    ok(await action(f, 'FlushMetrics'));
    ok(await action(f, 'InstanceStart'));
    ok(await action(f, 'FlushMetrics'));
    const lines = readFileSync(path, 'utf8').split('\n');
    assert.equal(lines.pop(), '', 'every line ends with a newline');
    assert.equal(lines.length, 2);
    const [first, second] = lines.map((l) => JSON.parse(l) as Json) as [Json, Json];
    for (const line of [first, second]) {
      assert.equal(typeof line['utc_timestamp_ms'], 'number');
      const api = line['api_server'] as Json;
      assert.equal(typeof api['requests'], 'number');
      assert.equal(typeof api['bad_requests'], 'number');
    }
    assert.equal(first['vcpu'], undefined, 'no VM counters before boot');
    assert.ok((second['api_server'] as Json)['requests'] as number > ((first['api_server'] as Json)['requests'] as number));
    assert.ok(((second['api_server'] as Json)['bad_requests'] as number) >= 2, 'the two refusals above count');
    assert.deepEqual(second['vcpu'], { exits: 11, io_exits: 5, mmio_exits: 3, intr_exits: 2 });
    assert.deepEqual((second['block'] as Json)['rootfs'], { read_count: 7, write_count: 1, read_bytes: 28672, write_bytes: 4096, flush_count: 1, errors: 0, immediate_count: 5 });
    assert.ok(second['utc_timestamp_ms'] as number >= (first['utc_timestamp_ms'] as number));
  });
});

test('PUT /logger sends the VMM log to log_path', async () => {
  await withFixture(TODAY, async (f) => {
    await configureBasics(f);
    const path = join(f.dir, 'vmm.log');
    ok(await put(f, '/logger', { log_path: path, level: 'info', show_level: true }), 'level is case-insensitive');
    ok(await action(f, 'InstanceStart'));
    ok(await patch(f, '/vm', { state: 'Paused' }));
    ok(await patch(f, '/vm', { state: 'Resumed' }));
    const lines = readFileSync(path, 'utf8').trimEnd().split('\n');
    for (const line of lines) assert.match(line, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \[conf-vm:main:\w+\] /, line);
    assert.ok(lines.some((l) => l.includes('[conf-vm:main:Info] started: 2 vCPU(s), 256 MiB')), lines.join('\n'));
    assert.ok(lines.some((l) => / paused$/.test(l)), lines.join('\n'));
    assert.ok(lines.some((l) => / resumed$/.test(l)), lines.join('\n'));
    const config = (await get(f, '/vm/config')).body as Json;
    assert.deepEqual(config['logger'], { level: 'Info', show_level: true, show_log_origin: false, log_path: path }, 'GET shows the canonical level');
  });
});

test('PUT /logger before boot can move the log; level Warning keeps info lines out', async () => {
  await withFixture(TODAY, async (f) => {
    await configureBasics(f);
    const first = join(f.dir, 'first.log');
    const second = join(f.dir, 'second.log');
    ok(await put(f, '/logger', { log_path: first, level: 'Info' }));
    ok(await put(f, '/logger', { log_path: second, level: 'warn' }));
    ok(await action(f, 'InstanceStart'));
    assert.equal(readFileSync(first, 'utf8'), '');
    assert.equal(readFileSync(second, 'utf8'), '', 'info lines are below Warning');
  });
});

test('once the VM has ended, runtime calls are 400 and onExit has fired', async () => {
  await withFixture(TODAY, async (f) => {
    await configureBasics(f);
    const metricsPath = join(f.dir, 'metrics.json');
    ok(await put(f, '/metrics', { metrics_path: metricsPath }));
    ok(await action(f, 'InstanceStart'));
    const vm = f.launched[0]!;
    assert.deepEqual(f.exits, []);
    vm.end({ reason: 'poweroff', status: 0, message: 'the guest powered off' });
    await until(() => f.exits.length > 0, 'onExit');
    assert.deepEqual(f.exits, [{ reason: 'poweroff', status: 0, message: 'the guest powered off' }]);
    assert.deepEqual(f.vmm.exited, f.exits[0]);
    const ended = /^The microVM has already ended \(the guest powered off\)\.$/;
    assert.match(faultOf(await patch(f, '/vm', { state: 'Paused' })), ended);
    assert.match(faultOf(await action(f, 'SendCtrlAltDel')), ended);
    assert.match(faultOf(await patch(f, '/drives/rootfs', { drive_id: 'rootfs', path_on_host: f.data })), ended);
    assert.equal(faultOf(await action(f, 'InstanceStart')), NOT_SUPPORTED_AFTER_START);
    assert.equal(faultOf(await put(f, '/machine-config', { vcpu_count: 1, mem_size_mib: 128 })), NOT_SUPPORTED_AFTER_START);
    assert.deepEqual(vm.calls, [], 'nothing reached the ended VM');
    // The GETs still answer, and metrics still flush, with the VM's final counters (an in-process
    // VM keeps them after it ended): the exit wrote one line.
    assert.equal((await get(f, '/')).status, 200);
    ok(await action(f, 'FlushMetrics'));
    const lines = readFileSync(metricsPath, 'utf8').trimEnd().split('\n').map((l) => JSON.parse(l) as Json);
    assert.equal(lines.length, 2, 'one line when the VM ended, one for FlushMetrics');
    for (const line of lines) assert.deepEqual(line['vcpu'], { exits: 11, io_exits: 5, mmio_exits: 3, intr_exits: 2 });
    assert.equal(f.exits.length, 1, 'onExit fired once');
  });
});

test('closing the controller with the VM running stops it, and its last lines still reach the log and metrics files', async () => {
  await withFixture(TODAY, async (f) => {
    await configureBasics(f);
    const log = join(f.dir, 'vmm.log');
    const metrics = join(f.dir, 'metrics.json');
    ok(await put(f, '/logger', { log_path: log, level: 'Info' }));
    ok(await put(f, '/metrics', { metrics_path: metrics }));
    ok(await action(f, 'InstanceStart'));
    f.vmm.close();
    await until(() => f.exits.length > 0, 'onExit');
    assert.deepEqual(f.launched[0]!.calls, ['stop']);
    assert.equal(f.exits[0]!.reason, 'stopped');
    assert.match(readFileSync(log, 'utf8'), /\] the microVM ended: the API server was closed\n$/);
    const lines = readFileSync(metrics, 'utf8').trimEnd().split('\n');
    assert.equal(lines.length, 1, 'the exit wrote a metrics line');
    assert.equal(typeof (JSON.parse(lines[0]!) as Json)['api_server'], 'object');
    f.vmm.close(); // again: nothing left to do
  });
});

// ---------------------------------------------------------------------------------------------
// Concurrency and robustness

test('requests sent concurrently are handled and answered in arrival order', async () => {
  await withFixture(TODAY, async (f) => {
    await configureBasics(f);
    let release: () => void = () => {};
    f.launchGate = new Promise<void>((resolve) => (release = resolve));
    // Count requests as they reach the controller's queue, to send the next only after.
    let queued = 0;
    const serialize = f.vmm.serialize.bind(f.vmm);
    f.vmm.serialize = <T>(op: () => Promise<T> | T): Promise<T> => {
      queued++;
      return serialize(op);
    };
    const sequence: [string, string, Json | undefined][] = [
      ['PUT', '/actions', { action_type: 'InstanceStart' }],
      ['GET', '/', undefined],
      ['PUT', '/machine-config', { vcpu_count: 1, mem_size_mib: 128 }],
      ['PATCH', '/vm', { state: 'Paused' }],
      ['GET', '/', undefined],
      ['PATCH', '/drives/rootfs', { drive_id: 'rootfs', path_on_host: f.data2 }],
      ['PATCH', '/vm', { state: 'Resumed' }],
      ['GET', '/vm/config', undefined],
      ['GET', '/', undefined],
    ];
    const answered: number[] = [];
    const replies: Promise<Reply>[] = [];
    for (const [i, [method, path, body]] of sequence.entries()) {
      const reply = send(f, method, path, body === undefined ? undefined : JSON.stringify(body), { agent: false });
      replies.push(reply.then((r) => (answered.push(i), r)));
      await until(() => queued === i + 1, `request ${i} to be queued`);
    }
    // Everything waits behind the InstanceStart still in launch().
    await sleep(20);
    assert.deepEqual(answered, [], 'nothing answered while InstanceStart is in progress');
    // Pausing takes a while: the requests behind it must still wait for it.
    f.vmDelayMs = 30;
    f.launchGate = undefined;
    release();
    const results = await Promise.all(replies);
    assert.deepEqual(answered, sequence.map((_, i) => i), 'answered in the order sent');
    assert.deepEqual(
      results.map((r) => r.status),
      [204, 200, 400, 204, 200, 204, 204, 200, 200],
    );
    assert.equal((results[1]!.body as Json)['state'], 'Running');
    assert.equal(faultOf(results[2]!), NOT_SUPPORTED_AFTER_START);
    assert.equal((results[4]!.body as Json)['state'], 'Paused');
    assert.equal(((results[7]!.body as Json)['machine-config'] as Json)['vcpu_count'], 2);
    assert.equal((results[8]!.body as Json)['state'], 'Running');
    assert.deepEqual(f.launched[0]!.calls, ['pause', `update-drive rootfs ${f.data2}`, 'resume']);
  });
});

test('a client that hangs up while its request waits in the queue does not stall the ones behind it', async () => {
  await withFixture(TODAY, async (f) => {
    await configureBasics(f);
    let release: () => void = () => {};
    f.launchGate = new Promise<void>((resolve) => (release = resolve));
    let queued = 0;
    const serialize = f.vmm.serialize.bind(f.vmm);
    f.vmm.serialize = <T>(op: () => Promise<T> | T): Promise<T> => {
      queued++;
      return serialize(op);
    };
    const start = send(f, 'PUT', '/actions', JSON.stringify({ action_type: 'InstanceStart' }), { agent: false });
    await until(() => queued === 1, 'InstanceStart queued');
    // Two requests whose clients go away before their answer: one read in full, one cut mid-body.
    const body = JSON.stringify({ state: 'Paused' });
    const gone = connect(f.sock);
    gone.on('error', () => undefined);
    gone.write(`PATCH /vm HTTP/1.1\r\nHost: localhost\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    await until(() => queued === 2, 'PATCH /vm queued');
    gone.destroy();
    await abortMidBody(f, '/machine-config', JSON.stringify({ vcpu_count: 1, mem_size_mib: 128 }));
    const info = get(f, '/', { agent: false });
    await until(() => queued === 3, 'GET / queued');
    release();
    ok(await start);
    assert.equal(((await info).body as Json)['state'], 'Paused', 'the PATCH ran although nobody waited for its answer');
    assert.deepEqual(f.launched[0]!.calls, ['pause']);
    assert.equal((((await get(f, '/vm/config')).body as Json)['machine-config'] as Json)['vcpu_count'], 2, 'the cut request did nothing');
  });
});

/** A small deterministic generator, so a failing run can be repeated. */
const random = prng;

test('1,000 mixed bad requests in a row leave the server serving and the state unchanged', async () => {
  await withFixture(TODAY, async (f) => {
    await configureBasics(f);
    const before = await snapshot(f);
    const seed = Number(process.env['TSVMM_API_SEED'] ?? 20_260_514);
    const rnd = random(seed);
    const pick = <T>(list: readonly T[]): T => list[Math.floor(rnd() * list.length)]!;
    const valid = validRequests(f);
    const withBody = listOperations().filter((op) => op.bodySchema !== undefined);
    const badRequestsBefore = f.vmm.apiMetrics.bad_requests;
    const kinds = [...INVALID_KINDS, 'oversized', 'unknown-path', 'wrong-verb', 'empty-body', 'invalid-utf8', 'malformed-http', 'aborted'] as const;
    const counts: Record<string, number> = {};
    let answered = 0;

    // Generate every request up front (the generator's order is then independent of timing).
    type Job = () => Promise<void>;
    const jobs: Job[] = [];
    for (let n = 0; n < 1000; n++) {
      const kind = pick(kinds);
      const op = pick(withBody);
      const { path, body } = valid[opKey(op)]!;
      const connection = pick(['kept-alive', 'new'] as const);
      const options: SendOptions = connection === 'new' ? { agent: false } : {};
      const what = `#${n} (seed ${seed}) ${kind} ${opKey(op)} on a ${connection} connection`;
      counts[kind] = (counts[kind] ?? 0) + 1;
      const expect400 = async (method: string, p: string, text: string | Buffer | undefined, status = 400): Promise<void> => {
        const reply = await send(f, method, p, text, options);
        assert.equal(reply.status, status, `${what}: ${reply.text}`);
        answered++;
      };
      switch (kind) {
        case 'oversized': {
          const size = MAX_BODY_BYTES + 1 + Math.floor(rnd() * 20_000);
          jobs.push(() => expect400(op.method, path, '{' + ' '.repeat(size - 2) + '}', 413));
          break;
        }
        case 'unknown-path': {
          const p = pick(['/nowhere', '/drives', `${path}/x`, '/actions/', '/%zz', '/machine-configs?x=1']);
          jobs.push(() => expect400(op.method, p, JSON.stringify(body)));
          break;
        }
        case 'wrong-verb': {
          const method = pick(['POST', 'DELETE', op.method === 'PUT' ? 'PATCH' : 'PUT']);
          // /machine-config takes both PUT and PATCH; /drives/x too: pick a verb no path takes.
          const m = (op.pathTemplate === '/machine-config' || op.pathTemplate.includes('{')) && (method === 'PUT' || method === 'PATCH') ? 'POST' : method;
          jobs.push(() => expect400(m, path, JSON.stringify(body)));
          break;
        }
        case 'empty-body':
          jobs.push(() => expect400(op.method, path, pick([undefined, '', '   '])));
          break;
        case 'invalid-utf8': {
          const text = JSON.stringify(body);
          const at = 1 + Math.floor(rnd() * (text.length - 2));
          const bytes = Buffer.concat([Buffer.from(text.slice(0, at)), Buffer.from([pick([0xff, 0xc0, 0xe9, 0x80])]), Buffer.from(text.slice(at))]);
          jobs.push(() => expect400(op.method, path, bytes));
          break;
        }
        case 'malformed-http': {
          const text = pick(['NOT HTTP\r\n\r\n', `PUT ${path} HTTP/1.1\r\nContent-Length: -1\r\n\r\n`, 'GET / HTTP/1.1\r\nBad Header\r\n\r\n', `${op.method} ${path} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n`]);
          jobs.push(async () => {
            const answer = parseRawResponse(await rawExchange(f, text));
            assert.equal(answer.status, 400, what);
            answered++;
          });
          break;
        }
        case 'aborted':
          jobs.push(() => abortMidBody(f, path, JSON.stringify(body)));
          break;
        default: {
          let bad = invalidBody(body, INVALID[opKey(op)]!, kind, Math.floor(rnd() * 100));
          // Logger has no required field: send it a non-object instead.
          bad ??= invalidBody(body, INVALID[opKey(op)]!, 'not-an-object', 0)!;
          const text = bad.text;
          jobs.push(() => expect400(op.method, path, text));
        }
      }
    }
    // Four clients at a time, in generation order.
    let next = 0;
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        while (next < jobs.length) await jobs[next++]!();
      }),
    );
    const aborted = counts['aborted'] ?? 0;
    assert.equal(answered, 1000 - aborted, `every request but the aborted ones was answered (${JSON.stringify(counts)})`);
    for (const kind of kinds) assert.ok((counts[kind] ?? 0) > 20, `${kind} was tried (${JSON.stringify(counts)})`);
    assert.ok(f.vmm.apiMetrics.bad_requests - badRequestsBefore >= answered, 'each one counted as a bad request');

    assert.equal((await get(f, '/')).status, 200);
    assert.deepEqual(await snapshot(f), before, 'the bad requests changed nothing');
    ok(await put(f, '/machine-config', { vcpu_count: 4, mem_size_mib: 1024 }));
    assert.equal(((await get(f, '/machine-config', { agent: false })).body as Json)['vcpu_count'], 4);
    ok(await action(f, 'InstanceStart'));
    assert.equal(f.launched[0]!.spec.vcpus, 4);
  });
});

// ---------------------------------------------------------------------------------------------
// Server lifecycle

test('listen refuses a path that exists or a missing folder; close removes the socket', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tsvmm-api-'));
  const vmm = new VmmController({ id: INSTANCE_ID, version: '0.1.0', supported: TODAY, launch: async (spec) => new RecordingVm(spec) });
  try {
    const refusal = async (path: string, pattern: RegExp): Promise<void> => {
      await assert.rejects(ApiServer.listen(vmm, path), (e: unknown) => {
        assert.ok(e instanceof ApiSocketError, String(e));
        assert.doesNotMatch(e.message, /\n/);
        assert.match(e.message, pattern);
        return true;
      });
    };
    const file = join(dir, 'a-file');
    writeFileSync(file, 'x');
    await refusal(file, /already exists as a file; remove it or pick another --api-sock path/);
    assert.equal(readFileSync(file, 'utf8'), 'x', 'the file was left alone');

    // A socket someone else listens on.
    const other = join(dir, 'other.sock');
    const net = createNetServer();
    await new Promise<void>((resolve) => net.listen(other, resolve));
    try {
      await refusal(other, /already exists as a socket/);
    } finally {
      await new Promise<void>((resolve) => net.close(() => resolve()));
    }
    await refusal(join(dir, 'missing', 'api.sock'), /the folder .*missing does not exist/);

    // close() removes the socket file, drops kept-alive connections, and may be called twice.
    const sock = join(dir, 'api.sock');
    const server = await ApiServer.listen(vmm, sock);
    assert.ok(existsSync(sock));
    const agent = new Agent({ keepAlive: true });
    const f = { sock, agent } as unknown as Fixture;
    assert.equal((await get(f, '/')).status, 200);
    await server.close();
    assert.equal(existsSync(sock), false, 'the socket file is gone');
    await server.close();
    await assert.rejects(get(f, '/', { agent: false }), /ENOENT|ECONNREFUSED/);
    agent.destroy();
    // The path is free again.
    const again = await ApiServer.listen(vmm, sock);
    await again.close();
  } finally {
    vmm.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
