/**
 * A tiny validating reader for parsed JSON: each resource parser asks an ObjectReader for its
 * fields by name and type, and every problem becomes a ConfigError naming the exact field path
 * (`drives[1].drive_id`) in one line.
 *
 * Semantics shared by every resource, chosen to match Firecracker (serde) where it matters:
 * - unknown fields are errors (Firecracker's resources use `deny_unknown_fields`), with a
 *   "did you mean" suggestion;
 * - `null` means "absent" for an optional field (serde's `Option`), so configs written by
 *   Firecracker itself (`"initrd_path": null`) load; for a required field it is an error;
 * - integers must be safe JavaScript integers (JSON numbers above 2^53 lose precision).
 */
import { TsvmmError } from '../../util/errors.js';

/**
 * Escapes control characters (and the Unicode line separators) so that a message quoting user
 * input, such as a key containing "\n", stays on one line.
 */
export function singleLine(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f\u2028\u2029]/g, (c) => JSON.stringify(c).slice(1, -1));
}

/** A problem with one field of a config (file or API body); `path` names the field. */
export class ConfigError extends TsvmmError {
  constructor(
    readonly path: string,
    readonly problem: string,
  ) {
    super(singleLine(path === '' ? problem : `${path}: ${problem}`));
  }
}

/** The path of `key` inside the object at `path` ("" is the document root). */
export function fieldPath(path: string, key: string): string {
  return path === '' ? key : `${path}.${key}`;
}

/** The path of element `index` of the array at `path`. */
export function indexPath(path: string, index: number): string {
  return `${path}[${index}]`;
}

/** A short, single-line rendering of a JSON value for "got …" in messages. */
export function describeValue(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (Array.isArray(value)) return value.length === 0 ? 'an empty array' : 'an array';
  if (typeof value === 'object' && value !== null) return 'an object';
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

/** True for a JSON object (not an array, not null). */
export function isJsonObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Optimal-string-alignment distance: edits, counting a swap of two neighbours as one. */
function editDistance(a: string, b: string): number {
  const d: number[][] = [];
  for (let i = 0; i <= a.length; i++) d.push([i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 0; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) best = Math.min(best, d[i - 2]![j - 2]! + 1);
      d[i]![j] = best;
    }
  }
  return d[a.length]![b.length]!;
}

/** The candidate closest to `word`, if close enough to be a plausible typo. */
export function closestMatch(word: string, candidates: readonly string[]): string | undefined {
  // "boot_source" for "boot-source" and "VCPU_COUNT" for "vcpu_count" are the commonest slips.
  const normalize = (s: string): string => s.toLowerCase().replace(/[-_ ]/g, '');
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of candidates) {
    const distance = normalize(word) === normalize(candidate) ? 0 : editDistance(word.toLowerCase(), candidate.toLowerCase());
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  const limit = Math.max(2, Math.floor(word.length / 3));
  if (bestDistance <= limit) return best;
  // "burst" for "one_time_burst": the word is one whole part of exactly one candidate.
  const containing = candidates.filter((c) => c.toLowerCase().split(/[-_]/).includes(word.toLowerCase()));
  return word.length >= 4 && containing.length === 1 ? containing[0] : undefined;
}

/** The "(…)" hint after "unknown field 'x'". */
function unknownFieldHint(key: string, allowed: readonly string[], renamed: Readonly<Record<string, string>>): string {
  const note = renamed[key];
  if (note !== undefined) return ` (${note})`;
  const suggestion = closestMatch(key, allowed);
  if (suggestion !== undefined) return ` (did you mean '${suggestion}'?)`;
  return allowed.length === 0 ? ' (this object takes no fields)' : ` (known fields: ${allowed.join(', ')})`;
}

export interface IntegerRange {
  min: number;
  max: number;
}

/** Reads one integer in `range` (inclusive); the message states the range, e.g. "an integer from 1 to 32". */
export function readInteger(value: unknown, path: string, range: IntegerRange): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < range.min || value > range.max) {
    throw new ConfigError(path, `must be an integer from ${range.min} to ${range.max}, got ${describeValue(value)}`);
  }
  return value;
}

export function readString(value: unknown, path: string, options: { nonEmpty?: boolean } = {}): string {
  if (typeof value !== 'string') throw new ConfigError(path, `must be a string, got ${describeValue(value)}`);
  if (options.nonEmpty === true && value.length === 0) throw new ConfigError(path, 'must not be empty');
  return value;
}

export function readBoolean(value: unknown, path: string): boolean {
  if (typeof value !== 'boolean') throw new ConfigError(path, `must be true or false, got ${describeValue(value)}`);
  return value;
}

/** Reads one of a fixed set of strings. Matching is exact unless `caseInsensitive` (then canonicalized). */
export function readEnum<T extends string>(
  value: unknown,
  path: string,
  allowed: readonly T[],
  options: { caseInsensitive?: boolean; aliases?: Readonly<Record<string, T>> } = {},
): T {
  const list = allowed.map((a) => `"${a}"`).join(', ');
  if (typeof value === 'string') {
    const exact = allowed.find((a) => a === value);
    if (exact !== undefined) return exact;
    const folded = allowed.find((a) => a.toLowerCase() === value.toLowerCase());
    if (folded !== undefined && options.caseInsensitive === true) return folded;
    const alias = options.aliases?.[options.caseInsensitive === true ? value.toLowerCase() : value];
    if (alias !== undefined) return alias;
    const suggestion = folded ?? closestMatch(value, allowed);
    if (suggestion !== undefined) {
      throw new ConfigError(path, `must be one of ${list}, got ${describeValue(value)} (did you mean "${suggestion}"?)`);
    }
  }
  throw new ConfigError(path, `must be one of ${list}, got ${describeValue(value)}`);
}

/** Reads a JSON array, parsing each element with `parseItem(item, "path[i]")`. */
export function readArray<T>(value: unknown, path: string, parseItem: (item: unknown, itemPath: string) => T): T[] {
  if (!Array.isArray(value)) throw new ConfigError(path, `must be an array, got ${describeValue(value)}`);
  return value.map((item, i) => parseItem(item, indexPath(path, i)));
}

/**
 * Field-by-field access to one JSON object. Create it with the complete list of the object's
 * fields; unknown fields are reported at once, before any field is read, so a misspelt optional
 * field is never silently replaced by its default.
 */
export class ObjectReader {
  private constructor(
    private readonly object: Record<string, unknown>,
    readonly path: string,
  ) {}

  /**
   * `renamed` maps field names that older Firecracker versions (or common mistakes) used to a
   * note that replaces the "did you mean" hint, e.g. `{ ht_enabled: "Firecracker renamed it to 'smt'" }`.
   */
  static open(
    value: unknown,
    path: string,
    fields: readonly string[],
    renamed: Readonly<Record<string, string>> = {},
  ): ObjectReader {
    if (!isJsonObject(value)) {
      throw new ConfigError(path, `${path === '' ? 'expected a JSON object' : 'must be an object'}, got ${describeValue(value)}`);
    }
    for (const key of Object.keys(value)) {
      if (!fields.includes(key)) {
        throw new ConfigError(path, `unknown field '${key}'${unknownFieldHint(key, fields, renamed)}`);
      }
    }
    return new ObjectReader(value, path);
  }

  /** The path of one field, for messages about it. */
  at(key: string): string {
    return fieldPath(this.path, key);
  }

  /** True when the field is present and not null. */
  has(key: string): boolean {
    const value = this.object[key];
    return value !== undefined && value !== null;
  }

  /** The raw value of a present field, or throws "missing required field". */
  required(key: string): unknown {
    if (!Object.prototype.hasOwnProperty.call(this.object, key)) {
      throw new ConfigError(this.path, `missing required field '${key}'`);
    }
    return this.object[key];
  }

  /** The raw value, or undefined when absent or null. */
  optional(key: string): unknown {
    return this.has(key) ? this.object[key] : undefined;
  }

  requiredString(key: string, options: { nonEmpty?: boolean } = {}): string {
    return readString(this.required(key), this.at(key), options);
  }

  optionalString(key: string, options: { nonEmpty?: boolean } = {}): string | undefined {
    return this.has(key) ? readString(this.object[key], this.at(key), options) : undefined;
  }

  requiredBoolean(key: string): boolean {
    return readBoolean(this.required(key), this.at(key));
  }

  boolean(key: string, fallback: boolean): boolean {
    return this.has(key) ? readBoolean(this.object[key], this.at(key)) : fallback;
  }

  requiredInteger(key: string, range: IntegerRange): number {
    return readInteger(this.required(key), this.at(key), range);
  }

  integer(key: string, range: IntegerRange, fallback: number): number {
    return this.has(key) ? readInteger(this.object[key], this.at(key), range) : fallback;
  }

  optionalInteger(key: string, range: IntegerRange): number | undefined {
    return this.has(key) ? readInteger(this.object[key], this.at(key), range) : undefined;
  }

  enumOf<T extends string>(
    key: string,
    allowed: readonly T[],
    fallback: T,
    options: { caseInsensitive?: boolean; aliases?: Readonly<Record<string, T>> } = {},
  ): T {
    return this.has(key) ? readEnum(this.object[key], this.at(key), allowed, options) : fallback;
  }

  /** A nested value parsed by `parse(value, path)`, or undefined when absent or null. */
  nested<T>(key: string, parse: (value: unknown, path: string) => T): T | undefined {
    return this.has(key) ? parse(this.object[key], this.at(key)) : undefined;
  }

  /** A required nested value parsed by `parse(value, path)`. */
  requiredNested<T>(key: string, parse: (value: unknown, path: string) => T): T {
    return parse(this.required(key), this.at(key));
  }

  /** An array of parsed elements; absent or null gives `[]`. */
  array<T>(key: string, parseItem: (item: unknown, itemPath: string) => T): T[] {
    return this.has(key) ? readArray(this.object[key], this.at(key), parseItem) : [];
  }
}

/** Throws `path[i].field: duplicate 'x'` for the second occurrence of any id in `items`. */
export function requireUnique<T>(items: readonly T[], listPath: string, field: string, idOf: (item: T) => string | undefined): void {
  const seen = new Map<string, number>();
  items.forEach((item, i) => {
    const id = idOf(item);
    if (id === undefined) return;
    const first = seen.get(id);
    if (first !== undefined) {
      throw new ConfigError(
        fieldPath(indexPath(listPath, i), field),
        `duplicate '${id}' (already used by ${indexPath(listPath, first)})`,
      );
    }
    seen.set(id, i);
  });
}
