/**
 * The VMM side of virtio-pci without KVM: the eventfd poller (real eventfds and epoll, which need
 * no /dev/kvm), and the wiring that moves ioeventfds with BAR 0 and sends MSI-X messages, against
 * a VM that records its calls.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SharedIrqLines } from '../../src/devices/irq.js';
import { VirtioRng } from '../../src/devices/virtio/rng.js';
import { EventFd } from '../../src/kvm/eventfd.js';
import { read, write } from '../../src/kvm/libc.js';
import type { IrqRoute, Msi } from '../../src/kvm/structs.js';
import type { IoeventfdSpec } from '../../src/kvm/vm.js';
import { EventFdPoller } from '../../src/vmm/eventfd-poller.js';
import { VirtioPciDevices, type VirtioPciVm } from '../../src/vmm/virtio-pci-wiring.js';
import { F_EVENT_IDX, F_INDIRECT_DESC, F_VERSION_1, MSI_ADDRESS, TestMachine, VirtioPciDriver } from '../support/virtio-driver.js';
import { featureBit } from '../../src/devices/virtio/device.js';

const bit = featureBit;
const MODERN = bit(F_VERSION_1) | bit(F_EVENT_IDX) | bit(F_INDIRECT_DESC);
const PCI_COMMAND = 0x04;
const PCI_BAR0 = 0x10;
const PCI_COMMAND_MEMORY = 0x2;

/** Resolves when `predicate` holds, checking after each turn of the event loop (bounded). */
async function until(predicate: () => boolean, what: string, timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

class RecordingVm implements VirtioPciVm {
  readonly ioeventfds = new Map<string, IoeventfdSpec>();
  readonly msis: Msi[] = [];
  registerIoeventfd(spec: IoeventfdSpec): void {
    const key = `${spec.addr}/${spec.len}/${String(spec.datamatch)}`;
    if (this.ioeventfds.has(key)) throw new Error('EEXIST');
    this.ioeventfds.set(key, { ...spec });
  }
  unregisterIoeventfd(spec: IoeventfdSpec): void {
    const key = `${spec.addr}/${spec.len}/${String(spec.datamatch)}`;
    if (!this.ioeventfds.delete(key)) throw new Error('ENOENT');
  }
  routes: readonly IrqRoute[] = [];
  readonly irqfds = new Map<number, number>();
  signalMsi(msi: Msi): boolean {
    this.msis.push({ ...msi });
    return true;
  }
  setGsiRouting(routes: readonly IrqRoute[]): void {
    this.routes = routes.map((r) => ({ ...r }));
  }
  registerIrqfd(fd: number, gsi: number): void {
    this.irqfds.set(fd, gsi);
  }
  unregisterIrqfd(fd: number, gsi: number): void {
    assert.equal(this.irqfds.get(fd), gsi);
    this.irqfds.delete(fd);
  }
  only(): IoeventfdSpec {
    assert.equal(this.ioeventfds.size, 1, 'one ioeventfd registered');
    return [...this.ioeventfds.values()][0]!;
  }
}

function wired() {
  const machine = new TestMachine();
  const vm = new RecordingVm();
  const poller = new EventFdPoller();
  const warnings: string[] = [];
  const devices = new VirtioPciDevices({ vm, memory: machine.memory, pci: machine.pci, poller, onWarning: (m) => warnings.push(m) });
  const rng = new VirtioRng();
  const transport = devices.add(rng);
  const slot = machine.pci.devices().find((d) => d.fn === transport)!.slot;
  return { machine, vm, poller, devices, rng, transport, slot, warnings };
}

test('the poller calls the handler when its eventfd is signalled, once per batch, and close() ends the wait', async () => {
  const poller = new EventFdPoller();
  const fd = new EventFd();
  let calls = 0;
  poller.add(fd, () => calls++);
  poller.start();
  fd.signal();
  await until(() => calls === 1, 'the first signal');
  fd.signal();
  fd.signal();
  await until(() => calls >= 2, 'the second batch');
  await new Promise((r) => setTimeout(r, 20));
  assert.ok(calls === 2 || calls === 3, `two signals before a wake-up coalesce (got ${calls} calls)`);
  // On the main loop the poller reads the counter; in its epoll set (the held wait) the eventfd is
  // edge-triggered and never read, so all three signals are still counted.
  assert.equal(fd.consume(), poller.waitsOn === 'main-loop' ? 0n : 3n, 'the counter is drained only on the main loop');
  await poller.close();
  fd.signal();
  await new Promise((r) => setTimeout(r, 20));
  assert.ok(calls <= 3, 'no calls after close');
  fd.close();
});

test('a removed eventfd no longer calls its handler', async () => {
  const poller = new EventFdPoller();
  const a = new EventFd();
  const b = new EventFd();
  let aCalls = 0;
  let bCalls = 0;
  poller.add(a, () => aCalls++);
  poller.add(b, () => bCalls++);
  poller.start();
  poller.remove(a);
  a.signal();
  b.signal();
  await until(() => bCalls === 1, 'the remaining eventfd');
  assert.equal(aCalls, 0);
  await poller.close();
  a.close();
  b.close();
});

test('an ioeventfd sits on each queue notify address: 2-byte writes of the queue index', async () => {
  const { vm, transport, poller } = wired();
  const spec = vm.only();
  assert.equal(spec.addr, transport.queueNotifyAddress(0));
  assert.equal(spec.len, 2);
  assert.equal(spec.datamatch, 0);
  assert.equal(spec.pio, false);
  await poller.close();
});

test('the ioeventfd follows BAR 0: gone while memory decode is off, at the new address after a move', async () => {
  const { machine, vm, transport, slot, poller } = wired();
  const before = vm.only().addr;
  const command = machine.conf1Read(0, slot, 0, PCI_COMMAND, 2);
  machine.conf1Write(0, slot, 0, PCI_COMMAND, 2, command & ~PCI_COMMAND_MEMORY);
  assert.equal(vm.ioeventfds.size, 0, 'unmapped BAR, no ioeventfd');
  const moved = TestMachine.MMIO32_WINDOW.start + 0x10_0000;
  machine.conf1Write(0, slot, 0, PCI_BAR0, 4, moved);
  machine.conf1Write(0, slot, 0, PCI_BAR0 + 4, 4, 0);
  machine.conf1Write(0, slot, 0, PCI_COMMAND, 2, command | PCI_COMMAND_MEMORY);
  const after = vm.only().addr;
  assert.notEqual(after, before);
  assert.equal(after, transport.queueNotifyAddress(0));
  assert.equal(after, moved + 0x3000);
  await poller.close();
});

test('a kick through the doorbell eventfd runs the queue; the interrupt is an irqfd on a GSI routed to the programmed MSI', async () => {
  const { machine, vm, poller, rng, slot, devices, warnings } = wired();
  poller.start();
  const driver = new VirtioPciDriver(machine, slot);
  const [queue] = driver.bringUp(MODERN);
  const buffer = machine.allocator.alloc(64);
  const head = queue!.addChain([{ addr: buffer, len: 64, writable: true }]);
  queue!.publish(head);
  // What KVM does on the guest's notify write: signal the eventfd instead of exiting.
  const doorbell = vm.only();
  const ring = Buffer.alloc(8);
  ring.writeBigUInt64LE(1n);
  write(doorbell.fd, ring);
  await until(() => rng.requestsServed === 1, 'the request to be served');
  assert.deepEqual(queue!.takeUsed(), [{ id: head, len: 64 }]);
  assert.equal(vm.msis.length, 0, 'no KVM_SIGNAL_MSI');
  assert.equal(vm.irqfds.size, 1, 'one irqfd, for the request queue vector');
  const [[irqfd, gsi]] = [...vm.irqfds];
  assert.ok(gsi! >= 24, 'MSI GSIs come after the IOAPIC pins');
  const route = vm.routes.find((r) => r.gsi === gsi);
  assert.ok(route !== undefined && route.kind === 'msi' && route.addressLo === MSI_ADDRESS, 'the GSI routes to the message in the MSI-X table');
  assert.equal(vm.routes.filter((r) => r.kind === 'irqchip').length, 16 + 24, "KVM's default PIC and IOAPIC routes are kept");
  const counter = Buffer.alloc(8);
  assert.equal(read(irqfd!, counter), 8);
  assert.equal(counter.readBigUInt64LE(), 1n, 'the irqfd was signalled once');
  assert.deepEqual(devices.interrupts, { irqfd: 1, signalMsi: 0 });
  await poller.close();
  devices.close();
  assert.equal(vm.ioeventfds.size, 0, 'close() unregisters every ioeventfd');
  assert.equal(vm.irqfds.size, 0, 'and every irqfd');
  assert.deepEqual(warnings, []);
});

test('without MSI-X, a request raises the function INTx on its IOAPIC input; reading ISR lowers it; _PRT routes follow the slots', async () => {
  const machine = new TestMachine();
  const vm = new RecordingVm();
  const poller = new EventFdPoller();
  const levels = new Map<number, boolean[]>();
  const intx = new SharedIrqLines((gsi) => ({ setLevel: (level: boolean) => levels.set(gsi, [...(levels.get(gsi) ?? []), level]) }));
  const devices = new VirtioPciDevices({ vm, memory: machine.memory, pci: machine.pci, poller, intx });
  const rngs = Array.from({ length: 9 }, () => new VirtioRng());
  const transports = rngs.map((r) => devices.add(r));
  const slots = transports.map((t) => machine.pci.devices().find((d) => d.fn === t)!.slot);
  assert.deepEqual(slots, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
  // Slots 1..8 take GSIs 16..23; slot 9 shares GSI 16 with slot 1.
  assert.deepEqual(
    devices.intxRoutes.map((r) => [r.device, r.pin, r.gsi]),
    slots.map((s, i) => [s, 0, 16 + (i % 8)]),
  );
  const PCI_INTERRUPT_PIN = 0x3d;
  assert.equal(machine.conf1Read(0, 1, 0, PCI_INTERRUPT_PIN, 1), 1, 'INTA');

  poller.start();
  const serve = async (index: number): Promise<VirtioPciDriver> => {
    const driver = new VirtioPciDriver(machine, slots[index]!);
    const [queue] = driver.bringUp(MODERN, { msix: false });
    const buffer = machine.allocator.alloc(16);
    queue!.publish(queue!.addChain([{ addr: buffer, len: 16, writable: true }]));
    queue!.kick();
    await until(() => rngs[index]!.requestsServed === 1, 'the request to be served');
    return driver;
  };
  const first = await serve(0);
  assert.deepEqual(levels.get(16), [true], 'slot 1 asserted GSI 16');
  const ninth = await serve(8);
  assert.deepEqual(levels.get(16), [true], 'slot 9 on the same input: still one assertion');
  assert.equal(devices.intxRaises, 1);
  assert.equal(first.readIsr() & 1, 1, 'ISR says queue interrupt');
  assert.deepEqual(levels.get(16), [true], 'the line stays up while slot 9 still asserts');
  assert.equal(ninth.readIsr() & 1, 1);
  assert.deepEqual(levels.get(16), [true, false], 'both acknowledged: the line drops');
  assert.deepEqual(vm.msis, [], 'no MSI');
  await poller.close();
  devices.close();
});

test('no intx option: the pin reads 0 and there are no _PRT routes', () => {
  const { machine, devices, slot } = wired();
  assert.equal(machine.conf1Read(0, slot, 0, 0x3d, 1), 0);
  assert.deepEqual(devices.intxRoutes, []);
  devices.close();
});
