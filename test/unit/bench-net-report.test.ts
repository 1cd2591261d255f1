/**
 * bench/net's summary of the tap's counters: the data frames' average size per direction (the
 * tap's byte and packet counters, read from the right side for each direction) and the frames
 * going the other way per MB, and their place in the rendered report.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { summarizeThroughput, writeReport } from '../../bench/net/report.js';
import type { IperfSample, NetResult, NetRunSample } from '../../bench/net/samples.js';

/** The checkout: dist/test/unit/ is three levels down. */
const REPO = fileURLToPath(new URL('../../../', import.meta.url));

function sample(direction: 'g2h' | 'h2g', bytes: number, tapFrames: IperfSample['tapFrames']): IperfSample {
  return {
    name: `${direction}-1`,
    direction,
    ok: true,
    iperf: { bitsPerSecond: 400e6, bytesReceived: bytes, seconds: 5, retransmits: 0, intervals: [] },
    ...(tapFrames !== undefined ? { tapFrames } : {}),
  };
}

function result(tests: IperfSample[]): NetResult {
  const run = { vmm: 'tsvmm', round: 0, ok: true, exitStatus: 0, wallMs: 60_000, guestInfo: {}, argv: [], notes: [], tests } as unknown as NetRunSample;
  return {
    startedAt: '2026-11-27T00:00:00Z',
    finishedAt: '2026-11-27T00:10:00Z',
    environment: { nested: false, iperf3Version: 'iperf 3', pingVersion: 'ping' },
    config: { vmms: ['tsvmm'], seconds: 5, repetitions: 1, rounds: 1, pings: 0, pingIntervalSeconds: 0.2, vcpus: 2, memoryMib: 512 },
    runs: [run],
  } as unknown as NetResult;
}

test('data frame size and ACK frames per MB come from the tap side that carried the data', () => {
  const r = result([
    // guest → host: the VMM wrote 1000 frames of 50 KB (rx from the tap's side), read 2000 ACKs.
    sample('g2h', 50e6, { fromVmmFrames: 1000, fromVmmBytes: 50e6, toVmmFrames: 2000, toVmmBytes: 132_000 }),
    // host → guest: the VMM read 5000 frames of 10 KB, wrote 500 ACKs.
    sample('h2g', 50e6, { toVmmFrames: 5000, toVmmBytes: 50e6, fromVmmFrames: 500, fromVmmBytes: 33_000 }),
  ]);
  const s = summarizeThroughput(r).tsvmm;
  assert.equal(s.g2h.dataFrameBytes?.median, 50_000);
  assert.equal(s.g2h.ackFrames?.median, 40);
  assert.equal(s.h2g.dataFrameBytes?.median, 10_000);
  assert.equal(s.h2g.ackFrames?.median, 10);
});

test('a test without frames leaves the columns empty', () => {
  const s = summarizeThroughput(result([sample('g2h', 50e6, undefined), sample('h2g', 50e6, { toVmmFrames: 0, toVmmBytes: 0, fromVmmFrames: 0, fromVmmBytes: 0 })])).tsvmm;
  assert.equal(s.g2h.dataFrameBytes, undefined);
  assert.equal(s.h2g.dataFrameBytes, undefined);
});

test('a published result from before the tap counters still renders, with the new columns empty', () => {
  const published = JSON.parse(readFileSync(join(REPO, 'bench/results/net-2026-11-27-late.json'), 'utf8')) as NetResult;
  const dir = mkdtempSync(join(tmpdir(), 'tsvmm-net-report-'));
  try {
    const md = readFileSync(writeReport(published, dir, 'net-test'), 'utf8');
    assert.match(md, /\| direction \| VMM \| Mbit\/s \| retransmits \| tap drops \| guest iperf3 CPU % \| data frame, bytes \| ACK frames \/ MB \|/);
    assert.match(md, /\| guest → host \| tsvmm \| [\d.]+ .*\| – \| – \|$/m);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
