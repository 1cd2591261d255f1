/**
 * bench --tsvmm-poller: the chosen EventFdPoller wait reaches tsvmm's process as TSVMM_POLLER (and
 * only tsvmm's), and a mistyped mode is refused before anything boots.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type GuestSpec, pollerOption, qemuInvocation, tsvmmInvocation } from '../../bench/blk/vmms.js';
import { tsvmmInvocation as netTsvmmInvocation } from '../../bench/net/measure.js';

const guest: GuestSpec = { kernel: '/k', initrd: '/i', cmdline: 'console=ttyS0', vcpus: 1, memoryMib: 256, image: '/img' };

test('a chosen poller is in the block and network benchmarks\' tsvmm environment, not in QEMU\'s', () => {
  assert.deepEqual(tsvmmInvocation('node', 'cli.js', { ...guest, poller: 'held' }).env, { TSVMM_POLLER: 'held' });
  assert.deepEqual(netTsvmmInvocation('node', 'cli.js', { ...guest, poller: 'held' }).env, { TSVMM_POLLER: 'held' });
  assert.equal(tsvmmInvocation('node', 'cli.js', guest).env, undefined, 'no choice: tsvmm keeps its default');
  assert.equal(qemuInvocation('qemu', { ...guest, poller: 'held' }, 'host').env, undefined);
});

test('--tsvmm-poller takes the three modes and refuses anything else', () => {
  assert.equal(pollerOption(undefined), undefined);
  for (const mode of ['main-loop', 'threadpool', 'held'] as const) assert.equal(pollerOption(mode), mode);
  assert.throws(() => pollerOption('hold'), /--tsvmm-poller takes main-loop, threadpool or held, not 'hold'/);
});
