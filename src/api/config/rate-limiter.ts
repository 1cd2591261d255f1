/** Firecracker's `RateLimiter` and `TokenBucket` objects, shared by drives, interfaces, entropy and pmem. */
import { ObjectReader } from './schema.js';

/** A token bucket: `size` tokens, refilled over `refill_time` ms, plus a one-off initial burst. */
export interface TokenBucketConfig {
  size: number;
  one_time_burst?: number;
  refill_time: number;
}

/** Independent limits on bytes (`bandwidth`) and operations (`ops`); either may be absent. */
export interface RateLimiterConfig {
  bandwidth?: TokenBucketConfig;
  ops?: TokenBucketConfig;
}

/** Firecracker stores these as u64; JSON numbers are exact only up to 2^53 - 1. */
const U64_SAFE = { min: 0, max: Number.MAX_SAFE_INTEGER };

export function parseTokenBucket(json: unknown, path: string): TokenBucketConfig {
  const r = ObjectReader.open(json, path, ['size', 'one_time_burst', 'refill_time']);
  const bucket: TokenBucketConfig = {
    size: r.requiredInteger('size', U64_SAFE),
    refill_time: r.requiredInteger('refill_time', U64_SAFE),
  };
  const burst = r.optionalInteger('one_time_burst', U64_SAFE);
  if (burst !== undefined) bucket.one_time_burst = burst;
  return bucket;
}

export function parseRateLimiter(json: unknown, path: string): RateLimiterConfig {
  const r = ObjectReader.open(json, path, ['bandwidth', 'ops']);
  const limiter: RateLimiterConfig = {};
  const bandwidth = r.nested('bandwidth', parseTokenBucket);
  if (bandwidth !== undefined) limiter.bandwidth = bandwidth;
  const ops = r.nested('ops', parseTokenBucket);
  if (ops !== undefined) limiter.ops = ops;
  return limiter;
}

/**
 * True when the limiter limits anything. Firecracker treats a bucket with size 0 or refill_time 0
 * as disabled, so `{}` or zero-sized buckets are the same as no limiter.
 */
export function limitsAnything(limiter: RateLimiterConfig | undefined): boolean {
  const active = (b: TokenBucketConfig | undefined): boolean => b !== undefined && b.size > 0 && b.refill_time > 0;
  return limiter !== undefined && (active(limiter.bandwidth) || active(limiter.ops));
}
