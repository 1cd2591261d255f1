/**
 * Where `tsvmm --api-sock`'s start-up goes: a fresh process imports, in order, the pieces the API
 * mode loads before it listens, then the boot code it loads after, and prints when each was done
 * (milliseconds after the process's time origin) as `API-IMPORTS {json}`.
 *
 *   node dist/bench/api/import-probe.js
 *
 * Also counts the modules each step adds, by following the compiled files' static imports.
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const scriptStart = performance.now();
const SRC = fileURLToPath(new URL('../../src/', import.meta.url));

/** The static import graph below `entries` (compiled ES modules; relative specifiers only). */
export function staticModules(entries: readonly string[]): Set<string> {
  const seen = new Set<string>();
  const todo = entries.map((e) => resolve(e));
  while (todo.length > 0) {
    const file = todo.pop()!;
    if (seen.has(file)) continue;
    seen.add(file);
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(/^\s*(?:import|export)\s[^;]*?\sfrom\s+'(\.{1,2}\/[^']+)'|^\s*import\s+'(\.{1,2}\/[^']+)'/gm)) {
      todo.push(resolve(dirname(file), (m[1] ?? m[2])!));
    }
  }
  return seen;
}

async function probe(): Promise<void> {
  // In the order `--api-sock` loads them: the server before listening, the parsers and the
  // OpenAPI document with its validator at the first request that needs them (the first PUT),
  // the boot code at InstanceStart.
  await import('../../src/api/server/http-server.js');
  await import('../../src/api/server/controller.js');
  const server = performance.now();
  await import('../../src/cli/main.js');
  await import('../../src/cli/api-mode.js');
  const cli = performance.now();
  await import('../../src/api/config.js');
  await import('../../src/api/server/request-validator.js');
  const config = performance.now();
  await import('../../src/vmm/launch.js');
  const launch = performance.now();
  const before = staticModules([`${SRC}cli/main.js`, `${SRC}cli/api-mode.js`]);
  const withLaunch = staticModules([`${SRC}cli/main.js`, `${SRC}cli/api-mode.js`, `${SRC}vmm/launch.js`]);
  const out = { order: 'config-after-listen', scriptStart, config, server, cli, launch, modulesBeforeListen: before.size, modulesLaunch: withLaunch.size - before.size };
  process.stdout.write(`API-IMPORTS ${JSON.stringify(out)}\n`);
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) await probe();
