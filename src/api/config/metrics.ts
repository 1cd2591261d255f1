/** Firecracker's `metrics` (PUT /metrics): where JSON metrics lines are flushed. */
import { ObjectReader } from './schema.js';

export interface MetricsConfig {
  /** A file or named pipe. */
  metrics_path: string;
}

export function parseMetrics(json: unknown, path: string): MetricsConfig {
  const r = ObjectReader.open(json, path, ['metrics_path'], { metrics_fifo: "replaced by 'metrics_path'" });
  return { metrics_path: r.requiredString('metrics_path', { nonEmpty: true }) };
}
