/** Firecracker's `machine-config` (PUT /machine-config): vCPUs, memory, SMT, page backing. */
import { ConfigError, ObjectReader, fieldPath } from './schema.js';

import { CPU_TEMPLATES, type CpuTemplate, HUGE_PAGES, type HugePages, MEM_SIZE_MIB_RANGE, VCPU_COUNT_RANGE, defaultMachineConfig } from './limits.js';

export { CPU_TEMPLATES, type CpuTemplate, HUGE_PAGES, type HugePages, MEM_SIZE_MIB_RANGE, VCPU_COUNT_RANGE, defaultMachineConfig };

export interface MachineConfig {
  vcpu_count: number;
  mem_size_mib: number;
  smt: boolean;
  track_dirty_pages: boolean;
  cpu_template: CpuTemplate;
  huge_pages: HugePages;
}

/** What Firecracker uses when `machine-config` is omitted (GET /machine-config before any PUT). */

const FIELDS = ['vcpu_count', 'mem_size_mib', 'smt', 'track_dirty_pages', 'cpu_template', 'huge_pages'];
const RENAMED = {
  ht_enabled: "Firecracker renamed it to 'smt'",
  cpu_count: "the field is 'vcpu_count'",
  memory_mib: "the field is 'mem_size_mib'",
};

export function parseMachineConfig(json: unknown, path: string): MachineConfig {
  const r = ObjectReader.open(json, path, FIELDS, RENAMED);
  const config: MachineConfig = {
    vcpu_count: r.requiredInteger('vcpu_count', VCPU_COUNT_RANGE),
    mem_size_mib: r.requiredInteger('mem_size_mib', MEM_SIZE_MIB_RANGE),
    smt: r.boolean('smt', false),
    track_dirty_pages: r.boolean('track_dirty_pages', false),
    cpu_template: r.enumOf('cpu_template', CPU_TEMPLATES, 'None'),
    huge_pages: r.enumOf('huge_pages', HUGE_PAGES, 'None'),
  };
  checkMachineConfig(config, path);
  return config;
}

/**
 * PATCH /machine-config: the fields present replace those of `current` (Firecracker requires at
 * least one), and the result is checked as a whole, so `{"smt": true}` on 3 vCPUs is refused.
 */
export function parseMachineConfigPatch(json: unknown, path: string, current: MachineConfig): MachineConfig {
  const r = ObjectReader.open(json, path, FIELDS, RENAMED);
  if (!FIELDS.some((f) => r.has(f))) throw new ConfigError(path, `must set at least one of ${FIELDS.join(', ')}`);
  const config: MachineConfig = {
    vcpu_count: r.integer('vcpu_count', VCPU_COUNT_RANGE, current.vcpu_count),
    mem_size_mib: r.integer('mem_size_mib', MEM_SIZE_MIB_RANGE, current.mem_size_mib),
    smt: r.boolean('smt', current.smt),
    track_dirty_pages: r.boolean('track_dirty_pages', current.track_dirty_pages),
    cpu_template: r.enumOf('cpu_template', CPU_TEMPLATES, current.cpu_template),
    huge_pages: r.enumOf('huge_pages', HUGE_PAGES, current.huge_pages),
  };
  checkMachineConfig(config, path);
  return config;
}

/** The rules between machine-config fields, as Firecracker applies them. */
function checkMachineConfig(config: MachineConfig, path: string): void {
  // With SMT each core has two threads, so the count must be 1 or even.
  if (config.smt && config.vcpu_count > 1 && config.vcpu_count % 2 === 1) {
    throw new ConfigError(fieldPath(path, 'vcpu_count'), `must be 1 or an even number when smt is true, got ${config.vcpu_count}`);
  }
  if (config.huge_pages === '2M' && config.mem_size_mib % 2 !== 0) {
    throw new ConfigError(fieldPath(path, 'mem_size_mib'), `must be a multiple of 2 with huge_pages "2M", got ${config.mem_size_mib}`);
  }
}
