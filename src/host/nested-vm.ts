/**
 * A microVM started through the API on a machine whose KVM cannot run stock Linux: it runs inside
 * the nested host (nested.ts), in an agent process (cli/vm-agent.ts) that starts a MicroVm there
 * and answers control calls. The calls travel as JSON lines over a virtio-serial port of the nested
 * host, which QEMU connects to a Unix socket here, so pause, resume, Ctrl-Alt-Del, drive updates
 * and metrics reach the VM the same way as in-process, just one machine further away.
 *
 * Wire format, one JSON object per line:
 *   here → agent   {"id": 7, "op": "pause" | "resume" | "ctrlAltDel" | "updateDrive" | "metrics" | "stop", "args": {...}}
 *   agent → here   {"id": 7, "ok": true, "result": ...} | {"id": 7, "ok": false, "error": "one line"}
 *                  {"event": "started"} | {"event": "failed", "error": "one line"} | {"event": "exit", "exit": {...}}
 *                  {"event": "booted", "value": n, "elapsedUs": n, "cpuUs": n}   (the guest's boot-timer write)
 */
import { rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TsvmmError } from '../util/errors.js';
import { type ProgressSink, stderrProgress } from '../util/progress.js';
import type { BootTimerEvent } from '../devices/legacy/boot-timer.js';
import type { VmControl, VmExitSummary, VmMetrics } from '../vmm/vm-control.js';
import type { VmSpec } from '../vmm/vm-spec.js';
import { type NestedRunResult, runInNestedHost } from './nested.js';
import { makeOwnedTempDir, removeStaleTempDirs } from './owned-temp-dirs.js';

/** Prefix of the folder under the OS's temporary folder that holds a nested VM's control socket. */
const CONTROL_DIR_PREFIX = 'tsvmm-ctl-';

/** The VM inside the nested host failed to start, or the nested host failed under it. */
export class NestedVmError extends TsvmmError {}

/** A VM behind the API runs as long as its client wants: the nested host's own timeout is this large. */
const NESTED_VM_TIMEOUT_MS = 24 * 24 * 3600 * 1000;
/** From QEMU's start to the agent's "started": the nested host's boot plus the VM's creation. */
const START_TIMEOUT_MS = 180_000;
const CONNECT_RETRY_MS = 50;

export interface NestedVmOptions {
  /** The VM's console and the agent's messages, as they arrive. Default: stdout. */
  onOutput?: (text: string) => void;
  progress?: ProgressSink;
  /** The guest's boot-timer write, measured by the VMM inside the nested host. */
  onBootTimer?: (event: BootTimerEvent) => void;
}

type Reply = { ok: true; result?: unknown } | { ok: false; error: string };

interface AgentLine {
  id?: number;
  ok?: boolean;
  result?: unknown;
  error?: string;
  event?: 'started' | 'failed' | 'exit' | 'booted';
  exit?: VmExitSummary;
  value?: number;
  elapsedUs?: number;
  cpuUs?: number;
}

export class NestedVm implements VmControl {
  private nextId = 1;
  private readonly pending = new Map<number, (reply: Reply) => void>();
  private exitReported: VmExitSummary | undefined;
  private readonly ended: Promise<VmExitSummary>;

  private constructor(
    private readonly socket: Socket,
    run: Promise<NestedRunResult>,
    private readonly abort: AbortController,
    cleanup: () => void,
    private readonly onBootTimer?: (event: BootTimerEvent) => void,
  ) {
    this.ended = run
      .then(
        (r): VmExitSummary =>
          this.exitReported ??
          (r.timedOut
            ? { reason: 'error', status: 1, message: 'the nested host timed out' }
            : { reason: 'error', status: r.status === 0 ? 1 : r.status, message: `the VM's agent in the nested host ended (status ${r.status}) without reporting an exit` }),
        (e: unknown): VmExitSummary => this.exitReported ?? { reason: 'error', status: 1, message: `the nested host failed: ${e instanceof Error ? e.message : String(e)}` },
      )
      .finally(() => {
        socket.destroy();
        for (const settle of this.pending.values()) settle({ ok: false, error: 'the microVM has ended' });
        this.pending.clear();
        cleanup();
      });
  }

  /** Boot the nested host, start `spec` in it, and resolve once the VM runs there. */
  static async start(spec: VmSpec, options: NestedVmOptions = {}): Promise<NestedVm> {
    removeStaleTempDirs(CONTROL_DIR_PREFIX);
    const dir = makeOwnedTempDir(CONTROL_DIR_PREFIX);
    const controlSocket = join(dir, 'control.sock');
    const cleanup = (): void => rmSync(dir, { recursive: true, force: true });
    const abort = new AbortController();
    const cli = fileURLToPath(new URL('../cli/main.js', import.meta.url));
    const run = runInNestedHost([process.execPath, cli, '__vm-agent', Buffer.from(JSON.stringify(spec)).toString('base64')], {
      ...nestedPlaces(spec),
      onOutput: options.onOutput ?? ((s) => process.stdout.write(s)),
      progress: options.progress ?? stderrProgress,
      timeoutMs: NESTED_VM_TIMEOUT_MS,
      ...(process.env['TSVMM_DEBUG'] ? { env: { TSVMM_DEBUG: process.env['TSVMM_DEBUG'] } } : {}),
      signal: abort.signal,
      controlSocket,
    });
    let runEnded = false;
    const settled = run.then(
      (r) => {
        runEnded = true;
        return r;
      },
      (e: unknown) => {
        runEnded = true;
        throw e;
      },
    );
    try {
      const socket = await connectWhenListening(controlSocket, () => runEnded);
      const vm = new NestedVm(socket, settled, abort, cleanup, options.onBootTimer);
      await vm.started(settled);
      return vm;
    } catch (e) {
      abort.abort();
      await settled.catch(() => undefined);
      cleanup();
      throw e;
    }
  }

  /** Read agent lines until "started"; a failure or the run ending first is an error. */
  private started(run: Promise<NestedRunResult>): Promise<void> {
    return new Promise<void>((resolvePromise, reject) => {
      let buffered = '';
      let startedYet = false;
      const timer = setTimeout(() => reject(new NestedVmError(`the VM did not start in the nested host within ${START_TIMEOUT_MS / 1000} s`)), START_TIMEOUT_MS);
      this.socket.setEncoding('utf8');
      this.socket.on('data', (chunk: string) => {
        buffered += chunk;
        let nl: number;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const text = buffered.slice(0, nl);
          buffered = buffered.slice(nl + 1);
          let line: AgentLine;
          try {
            line = JSON.parse(text) as AgentLine;
          } catch {
            continue; // Not ours (the port carries nothing else, but never trust a line).
          }
          if (line.event === 'started') {
            startedYet = true;
            clearTimeout(timer);
            resolvePromise();
          } else if (line.event === 'failed') {
            clearTimeout(timer);
            reject(new NestedVmError(line.error ?? 'the VM failed to start in the nested host'));
          } else if (line.event === 'booted') {
            this.onBootTimer?.({ value: line.value ?? 0, elapsedUs: line.elapsedUs ?? 0, cpuUs: line.cpuUs ?? 0 });
          } else if (line.event === 'exit' && line.exit !== undefined) {
            this.exitReported = line.exit;
            // Hanging up ends the agent's blocked read of the port (virtio_console returns 0).
            this.socket.end();
          } else if (typeof line.id === 'number') {
            const settle = this.pending.get(line.id);
            this.pending.delete(line.id);
            settle?.(line.ok === true ? { ok: true, result: line.result } : { ok: false, error: line.error ?? 'failed' });
          }
        }
      });
      void run.then(
        (r) => {
          if (!startedYet) {
            clearTimeout(timer);
            reject(new NestedVmError(`the nested host ended (status ${r.status}) before the VM started`));
          }
        },
        (e: unknown) => {
          clearTimeout(timer);
          reject(e instanceof Error ? e : new NestedVmError(String(e)));
        },
      );
    });
  }

  private async call(op: string, args: Record<string, unknown> = {}): Promise<unknown> {
    if (this.exitReported !== undefined || this.socket.destroyed) throw new NestedVmError('the microVM has ended');
    const id = this.nextId++;
    const reply = await new Promise<Reply>((resolvePromise) => {
      this.pending.set(id, resolvePromise);
      this.socket.write(`${JSON.stringify({ id, op, args })}\n`);
    });
    if (!reply.ok) throw new NestedVmError(reply.error);
    return reply.result;
  }

  async pause(): Promise<void> {
    await this.call('pause');
  }

  async resume(): Promise<void> {
    await this.call('resume');
  }

  async sendCtrlAltDel(): Promise<boolean> {
    return (await this.call('ctrlAltDel')) === true;
  }

  async updateDrive(driveId: string, pathOnHost: string): Promise<void> {
    await this.call('updateDrive', { driveId, pathOnHost: resolve(pathOnHost) });
  }

  async metrics(): Promise<VmMetrics> {
    return (await this.call('metrics')) as VmMetrics;
  }

  stop(detail?: string): void {
    if (this.socket.destroyed) {
      this.abort.abort();
      return;
    }
    // The agent stops the VM and exits; if it cannot answer, the nested host goes.
    this.call('stop', detail === undefined ? {} : { detail }).catch(() => this.abort.abort());
  }

  wait(): Promise<VmExitSummary> {
    return this.ended;
  }
}

/**
 * Where a VM's command runs in the nested host and what it must see there: this machine's root is
 * read-only inside with a fresh /tmp, so the folders of the kernel, initrd and drives are kept
 * visible, and those of writable drives and the vsock socket are shared read-write.
 */
export function nestedPlaces(spec: VmSpec): { cwd: string; visible: string[]; writable: string[] } {
  const drives = spec.drives ?? [];
  return {
    cwd: ['/proc', '/sys', '/dev'].some((d) => process.cwd().startsWith(d)) ? '/' : process.cwd(),
    visible: [spec.kernel, ...(spec.initrd !== undefined ? [spec.initrd] : []), ...drives.map((d) => d.path)].map((p) => dirname(resolve(p))),
    writable: [...drives.filter((d) => !d.readOnly).map((d) => dirname(resolve(d.path))), ...(spec.vsock !== undefined ? [dirname(spec.vsock.udsPath)] : [])],
  };
}

/** Connect to QEMU's control socket once QEMU has created it. */
async function connectWhenListening(path: string, gaveUp: () => boolean): Promise<Socket> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    if (gaveUp()) throw new NestedVmError('the nested host ended before its control channel opened');
    try {
      return await new Promise<Socket>((resolvePromise, reject) => {
        const s = connect(path);
        s.once('connect', () => {
          s.off('error', reject);
          resolvePromise(s);
        });
        s.once('error', reject);
      });
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if ((code !== 'ENOENT' && code !== 'ECONNREFUSED') || Date.now() > deadline) {
        throw new NestedVmError(`cannot reach the nested host's control channel at ${path}: ${code ?? String(e)}`);
      }
      await new Promise((r) => setTimeout(r, CONNECT_RETRY_MS));
    }
  }
}
