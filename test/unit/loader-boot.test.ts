/**
 * Both boot paths end to end on the real Debian kernel, into a plain buffer: what a VMM does
 * before the first KVM_RUN, checked by reading guest memory back through the structures' pointers.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { writeBootParams } from '../../src/arch/x86_64/boot-params.js';
import { buildE820Map } from '../../src/arch/x86_64/e820.js';
import { ACPI_RSDP_ADDR, MiB, ZERO_PAGE_START, guestRamRegions } from '../../src/arch/x86_64/layout.js';
import { writePvhStartInfo } from '../../src/arch/x86_64/pvh.js';
import { loadBzImage } from '../../src/loader/bzimage.js';
import { writeCmdline } from '../../src/loader/cmdline.js';
import { loadElfKernel } from '../../src/loader/elf.js';
import { BufferGuestMemory } from '../../src/loader/guest-memory.js';
import { loadInitrd } from '../../src/loader/initrd.js';
import { debianCloudKernel, debianCloudVmlinux } from './loader-fixtures.js';

const CMDLINE = 'console=ttyS0 quiet panic=-1';
const INITRD = new Uint8Array(3 * MiB + 11).map((_, i) => i * 7);

test('bzImage path: kernel, initrd, command line and zero page agree', () => {
  const { image } = debianCloudKernel();
  const ram = guestRamRegions(256 * MiB);
  const mem = new BufferGuestMemory(ram);
  const kernel = loadBzImage(image, mem, ram);
  const initrd = loadInitrd(mem, INITRD, { ram, kernel: kernel.reserved, addrMax: image.header.initrdAddrMax });
  const cmdline = writeCmdline(mem, CMDLINE, image.header.cmdlineSize);
  const rsi = writeBootParams(mem, { setupHeader: image.setupHeaderBytes, cmdline, initrd, e820: buildE820Map(ram), rsdpAddr: ACPI_RSDP_ADDR });
  assert.equal(rsi, ZERO_PAGE_START);
  assert.equal(kernel.entry64, 0x1000200);
  const zp = new DataView(mem.read(rsi, 4096).buffer);
  const cmdPtr = zp.getUint32(0x228, true);
  assert.equal(Buffer.from(mem.read(cmdPtr, CMDLINE.length + 1)).toString('latin1'), `${CMDLINE}\0`);
  const rdPtr = zp.getUint32(0x218, true);
  const rdLen = zp.getUint32(0x21c, true);
  assert.equal(rdLen, INITRD.length);
  assert.ok(rdPtr + rdLen - 1 <= image.header.initrdAddrMax);
  assert.deepEqual(mem.read(rdPtr, rdLen), INITRD);
  assert.equal(rdPtr + rdLen <= 256 * MiB && rdPtr >= kernel.reserved.end, true);
});

test('PVH path: extracted vmlinux, initrd module and start_info agree', () => {
  const { kernel: elf } = debianCloudVmlinux();
  const ram = guestRamRegions(256 * MiB);
  const mem = new BufferGuestMemory(ram);
  const kernel = loadElfKernel(elf, mem, ram);
  assert.ok(kernel.pvhEntry !== undefined);
  const initrd = loadInitrd(mem, INITRD, { ram, kernel: kernel.reserved });
  const cmdline = writeCmdline(mem, CMDLINE);
  const ebx = writePvhStartInfo(mem, { cmdline, modules: [initrd], memoryMap: buildE820Map(ram), rsdpAddr: ACPI_RSDP_ADDR });
  const si = new DataView(mem.read(ebx, 56).buffer);
  const mod = new DataView(mem.read(Number(si.getBigUint64(16, true)), 32).buffer);
  assert.deepEqual(mem.read(Number(mod.getBigUint64(0, true)), Number(mod.getBigUint64(8, true))), INITRD);
  assert.equal(Buffer.from(mem.read(Number(si.getBigUint64(24, true)), CMDLINE.length)).toString('latin1'), CMDLINE);
});
