import { homedir } from 'node:os';
import { join } from 'node:path';

/**
 * Where tsvmm keeps what it fetches and builds (Debian packages, kernels, initramfs images).
 * Outside the checkout so that a fresh clone reuses it; `TSVMM_CACHE_DIR` overrides it.
 */
export function cacheDir(...parts: string[]): string {
  const base =
    process.env['TSVMM_CACHE_DIR'] ??
    join(process.env['XDG_CACHE_HOME'] ?? join(homedir(), '.cache'), 'tsvmm');
  return join(base, ...parts);
}
