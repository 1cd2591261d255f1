/** Real-mode guests doing port I/O: OUT reaches the right device, IN returns the device's value. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Machine } from '../../src/vmm/machine.js';
import { enterRealMode } from '../../src/vmm/cpu-modes.js';
import { EventFd } from '../../src/kvm/eventfd.js';
import { MiB } from '../../src/memory/layout.js';
import { RecordingDevice, withTimeout } from './harness.js';

const CODE = 0x1000;

test('OUT and IN reach port devices with the right data, string I/O included, then HLT stops', async () => {
  const m = Machine.create({ memory: { ramBytes: 2 * MiB }, irqchip: false });
  try {
    // prettier-ignore
    const code = [
      0xb0, 0x42,             // mov al, 0x42
      0xe6, 0x10,             // out 0x10, al
      0xe4, 0x11,             // in al, 0x11         (device answers 0x5a)
      0xe6, 0x12,             // out 0x12, al        (echo it back)
      0xb8, 0x34, 0x12,       // mov ax, 0x1234
      0xba, 0x20, 0x00,       // mov dx, 0x0020
      0xef,                   // out dx, ax          (16-bit write to port 0x20)
      0x66, 0xed,             // in eax, dx          (32-bit read from port 0x20)
      0x66, 0xa3, 0x00, 0x20, // mov [0x2000], eax
      0xbe, 0x00, 0x11,       // mov si, 0x1100
      0xb9, 0x03, 0x00,       // mov cx, 3
      0xba, 0x30, 0x00,       // mov dx, 0x0030
      0xf3, 0x6e,             // rep outsb           (3 bytes from ds:si to port 0x30)
      0xf4,                   // hlt
    ];
    m.memory.write(CODE, Uint8Array.from(code));
    m.memory.write(0x1100, Uint8Array.from([0x61, 0x62, 0x63])); // "abc"
    const p10 = new RecordingDevice();
    const p11 = new RecordingDevice(0x5a);
    const p12 = new RecordingDevice();
    const p20 = new RecordingDevice(0xa1b2c3d4);
    const p30 = new RecordingDevice();
    m.ioBus.insert(0x10, 1, p10, 'p10');
    m.ioBus.insert(0x11, 1, p11, 'p11');
    m.ioBus.insert(0x12, 1, p12, 'p12');
    m.ioBus.insert(0x20, 4, p20, 'p20');
    m.ioBus.insert(0x30, 1, p30, 'p30');
    enterRealMode(m.vcpu(0), { cs: 0, ip: CODE });
    m.start();
    const exit = await withTimeout(m.waitForExit(), 20_000, 'the guest to halt');
    assert.deepEqual(exit, { reason: 'hlt', vcpuId: 0 });
    assert.deepEqual(p10.writes, [{ offset: 0, bytes: [0x42] }]);
    assert.equal(p11.reads.length, 1);
    assert.deepEqual(p12.writes, [{ offset: 0, bytes: [0x5a] }]);
    assert.deepEqual(p20.writes, [{ offset: 0, bytes: [0x34, 0x12] }]);
    assert.deepEqual(p20.reads, [{ offset: 0, bytes: [0xd4, 0xc3, 0xb2, 0xa1] }]);
    assert.equal(m.memory.readU32(0x2000), 0xa1b2c3d4);
    assert.deepEqual(p30.writes.map((w) => w.bytes[0]), [0x61, 0x62, 0x63]);
    assert.ok(m.exitCounts()[0]!.io >= 6);
  } finally {
    await m.close();
  }
});

test('with the in-kernel irqchip, an ioeventfd swallows its port write and a device can end the run', async () => {
  const m = Machine.create({ memory: { ramBytes: 2 * MiB } });
  const doorbell = new EventFd();
  try {
    // prettier-ignore
    const code = [
      0xb0, 0x01,       // mov al, 1
      0xba, 0x00, 0x05, // mov dx, 0x500
      0xee,             // out dx, al     (ioeventfd: KVM signals the eventfd, no exit)
      0x42,             // inc dx
      0xee,             // out dx, al     (port 0x501, exit device: asks the VMM to end the run)
      0xf4,             // hlt            (handled in the kernel: the vCPU just sleeps)
      0xeb, 0xfd,       // jmp hlt
    ];
    m.memory.write(CODE, Uint8Array.from(code));
    // Not 0x40-0x43: the in-kernel PIT owns those ports and would swallow the writes.
    const p500 = new RecordingDevice();
    const p501 = new RecordingDevice();
    p501.onWrite = () => m.requestExit('requested', 'guest wrote the exit port');
    m.ioBus.insert(0x500, 1, p500, 'p500');
    m.ioBus.insert(0x501, 1, p501, 'p501');
    m.vm.registerIoeventfd({ fd: doorbell.fd, addr: 0x500, len: 1, pio: true });
    enterRealMode(m.vcpu(0), { cs: 0, ip: CODE });
    m.start();
    const exit = await withTimeout(m.waitForExit(), 20_000, 'the exit device');
    assert.deepEqual(exit, { reason: 'requested', detail: 'guest wrote the exit port' });
    assert.equal(doorbell.consume(), 1n);
    assert.deepEqual(p500.writes, [], 'the ioeventfd port write must not reach the bus');
    assert.equal(p501.writes.length, 1);
    m.vm.unregisterIoeventfd({ fd: doorbell.fd, addr: 0x500, len: 1, pio: true });
  } finally {
    await m.close();
    doorbell.close();
  }
});

test('each exit is handled exactly once and in order (2000 back-to-back OUTs)', async () => {
  const m = Machine.create({ memory: { ramBytes: 2 * MiB }, irqchip: false });
  try {
    // prettier-ignore
    const code = [
      0x31, 0xc0,       // xor ax, ax
      0xb9, 0xd0, 0x07, // mov cx, 2000
      0xe7, 0x10,       // next: out 0x10, ax
      0x40,             //       inc ax
      0xe2, 0xfb,       //       loop next
      0xf4,             // hlt
    ];
    m.memory.write(CODE, Uint8Array.from(code));
    const seen: number[] = [];
    m.ioBus.insert(0x10, 2, { read: () => {}, write: (_off, data) => seen.push(data[0]! | (data[1]! << 8)) }, 'sequence');
    enterRealMode(m.vcpu(0), { cs: 0, ip: CODE });
    m.start();
    assert.deepEqual(await withTimeout(m.waitForExit(), 60_000, 'the guest to halt'), { reason: 'hlt', vcpuId: 0 });
    assert.equal(seen.length, 2000);
    assert.ok(seen.every((v, i) => v === i), 'OUT values must arrive once each, in order');
  } finally {
    await m.close();
  }
});
