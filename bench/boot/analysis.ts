/**
 * Derived metrics per sample, and their summaries per VMM. Everything is in milliseconds; guest
 * clock values (seconds in the samples) are converted here.
 *
 * The two clocks: the benchmark's (wall time since the VMM process was spawned) and the guest's
 * (kernel uptime, whose zero is when the kernel's clock starts early in start_kernel). A console
 * line that carries the guest uptime ties them: wall(line) − uptime(line) is the wall time at
 * which the guest clock read zero. That turns any guest-clock milestone into wall time the same
 * way for every VMM, which matters because QEMU has no boot-timer device.
 */
import type { RunSample, VmmKind } from './samples.js';
import { type Summary, summarize } from './stats.js';

export type MetricName =
  | 'wallToInit'
  | 'wallToBootTimer'
  | 'wallToCommand'
  | 'wallToExit'
  | 'guestInit'
  | 'guestCommand'
  | 'guestInitrdUnpack'
  | 'guestRtcProbe'
  | 'spawnToGuestZero'
  | 'initToCommand'
  | 'commandToExit'
  | 'overheadMiB'
  | 'rssMiB'
  | 'cpuMs'
  | 'libSpawnToNode'
  | 'libNodeBootstrap'
  | 'libImport'
  | 'libCreate'
  | 'libStart'
  | 'libStartToGuestZero'
  | 'libCommandToVmEnd'
  | 'libVmEndToExitEvent'
  | 'libExitEventToExit'
  | 'libVmEndToExit'
  | 'libBootTimer'
  | 'cliSelfBootTimer'
  | 'cliBeforeVmmClock';

export const METRIC_LABELS: Record<MetricName, string> = {
  wallToInit: 'VMM start → guest /init (wall)',
  wallToBootTimer: 'VMM start → boot-timer line (wall)',
  wallToCommand: 'VMM start → first command line (wall)',
  wallToExit: 'VMM start → VMM exit (wall)',
  guestInit: 'guest clock at /init',
  guestCommand: 'guest clock at command start',
  guestInitrdUnpack: 'initramfs unpack (guest clock)',
  guestRtcProbe: 'guest clock at CMOS RTC probe end',
  spawnToGuestZero: 'VMM start → guest clock starts',
  initToCommand: '/init → command (mounts, module loads)',
  commandToExit: 'command → VMM exit (command, poweroff, teardown)',
  overheadMiB: 'VMM memory overhead (peak RSS − guest RAM RSS)',
  rssMiB: 'VMM RSS incl. guest RAM (at that peak)',
  cpuMs: 'VMM CPU time (user+sys, whole run)',
  libSpawnToNode: 'spawn → Node process origin',
  libNodeBootstrap: 'Node bootstrap + entry module',
  libImport: 'import tsvmm (MicroVm and deps)',
  libCreate: 'MicroVm.create (KVM, memory, kernel, ACPI)',
  libStart: 'vm.start() (vCPU workers launched)',
  libStartToGuestZero: 'start() → guest clock starts',
  libCommandToVmEnd: 'command → vm.wait() resolves',
  libVmEndToExitEvent: "vm.wait() → process 'exit' event (event loop drains)",
  libExitEventToExit: "'exit' event → parent sees exit (teardown)",
  libVmEndToExit: 'vm.wait() → process exit',
  libBootTimer: 'VMM start → boot timer (in process)',
  cliSelfBootTimer: 'boot timer as the CLI reports it (from its own VMM-start clock)',
  cliBeforeVmmClock: "spawn → the CLI's VMM-start clock (Node start, CLI imports, KVM + memory setup)",
};

const sec = (s: number | undefined): number | undefined => (s === undefined ? undefined : s * 1000);
const diff = (a: number | undefined, b: number | undefined): number | undefined => (a === undefined || b === undefined ? undefined : a - b);

export function metrics(s: RunSample): Partial<Record<MetricName, number>> {
  const g = s.guest;
  const guestCommand = sec(g.uptimeAtCommand);
  const guestInit = sec(g.kernel.runInit);
  const lib = s.library;
  // Wall time of the command line as seen in the VMM process when it was measured there (less pipe latency), else by the parent.
  const commandWall = lib?.firstCommandLine ?? s.wall.firstCommandLineMs;
  const guestZero = diff(commandWall, guestCommand);
  const m: Partial<Record<MetricName, number>> = {
    wallToCommand: s.wall.firstCommandLineMs,
    wallToExit: s.wall.exitMs,
    wallToBootTimer: s.wall.bootTimerMs ?? lib?.bootTimer,
    guestInit,
    guestCommand,
    guestInitrdUnpack: diff(sec(g.kernel.initrdFreed), sec(g.kernel.initrdUnpackStart)),
    guestRtcProbe: sec(g.kernel.rtcProbed),
    spawnToGuestZero: guestZero,
    wallToInit: guestZero === undefined || guestInit === undefined ? undefined : guestZero + guestInit,
    initToCommand: diff(guestCommand, guestInit),
    commandToExit: diff(s.wall.exitMs, commandWall),
    overheadMiB: s.memory.peakOverheadKiB === undefined ? undefined : s.memory.peakOverheadKiB / 1024,
    rssMiB: s.memory.rssAtPeakKiB === undefined ? undefined : s.memory.rssAtPeakKiB / 1024,
    cpuMs: s.memory.cpuMsAtLastSample,
    cliSelfBootTimer: s.selfReported?.bootTimerMs,
    cliBeforeVmmClock: diff(s.wall.bootTimerMs, s.selfReported?.bootTimerMs),
  };
  if (lib !== undefined) {
    m.libSpawnToNode = lib.timeOrigin;
    m.libNodeBootstrap = diff(lib.mainStart, lib.timeOrigin);
    m.libImport = diff(lib.importDone, lib.mainStart);
    m.libCreate = diff(lib.createDone, lib.importDone);
    m.libStart = diff(lib.startDone, lib.createDone);
    m.libStartToGuestZero = diff(guestZero, lib.startDone);
    m.libCommandToVmEnd = diff(lib.waitDone, lib.firstCommandLine);
    m.libVmEndToExit = diff(s.wall.exitMs, lib.waitDone);
    m.libVmEndToExitEvent = diff(lib.exitEvent, lib.waitDone);
    m.libExitEventToExit = diff(s.wall.exitMs, lib.exitEvent);
    m.libBootTimer = lib.bootTimer;
  }
  for (const k of Object.keys(m) as MetricName[]) if (m[k] === undefined) delete m[k];
  return m;
}

export type VmmSummaries = Partial<Record<MetricName, Summary>>;

/** Summaries of the measured (not warm-up), successful samples of one VMM. */
export function summarizeVmm(samples: readonly RunSample[], vmm: VmmKind): { summaries: VmmSummaries; used: number; failed: number } {
  const mine = samples.filter((s) => s.vmm === vmm && !s.warmup);
  const ok = mine.filter((s) => s.ok);
  const per = ok.map(metrics);
  const summaries: VmmSummaries = {};
  for (const name of Object.keys(METRIC_LABELS) as MetricName[]) {
    const sm = summarize(per.map((p) => p[name]));
    if (sm !== undefined) summaries[name] = sm;
  }
  return { summaries, used: ok.length, failed: mine.length - ok.length };
}
