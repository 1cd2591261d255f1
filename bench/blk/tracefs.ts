/**
 * The kernel's trace events for a window (Documentation/trace/ftrace.rst, events.rst): switch some
 * events on, let something run, take the text of the trace buffer, switch them off again. Only
 * root may trace; where tracefs is missing or not writable, start() returns undefined and callers
 * go without.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Where the kernel's trace events are: tracefs, or its automount inside debugfs (the nested host mounts debugfs). */
const TRACEFS_ROOTS = ['/sys/kernel/tracing', '/sys/kernel/debug/tracing'];

/** The tracefs root holding `event` ("group/name"), if any, among `roots`. */
export function tracefsRoot(event: string, roots: readonly string[] = TRACEFS_ROOTS): string | undefined {
  return roots.find((r) => existsSync(join(r, 'events', event, 'enable')));
}

/** An event as "group/name", e.g. "kvm/kvm_exit". */
export type TraceEvent = `${string}/${string}`;

export class TraceWindow {
  private constructor(
    private readonly root: string,
    private readonly events: readonly TraceEvent[],
    private readonly previousClock: string | undefined,
  ) {}

  /**
   * Empty the buffer and switch `events` on (those this kernel has; at least the first must be
   * there). `clock` picks trace_clock: "mono" makes timestamps comparable across CPUs (the default
   * "local" clock is per CPU). undefined when tracing is unavailable. `roots`: where to look for
   * tracefs (tests point it at a folder of their own).
   */
  static start(events: readonly TraceEvent[], clock?: string, roots: readonly string[] = TRACEFS_ROOTS): TraceWindow | undefined {
    const root = events[0] === undefined ? undefined : tracefsRoot(events[0], roots);
    if (root === undefined) return undefined;
    const present = events.filter((e) => existsSync(join(root, 'events', e, 'enable')));
    let previousClock: string | undefined;
    try {
      if (clock !== undefined) {
        // The file lists every clock with the current one in brackets: "[local] global counter ...".
        previousClock = /\[(\S+)\]/.exec(readFileSync(join(root, 'trace_clock'), 'utf8'))?.[1];
        writeFileSync(join(root, 'trace_clock'), clock);
      }
      writeFileSync(join(root, 'trace'), ''); // empties the buffer
      const window = new TraceWindow(root, present, previousClock);
      window.enable(true);
      return window;
    } catch {
      // Not allowed to trace after all: leave the clock as it was.
      try {
        if (previousClock !== undefined) writeFileSync(join(root, 'trace_clock'), previousClock);
      } catch {
        // Nothing was changed then.
      }
      return undefined;
    }
  }

  /** Switch the events off and return the buffer's text (emptied afterwards). */
  stop(): string {
    this.enable(false);
    const text = readFileSync(join(this.root, 'trace'), 'utf8');
    writeFileSync(join(this.root, 'trace'), '');
    if (this.previousClock !== undefined) writeFileSync(join(this.root, 'trace_clock'), this.previousClock);
    return text;
  }

  private enable(on: boolean): void {
    for (const e of this.events) writeFileSync(join(this.root, 'events', e, 'enable'), on ? '1' : '0');
  }
}

/** One line of the `trace` file: "<comm>-<tid> [cpu] flags timestamp: event: details". */
export interface TraceLine {
  readonly tid: number;
  /** Seconds, as the trace clock counts them. */
  readonly time: number;
  readonly event: string;
  readonly details: string;
}

const TRACE_LINE = /^\s*.+?-(\d+)\s+\[\d+\]\s+(?:\S+\s+)?(\d+\.\d+):\s+(\w+):\s+(.*)$/;

/** Parse one trace line; undefined for comments and anything else. */
export function parseTraceLine(line: string): TraceLine | undefined {
  const m = TRACE_LINE.exec(line);
  if (m === null) return undefined;
  return { tid: Number(m[1]), time: Number(m[2]), event: m[3]!, details: m[4]! };
}
