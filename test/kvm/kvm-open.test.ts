/** /dev/kvm opens, reports what we need, and a missing device gives an actionable error. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Kvm } from '../../src/kvm/kvm.js';
import { KvmUnavailableError } from '../../src/kvm/errors.js';
import { MpState } from '../../src/kvm/constants.js';

test('Kvm.open checks the API version and capabilities', () => {
  const kvm = Kvm.open();
  try {
    assert.ok(kvm.vcpuMmapSize >= 2 * 4096, `vcpu mmap size ${kvm.vcpuMmapSize}`);
    assert.ok(kvm.checkExtension('NR_MEMSLOTS') >= 32);
    const cpuid = kvm.getSupportedCpuid();
    assert.ok(cpuid.length > 10, `only ${cpuid.length} CPUID entries`);
    assert.ok(cpuid.some((e) => e.function === 0));
  } finally {
    kvm.close();
  }
});

test('a missing /dev/kvm says what to do', () => {
  assert.throws(() => Kvm.open('/nonexistent/kvm'), (e: unknown) => {
    assert.ok(e instanceof KvmUnavailableError);
    assert.match(e.message, /does not exist.*kvm_intel or kvm_amd/);
    return true;
  });
});

test('a vCPU with the in-kernel irqchip takes CPUID, MSRs, LAPIC and MP state', () => {
  const kvm = Kvm.open();
  const vm = kvm.createVm();
  try {
    vm.setTssAddr();
    vm.setIdentityMapAddr();
    vm.createIrqchip();
    vm.createPit2();
    const vcpu = vm.createVcpu(0);
    try {
      vcpu.setCpuid2(kvm.getSupportedCpuid());
      assert.ok(vcpu.getCpuid2().length > 10);
      const IA32_SYSENTER_CS = 0x174;
      vcpu.setMsrs([{ index: IA32_SYSENTER_CS, data: 0x10n }]);
      assert.deepEqual(vcpu.getMsrs([IA32_SYSENTER_CS]), [{ index: IA32_SYSENTER_CS, data: 0x10n }]);
      const lapic = vcpu.getLapic();
      assert.equal(lapic.length, 1024);
      vcpu.setLapic(lapic);
      assert.equal(vcpu.getMpState(), MpState.RUNNABLE); // the BSP starts runnable
      const regs = vcpu.getRegs();
      assert.equal(regs.rip, 0xfff0n); // x86 reset vector offset
      vcpu.updateRegs({ rax: 0x1234n });
      assert.equal(vcpu.getRegs().rax, 0x1234n);
      const fpu = vcpu.getFpu();
      vcpu.setFpu(fpu);
      vm.irqLine(4, true);
      vm.irqLine(4, false);
      assert.equal(typeof vm.signalMsi({ addressLo: 0xfee00000, addressHi: 0, data: 0x30 }), 'boolean');
      vm.setGsiRouting([
        { gsi: 4, kind: 'irqchip', irqchip: 2, pin: 4 },
        { gsi: 24, kind: 'msi', addressLo: 0xfee00000, addressHi: 0, data: 0x31 },
      ]);
    } finally {
      vcpu.close();
    }
  } finally {
    vm.close();
    kvm.close();
  }
});
