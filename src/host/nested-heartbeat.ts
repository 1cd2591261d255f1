/**
 * Tells a nested host that is still running from one that has wedged. The nested host's init
 * writes a line to its second serial port (ttyS1) every NESTED_HEARTBEAT_INTERVAL_S seconds, and
 * QEMU appends what that port receives to a file on this machine. The file growing is the sign of
 * life; a command's own output is not, since a user's command may rightly print nothing for
 * hours. When the emulated machine stops (seen: TCG vCPUs wedged with no panic and no lockup
 * report), the file stops growing and the watch gives up after its timeout instead of waiting
 * for the run's much longer overall limit.
 */
import { readFileSync, statSync } from 'node:fs';

/** How often the nested host's init writes its heartbeat line (seconds, a `sleep` argument). */
export const NESTED_HEARTBEAT_INTERVAL_S = 5;
/** The line the nested host's init writes each time. */
export const NESTED_HEARTBEAT_LINE = 'tsvmm-nested-alive';
/**
 * A machine that wrote no heartbeat for this long has wedged. Eighteen missed beats: a busy
 * emulated host under the heaviest guest tests still schedules a shell loop within seconds,
 * and the kernel's own soft-lockup limit (LOCKUP_GIVE_UP_S in nested.ts) is of the same order.
 */
export const DEFAULT_WEDGE_TIMEOUT_MS = 90_000;
/** How often the file's size is checked. */
const POLL_MS = 1_000;

export class HeartbeatWatch {
  private timer: NodeJS.Timeout | undefined;
  private lastSize = 0;
  private lastChange = 0;

  /**
   * @param file the file QEMU appends the heartbeat port's bytes to
   * @param timeoutMs how long the file may stay the same size before `onWedged` runs (once)
   */
  constructor(
    private readonly file: string,
    private readonly timeoutMs: number,
    private readonly onWedged: (silentMs: number) => void,
    private readonly pollMs = POLL_MS,
  ) {}

  /**
   * Start watching. The timeout counts from the first heartbeat seen: a machine whose heartbeat
   * never arrives (no second serial port) is not taken for a wedged one, only left unwatched.
   */
  start(): void {
    if (this.timer !== undefined) return;
    this.lastSize = this.size();
    this.lastChange = Date.now();
    this.timer = setInterval(() => this.check(), this.pollMs);
    // The watch alone must not keep the process alive.
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Heartbeat lines received so far. */
  beats(): number {
    let text: string;
    try {
      text = readFileSync(this.file, 'latin1');
    } catch {
      return 0;
    }
    let n = 0;
    for (let at = text.indexOf(NESTED_HEARTBEAT_LINE); at !== -1; at = text.indexOf(NESTED_HEARTBEAT_LINE, at + 1)) n++;
    return n;
  }

  private check(): void {
    const size = this.size();
    const now = Date.now();
    if (size === 0) {
      this.lastChange = now;
      return;
    }
    if (size !== this.lastSize) {
      this.lastSize = size;
      this.lastChange = now;
      return;
    }
    if (now - this.lastChange >= this.timeoutMs) {
      this.stop();
      this.onWedged(now - this.lastChange);
    }
  }

  private size(): number {
    try {
      return statSync(this.file).size;
    } catch {
      return 0;
    }
  }
}
