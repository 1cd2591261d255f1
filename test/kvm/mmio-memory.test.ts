/** MMIO exits reach MMIO-bus devices; guest stores land in RAM on both sides of the MMIO hole. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Machine } from '../../src/vmm/machine.js';
import { enterLongMode64, enterProtectedMode32 } from '../../src/vmm/cpu-modes.js';
import { GiB, MiB } from '../../src/memory/layout.js';
import { RecordingDevice, le32, le64, withTimeout } from './harness.js';

const CODE = 0x1000;

test('32-bit MMIO writes and reads reach the MMIO bus device in the hole', async () => {
  const m = Machine.create({ memory: { ramBytes: 4 * MiB }, irqchip: false });
  try {
    const DEV = 0xd000_0000; // inside the default [3 GiB, 4 GiB) hole: no RAM, so every access exits
    // prettier-ignore
    const code = [
      0xc7, 0x05, ...le32(DEV), ...le32(0xdeadbeef),   // mov dword [DEV], 0xdeadbeef
      0xa1, ...le32(DEV + 4),                          // mov eax, [DEV + 4]
      0xa3, ...le32(0x2000),                           // mov [0x2000], eax
      0x66, 0xc7, 0x05, ...le32(DEV + 8), 0xcd, 0xab,  // mov word [DEV + 8], 0xabcd
      0xf4,                                            // hlt
    ];
    m.memory.write(CODE, Uint8Array.from(code));
    const dev = new RecordingDevice(0x11223344);
    m.mmioBus.insert(DEV, 0x1000, dev, 'test device');
    enterProtectedMode32(m.vcpu(0), { eip: CODE });
    m.start();
    assert.deepEqual(await withTimeout(m.waitForExit(), 20_000, 'the guest to halt'), { reason: 'hlt', vcpuId: 0 });
    assert.deepEqual(dev.writes, [
      { offset: 0, bytes: [0xef, 0xbe, 0xad, 0xde] },
      { offset: 8, bytes: [0xcd, 0xab] },
    ]);
    assert.deepEqual(dev.reads, [{ offset: 4, bytes: [0x44, 0x33, 0x22, 0x11] }]);
    assert.equal(m.memory.readU32(0x2000), 0x11223344);
    assert.equal(m.exitCounts()[0]!.mmio, 3);
  } finally {
    await m.close();
  }
});

test('a 64-bit guest writes RAM below and above the MMIO hole (3 GiB + 64 MiB of lazily mapped RAM)', async () => {
  // 3 GiB + 64 MiB puts 64 MiB above 4 GiB; MAP_NORESERVE keeps the untouched part free.
  const m = Machine.create({ memory: { ramBytes: 3 * GiB + 64 * MiB }, irqchip: false });
  try {
    const HIGH = 4 * GiB + 0x1000;
    const LOW = 3 * GiB - 0x1000; // last page below the hole
    // prettier-ignore
    const code = [
      0x48, 0xb8, ...le64(HIGH),            // mov rax, HIGH
      0xc7, 0x00, ...le32(0xcafef00d),      // mov dword [rax], 0xcafef00d
      0x8b, 0x58, 0x04,                     // mov ebx, [rax + 4]    (a value the host put there)
      0x89, 0xd8,                           // mov eax, ebx
      0xba, ...le32(0x10),                  // mov edx, 0x10
      0xef,                                 // out dx, eax           (report it)
      0x48, 0xb9, ...le64(LOW),             // mov rcx, LOW
      0xc7, 0x01, ...le32(0x12345678),      // mov dword [rcx], 0x12345678
      0xf4,                                 // hlt
    ];
    m.memory.write(CODE, Uint8Array.from(code));
    m.memory.writeU32(HIGH + 4, 0x0badcafe);
    const port = new RecordingDevice();
    m.ioBus.insert(0x10, 4, port, 'report');
    enterLongMode64(m.vcpu(0), m.memory, { rip: CODE, tablesGpa: 0x10000, mapGib: 5 });
    m.start();
    assert.deepEqual(await withTimeout(m.waitForExit(), 20_000, 'the guest to halt'), { reason: 'hlt', vcpuId: 0 });
    assert.deepEqual(port.writes, [{ offset: 0, bytes: le32(0x0badcafe) }]);
    assert.equal(m.memory.readU32(HIGH), 0xcafef00d);
    assert.equal(m.memory.readU32(LOW), 0x12345678);
  } finally {
    await m.close();
  }
});
