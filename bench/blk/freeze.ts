/**
 * A private, frozen copy of what one run measures: the compiled tsvmm and benchmark, and the guest
 * kernel and bench initramfs. A run takes minutes while the checkout's dist/ and the shared cache
 * stay live (others recompile and rebuild meanwhile); every boot must use the same tsvmm and guest.
 * bench/boot/snapshot.ts does the same for dist/; this one starts from wherever the benchmark was
 * compiled to (`tsc --outDir` elsewhere works too). It lives in the cache folder, not /tmp, because
 * the nested host sees this machine's root but has a fresh /tmp of its own.
 */
import { copyFileSync, cpSync, existsSync, mkdirSync, rmSync, symlinkSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { cacheDir } from '../../src/util/cache.js';

/** The benchmark suites that freeze a copy: each has bench/<suite>/measure.js. */
export type BenchSuite = 'blk' | 'net' | 'api';

export interface Frozen {
  readonly dir: string;
  /** The suite's measure.js inside the copy. */
  readonly measure: string;
  readonly kernel: string;
  readonly initrd: string;
  remove(): void;
}

/** The folder holding package.json above the compiled tree (dist/ → the checkout). */
export function packageRoot(compiledRoot: string): string {
  for (let d = compiledRoot; ; d = dirname(d)) {
    if (existsSync(join(d, 'package.json'))) return d;
    if (dirname(d) === d) throw new Error(`no package.json above ${compiledRoot}`);
  }
}

/**
 * `compiledRoot` holds src/ and bench/ as tsc wrote them. The copy is named after `suite` (reports
 * print its paths in the VMM's command line).
 */
export function freeze(compiledRoot: string, kernel: string, initrd: string, suite: BenchSuite): Frozen {
  const pkg = packageRoot(compiledRoot);
  const dir = cacheDir('bench', `${suite}-${Date.now()}-${process.pid}`);
  mkdirSync(join(dir, 'guest'), { recursive: true });
  try {
    cpSync(join(compiledRoot, 'src'), join(dir, 'dist', 'src'), { recursive: true });
    cpSync(join(compiledRoot, 'bench'), join(dir, 'dist', 'bench'), { recursive: true });
    // "type": "module" and the version the CLI prints; dependencies are linked, not copied.
    copyFileSync(join(pkg, 'package.json'), join(dir, 'package.json'));
    symlinkSync(join(pkg, 'node_modules'), join(dir, 'node_modules'));
    const k = join(dir, 'guest', basename(kernel));
    const i = join(dir, 'guest', basename(initrd));
    copyFileSync(kernel, k);
    copyFileSync(initrd, i);
    return { dir, measure: join(dir, 'dist', 'bench', suite, 'measure.js'), kernel: k, initrd: i, remove: () => rmSync(dir, { recursive: true, force: true }) };
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}
