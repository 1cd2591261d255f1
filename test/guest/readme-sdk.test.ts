/**
 * README.md's SDK example runs as written: the ```ts block right after the
 * `<!-- readme-sdk-example -->` marker is copied verbatim into `readme.mjs` in a fresh folder whose
 * `node_modules/tsvmm` is this package (a symlink to its root, so `import … from 'tsvmm'` goes
 * through package.json's `exports` to the compiled dist/src/index.js, as for a user who installed
 * it), and run with plain `node`. No TypeScript compiler is involved: the block must be JavaScript.
 *
 * It boots the default guest, so it sits in the guest layer (inside the nested host on a machine
 * without VT-x/AMD-V, where the runner has already built the default guest).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';

/** Paths relative to the compiled test (dist/test/guest/). */
const README = new URL('../../../README.md', import.meta.url);
const PACKAGE_ROOT = fileURLToPath(new URL('../../../', import.meta.url)).replace(/\/$/, '');

const MARKER = '<!-- readme-sdk-example -->';
/** The default guest's greeting (src/image/guest-protocol.ts DEFAULT_GUEST_COMMAND). */
const GREETING = 'Hello from a tsvmm microVM';
const RUN_TIMEOUT_MS = 240_000;

/** The code of the ```ts block that follows the marker (nothing but blank space between them). */
function sdkExample(markdown: string): string {
  const at = markdown.indexOf(MARKER);
  assert.ok(at >= 0, `README.md has no ${MARKER} marker before its SDK example`);
  const block = /^\s*```ts[ \t]*\r?\n([\s\S]*?)^```[ \t]*$/m.exec(markdown.slice(at + MARKER.length));
  assert.ok(block !== null, `the ${MARKER} marker in README.md is not followed by a \`\`\`ts block`);
  return block[1]!;
}

const dir = mkdtempSync(join(tmpdir(), 'tsvmm-readme-'));
after(() => rmSync(dir, { recursive: true, force: true }));

test("README.md's SDK example runs as written: the default guest greets and the script prints 'poweroff 0'", { timeout: RUN_TIMEOUT_MS + 60_000 }, async () => {
  const code = sdkExample(readFileSync(README, 'utf8'));
  assert.match(code, /from 'tsvmm'/, 'the example imports the package by its name');
  writeFileSync(join(dir, 'readme.mjs'), code);
  mkdirSync(join(dir, 'node_modules'));
  symlinkSync(PACKAGE_ROOT, join(dir, 'node_modules', 'tsvmm'), 'dir');

  // As a user runs it from a shell: the test runner's FORCE_COLOR would make console.log colour
  // the status number.
  const env = { ...process.env };
  delete env['FORCE_COLOR'];
  env['NO_COLOR'] = '1';
  const child = spawn(process.execPath, ['readme.mjs'], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, RUN_TIMEOUT_MS);
  const [status, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on('close', (c, s) => resolve([c, s])));
  clearTimeout(timer);
  const context = `\n--- stdout (end) ---\n${stdout.slice(-3000)}\n--- stderr (end) ---\n${stderr.slice(-3000)}`;

  assert.ok(!timedOut, `node readme.mjs did not finish within ${RUN_TIMEOUT_MS / 1000} s${context}`);
  assert.equal(status, 0, `node readme.mjs ended with status ${status}${signal !== null ? ` (signal ${signal})` : ''}${context}`);
  assert.ok(stdout.includes(GREETING), `the guest's greeting is missing from the output${context}`);
  const lines = stdout.split(/\r?\n/).filter((l) => l.trim() !== '');
  assert.equal(lines[lines.length - 1]?.trim(), 'poweroff 0', `the last line should be the exit the example prints${context}`);
});
