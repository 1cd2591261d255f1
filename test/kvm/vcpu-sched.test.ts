/**
 * TSVMM_VCPU_SCHED: by default (or with `batch`) every vCPU thread runs under SCHED_BATCH, and no
 * other thread of the process does; with `normal` they stay SCHED_OTHER.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { Machine } from '../../src/vmm/machine.js';
import { enterRealMode } from '../../src/vmm/cpu-modes.js';
import { MiB } from '../../src/memory/layout.js';
import { SCHED_BATCH } from '../../src/kvm/libc.js';
import { EnvironmentSettingError } from '../../src/util/env-choice.js';
import { sleep, until, withTimeout } from './harness.js';

const COUNTER = 0x3000;

/**
 * The scheduling policy of every thread of this process (field 41 of /proc/self/task/TID/stat),
 * but KVM's own workers: the kernel starts kvm-nx-lpage-recovery in the VM's process when a vCPU
 * first runs (newer kernels), so it takes that vCPU thread's policy.
 */
function threadPolicies(): number[] {
  const policies: number[] = [];
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      if (readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').startsWith('kvm-')) continue;
      const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
      // Fields after the command name (which may hold spaces) start at field 3.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      policies.push(Number(fields[41 - 3]));
    } catch {
      // A thread that ended meanwhile.
    }
  }
  return policies;
}

/** Run `body` with TSVMM_VCPU_SCHED set to `setting` (unset for undefined), then restore it. */
async function withVcpuSched<T>(setting: string | undefined, body: () => T | Promise<T>): Promise<T> {
  const saved = process.env['TSVMM_VCPU_SCHED'];
  if (setting === undefined) delete process.env['TSVMM_VCPU_SCHED'];
  else process.env['TSVMM_VCPU_SCHED'] = setting;
  try {
    return await body();
  } finally {
    if (saved === undefined) delete process.env['TSVMM_VCPU_SCHED'];
    else process.env['TSVMM_VCPU_SCHED'] = saved;
  }
}

async function batchThreadsWhileRunning(setting: string | undefined): Promise<number> {
  return withVcpuSched(setting, async () => {
    const m = Machine.create({ memory: { ramBytes: 2 * MiB }, vcpuCount: 2, irqchip: false });
    try {
      // Each vCPU counts in a dword of its own: vCPU n runs `loop: inc dword [0x3000 + 4n]; jmp loop`.
      for (let n = 0; n < 2; n++) {
        m.memory.write(0x1000 + 0x100 * n, Uint8Array.from([0x66, 0xff, 0x06, 4 * n, COUNTER >> 8, 0xeb, 0xf9]));
        enterRealMode(m.vcpu(n), { cs: 0, ip: 0x1000 + 0x100 * n });
      }
      m.start();
      // Each worker sets its policy before it enters the guest: once both count, both have.
      const started = (): boolean => m.memory.readU32(COUNTER) > 0 && m.memory.readU32(COUNTER + 4) > 0;
      await withTimeout(until(started), 20_000, 'the guest to start counting');
      await sleep(200);
      return threadPolicies().filter((p) => p === SCHED_BATCH).length;
    } finally {
      await withTimeout(m.stop(), 5_000, 'stop');
      await m.close();
    }
  });
}

test('by default (or =batch) each vCPU thread, and only those, runs under SCHED_BATCH', async () => {
  assert.equal(await batchThreadsWhileRunning(undefined), 2);
  assert.equal(await batchThreadsWhileRunning('batch'), 2);
});

test('TSVMM_VCPU_SCHED=normal leaves every thread SCHED_OTHER', async () => {
  assert.equal(await batchThreadsWhileRunning('normal'), 0);
});

test('a misspelt TSVMM_VCPU_SCHED fails the machine\'s creation with a one-line EnvironmentSettingError', async () => {
  await withVcpuSched('Batch', () =>
    assert.throws(
      () => Machine.create({ memory: { ramBytes: 2 * MiB }, irqchip: false }),
      (e: unknown) => e instanceof EnvironmentSettingError && !e.message.includes('\n') && e.message.startsWith('TSVMM_VCPU_SCHED=Batch'),
    ),
  );
});
