/** Firecracker's `pmem` devices (PUT /pmem/{id}): virtio-pmem backed by a host file. */
import { type RateLimiterConfig, parseRateLimiter } from './rate-limiter.js';
import { ObjectReader } from './schema.js';

export interface PmemConfig {
  id: string;
  path_on_host: string;
  root_device: boolean;
  read_only: boolean;
  rate_limiter?: RateLimiterConfig;
}

export function parsePmem(json: unknown, path: string): PmemConfig {
  const r = ObjectReader.open(json, path, ['id', 'path_on_host', 'root_device', 'read_only', 'rate_limiter']);
  const config: PmemConfig = {
    id: r.requiredString('id', { nonEmpty: true }),
    path_on_host: r.requiredString('path_on_host', { nonEmpty: true }),
    root_device: r.boolean('root_device', false),
    read_only: r.boolean('read_only', false),
  };
  const rateLimiter = r.nested('rate_limiter', parseRateLimiter);
  if (rateLimiter !== undefined) config.rate_limiter = rateLimiter;
  return config;
}
