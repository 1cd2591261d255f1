/**
 * Tells a nested host that is still running from one that has wedged. The nested host's init
 * prints a heartbeat marker line (carrying the run's nonce, like its other markers) on the
 * console every NESTED_HEARTBEAT_INTERVAL_S seconds; NestedConsole takes those lines out of the
 * command's output and counts them, and this watch is told of each one. A command's own output
 * is no sign of life: a user's command may rightly print nothing for hours. When the emulated
 * machine stops (seen: TCG vCPUs wedged with no panic and no lockup report), the beats stop and
 * the watch gives up after its timeout instead of waiting for the run's much longer overall limit.
 *
 * The console carries the beats rather than a device of their own: a second serial port for
 * them (tried first) correlated with the nested host failing in bench/blk's 1 MiB writes, three
 * times out of three on 2026-11-27, against none without it; the console is there anyway.
 */

/** How often the nested host's init prints its heartbeat (seconds, a `sleep` argument). */
export const NESTED_HEARTBEAT_INTERVAL_S = 5;
/** What follows the run's marker token on a heartbeat line. */
export const NESTED_HEARTBEAT_MARKER = 'alive';
/**
 * A machine that printed no heartbeat for this long has wedged. Eighteen missed beats: the loop
 * runs at nice -20, so a busy emulated host still prints within seconds, and the kernel's own
 * soft-lockup limit (LOCKUP_GIVE_UP_S in nested.ts) is of the same order.
 */
export const DEFAULT_WEDGE_TIMEOUT_MS = 90_000;
/** How often the time since the last beat is checked. */
const POLL_MS = 1_000;
/** A gap this long is reported as it happens (and again when beats resume), before any verdict. */
export const LATE_HEARTBEAT_MS = 30_000;

/** What the watch reports besides the verdict: a late beat, and a late beat that came after all. */
export interface HeartbeatEvents {
  readonly late?: (silentMs: number) => void;
  readonly back?: (silentMs: number) => void;
}

export class HeartbeatWatch {
  private timer: NodeJS.Timeout | undefined;
  private count = 0;
  private lastBeat = 0;
  private lateReported = false;

  /** @param timeoutMs how long without a beat, once watching, before `onWedged` runs (once) */
  constructor(
    private readonly timeoutMs: number,
    private readonly onWedged: (silentMs: number) => void,
    private readonly pollMs = POLL_MS,
    private readonly events: HeartbeatEvents = {},
    private readonly lateMs = LATE_HEARTBEAT_MS,
  ) {}

  /** A heartbeat arrived. */
  beat(): void {
    const now = Date.now();
    if (this.lateReported) {
      this.lateReported = false;
      this.events.back?.(now - this.lastBeat);
    }
    this.count++;
    this.lastBeat = now;
  }

  /** Heartbeats so far. */
  get beats(): number {
    return this.count;
  }

  /**
   * Start watching; the timeout counts from now or the next beat. A machine whose heartbeat never
   * arrived (an init from before heartbeats) is not taken for a wedged one, only left unwatched.
   */
  start(): void {
    if (this.timer !== undefined) return;
    if (this.count > 0) this.lastBeat = Date.now();
    this.timer = setInterval(() => this.check(), this.pollMs);
    // The watch alone must not keep the process alive.
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }

  private check(): void {
    if (this.count === 0) return;
    const silentMs = Date.now() - this.lastBeat;
    if (silentMs >= this.lateMs && !this.lateReported && silentMs < this.timeoutMs) {
      this.lateReported = true;
      this.events.late?.(silentMs);
    }
    if (silentMs >= this.timeoutMs) {
      this.stop();
      this.onWedged(silentMs);
    }
  }
}
