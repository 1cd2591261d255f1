/**
 * bench/net/ping-trace.ts: a trace taken while pinging, cut into the VMM's receive, the guest's
 * turn and the VMM's transmit per echo; and the report's pooled medians of those phases.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TraceWindow, parseTraceLine } from '../../bench/blk/tracefs.js';
import { pingPhases } from '../../bench/net/ping-trace.js';
import { summarizePingPhases } from '../../bench/net/report.js';
import type { NetResult, NetRunSample, PingSample } from '../../bench/net/samples.js';

const line = (comm: string, time: string, event: string, details: string): string => `${comm.padStart(16)} [001] d..1. ${time}: ${event}: ${details}`;
const xmit = (time: string, dev = 'tsvmm-tap0', len = 98): string => line('ping-301', time, 'net_dev_xmit', `dev=${dev} skbaddr=00000000a1b2c3d4 len=${len} rc=0`);
const msi = (time: string): string => line('node-218', time, 'kvm_msi_set_irq', 'dst 0 vec 35 (Fixed|physical|edge)');
const mmio = (time: string, val: string): string => line('node-219', time, 'kvm_mmio', `mmio write len 2 gpa 0xfebf3004 val 0x${val}`);
const reply = (time: string, event = 'netif_receive_skb', dev = 'tsvmm-tap0', len = 84): string => line('node-218', time, event, `dev=${dev} skbaddr=00000000e5f6a7b8 len=${len}`);

test('trace lines: task and tid (a command name may hold dashes), time, event, details', () => {
  assert.deepEqual(parseTraceLine(' qemu-system-x86-999     [000] d..1.  4511.000030: kvm_mmio: mmio write len 2 gpa 0x1 val 0x1'), {
    tid: 999,
    time: 4511.00003,
    event: 'kvm_mmio',
    details: 'mmio write len 2 gpa 0x1 val 0x1',
  });
  assert.equal(parseTraceLine('# tracer: nop'), undefined);
});

test('each echo is cut at the interrupt, the transmit kick and the reply; ARP, other devices and receive-queue kicks are left out', () => {
  const trace = [
    '# tracer: nop',
    // Echo 1: tap → 150 µs → interrupt → 400 µs → rx kick (even: queue 0) → tx kick (odd: queue 1) at +500 → reply 120 µs later.
    xmit('100.000000'),
    xmit('100.000010', 'lo'),
    msi('100.000150'),
    mmio('100.000400', '0'),
    mmio('100.000550', '1'),
    reply('100.000670'),
    // An ARP request on the tap between echoes: not an echo.
    xmit('100.100000', 'tsvmm-tap0', 42),
    // Echo 2, its reply through netif_rx; a later netif_receive_skb of the same frame changes nothing.
    xmit('100.200000'),
    msi('100.200100'),
    mmio('100.200300', '3'),
    reply('100.200350', 'netif_rx'),
    reply('100.200360'),
    // Echo 3: lost (no interrupt), then echo 4 is whole.
    xmit('100.400000'),
    xmit('100.600000'),
    msi('100.600200'),
    mmio('100.600500', '1'),
    reply('100.600600', 'netif_receive_skb', 'tsvmm-tap0', 28),
    reply('100.600700'),
  ].join('\n');
  const p = pingPhases(trace, 'tsvmm-tap0');
  assert.equal(p.requests, 4);
  assert.equal(p.matched, 3);
  assert.deepEqual(p.vmmReceiveUs, [150, 100, 200]);
  assert.deepEqual(p.guestUs, [400, 200, 300]);
  assert.deepEqual(p.vmmTransmitUs, [120, 50, 200]);
  assert.deepEqual(p.tapToTapUs, [670, 350, 700]);
});

test('the report pools the phases over boots: median of all round trips, range of the per-boot medians', () => {
  const ping = (vmmReceiveUs: number[]): PingSample => ({
    ok: true,
    transmitted: 3,
    received: 3,
    rttMs: [1, 1, 1],
    phases: { matched: vmmReceiveUs.length, requests: 3, vmmReceiveUs, guestUs: vmmReceiveUs, vmmTransmitUs: vmmReceiveUs, tapToTapUs: vmmReceiveUs },
  });
  const run = (vmm: string, p: PingSample | undefined): NetRunSample => ({ vmm, round: 0, ok: true, tests: [], ...(p !== undefined ? { ping: p } : {}) }) as unknown as NetRunSample;
  const result = { runs: [run('tsvmm', ping([10, 20, 30])), run('tsvmm', ping([40, 50])), run('qemu', undefined)] } as unknown as NetResult;
  const s = summarizePingPhases(result);
  assert.equal(s.qemu, undefined, 'no trace, no row');
  assert.equal(s.tsvmm?.matched, 5);
  assert.equal(s.tsvmm?.requests, 6);
  assert.deepEqual(s.tsvmm?.phases.vmmReceiveUs, { n: 2, median: 30, min: 20, max: 40 });
});

test('a trace window switches its events on (those the kernel has), sets the clock, and puts everything back', () => {
  const root = mkdtempSync(join(tmpdir(), 'tsvmm-tracefs-'));
  try {
    for (const e of ['kvm/kvm_mmio', 'net/net_dev_xmit']) {
      mkdirSync(join(root, 'events', e), { recursive: true });
      writeFileSync(join(root, 'events', e, 'enable'), '0');
    }
    writeFileSync(join(root, 'trace_clock'), '[local] global counter mono\n');
    writeFileSync(join(root, 'trace'), 'old lines\n');
    const read = (f: string): string => readFileSync(join(root, f), 'utf8');
    assert.equal(TraceWindow.start(['kvm/kvm_exit'], 'mono', [root]), undefined, 'no such event: no window');
    const w = TraceWindow.start(['kvm/kvm_mmio', 'net/net_dev_xmit', 'net/netif_rx'], 'mono', [root]);
    assert.ok(w !== undefined);
    assert.equal(read('events/kvm/kvm_mmio/enable'), '1');
    assert.equal(read('events/net/net_dev_xmit/enable'), '1');
    assert.equal(read('trace_clock'), 'mono');
    assert.equal(read('trace'), '', 'emptied at the start');
    writeFileSync(join(root, 'trace'), 'traced\n');
    assert.equal(w.stop(), 'traced\n');
    assert.equal(read('events/kvm/kvm_mmio/enable'), '0');
    assert.equal(read('events/net/net_dev_xmit/enable'), '0');
    assert.equal(read('trace_clock'), 'local', 'the clock it found');
    assert.equal(read('trace'), '', 'emptied at the end');
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
