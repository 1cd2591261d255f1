/**
 * A strict JSON (RFC 8259) parser that reports where it failed as line and column.
 *
 * Why not JSON.parse: V8's messages vary between versions and some carry no position at all
 * ("Unexpected token 'x', ... is not valid JSON"), and JSON.parse silently keeps the last of two
 * duplicate keys, where Firecracker (serde) rejects a duplicate field. A config file is small, so a
 * hand-written recursive-descent parser costs nothing measurable.
 */
import { TsvmmError } from '../../util/errors.js';
import { singleLine } from './schema.js';

export type JsonValue = null | boolean | number | string | JsonValue[] | JsonObject;
export interface JsonObject {
  [key: string]: JsonValue;
}

/** Malformed JSON: where (1-based line and column) and what. */
export class JsonSyntaxError extends TsvmmError {
  constructor(
    readonly source: string,
    readonly line: number,
    readonly column: number,
    readonly problem: string,
  ) {
    super(singleLine(`malformed JSON in ${source} at line ${line} column ${column}: ${problem}`));
  }
}

const SIMPLE_ESCAPES: Readonly<Record<string, string>> = {
  '"': '"',
  '\\': '\\',
  '/': '/',
  b: '\b',
  f: '\f',
  n: '\n',
  r: '\r',
  t: '\t',
};

/** Nesting deeper than this is not a VM config; refusing it keeps the recursion bounded. */
const MAX_DEPTH = 64;

/**
 * Parses `text` as one JSON value. `source` names the text in errors ("vm.json", "request body").
 * A leading UTF-8 byte-order mark is ignored.
 */
export function parseJson(text: string, source: string): JsonValue {
  return new Parser(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text, source).parseDocument();
}

class Parser {
  private pos = 0;

  constructor(
    private readonly text: string,
    private readonly source: string,
  ) {}

  parseDocument(): JsonValue {
    this.skipWhitespace();
    if (this.pos >= this.text.length) throw this.fail('the input is empty, expected a JSON value');
    const value = this.parseValue(0);
    this.skipWhitespace();
    if (this.pos < this.text.length) throw this.fail(`unexpected ${this.describeHere()} after the end of the JSON value`);
    return value;
  }

  private parseValue(depth: number): JsonValue {
    if (depth > MAX_DEPTH) throw this.fail(`nesting deeper than ${MAX_DEPTH} levels`);
    const c = this.text[this.pos];
    switch (c) {
      case '{':
        return this.parseObject(depth);
      case '[':
        return this.parseArray(depth);
      case '"':
        return this.parseString();
      case 't':
        return this.parseLiteral('true', true);
      case 'f':
        return this.parseLiteral('false', false);
      case 'n':
        return this.parseLiteral('null', null);
      default:
        if (c === '-' || (c !== undefined && c >= '0' && c <= '9')) return this.parseNumber();
        throw this.fail(`expected a JSON value, found ${this.describeHere()}`);
    }
  }

  private parseObject(depth: number): JsonObject {
    this.pos++; // '{'
    // A null-prototype object: keys such as "__proto__" stay ordinary keys.
    const result = Object.create(null) as JsonObject;
    this.skipWhitespace();
    if (this.text[this.pos] === '}') {
      this.pos++;
      return result;
    }
    for (;;) {
      this.skipWhitespace();
      if (this.text[this.pos] !== '"') {
        throw this.fail(
          this.text[this.pos] === '}'
            ? 'trailing comma before }'
            : `expected a double-quoted property name, found ${this.describeHere()}`,
        );
      }
      const keyStart = this.pos;
      const key = this.parseString();
      if (Object.prototype.hasOwnProperty.call(result, key)) {
        this.pos = keyStart;
        throw this.fail(`duplicate key '${key}'`);
      }
      this.skipWhitespace();
      if (this.text[this.pos] !== ':') throw this.fail(`expected ':' after property name '${key}', found ${this.describeHere()}`);
      this.pos++;
      this.skipWhitespace();
      result[key] = this.parseValue(depth + 1);
      this.skipWhitespace();
      const next = this.text[this.pos];
      if (next === ',') {
        this.pos++;
        continue;
      }
      if (next === '}') {
        this.pos++;
        return result;
      }
      throw this.fail(`expected ',' or '}' after the value of '${key}', found ${this.describeHere()}`);
    }
  }

  private parseArray(depth: number): JsonValue[] {
    this.pos++; // '['
    const result: JsonValue[] = [];
    this.skipWhitespace();
    if (this.text[this.pos] === ']') {
      this.pos++;
      return result;
    }
    for (;;) {
      this.skipWhitespace();
      if (this.text[this.pos] === ']') throw this.fail('trailing comma before ]');
      result.push(this.parseValue(depth + 1));
      this.skipWhitespace();
      const next = this.text[this.pos];
      if (next === ',') {
        this.pos++;
        continue;
      }
      if (next === ']') {
        this.pos++;
        return result;
      }
      throw this.fail(`expected ',' or ']' after an array element, found ${this.describeHere()}`);
    }
  }

  private parseString(): string {
    const start = this.pos;
    this.pos++; // opening quote
    let out = '';
    let chunkStart = this.pos;
    for (;;) {
      if (this.pos >= this.text.length) {
        this.pos = start;
        throw this.fail('unterminated string');
      }
      const code = this.text.charCodeAt(this.pos);
      if (code === 0x22) {
        out += this.text.slice(chunkStart, this.pos);
        this.pos++;
        return out;
      }
      if (code < 0x20) throw this.fail('control character inside a string (use an escape such as \\n)');
      if (code !== 0x5c) {
        this.pos++;
        continue;
      }
      out += this.text.slice(chunkStart, this.pos);
      const esc = this.text[this.pos + 1];
      const decoded = esc === undefined ? undefined : SIMPLE_ESCAPES[esc];
      if (decoded !== undefined) {
        out += decoded;
        this.pos += 2;
      } else if (esc === 'u') {
        const hex = this.text.slice(this.pos + 2, this.pos + 6);
        if (!/^[0-9a-fA-F]{4}$/.test(hex)) throw this.fail('invalid \\u escape (expected 4 hex digits)');
        out += String.fromCharCode(parseInt(hex, 16));
        this.pos += 6;
      } else {
        throw this.fail(`invalid escape '\\${esc ?? ''}' in a string`);
      }
      chunkStart = this.pos;
    }
  }

  private parseNumber(): number {
    const rest = this.text.slice(this.pos);
    const match = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/.exec(rest);
    if (match === null) throw this.fail(`invalid number, found ${this.describeHere()}`);
    const after = rest[match[0].length];
    if (after !== undefined && /[0-9A-Za-z.+-]/.test(after)) {
      this.pos += match[0].length;
      throw this.fail(`invalid number (unexpected ${JSON.stringify(after)})`);
    }
    this.pos += match[0].length;
    return Number(match[0]);
  }

  private parseLiteral<T extends JsonValue>(word: string, value: T): T {
    if (this.text.startsWith(word, this.pos)) {
      const after = this.text[this.pos + word.length];
      if (after === undefined || !/[A-Za-z0-9_]/.test(after)) {
        this.pos += word.length;
        return value;
      }
    }
    throw this.fail(`expected a JSON value, found ${this.describeHere()}`);
  }

  private skipWhitespace(): void {
    for (;;) {
      const c = this.text[this.pos];
      if (c === ' ' || c === '\t' || c === '\n' || c === '\r') {
        this.pos++;
      } else if (c === '/' && (this.text[this.pos + 1] === '/' || this.text[this.pos + 1] === '*')) {
        // JSON has no comments; say so plainly rather than "unexpected '/'".
        throw this.fail('comments are not allowed in JSON');
      } else {
        return;
      }
    }
  }

  /** The token at the current position, for messages: a quoted character, a word, or "end of input". */
  private describeHere(): string {
    if (this.pos >= this.text.length) return 'end of input';
    const word = /^[A-Za-z_][A-Za-z0-9_]*/.exec(this.text.slice(this.pos, this.pos + 40));
    if (word !== null) return `'${word[0]}'`;
    const c = this.text[this.pos]!;
    // Printable characters in quotes as they appear; control characters escaped to stay on one line.
    return c.charCodeAt(0) < 0x20 || c.charCodeAt(0) === 0x7f ? JSON.stringify(c) : `'${c}'`;
  }

  private fail(problem: string): JsonSyntaxError {
    let line = 1;
    let lineStart = 0;
    const end = Math.min(this.pos, this.text.length);
    for (let i = 0; i < end; i++) {
      if (this.text.charCodeAt(i) === 0x0a) {
        line++;
        lineStart = i + 1;
      }
    }
    return new JsonSyntaxError(this.source, line, end - lineStart + 1, problem);
  }
}
