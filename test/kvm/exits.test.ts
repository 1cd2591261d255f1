/** Exits the VMM cannot handle end the run with a readable VcpuExitError, never a hang. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Machine } from '../../src/vmm/machine.js';
import { enterProtectedMode32 } from '../../src/vmm/cpu-modes.js';
import { VcpuExitError } from '../../src/kvm/exits.js';
import { ExitReason } from '../../src/kvm/constants.js';
import { MiB } from '../../src/memory/layout.js';
import { withTimeout } from './harness.js';

test('a triple fault becomes a VcpuExitError naming KVM_EXIT_SHUTDOWN with the registers', async () => {
  const m = Machine.create({ memory: { ramBytes: 2 * MiB }, irqchip: false });
  try {
    m.memory.write(0x1000, Uint8Array.from([
      0x0f, 0x0b, // ud2: #UD, but the IDT is empty, so #GP, then #DF, then triple fault
    ]));
    const vcpu = m.vcpu(0);
    enterProtectedMode32(vcpu, { eip: 0x1000, esp: 0x8000 });
    const s = vcpu.getSregs();
    s.idt = { base: 0n, limit: 0 };
    vcpu.setSregs(s);
    m.start();
    await assert.rejects(withTimeout(m.waitForExit(), 20_000, 'the triple fault'), (e: unknown) => {
      assert.ok(e instanceof VcpuExitError, `got ${String(e)}`);
      assert.equal(e.exitReason, ExitReason.SHUTDOWN);
      assert.equal(e.vcpuId, 0);
      assert.match(e.message, /KVM_EXIT_SHUTDOWN/);
      assert.match(e.message, /triple fault/);
      assert.match(e.message, /rip 0x/);
      assert.match(e.message, /cr0 0x/);
      // No check of the mode: on AMD, KVM resets the vCPU on a shutdown intercept, so the
      // registers read afterwards are the reset state.
      return true;
    });
  } finally {
    await m.close();
  }
});

test('executing from the MMIO hole becomes a readable KVM_EXIT_INTERNAL_ERROR, not a hang', async () => {
  const m = Machine.create({ memory: { ramBytes: 2 * MiB }, irqchip: false });
  try {
    // prettier-ignore
    m.memory.write(0x1000, Uint8Array.from([
      0xb8, 0x00, 0x00, 0x00, 0xd0, // mov eax, 0xd0000000   (no RAM there: the MMIO hole)
      0xff, 0xe0,                   // jmp eax               (KVM cannot fetch instructions from MMIO)
    ]));
    enterProtectedMode32(m.vcpu(0), { eip: 0x1000 });
    m.start();
    await assert.rejects(withTimeout(m.waitForExit(), 20_000, 'the emulation failure'), (e: unknown) => {
      assert.ok(e instanceof VcpuExitError, `got ${String(e)}`);
      assert.equal(e.exitReason, ExitReason.INTERNAL_ERROR, e.message);
      assert.match(e.message, /KVM_EXIT_INTERNAL_ERROR/);
      assert.match(e.message, /KVM_INTERNAL_ERROR_EMULATION/);
      assert.match(e.message, /rip 0xd0000000/);
      assert.match(e.message, /protected mode \(32-bit\)/);
      return true;
    });
  } finally {
    await m.close();
  }
});
