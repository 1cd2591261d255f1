/**
 * Spawn one VMM process and time what it prints, line by line, from the moment of spawn, while
 * sampling its memory. The parent's clock is the reference for every VMM alike, so VMM process
 * start-up (exec, dynamic linking, Node's bootstrap and module loading) is inside the numbers.
 */
import { spawn } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { type MemorySample, sampleMemory } from './proc-memory.js';

export interface TimedLine {
  readonly stream: 'stdout' | 'stderr';
  /** Milliseconds after spawn at which the chunk holding the line's end arrived. */
  readonly atMs: number;
  readonly text: string;
}

export interface TimedRun {
  /** Unix time (ms, sub-ms resolution) just before spawn. */
  readonly spawnEpochMs: number;
  readonly lines: readonly TimedLine[];
  /** Milliseconds after spawn at which the process was seen to exit. */
  readonly exitMs: number;
  readonly status: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly timedOut: boolean;
  readonly memory: readonly MemorySample[];
  readonly spawnError?: string;
}

export interface SpawnTimedOptions {
  readonly guestMiB: number;
  readonly timeoutMs: number;
  /** Memory sampling period. Each sample reads /proc/PID/smaps: a few ms of the parent's time. */
  readonly sampleEveryMs: number;
  readonly cwd?: string;
}

export function spawnTimed(command: string, args: readonly string[], opts: SpawnTimedOptions): Promise<TimedRun> {
  return new Promise((resolve) => {
    const lines: TimedLine[] = [];
    const memory: MemorySample[] = [];
    let timedOut = false;
    let spawnError: string | undefined;
    const t0 = performance.now();
    const spawnEpochMs = performance.timeOrigin + t0;
    const since = (): number => performance.now() - t0;
    // stdin closed: neither VMM needs input, and neither should wait on a terminal.
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...(opts.cwd !== undefined ? { cwd: opts.cwd } : {}) });
    const split = (stream: 'stdout' | 'stderr') => {
      let partial = '';
      return {
        push(chunk: Buffer): void {
          const at = since();
          const parts = (partial + chunk.toString('utf8')).split('\n');
          partial = parts.pop() ?? '';
          for (const p of parts) lines.push({ stream, atMs: at, text: p.replace(/\r$/, '') });
        },
        end(): void {
          if (partial !== '') lines.push({ stream, atMs: since(), text: partial.replace(/\r$/, '') });
          partial = '';
        },
      };
    };
    const out = split('stdout');
    const err = split('stderr');
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    const sample = (): void => {
      if (child.pid === undefined) return;
      const s = sampleMemory(child.pid, opts.guestMiB, since());
      if (s !== undefined) memory.push(s);
    };
    const sampler = setInterval(sample, opts.sampleEveryMs);
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, opts.timeoutMs);
    child.on('error', (e) => {
      spawnError = e.message;
    });
    // 'exit' is when the process ended; 'close' waits for its pipes too (the exit time is taken at 'exit').
    let exitMs: number | undefined;
    child.on('exit', () => {
      exitMs = since();
      clearInterval(sampler);
    });
    child.on('close', (status, signal) => {
      clearInterval(sampler);
      clearTimeout(timer);
      out.end();
      err.end();
      resolve({
        spawnEpochMs,
        lines,
        exitMs: exitMs ?? since(),
        status,
        signal,
        timedOut,
        memory,
        ...(spawnError !== undefined ? { spawnError } : {}),
      });
    });
  });
}
