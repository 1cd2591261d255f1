/**
 * A benchmark run that outlives its nested host (bench/blk/run-helpers.ts measureInNestedHost):
 * after the emulated host fails, the run goes on from the next guest boot in a fresh one, the
 * parts are joined, and the report says so; a failure of the measurement itself is not retried.
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
import { bootOrder } from '../../bench/blk/measure.js';
import { nestedRestartNote } from '../../bench/blk/report.js';
import { MAX_NESTED_HOSTS_PER_RUN, measureInNestedHost, type NestedMeasureOptions, type NestedMeasurePart, type NestedMeasureResult, sharedWritableDir } from '../../bench/blk/run-helpers.js';

interface FakeResult extends NestedMeasureResult {
  readonly runs: readonly string[];
  readonly bootsDone: number;
}

const OPTIONS: NestedMeasureOptions = { cwd: '/', timeoutMs: 1000, stallTimeoutMs: 1000, memoryMiB: 1024 };
const outer = { cpuModel: 'x', cpus: 2, kernelRelease: 'r', loadAverage: [0, 0, 0] };

/** A result of `boots` boots (named for the boot index) after `skip`, planned `planned`. */
function part(skip: number, boots: number, planned: number, hostFailed: boolean): NestedMeasurePart<FakeResult> {
  const done = skip + boots;
  return {
    result: {
      environment: { outer },
      runs: Array.from({ length: boots }, (_, i) => `boot ${skip + i}`),
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
  assert.deepEqual(r.runs, ['boot 0', 'boot 1', 'boot 2', 'boot 3', 'boot 4', 'boot 5']);
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

test(`at most ${MAX_NESTED_HOSTS_PER_RUN} nested hosts per run; then the run ends incomplete with what they measured`, async () => {
  const hosts = fakeHosts(Array.from({ length: MAX_NESTED_HOSTS_PER_RUN + 2 }, () => (skip: number) => part(skip, 1, 6, true)));
  const r = await measureInNestedHost<FakeResult>('m.js', {}, OPTIONS, hosts.runOne);
  assert.equal(hosts.skips.length, MAX_NESTED_HOSTS_PER_RUN);
  assert.equal(r.bootsDone, MAX_NESTED_HOSTS_PER_RUN);
  assert.equal(r.runs.length, MAX_NESTED_HOSTS_PER_RUN);
  assert.match(r.incomplete!, /3 of 6 guest boots done/);
  assert.equal(r.nestedRestarts?.length, MAX_NESTED_HOSTS_PER_RUN - 1);
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
