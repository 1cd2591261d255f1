/**
 * bench/net's two guests of a round (pair.ts): their pings wait for each other unless the partner
 * is gone, their tests take turns in order, and the report compares the rounds pinged together.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestPair, type PingMember } from '../../bench/net/pair.js';
import { pairedRounds } from '../../bench/net/report.js';
import type { NetResult, NetRunSample, PingSample, VmmKind } from '../../bench/net/samples.js';

const member = (vmm: VmmKind): PingMember => ({ vmm, tap: `tap-${vmm}`, guestAddress: '169.254.0.2', mark: () => ({ at: 0, cpu: undefined, kvm: undefined }) });
const pinged = (rttMs: number[], alongside: VmmKind[] = []): PingSample => ({ ok: true, transmitted: rttMs.length, received: rttMs.length, rttMs, alongside });
const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

/** A GuestPair whose pings are recorded, not sent: each batch answers with the batch's VMMs as `alongside`. */
function recordingPair(order: VmmKind[]): { pair: GuestPair; batches: VmmKind[][] } {
  const batches: VmmKind[][] = [];
  const pair = new GuestPair(order, (members: readonly PingMember[]) => {
    const names = members.map((m) => m.vmm);
    batches.push(names);
    return Promise.resolve(members.map((m) => pinged([1], names.filter((v) => v !== m.vmm))));
  });
  return { pair, batches };
}

test('the first guest to be ready waits for the other, and both are pinged in one batch', async () => {
  const { pair, batches } = recordingPair(['tsvmm', 'qemu']);
  const done: { tsvmm?: PingSample } = {};
  void pair.ping(member('tsvmm')).then((s) => (done.tsvmm = s));
  await tick();
  assert.deepEqual(batches, [], 'nothing is pinged while the partner is still booting');
  assert.equal(Object.keys(done).length, 0, 'the first guest is still waiting');
  const q = await pair.ping(member('qemu'));
  await tick();
  assert.deepEqual(batches, [['tsvmm', 'qemu']]);
  // Arrival order does not lead the interleave; the round's order does.
  const reversed = recordingPair(['qemu', 'tsvmm']);
  const a = reversed.pair.ping(member('tsvmm'));
  await reversed.pair.ping(member('qemu'));
  await a;
  assert.deepEqual(reversed.batches, [['qemu', 'tsvmm']]);
  assert.deepEqual(q.alongside, ['tsvmm']);
  assert.deepEqual(done.tsvmm?.alongside, ['qemu']);
});

test('a guest whose partner is gone is pinged alone, at once or as soon as the partner leaves', async () => {
  const early = recordingPair(['tsvmm', 'qemu']);
  early.pair.left('qemu');
  const alone = await early.pair.ping(member('tsvmm'));
  assert.deepEqual(early.batches, [['tsvmm']]);
  assert.deepEqual(alone.alongside, []);

  const late = recordingPair(['tsvmm', 'qemu']);
  const waiting = late.pair.ping(member('qemu'));
  await tick();
  assert.deepEqual(late.batches, []);
  late.pair.left('tsvmm');
  await waiting;
  assert.deepEqual(late.batches, [['qemu']]);
});

test('tests take turns in order: the second starts only once the first is gone', async () => {
  const { pair } = recordingPair(['qemu', 'tsvmm']);
  const started: VmmKind[] = [];
  void pair.testsTurn('tsvmm').then(() => started.push('tsvmm'));
  void pair.testsTurn('qemu').then(() => started.push('qemu'));
  await tick();
  assert.deepEqual(started, ['qemu']);
  pair.left('qemu');
  await tick();
  assert.deepEqual(started, ['qemu', 'tsvmm']);
});

test('a failed ping batch fails every guest in it', async () => {
  const pair = new GuestPair(['tsvmm', 'qemu'], () => Promise.reject(new Error('no ping')));
  const a = pair.ping(member('tsvmm'));
  const b = pair.ping(member('qemu'));
  await assert.rejects(a, /no ping/);
  await assert.rejects(b, /no ping/);
});

function run(vmm: VmmKind, round: number, ping: PingSample | undefined): NetRunSample {
  return { vmm, round, ok: true, wallMs: 1, guestInfo: {}, argv: [], notes: [], tests: [], ...(ping !== undefined ? { ping } : {}) } as unknown as NetRunSample;
}

test('the report compares only rounds pinged together, neighbour by neighbour', () => {
  const result = {
    config: { rounds: 3 },
    runs: [
      // Round 1: together; tsvmm sooner in 2 of 3 neighbouring pairs.
      run('tsvmm', 0, pinged([1, 2, 3], ['qemu'])),
      run('qemu', 0, pinged([2, 1, 4], ['tsvmm'])),
      // Round 2: QEMU's guest was lost before its ping: tsvmm was pinged alone.
      run('tsvmm', 1, pinged([1, 1], [])),
      run('qemu', 1, undefined),
      // Round 3: together, but QEMU lost a reply: its k-th reply is no longer tsvmm's neighbour.
      run('qemu', 2, { ...pinged([2, 2], ['tsvmm']), transmitted: 3 }),
      run('tsvmm', 2, pinged([1, 1, 1], ['qemu'])),
    ],
  } as unknown as NetResult;
  const rounds = pairedRounds(result);
  assert.deepEqual(rounds.map((r) => r.round), [0, 2]);
  assert.equal(rounds[0]!.neighbours, 3);
  assert.equal(rounds[0]!.tsvmmSooner, 2);
  assert.equal(rounds[1]!.neighbours, 0);
});
