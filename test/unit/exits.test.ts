/** Exit decoding over hand-built kvm_run bytes: readable, never throwing, registers included. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { VcpuExitError, cpuModeName, describeExit, formatCpuState } from '../../src/kvm/exits.js';
import { ExitReason, InternalSuberror, SystemEventType } from '../../src/kvm/constants.js';
import { RUN, decodeRegs, decodeSregs, emptyRegs, encodeRegs, encodeSregs, type Segment, type Sregs } from '../../src/kvm/structs.js';

/** A zeroed kvm_run area with `reason` set; `fill` writes the exit-specific fields. */
function runArea(reason: number, fill: (dv: DataView) => void = () => {}): DataView {
  const dv = new DataView(new ArrayBuffer(RUN.size));
  dv.setUint32(RUN.exitReason, reason, true);
  fill(dv);
  return dv;
}

function seg(fields: Partial<Segment> = {}): Segment {
  return { base: 0n, limit: 0xffff, selector: 0, type: 3, present: 1, dpl: 0, db: 0, s: 1, l: 0, g: 0, avl: 0, unusable: 0, ...fields };
}

function sregs(fields: Partial<Sregs> = {}): Sregs {
  return {
    cs: seg({ type: 11 }), ds: seg(), es: seg(), fs: seg(), gs: seg(), ss: seg(), tr: seg({ type: 11, s: 0 }), ldt: seg({ unusable: 1 }),
    gdt: { base: 0x500n, limit: 0x27 }, idt: { base: 0x520n, limit: 0 },
    cr0: 0x10n, cr2: 0n, cr3: 0n, cr4: 0n, cr8: 0n, efer: 0n, apicBase: 0xfee00900n,
    interruptBitmap: [0n, 0n, 0n, 0n],
    ...fields,
  };
}

test('INTERNAL_ERROR shows the suberror name, a hint and the data words', () => {
  const d = describeExit(runArea(ExitReason.INTERNAL_ERROR, (dv) => {
    dv.setUint32(RUN.internalSuberror, InternalSuberror.EMULATION, true);
    dv.setUint32(RUN.internalNdata, 3, true);
    dv.setBigUint64(RUN.internalData, 1n, true);
    dv.setBigUint64(RUN.internalData + 8, 2n, true);
    dv.setBigUint64(RUN.internalData + 16, 0xc70fn, true);
    dv.setBigUint64(RUN.internalData + 24, 0x999n, true); // beyond ndata: not shown
  }));
  assert.equal(d.reason, 17);
  assert.equal(d.name, 'KVM_EXIT_INTERNAL_ERROR (17)');
  assert.match(d.detail, /KVM_INTERNAL_ERROR_EMULATION/);
  assert.match(d.detail, /could not emulate/);
  assert.match(d.detail, /\[0x1, 0x2, 0xc70f\]/);
  assert.doesNotMatch(d.detail, /0x999/);
});

test('a corrupt ndata never reads past the 16 data words', () => {
  const d = describeExit(runArea(ExitReason.INTERNAL_ERROR, (dv) => {
    dv.setUint32(RUN.internalSuberror, 99, true);
    dv.setUint32(RUN.internalNdata, 0xffffffff, true);
  }));
  assert.match(d.detail, /KVM_INTERNAL_ERROR_\? \(99\)/);
  assert.equal(d.detail.match(/0x0/g)?.length, 16);
});

test('FAIL_ENTRY, SHUTDOWN, UNKNOWN, EXCEPTION and HLT are described', () => {
  const fail = describeExit(runArea(ExitReason.FAIL_ENTRY, (dv) => {
    dv.setBigUint64(RUN.failEntryReason, 0x80000021n, true);
    dv.setUint32(RUN.failEntryCpu, 1, true);
  }));
  assert.match(fail.detail, /hardware reason 0x80000021 on host CPU 1/);
  assert.match(fail.detail, /vCPU state is invalid/);
  assert.match(describeExit(runArea(ExitReason.SHUTDOWN)).detail, /triple fault/);
  assert.match(
    describeExit(runArea(ExitReason.UNKNOWN, (dv) => dv.setBigUint64(RUN.hwExitReason, 0x7bn, true))).detail,
    /hardware exit reason 0x7b/,
  );
  assert.match(
    describeExit(runArea(ExitReason.EXCEPTION, (dv) => {
      dv.setUint32(RUN.exException, 13, true);
      dv.setUint32(RUN.exErrorCode, 0x18, true);
    })).detail,
    /exception vector 13, error code 0x18/,
  );
  assert.match(describeExit(runArea(ExitReason.HLT)).detail, /HLT/);
});

test('SYSTEM_EVENT types are named', () => {
  const d = describeExit(runArea(ExitReason.SYSTEM_EVENT, (dv) => {
    dv.setUint32(RUN.systemEventType, SystemEventType.CRASH, true);
    dv.setUint32(RUN.systemEventNdata, 1, true);
    dv.setBigUint64(RUN.systemEventData, 0x42n, true);
  }));
  assert.equal(d.name, 'KVM_EXIT_SYSTEM_EVENT (24)');
  assert.match(d.detail, /KVM_SYSTEM_EVENT_CRASH; data \[0x42\]/);
});

test('IO and MMIO exits decode their fields', () => {
  const io = describeExit(runArea(ExitReason.IO, (dv) => {
    dv.setUint8(RUN.ioDirection, 1);
    dv.setUint8(RUN.ioSize, 2);
    dv.setUint16(RUN.ioPort, 0x3f8, true);
    dv.setUint32(RUN.ioCount, 1, true);
    dv.setBigUint64(RUN.ioDataOffset, 0x1000n, true);
  }));
  assert.equal(io.detail, 'OUT port 0x3f8, size 2, count 1, data offset 0x1000');
  const mmio = describeExit(runArea(ExitReason.MMIO, (dv) => {
    dv.setBigUint64(RUN.mmioPhysAddr, 0xd0000000n, true);
    dv.setUint32(RUN.mmioLen, 4, true);
    dv.setUint8(RUN.mmioIsWrite, 1);
    dv.setUint32(RUN.mmioData, 0xdeadbeef, true);
  }));
  assert.equal(mmio.detail, 'write of 4 bytes at GPA 0xd0000000 (data ef be ad de)');
});

test('unknown and unhandled reasons never throw', () => {
  assert.equal(describeExit(runArea(999)).name, 'unknown exit reason 999');
  assert.equal(describeExit(runArea(ExitReason.IRQ_WINDOW_OPEN)).detail, 'tsvmm does not handle this exit');
  assert.equal(describeExit(runArea(0xffffffff)).reason, 0xffffffff);
});

test('cpuModeName tells real, protected and long mode apart', () => {
  assert.equal(cpuModeName(sregs()), 'real mode');
  assert.equal(cpuModeName(sregs({ cr0: 0x11n, cs: seg({ db: 1 }) })), 'protected mode (32-bit)');
  assert.equal(cpuModeName(sregs({ cr0: 0x80000011n, cr4: 0x20n, cs: seg({ db: 1 }) })), 'protected mode (32-bit, PAE paging)');
  assert.equal(cpuModeName(sregs({ cr0: 0x80000011n, cr4: 0x20n, efer: 0x500n, cs: seg({ l: 1 }) })), 'long mode (64-bit)');
});

test('VcpuExitError.where names the vCPU, rip, mode and cr3 on one line, and what it lacks is left out', () => {
  const regs = { ...emptyRegs(), rip: 0xffffffff81000000n };
  const long = sregs({ cr0: 0x80000011n, cr4: 0x20n, efer: 0x500n, cs: seg({ l: 1 }), cr3: 0x102498000n });
  const e = new VcpuExitError(1, describeExit(runArea(ExitReason.SHUTDOWN)), regs, long);
  assert.equal(e.where, 'vCPU 1 at rip 0xffffffff81000000 (long mode (64-bit), cr3 0x102498000)');
  assert.equal(new VcpuExitError(0, describeExit(runArea(ExitReason.SHUTDOWN))).where, 'vCPU 0');
});

test("VcpuExitError.where says so when KVM had already reset the vCPU (AMD's shutdown intercept), rather than blame the reset vector", () => {
  const reset = sregs({ cs: seg({ base: 0xffff0000n, selector: 0xf000 }) });
  const e = new VcpuExitError(1, describeExit(runArea(ExitReason.SHUTDOWN)), { ...emptyRegs(), rip: 0xfff0n }, reset);
  assert.match(e.where, /^vCPU 1 \(its registers were already reset: KVM on AMD re-initializes a vCPU after a shutdown/);
  assert.doesNotMatch(e.where, /rip 0xfff0/);
  // The same rip in a protected-mode code segment is a real place, reported as such.
  const flat = sregs({ cr0: 0x11n, cs: seg({ db: 1 }) });
  assert.equal(new VcpuExitError(1, describeExit(runArea(ExitReason.SHUTDOWN)), { ...emptyRegs(), rip: 0xfff0n }, flat).where, 'vCPU 1 at rip 0xfff0 (protected mode (32-bit), cr3 0x0)');
});

test('VcpuExitError carries the exit and a register dump; missing registers are said so', () => {
  const regs = { ...emptyRegs(), rip: 0xffffffff81000000n, rsp: 0x8ff0n };
  const e = new VcpuExitError(2, describeExit(runArea(ExitReason.SHUTDOWN)), regs, sregs({ cr3: 0x9000n }));
  assert.ok(e instanceof Error);
  assert.equal(e.name, 'VcpuExitError');
  assert.equal(e.vcpuId, 2);
  assert.equal(e.exitReason, ExitReason.SHUTDOWN);
  assert.match(e.message, /^vCPU 2 stopped on KVM_EXIT_SHUTDOWN \(8\): triple fault/);
  assert.match(e.message, /rip 0xffffffff81000000  rsp 0x8ff0  rflags 0x2/);
  assert.match(e.message, /cr0 0x10 .* cr3 0x9000 .* efer 0x0/);
  assert.match(e.message, /cs 0x0 \(base 0x0 limit 0xffff type 11/);
  assert.match(e.message, /mode real mode/);
  assert.match(formatCpuState(undefined, undefined), /registers unavailable/);
});

test('regs and sregs survive an encode/decode round trip at the kernel offsets', () => {
  const regs = { ...emptyRegs(), rax: 1n, r15: 0xffffffffffffffffn, rip: 0x1000n, rflags: 0x202n };
  const rb = encodeRegs(regs);
  assert.equal(rb.length, 144);
  assert.equal(new DataView(rb.buffer).getBigUint64(128, true), 0x1000n); // rip at 16 * 8
  assert.deepEqual(decodeRegs(rb), regs);
  const s = sregs({ cs: seg({ selector: 0x10, base: 0xffff0000n, l: 1, type: 11 }), efer: 0x500n, cr3: 0x9000n });
  const sb = encodeSregs(s);
  assert.equal(sb.length, 312);
  const dv = new DataView(sb.buffer);
  assert.equal(dv.getUint16(12, true), 0x10); // cs.selector
  assert.equal(dv.getUint8(19), 1); // cs.l
  assert.equal(dv.getBigUint64(240, true), 0x9000n); // cr3
  assert.equal(dv.getBigUint64(264, true), 0x500n); // efer
  assert.deepEqual(decodeSregs(sb), s);
});
