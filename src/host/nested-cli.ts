#!/usr/bin/env node
/**
 * Developer entry: run a command inside the nested host, output live, exit with its status.
 *
 *   node dist/src/host/nested-cli.js [--timeout SECONDS] [--memory MIB] [--cpus N] [--cwd DIR] -- CMD [ARGS...]
 *
 * One word after `--` is a shell command line (`-- 'cd test && node x.js'`); several are an argv.
 * Exit status: the command's, 124 on timeout, 130 on Ctrl-C, 125 when the nested host itself failed.
 */
import { fileURLToPath } from 'node:url';
import { oneLine } from '../util/errors.js';
import { stderrProgress } from '../util/progress.js';
import { detectVirtualization } from './environment.js';
import { explainNestedHost, NestedHostAbortedError, runInNestedHost, type NestedRunOptions } from './nested.js';

const USAGE = 'usage: nested-cli [--timeout SECONDS] [--memory MIB] [--cpus N] [--cwd DIR] -- CMD [ARGS...]';

export async function main(argv: readonly string[]): Promise<number> {
  const sep = argv.indexOf('--');
  const flags = sep < 0 ? [] : argv.slice(0, sep);
  const command = sep < 0 ? [...argv] : argv.slice(sep + 1);
  if (command.length === 0 || (sep < 0 && command[0]?.startsWith('--'))) {
    process.stderr.write(`${USAGE}\n`);
    return 2;
  }
  const opts: { -readonly [K in keyof NestedRunOptions]: NestedRunOptions[K] } = {};
  for (let i = 0; i < flags.length; i += 2) {
    const name = flags[i];
    const value = flags[i + 1];
    if (value === undefined) {
      process.stderr.write(`nested-cli: ${name} needs a value\n${USAGE}\n`);
      return 2;
    }
    if (name === '--timeout') opts.timeoutMs = Number(value) * 1000;
    else if (name === '--memory') opts.memoryMiB = Number(value);
    else if (name === '--cpus') opts.cpus = Number(value);
    else if (name === '--cwd') opts.cwd = value;
    else {
      process.stderr.write(`nested-cli: unknown option ${name}\n${USAGE}\n`);
      return 2;
    }
  }
  stderrProgress(explainNestedHost(detectVirtualization()));
  const abort = new AbortController();
  const stop = (): void => abort.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    const r = await runInNestedHost(command.length === 1 ? command[0]! : command, {
      ...opts,
      signal: abort.signal,
      onOutput: (text) => process.stdout.write(text),
    });
    return r.status;
  } catch (e) {
    if (e instanceof NestedHostAbortedError) return 130;
    stderrProgress(`nested host failed: ${oneLine(e)}`);
    const rest = e instanceof Error ? e.message.split('\n').slice(1).join('\n') : '';
    if (rest !== '') process.stderr.write(`${rest}\n`);
    return 125;
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  process.exitCode = await main(process.argv.slice(2));
}
