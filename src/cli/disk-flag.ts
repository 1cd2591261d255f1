/**
 * The `--disk PATH[,ro][,root][,id=NAME][,cache=unsafe|writeback]` flag: one block drive per
 * use, the command-line spelling of a config file's `drives` entry. The same text is how the CLI
 * hands drives to itself inside the nested host (diskFlag), so both directions live here.
 */
import { resolve } from 'node:path';
import { UsageError } from '../util/errors.js';
import type { DriveOptions } from '../vmm/drive-options.js';

/** `--disk` number `index` (0-based) → a drive; its id defaults to `disk<index>`. Paths are made absolute. */
export function parseDiskFlag(text: string, index: number): DriveOptions {
  const [path, ...opts] = text.split(',');
  if (path === undefined || path === '') throw new UsageError(`--disk: '${text}' has no image path; use --disk PATH[,ro][,id=NAME]`);
  let id = `disk${index}`;
  let readOnly = false;
  let root = false;
  let cacheType: 'Unsafe' | 'Writeback' = 'Unsafe';
  for (const opt of opts) {
    const [key, value] = opt.includes('=') ? [opt.slice(0, opt.indexOf('=')), opt.slice(opt.indexOf('=') + 1)] : [opt, undefined];
    if (key === 'ro' && value === undefined) readOnly = true;
    else if (key === 'root' && value === undefined) root = true;
    else if (key === 'id' && value !== undefined && value !== '') id = value;
    else if (key === 'cache' && (value === 'unsafe' || value === 'writeback')) cacheType = value === 'writeback' ? 'Writeback' : 'Unsafe';
    else throw new UsageError(`--disk: unknown option '${opt}' in '${text}'; known: ro, root, id=NAME, cache=unsafe|writeback`);
  }
  return { id, path: resolve(path), readOnly, root, cacheType };
}

/** A drive back as `--disk` text, for the CLI run inside the nested host. */
export function diskFlag(d: DriveOptions): string {
  const path = resolve(d.path);
  // A comma would split the text differently on the other side.
  if (path.includes(',') || d.id.includes(',')) {
    throw new UsageError(`drive '${d.id}': a drive id or image path with a comma cannot be passed to the nested host; rename it`);
  }
  let text = `${path},id=${d.id}`;
  if (d.readOnly) text += ',ro';
  if (d.root) text += ',root';
  if (d.cacheType === 'Writeback') text += ',cache=writeback';
  return text;
}
