/**
 * Temporary folders that name the process owning them, so that a later run can remove the ones
 * whose owner died without cleaning up. runInNestedHost copies the initramfs (tens of MB) into a
 * folder under /tmp and removes it in a `finally`; a runner killed with SIGKILL (a CI timeout,
 * `timeout -s KILL`, the OOM killer) never gets there, and such folders piled up on the
 * development machine across sessions.
 *
 * The owner is recorded as its PID and its start time (field 22 of /proc/PID/stat, in clock ticks
 * since boot), so a PID reused by another process after a reboot or a wrap-around does not keep a
 * dead owner's folder alive.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { statField } from '../util/proc-stat.js';

/** The file inside an owned folder naming its owner: "PID STARTTIME". */
export const OWNER_FILE = '.tsvmm-owner';
/**
 * A folder without an owner file is left alone this long: it may be one being created right now,
 * or one of a version of tsvmm that wrote no owner file and is still running.
 */
export const UNOWNED_GRACE_MS = 6 * 3600 * 1000;

/** A process's start time in clock ticks since boot (proc(5), /proc/PID/stat field 22), or undefined when it does not exist. */
export function processStartTime(pid: number): string | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch {
    return undefined;
  }
  return statField(stat, 22);
}

/** mkdtemp under `base` (default: the OS's temporary folder), with this process recorded as its owner. */
export function makeOwnedTempDir(prefix: string, base = tmpdir()): string {
  const dir = mkdtempSync(join(base, prefix));
  writeFileSync(join(dir, OWNER_FILE), `${process.pid} ${processStartTime(process.pid) ?? '?'}\n`);
  return dir;
}

/**
 * Remove the folders under `base` whose names start with `prefix` and whose owner is gone (no
 * such process, or a different process under its PID), and those without an owner file older
 * than UNOWNED_GRACE_MS. Returns the paths removed. Never throws: a folder that cannot be read or
 * removed is left for the next sweep.
 */
export function removeStaleTempDirs(prefix: string, base = tmpdir(), now = Date.now()): string[] {
  let names: string[];
  try {
    names = readdirSync(base).filter((name) => name.startsWith(prefix));
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    const dir = join(base, name);
    try {
      if (!statSync(dir).isDirectory() || !isStale(dir, now)) continue;
      rmSync(dir, { recursive: true, force: true });
      removed.push(dir);
    } catch {
      // Gone meanwhile, or not ours to remove: the next sweep looks again.
    }
  }
  return removed;
}

function isStale(dir: string, now: number): boolean {
  let owner: string;
  try {
    owner = readFileSync(join(dir, OWNER_FILE), 'utf8');
  } catch {
    return now - statSync(dir).mtimeMs > UNOWNED_GRACE_MS;
  }
  const [pid, startTime] = owner.trim().split(' ');
  const n = Number(pid);
  if (!Number.isSafeInteger(n) || n <= 0) return true;
  const running = processStartTime(n);
  return running === undefined || (startTime !== '?' && running !== startTime);
}
