/** Firecracker's `balloon` (PUT /balloon): virtio-balloon, memory the host can take back. */
import { ObjectReader } from './schema.js';

export interface BalloonConfig {
  /** Target balloon size; cannot exceed the guest's memory. */
  amount_mib: number;
  deflate_on_oom: boolean;
  /** 0 disables statistics. */
  stats_polling_interval_s: number;
  free_page_hinting: boolean;
  free_page_reporting: boolean;
}

export function parseBalloon(json: unknown, path: string): BalloonConfig {
  const r = ObjectReader.open(
    json,
    path,
    ['amount_mib', 'deflate_on_oom', 'stats_polling_interval_s', 'free_page_hinting', 'free_page_reporting'],
    { amount_mb: "Firecracker renamed it to 'amount_mib'", must_tell_host: 'no longer exists' },
  );
  return {
    amount_mib: r.requiredInteger('amount_mib', { min: 0, max: 0xffffffff }),
    deflate_on_oom: r.requiredBoolean('deflate_on_oom'),
    stats_polling_interval_s: r.integer('stats_polling_interval_s', { min: 0, max: 0xffff }, 0),
    free_page_hinting: r.boolean('free_page_hinting', false),
    free_page_reporting: r.boolean('free_page_reporting', false),
  };
}

/** PATCH /balloon: a new target size. */
export function parseBalloonUpdate(json: unknown, path: string): { amount_mib: number } {
  const r = ObjectReader.open(json, path, ['amount_mib']);
  return { amount_mib: r.requiredInteger('amount_mib', { min: 0, max: 0xffffffff }) };
}

/** PATCH /balloon/statistics: a new polling interval (statistics cannot be switched on or off after boot). */
export function parseBalloonStatsUpdate(json: unknown, path: string): { stats_polling_interval_s: number } {
  const r = ObjectReader.open(json, path, ['stats_polling_interval_s']);
  return { stats_polling_interval_s: r.requiredInteger('stats_polling_interval_s', { min: 0, max: 0xffff }) };
}
