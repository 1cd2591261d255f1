/**
 * bench/blk/stall-report.ts: what a process was doing, read from /proc, for a boot that timed out.
 * Real processes: one asleep, one spinning.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { test } from 'node:test';
import { describeStall, summarizeKvmTrace } from '../../bench/blk/stall-report.js';

/** Run `script` in a child node that says 'ready' first, and `body` once it has. */
async function withChild(script: string, body: (pid: number) => Promise<void>): Promise<void> {
  const child = spawn(process.execPath, ['-e', `process.stdout.write('ready'); ${script}`], { stdio: ['ignore', 'pipe', 'ignore'] });
  try {
    await once(child.stdout!, 'data');
    // Let its start-up work (module loading, the first GC) settle.
    await new Promise((resolve) => setTimeout(resolve, 300));
    await body(child.pid!);
  } finally {
    child.kill('SIGKILL');
    await once(child, 'exit');
  }
}

test('a sleeping process: its main thread asleep without CPU, its idle threads summed up in one line', async () => {
  await withChild('setTimeout(() => {}, 60_000)', async (pid) => {
    const lines = await describeStall(pid, 300);
    const main = lines.find((l) => l.includes(`thread ${pid} (main)`));
    assert.ok(main !== undefined, lines.join('\n'));
    assert.match(main, /: S( in \S+)?, cpu 0 ms of 300 ms$/);
    assert.ok(lines.some((l) => /^stall: other threads idle \(no CPU\): \d+ S/.test(l)), 'node has idle helper threads');
    // No VM in that process: KVM's counters cannot say anything about it.
    assert.ok(lines.some((l) => /^stall: KVM counters unreadable/.test(l)));
  });
});

test('a spinning process: its main thread running, with the CPU time of the window', async () => {
  await withChild('for (;;) {}', async (pid) => {
    const lines = await describeStall(pid, 500);
    const main = lines.find((l) => l.includes(`thread ${pid} (main)`));
    assert.ok(main !== undefined, lines.join('\n'));
    const cpu = Number(/cpu (\d+) ms of 500 ms/.exec(main)?.[1]);
    assert.ok(cpu >= 100, `the spinning thread got ${cpu} ms of CPU in 500 ms`);
  });
});

test('a process that is gone: nothing to say', async () => {
  const child = spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' });
  const pid = child.pid!;
  await once(child, 'exit');
  assert.deepEqual(await describeStall(pid, 10), []);
});

test("KVM's trace: exits grouped by reason and RIP, emulated instructions by their bytes, other processes left out", () => {
  const trace = [
    '# tracer: nop',
    '#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION',
    '            node-218     [001] d..1.  4511.000001: kvm_exit: vcpu 0 reason npf rip 0xffffffff8106b3c2 info1 0x0000000000000181 info2 0x00000000fec00010 intr_info 0x00000000 error_code 0x00000000',
    '            node-218     [001] .....  4511.000002: kvm_emulate_insn: 0:ffffffff8106b3c2: 8b 07 (prot64)',
    '            node-218     [001] d..1.  4511.000011: kvm_exit: vcpu 0 reason npf rip 0xffffffff8106b3c2 info1 0x0000000000000181 info2 0x00000000fec00010 intr_info 0x00000000 error_code 0x00000000',
    '            node-218     [001] .....  4511.000012: kvm_emulate_insn: 0:ffffffff8106b3c2: 8b 07 (prot64)',
    '            node-218     [001] .....  4511.000013: kvm_msr: msr_write 6e0 = 0x5b1e3a7c21',
    '            node-218     [001] .....  4511.000014: kvm_msr: msr_write 6e0 = 0x5b1e3a9d00',
    '            node-218     [001] d..1.  4511.000021: kvm_exit: vcpu 0 reason hlt rip 0xffffffff81c0e1a4 info1 0x0000000000000000 info2 0x0000000000000000 intr_info 0x00000000 error_code 0x00000000',
    ' qemu-system-x86-999     [000] d..1.  4511.000030: kvm_exit: vcpu 0 reason io rip 0x1234 info1 0x0 info2 0x0 intr_info 0x00000000 error_code 0x00000000',
  ].join('\n');
  assert.deepEqual(summarizeKvmTrace(trace, new Set([205, 218]), 100), [
    'stall: kvm_exit over 100 ms: 3; 2× reason npf rip 0xffffffff8106b3c2 gpa 0x00000000fec00010; 1× reason hlt rip 0xffffffff81c0e1a4',
    'stall: kvm_emulate_insn over 100 ms: 2; 2× 0:ffffffff8106b3c2: 8b 07 (prot64)',
    'stall: kvm_msr over 100 ms: 2; 2× msr_write 6e0',
  ]);
  assert.deepEqual(summarizeKvmTrace(trace, new Set([7]), 100), ['stall: KVM trace over 100 ms: no exits']);
});
