/**
 * A private, frozen copy of what one benchmark run measures: the compiled tsvmm (dist/src), the
 * benchmark itself (dist/bench), and the guest kernel and initrd.
 *
 * Why: a run takes many minutes, and the checkout and the shared cache are live: other work
 * recompiles dist/ and rebuilds the default guest (replacing the initramfs file) while a
 * benchmark is running. Every sample must boot the same tsvmm and the same guest. The copy is
 * in the cache folder, not /tmp, because the nested host sees this machine's root but has a
 * fresh /tmp of its own.
 */
import { cpSync, mkdirSync, rmSync, symlinkSync, copyFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { cacheDir } from '../../src/util/cache.js';

export interface Snapshot {
  readonly dir: string;
  /** dist/bench/boot/measure.js inside the copy. */
  readonly measure: string;
  readonly kernel: string;
  readonly initrd: string;
  remove(): void;
}

export function snapshot(repo: string, kernel: string, initrd: string): Snapshot {
  const dir = cacheDir('bench', `boot-${Date.now()}-${process.pid}`);
  mkdirSync(join(dir, 'guest'), { recursive: true });
  try {
    cpSync(join(repo, 'dist', 'src'), join(dir, 'dist', 'src'), { recursive: true });
    cpSync(join(repo, 'dist', 'bench'), join(dir, 'dist', 'bench'), { recursive: true });
    // "type": "module" (the .js files are ES modules) and the version the CLI prints.
    copyFileSync(join(repo, 'package.json'), join(dir, 'package.json'));
    // Dependencies are not rebuilt by anyone mid-run; link rather than copy 30 MB.
    symlinkSync(join(repo, 'node_modules'), join(dir, 'node_modules'));
    const k = join(dir, 'guest', basename(kernel));
    const i = join(dir, 'guest', basename(initrd));
    copyFileSync(kernel, k);
    copyFileSync(initrd, i);
    return { dir, measure: join(dir, 'dist', 'bench', 'boot', 'measure.js'), kernel: k, initrd: i, remove: () => rmSync(dir, { recursive: true, force: true }) };
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}
