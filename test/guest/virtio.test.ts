/**
 * virtio over PCI in a real Linux guest: the entropy device (virtio-rng) found on the PCI bus,
 * bound by virtio_pci and virtio-rng, giving random bytes through /dev/hwrng, with queue kicks on
 * ioeventfds and interrupts as MSI-X messages.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { bootGuest, field } from '../support/guest.js';

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

test('without entropy there is no virtio device', async () => {
  const r = await bootGuest({ command: 'echo "VIRTIO_COUNT=$(ls /sys/bus/virtio/devices | wc -l)"' });
  assert.equal(r.exit.status, 0, r.exit.message + '\n' + r.output);
  assert.equal(field(r.output, 'VIRTIO_COUNT'), '0');
});
