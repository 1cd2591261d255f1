/**
 * The API benchmark's start-up probe, shared by both places that take it: measure.ts (part 1,
 * where the VMs are measured: on hardware, or inside the nested host) and run.ts (directly on this
 * machine, which needs no KVM: `--api-sock` creates no VM before InstanceStart).
 *
 * Per round, in rotating order: `node -e 0` (spawn → exit), a bare Node HTTP server on a Unix
 * socket and `tsvmm --api-sock S` (spawn → `GET /` answered 200), `tsvmm --version` (spawn →
 * exit); then a fresh import-probe.js process (where tsvmm's start-up goes).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, rmSync, watch } from 'node:fs';
import { request } from 'node:http';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawnTimed } from '../boot/spawn-timed.js';
import { type ImportSample, importStageTimes, type StartupKind, type StartupSample } from './samples.js';

const here = (rel: string): string => fileURLToPath(new URL(rel, import.meta.url));
/** The compiled CLI and import probe beside this file (a frozen copy's, when loaded from one). */
export const TSVMM_CLI = here('../../src/cli/main.js');
export const IMPORT_PROBE = here('./import-probe.js');
export const START_TIMEOUT_MS = 5 * 60_000;

const log = (s: string): void => {
  process.stderr.write(`bench: ${s}\n`);
};
export const now = (): number => performance.now();
export const fmt = (ms: number | undefined): string => (ms === undefined ? '-' : `${ms.toFixed(0)} ms`);

/** One HTTP request on a Unix socket; rejects on a connection error. */
export function http(sock: string, method: string, path: string, body?: unknown): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = request(
      { socketPath: sock, method, path, agent: false, headers: payload === undefined ? {} : { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(payload) } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

/**
 * Ask `GET /` until a 200; the time is from `t0`. The socket file's appearance wakes the loop
 * (inotify on its folder), so waiting costs the measured process no CPU; `pollMs` is only the
 * fallback period (a 5 ms connect loop measurably slowed the very start-up it timed, under
 * emulation). Call it right after spawn so the watch is in place before the socket can appear.
 */
export async function untilAnswering(sock: string, child: ChildProcess, t0: number, pollMs: number): Promise<{ ms: number; attempts: number }> {
  let wake: () => void = () => {};
  const watcher = watch(dirname(sock), (_event, file) => {
    if (file === basename(sock)) wake();
  });
  let attempts = 0;
  try {
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`the process ended (${child.exitCode ?? child.signalCode}) before answering`);
      if (now() - t0 > START_TIMEOUT_MS) throw new Error(`no answer within ${START_TIMEOUT_MS / 1000} s`);
      if (existsSync(sock)) {
        try {
          const r = await http(sock, 'GET', '/');
          if (r.status === 200) return { ms: now() - t0, attempts };
          throw new Error(`GET / answered ${r.status}: ${r.text}`);
        } catch (e) {
          const code = (e as NodeJS.ErrnoException).code;
          if (code !== 'ENOENT' && code !== 'ECONNREFUSED') throw e;
        }
        attempts++;
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, pollMs);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  } finally {
    watcher.close();
  }
}

export function exited(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}

export async function stop(child: ChildProcess): Promise<void> {
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited(child);
  clearTimeout(t);
}

let socketSeq = 0;
/** A fresh socket path in `dir`. */
export function socketPath(dir: string): string {
  return join(dir, `api-bench-${process.pid}-${socketSeq++}.sock`);
}

export interface StartupSpec {
  /** A writable folder for the API sockets. */
  readonly socketDir: string;
  readonly pollMs: number;
  readonly rounds: number;
  readonly warmup: number;
  /** The compiled CLI and import probe to time; default: the ones beside this file. */
  readonly tsvmmCli?: string;
  readonly importProbe?: string;
  /** Prefixed to each progress line (say, "this machine: "). */
  readonly logPrefix?: string;
}

/** A server process from just before spawn until it answers `GET /` with 200. */
async function serverStartup(spec: StartupSpec, kind: StartupKind, round: number, warmup: boolean): Promise<StartupSample> {
  const sock = socketPath(spec.socketDir);
  const args =
    kind === 'tsvmm-api'
      ? [spec.tsvmmCli ?? TSVMM_CLI, '--api-sock', sock]
      : ['-e', `require('http').createServer((q, s) => s.writeHead(200, { 'Content-Type': 'application/json' }).end('{}')).listen(${JSON.stringify(sock)})`];
  const t0 = now();
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
  try {
    const r = await untilAnswering(sock, child, t0, spec.pollMs);
    return { kind, round, warmup, ok: true, ms: r.ms, attempts: r.attempts };
  } catch (e) {
    return { kind, round, warmup, ok: false, ms: now() - t0, problem: `${(e as Error).message} ${stderr.trim()}`.trim() };
  } finally {
    await stop(child);
    rmSync(sock, { force: true });
  }
}

async function exitStartup(kind: StartupKind, args: readonly string[], round: number, warmup: boolean): Promise<StartupSample> {
  const r = await spawnTimed(process.execPath, args, { guestMiB: 1, timeoutMs: START_TIMEOUT_MS, sampleEveryMs: 3_600_000 });
  return { kind, round, warmup, ok: r.status === 0, ms: r.exitMs, ...(r.status !== 0 ? { problem: `exit status ${r.status ?? r.signal}` } : {}) };
}

async function importProbe(probe: string, round: number, warmup: boolean): Promise<ImportSample | undefined> {
  const r = await spawnTimed(process.execPath, [probe], { guestMiB: 1, timeoutMs: START_TIMEOUT_MS, sampleEveryMs: 3_600_000 });
  const line = r.lines.find((l) => l.text.startsWith('API-IMPORTS '));
  if (line === undefined) {
    log(`  import probe failed: ${r.lines.map((l) => l.text).join(' | ')}`);
    return undefined;
  }
  return { round, warmup, ...(JSON.parse(line.text.slice('API-IMPORTS '.length)) as Omit<ImportSample, 'round' | 'warmup'>) };
}

/** `warmup + rounds` rounds of the four start-ups, in rotating order, and an import probe per round. */
export async function measureStartup(spec: StartupSpec): Promise<{ startup: StartupSample[]; imports: ImportSample[] }> {
  const startup: StartupSample[] = [];
  const imports: ImportSample[] = [];
  const cli = spec.tsvmmCli ?? TSVMM_CLI;
  const pre = spec.logPrefix ?? '';
  const kinds: StartupKind[] = ['node-e0', 'node-server', 'tsvmm-api', 'tsvmm-version'];
  const total = spec.warmup + spec.rounds;
  for (let round = 0; round < total; round++) {
    const warmup = round < spec.warmup;
    for (let k = 0; k < kinds.length; k++) {
      const kind = kinds[(k + round) % kinds.length]!;
      const s =
        kind === 'node-e0'
          ? await exitStartup(kind, ['-e', '0'], round, warmup)
          : kind === 'tsvmm-version'
            ? await exitStartup(kind, [cli, '--version'], round, warmup)
            : await serverStartup(spec, kind, round, warmup);
      startup.push(s);
      log(`${pre}start-up round ${round + 1}/${total}${warmup ? ' (warm-up)' : ''} ${kind}: ${s.ok ? '' : `FAILED (${s.problem ?? ''}) `}${fmt(s.ms)}`);
    }
    const p = await importProbe(spec.importProbe ?? IMPORT_PROBE, round, warmup);
    if (p !== undefined) {
      imports.push(p);
      const t = importStageTimes(p);
      log(`${pre}  imports: bootstrap ${fmt(t.bootstrap)}, +server ${fmt(t.server)}, +cli ${fmt(t.cli)}, +config ${fmt(t.config)}, +launch ${fmt(t.launch)}`);
    }
  }
  return { startup, imports };
}
