/**
 * The benchmarks' boot runner (bench/blk/console-run.ts) against a stand-in VMM: a node process
 * that prints console lines as a guest would and then either exits or hangs.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GUEST_STALL_LINE, QEMU_GUEST_RESET, runConsole, type ConsoleRunOptions } from '../../bench/blk/console-run.js';

const MARKS = {
  info: 'T-INFO ',
  done: 'T-DONE',
  error: 'T-ERROR ',
  jsonBegin: 'T-JSON-BEGIN ',
  jsonEnd: 'T-JSON-END ',
  errBegin: 'T-ERR-BEGIN ',
  errEnd: 'T-ERR-END ',
};
const RCU_STALL = '[  349.888656] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:';

/** A stand-in VMM printing `lines`, then exiting 0 or (hang) sleeping far past any test's patience. */
function options(lines: string[], hang: boolean, log: string[], timeoutMs = 120_000): ConsoleRunOptions {
  const script = `for (const l of ${JSON.stringify(lines)}) console.log(l); ${hang ? 'setTimeout(() => {}, 600000);' : ''}`;
  return {
    vmm: 'tsvmm',
    round: 0,
    invocation: { command: process.execPath, args: ['-e', script] },
    timeoutMs,
    stallGraceMs: 300,
    log: (l) => log.push(l),
    prefix: 'T-',
    marks: MARKS,
    sections: () => undefined,
    onLine: () => {},
    describeInfo: () => '',
    keepLine: () => false,
  };
}

test('the stall pattern matches the kernel lines it is meant for and nothing ordinary', () => {
  assert.match(RCU_STALL, GUEST_STALL_LINE);
  assert.match('[  22.1] rcu: INFO: rcu_sched self-detected stall on CPU', GUEST_STALL_LINE);
  assert.match('[  40.0] watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [fio:123]', GUEST_STALL_LINE);
  assert.doesNotMatch('[   0.1] rcu: Preemptible hierarchical RCU implementation.', GUEST_STALL_LINE);
  assert.doesNotMatch('[   0.2] NMI watchdog: Perf NMI watchdog permanently disabled', GUEST_STALL_LINE);
});

test('a guest that reports a stalled CPU and hangs is stopped after the grace period, not at the timeout', async () => {
  const log: string[] = [];
  const started = Date.now();
  const end = await runConsole(options(['T-INFO x=1', RCU_STALL], true, log));
  assert.ok(Date.now() - started < 60_000, 'stopped long before the 120 s timeout');
  assert.ok(end.problems.includes('the guest kernel reported a stalled CPU and did not finish within 0.3 s'), end.problems.join('; '));
  assert.ok(end.problems.includes('the guest script did not finish'));
  assert.ok(!end.problems.some((p) => p.startsWith('timed out')));
  assert.ok(end.sample.notes.includes(RCU_STALL), 'the stall line is kept in the notes');
  assert.ok(log.some((l) => l.includes('reports a stalled CPU')));
});

test('a guest that finishes despite a stall report still fails the boot (its measurements include the stall)', async () => {
  const end = await runConsole(options(['T-INFO x=1', RCU_STALL, 'T-DONE'], false, []));
  assert.equal(end.sample.exitStatus, 0);
  assert.deepEqual(end.problems, [`the guest kernel reported a stalled CPU (${RCU_STALL.trim()})`]);
});

test('a boot without stall reports is untouched: done and exit 0 give no problems', async () => {
  const end = await runConsole(options(['T-INFO x=1', 'ordinary line', 'T-DONE'], false, []));
  assert.deepEqual(end.problems, []);
});

test('a hang without a stall report still ends at the timeout', async () => {
  const end = await runConsole(options(['T-INFO x=1'], true, [], 1000));
  assert.ok(end.problems.includes('timed out after 1 s'), end.problems.join('; '));
});

test('QEMU ending with status 0 without the guest powering off is named a guest reset; a power-off or a panic is not', async () => {
  const qemu = (lines: string[]): ConsoleRunOptions => ({ ...options(lines, false, []), vmm: 'qemu' });
  const reset = await runConsole(qemu(['T-INFO x=1', '[   60.1] some line']));
  assert.ok(reset.problems.includes(QEMU_GUEST_RESET), reset.problems.join('; '));
  assert.ok(reset.problems.includes('the guest script did not finish'));
  const off = await runConsole(qemu(['T-INFO x=1', 'T-DONE', '[   80.2] reboot: Power down']));
  assert.deepEqual(off.problems, []);
  const panicked = await runConsole(qemu(['T-INFO x=1', '[   70.0] Kernel panic - not syncing: Fatal exception']));
  assert.ok(!panicked.problems.includes(QEMU_GUEST_RESET), 'a panic says why itself');
  assert.ok(panicked.sample.notes.some((n) => n.includes('Kernel panic')), 'and its line is kept');
  // tsvmm says itself how its guest ended: no guess for it.
  const tsvmm = await runConsole(options(['T-INFO x=1'], false, []));
  assert.ok(!tsvmm.problems.includes(QEMU_GUEST_RESET));
});

test('a guest whose script goes silent past the silence limit is stopped then, not at the timeout', async () => {
  const log: string[] = [];
  const started = Date.now();
  const end = await runConsole({ ...options(['T-INFO x=1', 'T-STEP one'], true, log), silenceLimitMs: 400 });
  assert.ok(Date.now() - started < 60_000, 'stopped long before the 120 s timeout');
  assert.ok(end.problems.includes("the guest's script printed nothing for 0.4 s"), end.problems.join('; '));
  assert.ok(end.problems.includes('the guest script did not finish'));
  assert.ok(!end.problems.some((p) => p.startsWith('timed out')));
});

test('the silence limit counts from the last protocol line: a script that keeps printing runs to its end', async () => {
  // Eight steps 150 ms apart: 1.2 s in all, each gap well inside the 600 ms limit.
  const script = `console.log('T-INFO x=1'); let n = 0; const t = setInterval(() => { console.log('T-STEP ' + n); if (++n === 8) { clearInterval(t); console.log('T-DONE'); } }, 150);`;
  const end = await runConsole({ ...options([], false, []), invocation: { command: process.execPath, args: ['-e', script] }, silenceLimitMs: 600 });
  assert.deepEqual(end.problems, []);
});

test('before the guest is up the silence limit does not apply (booting is the timeout\'s business)', async () => {
  const end = await runConsole({ ...options(['[    0.1] booting'], true, [], 1500), silenceLimitMs: 200 });
  assert.ok(end.problems.includes('timed out after 2 s'), end.problems.join('; '));
});

test('a guest that does not come up within the up limit is stopped then, not at the timeout', async () => {
  const started = Date.now();
  const end = await runConsole({ ...options(['[    0.1] booting'], true, []), upLimitMs: 400 });
  assert.ok(Date.now() - started < 60_000, 'stopped long before the 120 s timeout');
  assert.ok(end.problems.includes('the guest did not come up within 0.4 s'), end.problems.join('; '));
  assert.ok(!end.problems.some((p) => p.startsWith('timed out')));
});

test('the up limit is over once the guest is up: a guest up in time runs past it', async () => {
  const script = `console.log('T-INFO x=1'); setTimeout(() => console.log('T-DONE'), 800);`;
  const end = await runConsole({ ...options([], false, []), invocation: { command: process.execPath, args: ['-e', script] }, upLimitMs: 300 });
  assert.deepEqual(end.problems, []);
});
