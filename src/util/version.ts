/** tsvmm's version, from package.json (the CLI's --version, GET /version, GET / vmm_version). */
import { readFileSync } from 'node:fs';

let cached: string | undefined;

export function packageVersion(): string {
  // Compiled to dist/src/util/version.js: package.json is three folders up.
  cached ??= (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  return cached;
}
