/**
 * bench/blk/freeze.ts: the frozen copy is named after its suite and points at that suite's
 * measure.js, and holds the guest files and the compiled tree.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { freeze } from '../../bench/blk/freeze.js';

test('freeze: a copy per suite, named after it, with that suite\'s measure.js', (t) => {
  const root = mkdtempSync(join(tmpdir(), 'tsvmm-freeze-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  writeFileSync(join(root, 'package.json'), '{"type":"module"}');
  mkdirSync(join(root, 'node_modules'));
  const compiled = join(root, 'dist');
  for (const suite of ['blk', 'net', 'api']) {
    mkdirSync(join(compiled, 'bench', suite), { recursive: true });
    writeFileSync(join(compiled, 'bench', suite, 'measure.js'), `// ${suite}`);
  }
  mkdirSync(join(compiled, 'src'), { recursive: true });
  writeFileSync(join(root, 'vmlinuz'), 'kernel');
  writeFileSync(join(root, 'initrd.cpio'), 'initrd');
  for (const suite of ['net', 'api'] as const) {
    const frozen = freeze(compiled, join(root, 'vmlinuz'), join(root, 'initrd.cpio'), suite);
    try {
      assert.match(basename(frozen.dir), new RegExp(`^${suite}-\\d+-\\d+$`));
      assert.equal(frozen.measure, join(frozen.dir, 'dist', 'bench', suite, 'measure.js'));
      assert.ok(existsSync(frozen.measure));
      assert.ok(existsSync(frozen.kernel) && existsSync(frozen.initrd));
    } finally {
      frozen.remove();
    }
    assert.ok(!existsSync(frozen.dir), 'remove() takes the copy away');
  }
});
