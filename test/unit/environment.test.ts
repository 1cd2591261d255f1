/** Virtualization detection for each kind of machine, described through a fake HostProbe. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { detectVirtualization, systemProbe, type HostProbe, type KvmDeviceProbe } from '../../src/host/environment.js';
import { explainNestedHost } from '../../src/host/nested.js';

function machine(opts: { flags: string[]; modules: string[]; device: KvmDeviceProbe }): HostProbe {
  return {
    readCpuInfo: () => `processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu vme ${opts.flags.join(' ')} sse2\n\nprocessor\t: 1\n`,
    hasModule: (name) => opts.modules.includes(name),
    probeKvmDevice: () => opts.device,
  };
}

const OPEN: KvmDeviceProbe = { exists: true, openable: true };
const MISSING: KvmDeviceProbe = { exists: false, openable: false, errorCode: 'ENOENT' };

test('hardware KVM (AMD-V, kvm_amd, usable /dev/kvm) runs everything directly', () => {
  const env = detectVirtualization(machine({ flags: ['svm'], modules: ['kvm', 'kvm_amd'], device: OPEN }));
  assert.equal(env.kind, 'hardware');
  assert.equal(env.kvmDevice, true);
  assert.equal(env.canRunStockLinux, true);
  assert.equal(env.canRunTinyGuests, true);
  assert.equal(env.needsNestedHost, false);
  assert.equal(env.details.hardwareExtension, 'svm');
  assert.match(env.summary, /AMD-V.*directly/);
  assert.match(explainNestedHost(env), /not needed/i);
});

test('VT-x with the API version checked', () => {
  const env = detectVirtualization(machine({ flags: ['vmx'], modules: ['kvm_intel'], device: { ...OPEN, apiVersion: 12 } }));
  assert.equal(env.kind, 'hardware');
  assert.match(env.summary, /VT-x/);
});

test('PVM /dev/kvm: tiny guests yes, stock Linux through the nested host', () => {
  const env = detectVirtualization(machine({ flags: ['hypervisor'], modules: ['kvm', 'kvm_pvm'], device: OPEN }));
  assert.equal(env.kind, 'pvm');
  assert.equal(env.kvmDevice, true);
  assert.equal(env.canRunTinyGuests, true);
  assert.equal(env.canRunStockLinux, false);
  assert.equal(env.needsNestedHost, true);
  assert.equal(
    env.summary,
    "This machine's /dev/kvm is PVM (no VT-x/AMD-V): tiny guests run directly, but stock Linux guests need hardware virtualization, so tsvmm runs them inside a nested QEMU-emulated host (slower, but real guests still boot).",
  );
  assert.match(explainNestedHost(env), /PVM/);
});

test('kvm_pvm loaded but no /dev/kvm (a PVM guest itself): nested host for everything', () => {
  const env = detectVirtualization(machine({ flags: ['hypervisor'], modules: ['kvm', 'kvm_pvm'], device: MISSING }));
  assert.equal(env.kind, 'none');
  assert.equal(env.kvmDevice, false);
  assert.equal(env.canRunTinyGuests, false);
  assert.equal(env.canRunStockLinux, false);
  assert.equal(env.needsNestedHost, true);
  assert.equal(env.details.kvmPvmModule, true);
  assert.match(env.summary, /^No \/dev\/kvm here \(kvm_pvm is loaded but offers no device/);
  assert.match(explainNestedHost(env), /no usable \/dev\/kvm/);
});

test('no KVM at all', () => {
  const env = detectVirtualization(machine({ flags: [], modules: [], device: MISSING }));
  assert.equal(env.kind, 'none');
  assert.equal(env.needsNestedHost, true);
  assert.match(env.summary, /^No KVM on this machine/);
});

test('VT-x present but KVM not loaded: says which module to load', () => {
  const env = detectVirtualization(machine({ flags: ['vmx'], modules: [], device: MISSING }));
  assert.equal(env.kind, 'none');
  assert.match(env.summary, /modprobe kvm_intel/);
});

test('/dev/kvm without permission: says how to get it', () => {
  const env = detectVirtualization(machine({ flags: ['svm'], modules: ['kvm_amd'], device: { exists: true, openable: false, errorCode: 'EACCES' } }));
  assert.equal(env.kind, 'none');
  assert.equal(env.kvmDevice, false);
  assert.match(env.summary, /kvm group/);
});

test('an unexpected KVM API version is not usable', () => {
  const env = detectVirtualization(machine({ flags: ['svm'], modules: ['kvm_amd'], device: { ...OPEN, apiVersion: 11 } }));
  assert.equal(env.kind, 'none');
  assert.match(env.summary, /API version 11/);
});

test('the real machine is detected without throwing and gives one sentence', () => {
  const env = detectVirtualization(systemProbe());
  assert.ok(['hardware', 'pvm', 'none'].includes(env.kind));
  assert.equal(env.summary.split('\n').length, 1);
  assert.ok(env.summary.endsWith('.'));
});
