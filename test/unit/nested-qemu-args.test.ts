/**
 * The nested host's QEMU command line (src/host/nested.ts): its kernel runs KVM without nested
 * paging unless the developer asks for it back, and TSVMM_NESTED_KERNEL_ARGS comes last.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { nestedQemuArgs } from '../../src/host/nested.js';
import type { NestedHostAssets } from '../../src/host/nested-assets.js';

const ASSETS = { qemu: '/usr/bin/qemu-system-x86_64', kernel: '/k/vmlinux', bzImage: '/k/vmlinuz', kernelRelease: '6.1.0-0-amd64', initramfs: '/k/init.cpio' } as unknown as NestedHostAssets;

function append(): string {
  const args = nestedQemuArgs(ASSETS, '/k/run.cpio', 1024, 2);
  const i = args.indexOf('-append');
  assert.ok(i >= 0, 'QEMU is given a kernel command line');
  return args[i + 1]!;
}

test("the nested host's KVM runs without nested paging by default", () => {
  const saved = process.env['TSVMM_NESTED_KERNEL_ARGS'];
  delete process.env['TSVMM_NESTED_KERNEL_ARGS'];
  try {
    assert.match(append(), /(^| )kvm_amd\.npt=0( |$)/);
  } finally {
    if (saved !== undefined) process.env['TSVMM_NESTED_KERNEL_ARGS'] = saved;
  }
});

test('TSVMM_NESTED_KERNEL_ARGS comes after the defaults, so kvm_amd.npt=1 wins', () => {
  const saved = process.env['TSVMM_NESTED_KERNEL_ARGS'];
  process.env['TSVMM_NESTED_KERNEL_ARGS'] = 'kvm_amd.npt=1 loglevel=7';
  try {
    const words = append().split(' ');
    assert.ok(words.lastIndexOf('kvm_amd.npt=1') > words.lastIndexOf('kvm_amd.npt=0'));
    assert.equal(words.at(-1), 'loglevel=7');
  } finally {
    if (saved === undefined) delete process.env['TSVMM_NESTED_KERNEL_ARGS'];
    else process.env['TSVMM_NESTED_KERNEL_ARGS'] = saved;
  }
});
