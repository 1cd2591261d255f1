/**
 * virtio over PCI in a real Linux guest: the entropy device (virtio-rng) found on the PCI bus,
 * bound by virtio_pci and virtio-rng, giving random bytes through /dev/hwrng, with queue kicks on
 * ioeventfds and interrupts as MSI-X messages.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { bootGuest, defaultGuest, field } from '../support/guest.js';

/** What the guest prints: virtio device types, PCI IDs, the hwrng in use, 64 bytes of it, and virtio's interrupt lines. */
const PROBE = [
  'echo "VIRTIO_TYPES=$(cat /sys/bus/virtio/devices/*/device 2>/dev/null | tr "\\n" " ")"',
  'for d in /sys/bus/pci/devices/*; do echo "PCI_ID=$(cat $d/vendor):$(cat $d/device)"; done',
  'echo "RNG_CURRENT=$(cat /sys/class/misc/hw_random/rng_current 2>/dev/null)"',
  'echo "HWRNG=$(dd if=/dev/hwrng bs=64 count=1 2>/dev/null | od -An -tx1 | tr -d " \\n")"',
  // The function has only the MSI-X capability; Linux 6.1 names the MSI-X domain "PCI-MSI" in /proc/interrupts.
  'echo "MSIX_LINES=$(grep -c "PCI-MSI.*virtio" /proc/interrupts)"',
  'grep virtio /proc/interrupts | sed "s/^/IRQ: /"',
].join('; ');

for (const vcpus of [1, 2]) {
  test(`with entropy on, ${vcpus} vCPU(s): the guest finds virtio-rng on PCI and /dev/hwrng gives random bytes`, async () => {
    const r = await bootGuest({ entropy: true, vcpus, command: PROBE });
    // The VMM's side of the story, for when the guest waits on the device.
    const t = r.vm.virtio.transports[0];
    const vmmSide = `device: ${r.vm.rng?.requestsServed} requests served; transport: ${t?.notifications} notifications, status ${t?.deviceStatus}, error ${t?.lastError}; ioeventfd wake-ups ${r.vm.virtio.doorbellWakeups}; interrupts ${JSON.stringify(r.vm.virtio.interrupts)}`;
    const context = `${r.exit.message}\n${vmmSide}\n${r.output}`;
    assert.equal(r.exit.status, 0, context);
    assert.match(field(r.output, 'VIRTIO_TYPES') ?? '', /\b0x0004\b/, `a virtio device of type 4 (entropy)\n${context}`);
    assert.ok(/^PCI_ID=0x1af4:0x1044$/m.test(r.output), `PCI vendor 0x1af4, device 0x1044\n${context}`);
    assert.match(field(r.output, 'RNG_CURRENT') ?? '', /^virtio_rng/, context);
    const hex = field(r.output, 'HWRNG') ?? '';
    assert.match(hex, /^[0-9a-f]{128}$/, `64 bytes from /dev/hwrng\n${context}`);
    assert.doesNotMatch(hex, /^(00)+$/, 'not all zeroes');
    assert.ok(Number(field(r.output, 'MSIX_LINES')) >= 2, `config and request vectors on MSI-X\n${context}`);

    const rng = r.vm.rng!;
    const transport = r.vm.virtio.transports[0]!;
    assert.ok(rng.requestsServed > 0 && rng.bytesServed >= 64, `the device served requests (${rng.requestsServed})`);
    assert.ok(r.vm.virtio.doorbellWakeups > 0, 'kicks arrived on the ioeventfd');
    const interrupts = r.vm.virtio.interrupts;
    assert.ok(interrupts.irqfd > 0 && interrupts.signalMsi === 0, `interrupts went out through irqfds (${JSON.stringify(interrupts)})`);
    assert.equal(transport.lastError, undefined);
    process.stderr.write(
      `virtio-rng, ${vcpus} vCPU(s): ${rng.requestsServed} requests, ${rng.bytesServed} bytes, ${transport.notifications} notifications ` +
        `(${r.vm.virtio.doorbellWakeups} via ioeventfd, ${transport.notifications - r.vm.virtio.doorbellWakeups} via MMIO exits), ${interrupts.irqfd} interrupts through irqfds\n`,
    );
  });
}

test('with MSI disabled (pci=nomsi) virtio falls back to INTx: the _PRT routes the pin to an IOAPIC input and the entropy device still works', async () => {
  const command = [
    'echo "HWRNG=$(dd if=/dev/hwrng bs=64 count=1 2>/dev/null | od -An -tx1 | tr -d " \\n")"',
    'echo "INTX_LINE=$(grep "IO-APIC.*virtio" /proc/interrupts | tr -s " ")"',
    'echo "MSI_LINES=$(grep -c "PCI-MSI" /proc/interrupts)"',
  ].join('; ');
  const r = await bootGuest({ entropy: true, vcpus: 2, cmdline: `${defaultGuest().bootArgs} pci=nomsi`, command });
  const context = `${r.exit.message}\nintx raises ${r.vm.virtio.intxRaises}, ${JSON.stringify(r.vm.virtio.interrupts)}\n${r.output}`;
  assert.equal(r.exit.status, 0, context);
  assert.match(field(r.output, 'HWRNG') ?? '', /^[0-9a-f]{128}$/, `64 bytes from /dev/hwrng\n${context}`);
  // "29: 0 4 IO-APIC 16-fasteoi virtio0": slot 1's INTA on IOAPIC pin 16, level-triggered (fasteoi), with interrupts counted.
  const line = field(r.output, 'INTX_LINE') ?? '';
  assert.match(line, /^\d+: \d+ \d+ IO-APIC 16-fasteoi virtio0$/, context);
  const counts = line.split(' ').slice(1, 3).map(Number);
  assert.ok(counts.reduce((a, b) => a + b, 0) > 0, `the guest took INTx interrupts\n${context}`);
  assert.equal(field(r.output, 'MSI_LINES'), '0', context);
  assert.ok(r.vm.virtio.intxRaises > 0, context);
  assert.deepEqual(r.vm.virtio.interrupts, { irqfd: 0, signalMsi: 0 }, 'no MSI-X message was sent');
});

test('virtio-mmio: the guest finds virtio-blk and virtio-rng as LNRO0005 devices in ACPI, no virtio on PCI; reads, writes and interrupts work', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tsvmm-mmio-'));
  try {
    const path = join(dir, 'disk.img');
    writeFileSync(path, Buffer.alloc(8 << 20));
    const token = `mmio-${randomBytes(6).toString('hex')}`;
    const command = [
      'echo "VIRTIO_TYPES=$(cat /sys/bus/virtio/devices/*/device | sort | tr "\\n" " ")"',
      'echo "PARENTS=$(for d in /sys/bus/virtio/devices/*; do basename $(readlink -f $d/..); done | sort | tr "\\n" " ")"',
      'echo "PCI_VIRTIO=$(cat /sys/bus/pci/devices/*/vendor | grep -c 0x1af4)"',
      'echo "HWRNG=$(dd if=/dev/hwrng bs=32 count=1 2>/dev/null | od -An -tx1 | tr -d " \\n")"',
      `echo ${token} | dd of=/dev/vda bs=512 seek=8 conv=sync 2>/dev/null; sync; echo "DD=$?"`,
      'grep virtio /proc/interrupts | tr -s " " | sed "s/^ *//; s/^/IRQ: /"',
    ].join('; ');
    const r = await bootGuest({ entropy: true, vcpus: 2, virtioTransport: 'mmio', drives: [{ id: 'disk', path }], command });
    const context = `${r.exit.message}\nmmio interrupts ${r.vm.virtioMmio.interrupts}, doorbells ${r.vm.virtioMmio.doorbellWakeups}\n${r.output}`;
    assert.equal(r.exit.status, 0, context);
    assert.equal(field(r.output, 'VIRTIO_TYPES'), '0x0002 0x0004', `a block and an entropy device\n${context}`);
    assert.match(field(r.output, 'PARENTS') ?? '', /^LNRO0005:00 LNRO0005:01$/, `both on virtio-mmio platform devices from ACPI\n${context}`);
    assert.equal(field(r.output, 'PCI_VIRTIO'), '0', context);
    assert.match(field(r.output, 'HWRNG') ?? '', /^[0-9a-f]{64}$/, context);
    assert.equal(field(r.output, 'DD'), '0', context);
    assert.equal(readFileSync(path).subarray(8 * 512, 8 * 512 + token.length).toString(), token, 'the write is in the image');
    // "IRQ: 24: 5 3 IO-APIC 16-fasteoi virtio0": level-triggered lines on IOAPIC pins 16 and 17.
    assert.match(r.output, /^IRQ: \d+: \d+ \d+ IO-APIC 16-fasteoi virtio0$/m, context);
    assert.match(r.output, /^IRQ: \d+: \d+ \d+ IO-APIC 17-fasteoi virtio1$/m, context);
    assert.deepEqual(r.vm.virtio.transports, [], 'nothing on PCI');
    assert.ok(r.vm.virtioMmio.doorbellWakeups > 0, `kicks came through ioeventfds\n${context}`);
    assert.ok(r.vm.virtioMmio.interrupts > 0, context);
    for (const t of r.vm.virtioMmio.transports) assert.equal(t.lastError, undefined);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('without entropy there is no virtio device', async () => {
  const r = await bootGuest({ command: 'echo "VIRTIO_COUNT=$(ls /sys/bus/virtio/devices | wc -l)"' });
  assert.equal(r.exit.status, 0, r.exit.message + '\n' + r.output);
  assert.equal(field(r.output, 'VIRTIO_COUNT'), '0');
});
