/**
 * `npm test`: runs every test layer where it can run, and fails if any test fails.
 *
 *   unit    no KVM: loaders, tables, device models — always on this machine
 *   nested  the nested-host harness itself — on this machine (QEMU/TCG, no KVM needed)
 *   kvm     tiny hand-written guests on a real /dev/kvm — directly when this machine has one
 *           (hardware or PVM), otherwise inside the nested host
 *   guest   real Linux guests — directly with hardware virtualization, otherwise inside the
 *           nested host, sharing one nested boot with the kvm layer when both go there
 *
 * It installs what the tests need (Debian packages, kernels) first, with progress shown, and
 * ends with one line "N passed, N failed, N skipped".
 */
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { detectVirtualization } from '../src/host/environment.js';
import { ensureNestedHostAssets, explainNestedHost, NestedHostHungError, NestedHostPanicError, NestedHostResetError, runInNestedHost } from '../src/host/nested.js';
import { shellQuote } from '../src/host/nested-init.js';
import { ensureAptPackages } from '../src/image/debian.js';
import { ensureDefaultGuest } from '../src/image/default-guest.js';
import { SOCAT, ensureToolsInitramfs } from '../src/image/guest-tools.js';
import { stderrProgress } from '../src/util/progress.js';

const repo = fileURLToPath(new URL('../../', import.meta.url));
const distTest = join(repo, 'dist', 'test');

/** Debian packages the test layers use on this machine (iasl to decode ACPI tables, cpio to read archives back). */
/** iputils-ping and iproute2: the network tests' host side (ping the guest, make a tap); curl: the API's getting-started test. */
const TEST_PACKAGES = ['acpica-tools', 'cpio', 'busybox-static', 'lz4', 'iputils-ping', 'iproute2', 'curl'];

/**
 * No single test may run longer than this: nothing hangs. The longest guest test takes about a
 * minute in the nested host; a guest boot that hangs there is given 150 s and one retry.
 */
const FILE_TIMEOUT_MS = 6 * 60_000;

interface Counts {
  pass: number;
  fail: number;
  skipped: number;
}

function testFiles(layer: string): string[] {
  const dir = join(distTest, layer);
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else if (name.endsWith('.test.js')) out.push(p);
    }
  };
  walk(dir);
  return out;
}

function nodeTestArgs(files: string[]): string[] {
  return ['--test', '--test-reporter=spec', `--test-timeout=${FILE_TIMEOUT_MS}`, ...files.map((f) => relative(repo, f))];
}

/** Reads the spec reporter's closing summary ("ℹ pass 12" …). */
function countsFrom(rawOutput: string): Counts {
  // Colours (a TTY inside the nested host) would hide the numbers from the patterns below.
  const output = rawOutput.replace(/\x1b\[[0-9;]*m/g, '');
  const grab = (key: string): number => {
    const all = [...output.matchAll(new RegExp(`^\\S*\\s*${key} (\\d+)\\s*$`, 'gm'))];
    const last = all[all.length - 1];
    return last ? Number(last[1]) : 0;
  };
  return { pass: grab('pass'), fail: grab('fail') + grab('cancelled'), skipped: grab('skipped') + grab('todo') };
}

function runLocal(files: string[]): Promise<{ status: number; counts: Counts }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, nodeTestArgs(files), { cwd: repo, stdio: ['ignore', 'pipe', 'inherit'] });
    let output = '';
    child.stdout.on('data', (b: Buffer) => {
      const s = b.toString();
      output += s;
      process.stdout.write(s);
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ status: code ?? 1, counts: countsFrom(output) }));
  });
}

/** One attempt at the kvm+guest stage in the nested host (about 12 min when healthy, 20 under load). */
const NESTED_STAGE_TIMEOUT_MS = 30 * 60_000;
/** All attempts together: the unit stage and set-up fit in CI's 90 minutes beside it. */
const NESTED_TOTAL_BUDGET_MS = 70 * 60_000;
/** Tests report as they finish, and none may take longer than FILE_TIMEOUT_MS: silence beyond that is a hang. */
const NESTED_STALL_MS = FILE_TIMEOUT_MS + 60_000;
/**
 * A nested host that fails as a machine (kernel lockup or panic, a reset, or a wedge that silences
 * every test) gets a fresh boot for the test files it had not finished. Measured on 2-core machines:
 * about one stage in three lost its nested host, each time at a different test. Up to three
 * attempts, within NESTED_TOTAL_BUDGET_MS in all, keep the worst case inside CI's 90 minutes.
 */
const NESTED_ATTEMPTS = 3;
/** Printed inside the nested host after each test file: `<marker> <exit status> <file>`. */
const FILE_DONE_MARKER = 'tsvmm-test-file-done';

/** The files a nested run finished, each with its status and the counts from its own output. */
function finishedFiles(output: string): Map<string, { status: number; counts: Counts }> {
  const done = new Map<string, { status: number; counts: Counts }>();
  let from = 0;
  for (const m of output.matchAll(new RegExp(`^${FILE_DONE_MARKER} (\\d+) (\\S+)\\r?$`, 'gm'))) {
    done.set(m[2]!, { status: Number(m[1]), counts: countsFrom(output.slice(from, m.index)) });
    from = m.index! + m[0].length;
  }
  return done;
}

async function runNested(files: string[]): Promise<{ status: number; counts: Counts }> {
  const counts: Counts = { pass: 0, fail: 0, skipped: 0 };
  let status = 0;
  let remaining = files.map((f) => relative(repo, f));
  const started = Date.now();
  for (let attempt = 1; remaining.length > 0; attempt++) {
    const timeoutMs = Math.min(NESTED_STAGE_TIMEOUT_MS, NESTED_TOTAL_BUDGET_MS - (Date.now() - started));
    // One node --test per file, so that a machine failure costs only the files not yet done.
    const script = remaining
      .map((f) => `node ${nodeTestArgs([join(repo, f)]).map(shellQuote).join(' ')}; echo "${FILE_DONE_MARKER} $? ${f}"`)
      .join('\n');
    let output = '';
    let failure: string | undefined;
    try {
      const r = await runInNestedHost(script, {
        cwd: repo,
        timeoutMs,
        stallTimeoutMs: NESTED_STALL_MS,
        onOutput: (text: string) => {
          output += text;
          process.stdout.write(text);
        },
        progress: stderrProgress,
      });
      output = r.output;
      // Every test has its own time limit (FILE_TIMEOUT_MS) and every guest boot a shorter one,
      // so a silence longer than both means the test process itself stopped running: seen when
      // the emulated host wedged (no lockup report, no output, for 10+ minutes).
      if (r.stalled) failure = `the kvm/guest tests printed nothing for ${NESTED_STALL_MS / 60_000} min although each test has a ${FILE_TIMEOUT_MS / 60_000}-min limit: the nested host stopped running them`;
      else if (r.timedOut) failure = `the kvm/guest tests did not finish within ${Math.round(timeoutMs / 60_000)} min`;
    } catch (e) {
      // Only the emulated machine failing is retried; a test failing or hanging is a result.
      const message = e instanceof Error ? e.message : String(e);
      if (!(e instanceof NestedHostHungError || e instanceof NestedHostPanicError || e instanceof NestedHostResetError)) {
        process.stdout.write(`\nthe nested host failed: ${message}\n`);
        return { status: 1, counts };
      }
      failure = `the nested host failed as a machine: ${message}`;
    }
    const done = finishedFiles(output);
    for (const result of done.values()) {
      counts.pass += result.counts.pass;
      counts.fail += result.counts.fail;
      counts.skipped += result.counts.skipped;
      if (result.status !== 0) status = result.status;
    }
    remaining = remaining.filter((f) => !done.has(f));
    if (remaining.length === 0) break;
    failure ??= `the nested host ended before ${remaining.join(', ')} ran`;
    // A stage that ran out of time is slow, not broken: another attempt would be as slow.
    const retry = attempt < NESTED_ATTEMPTS && !failure.includes('did not finish within') && NESTED_TOTAL_BUDGET_MS - (Date.now() - started) > 10 * 60_000;
    if (!retry) {
      process.stdout.write(`\n${failure}; not finished: ${remaining.join(', ')}\n`);
      return { status: status || 1, counts };
    }
    process.stdout.write(
      `\n!!! ${failure}\n!!! attempt ${attempt} of ${NESTED_ATTEMPTS}: ${done.size} test files finished and count; ` +
        `${remaining.length} (${remaining.join(', ')}) run again in a fresh nested host\n\n`,
    );
  }
  return { status, counts };
}

function banner(text: string): void {
  process.stdout.write(`\n=== ${text}\n`);
}

async function main(): Promise<number> {
  const env = detectVirtualization();
  banner(`environment: ${env.summary}`);
  ensureAptPackages(TEST_PACKAGES, stderrProgress);
  // The guest kernel and initramfs are built here, where the cache is writable: inside the
  // nested host the root (and so the cache) is read-only.
  const guest = ensureDefaultGuest(stderrProgress);
  // The network and vsock tests' guest carries socat (test/support/tools-guest.ts).
  ensureToolsInitramfs(guest.initrd, [SOCAT], stderrProgress);

  const total: Counts = { pass: 0, fail: 0, skipped: 0 };
  let failedRuns = 0;
  const add = (name: string, r: { status: number; counts: Counts }): void => {
    total.pass += r.counts.pass;
    total.fail += r.counts.fail;
    total.skipped += r.counts.skipped;
    if (r.status !== 0) {
      failedRuns++;
      process.stdout.write(`\n${name}: exited with status ${r.status}\n`);
    }
  };

  const unit = testFiles('unit');
  banner(`unit tests (${unit.length} files, no KVM)`);
  add('unit', await runLocal(unit));

  const nestedFiles = testFiles('nested');
  const kvmFiles = testFiles('kvm');
  const guestFiles = testFiles('guest');
  const needNested = !env.canRunTinyGuests || !env.canRunStockLinux;
  if (needNested || nestedFiles.length > 0) ensureNestedHostAssets(stderrProgress);

  banner(`nested-host harness tests (${nestedFiles.length} files)`);
  add('nested', await runLocal(nestedFiles));

  const direct: string[] = [];
  const inNested: string[] = [];
  (env.canRunTinyGuests ? direct : inNested).push(...kvmFiles);
  (env.canRunStockLinux ? direct : inNested).push(...guestFiles);
  if (direct.length > 0) {
    banner(`kvm/guest tests directly on this machine's /dev/kvm (${direct.length} files)`);
    add('direct', await runLocal(direct));
  }
  if (inNested.length > 0) {
    banner(`kvm/guest tests inside one nested host boot (${inNested.length} files): ${explainNestedHost(env)}`);
    add('nested-host run', await runNested(inNested));
  }

  process.stdout.write(`\n${total.pass} passed, ${total.fail} failed, ${total.skipped} skipped\n`);
  return failedRuns > 0 || total.fail > 0 || total.pass === 0 ? 1 : 0;
}

process.exitCode = await main();
