/**
 * bench/blk/kvm-stats.ts reads KVM's per-VM counters from a debugfs tree; here a folder laid out
 * like /sys/kernel/debug/kvm stands in for it.
 */
import { strict as assert } from 'node:assert';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { kvmStatsDelta, kvmStatsSnapshot } from '../../bench/blk/kvm-stats.js';

function fakeDebugfs(vms: Record<string, Record<string, string>>): string {
  const root = mkdtempSync(join(tmpdir(), 'tsvmm-kvm-debugfs-'));
  for (const [vm, files] of Object.entries(vms)) {
    mkdirSync(join(root, vm, 'vcpu0'), { recursive: true });
    // Per-vCPU folders hold other files (tsc-offset…); the VM's own files already sum the vCPUs.
    writeFileSync(join(root, vm, 'vcpu0', 'exits'), '999999\n');
    for (const [name, text] of Object.entries(files)) writeFileSync(join(root, vm, name), text);
  }
  return root;
}

test('a snapshot reads the VM folders of one process only, numbers only', () => {
  const root = fakeDebugfs({
    '4242-11': { exits: '120\n', halt_exits: '7\n', max_mmu_rmap_size: '3\n', 'not-a-number': 'x\n' },
    '4242-12': { exits: '5\n' },
    '1717-11': { exits: '100000\n' },
  });
  try {
    assert.deepEqual(kvmStatsSnapshot(4242, root), { exits: 125, halt_exits: 7, max_mmu_rmap_size: 3 });
    assert.deepEqual(kvmStatsSnapshot(1717, root), { exits: 100000 });
    assert.equal(kvmStatsSnapshot(99, root), undefined, 'a process without a VM has no snapshot');
    assert.equal(kvmStatsSnapshot(4242, join(root, 'missing')), undefined, 'no debugfs, no snapshot');
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('a delta keeps the counters both snapshots have', () => {
  assert.deepEqual(kvmStatsDelta({ exits: 100, halt_exits: 10, gone: 4 }, { exits: 250, halt_exits: 10, added: 9 }), { exits: 150, halt_exits: 0 });
});
