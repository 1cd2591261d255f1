/**
 * Firecracker's `metrics`: a JSON object per line, appended to a file or named pipe on every
 * FlushMetrics action and periodically (Firecracker's period is 60 s). Each line carries the
 * time, the API server's own counters and the VM's device counters (vmm/vm-control.ts).
 */
import { closeSync, constants, openSync, writeSync } from 'node:fs';
import type { MetricsConfig } from '../config.js';
import { TsvmmError } from '../../util/errors.js';
import type { VmMetrics } from '../../vmm/vm-control.js';

/** Firecracker writes metrics every 60 seconds (src/vmm/src/lib.rs, WRITE_METRICS_PERIOD_MS). */
export const METRICS_PERIOD_MS = 60_000;

export class MetricsSetupError extends TsvmmError {}

export interface ApiMetrics {
  requests: number;
  /** Requests answered with a 4xx status. */
  bad_requests: number;
}

export class MetricsWriter {
  private fd: number | undefined;
  private timer: NodeJS.Timeout | undefined;

  get configured(): boolean {
    return this.fd !== undefined;
  }

  /** Apply PUT /metrics: open (create) the path for appending; a FIFO is opened non-blocking. */
  configure(config: MetricsConfig, periodic: () => void): void {
    let fd: number;
    try {
      fd = openSync(config.metrics_path, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NONBLOCK, 0o640);
    } catch (e) {
      throw new MetricsSetupError(`cannot open the metrics file ${config.metrics_path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}; check that its folder exists and is writable`);
    }
    this.close();
    this.fd = fd;
    this.timer = setInterval(periodic, METRICS_PERIOD_MS);
    this.timer.unref();
  }

  /** Append one line; false when metrics are not configured or the line could not be written. */
  write(api: ApiMetrics, vm: VmMetrics | undefined): boolean {
    if (this.fd === undefined) return false;
    const line = `${JSON.stringify({ utc_timestamp_ms: Date.now(), api_server: api, ...(vm ?? {}) })}\n`;
    try {
      writeSync(this.fd, line);
      return true;
    } catch {
      return false;
    }
  }

  close(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}
