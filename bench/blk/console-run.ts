/**
 * What every benchmark guest boot has in common, whatever it measures: spawn the VMM, split its
 * console into lines, follow the guest script's common markers (the INFO line, DONE, ERROR, and
 * sections of gzip + base64 JSON or error text between BEGIN/END markers named after a job or
 * test), on timeout describe what the VMM was doing (stall-report.ts) and stop it, and report
 * how the boot ended. The benchmark's own markers go to its `onLine`, which can read the VMM's
 * CPU time at the moment a marker arrives.
 * Used by bench/blk/vmm-run.ts and bench/net/vmm-run.ts.
 */
import { spawn } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { gunzipSync } from 'node:zlib';
import { type CpuSnapshot, cpuSnapshot } from './proc-cpu.js';
import { type KvmStats, kvmStatsSnapshot } from './kvm-stats.js';
import { describeStall } from './stall-report.js';
import type { RunSampleBase, VmmKind } from './samples.js';
import type { Invocation } from './vmms.js';

/** The markers every guest script prints (each benchmark spells them with its own prefix). */
export interface CommonMarks {
  readonly info: string;
  readonly done: string;
  readonly error: string;
  readonly jsonBegin: string;
  readonly jsonEnd: string;
  readonly errBegin: string;
  readonly errEnd: string;
}

/**
 * TSVMM_BENCH_CONSOLE=1: every console line the guest prints goes to stderr with the VMM and the
 * seconds since spawn (cut at 200 characters), to see what a guest printed while it was measured.
 */
const ECHO_CONSOLE = process.env['TSVMM_BENCH_CONSOLE'] === '1';

/** A job's or test's sections: the raw lines while they arrive, the text once the END marker came. */
export interface Sections {
  json?: string[];
  jsonText?: string;
  err?: string[];
  errText?: string;
}

/** A moment during the boot: ms since spawn and the VMM's CPU times then (undefined once it is gone). */
export interface Mark {
  readonly at: number;
  readonly cpu: CpuSnapshot | undefined;
  /** KVM's counters for the VMM's VM (debugfs), where readable. */
  readonly kvm: KvmStats | undefined;
}

export interface ConsoleRunOptions {
  readonly vmm: VmmKind;
  readonly round: number;
  readonly invocation: Invocation;
  readonly timeoutMs: number;
  readonly cpuModel?: string;
  readonly log: (line: string) => void;
  /** The markers' common prefix ('BLK-'): a protocol line is found wherever on the console line it starts. */
  readonly prefix: string;
  readonly marks: CommonMarks;
  /** The state a section named `name` belongs to; undefined for a name the run does not expect. */
  readonly sections: (name: string) => Sections | undefined;
  /** Any other line; `mark()` reads the clock and the VMM's CPU now. */
  readonly onLine: (line: string, mark: () => Mark) => void;
  /** What the progress line says once the INFO line arrived. */
  readonly describeInfo: (info: Readonly<Record<string, string>>) => string;
  /** Console lines (not the protocol's) worth keeping in the notes; stderr lines are always kept. */
  readonly keepLine: (line: string) => boolean;
  /** How long a boot may go on after its guest reported a stalled CPU (GUEST_STALL_LINE); default STALL_GRACE_MS. */
  readonly stallGraceMs?: number;
  /**
   * Once the guest is up (its INFO line), the longest the guest's script may go without printing
   * a protocol line before the boot is stopped; undefined: only the whole boot's timeout applies.
   * A guest that stopped making progress without a stall report (2026-11-28: a nested host
   * spinning a vCPU inside KVM for 15 min, until the boot's timeout) then costs minutes, not the
   * rest of the boot's allowance.
   */
  readonly silenceLimitMs?: number;
  /**
   * The longest the guest may take to print its INFO line (to come up) before the boot is
   * stopped; undefined: only the whole boot's timeout applies. That timeout covers the whole
   * run's work, tens of minutes; a guest that hangs while booting (seen in the nested host:
   * QEMU's guest silent after its firmware) is otherwise waited for that long.
   */
  readonly upLimitMs?: number;
}

/**
 * The up limit both benchmarks give a guest (ConsoleRunOptions.upLimitMs). A boot takes 15-30 s in
 * the nested host (two guests booting at once included); whatever the whole boot's allowance, one
 * not up in this long will not come.
 */
export const GUEST_UP_LIMIT_MS = 3 * 60_000;

/** How a boot ended: the sample's common fields, and the problems every benchmark counts (spawn, timeout, guest error, script unfinished, exit status). */
export interface ConsoleRunEnd {
  readonly sample: Omit<RunSampleBase, 'ok' | 'problem'>;
  readonly problems: readonly string[];
}

/** After SIGTERM on a timeout, how long the VMM may take to stop before SIGKILL. */
const TERM_GRACE_MS = 5000;
/**
 * A guest kernel's report that a CPU has not progressed for many seconds (RCU's stall detector,
 * the soft-lockup watchdog). In the nested host this was seen when the emulated CPU's nested
 * virtualization wedged a vCPU for good (2026-11-27: a vCPU retrying one instruction for 10 min,
 * under tsvmm and QEMU alike). A boot that reports one measures nothing useful either way, so it
 * is stopped STALL_GRACE_MS later unless its script finished, instead of at its full timeout.
 */
export const GUEST_STALL_LINE = /rcu: INFO: rcu_\w+ (detected stalls|self-detected stall)|watchdog: BUG: soft lockup/;
export const STALL_GRACE_MS = 30_000;
/**
 * The guest kernel's last words when it powers off, halts or reboots on request (kernel/reboot.c:
 * "reboot: Power down", "reboot: System halted", "reboot: Restarting system", printed at
 * KERN_EMERG, so on the console whatever the log level).
 */
export const GUEST_REBOOT_LINE = /reboot: (Power down|System halted|Restarting system)/;
/** A guest kernel panic (kernel/panic.c); with panic=1 the guest then resets, without GUEST_REBOOT_LINE. */
const GUEST_PANIC_LINE = /Kernel panic - not syncing/;
/**
 * QEMU ran with -no-reboot ends with status 0 on a guest reset, without a word: KVM's shutdown
 * exit (a triple fault) becomes a reset request, which -no-reboot turns into a normal exit. When
 * the guest never said it was powering off or rebooting, that is what happened (tsvmm names a
 * triple fault itself).
 */
export const QEMU_GUEST_RESET = 'QEMU exited without the guest powering off or rebooting: with -no-reboot that is a guest reset, most likely a triple fault';

/** Lines kept from the console and stderr of a boot (a stall report adds one per thread). */
export const NOTES_KEPT = 20;

const ESCAPES = /\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]|\x1b[=>cM78]/g;

/** The guest's gzip + base64 lines back to text; undefined when they do not decode (the job then reports it). */
export function unpack(lines: readonly string[]): string | undefined {
  try {
    return gunzipSync(Buffer.from(lines.join(''), 'base64')).toString('utf8');
  } catch {
    return undefined;
  }
}

/** Split a stream's chunks into lines (without a trailing \r). */
function splitter(handle: (l: string) => void): { push(chunk: Buffer): void; end(): void } {
  let partial = '';
  return {
    push(chunk: Buffer): void {
      const parts = (partial + chunk.toString('utf8')).split('\n');
      partial = parts.pop() ?? '';
      for (const p of parts) handle(p.replace(/\r$/, ''));
    },
    end(): void {
      if (partial !== '') handle(partial.replace(/\r$/, ''));
      partial = '';
    },
  };
}

export function runConsole(o: ConsoleRunOptions): Promise<ConsoleRunEnd> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const since = (): number => performance.now() - t0;
    const guestInfo: Record<string, string> = {};
    const notes: string[] = [];
    const note = (l: string): void => {
      notes.push(l);
      if (notes.length > 40) notes.shift();
    };
    const m = o.marks;
    let infoAtMs: number | undefined;
    let done = false;
    let guestError: string | undefined;
    let collecting: { target: Sections; kind: 'json' | 'err' } | undefined;
    /** The first stall line the guest printed, once it did. */
    let guestStall: string | undefined;
    /** The guest's kernel said it powers off, halts or reboots (GUEST_REBOOT_LINE). */
    let guestEnded = false;
    let guestPanicked = false;
    let stallTimer: NodeJS.Timeout | undefined;
    let silenceTimer: NodeJS.Timeout | undefined;
    let spawnError: string | undefined;
    /** The guest's script printed a protocol line: the silence limit counts from now. */
    const progressed = (): void => {
      const limitMs = o.silenceLimitMs;
      if (limitMs === undefined || infoAtMs === undefined || done) return;
      clearTimeout(silenceTimer);
      silenceTimer = setTimeout(() => {
        if (!done) stop(`the guest's script printed nothing for ${(limitMs / 1000).toFixed(limitMs < 10_000 ? 1 : 0)} s`);
      }, limitMs);
    };

    // TSVMM_STOP_REPORT: tsvmm stopped by the timeout's SIGTERM prints its devices' state (QEMU ignores it).
    const child = spawn(o.invocation.command, [...o.invocation.args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...o.invocation.env, TSVMM_STOP_REPORT: '1' } });
    const pid = child.pid;
    const mark = (): Mark => ({ at: since(), cpu: pid === undefined ? undefined : cpuSnapshot(pid), kvm: pid === undefined ? undefined : kvmStatsSnapshot(pid) });

    const onLine = (raw: string): void => {
      // The protocol's line, wherever it starts: firmware or the kernel may have left text without a newline before it.
      const clean = raw.replace(ESCAPES, '');
      if (ECHO_CONSOLE) process.stderr.write(`console ${o.vmm} ${(since() / 1000).toFixed(3)} ${clean.slice(0, 200)}\n`);
      const at = clean.indexOf(o.prefix);
      const line = at > 0 ? clean.slice(at) : clean;
      if (line.startsWith(o.prefix)) progressed();
      if (collecting !== undefined) {
        const endMark = collecting.kind === 'json' ? m.jsonEnd : m.errEnd;
        if (line.startsWith(endMark)) {
          if (collecting.kind === 'json') collecting.target.jsonText = unpack(collecting.target.json!);
          else collecting.target.errText = collecting.target.err!.join('\n');
          collecting = undefined;
        } else {
          (collecting.kind === 'json' ? collecting.target.json : collecting.target.err)!.push(line);
        }
        return;
      }
      for (const [kind, begin] of [['json', m.jsonBegin], ['err', m.errBegin]] as const) {
        if (!line.startsWith(begin)) continue;
        const target = o.sections(line.slice(begin.length).split(' ')[0] ?? '');
        if (target !== undefined) {
          target[kind] = [];
          collecting = { target, kind };
        }
        return;
      }
      if (line.startsWith(m.info)) {
        infoAtMs = since();
        // key=value … (values have no spaces: the script replaced them).
        for (const kv of line.slice(m.info.length).split(' ')) {
          const i = kv.indexOf('=');
          if (i > 0) guestInfo[kv.slice(0, i)] = kv.slice(i + 1);
        }
        o.log(`  ${o.vmm}: guest up at ${(infoAtMs / 1000).toFixed(1)} s (${o.describeInfo(guestInfo)})`);
        progressed();
      } else if (line === m.done) {
        done = true;
        clearTimeout(silenceTimer);
      } else if (line.startsWith(m.error)) {
        guestError = line.slice(m.error.length);
        note(line);
      } else if (line.startsWith(o.prefix)) {
        o.onLine(line, mark);
      } else if (GUEST_REBOOT_LINE.test(line)) {
        guestEnded = true;
      } else if (GUEST_PANIC_LINE.test(line)) {
        guestPanicked = true;
        note(line);
      } else if (guestStall === undefined && GUEST_STALL_LINE.test(line)) {
        guestStall = line.trim();
        note(line);
        const graceMs = o.stallGraceMs ?? STALL_GRACE_MS;
        o.log(`  ${o.vmm}: the guest kernel reports a stalled CPU; stopping it in ${graceMs / 1000} s unless it finishes`);
        stallTimer = setTimeout(() => {
          if (!done) stop(`the guest kernel reported a stalled CPU and did not finish within ${graceMs / 1000} s`);
        }, graceMs);
      } else if (o.keepLine(line)) {
        note(line);
      }
    };

    const out = splitter(onLine);
    const err = splitter((l) => {
      if (l.trim() !== '') note(l);
    });
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', (e) => {
      spawnError = e.message;
    });
    let killTimer: NodeJS.Timeout | undefined;
    /** Why the harness stopped the VMM, once it did. */
    let stoppedBecause: string | undefined;
    const stop = (why: string): void => {
      if (stoppedBecause !== undefined) return;
      stoppedBecause = why;
      // First what the process was doing (its threads and KVM's counters), then SIGTERM so it can
      // say how it stopped, and SIGKILL if it does not.
      void (pid === undefined ? Promise.resolve([]) : describeStall(pid)).then((lines) => {
        for (const l of lines) note(l);
        o.log(`  ${o.vmm}: ${why}; stopping it (what it was doing goes into the boot's notes)`);
        child.kill('SIGTERM');
        killTimer = setTimeout(() => child.kill('SIGKILL'), TERM_GRACE_MS);
      });
    };
    const timer = setTimeout(() => {
      stop(`timed out after ${(o.timeoutMs / 1000).toFixed(0)} s`);
    }, o.timeoutMs);
    const upLimitMs = o.upLimitMs;
    const upTimer =
      upLimitMs === undefined
        ? undefined
        : setTimeout(() => {
            if (infoAtMs === undefined) stop(`the guest did not come up within ${(upLimitMs / 1000).toFixed(upLimitMs < 10_000 ? 1 : 0)} s`);
          }, upLimitMs);
    let exitMs: number | undefined;
    child.on('exit', () => {
      exitMs = since();
    });
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      clearTimeout(upTimer);
      clearTimeout(killTimer);
      clearTimeout(stallTimer);
      clearTimeout(silenceTimer);
      out.end();
      err.end();
      const problems: string[] = [];
      if (spawnError !== undefined) problems.push(`spawn failed: ${spawnError}`);
      if (stoppedBecause !== undefined) problems.push(stoppedBecause);
      else if (guestStall !== undefined) problems.push(`the guest kernel reported a stalled CPU (${guestStall})`);
      if (guestError !== undefined) problems.push(`guest: ${guestError}`);
      if (!done) problems.push('the guest script did not finish');
      if (status !== 0) problems.push(`exit status ${status ?? signal}`);
      else if (o.vmm === 'qemu' && !guestEnded && !guestPanicked && stoppedBecause === undefined && spawnError === undefined) problems.push(QEMU_GUEST_RESET);
      resolve({
        sample: {
          vmm: o.vmm,
          round: o.round,
          exitStatus: status,
          ...(signal !== null ? { signal } : {}),
          wallMs: exitMs ?? since(),
          ...(infoAtMs !== undefined ? { infoAtMs } : {}),
          ...(guestStall !== undefined ? { guestStall } : {}),
          guestInfo,
          argv: [o.invocation.command, ...o.invocation.args],
          ...(o.cpuModel !== undefined ? { cpuModel: o.cpuModel } : {}),
          notes: notes.slice(-NOTES_KEPT),
        },
        problems,
      });
    });
  });
}
