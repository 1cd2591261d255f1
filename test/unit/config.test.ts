import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  ConfigError,
  JsonSyntaxError,
  NotSupportedYetError,
  assertSupported,
  featuresUsed,
  parseBalloon,
  parseConfigText,
  parseCpuConfig,
  parseDrive,
  parseLogger,
  parseBalloonUpdate,
  parseDriveUpdate,
  parseMachineConfig,
  parseMachineConfigPatch,
  parseNetworkInterfaceUpdate,
  toFirecrackerJson,
  parseMemoryHotplug,
  parseMmdsConfig,
  parseNetworkInterface,
  parseVmConfig,
  parseVsock,
  type VmConfig,
} from '../../src/api/config.js';
import { TsvmmError } from '../../src/util/errors.js';

/** The example config of Firecracker's docs/getting-started.md, as written there. */
const GETTING_STARTED = `{
  "boot-source": {
    "kernel_image_path": "vmlinux.bin",
    "boot_args": "console=ttyS0 reboot=k panic=1 pci=off",
    "initrd_path": null
  },
  "drives": [
    {
      "drive_id": "rootfs",
      "partuuid": null,
      "is_root_device": true,
      "cache_type": "Unsafe",
      "is_read_only": false,
      "path_on_host": "rootfs.ext4",
      "io_engine": "Sync",
      "rate_limiter": null,
      "socket": null
    }
  ],
  "machine-config": {
    "vcpu_count": 2,
    "mem_size_mib": 1024,
    "smt": false,
    "track_dirty_pages": false,
    "huge_pages": "None"
  },
  "cpu-config": null,
  "balloon": null,
  "network-interfaces": [
    {
      "iface_id": "eth0",
      "guest_mac": "06:00:AC:10:00:02",
      "host_dev_name": "tap0"
    }
  ],
  "vsock": null,
  "logger": null,
  "metrics": null,
  "mmds-config": null,
  "entropy": null
}`;

const MINIMAL = { 'boot-source': { kernel_image_path: 'vmlinux' } };

/** A deep copy of MINIMAL with `patch` merged at the top level. */
function withTop(patch: Record<string, unknown>): unknown {
  return { ...structuredClone(MINIMAL), ...patch };
}

/** Asserts that `fn` throws a one-line TsvmmError of class `kind` whose message equals or matches `expected`. */
function assertConfigError(fn: () => unknown, expected: string | RegExp, kind: new (...args: never[]) => Error = ConfigError): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof TsvmmError, `expected a TsvmmError, got ${String(err)}`);
    assert.ok(err instanceof kind, `expected ${kind.name}, got ${err.name}: ${err.message}`);
    assert.ok(!err.message.includes('\n'), `message is not one line: ${JSON.stringify(err.message)}`);
    if (typeof expected === 'string') assert.equal(err.message, expected);
    else assert.match(err.message, expected);
    return true;
  });
}

test("Firecracker's getting-started vm_config.json parses", () => {
  const config = parseConfigText(GETTING_STARTED, 'vm_config.json');
  assert.deepEqual(config.bootSource, { kernel_image_path: 'vmlinux.bin', boot_args: 'console=ttyS0 reboot=k panic=1 pci=off' });
  assert.deepEqual(config.machineConfig, {
    vcpu_count: 2,
    mem_size_mib: 1024,
    smt: false,
    track_dirty_pages: false,
    cpu_template: 'None',
    huge_pages: 'None',
  });
  assert.deepEqual(config.drives, [
    { drive_id: 'rootfs', is_root_device: true, cache_type: 'Unsafe', is_read_only: false, io_engine: 'Sync', path_on_host: 'rootfs.ext4' },
  ]);
  assert.deepEqual(config.networkInterfaces, [{ iface_id: 'eth0', host_dev_name: 'tap0', guest_mac: '06:00:ac:10:00:02' }]);
  for (const absent of ['vsock', 'entropy', 'logger', 'metrics', 'balloon', 'mmdsConfig', 'cpuConfig', 'memoryHotplug'] as const) {
    assert.equal(config[absent], undefined, absent);
  }
  assert.deepEqual(config.pmem, []);
});

test('defaults: machine-config, drives and optional fields take Firecracker defaults', () => {
  const config = parseVmConfig(MINIMAL);
  assert.deepEqual(config.machineConfig, {
    vcpu_count: 1,
    mem_size_mib: 128,
    smt: false,
    track_dirty_pages: false,
    cpu_template: 'None',
    huge_pages: 'None',
  });
  assert.deepEqual(config.drives, []);
  assert.deepEqual(config.networkInterfaces, []);
  assert.deepEqual(config.bootSource, { kernel_image_path: 'vmlinux' });

  assert.deepEqual(parseDrive({ drive_id: 'd', path_on_host: 'x', is_root_device: false }, 'drives[0]'), {
    drive_id: 'd',
    path_on_host: 'x',
    is_root_device: false,
    is_read_only: false,
    cache_type: 'Unsafe',
    io_engine: 'Sync',
  });
  assert.deepEqual(parseLogger({}, 'logger'), { level: 'Info', show_level: false, show_log_origin: false });
  assert.equal(parseLogger({ level: 'warn' }, 'logger').level, 'Warning');
  assert.equal(parseLogger({ level: 'DEBUG' }, 'logger').level, 'Debug');
  assert.deepEqual(parseBalloon({ amount_mib: 0, deflate_on_oom: true }, 'balloon'), {
    amount_mib: 0,
    deflate_on_oom: true,
    stats_polling_interval_s: 0,
    free_page_hinting: false,
    free_page_reporting: false,
  });
  assert.deepEqual(parseVsock({ guest_cid: 3, uds_path: '/tmp/v.sock' }, 'vsock'), { guest_cid: 3, uds_path: '/tmp/v.sock' });
  assert.deepEqual(parseMmdsConfig({ network_interfaces: ['eth0'] }, 'mmds-config'), {
    version: 'V1',
    network_interfaces: ['eth0'],
    ipv4_address: '169.254.169.254',
    imds_compat: false,
  });
  assert.deepEqual(parseMemoryHotplug({ total_size_mib: 1024 }, 'memory-hotplug'), {
    total_size_mib: 1024,
    block_size_mib: 2,
    slot_size_mib: 128,
  });
});

test('per-resource parsers work on REST bodies with any path, including the root', () => {
  assert.equal(parseMachineConfig({ vcpu_count: 2, mem_size_mib: 256 }, '').vcpu_count, 2);
  assertConfigError(() => parseMachineConfig({ vcpu_count: 0, mem_size_mib: 256 }, ''), 'vcpu_count: must be an integer from 1 to 32, got 0');
});

test('malformed JSON gives line and column', () => {
  assertConfigError(
    () => parseConfigText('{\n  "boot-source": {\n    "kernel_image_path": "v"\n    "boot_args": "x"\n  }\n}', 'vm.json'),
    `malformed JSON in vm.json at line 4 column 5: expected ',' or '}' after the value of 'kernel_image_path', found '"'`,
    JsonSyntaxError,
  );
  assertConfigError(() => parseConfigText('{"drives": [1,]}', 'vm.json'), 'malformed JSON in vm.json at line 1 column 15: trailing comma before ]', JsonSyntaxError);
  assertConfigError(() => parseConfigText('', 'vm.json'), /line 1 column 1: the input is empty/, JsonSyntaxError);
  assertConfigError(() => parseConfigText('{"a": tru}', 'vm.json'), /line 1 column 7: expected a JSON value, found 'tru'/, JsonSyntaxError);
  assertConfigError(() => parseConfigText('{"a": "b\nc"}', 'vm.json'), /line 1 column 9: control character inside a string/, JsonSyntaxError);
  assertConfigError(() => parseConfigText('{"a": 1} x', 'vm.json'), /column 10: unexpected 'x' after the end/, JsonSyntaxError);
  assertConfigError(() => parseConfigText('{\n  // comment\n}', 'vm.json'), /line 2 column 3: comments are not allowed/, JsonSyntaxError);
  assertConfigError(() => parseConfigText('{"a": 01}', 'vm.json'), /invalid number/, JsonSyntaxError);
  assertConfigError(() => parseConfigText('{"a": "\\q"}', 'vm.json'), /invalid escape/, JsonSyntaxError);
  assertConfigError(() => parseConfigText('{"a": "unterminated', 'vm.json'), /line 1 column 7: unterminated string/, JsonSyntaxError);
  // serde rejects a duplicate field; JSON.parse would silently keep the last one.
  assertConfigError(
    () => parseConfigText('{"boot-source": {"kernel_image_path": "a"},\n "boot-source": {}}', 'vm.json'),
    "malformed JSON in vm.json at line 2 column 2: duplicate key 'boot-source'",
    JsonSyntaxError,
  );
});

test('JSON strings, escapes, numbers and a BOM decode correctly', () => {
  const config = parseConfigText(
    '\ufeff{"boot-source": {"kernel_image_path": "a\\u00e9\\n\\"b\\"\\/", "boot_args": "x"}, "machine-config": {"vcpu_count": 2, "mem_size_mib": 1.024e3}}',
    'vm.json',
  );
  assert.equal(config.bootSource.kernel_image_path, 'a\u00e9\n"b"/');
  assert.equal(config.machineConfig.mem_size_mib, 1024);
});

test('unknown keys are refused at each level, with a suggestion', () => {
  assertConfigError(() => parseVmConfig(withTop({ 'machine-confg': {} })), "unknown field 'machine-confg' (did you mean 'machine-config'?)");
  assertConfigError(() => parseVmConfig(withTop({ boot_source: {} })), "unknown field 'boot_source' (did you mean 'boot-source'?)");
  assertConfigError(
    () => parseVmConfig({ 'boot-source': { kernal_image_path: 'v' } }),
    "boot-source: unknown field 'kernal_image_path' (did you mean 'kernel_image_path'?)",
  );
  assertConfigError(
    () => parseVmConfig(withTop({ 'machine-config': { vcpu_count: 1, mem_size_mib: 128, ht_enabled: false } })),
    "machine-config: unknown field 'ht_enabled' (Firecracker renamed it to 'smt')",
  );
  assertConfigError(
    () => parseVmConfig(withTop({ drives: [{ drive_id: 'a', path_on_host: 'x', is_root_device: true, colour: 'red' }] })),
    /^drives\[0\]: unknown field 'colour' \(known fields: drive_id, partuuid, /,
  );
  assertConfigError(
    () =>
      parseVmConfig(
        withTop({
          drives: [{ drive_id: 'a', path_on_host: 'x', is_root_device: true, rate_limiter: { bandwidth: { size: 1, refill_time: 1, burst: 5 } } }],
        }),
      ),
    "drives[0].rate_limiter.bandwidth: unknown field 'burst' (did you mean 'one_time_burst'?)",
  );
  assertConfigError(
    () => parseVmConfig(withTop({ 'network-interfaces': [{ iface_id: 'e', host_dev_name: 't', allow_mmds_requests: true }] })),
    /^network-interfaces\[0\]: unknown field 'allow_mmds_requests' \(no longer exists/,
  );
  assertConfigError(() => parseVmConfig(withTop({ vsock: { guest_cid: 3, uds_path: 'v', port: 1 } })), /^vsock: unknown field 'port'/);
  assertConfigError(() => parseVmConfig(withTop({ entropy: { rate: 1 } })), /^entropy: unknown field 'rate'/);
  assertConfigError(() => parseVmConfig(withTop({ logger: { log_fifo: 'x' } })), "logger: unknown field 'log_fifo' (replaced by 'log_path')");
  assertConfigError(() => parseVmConfig(withTop({ metrics: { metrics_path: 'm', x: 1 } })), /^metrics: unknown field 'x'/);
  assertConfigError(() => parseVmConfig(withTop({ balloon: { amount_mb: 1, deflate_on_oom: true } })), /^balloon: unknown field 'amount_mb' \(Firecracker renamed it to 'amount_mib'\)/);
  assertConfigError(() => parseVmConfig(withTop({ 'mmds-version': 'V2' })), /^unknown field 'mmds-version' \(not a config-file key any more; use mmds-config\.version\)$/);
});

test('wrong types name the field and the value', () => {
  assertConfigError(() => parseVmConfig(withTop({ 'machine-config': { vcpu_count: '2', mem_size_mib: 128 } })), 'machine-config.vcpu_count: must be an integer from 1 to 32, got "2"');
  assertConfigError(() => parseVmConfig(withTop({ 'machine-config': { vcpu_count: 1.5, mem_size_mib: 128 } })), 'machine-config.vcpu_count: must be an integer from 1 to 32, got 1.5');
  assertConfigError(() => parseVmConfig(withTop({ 'machine-config': { vcpu_count: 1, mem_size_mib: 128, smt: 'no' } })), 'machine-config.smt: must be true or false, got "no"');
  assertConfigError(() => parseVmConfig({ 'boot-source': { kernel_image_path: 42 } }), 'boot-source.kernel_image_path: must be a string, got 42');
  assertConfigError(() => parseVmConfig({ 'boot-source': ['vmlinux'] }), 'boot-source: must be an object, got an array');
  assertConfigError(() => parseVmConfig(withTop({ drives: { drive_id: 'a' } })), 'drives: must be an array, got an object');
  assertConfigError(() => parseVmConfig([]), 'expected a JSON object, got an empty array');
  assertConfigError(
    () => parseVmConfig(withTop({ drives: [{ drive_id: 'a', path_on_host: 'x', is_root_device: true, cache_type: 'unsafe' }] })),
    'drives[0].cache_type: must be one of "Unsafe", "Writeback", got "unsafe" (did you mean "Unsafe"?)',
  );
  assertConfigError(
    () => parseVmConfig(withTop({ 'machine-config': { vcpu_count: 1, mem_size_mib: 128, huge_pages: '1G' } })),
    /^machine-config\.huge_pages: must be one of "None", "Transparent", "2M", got "1G"/,
  );
  assertConfigError(() => parseLogger({ level: 'verbose' }, 'logger'), /^logger\.level: must be one of "Error", "Warning", "Info"/);
});

test('out-of-range numbers', () => {
  const machine = (m: Record<string, unknown>): unknown => withTop({ 'machine-config': { vcpu_count: 1, mem_size_mib: 128, ...m } });
  assertConfigError(() => parseVmConfig(machine({ mem_size_mib: 0 })), 'machine-config.mem_size_mib: must be an integer from 128 to 65536, got 0');
  assertConfigError(() => parseVmConfig(machine({ vcpu_count: 0 })), 'machine-config.vcpu_count: must be an integer from 1 to 32, got 0');
  assertConfigError(() => parseVmConfig(machine({ vcpu_count: 1000 })), 'machine-config.vcpu_count: must be an integer from 1 to 32, got 1000');
  assertConfigError(() => parseVmConfig(machine({ vcpu_count: -1 })), 'machine-config.vcpu_count: must be an integer from 1 to 32, got -1');
  assertConfigError(() => parseVmConfig(machine({ mem_size_mib: 65537 })), 'machine-config.mem_size_mib: must be an integer from 128 to 65536, got 65537');
  assertConfigError(() => parseVmConfig(machine({ vcpu_count: 3, smt: true })), 'machine-config.vcpu_count: must be 1 or an even number when smt is true, got 3');
  assertConfigError(() => parseVmConfig(machine({ mem_size_mib: 129, huge_pages: '2M' })), 'machine-config.mem_size_mib: must be a multiple of 2 with huge_pages "2M", got 129');
  assert.equal(parseMachineConfig({ vcpu_count: 32, mem_size_mib: 65536 }, 'machine-config').vcpu_count, 32);
  assertConfigError(() => parseVmConfig(withTop({ vsock: { guest_cid: 2, uds_path: 'v.sock' } })), 'vsock.guest_cid: must be an integer from 3 to 4294967294, got 2');
  assertConfigError(
    () => parseVmConfig(withTop({ 'network-interfaces': [{ iface_id: 'e', host_dev_name: 't', mtu: 67 }] })),
    'network-interfaces[0].mtu: must be an integer from 68 to 65535, got 67',
  );
  assertConfigError(() => parseBalloon({ amount_mib: 1, deflate_on_oom: false, stats_polling_interval_s: 70000 }, 'balloon'), /stats_polling_interval_s: must be an integer from 0 to 65535/);
  assertConfigError(
    () => parseVmConfig(withTop({ drives: [{ drive_id: 'a', path_on_host: 'x', is_root_device: true, rate_limiter: { ops: { size: 2 ** 60, refill_time: 1 } } }] })),
    /^drives\[0\]\.rate_limiter\.ops\.size: must be an integer from 0 to 9007199254740991/,
  );
  assertConfigError(() => parseMemoryHotplug({ total_size_mib: 1000 }, 'memory-hotplug'), 'memory-hotplug.total_size_mib: must be a non-zero multiple of slot_size_mib (128), got 1000');
  assertConfigError(() => parseMemoryHotplug({ total_size_mib: 1024, block_size_mib: 6 }, 'memory-hotplug'), 'memory-hotplug.block_size_mib: must be a power of two, got 6');
});

test('missing required fields', () => {
  assertConfigError(() => parseVmConfig({}), "missing required field 'boot-source'");
  assertConfigError(() => parseVmConfig({ 'boot-source': {} }), "boot-source: missing required field 'kernel_image_path'");
  assertConfigError(() => parseVmConfig({ 'boot-source': { kernel_image_path: '' } }), 'boot-source.kernel_image_path: must not be empty');
  assertConfigError(() => parseVmConfig(withTop({ 'machine-config': { vcpu_count: 1 } })), "machine-config: missing required field 'mem_size_mib'");
  assertConfigError(() => parseVmConfig(withTop({ 'machine-config': { vcpu_count: null, mem_size_mib: 128 } })), 'machine-config.vcpu_count: must be an integer from 1 to 32, got null');
  assertConfigError(() => parseVmConfig(withTop({ drives: [{ drive_id: 'a', path_on_host: 'x' }] })), "drives[0]: missing required field 'is_root_device'");
  assertConfigError(() => parseVmConfig(withTop({ drives: [{ drive_id: 'a', is_root_device: true }] })), "drives[0]: missing required field 'path_on_host'");
  assertConfigError(() => parseVmConfig(withTop({ 'network-interfaces': [{ iface_id: 'e' }] })), "network-interfaces[0]: missing required field 'host_dev_name'");
  assertConfigError(() => parseVmConfig(withTop({ vsock: { guest_cid: 3 } })), "vsock: missing required field 'uds_path'");
  assertConfigError(() => parseVmConfig(withTop({ metrics: {} })), "metrics: missing required field 'metrics_path'");
  assertConfigError(() => parseVmConfig(withTop({ balloon: { amount_mib: 1 } })), "balloon: missing required field 'deflate_on_oom'");
  assertConfigError(() => parseVmConfig(withTop({ 'mmds-config': {} })), "mmds-config: missing required field 'network_interfaces'");
});

test('duplicate ids and two root devices', () => {
  const drive = (id: string, root: boolean): unknown => ({ drive_id: id, path_on_host: `${id}.img`, is_root_device: root });
  assertConfigError(
    () => parseVmConfig(withTop({ drives: [drive('rootfs', true), drive('rootfs', false)] })),
    "drives[1].drive_id: duplicate 'rootfs' (already used by drives[0])",
  );
  assertConfigError(
    () => parseVmConfig(withTop({ drives: [drive('a', false), drive('b', true), drive('c', true)] })),
    'drives[2].is_root_device: only one device can be the root device, and drives[1] already is',
  );
  assertConfigError(
    () => parseVmConfig(withTop({ drives: [drive('a', true)], pmem: [{ id: 'p', path_on_host: 'p.img', root_device: true }] })),
    'pmem[0].root_device: only one device can be the root device, and drives[0] already is',
  );
  const nic = (id: string, tap: string, mac?: string): unknown => ({ iface_id: id, host_dev_name: tap, ...(mac === undefined ? {} : { guest_mac: mac }) });
  assertConfigError(
    () => parseVmConfig(withTop({ 'network-interfaces': [nic('eth0', 'tap0'), nic('eth0', 'tap1')] })),
    "network-interfaces[1].iface_id: duplicate 'eth0' (already used by network-interfaces[0])",
  );
  assertConfigError(
    () => parseVmConfig(withTop({ 'network-interfaces': [nic('eth0', 'tap0'), nic('eth1', 'tap0')] })),
    "network-interfaces[1].host_dev_name: duplicate 'tap0' (already used by network-interfaces[0])",
  );
  assertConfigError(
    () => parseVmConfig(withTop({ 'network-interfaces': [nic('eth0', 'tap0', '06:00:00:00:00:01'), nic('eth1', 'tap1', '06:00:00:00:00:01')] })),
    "network-interfaces[1].guest_mac: duplicate '06:00:00:00:00:01' (already used by network-interfaces[0])",
  );
  assertConfigError(
    () => parseVmConfig(withTop({ pmem: [{ id: 'p', path_on_host: 'a' }, { id: 'p', path_on_host: 'b' }] })),
    "pmem[1].id: duplicate 'p' (already used by pmem[0])",
  );
});

test('MAC addresses: format, case, unicast', () => {
  assert.equal(parseNetworkInterface({ iface_id: 'e', host_dev_name: 't', guest_mac: 'AA:FC:00:00:00:01' }, 'n').guest_mac, 'aa:fc:00:00:00:01');
  const mac = (m: unknown): unknown => withTop({ 'network-interfaces': [{ iface_id: 'e', host_dev_name: 't', guest_mac: m }] });
  assertConfigError(() => parseVmConfig(mac('06:00:ac:10:00')), 'network-interfaces[0].guest_mac: must be a MAC address like "06:00:ac:10:00:02", got "06:00:ac:10:00"');
  assertConfigError(() => parseVmConfig(mac('06-00-ac-10-00-02')), /must be a MAC address like/);
  assertConfigError(() => parseVmConfig(mac('0g:00:ac:10:00:02')), /must be a MAC address like/);
  assertConfigError(() => parseVmConfig(mac(42)), /must be a MAC address like .*, got 42$/);
  assertConfigError(() => parseVmConfig(mac('01:00:5e:00:00:01')), /^network-interfaces\[0\]\.guest_mac: must be a unicast address \(the first octet must be even\), got 01:00:5e:00:00:01/);
  assertConfigError(() => parseVmConfig(mac('00:00:00:00:00:00')), /must not be all zeros/);
});

test('other semantic checks that need no filesystem', () => {
  assertConfigError(
    () => parseVmConfig(withTop({ 'network-interfaces': [{ iface_id: 'eth0', host_dev_name: 'tap0' }], 'mmds-config': { network_interfaces: ['eth1'] } })),
    "mmds-config.network_interfaces[0]: no network interface has iface_id 'eth1' (known: eth0)",
  );
  assertConfigError(() => parseMmdsConfig({ network_interfaces: [] }, 'mmds-config'), 'mmds-config.network_interfaces: must list at least one iface_id');
  assertConfigError(() => parseMmdsConfig({ network_interfaces: ['e'], ipv4_address: '10.0.0.1' }, 'mmds-config'), /ipv4_address: must be an IPv4 link-local address/);
  assertConfigError(() => parseMmdsConfig({ network_interfaces: ['e'], ipv4_address: '169.254.0.1' }, 'mmds-config'), /ipv4_address: must be an IPv4 link-local address/);
  assertConfigError(
    () => parseVmConfig(withTop({ 'machine-config': { vcpu_count: 1, mem_size_mib: 256 }, balloon: { amount_mib: 512, deflate_on_oom: true } })),
    'balloon.amount_mib: must not exceed machine-config.mem_size_mib (256), got 512',
  );
  assertConfigError(
    () => parseVmConfig({ 'boot-source': { kernel_image_path: 'k', initrd_path: 'i' }, 'machine-config': { vcpu_count: 1, mem_size_mib: 256, huge_pages: '2M' } }),
    'boot-source.initrd_path: cannot be used with machine-config.huge_pages "2M"',
  );
  assertConfigError(
    () => parseVmConfig(withTop({ 'network-interfaces': [{ iface_id: 'e', host_dev_name: 'a-very-long-tap-name0' }] })),
    'network-interfaces[0].host_dev_name: is 21 bytes long, Linux interface names are at most 15',
  );
  assertConfigError(() => parseVmConfig(withTop({ vsock: { guest_cid: 3, uds_path: `/tmp/${'x'.repeat(120)}` } })), /^vsock\.uds_path: is 125 bytes long, a Unix socket path can be at most 107$/);
  assertConfigError(() => parseVmConfig({ 'boot-source': { kernel_image_path: 'k', boot_args: 'x'.repeat(3000) } }), 'boot-source.boot_args: is 3000 bytes long, the limit is 2047');
  assertConfigError(
    () => parseVmConfig(withTop({ drives: [{ drive_id: 'a', socket: '/tmp/vhost.sock', path_on_host: 'x', is_root_device: false }] })),
    "drives[0].path_on_host: must be omitted when 'socket' is set (a vhost-user drive)",
  );
});

test('cpu-config: a path or an inline x86_64 template', () => {
  assert.deepEqual(parseCpuConfig('templates/t2.json', 'cpu-config'), { kind: 'path', path: 'templates/t2.json' });
  const inline = parseCpuConfig(
    {
      kvm_capabilities: ['!56', '121'],
      cpuid_modifiers: [{ leaf: '0x1', subleaf: '0x0', flags: 0, modifiers: [{ register: 'ecx', bitmap: `0b${'x'.repeat(31)}0` }] }],
      msr_modifiers: [{ addr: '0x10a', bitmap: `0b${'0'.repeat(64)}` }],
    },
    'cpu-config',
  );
  assert.equal(inline.kind, 'template');
  if (inline.kind === 'template') {
    assert.deepEqual(inline.template.kvm_capabilities, [
      { capability: 56, remove: true },
      { capability: 121, remove: false },
    ]);
    assert.equal(inline.template.cpuid_modifiers[0]?.leaf, 1);
    assert.equal(inline.template.msr_modifiers[0]?.addr, 0x10a);
  }
  assertConfigError(
    () => parseCpuConfig({ cpuid_modifiers: [{ leaf: '0x1', subleaf: '0', flags: 0, modifiers: [{ register: 'ecx', bitmap: '0b101' }] }] }, 'cpu-config'),
    'cpu-config.cpuid_modifiers[0].modifiers[0].bitmap: must be "0b" followed by 32 characters each 0, 1 or x, got "0b101"',
  );
  assertConfigError(() => parseCpuConfig({ reg_modifiers: [] }, 'cpu-config'), "cpu-config: unknown field 'reg_modifiers' (aarch64 only; tsvmm runs x86_64 guests)");
  assertConfigError(() => parseCpuConfig(5, 'cpu-config'), 'cpu-config: must be the path of a CPU template file or a template object, got 5');
});

test('features the VMM does not support yet are carried and refused clearly', () => {
  const config: VmConfig = parseVmConfig(
    withTop({
      drives: [{ drive_id: 'root', path_on_host: 'r.img', is_root_device: true, io_engine: 'Async' }],
      'network-interfaces': [{ iface_id: 'eth0', host_dev_name: 'tap0' }],
      balloon: { amount_mib: 0, deflate_on_oom: false },
      'mmds-config': { network_interfaces: ['eth0'], version: 'V2' },
      vsock: { guest_cid: 3, uds_path: '/tmp/v.sock' },
    }),
  );
  assert.equal(config.balloon?.deflate_on_oom, false);
  assert.equal(config.mmdsConfig?.version, 'V2');
  assert.deepEqual(
    featuresUsed(config).map((u) => `${u.feature}@${u.path}`),
    ['drives@drives[0]', 'async-io-engine@drives[0].io_engine', 'network-interfaces@network-interfaces[0]', 'vsock@vsock', 'balloon@balloon', 'mmds-config@mmds-config'],
  );
  assertConfigError(
    () => assertSupported(config, ['drives', 'network-interfaces', 'vsock']),
    'drives[0].io_engine: tsvmm does not support the "Async" io_engine yet; remove it from the configuration',
    NotSupportedYetError,
  );
  assertConfigError(
    () => assertSupported(config, ['drives', 'async-io-engine', 'network-interfaces', 'vsock', 'mmds-config']),
    'balloon: tsvmm does not support the balloon device (virtio-balloon) yet; remove it from the configuration',
    NotSupportedYetError,
  );
  assert.doesNotThrow(() => assertSupported(parseVmConfig(MINIMAL), []));
  // A rate limiter whose buckets are all zero limits nothing, as in Firecracker.
  const zero = parseVmConfig(withTop({ drives: [{ drive_id: 'r', path_on_host: 'r', is_root_device: true, rate_limiter: { bandwidth: { size: 0, refill_time: 0 } } }] }));
  assert.deepEqual(featuresUsed(zero).map((u) => u.feature), ['drives']);
});

test('messages quoting user input stay on one line', () => {
  assertConfigError(() => parseVmConfig(withTop({ 'bad\nkey': 1 })), /^unknown field 'bad\\nkey'/);
  assertConfigError(() => parseConfigText('{"a\\nb": 1, "a\\nb": 2}', 'vm.json'), /duplicate key 'a\\nb'/, JsonSyntaxError);
  const nic = (id: string, tap: string): unknown => ({ iface_id: id, host_dev_name: tap });
  assertConfigError(() => parseVmConfig(withTop({ 'network-interfaces': [nic('e\n0', 't0'), nic('e\n0', 't1')] })), /duplicate 'e\\n0'/);
});

test('REST PATCH bodies', () => {
  const current = parseMachineConfig({ vcpu_count: 3, mem_size_mib: 256 }, '');
  assert.deepEqual(parseMachineConfigPatch({ mem_size_mib: 512 }, '', current), { ...current, mem_size_mib: 512 });
  assertConfigError(() => parseMachineConfigPatch({ smt: true }, '', current), 'vcpu_count: must be 1 or an even number when smt is true, got 3');
  assertConfigError(() => parseMachineConfigPatch({}, '', current), /^must set at least one of vcpu_count, mem_size_mib/);
  assert.deepEqual(parseDriveUpdate({ drive_id: 'root', path_on_host: 'new.img' }, ''), { drive_id: 'root', path_on_host: 'new.img' });
  assertConfigError(() => parseDriveUpdate({ drive_id: 'root', is_read_only: true }, ''), /^unknown field 'is_read_only'/);
  assert.deepEqual(parseNetworkInterfaceUpdate({ iface_id: 'eth0', rx_rate_limiter: { ops: { size: 10, refill_time: 100 } } }, ''), {
    iface_id: 'eth0',
    rx_rate_limiter: { ops: { size: 10, refill_time: 100 } },
  });
  assertConfigError(() => parseBalloonUpdate({}, ''), "missing required field 'amount_mib'");
});

test('toFirecrackerJson round-trips through parseVmConfig', () => {
  const config = parseVmConfig(
    withTop({
      drives: [{ drive_id: 'root', path_on_host: 'r.img', is_root_device: true, partuuid: 'abcd-01', rate_limiter: { bandwidth: { size: 1, refill_time: 2, one_time_burst: 3 } } }],
      'network-interfaces': [{ iface_id: 'eth0', host_dev_name: 'tap0', guest_mac: '06:00:00:00:00:01', mtu: 1500 }],
      'mmds-config': { network_interfaces: ['eth0'] },
      'cpu-config': { kvm_capabilities: ['!56'], cpuid_modifiers: [{ leaf: '0x7', subleaf: '0x0', flags: 1, modifiers: [] }], msr_modifiers: [] },
      logger: { level: 'debug', log_path: 'fc.log' },
      pmem: [{ id: 'p', path_on_host: 'p.img' }],
      'memory-hotplug': { total_size_mib: 256 },
    }),
  );
  const json = toFirecrackerJson(config);
  assert.deepEqual(parseVmConfig(JSON.parse(JSON.stringify(json))), config);
  assert.deepEqual(Object.keys(json).slice(0, 4), ['boot-source', 'machine-config', 'drives', 'network-interfaces']);
});
