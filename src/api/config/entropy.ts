/** Firecracker's `entropy` (PUT /entropy): a virtio-rng device fed from the host's CSPRNG. */
import { type RateLimiterConfig, parseRateLimiter } from './rate-limiter.js';
import { ObjectReader } from './schema.js';

export interface EntropyConfig {
  rate_limiter?: RateLimiterConfig;
}

export function parseEntropy(json: unknown, path: string): EntropyConfig {
  const r = ObjectReader.open(json, path, ['rate_limiter']);
  const rateLimiter = r.nested('rate_limiter', parseRateLimiter);
  return rateLimiter === undefined ? {} : { rate_limiter: rateLimiter };
}
