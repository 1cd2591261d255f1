/**
 * What `tsvmm --api-sock` loads before it answers: orchestrators wait for the first answer of a
 * fresh VMM, and on Node that wait is mostly ES module loading (bench/results/api-*.md). The
 * configuration parsers, the OpenAPI document with its validator, and the boot code are loaded
 * later, by the first request that needs them. This runs the real CLI with a module-resolution
 * hook that records every tsvmm module as it loads, and checks what had loaded by the first
 * answer, and that the deferred modules do load (and work) once a request needs them.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const bin = fileURLToPath(new URL('../../../bin/tsvmm.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'tsvmm-api-startup-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** A loader hook (module.register) that appends each resolved tsvmm module's URL to a file, in order. */
function writeHooks(logFile: string): string {
  const hooks = join(dir, 'hooks.mjs');
  writeFileSync(
    hooks,
    `import { appendFileSync } from 'node:fs';
export async function resolve(specifier, context, next) {
  const r = await next(specifier, context);
  if (r.url.includes('/dist/src/')) appendFileSync(${JSON.stringify(logFile)}, r.url.slice(r.url.indexOf('/dist/src/') + 10) + '\\n');
  return r;
}
`,
  );
  const register = join(dir, 'register.mjs');
  writeFileSync(register, `import { register } from 'node:module';\nregister(${JSON.stringify(`file://${hooks}`)});\n`);
  return register;
}

function call(sock: string, method: string, path: string, body?: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const headers = body === undefined ? {} : { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) };
    const req = request({ socketPath: sock, method, path, agent: false, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function untilSocket(sock: string, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!existsSync(sock)) {
    if (child.exitCode !== null) throw new Error(`tsvmm exited (${child.exitCode}) before listening`);
    if (Date.now() > deadline) throw new Error('tsvmm did not listen within 30 s');
    await new Promise((r) => setTimeout(r, 20));
  }
}

const loaded = (logFile: string): string[] => (existsSync(logFile) ? readFileSync(logFile, 'utf8').split('\n').filter((l) => l.length > 0) : []);

test('--api-sock answers GET / before loading the parsers, the validator and the boot code, and loads them when a request needs them', async () => {
  const logFile = join(dir, 'loaded.txt');
  const sock = join(dir, 'api.sock');
  const child = spawn(process.execPath, ['--import', writeHooks(logFile), bin, '--api-sock', sock], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  try {
    await untilSocket(sock, child);
    const info = await call(sock, 'GET', '/');
    assert.equal(info.status, 200, stderr);
    assert.equal((JSON.parse(info.text) as { state: string }).state, 'Not started');
    assert.equal((await call(sock, 'GET', '/machine-config')).status, 200);
    const beforeFirstPut = loaded(logFile);
    assert.ok(beforeFirstPut.includes('api/server/http-server.js'), beforeFirstPut.join(' '));
    for (const deferred of ['api/config.js', 'api/config/vm-config.js', 'api/server/request-validator.js', 'api/server/openapi.js', 'vmm/launch.js', 'vmm/vm-spec.js']) {
      assert.ok(!beforeFirstPut.includes(deferred), `${deferred} was loaded before any request needed it`);
    }
    // The first body-carrying request loads the validator and the parsers, and is checked by them.
    const bad = await call(sock, 'PUT', '/boot-source', '{"kernel_image_path": 5}');
    assert.equal(bad.status, 400);
    assert.match(bad.text, /kernel_image_path: must be a string/);
    assert.equal((await call(sock, 'PUT', '/boot-source', '{"kernel_image_path": "/vmlinux"}')).status, 204);
    const afterPut = loaded(logFile);
    assert.ok(afterPut.includes('api/server/request-validator.js') && afterPut.includes('api/config.js'), afterPut.join(' '));
    assert.ok(!afterPut.includes('vmm/launch.js'), 'the boot code waits for InstanceStart');
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
  }
});
