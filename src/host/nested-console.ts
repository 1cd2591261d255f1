/**
 * Reads the nested host's serial console and splits it into three parts: the boot log (SeaBIOS,
 * kernel, init), the command's output (between the run's begin and exit markers, streamed live
 * as it arrives) and whatever follows the exit marker (power-down messages). Markers carry the
 * run's random nonce, so command output can never be taken for one.
 */
import { StringDecoder } from 'node:string_decoder';
import { NESTED_HEARTBEAT_MARKER } from './nested-heartbeat.js';
import { MARKER_PREFIX } from './nested-init.js';

export type ConsolePhase = 'boot' | 'command' | 'done' | 'setup-failed';

/** A panic line, once its end has arrived (a chunk may end mid-line: the reason would be cut short). */
const PANIC = /Kernel panic - not syncing:[^\n]*\n/;
/** At the console's end, a panic line without its newline too. */
const PANIC_AT_END = /Kernel panic - not syncing:[^\n]*$/;
/** The kernel's soft-lockup watchdog report (kernel/watchdog.c); printed at KERN_EMERG, so `loglevel=1` lets it through. */
const SOFT_LOCKUP = /BUG: soft lockup - CPU#(\d+) stuck for (\d+)s![^\n]*/g;

/** Terminal control sequences SeaBIOS and the kernel emit (reset, clear screen, wrap mode). */
// eslint-disable-next-line no-control-regex
const ESCAPES = /\x1b(\[[0-9;?]*[A-Za-z]|[A-Za-z])/g;

/** A console log made readable: escape sequences removed, CRLF as LF. */
export function cleanConsoleText(text: string): string {
  return text.replace(ESCAPES, '').replace(/\r+\n/g, '\n');
}

export class NestedConsole {
  private readonly decoder = new StringDecoder('utf8');
  private readonly token: string;
  /** A complete heartbeat line (CR before LF until init turns onlcr off). */
  private readonly heartbeatLine: RegExp;
  private beats = 0;
  private phase_: ConsolePhase = 'boot';
  private boot = '';
  /** Command output not yet passed on: a tail that might be the start of a marker line (exit, heartbeat). */
  private held = '';
  private out = '';
  private after = '';
  private status: number | undefined;
  private failure: string | undefined;
  private panic: string | undefined;
  private lockup: { line: string; seconds: number } | undefined;
  /** Where the lockup scan of the command output resumes (reports can arrive split across chunks). */
  private lockupScanFrom = 0;

  constructor(
    nonce: string,
    private readonly onOutput: (text: string) => void = () => {},
    /** Called for each heartbeat line as it is taken out (nested-heartbeat.ts). */
    private readonly onHeartbeat: () => void = () => {},
  ) {
    this.token = `${MARKER_PREFIX}${nonce}:`;
    this.heartbeatLine = new RegExp(`${escapeRegExp(this.token)}${NESTED_HEARTBEAT_MARKER}\\r*\\n`, 'g');
  }

  /** Heartbeat lines seen so far (nested-heartbeat.ts); they never reach the output or the logs. */
  get heartbeats(): number {
    return this.beats;
  }

  get phase(): ConsolePhase {
    return this.phase_;
  }
  /** The command's output so far (complete once the phase is `done`). */
  get output(): string {
    return this.out;
  }
  /** Everything before the command started, cleaned for reading. */
  get bootLog(): string {
    return cleanConsoleText(this.boot);
  }
  /** What the console printed after the exit marker (power-down noise). */
  get afterLog(): string {
    return cleanConsoleText(this.after);
  }
  get exitStatus(): number | undefined {
    return this.status;
  }
  /** The nested host's own setup failure (module, mount), as init reported it. */
  get setupFailure(): string | undefined {
    return this.failure;
  }
  /** The first "Kernel panic - not syncing" line seen before the command finished. */
  get kernelPanic(): string | undefined {
    return this.panic;
  }

  /**
   * The worst soft-lockup report seen so far (the kernel found a CPU that had not scheduled for
   * `seconds`). Under emulation a short one can be load; a long one is a nested host that stopped
   * making progress.
   */
  get softLockup(): { readonly line: string; readonly seconds: number } | undefined {
    return this.lockup;
  }

  push(chunk: Buffer): void {
    this.feed(this.decoder.write(chunk));
  }

  /** The console closed: release any held-back output. */
  end(): void {
    this.feed(this.decoder.end());
    this.notePanic(this.phase_ === 'boot' ? this.boot : this.out.slice(-4096) + this.held, true);
    if (this.phase_ === 'command' && this.held !== '') {
      this.emit(this.held);
      this.held = '';
    }
  }

  /** The last `lines` lines of everything seen, for error messages. */
  tail(lines: number): string {
    const all = this.phase_ === 'boot' || this.phase_ === 'setup-failed' ? this.bootLog : `${this.bootLog}${this.out}${this.held}${this.afterLog}`;
    return all.trimEnd().split('\n').slice(-lines).join('\n');
  }

  private feed(text: string): void {
    if (text === '') return;
    switch (this.phase_) {
      case 'boot':
        return this.feedBoot(text);
      case 'command':
        return this.feedCommand(text);
      default:
        this.after = this.takeHeartbeats(this.after + text);
    }
  }

  private feedBoot(text: string): void {
    this.boot = this.takeHeartbeats(this.boot + text);
    this.notePanic(this.boot);
    this.noteLockups(this.boot);
    const begin = this.boot.indexOf(`${this.token}begin`);
    const fail = this.boot.indexOf(`${this.token}fail=`);
    if (fail >= 0 && (begin < 0 || fail < begin)) {
      const eol = this.boot.indexOf('\n', fail);
      if (eol < 0) return;
      this.failure = this.boot.slice(fail + this.token.length + 'fail='.length, eol).replace(/\r$/, '');
      this.after = this.boot.slice(eol + 1);
      this.boot = this.boot.slice(0, fail);
      this.phase_ = 'setup-failed';
      return;
    }
    if (begin < 0) return;
    const eol = this.boot.indexOf('\n', begin);
    if (eol < 0) return;
    const rest = this.boot.slice(eol + 1);
    this.boot = this.boot.slice(0, begin);
    this.phase_ = 'command';
    this.lockupScanFrom = 0;
    this.feedCommand(rest);
  }

  private feedCommand(text: string): void {
    const pending = this.takeHeartbeats(this.held + text);
    this.held = '';
    const at = pending.indexOf(`${this.token}exit=`);
    if (at >= 0) {
      const m = /^(\d+)\r?\n/.exec(pending.slice(at + this.token.length + 'exit='.length));
      if (m === null) {
        // The marker is still arriving.
        this.held = pending;
        return;
      }
      this.emit(pending.slice(0, at));
      this.status = Number(m[1]);
      this.phase_ = 'done';
      this.after = pending.slice(at + this.token.length + 'exit='.length + m[0].length);
      return;
    }
    // Hold back what could still grow into a marker line (exit or heartbeat): a marker whose line
    // has not ended, or the longest tail that could be the start of one.
    const marker = this.token;
    const last = pending.lastIndexOf(marker);
    let keep = 0;
    if (last >= 0 && pending.indexOf('\n', last) < 0) {
      keep = pending.length - last;
    } else {
      for (let n = Math.min(marker.length, pending.length); n > 0; n--) {
        if (marker.startsWith(pending.slice(pending.length - n))) {
          keep = n;
          break;
        }
      }
    }
    this.emit(pending.slice(0, pending.length - keep));
    this.held = pending.slice(pending.length - keep);
    this.notePanic(this.out.slice(-4096) + this.held);
    this.noteLockups(this.out);
  }

  /** `text` without its complete heartbeat lines, which are counted. */
  private takeHeartbeats(text: string): string {
    if (!text.includes(this.token)) return text;
    return text.replace(this.heartbeatLine, () => {
      this.beats++;
      this.onHeartbeat();
      return '';
    });
  }

  private emit(text: string): void {
    if (text === '') return;
    this.out += text;
    this.onOutput(text);
  }

  /** Scans complete lines of `text` not scanned before (the buffer only grows within a phase). */
  private noteLockups(text: string): void {
    const end = text.lastIndexOf('\n') + 1;
    if (end <= this.lockupScanFrom) return;
    for (const m of text.slice(this.lockupScanFrom, end).matchAll(SOFT_LOCKUP)) {
      const seconds = Number(m[2]);
      if (this.lockup === undefined || seconds > this.lockup.seconds) this.lockup = { line: m[0].replace(/\r$/, ''), seconds };
    }
    this.lockupScanFrom = end;
  }

  private notePanic(text: string, atEnd = false): void {
    if (this.panic !== undefined) return;
    const m = PANIC.exec(text) ?? (atEnd ? PANIC_AT_END.exec(text) : null);
    if (m !== null) this.panic = m[0].replace(/\r?\n?$/, '');
  }
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
