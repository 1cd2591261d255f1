/**
 * The whole Firecracker `--config-file` document: every resource parser composed, plus the checks
 * that span resources (one root device, unique ids, MMDS interfaces that exist, balloon size).
 *
 * Naming: the sections are camelCase properties here (`bootSource` for "boot-source"), while
 * each resource keeps Firecracker's snake_case field names, so a resource object is exactly the
 * body of its REST request and serializes back unchanged for GET /vm/config.
 */
import { type BalloonConfig, parseBalloon } from './balloon.js';
import { type BootSourceConfig, parseBootSource } from './boot-source.js';
import { type CpuConfigSource, type CustomCpuTemplate, parseCpuConfig } from './cpu-config.js';
import { type DriveConfig, parseDrive } from './drive.js';
import { type EntropyConfig, parseEntropy } from './entropy.js';
import { type LoggerConfig, parseLogger } from './logger.js';
import { type MachineConfig, defaultMachineConfig, parseMachineConfig } from './machine-config.js';
import { type MemoryHotplugConfig, parseMemoryHotplug } from './memory-hotplug.js';
import { type MetricsConfig, parseMetrics } from './metrics.js';
import { type MmdsConfig, parseMmdsConfig } from './mmds.js';
import { type NetworkInterfaceConfig, parseNetworkInterface } from './network-interface.js';
import { type PmemConfig, parsePmem } from './pmem.js';
import { ConfigError, ObjectReader, fieldPath, indexPath, requireUnique } from './schema.js';
import { type VsockConfig, parseVsock } from './vsock.js';

export interface VmConfig {
  bootSource: BootSourceConfig;
  /** Firecracker's defaults (1 vCPU, 128 MiB) when the file has no machine-config. */
  machineConfig: MachineConfig;
  drives: DriveConfig[];
  networkInterfaces: NetworkInterfaceConfig[];
  vsock?: VsockConfig;
  entropy?: EntropyConfig;
  logger?: LoggerConfig;
  metrics?: MetricsConfig;
  balloon?: BalloonConfig;
  mmdsConfig?: MmdsConfig;
  cpuConfig?: CpuConfigSource;
  pmem: PmemConfig[];
  memoryHotplug?: MemoryHotplugConfig;
}

/** The config file's top-level keys, as Firecracker spells them. */
export const CONFIG_FILE_KEYS = [
  'boot-source',
  'machine-config',
  'drives',
  'network-interfaces',
  'vsock',
  'entropy',
  'logger',
  'metrics',
  'balloon',
  'mmds-config',
  'cpu-config',
  'pmem',
  'memory-hotplug',
] as const;

const RENAMED_KEYS = {
  'mmds-version': 'not a config-file key any more; use mmds-config.version',
  serial: "not part of Firecracker's config file",
};

/**
 * Parses a whole config document (already JSON-parsed). Firecracker requires "drives"; tsvmm
 * lets it default to [] since a VM booting from an initramfs needs none.
 */
export function parseVmConfig(json: unknown): VmConfig {
  const r = ObjectReader.open(json, '', CONFIG_FILE_KEYS, RENAMED_KEYS);
  const config: VmConfig = {
    bootSource: r.requiredNested('boot-source', parseBootSource),
    machineConfig: r.nested('machine-config', parseMachineConfig) ?? defaultMachineConfig(),
    drives: r.array('drives', parseDrive),
    networkInterfaces: r.array('network-interfaces', parseNetworkInterface),
    pmem: r.array('pmem', parsePmem),
  };
  const vsock = r.nested('vsock', parseVsock);
  if (vsock !== undefined) config.vsock = vsock;
  const entropy = r.nested('entropy', parseEntropy);
  if (entropy !== undefined) config.entropy = entropy;
  const logger = r.nested('logger', parseLogger);
  if (logger !== undefined) config.logger = logger;
  const metrics = r.nested('metrics', parseMetrics);
  if (metrics !== undefined) config.metrics = metrics;
  const balloon = r.nested('balloon', parseBalloon);
  if (balloon !== undefined) config.balloon = balloon;
  const mmds = r.nested('mmds-config', parseMmdsConfig);
  if (mmds !== undefined) config.mmdsConfig = mmds;
  const cpuConfig = r.nested('cpu-config', parseCpuConfig);
  if (cpuConfig !== undefined) config.cpuConfig = cpuConfig;
  const hotplug = r.nested('memory-hotplug', parseMemoryHotplug);
  if (hotplug !== undefined) config.memoryHotplug = hotplug;
  checkVmConfig(config);
  return config;
}

/**
 * The checks between resources, without the filesystem. Exported so the REST API can run them on
 * the configuration it has assembled before InstanceStart.
 */
export function checkVmConfig(config: VmConfig): void {
  requireUnique(config.drives, 'drives', 'drive_id', (d) => d.drive_id);
  requireUnique(config.networkInterfaces, 'network-interfaces', 'iface_id', (n) => n.iface_id);
  requireUnique(config.networkInterfaces, 'network-interfaces', 'host_dev_name', (n) => n.host_dev_name);
  requireUnique(config.networkInterfaces, 'network-interfaces', 'guest_mac', (n) => n.guest_mac);
  requireUnique(config.pmem, 'pmem', 'id', (p) => p.id);

  // One root device in all, whether a drive or a pmem device (Firecracker refuses a second one).
  const roots = [
    ...config.drives.flatMap((d, i) => (d.is_root_device ? [fieldPath(indexPath('drives', i), 'is_root_device')] : [])),
    ...config.pmem.flatMap((p, i) => (p.root_device ? [fieldPath(indexPath('pmem', i), 'root_device')] : [])),
  ];
  if (roots.length > 1) {
    const first = roots[0]!.replace(/\.[a-z_]+$/, '');
    throw new ConfigError(roots[1]!, `only one device can be the root device, and ${first} already is`);
  }

  const mmds = config.mmdsConfig;
  if (mmds !== undefined) {
    const ids = new Set(config.networkInterfaces.map((n) => n.iface_id));
    mmds.network_interfaces.forEach((id, i) => {
      if (!ids.has(id)) {
        throw new ConfigError(
          indexPath('mmds-config.network_interfaces', i),
          `no network interface has iface_id '${id}'${ids.size === 0 ? ' (network-interfaces is empty)' : ` (known: ${[...ids].join(', ')})`}`,
        );
      }
    });
  }

  const memory = config.machineConfig;
  if (config.balloon !== undefined && config.balloon.amount_mib > memory.mem_size_mib) {
    throw new ConfigError(
      'balloon.amount_mib',
      `must not exceed machine-config.mem_size_mib (${memory.mem_size_mib}), got ${config.balloon.amount_mib}`,
    );
  }
  // Firecracker refuses hugetlbfs-backed memory together with a balloon or an initrd.
  if (memory.huge_pages === '2M') {
    if (config.balloon !== undefined) throw new ConfigError('balloon', 'cannot be used with machine-config.huge_pages "2M"');
    if (config.bootSource.initrd_path !== undefined) {
      throw new ConfigError('boot-source.initrd_path', 'cannot be used with machine-config.huge_pages "2M"');
    }
  }
}

/**
 * The configuration as Firecracker's JSON (GET /vm/config, or a file to hand to Firecracker):
 * the document parseVmConfig reads, with every default filled in.
 */
export function toFirecrackerJson(config: VmConfig): Record<string, unknown> {
  const json: Record<string, unknown> = {
    'boot-source': config.bootSource,
    'machine-config': config.machineConfig,
    drives: config.drives,
    'network-interfaces': config.networkInterfaces,
  };
  if (config.vsock !== undefined) json.vsock = config.vsock;
  if (config.entropy !== undefined) json.entropy = config.entropy;
  if (config.logger !== undefined) json.logger = config.logger;
  if (config.metrics !== undefined) json.metrics = config.metrics;
  if (config.balloon !== undefined) json.balloon = config.balloon;
  if (config.mmdsConfig !== undefined) json['mmds-config'] = config.mmdsConfig;
  if (config.cpuConfig !== undefined) json['cpu-config'] = config.cpuConfig.kind === 'path' ? config.cpuConfig.path : cpuTemplateJson(config.cpuConfig.template);
  if (config.pmem.length > 0) json.pmem = config.pmem;
  if (config.memoryHotplug !== undefined) json['memory-hotplug'] = config.memoryHotplug;
  return json;
}

/** A parsed CPU template back in Firecracker's notation (numbers as hex strings, "!N" removals). */
function cpuTemplateJson(template: CustomCpuTemplate): Record<string, unknown> {
  const hex = (n: number): string => `0x${n.toString(16)}`;
  return {
    kvm_capabilities: template.kvm_capabilities.map((c) => `${c.remove ? '!' : ''}${c.capability}`),
    cpuid_modifiers: template.cpuid_modifiers.map((m) => ({ ...m, leaf: hex(m.leaf), subleaf: hex(m.subleaf) })),
    msr_modifiers: template.msr_modifiers.map((m) => ({ ...m, addr: hex(m.addr) })),
  };
}
