/**
 * The VMM's own log (Firecracker's `logger`): one line per event, to a file or named pipe the
 * client named, or to standard error until one is configured. Lines look like Firecracker's
 * (`2026-11-26T04:30:00.123Z [vm-id:main:Info] message`, the level only with show_level, the
 * origin only with show_log_origin), so tools that tail Firecracker's log read ours.
 */
import { closeSync, constants, openSync, writeSync } from 'node:fs';
import type { LoggerConfig, LogLevel } from '../config.js';
import { TsvmmError } from '../../util/errors.js';

/** Severity order; a message is written when its rank is at most the configured level's. */
const RANK: Readonly<Record<LogLevel, number>> = { Off: 0, Error: 1, Warning: 2, Info: 3, Debug: 4, Trace: 5 };

export class LoggerSetupError extends TsvmmError {}

export class VmmLogger {
  private fd: number | undefined;
  private level: LogLevel = 'Warning';
  private showLevel = true;
  private showOrigin = false;
  private module: string | undefined;

  constructor(private readonly instanceId: string) {}

  /**
   * Apply PUT /logger. The path is opened for appending (created if missing, as a file); a named
   * pipe is opened non-blocking so a pipe nobody reads yet cannot hang the VMM (Firecracker opens
   * it O_NONBLOCK too).
   */
  configure(config: LoggerConfig): void {
    let fd: number | undefined;
    if (config.log_path !== undefined) {
      try {
        fd = openSync(config.log_path, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NONBLOCK, 0o640);
      } catch (e) {
        throw new LoggerSetupError(`cannot open the log file ${config.log_path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}; check that its folder exists and is writable`);
      }
    }
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = fd;
    this.level = config.level;
    this.showLevel = config.show_level;
    this.showOrigin = config.show_log_origin;
    this.module = config.module;
  }

  error(message: string, origin = 'vmm'): void {
    this.log('Error', message, origin);
  }
  warn(message: string, origin = 'vmm'): void {
    this.log('Warning', message, origin);
  }
  info(message: string, origin = 'vmm'): void {
    this.log('Info', message, origin);
  }
  debug(message: string, origin = 'vmm'): void {
    this.log('Debug', message, origin);
  }

  log(level: Exclude<LogLevel, 'Off'>, message: string, origin: string): void {
    if (RANK[level] > RANK[this.level]) return;
    if (this.module !== undefined && !origin.startsWith(this.module)) return;
    const tags = [this.instanceId, 'main', ...(this.showLevel ? [level] : []), ...(this.showOrigin ? [origin] : [])].join(':');
    const line = `${new Date().toISOString()} [${tags}] ${message.replace(/\n/g, ' ')}\n`;
    try {
      writeSync(this.fd ?? 2, line);
    } catch {
      // A full pipe or a vanished reader must not take the VMM down: the line is dropped.
    }
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}
