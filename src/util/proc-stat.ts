/**
 * Reading a /proc/PID/stat (or /proc/PID/task/TID/stat) line (proc(5)). Field 2, the command
 * name, is in parentheses and may itself hold spaces and parentheses, so the other fields are
 * found by counting from its last closing parenthesis, never by splitting the whole line.
 */

/** Field `n` (numbered from 1 as in proc(5); n ≥ 3) of a stat line, or undefined past its end. */
export function statField(stat: string, n: number): string | undefined {
  return statFieldsFrom3(stat)[n - 3];
}

/** Fields 3 onwards of a stat line: index 0 is field 3 (state). */
export function statFieldsFrom3(stat: string): string[] {
  return stat.slice(stat.lastIndexOf(')') + 2).trim().split(/\s+/);
}
