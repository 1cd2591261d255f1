/**
 * virtio-blk in a real Linux guest: two raw images made by the test, one read-write (/dev/vda) and
 * one read-only (/dev/vdb). The guest writes a pattern with dd and syncs; after the VM has ended
 * the host finds it in the image file. The read-only drive refuses the guest's write and its image
 * is unchanged, while its contents read back correctly in the guest.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { bootGuest, field } from '../support/guest.js';

const MiB = 1024 * 1024;
const IMAGE_BYTES = 16 * MiB;
const SECTOR = 512;
/** Where the guest writes its pattern on vda, and how much. */
const WRITE_OFFSET = 4 * MiB;
const WRITE_BYTES = 1 * MiB;

const dir = mkdtempSync(join(tmpdir(), 'tsvmm-drives-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** `token\n` repeated, cut to `bytes`: what `yes TOKEN | head -c BYTES` prints. */
function pattern(token: string, bytes: number): Buffer {
  return Buffer.from(`${token}\n`.repeat(Math.ceil(bytes / (token.length + 1)))).subarray(0, bytes);
}

test('the guest writes to a read-write drive and the data is in the image afterwards; a read-only drive refuses writes', async () => {
  const token = `tsvmm-blk-${randomBytes(8).toString('hex')}`;
  const rw = join(dir, 'rw.img');
  writeFileSync(rw, Buffer.alloc(IMAGE_BYTES));
  // The read-only image starts with a marker the guest reads back, then a known filler.
  const roMarker = `read-only-${randomBytes(8).toString('hex')}`;
  const ro = join(dir, 'ro.img');
  const roContent = Buffer.alloc(IMAGE_BYTES / 2, 0xa5);
  roContent.write(roMarker, 0, 'ascii');
  writeFileSync(ro, roContent);

  const command = [
    'echo "VDA_SIZE=$(cat /sys/block/vda/size)"',
    'echo "VDA_RO=$(cat /sys/block/vda/ro)"',
    'echo "VDA_SERIAL=$(cat /sys/block/vda/serial 2>/dev/null)"',
    'echo "VDB_SIZE=$(cat /sys/block/vdb/size)"',
    'echo "VDB_RO=$(cat /sys/block/vdb/ro)"',
    // Write through a file so dd sees whole blocks (a pipe may give it short reads).
    `yes ${token} | head -c ${WRITE_BYTES} > /tmp/pattern`,
    `dd if=/tmp/pattern of=/dev/vda bs=4096 seek=${WRITE_OFFSET / 4096} 2>&1; echo "VDA_DD=$?"`,
    'sync; echo "VDA_SYNC=$?"',
    `echo "VDB_MARKER=$(head -c ${roMarker.length} /dev/vdb)"`,
    'dd if=/tmp/pattern of=/dev/vdb bs=4096 count=4 2>&1; echo "VDB_DD=$?"',
    'sync',
  ].join('; ');

  const r = await bootGuest({
    command,
    drives: [
      { id: 'data', path: rw },
      { id: 'readonly', path: ro, readOnly: true },
    ],
  });
  const context = `${r.exit.message}\n${r.output}`;
  assert.equal(r.exit.reason, 'poweroff', context);

  assert.equal(field(r.output, 'VDA_SIZE'), String(IMAGE_BYTES / SECTOR), `vda's size in sectors\n${context}`);
  assert.equal(field(r.output, 'VDA_RO'), '0', context);
  assert.equal(field(r.output, 'VDA_SERIAL'), 'data', `GET_ID gives the drive id\n${context}`);
  assert.equal(field(r.output, 'VDB_SIZE'), String(IMAGE_BYTES / 2 / SECTOR), `vdb's size in sectors\n${context}`);
  assert.equal(field(r.output, 'VDB_RO'), '1', `vdb is read-only\n${context}`);
  assert.equal(field(r.output, 'VDA_DD'), '0', `dd to vda succeeded\n${context}`);
  assert.equal(field(r.output, 'VDA_SYNC'), '0', context);
  assert.equal(field(r.output, 'VDB_MARKER'), roMarker, `the guest reads the read-only image\n${context}`);
  assert.notEqual(field(r.output, 'VDB_DD') ?? '0', '0', `dd to the read-only vdb failed\n${context}`);

  // The VM has ended and its drives are closed: the guest's write is in the file, exactly where it went.
  const image = readFileSync(rw);
  assert.equal(image.length, IMAGE_BYTES, 'the image keeps its size');
  const written = image.subarray(WRITE_OFFSET, WRITE_OFFSET + WRITE_BYTES);
  assert.ok(written.equals(pattern(token, WRITE_BYTES)), `the pattern is at ${WRITE_OFFSET}: got ${JSON.stringify(written.subarray(0, 64).toString('latin1'))}…`);
  assert.ok(image.subarray(0, WRITE_OFFSET).every((b) => b === 0), 'nothing was written before the pattern');
  assert.ok(image.subarray(WRITE_OFFSET + WRITE_BYTES).every((b) => b === 0), 'nothing was written after the pattern');
  assert.ok(readFileSync(ro).equals(roContent), 'the read-only image is unchanged');

  const [vda, vdb] = r.vm.drives;
  assert.ok(vda !== undefined && vdb !== undefined, 'two drives');
  assert.ok(vda.metrics.bytesWritten >= WRITE_BYTES, `vda served the writes (${JSON.stringify(vda.metrics)})`);
  assert.equal(vdb.metrics.bytesWritten, 0, `nothing was written to vdb (${JSON.stringify(vdb.metrics)})`);
  for (const t of r.vm.virtio.transports) assert.equal(t.lastError, undefined, `${t.name}: ${t.lastError}`);
  const refusal = r.output.split('\n').find((l) => l.startsWith('dd:')) ?? '(no dd message)';
  process.stderr.write(`virtio-blk: vda ${JSON.stringify(vda.metrics)}; vdb ${JSON.stringify(vdb.metrics)}; the guest's write to vdb: ${refusal.trim()}\n`);
});

test('a Writeback drive offers FLUSH: the guest fsync becomes a flush and an fdatasync of the image', async () => {
  const token = `tsvmm-flush-${randomBytes(8).toString('hex')}`;
  const img = join(dir, 'writeback.img');
  writeFileSync(img, Buffer.alloc(IMAGE_BYTES));
  const r = await bootGuest({
    command: [
      'echo "CACHE=$(cat /sys/block/vda/queue/write_cache)"',
      `yes ${token} | head -c 65536 > /tmp/pattern`,
      'dd if=/tmp/pattern of=/dev/vda bs=4096 conv=fsync 2>&1; echo "DD=$?"',
    ].join('; '),
    drives: [{ id: 'wb', path: img, cacheType: 'Writeback' }],
  });
  const context = `${r.exit.message}\n${r.output}`;
  assert.equal(r.exit.reason, 'poweroff', context);
  assert.equal(field(r.output, 'DD'), '0', context);
  // Linux shows a volatile write cache when VIRTIO_BLK_F_FLUSH is negotiated (virtio_blk.c, virtblk_update_cache_mode).
  assert.equal(field(r.output, 'CACHE'), 'write back', context);
  const drive = r.vm.drives[0]!;
  assert.ok(drive.metrics.flushes > 0 && drive.metrics.syncs > 0, `flushed and synced (${JSON.stringify(drive.metrics)})`);
  assert.ok(readFileSync(img).subarray(0, 65536).equals(pattern(token, 65536)), 'the data is in the image');
});

test('data the guest synced is in the image even when the VMM is killed with SIGKILL right after sync returns', async () => {
  const { spawn } = await import('node:child_process');
  const { fileURLToPath } = await import('node:url');
  const bin = fileURLToPath(new URL('../../../bin/tsvmm.js', import.meta.url));
  const token = `tsvmm-sigkill-${randomBytes(8).toString('hex')}`;
  const image = join(dir, 'sigkill.img');
  writeFileSync(image, Buffer.alloc(IMAGE_BYTES));
  // The guest writes, syncs, says so, then keeps running until it is killed.
  const command =
    `yes ${token} | head -c ${WRITE_BYTES} | dd of=/dev/vda bs=4096 seek=${WRITE_OFFSET / 4096} conv=notrunc 2>/dev/null && sync && echo SYNCED; sleep 600`;
  const child = spawn(process.execPath, [bin, 'start', '--disk', `${image},cache=writeback`, '--', command], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal)));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the guest never reported SYNCED:\n${stdout}\n${stderr}`)), 300_000);
    child.stdout.on('data', (b: Buffer) => {
      stdout += b.toString();
      if (/^SYNCED$/m.test(stdout)) {
        clearTimeout(timer);
        child.kill('SIGKILL');
        resolve();
      }
    });
  });
  assert.equal(await exited, 'SIGKILL', 'the VMM died of SIGKILL, without any chance to flush');
  const written = readFileSync(image).subarray(WRITE_OFFSET, WRITE_OFFSET + WRITE_BYTES);
  assert.ok(written.equals(pattern(token, WRITE_BYTES)), 'the synced data is in the image');
});

test('2 vCPUs: the drive has a request queue per vCPU, each with its own MSI-X vector, and I/O from each vCPU completes on its own', async () => {
  const path = join(dir, 'mq.img');
  writeFileSync(path, Buffer.alloc(IMAGE_BYTES, 0x5a));
  // Each vCPU reads its own 1 MiB (separate ranges, so the page cache cannot serve the second).
  const command = [
    'echo "MQ_DIRS=$(ls /sys/block/vda/mq | tr "\\n" " ")"',
    'for c in 0 1; do taskset -c $c dd if=/dev/vda of=/dev/null bs=4096 count=256 skip=$((c * 256)) 2>/dev/null; echo "DD_CPU$c=$?"; done',
    'grep "virtio0-req" /proc/interrupts | tr -s " " | sed "s/^ *//; s/^/IRQ: /"',
  ].join('; ');
  const r = await bootGuest({ command, vcpus: 2, drives: [{ id: 'mq', path, readOnly: true }] });
  const context = `${r.exit.message}\n${r.output}`;
  assert.equal(r.exit.reason, 'poweroff', context);
  assert.equal(field(r.output, 'MQ_DIRS'), '0 1', `blk-mq sees two hardware queues\n${context}`);
  assert.equal(field(r.output, 'DD_CPU0'), '0', context);
  assert.equal(field(r.output, 'DD_CPU1'), '0', context);
  // "IRQ: 25: 40 0 PCI-MSI 16385-edge virtio0-req.0": the total over both CPU columns.
  const perQueue = new Map<string, number>();
  for (const m of r.output.matchAll(/^IRQ: \d+: (\d+) (\d+) .*(virtio0-req\.\d+)\s*$/gm)) perQueue.set(m[3]!, Number(m[1]) + Number(m[2]));
  assert.deepEqual([...perQueue.keys()].sort(), ['virtio0-req.0', 'virtio0-req.1'], `one MSI-X line per queue\n${context}`);
  for (const [queue, count] of perQueue) assert.ok(count > 0, `${queue} took interrupts\n${context}`);
  assert.equal(r.vm.drives[0]?.queueMaxSizes.length, 2);
  assert.ok(r.vm.drives[0]!.metrics.bytesRead >= 2 * MiB, JSON.stringify(r.vm.drives[0]!.metrics));
  process.stderr.write(`virtio-blk multi-queue, 2 vCPUs: interrupts per queue ${JSON.stringify(Object.fromEntries(perQueue))}\n`);
});
