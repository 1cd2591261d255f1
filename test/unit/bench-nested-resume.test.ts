/**
 * A benchmark run that outlives its nested host (bench/blk/run-helpers.ts measureInNestedHost):
 * after the emulated host fails, the run goes on in a fresh one from the start of the round it
 * cut short (so each round's VMMs share one emulated machine), the parts are joined, and the
 * report says so; a failure of the measurement itself is not retried.
 * One nested-host boot is played by a fake here; bench/blk and bench/net's measure.ts skip the
 * boots named by spec.skipBoots in bootOrder's order. Also the folder options shared writable with it
 * (sharedWritableDir).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NestedHostHungError, NestedHostPanicError } from '../../src/host/nested.js';
import { bootOrder, jobsToRetry } from '../../bench/blk/measure.js';
import { selectJobs } from '../../bench/blk/jobs.js';
import { nestedRestartNote, runRows } from '../../bench/blk/report.js';
import { MAX_NESTED_HOSTS_PER_RUN, measureInNestedHost, type NestedMeasureOptions, type NestedMeasurePart, type NestedMeasureResult, sharedWritableDir } from '../../bench/blk/run-helpers.js';

interface FakeRun {
  readonly round: number;
  readonly name: string;
}

interface FakeResult extends NestedMeasureResult {
  readonly runs: readonly FakeRun[];
  readonly bootsDone: number;
}

/** Two VMMs per round, as bench/blk and bench/net run. */
const PER_ROUND = 2;
const OPTIONS: NestedMeasureOptions = { cwd: '/', timeoutMs: 1000, stallTimeoutMs: 1000, memoryMiB: 1024, bootsPerRound: PER_ROUND };
const outer = { cpuModel: 'x', cpus: 2, kernelRelease: 'r', loadAverage: [0, 0, 0] };

/** A result of `boots` boots (named for the boot index; PER_ROUND to a round) after `skip`, planned `planned`. */
function part(skip: number, boots: number, planned: number, hostFailed: boolean): NestedMeasurePart<FakeResult> {
  const done = skip + boots;
  return {
    result: {
      environment: { outer },
      runs: Array.from({ length: boots }, (_, i) => ({ round: Math.floor((skip + i) / PER_ROUND), name: `boot ${skip + i}` })),
      bootsDone: done,
      finishedAt: `t${done}`,
      ...(done < planned ? { incomplete: `the nested host's kernel panicked (${done} of ${planned} guest boots done)` } : {}),
    },
    hostFailed,
  };
}

/** A fake nested host playing `script` in turn, recording each spec's skipBoots. */
function fakeHosts(script: ((skip: number) => NestedMeasurePart<FakeResult>)[]): { skips: number[]; runOne: (js: string, spec: object) => Promise<NestedMeasurePart<FakeResult>> } {
  const skips: number[] = [];
  return {
    skips,
    runOne: async (_js, spec) => {
      const skip = (spec as { skipBoots?: number }).skipBoots ?? 0;
      skips.push(skip);
      return script[skips.length - 1]!(skip);
    },
  };
}

test('boots alternate which VMM goes first, round by round', () => {
  assert.deepEqual(
    bootOrder(3, ['tsvmm', 'qemu']).map((b) => `${b.round}:${b.vmm}`),
    ['0:tsvmm', '0:qemu', '1:qemu', '1:tsvmm', '2:tsvmm', '2:qemu'],
  );
});

test('a nested host that fails mid-run: the run goes on from the next boot in a fresh one, and the parts are joined', async () => {
  const hosts = fakeHosts([
    (skip) => part(skip, 2, 6, true),
    () => {
      throw new NestedHostHungError('the nested host stopped responding: no heartbeat for 90 s; last console lines: ...');
    },
    (skip) => part(skip, 4, 6, false),
  ]);
  const r = await measureInNestedHost<FakeResult>('m.js', { rounds: 3 }, OPTIONS, hosts.runOne);
  assert.deepEqual(hosts.skips, [0, 2, 2], 'each fresh host starts after the boots already done');
  assert.deepEqual(r.runs.map((x) => x.name), ['boot 0', 'boot 1', 'boot 2', 'boot 3', 'boot 4', 'boot 5']);
  assert.equal(r.bootsDone, 6);
  assert.equal(r.incomplete, undefined, 'complete in the end');
  assert.equal(r.finishedAt, 't6');
  assert.deepEqual(
    r.nestedRestarts?.map((x) => x.afterBoots),
    [2, 2],
  );
  assert.match(r.nestedRestarts![1]!.reason, /no heartbeat for 90 s$/, 'the reason without the console tail');
  const note = nestedRestartNote(r.nestedRestarts)!;
  assert.match(note, /failed 2 times during this run/);
  assert.match(note, /after 2 guest boots \(the nested host's kernel panicked/);
});

test('a host failing in the middle of a round: the fresh one runs that round again from its start, and its first boot is dropped', async () => {
  const hosts = fakeHosts([(skip) => part(skip, 3, 6, true), (skip) => part(skip, 4, 6, false)]);
  const r = await measureInNestedHost<FakeResult>('m.js', {}, OPTIONS, hosts.runOne);
  assert.deepEqual(hosts.skips, [0, 2], 'the second host starts at round 2, not at its second boot');
  assert.deepEqual(r.runs.map((x) => x.name), ['boot 0', 'boot 1', 'boot 2', 'boot 3', 'boot 4', 'boot 5'], 'boot 2 of the failed host is gone; the fresh host did it again');
  assert.equal(r.bootsDone, 6);
  assert.equal(r.incomplete, undefined);
  assert.deepEqual(r.nestedRestarts?.map((x) => [x.afterBoots, x.redoneBoots]), [[3, 1]]);
  assert.match(nestedRestartNote(r.nestedRestarts)!, /after 3 guest boots \(.*\), the round it cut short run again from its start \(1 finished boot dropped\).*the VMMs of each round ran on the same one/);
});

test(`at most ${MAX_NESTED_HOSTS_PER_RUN} nested hosts per run; then the run ends incomplete with what they measured`, async () => {
  // Each host finishes two boots and fails: a whole round each time, nothing dropped.
  const hosts = fakeHosts(Array.from({ length: MAX_NESTED_HOSTS_PER_RUN + 2 }, () => (skip: number) => part(skip, 2, 12, true)));
  const r = await measureInNestedHost<FakeResult>('m.js', {}, OPTIONS, hosts.runOne);
  assert.equal(hosts.skips.length, MAX_NESTED_HOSTS_PER_RUN);
  assert.equal(r.bootsDone, 2 * MAX_NESTED_HOSTS_PER_RUN);
  assert.equal(r.runs.length, 2 * MAX_NESTED_HOSTS_PER_RUN);
  assert.match(r.incomplete!, new RegExp(`${2 * MAX_NESTED_HOSTS_PER_RUN} of 12 guest boots done`));
  assert.equal(r.nestedRestarts?.length, MAX_NESTED_HOSTS_PER_RUN - 1);
});

test('the last host allowed keeps the boots of a round it cut short: the best data left', async () => {
  const hosts = fakeHosts(Array.from({ length: MAX_NESTED_HOSTS_PER_RUN }, () => (skip: number) => part(skip, 1, 6, true)));
  const r = await measureInNestedHost<FakeResult>('m.js', {}, OPTIONS, hosts.runOne);
  assert.deepEqual(hosts.skips, Array.from({ length: MAX_NESTED_HOSTS_PER_RUN }, () => 0), 'every host redoes round 1');
  assert.deepEqual(r.runs.map((x) => x.name), ['boot 0'], "the last host's one boot, the earlier ones' dropped");
  assert.match(r.incomplete!, /1 of 6 guest boots done/);
});

test('a measurement that failed on its own (the host was fine) is not retried, and neither is a host that finished no boot after the last try', async () => {
  const own = fakeHosts([(skip) => part(skip, 1, 6, false)]);
  const r = await measureInNestedHost<FakeResult>('m.js', {}, OPTIONS, own.runOne);
  assert.equal(own.skips.length, 1);
  assert.match(r.incomplete!, /1 of 6/);
  assert.equal(r.nestedRestarts, undefined);
  assert.equal(nestedRestartNote(r.nestedRestarts), undefined, 'no note without a restart');

  const dead = fakeHosts(Array.from({ length: MAX_NESTED_HOSTS_PER_RUN }, () => () => {
    throw new NestedHostPanicError('the nested host\'s kernel panicked');
  }));
  await assert.rejects(measureInNestedHost<FakeResult>('m.js', {}, OPTIONS, dead.runOne), NestedHostPanicError);
  assert.equal(dead.skips.length, MAX_NESTED_HOSTS_PER_RUN);

  const broken = fakeHosts([
    () => {
      throw new Error('the measurement inside the nested host failed with status 1');
    },
  ]);
  await assert.rejects(measureInNestedHost<FakeResult>('m.js', {}, OPTIONS, broken.runOne), /status 1/);
  assert.equal(broken.skips.length, 1, 'not a nested host failure: no second host');
});

test("the report's restart line keeps what failed and drops the advice meant for a run that stopped", () => {
  const note = nestedRestartNote([{ afterBoots: 1, reason: 'the nested host stopped responding: no heartbeat from its init for 91 s (the emulated machine wedged); QEMU killed. This is the emulated host failing, not the command: run it again' }])!;
  assert.match(note, /failed once during this run/);
  assert.match(note, /after 1 guest boot \(the nested host stopped responding: no heartbeat from its init for 91 s \(the emulated machine wedged\)\)/);
  assert.doesNotMatch(note, /QEMU killed|run it again/);
});

test('a folder option is made absolute and created; one that cannot be created is a one-line error naming the option', () => {
  const base = mkdtempSync(join(tmpdir(), 'tsvmm-shared-'));
  try {
    const made = sharedWritableDir(join(base, 'a', 'b'), '--ping-trace-dir');
    assert.equal(made, join(base, 'a', 'b'));
    assert.ok(statSync(made).isDirectory());
    assert.equal(sharedWritableDir(undefined, '--ping-trace-dir'), undefined);
    writeFileSync(join(base, 'file'), '');
    assert.throws(() => sharedWritableDir(join(base, 'file', 'x'), '--profile-vmm'), /^Error: --profile-vmm: cannot create the folder .*file\/x \(ENOTDIR\); give a folder you can write to$/);
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
});

test('a guest lost mid-run in a healthy host: its lost jobs run again in a second boot of the same round; a guest that never came up (and reported no stall) is not retried', () => {
  const jobs = selectJobs('randread-4k-qd1,randread-4k-qd32,read-1m-qd8');
  const ok = (job: string) => ({ job, ok: true });
  const lost = (job: string) => ({ job, ok: false, problem: 'never ended' });
  assert.deepEqual(jobsToRetry(jobs, { infoAtMs: 30_000, jobs: [ok('randread-4k-qd1'), lost('randread-4k-qd32'), lost('read-1m-qd8')] }).map((j) => j.name), ['randread-4k-qd32', 'read-1m-qd8']);
  assert.deepEqual(jobsToRetry(jobs, { infoAtMs: 30_000, jobs: jobs.map((j) => ok(j.name)) }), [], 'nothing lost, no second boot');
  assert.deepEqual(jobsToRetry(jobs, { jobs: jobs.map((j) => lost(j.name)) }), [], 'no guest, no second boot');
  assert.equal(jobsToRetry(jobs, { guestStall: 'rcu: INFO: rcu_sched self-detected stall on CPU', jobs: jobs.map((j) => lost(j.name)) }).length, 3, 'a guest whose kernel stalled while booting: the machine lost it; all its jobs again');
  const rows = runRows([
    { vmm: 'tsvmm', round: 1, ok: false, problem: 'guest stalled', exitStatus: null, wallMs: 100_000, infoAtMs: 30_000, guestInfo: {}, notes: [], argv: [] },
    { vmm: 'tsvmm', round: 1, retriedJobs: ['read-1m-qd8'], ok: true, exitStatus: 0, wallMs: 60_000, infoAtMs: 30_000, guestInfo: {}, notes: [], argv: [] },
  ], 'guest ready');
  assert.match(rows[3]!, /^\| 2 \| tsvmm, again for read-1m-qd8 \| yes \|/, 'the runs table names the second boot and its jobs');
});
