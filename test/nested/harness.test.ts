/**
 * The nested host harness, for real: two boots (each 6–10 s under TCG, more on a busy machine),
 * one QEMU start killed by a short timeout, one frozen (SIGSTOP) until the heartbeat watch gives
 * up on it, one whose runner is killed with SIGKILL, and two that fail at once. Runs on any x86-64 Linux where QEMU can be installed; this
 * machine needs no KVM. About 45 s in all.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { dirname, join, resolve } from 'node:path';
import {
  ensureNestedHostAssets,
  NestedHostHungError,
  NestedHostResetError,
  NestedHostStartError,
  NestedHostUsageError,
  runInNestedHost,
  type NestedHostAssets,
  type NestedRunResult,
  WORK_DIR_PREFIX,
} from '../../src/host/nested.js';
import { OWNER_FILE, removeStaleTempDirs } from '../../src/host/owned-temp-dirs.js';
import { statField } from '../../src/util/proc-stat.js';

/** The checkout (dist/test/nested/ → three levels up), whose node_modules has koffi. */
const CHECKOUT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const BOOT_BUDGET_MS = 180_000;

/** Progress lines on stderr with a prefix, so CI logs show where time goes. */
const progress = (m: string): void => {
  process.stderr.write(`  [nested] ${m}\n`);
};

let assets: NestedHostAssets;

before(() => {
  assets = ensureNestedHostAssets(progress);
});

describe('one boot: output, exit status, /dev/kvm, read-only root, writable /tmp', () => {
  let result: NestedRunResult;
  let streamed = '';

  before(async () => {
    const script = [
      'echo "hello from the nested host"',
      'test -c /dev/kvm && echo "kvm: char device"',
      '(: 3<>/dev/kvm) 2>/dev/null && echo "kvm: opens read-write"',
      'if touch /usr/.tsvmm-write-probe 2>/dev/null; then echo "root: WRITABLE"; else echo "root: read-only"; fi',
      'echo payload > /tmp/probe && test "$(cat /tmp/probe)" = payload && echo "tmp: writable"',
      'echo "to stderr" >&2',
      'exit 3',
    ].join('\n');
    result = await runInNestedHost(script, {
      assets,
      timeoutMs: BOOT_BUDGET_MS,
      progress,
      onOutput: (t) => {
        // Shown live, line by line, so a slow or stuck run is visible in CI logs.
        const from = streamed.lastIndexOf('\n') + 1;
        streamed += t;
        const lines = streamed.slice(from).split('\n');
        if (lines.length > 1) process.stderr.write(lines.slice(0, -1).map((l) => `  | ${l}\n`).join(''));
      },
    });
    progress(`boot ${result.bootMs} ms, wall ${result.wallMs} ms`);
  });

  test('returns the command output, without boot noise or markers', () => {
    assert.match(result.output, /^hello from the nested host\n/);
    assert.match(result.output, /to stderr\n/);
    assert.doesNotMatch(result.output, /SeaBIOS|TSVMM-NESTED|\x1b|\r/);
    assert.equal(streamed, result.output, 'onOutput saw exactly the output, live');
    assert.equal(result.timedOut, false);
    assert.ok(result.bootMs !== undefined && result.bootMs < result.wallMs);
    assert.ok(result.heartbeats >= 1, 'the init printed its heartbeat, and it stayed out of the output');
  });

  test("a failing command's exit status comes back", () => {
    assert.equal(result.status, 3);
  });

  test('/dev/kvm exists inside and opens read-write', () => {
    assert.match(result.output, /^kvm: char device$/m);
    assert.match(result.output, /^kvm: opens read-write$/m);
  });

  test("this machine's root is read-only inside and /tmp is writable", () => {
    assert.match(result.output, /^root: read-only$/m);
    assert.match(result.output, /^tmp: writable$/m);
  });
});

describe('second boot: argv, cwd and env pass through intact; Node and KVM work inside', () => {
  let result: NestedRunResult;
  const tricky = `it's "quoted" $HOME \`x\` \\ ; & | * ~`;

  before(async () => {
    // Node with koffi asks the nested host's KVM for its API version: what guest tests rely on.
    const js = [
      "const koffi = require('koffi');",
      "const lib = koffi.load('libc.so.6');",
      "const open = lib.func('int open(const char *path, int flags)');",
      "const ioctl = lib.func('int ioctl(int fd, unsigned long req, uintptr_t arg)');",
      "const fd = open('/dev/kvm', 2);",
      'console.log(JSON.stringify({ cwd: process.cwd(), arg: process.argv[1], env: process.env.TSVMM_TEST_VALUE, nested: process.env.TSVMM_NESTED_HOST, api: ioctl(fd, 0xae00, 0) }));',
    ].join(' ');
    result = await runInNestedHost(['node', '-e', js, tricky], {
      assets,
      cwd: CHECKOUT,
      env: { TSVMM_TEST_VALUE: tricky },
      timeoutMs: BOOT_BUDGET_MS,
      progress,
    });
    progress(`boot ${result.bootMs} ms, wall ${result.wallMs} ms`);
  });

  test('exit status 0 and one JSON line', () => {
    assert.equal(result.status, 0, result.output);
    const info = JSON.parse(result.output.trim()) as Record<string, unknown>;
    assert.equal(info['cwd'], CHECKOUT);
    assert.equal(info['arg'], tricky);
    assert.equal(info['env'], tricky);
    assert.equal(info['nested'], '1');
    assert.equal(info['api'], 12, 'KVM_GET_API_VERSION inside the nested host');
  });
});

test('a timeout kills QEMU and is reported, not hung on', async () => {
  const t0 = Date.now();
  const r = await runInNestedHost('sleep 600', { assets, timeoutMs: 1500, progress });
  assert.equal(r.timedOut, true);
  assert.equal(r.stalled, false);
  assert.equal(r.status, 124);
  assert.equal(r.signal, 'SIGKILL');
  assert.ok(Date.now() - t0 < 10_000, 'returned promptly');
});

test('a command that prints nothing for stallTimeoutMs is killed and reported as stalled', async () => {
  const t0 = Date.now();
  const r = await runInNestedHost('echo started; sleep 600', { assets, timeoutMs: 300_000, stallTimeoutMs: 3000, progress });
  assert.equal(r.stalled, true);
  assert.equal(r.timedOut, true);
  assert.equal(r.status, 124);
  assert.match(r.output, /started/);
  assert.ok(Date.now() - t0 < 60_000, 'returned long before the 300 s timeout');
});

test('a nested host that resets while the command runs ends the run as NestedHostResetError, not as the command failing', async () => {
  // sysrq b: an immediate reset without a panic message, as a triple fault of the emulated machine is.
  await assert.rejects(
    runInNestedHost('echo started; echo b > /proc/sysrq-trigger; sleep 600', { assets, timeoutMs: 300_000, progress }),
    (e: unknown) => e instanceof NestedHostResetError && /reset while the command was running/.test(e.message) && /run it again/.test(e.message),
  );
});

test('a kernel soft-lockup report of a CPU stuck for minutes ends the run as NestedHostHungError', async () => {
  // The console carries kernel messages and command output alike, so a command can stand in for the kernel here.
  const t0 = Date.now();
  await assert.rejects(
    runInNestedHost(`echo '[ 150.0] watchdog: BUG: soft lockup - CPU#0 stuck for 104s! [kthreadd:2]'; sleep 600`, { assets, timeoutMs: 300_000, progress }),
    (e: unknown) => e instanceof NestedHostHungError && /CPU#0 stuck for 104s/.test(e.message) && /run it again/.test(e.message),
  );
  assert.ok(Date.now() - t0 < 60_000, 'returned long before the 300 s timeout');
});

/** PIDs of the QEMU processes whose parent is `parent`. */
function qemusOf(parent: number): number[] {
  const found: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${name}/stat`, 'latin1');
    } catch {
      continue;
    }
    const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
    const ppid = Number(statField(stat, 4));
    if (ppid === parent && comm.startsWith('qemu-system')) found.push(Number(name));
  }
  return found;
}

/** Stop (SIGSTOP) every QEMU this process started: to the nested host it is as if its machine froze. */
function freezeOurQemus(): number {
  const qemus = qemusOf(process.pid);
  for (const pid of qemus) process.kill(pid, 'SIGSTOP');
  return qemus.length;
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

test('a runner killed with SIGKILL takes its QEMU with it, and the next run removes the folder it left', async () => {
  const nested = resolve(CHECKOUT, 'dist/src/host/nested.js');
  const script = `import { runInNestedHost } from ${JSON.stringify(nested)};
await runInNestedHost('echo started; sleep 600', { timeoutMs: 300_000, onOutput: (t) => process.stdout.write(t), progress: () => {} });`;
  const runner = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let output = '';
  await new Promise<void>((resolveStarted, reject) => {
    runner.stdout.on('data', (d: Buffer) => {
      output += d.toString();
      if (output.includes('started')) resolveStarted();
    });
    runner.on('exit', (code) => reject(new Error(`the runner exited (${code}) before its command started: ${output}`)));
  });
  const qemus = qemusOf(runner.pid!);
  assert.equal(qemus.length, 1, 'the runner has one QEMU');
  const owned = readdirSync(tmpdir())
    .filter((name) => name.startsWith(WORK_DIR_PREFIX))
    .map((name) => join(tmpdir(), name))
    .filter((dir) => readFileSync(join(dir, OWNER_FILE), 'utf8').startsWith(`${runner.pid} `));
  assert.equal(owned.length, 1, 'the runner owns one work folder');
  runner.kill('SIGKILL');
  const t0 = Date.now();
  while (alive(qemus[0]!) && Date.now() - t0 < 10_000) await new Promise((r) => setTimeout(r, 100));
  assert.equal(alive(qemus[0]!), false, 'QEMU died with its parent');
  assert.ok(existsSync(owned[0]!), 'a killed runner cannot remove its folder');
  assert.ok(removeStaleTempDirs(WORK_DIR_PREFIX).includes(owned[0]!), 'the sweep removed the dead runner\'s folder');
  assert.equal(existsSync(owned[0]!), false);
});

test('a nested host that stops running (no heartbeat) ends the run as NestedHostHungError, though the command may be silent', async () => {
  const t0 = Date.now();
  let frozen = 0;
  let output = '';
  await assert.rejects(
    runInNestedHost('echo started; sleep 600', {
      assets,
      timeoutMs: 300_000,
      wedgeTimeoutMs: 10_000,
      progress,
      onOutput: (t) => {
        // Output arrives in pieces of any size: look at all of it.
        output += t;
        if (frozen === 0 && output.includes('started')) frozen = freezeOurQemus();
      },
    }),
    (e: unknown) => e instanceof NestedHostHungError && /no heartbeat from its init for 1\d s \(the emulated machine wedged; its console was silent for the last \d+ s\)/.test(e.message) && /run it again/.test(e.message),
  );
  assert.equal(frozen, 1, 'one QEMU was frozen');
  assert.ok(Date.now() - t0 < 120_000, 'returned long before the 300 s timeout');
});

test('QEMU failing to start is an error that says why', async () => {
  await assert.rejects(runInNestedHost('true', { assets: { ...assets, qemu: '/nonexistent/qemu-system-x86_64' }, progress }), NestedHostStartError);
  // A file that is no kernel: QEMU exits at once with its own complaint in the message.
  await assert.rejects(runInNestedHost('true', { assets: { ...assets, kernel: '/etc/hostname' }, progress }), /QEMU exited with status 1 before the nested host booted: .+/);
});

test('a cwd the nested host cannot see is refused before booting', async () => {
  await assert.rejects(runInNestedHost('true', { assets, cwd: '/proc/somewhere' }), NestedHostUsageError);
  await assert.rejects(runInNestedHost('true', { assets, env: { 'BAD NAME': 'x' } }), NestedHostUsageError);
});
