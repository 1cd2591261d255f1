/** Reading a `--config-file` from disk: bytes, then JSON, then a validated VmConfig. */
import { promises as fs } from 'node:fs';
import { TsvmmError } from '../../util/errors.js';
import { singleLine } from './schema.js';
import { parseJson } from './json.js';
import { type VmConfig, parseVmConfig } from './vm-config.js';

/** The config file itself cannot be read. */
export class ConfigReadError extends TsvmmError {
  constructor(
    readonly file: string,
    readonly problem: string,
  ) {
    super(singleLine(`config file ${file} ${problem}`));
  }
}

/** Parses the text of a config document; `source` names it in messages about malformed JSON. */
export function parseConfigText(text: string, source: string): VmConfig {
  return parseVmConfig(parseJson(text, source));
}

/**
 * Reads and validates a config file. Throws ConfigReadError (cannot read), JsonSyntaxError
 * (malformed JSON, with line and column) or ConfigError (invalid content, naming the field).
 * The files the config names are not touched: see checkConfigFiles.
 */
export async function loadConfigFile(file: string): Promise<VmConfig> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    const code = typeof err === 'object' && err !== null && 'code' in err ? String(err.code) : undefined;
    if (code === 'ENOENT') throw new ConfigReadError(file, 'does not exist');
    if (code === 'EISDIR') throw new ConfigReadError(file, 'is a directory, expected a JSON file');
    if (code === 'EACCES') throw new ConfigReadError(file, 'is not readable by this user');
    throw new ConfigReadError(file, `cannot be read (${code ?? String(err)})`);
  }
  return parseConfigText(text, file);
}
