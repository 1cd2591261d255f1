/**
 * The checks of a VmConfig that need the filesystem: the files it names exist, are files, and
 * can be opened as the VMM will open them. Kept apart from parsing so that parsing stays pure
 * (the REST API validates bodies long before InstanceStart, when files may not exist yet).
 */
import { constants, promises as fs } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { TsvmmError } from '../../util/errors.js';
import { fieldPath, indexPath, singleLine } from './schema.js';
import type { VmConfig } from './vm-config.js';

/** A file named by the configuration is missing or unusable; names the field and the file. */
export class ConfigFileError extends TsvmmError {
  constructor(
    readonly path: string,
    readonly file: string,
    readonly problem: string,
  ) {
    super(singleLine(`${path}: ${file} ${problem}`));
  }
}

type Need = 'read' | 'read-write';
/** What a field's file must be: an image (regular file or block device) or an existing directory to create something in. */
type FileCheck = { path: string; file: string; kind: 'image'; need: Need } | { path: string; file: string; kind: 'parent-dir' };

function filesOf(config: VmConfig): FileCheck[] {
  const checks: FileCheck[] = [];
  const image = (path: string, file: string, need: Need): void => {
    checks.push({ path, file, kind: 'image', need });
  };
  const parentDir = (path: string, file: string): void => {
    checks.push({ path, file, kind: 'parent-dir' });
  };
  image('boot-source.kernel_image_path', config.bootSource.kernel_image_path, 'read');
  if (config.bootSource.initrd_path !== undefined) image('boot-source.initrd_path', config.bootSource.initrd_path, 'read');
  config.drives.forEach((d, i) => {
    if (d.path_on_host !== undefined) {
      image(fieldPath(indexPath('drives', i), 'path_on_host'), d.path_on_host, d.is_read_only ? 'read' : 'read-write');
    }
  });
  config.pmem.forEach((p, i) => {
    image(fieldPath(indexPath('pmem', i), 'path_on_host'), p.path_on_host, p.read_only ? 'read' : 'read-write');
  });
  if (config.cpuConfig?.kind === 'path') image('cpu-config', config.cpuConfig.path, 'read');
  // Created by the VMM (the vsock socket) or opened for appending (log and metrics, which may be
  // named pipes): only the directory must already exist.
  if (config.vsock !== undefined) parentDir('vsock.uds_path', config.vsock.uds_path);
  if (config.logger?.log_path !== undefined) parentDir('logger.log_path', config.logger.log_path);
  if (config.metrics !== undefined) parentDir('metrics.metrics_path', config.metrics.metrics_path);
  return checks;
}

function errnoOf(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string' ? err.code : undefined;
}

async function checkImage(check: FileCheck & { kind: 'image' }, absolute: string): Promise<void> {
  const fail = (problem: string): ConfigFileError => new ConfigFileError(check.path, check.file, problem);
  let stat;
  try {
    stat = await fs.stat(absolute);
  } catch (err) {
    const code = errnoOf(err);
    if (code === 'ENOENT') throw fail('does not exist');
    if (code === 'ENOTDIR') throw fail('does not exist (a parent is not a directory)');
    if (code === 'EACCES') throw fail('cannot be reached: permission denied on a parent directory');
    throw fail(`cannot be examined (${code ?? String(err)})`);
  }
  if (stat.isDirectory()) throw fail('is a directory, expected a file');
  if (!stat.isFile() && !stat.isBlockDevice()) throw fail('is not a regular file or a block device');
  if (stat.isFile() && stat.size === 0) throw fail('is empty');
  try {
    await fs.access(absolute, check.need === 'read' ? constants.R_OK : constants.R_OK | constants.W_OK);
  } catch {
    throw fail(
      check.need === 'read'
        ? 'is not readable by this user'
        : 'is not writable by this user (set is_read_only / read_only to true to open it read-only)',
    );
  }
}

async function checkParentDir(check: FileCheck & { kind: 'parent-dir' }, absolute: string): Promise<void> {
  const dir = dirname(absolute);
  try {
    const stat = await fs.stat(dir);
    if (!stat.isDirectory()) throw new ConfigFileError(check.path, check.file, `cannot be created: ${dir} is not a directory`);
  } catch (err) {
    if (err instanceof ConfigFileError) throw err;
    throw new ConfigFileError(check.path, check.file, `cannot be created: directory ${dir} does not exist`);
  }
}

/**
 * Checks every file the configuration names and throws a ConfigFileError for the first problem,
 * e.g. `boot-source.kernel_image_path: /x/vmlinuz does not exist`. Relative paths are taken
 * relative to `baseDir`, the current directory by default, as Firecracker does.
 */
export async function checkConfigFiles(config: VmConfig, baseDir: string = process.cwd()): Promise<void> {
  for (const check of filesOf(config)) {
    const absolute = resolve(baseDir, check.file);
    if (check.kind === 'image') await checkImage(check, absolute);
    else await checkParentDir(check, absolute);
  }
}
