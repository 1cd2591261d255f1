/** Firecracker's `memory-hotplug` (PUT /hotplug/memory): a virtio-mem region the host can grow. */
import { ConfigError, ObjectReader } from './schema.js';

export interface MemoryHotplugConfig {
  total_size_mib: number;
  /** The guest's hot(un)plug granularity: a power of two, at least 2 MiB. */
  block_size_mib: number;
  /** The host's attach granularity: a multiple of block_size_mib, at least 128 MiB. */
  slot_size_mib: number;
}

const MIB = { min: 0, max: Number.MAX_SAFE_INTEGER };

export function parseMemoryHotplug(json: unknown, path: string): MemoryHotplugConfig {
  const r = ObjectReader.open(json, path, ['total_size_mib', 'block_size_mib', 'slot_size_mib']);
  const config: MemoryHotplugConfig = {
    total_size_mib: r.requiredInteger('total_size_mib', MIB),
    block_size_mib: r.integer('block_size_mib', { min: 2, max: Number.MAX_SAFE_INTEGER }, 2),
    slot_size_mib: r.integer('slot_size_mib', { min: 128, max: Number.MAX_SAFE_INTEGER }, 128),
  };
  const { total_size_mib: total, block_size_mib: block, slot_size_mib: slot } = config;
  if ((block & (block - 1)) !== 0 || block > 2 ** 30) {
    throw new ConfigError(r.at('block_size_mib'), `must be a power of two, got ${block}`);
  }
  if (slot % block !== 0) throw new ConfigError(r.at('slot_size_mib'), `must be a multiple of block_size_mib (${block}), got ${slot}`);
  if (total < slot || total % slot !== 0) {
    throw new ConfigError(r.at('total_size_mib'), `must be a non-zero multiple of slot_size_mib (${slot}), got ${total}`);
  }
  return config;
}
