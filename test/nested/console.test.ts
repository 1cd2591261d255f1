/** The nested host's console splitter, fed by hand (no boot): markers, streaming, panics. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NestedConsole, cleanConsoleText } from '../../src/host/nested-console.js';
import { commandScript, shellQuote } from '../../src/host/nested-init.js';

const NONCE = '0123456789abcdef0123456789abcdef';
const M = `TSVMM-NESTED:${NONCE}:`;

function feedBytewise(c: NestedConsole, text: string): void {
  for (const b of Buffer.from(text, 'utf8')) c.push(Buffer.from([b]));
}

test('boot noise, command output and power-down are separated, even one byte at a time', () => {
  let live = '';
  const c = new NestedConsole(NONCE, (t) => (live += t));
  const text = `\x1bc\x1b[?7l\x1b[2JSeaBIOS (version 1.16)\r\nBooting from ROM...\r\n${M}begin\nhello ✓\n${'TSVMM-NESTED:'}forged:exit=0\nno newline${M}exit=42\n[    4.18] reboot: Power down\r\n`;
  feedBytewise(c, text);
  c.end();
  assert.equal(c.phase, 'done');
  assert.equal(c.exitStatus, 42);
  assert.equal(c.output, `hello ✓\nTSVMM-NESTED:forged:exit=0\nno newline`);
  assert.equal(live, c.output);
  assert.equal(c.bootLog, 'SeaBIOS (version 1.16)\nBooting from ROM...\n');
  assert.match(c.afterLog, /Power down/);
});

test('heartbeat lines are counted and taken out of the boot log, the output (even mid-line, one byte at a time) and the power-down text', () => {
  let live = '';
  const c = new NestedConsole(NONCE, (t) => (live += t));
  const beat = `${M}alive\n`;
  const text = `SeaBIOS\r\n${M}alive\r\nkernel\r\n${M}begin\nfirst ${beat}line\n${beat}${beat}progress 50%${beat} done\n${'TSVMM-NESTED:'}forged:alive\n${M}exit=0\n${beat}[ 4.1] reboot: Power down\r\n`;
  feedBytewise(c, text);
  c.end();
  assert.equal(c.heartbeats, 6);
  assert.equal(c.exitStatus, 0);
  assert.equal(c.output, `first line\nprogress 50% done\nTSVMM-NESTED:forged:alive\n`, 'a line without the nonce is output like any other');
  assert.equal(live, c.output);
  assert.equal(c.bootLog, 'SeaBIOS\nkernel\n');
  assert.doesNotMatch(c.afterLog, /alive/);
});

test('a heartbeat still arriving is held back, then taken out; one the console ended in is released as output', () => {
  const c = new NestedConsole(NONCE);
  c.push(Buffer.from(`${M}begin\nabc${M}ali`));
  assert.equal(c.output, 'abc');
  c.push(Buffer.from(`ve\ndef\n${M}al`));
  assert.equal(c.output, 'abcdef\n');
  assert.equal(c.heartbeats, 1);
  c.end();
  assert.equal(c.output, `abcdef\n${M}al`);
});

test('a setup failure reported by init', () => {
  const c = new NestedConsole(NONCE);
  c.push(Buffer.from(`booting\r\n${M}fail=cannot load kernel module kvm-amd\r\n[ 1.0] reboot: Power down\r\n`));
  assert.equal(c.phase, 'setup-failed');
  assert.equal(c.setupFailure, 'cannot load kernel module kvm-amd');
});

test('a kernel panic is noticed', () => {
  const c = new NestedConsole(NONCE);
  c.push(Buffer.from('[ 2.1] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100\r\n[ 2.1] Kernel Offset: 0x0\r\n'));
  c.end();
  assert.equal(c.phase, 'boot');
  assert.equal(c.kernelPanic, 'Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100');
  assert.match(c.tail(1), /Kernel Offset/);
});

test('a panic line split across chunks is taken whole; one the console ended in is taken as it is', () => {
  const c = new NestedConsole(NONCE);
  c.push(Buffer.from(`${M}begin\nok\n[ 293.6] Kernel panic - not syncing: Fata`));
  assert.equal(c.kernelPanic, undefined, 'not before the line is complete');
  c.push(Buffer.from('l exception in interrupt\r\n[ 293.7] Kernel Offset: disabled\r\n'));
  assert.equal(c.kernelPanic, 'Kernel panic - not syncing: Fatal exception in interrupt');
  const d = new NestedConsole(NONCE);
  d.push(Buffer.from('[ 2.1] Kernel panic - not syncing: VFS: Unable to mount root'));
  d.end();
  assert.equal(d.kernelPanic, 'Kernel panic - not syncing: VFS: Unable to mount root');
});

test('soft-lockup reports are noticed in boot and command output, split across chunks; the worst one wins', () => {
  const c = new NestedConsole(NONCE);
  c.push(Buffer.from('[ 9.0] watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [swapper/1:0]\r\n'));
  assert.deepEqual(c.softLockup, { line: 'BUG: soft lockup - CPU#1 stuck for 22s! [swapper/1:0]', seconds: 22 });
  c.push(Buffer.from(`${M}begin\nok 1\n[ 150.2] watchdog: BUG: soft lockup - CPU#0 stu`));
  assert.equal(c.softLockup?.seconds, 22);
  c.push(Buffer.from('ck for 104s! [kthreadd:2]\r\nok 2\n[ 170.0] watchdog: BUG: soft lockup - CPU#1 stuck for 48s! [swapper/1:0]\n'));
  assert.deepEqual(c.softLockup, { line: 'BUG: soft lockup - CPU#0 stuck for 104s! [kthreadd:2]', seconds: 104 });
  assert.match(c.output, /ok 2/);
  const quiet = new NestedConsole(NONCE);
  quiet.push(Buffer.from(`${M}begin\nsoft lockup is just a phrase here\n`));
  assert.equal(quiet.softLockup, undefined);
});

test('output that merely starts like a marker is released at the end', () => {
  const c = new NestedConsole(NONCE);
  c.push(Buffer.from(`${M}begin\nabc TSVMM-NEST`));
  assert.equal(c.output, 'abc ');
  c.end();
  assert.equal(c.output, 'abc TSVMM-NEST');
});

test('cleanConsoleText and shell quoting', () => {
  assert.equal(cleanConsoleText('\x1b[0mA\r\nB'), 'A\nB');
  assert.equal(shellQuote('plain/path-1.2'), 'plain/path-1.2');
  assert.equal(shellQuote(`it's`), `'it'\\''s'`);
  assert.equal(shellQuote(''), `''`);
  const s = commandScript({ command: ['echo', 'a b'], cwd: '/work', env: { A: 'x y' } });
  assert.equal(s, `# Generated by tsvmm for one nested-host run.\nexport A='x y'\ncd /work || { echo "tsvmm nested host: cannot cd to "/work" (the machine's root is mounted read-only; /tmp and /run are fresh and empty)" >&2; exit 127; }\nexec echo 'a b'\n`);
  assert.throws(() => commandScript({ command: 'true', cwd: '/', env: { 'A-B': '1' } }), /not a valid shell name/);
  assert.throws(() => commandScript({ command: [], cwd: '/', env: {} }), /empty/);
  // Writable folders (a read-write disk image's) are mounted before the command, failing with 125.
  const m = commandScript({ command: 'true', cwd: '/', env: {}, mounts: [{ tag: 'tsvmmrw0', path: '/tmp/my disks' }] });
  assert.match(m, /^mkdir -p '\/tmp\/my disks' && mount -t 9p -o trans=virtio,version=9p2000\.L,msize=262144 tsvmmrw0 '\/tmp\/my disks' \|\| \{ .*exit 125; \}$/m);
  assert.ok(m.indexOf('mount -t 9p') < m.indexOf('cd /'), 'mounted before the cd');
});
