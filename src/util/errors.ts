/**
 * The base of every error tsvmm reports to a user. Its message is one line saying what went wrong
 * and what to do; the CLI prints it without a stack trace.
 */
export class TsvmmError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** Wrong command-line usage. */
export class UsageError extends TsvmmError {}

/** One line for a user: the message of any error, first line only. */
export function oneLine(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  return msg.split('\n')[0] ?? msg;
}
