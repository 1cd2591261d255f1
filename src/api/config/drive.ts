/** Firecracker's drives (PUT /drives/{drive_id}): virtio-block backed by a host file, or vhost-user. */
import { type RateLimiterConfig, parseRateLimiter } from './rate-limiter.js';
import { ConfigError, ObjectReader } from './schema.js';

import { CACHE_TYPES, type CacheType, IO_ENGINES, type IoEngine } from './limits.js';

export { CACHE_TYPES, type CacheType, IO_ENGINES, type IoEngine };

export interface DriveConfig {
  drive_id: string;
  is_root_device: boolean;
  /** The root partition's PARTUUID; used only for the root device (root=PARTUUID=… instead of /dev/vda). */
  partuuid?: string;
  /** "Unsafe" ignores the guest's flush requests; "Writeback" honours them with fsync. */
  cache_type: CacheType;
  /** Host file for a virtio-block drive; absent for a vhost-user drive. */
  path_on_host?: string;
  is_read_only: boolean;
  io_engine: IoEngine;
  rate_limiter?: RateLimiterConfig;
  /** Socket of a vhost-user-block backend; when present the drive is vhost-user, not virtio-block. */
  socket?: string;
}

const FIELDS = [
  'drive_id',
  'partuuid',
  'is_root_device',
  'cache_type',
  'is_read_only',
  'path_on_host',
  'rate_limiter',
  'io_engine',
  'socket',
];

export function parseDrive(json: unknown, path: string): DriveConfig {
  const r = ObjectReader.open(json, path, FIELDS, { path: "the field is 'path_on_host'", read_only: "the field is 'is_read_only'" });
  const drive: DriveConfig = {
    drive_id: r.requiredString('drive_id', { nonEmpty: true }),
    is_root_device: r.requiredBoolean('is_root_device'),
    cache_type: r.enumOf('cache_type', CACHE_TYPES, 'Unsafe'),
    is_read_only: r.boolean('is_read_only', false),
    io_engine: r.enumOf('io_engine', IO_ENGINES, 'Sync'),
  };
  const partuuid = r.optionalString('partuuid', { nonEmpty: true });
  if (partuuid !== undefined) drive.partuuid = partuuid;
  const rateLimiter = r.nested('rate_limiter', parseRateLimiter);
  if (rateLimiter !== undefined) drive.rate_limiter = rateLimiter;

  const socket = r.optionalString('socket', { nonEmpty: true });
  const pathOnHost = r.optionalString('path_on_host', { nonEmpty: true });
  if (socket !== undefined) {
    // Firecracker: the virtio-block fields "should be omitted for vhost-user-block configuration".
    for (const field of ['path_on_host', 'is_read_only', 'io_engine', 'rate_limiter']) {
      if (r.has(field)) throw new ConfigError(r.at(field), "must be omitted when 'socket' is set (a vhost-user drive)");
    }
    drive.socket = socket;
  } else if (pathOnHost === undefined) {
    throw new ConfigError(path, "missing required field 'path_on_host'");
  } else {
    drive.path_on_host = pathOnHost;
  }
  return drive;
}

/** PATCH /drives/{drive_id} (after boot): a new backing file and/or rate limiter for a drive. */
export interface DriveUpdate {
  drive_id: string;
  path_on_host?: string;
  rate_limiter?: RateLimiterConfig;
}

export function parseDriveUpdate(json: unknown, path: string): DriveUpdate {
  const r = ObjectReader.open(json, path, ['drive_id', 'path_on_host', 'rate_limiter']);
  const update: DriveUpdate = { drive_id: r.requiredString('drive_id', { nonEmpty: true }) };
  const pathOnHost = r.optionalString('path_on_host', { nonEmpty: true });
  if (pathOnHost !== undefined) update.path_on_host = pathOnHost;
  const rateLimiter = r.nested('rate_limiter', parseRateLimiter);
  if (rateLimiter !== undefined) update.rate_limiter = rateLimiter;
  return update;
}
