/** Firecracker's `logger` (PUT /logger): where the VMM's own log goes and how much of it. */
import { ObjectReader } from './schema.js';

import { LOG_LEVELS, type LogLevel } from './limits.js';

export { LOG_LEVELS, type LogLevel };

export interface LoggerConfig {
  /** A file or named pipe; absent means standard error. */
  log_path?: string;
  level: LogLevel;
  show_level: boolean;
  show_log_origin: boolean;
  /** Only messages from this module path are logged. */
  module?: string;
}

export function parseLogger(json: unknown, path: string): LoggerConfig {
  const r = ObjectReader.open(json, path, ['log_path', 'level', 'show_level', 'show_log_origin', 'module'], {
    log_fifo: "replaced by 'log_path'",
    options: 'no longer exists',
  });
  // Firecracker parses the level case-insensitively and also accepts "warn".
  const config: LoggerConfig = {
    level: r.enumOf('level', LOG_LEVELS, 'Info', { caseInsensitive: true, aliases: { warn: 'Warning' } }),
    show_level: r.boolean('show_level', false),
    show_log_origin: r.boolean('show_log_origin', false),
  };
  const logPath = r.optionalString('log_path', { nonEmpty: true });
  if (logPath !== undefined) config.log_path = logPath;
  const module = r.optionalString('module', { nonEmpty: true });
  if (module !== undefined) config.module = module;
  return config;
}
