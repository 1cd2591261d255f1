import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  ConfigError,
  defaultMachineConfig,
  parseBootSource,
  parseConfigText,
  parseDrive,
  parseDriveUpdate,
  parseEntropy,
  parseLogger,
  parseMachineConfig,
  parseMachineConfigPatch,
  parseMetrics,
  parseNetworkInterface,
  parseNetworkInterfaceUpdate,
  parseVsock,
  toFirecrackerJson,
} from '../../src/api/config.js';
import { OPENAPI_DOCUMENT, SCHEMA_REF_PREFIX, type SchemaObject } from '../../src/api/server/openapi.js';
import {
  type ApiOperation,
  expectsBody,
  listOperations,
  matchRoute,
  operationById,
  resolveRef,
  validateBody,
  validatePathParams,
  validateResponse,
  validateValue,
} from '../../src/api/server/request-validator.js';

/** Every endpoint and verb tsvmm serves (issue #5), and nothing else. */
const SERVED = [
  'GET /',
  'PUT /actions',
  'PUT /boot-source',
  'PUT /drives/{drive_id}',
  'PATCH /drives/{drive_id}',
  'PUT /entropy',
  'PUT /logger',
  'GET /machine-config',
  'PUT /machine-config',
  'PATCH /machine-config',
  'PUT /metrics',
  'PUT /network-interfaces/{iface_id}',
  'PATCH /network-interfaces/{iface_id}',
  'GET /version',
  'PATCH /vm',
  'GET /vm/config',
  'PUT /vsock',
];

/** Every schema object in `value`, depth first, with where it sits (for messages). */
function* walk(value: unknown, where: string): Generator<[Record<string, unknown>, string]> {
  if (Array.isArray(value)) {
    for (const [i, item] of value.entries()) yield* walk(item, `${where}[${i}]`);
  } else if (typeof value === 'object' && value !== null) {
    const object = value as Record<string, unknown>;
    yield [object, where];
    for (const [key, item] of Object.entries(object)) yield* walk(item, `${where}/${key}`);
  }
}

/** Every schema in the document, including the schemas nested in properties, items and allOf. */
function* allSchemas(): Generator<[SchemaObject, string]> {
  function* inner(schema: SchemaObject, where: string): Generator<[SchemaObject, string]> {
    yield [schema, where];
    for (const [key, sub] of Object.entries(schema.properties ?? {})) yield* inner(sub, `${where}.${key}`);
    if (schema.items !== undefined) yield* inner(schema.items, `${where}[]`);
    for (const [i, sub] of (schema.allOf ?? []).entries()) yield* inner(sub, `${where}.allOf[${i}]`);
  }
  for (const [name, schema] of Object.entries(OPENAPI_DOCUMENT.components.schemas)) yield* inner(schema, name);
  for (const op of listOperations()) {
    for (const [status, response] of Object.entries(op.definition.responses)) {
      const schema = response.content?.['application/json'].schema;
      if (schema !== undefined) yield* inner(schema, `${op.operationId} ${status}`);
    }
    if (op.bodySchema !== undefined) yield* inner(op.bodySchema, `${op.operationId} body`);
    for (const p of op.definition.parameters ?? []) yield* inner(p.schema, `${op.operationId} ${p.name}`);
  }
}

test('the document is plain JSON and OpenAPI 3.0.3 in shape', () => {
  const text = JSON.stringify(OPENAPI_DOCUMENT);
  assert.deepEqual(JSON.parse(text), OPENAPI_DOCUMENT, 'JSON.stringify loses nothing (no undefined, functions or cycles)');
  assert.equal(OPENAPI_DOCUMENT.openapi, '3.0.3');
  assert.ok(OPENAPI_DOCUMENT.info.title.length > 0 && OPENAPI_DOCUMENT.info.version.length > 0);
  for (const path of Object.keys(OPENAPI_DOCUMENT.paths)) assert.match(path, /^\/([a-z-]+|\{[a-z_]+\})?(\/([a-z-]+|\{[a-z_]+\}))*$/, path);
});

test('every $ref resolves, and every schema is used', () => {
  const used = new Set<string>();
  for (const [object, where] of walk(OPENAPI_DOCUMENT, '#')) {
    const ref = object.$ref;
    if (ref === undefined) continue;
    assert.equal(typeof ref, 'string', where);
    assert.ok((ref as string).startsWith(SCHEMA_REF_PREFIX), `${where}: ${String(ref)}`);
    assert.doesNotThrow(() => resolveRef(ref as string), `${where}: ${String(ref)}`);
    // OpenAPI 3.0 ignores the siblings of $ref; nullable refs must use allOf instead.
    assert.deepEqual(Object.keys(object), ['$ref'], `${where}: $ref with siblings`);
    used.add((ref as string).slice(SCHEMA_REF_PREFIX.length));
  }
  assert.deepEqual([...used].sort(), Object.keys(OPENAPI_DOCUMENT.components.schemas).sort());
});

test('the operations are exactly what tsvmm serves, each with 2xx, 400 and default responses', () => {
  const operations = listOperations();
  assert.deepEqual(operations.map((op) => `${op.method} ${op.pathTemplate}`).sort(), [...SERVED].sort());
  const ids = operations.map((op) => op.operationId);
  assert.equal(new Set(ids).size, ids.length, 'operationIds are unique');
  const errorRef = { 'application/json': { schema: { $ref: `${SCHEMA_REF_PREFIX}Error` } } };
  for (const op of operations) {
    const name = `${op.method} ${op.pathTemplate}`;
    const responses = op.definition.responses;
    assert.deepEqual(responses['400']?.content, errorRef, `${name}: 400 answers an Error`);
    assert.deepEqual(responses.default?.content, errorRef, `${name}: default answers an Error`);
    if (op.method === 'GET') {
      assert.deepEqual(Object.keys(responses).sort(), ['200', '400', 'default'], name);
      assert.ok(responses['200']?.content !== undefined, `${name}: 200 has a body`);
      assert.equal(op.definition.requestBody, undefined, `${name}: no request body`);
      assert.equal(expectsBody(op), false, name);
    } else {
      assert.deepEqual(Object.keys(responses).sort(), ['204', '400', 'default'], name);
      assert.equal(responses['204']?.content, undefined, `${name}: 204 has no body`);
      assert.equal(op.definition.requestBody?.required, true, `${name}: body required`);
      assert.equal(expectsBody(op), true, name);
    }
    // Path templates and declared path parameters agree.
    const inTemplate = [...op.pathTemplate.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]);
    const declared = (op.definition.parameters ?? []).map((p) => {
      assert.equal(p.in, 'path', name);
      assert.equal(p.required, true, name);
      return p.name;
    });
    assert.deepEqual(declared, inTemplate, `${name}: path parameters`);
  }
});

test('every schema follows the conventions: closed objects, bounded integers, nullable enums list null', () => {
  for (const [schema, where] of allSchemas()) {
    if (schema.type === 'object') {
      assert.equal(schema.additionalProperties, false, `${where}: additionalProperties false (deny_unknown_fields)`);
      for (const key of schema.required ?? []) {
        assert.ok(schema.properties?.[key] !== undefined, `${where}: required '${key}' is a property`);
        assert.notEqual(schema.properties?.[key]?.nullable, true, `${where}.${key}: a required field is not nullable`);
      }
      // Optional fields take null (serde's Option), so Firecracker's own GET /vm/config output loads.
      for (const [key, property] of Object.entries(schema.properties ?? {})) {
        if (!(schema.required ?? []).includes(key) && !where.startsWith('InstanceInfo') && !where.startsWith('Error')) {
          assert.equal(property.nullable, true, `${where}.${key}: an optional field is nullable`);
        }
      }
    }
    if (schema.type === 'integer') {
      assert.ok(schema.minimum !== undefined && schema.maximum !== undefined, `${where}: integer bounds`);
      assert.ok(Number.isSafeInteger(schema.minimum) && Number.isSafeInteger(schema.maximum), `${where}: safe bounds`);
    }
    if (schema.nullable === true && schema.enum !== undefined) assert.ok(schema.enum.includes(null), `${where}: null in enum`);
    if (schema.pattern !== undefined) assert.doesNotThrow(() => new RegExp(schema.pattern ?? '', 'u'), where);
  }
});

test('routes: paths, templates, query strings', () => {
  const route = (method: string, path: string): string => {
    const m = matchRoute(method, path);
    if ('error' in m) return m.error === 'wrong-verb' ? `wrong-verb ${m.allowed.join(',')}` : m.error;
    return `${m.operation.operationId} ${JSON.stringify(m.pathParams)}`;
  };
  assert.equal(route('GET', '/'), 'describeInstance {}');
  assert.equal(route('GET', '/version'), 'getFirecrackerVersion {}');
  assert.equal(route('GET', '/vm/config'), 'getExportVmConfig {}');
  assert.equal(route('PATCH', '/vm'), 'patchVm {}');
  assert.equal(route('PUT', '/machine-config'), 'putMachineConfiguration {}');
  assert.equal(route('PATCH', '/machine-config?x=1'), 'patchMachineConfiguration {}');
  assert.equal(route('PUT', '/drives/rootfs'), 'putGuestDriveByID {"drive_id":"rootfs"}');
  assert.equal(route('PATCH', '/drives/root%5Ffs'), 'patchGuestDriveByID {"drive_id":"root_fs"}');
  assert.equal(route('PUT', '/drives/bad%zz'), 'putGuestDriveByID {"drive_id":"bad%zz"}');
  assert.equal(route('PUT', '/network-interfaces/eth0'), 'putGuestNetworkInterfaceByID {"iface_id":"eth0"}');
  assert.equal(route('put', '/actions'), 'createSyncAction {}');

  for (const path of ['', 'machine-config', '/drives', '/drives/', '/drives/a/b', '/machine-config/', '//', '/balloon', '/snapshot/create', '/vm/config/x', '/mmds']) {
    assert.equal(route('PUT', path), 'unknown-path', path);
  }
  assert.equal(route('DELETE', '/drives/rootfs'), 'wrong-verb PUT,PATCH');
  assert.equal(route('GET', '/drives/rootfs'), 'wrong-verb PUT,PATCH');
  assert.equal(route('POST', '/actions'), 'wrong-verb PUT');
  assert.equal(route('GET', '/actions'), 'wrong-verb PUT');
  assert.equal(route('PUT', '/'), 'wrong-verb GET');
  assert.equal(route('DELETE', '/machine-config'), 'wrong-verb GET,PUT,PATCH');
  assert.equal(route('PUT', '/vm'), 'wrong-verb PATCH');
  assert.equal(route('HEAD', '/version'), 'wrong-verb GET');
});

test('path parameters are checked against their schema', () => {
  const put = operationById('putGuestDriveByID');
  assert.equal(validatePathParams(put, { drive_id: 'rootfs' }), undefined);
  assert.equal(validatePathParams(put, {}), 'path parameter drive_id: must be a string, got nothing');
  assert.equal(validatePathParams(put, { drive_id: '' }), 'path parameter drive_id: must not be empty');
});

test('bodies: presence and single-line, actionable messages naming the field', () => {
  const op = (id: string): ApiOperation => operationById(id);
  assert.equal(validateBody(op('describeInstance'), undefined), undefined);
  assert.equal(validateBody(op('describeInstance'), { a: 1 }), 'GET / takes no request body, got an object');
  assert.equal(validateBody(op('putGuestDriveByID'), undefined), 'PUT /drives/{drive_id} needs a JSON body (a Drive object)');
  assert.equal(validateBody(op('putGuestDriveByID'), { drive_id: 5, is_root_device: true, path_on_host: 'x' }), 'drive_id: must be a string, got 5');
  assert.equal(validateBody(op('putMachineConfiguration'), { vcpus: 2, mem_size_mib: 128 }), "unknown field 'vcpus' (did you mean 'vcpu_count'?)");
  assert.equal(validateBody(op('putMachineConfiguration'), { ht_enabled: true }), "unknown field 'ht_enabled' (Firecracker renamed it to 'smt')");
  assert.equal(validateBody(op('putMachineConfiguration'), { vcpu_count: 64, mem_size_mib: 128 }), 'vcpu_count: must be an integer from 1 to 32, got 64');
  assert.equal(validateBody(op('putMachineConfiguration'), null), 'expected a JSON object, got null');
  assert.equal(validateBody(op('putMachineConfiguration'), { mem_size_mib: 128 }), "missing required field 'vcpu_count'");
  assert.equal(
    validateBody(op('putMachineConfiguration'), { vcpu_count: 1, mem_size_mib: 128, cpu_template: 'T3' }),
    'cpu_template: must be one of "C3", "T2", "T2S", "T2CL", "T2A", "V1N1", "None", got "T3" (did you mean "C3"?)',
  );
  assert.equal(
    validateBody(op('putGuestDriveByID'), { drive_id: 'a', is_root_device: true, path_on_host: 'x', rate_limiter: { bandwidth: { size: 1, refill_time: -1 } } }),
    'rate_limiter.bandwidth.refill_time: must be an integer from 0 to 9007199254740991, got -1',
  );
  assert.equal(
    validateBody(op('putGuestNetworkInterfaceByID'), { iface_id: 'eth0', host_dev_name: 'tap0', guest_mac: '01:00:5e:00:00:01' }),
    'guest_mac: must be a unicast MAC address other than all zeros, like "06:00:ac:10:00:02", got "01:00:5e:00:00:01"',
  );
  assert.equal(
    validateBody(op('patchMachineConfiguration'), { smt: null }),
    'must set at least one of cpu_template, smt, mem_size_mib, track_dirty_pages, vcpu_count, huge_pages',
  );
  assert.equal(
    validateBody(op('createSyncAction'), { action_type: 'instancestart' }),
    'action_type: must be one of "FlushMetrics", "InstanceStart", "SendCtrlAltDel", got "instancestart" (did you mean "InstanceStart"?)',
  );
  assert.equal(validateBody(op('patchVm'), { state: 'Paused' }), undefined);
  assert.equal(validateBody(op('patchVm'), { state: 'Running' }), 'state: must be one of "Paused", "Resumed", got "Running"');
  const weird = validateBody(op('putMetrics'), { 'metrics\npath': 'x' });
  assert.ok(weird !== undefined && !weird.includes('\n'), `one line: ${String(weird)}`);
  assert.match(weird, /unknown field 'metrics\\npath'/);
});

test('actions and vm state: the enums of Firecracker', () => {
  const action = operationById('createSyncAction');
  for (const action_type of ['InstanceStart', 'SendCtrlAltDel', 'FlushMetrics']) assert.equal(validateBody(action, { action_type }), undefined);
  for (const bad of [{}, { action_type: null }, { action_type: 'Pause' }, { action_type: 'InstanceStart', payload: {} }, []]) {
    assert.notEqual(validateBody(action, bad), undefined, JSON.stringify(bad));
  }
  const vm = operationById('patchVm');
  for (const bad of [{}, { state: 'paused' }, { state: 'Paused', extra: 1 }]) assert.notEqual(validateBody(vm, bad), undefined, JSON.stringify(bad));
});

// ---------------------------------------------------------------------------------------------
// The validator and the resource parsers agree on which bodies are acceptable.

interface Resource {
  operationId: string;
  parse: (json: unknown) => unknown;
  /** Bodies both accept; the first is the base for the generated cases. */
  valid: unknown[];
  /** Bodies both refuse. */
  invalid: unknown[];
  /**
   * Bodies the schema accepts and the parser refuses: rules between fields (or, for PATCH, with
   * the current state), which the document states in descriptions only. Listed so each such
   * difference is a decision, not an accident.
   */
  parserOnly?: unknown[];
}

const bucket = { size: 1000, refill_time: 100 };
const limiter = { bandwidth: { ...bucket, one_time_burst: 5000 }, ops: null };

const RESOURCES: Resource[] = [
  {
    operationId: 'putMachineConfiguration',
    parse: (j) => parseMachineConfig(j, ''),
    valid: [
      { vcpu_count: 2, mem_size_mib: 1024 },
      { vcpu_count: 1, mem_size_mib: 128, smt: true, track_dirty_pages: false, cpu_template: 'T2', huge_pages: '2M' },
      { vcpu_count: 32, mem_size_mib: 65536, cpu_template: null, huge_pages: null, smt: null, track_dirty_pages: null },
      { vcpu_count: 2, mem_size_mib: 256, smt: true, huge_pages: 'Transparent' },
      { vcpu_count: 4, mem_size_mib: 1e3 },
    ],
    invalid: [
      { vcpu_count: 0, mem_size_mib: 128 },
      { vcpu_count: 33, mem_size_mib: 128 },
      { vcpu_count: 1.5, mem_size_mib: 128 },
      { vcpu_count: '2', mem_size_mib: 128 },
      { vcpu_count: 2 ** 53, mem_size_mib: 128 },
      { vcpu_count: 1, mem_size_mib: 127 },
      { vcpu_count: 1, mem_size_mib: 65537 },
      { vcpus: 2, mem_size_mib: 128 },
      { vcpu_count: 1, mem_size_mib: 128, ht_enabled: false },
      { vcpu_count: 1, mem_size_mib: 128, cpu_template: 'T3' },
      { vcpu_count: 1, mem_size_mib: 128, cpu_template: 'none' },
      { vcpu_count: 1, mem_size_mib: 128, huge_pages: '1G' },
      { vcpu_count: 1, mem_size_mib: 128, smt: 'yes' },
    ],
    parserOnly: [
      { vcpu_count: 3, mem_size_mib: 128, smt: true },
      { vcpu_count: 1, mem_size_mib: 129, huge_pages: '2M' },
    ],
  },
  {
    operationId: 'patchMachineConfiguration',
    parse: (j) => parseMachineConfigPatch(j, '', defaultMachineConfig()),
    valid: [{ vcpu_count: 2 }, { smt: false }, { huge_pages: 'Transparent' }, { mem_size_mib: 512, smt: null }, { cpu_template: 'None' }],
    invalid: [{}, { smt: null }, { vcpus: 2 }, { vcpu_count: 0 }, { mem_size_mib: 100 }, { huge_pages: 'none' }],
    parserOnly: [{ smt: true, vcpu_count: 3 }, { huge_pages: '2M', mem_size_mib: 129 }],
  },
  {
    operationId: 'putGuestBootSource',
    parse: (j) => parseBootSource(j, ''),
    valid: [
      { kernel_image_path: 'vmlinux' },
      { kernel_image_path: 'vmlinux', boot_args: 'console=ttyS0 reboot=k panic=1 pci=off', initrd_path: 'initrd.img' },
      { kernel_image_path: 'vmlinux', boot_args: null, initrd_path: null },
      { kernel_image_path: 'vmlinux', boot_args: '' },
      { kernel_image_path: 'vmlinux', boot_args: 'x'.repeat(2047) },
      { kernel_image_path: 'vmlinux', boot_args: 'é'.repeat(1023) },
    ],
    invalid: [
      {},
      { kernel_image_path: '' },
      { kernel: 'vmlinux' },
      { kernel_image_path: 'vmlinux', boot_args: 'x'.repeat(2048) },
      // 1024 characters (under maxLength) but 2048 bytes: the byte limit is what counts.
      { kernel_image_path: 'vmlinux', boot_args: 'é'.repeat(1024) },
      { kernel_image_path: 'vmlinux', boot_args: 'a\u0000b' },
      { kernel_image_path: 'vmlinux', initrd_path: '' },
      { kernel_image_path: 'vmlinux', boot_args: ['console=ttyS0'] },
    ],
  },
  {
    operationId: 'putGuestDriveByID',
    parse: (j) => parseDrive(j, ''),
    valid: [
      { drive_id: 'rootfs', is_root_device: true, path_on_host: 'rootfs.ext4' },
      {
        drive_id: 'data',
        partuuid: '0eaa91a0-01',
        is_root_device: false,
        cache_type: 'Writeback',
        is_read_only: true,
        path_on_host: 'data.ext4',
        rate_limiter: limiter,
        io_engine: 'Async',
        socket: null,
      },
      { drive_id: 'vhost', is_root_device: false, socket: '/tmp/vhost.sock' },
      { drive_id: 'rootfs', partuuid: null, is_root_device: true, cache_type: 'Unsafe', is_read_only: false, path_on_host: 'r', io_engine: 'Sync', rate_limiter: null },
      { drive_id: 'r', is_root_device: true, path_on_host: 'r', rate_limiter: {} },
    ],
    invalid: [
      { drive_id: '', is_root_device: true, path_on_host: 'r' },
      { drive_id: 'r', path_on_host: 'r' },
      { drive_id: 'r', is_root_device: 'true', path_on_host: 'r' },
      { drive_id: 'r', is_root_device: true, path_on_host: 'r', cache_type: 'writeback' },
      { drive_id: 'r', is_root_device: true, path_on_host: 'r', io_engine: 'Io_uring' },
      { drive_id: 'r', is_root_device: true, path_on_host: 'r', rate_limiter: { bandwidth: { size: 1 } } },
      { drive_id: 'r', is_root_device: true, path_on_host: 'r', rate_limiter: { bandwidth: { size: -1, refill_time: 1 } } },
      { drive_id: 'r', is_root_device: true, path_on_host: 'r', rate_limiter: { burst: 1 } },
      { drive_id: 'r', is_root_device: true, path_on_host: 'r', rate_limiter: { ops: { size: 1, refill_time: 1, one_time_burst: 0.5 } } },
      { drive_id: 'r', is_root_device: true, path: 'r' },
      { drive_id: 'r', is_root_device: true, path_on_host: '' },
    ],
    parserOnly: [
      { drive_id: 'r', is_root_device: false },
      { drive_id: 'r', is_root_device: false, path_on_host: null },
      { drive_id: 'r', is_root_device: false, socket: '/tmp/s', path_on_host: 'r' },
      { drive_id: 'r', is_root_device: false, socket: '/tmp/s', is_read_only: false },
    ],
  },
  {
    operationId: 'patchGuestDriveByID',
    parse: (j) => parseDriveUpdate(j, ''),
    valid: [
      { drive_id: 'rootfs' },
      { drive_id: 'rootfs', path_on_host: 'new.ext4' },
      { drive_id: 'r', rate_limiter: { ops: bucket } },
      { drive_id: 'r', path_on_host: null, rate_limiter: null },
    ],
    invalid: [{}, { drive_id: '' }, { drive_id: 'r', is_read_only: true }, { drive_id: 'r', rate_limiter: 5 }, { drive_id: 'r', path_on_host: '' }],
  },
  {
    operationId: 'putGuestNetworkInterfaceByID',
    parse: (j) => parseNetworkInterface(j, ''),
    valid: [
      { iface_id: 'eth0', host_dev_name: 'tap0' },
      { iface_id: 'eth0', host_dev_name: 'tap0', guest_mac: '06:00:AC:10:00:02', mtu: 1500, rx_rate_limiter: limiter, tx_rate_limiter: { ops: bucket } },
      { iface_id: 'eth0', host_dev_name: 'abcdefghijklmno', mtu: 68, guest_mac: null, rx_rate_limiter: null, tx_rate_limiter: null },
      { iface_id: 'eth0', host_dev_name: '...', mtu: 65535, guest_mac: 'fe:ff:ff:ff:ff:ff' },
      { iface_id: 'eth0', host_dev_name: 'tap-é', guest_mac: '02:00:00:00:00:00' },
    ],
    invalid: [
      { iface_id: 'eth0', host_dev_name: 'abcdefghijklmnop' },
      { iface_id: 'eth0', host_dev_name: 'é'.repeat(8) },
      { iface_id: 'eth0', host_dev_name: 'tap 0' },
      { iface_id: 'eth0', host_dev_name: 'tap\t0' },
      { iface_id: 'eth0', host_dev_name: 'a/b' },
      { iface_id: 'eth0', host_dev_name: '.' },
      { iface_id: 'eth0', host_dev_name: '..' },
      { iface_id: 'eth0', host_dev_name: '' },
      { iface_id: 'eth0', host_dev_name: 'tap0', guest_mac: '01:00:5e:00:00:01' },
      { iface_id: 'eth0', host_dev_name: 'tap0', guest_mac: '00:00:00:00:00:00' },
      { iface_id: 'eth0', host_dev_name: 'tap0', guest_mac: '06:00:ac:10:00' },
      { iface_id: 'eth0', host_dev_name: 'tap0', guest_mac: '06-00-ac-10-00-02' },
      { iface_id: 'eth0', host_dev_name: 'tap0', guest_mac: '06:00:ac:10:00:02\n' },
      { iface_id: 'eth0', host_dev_name: 'tap0', mtu: 67 },
      { iface_id: 'eth0', host_dev_name: 'tap0', mtu: 65536 },
      { iface_id: 'eth0', tap: 'tap0' },
      { iface_id: 'eth0', host_dev_name: 'tap0', allow_mmds_requests: true },
    ],
  },
  {
    operationId: 'patchGuestNetworkInterfaceByID',
    parse: (j) => parseNetworkInterfaceUpdate(j, ''),
    valid: [{ iface_id: 'eth0' }, { iface_id: 'eth0', rx_rate_limiter: limiter, tx_rate_limiter: null }],
    invalid: [{}, { iface_id: null }, { iface_id: 'eth0', host_dev_name: 'tap0' }, { iface_id: 'eth0', rx_rate_limiter: [] }],
  },
  {
    operationId: 'putGuestVsock',
    parse: (j) => parseVsock(j, ''),
    valid: [
      { guest_cid: 3, uds_path: '/tmp/v.sock' },
      { guest_cid: 0xfffffffe, uds_path: `/${'x'.repeat(106)}`, vsock_id: 'vsock0' },
      { guest_cid: 52, uds_path: 'v', vsock_id: null },
      { guest_cid: 52, uds_path: 'v', vsock_id: '' },
    ],
    invalid: [
      { guest_cid: 2, uds_path: 'v' },
      { guest_cid: 0xffffffff, uds_path: 'v' },
      { guest_cid: '3', uds_path: 'v' },
      { guest_cid: 3, uds_path: '' },
      { guest_cid: 3, uds_path: `/${'x'.repeat(107)}` },
      { guest_cid: 3, uds_path: `/${'é'.repeat(54)}` },
      { cid: 3, uds_path: 'v' },
    ],
  },
  {
    operationId: 'putEntropyDevice',
    parse: (j) => parseEntropy(j, ''),
    valid: [
      {},
      { rate_limiter: null },
      { rate_limiter: {} },
      { rate_limiter: { bandwidth: { size: 0, refill_time: 0 } } },
      { rate_limiter: { ops: { size: Number.MAX_SAFE_INTEGER, refill_time: 1 } } },
    ],
    invalid: [
      { rate_limiter: { bandwidth: { size: 1, refill_time: 1, extra: 1 } } },
      { rate_limiter: { bandwidth: { size: 1.5, refill_time: 1 } } },
      { rate_limiter: { bandwidth: { size: 2 ** 53, refill_time: 1 } } },
      { rate_limiter: { bandwidth: null, ops: { size: 1, refill_time: null } } },
      { bogus: 1 },
    ],
  },
  {
    operationId: 'putLogger',
    parse: (j) => parseLogger(j, ''),
    valid: [
      { log_path: '/tmp/log', level: 'Debug', show_level: true, show_log_origin: false, module: 'api_server::request' },
      {},
      { level: 'info' },
      { level: 'WARN' },
      { level: 'warn' },
      { level: 'Off' },
      { level: null, log_path: null, module: null },
    ],
    invalid: [{ level: 'verbose' }, { level: 'Warnings' }, { log_path: '' }, { module: '' }, { log_fifo: '/tmp/log' }, { show_level: 'yes' }, { level: 3 }],
  },
  {
    operationId: 'putMetrics',
    parse: (j) => parseMetrics(j, ''),
    valid: [{ metrics_path: '/tmp/metrics' }],
    invalid: [{}, { metrics_path: '' }, { metrics_path: null }, { metrics_fifo: '/tmp/m' }, { metrics_path: 'x', extra: 1 }],
  },
];

/** undefined when `parse` accepts, else its message (and it must be a one-line ConfigError). */
function parserVerdict(parse: (json: unknown) => unknown, body: unknown): string | undefined {
  try {
    parse(body);
    return undefined;
  } catch (err) {
    assert.ok(err instanceof ConfigError, `parser threw ${String(err)}`);
    assert.ok(!err.message.includes('\n'));
    return err.message;
  }
}

/** The schema a property really has, through nullable-ref wrappers. */
function effectiveType(schema: SchemaObject): SchemaObject['type'] {
  if (schema.$ref !== undefined) return effectiveType(resolveRef(schema.$ref));
  if (schema.allOf?.[0] !== undefined) return effectiveType(schema.allOf[0]);
  return schema.type;
}

/** A value of the wrong JSON type for `type`. */
function wrongValue(type: SchemaObject['type']): unknown {
  switch (type) {
    case 'string':
      return 12345;
    case 'object':
    case 'array':
      return 'x';
    default:
      return 'not-a-number-or-boolean';
  }
}

/**
 * Cases derived from the schema and the first valid body: non-object bodies, a wrong type for
 * every property, every required property missing or null, an unknown field. Both must refuse
 * each, with the same message where the schema's wording can match the parser's.
 */
function generatedInvalid(resource: Resource, schema: SchemaObject): { body: unknown; sameMessage: boolean }[] {
  const base = resource.valid[0] as Record<string, unknown>;
  const cases: { body: unknown; sameMessage: boolean }[] = [null, [], 'x', 5, true].map((body) => ({ body, sameMessage: true }));
  for (const [key, property] of Object.entries(schema.properties ?? {})) {
    // guest_mac's parser says "must be a MAC address" even to a number; the schema says "must be a string".
    cases.push({ body: { ...base, [key]: wrongValue(effectiveType(property)) }, sameMessage: key !== 'guest_mac' });
  }
  for (const key of schema.required ?? []) {
    const { [key]: _removed, ...rest } = base;
    cases.push({ body: rest, sameMessage: true });
    cases.push({ body: { ...base, [key]: null }, sameMessage: true });
  }
  cases.push({ body: { ...base, bogus_field: 1 }, sameMessage: false });
  return cases;
}

for (const resource of RESOURCES) {
  test(`validator and parser agree: ${resource.operationId}`, () => {
    const op = operationById(resource.operationId);
    assert.ok(op.bodySchema !== undefined);
    const schema = resolveRef(op.bodySchema.$ref ?? '');
    const show = (body: unknown): string => JSON.stringify(body)?.slice(0, 120) ?? String(body);

    for (const body of resource.valid) {
      assert.equal(validateBody(op, body), undefined, `validator refuses ${show(body)}`);
      const parsed = resource.parse(body);
      // What the parser keeps (and GET /vm/config returns) fits the schema, in canonical form.
      assert.deepEqual(validateValue(op.bodySchema, JSON.parse(JSON.stringify(parsed)), { mode: 'response' }), [], `parsed ${show(body)}`);
    }
    const invalid = [...resource.invalid.map((body) => ({ body, sameMessage: false })), ...generatedInvalid(resource, schema)];
    for (const { body, sameMessage } of invalid) {
      const fromValidator = validateBody(op, body);
      const fromParser = parserVerdict(resource.parse, body);
      assert.notEqual(fromValidator, undefined, `validator accepts ${show(body)}`);
      assert.notEqual(fromParser, undefined, `parser accepts ${show(body)}`);
      assert.ok(!fromValidator?.includes('\n'), fromValidator);
      if (sameMessage) assert.equal(fromValidator, fromParser, `messages for ${show(body)}`);
    }
    for (const body of resource.parserOnly ?? []) {
      assert.equal(validateBody(op, body), undefined, `validator refuses ${show(body)}`);
      assert.notEqual(parserVerdict(resource.parse, body), undefined, `parser accepts ${show(body)}`);
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Responses, as the conformance tests will check them.

const RICH_CONFIG = `{
  "boot-source": { "kernel_image_path": "vmlinux", "boot_args": "console=ttyS0", "initrd_path": null },
  "machine-config": { "vcpu_count": 2, "mem_size_mib": 512 },
  "drives": [
    { "drive_id": "rootfs", "is_root_device": true, "path_on_host": "rootfs.ext4" },
    { "drive_id": "data", "is_root_device": false, "path_on_host": "data.ext4", "is_read_only": true,
      "rate_limiter": { "bandwidth": { "size": 1048576, "refill_time": 1000 } } }
  ],
  "network-interfaces": [ { "iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:AC:10:00:02", "mtu": 1500 } ],
  "vsock": { "guest_cid": 3, "uds_path": "/tmp/v.sock" },
  "entropy": { "rate_limiter": { "ops": { "size": 10, "refill_time": 100 } } },
  "logger": { "log_path": "/tmp/log", "level": "warn" },
  "metrics": { "metrics_path": "/tmp/metrics" },
  "balloon": null, "mmds-config": null, "cpu-config": null
}`;

test('responses: GET bodies, 204 without body, errors as Error', () => {
  const describe = operationById('describeInstance');
  const info = { id: 'anonymous-instance', state: 'Not started', vmm_version: '0.1.0', app_name: 'tsvmm' };
  assert.deepEqual(validateResponse(describe, 200, info), []);
  assert.deepEqual(validateResponse(describe, 200, { ...info, state: 'Stopped' }), [
    'state: must be one of "Not started", "Running", "Paused", got "Stopped"',
  ]);
  assert.deepEqual(validateResponse(describe, 200, { id: 'x' }), [
    "missing required field 'app_name'",
    "missing required field 'state'",
    "missing required field 'vmm_version'",
  ]);
  assert.deepEqual(validateResponse(describe, 200, undefined), ['GET / 200 needs a JSON body (a InstanceInfo object)']);
  assert.deepEqual(validateResponse(operationById('getFirecrackerVersion'), 200, { firecracker_version: '1.7.0' }), []);

  const machine = operationById('getMachineConfiguration');
  assert.deepEqual(validateResponse(machine, 200, defaultMachineConfig()), []);

  const vmConfig = operationById('getExportVmConfig');
  const full = toFirecrackerJson(parseConfigText(RICH_CONFIG, 'test'));
  assert.deepEqual(validateResponse(vmConfig, 200, JSON.parse(JSON.stringify(full))), []);
  // Firecracker's own output style: every optional section present and null.
  const nulls = { ...full, balloon: null, 'cpu-config': null, 'mmds-config': null, 'memory-hotplug': null, pmem: [], vsock: null };
  assert.deepEqual(validateResponse(vmConfig, 200, nulls), []);
  assert.deepEqual(validateResponse(vmConfig, 200, { ...full, balloon: { amount_mib: 1, deflate_on_oom: true } }), [
    'balloon: must be null, got an object',
  ]);
  // Responses carry canonical enums: "warn" is accepted in a request, never answered.
  assert.deepEqual(validateResponse(vmConfig, 200, { logger: { level: 'warn' } }), [
    'logger.level: must be one of "Error", "Warning", "Info", "Debug", "Trace", "Off", got "warn" (did you mean "Warning"?)',
  ]);

  const put = operationById('putGuestBootSource');
  assert.deepEqual(validateResponse(put, 204, undefined), []);
  assert.deepEqual(validateResponse(put, 204, {}), ['PUT /boot-source 204 must have no body, got an object']);
  assert.deepEqual(validateResponse(put, 200, undefined), ['PUT /boot-source does not declare status 200 (declared: 204, 400, default)']);
  assert.deepEqual(validateResponse(put, 400, { fault_message: 'kernel_image_path: must not be empty' }), []);
  assert.deepEqual(validateResponse(put, 500, { fault_message: 'internal error' }), []);
  assert.deepEqual(validateResponse(put, 400, { fault_message: 'two\nlines' }), ['fault_message: must be a single line of text, got "two\\nlines"']);
  assert.deepEqual(validateResponse(put, 400, { error: 'x' }), [
    "unknown field 'error' (known fields: fault_message)",
    "missing required field 'fault_message'",
  ]);
  assert.deepEqual(validateResponse(put, 400, { fault_message: '' }), ['fault_message: must not be empty']);
});
