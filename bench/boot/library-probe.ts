/**
 * One tsvmm boot through the library, in a process of its own, timing each phase from inside.
 * Started by measure.ts once per sample:
 *
 *   node dist/bench/boot/library-probe.js KERNEL INITRD CMDLINE VCPUS MEMORY_MIB
 *
 * Guest console goes to stdout (so the parent sees the same lines as from the CLI); the phase
 * timestamps go to stderr as one `BENCH-LIB <json>` line at the end. Times are milliseconds on
 * `performance.timeOrigin + performance.now()`, i.e. Unix time with sub-millisecond resolution,
 * so the parent can relate them to the moment it spawned this process.
 *
 * tsvmm is imported dynamically so that module loading is timed rather than hoisted before the
 * first line runs.
 */
import { writeSync } from 'node:fs';
import { performance } from 'node:perf_hooks';

const now = (): number => performance.timeOrigin + performance.now();

export interface LibraryPhases {
  /** performance.timeOrigin: Node's own idea of when this process started. */
  timeOrigin: number;
  /** This module's first line (Node bootstrap and loading this file done). */
  mainStart: number;
  importDone: number;
  createDone: number;
  startDone: number;
  bootTimer?: number;
  /** The guest's first command line reached the console (parsed here from the UART bytes). */
  firstCommandLine?: number;
  waitDone: number;
  exitReason: string;
  exitStatus: number;
  /** VMM CPU time (user + system) at the boot timer, as the boot timer reports it. */
  bootTimerCpuMs?: number;
}

async function main(): Promise<number> {
  const mainStart = now();
  const [kernel, initrd, cmdline, vcpus, memoryMib] = process.argv.slice(2);
  if (kernel === undefined || initrd === undefined || cmdline === undefined || vcpus === undefined || memoryMib === undefined) {
    process.stderr.write('usage: library-probe KERNEL INITRD CMDLINE VCPUS MEMORY_MIB\n');
    return 2;
  }
  const { MicroVm } = await import('../../src/vmm/microvm.js');
  const importDone = now();
  let bootTimer: number | undefined;
  let bootTimerCpuMs: number | undefined;
  let firstCommandLine: number | undefined;
  let pending = '';
  const vm = MicroVm.create({
    kernel,
    initrd,
    cmdline,
    vcpus: Number(vcpus),
    memoryMib: Number(memoryMib),
    onConsoleOutput: (bytes) => {
      process.stdout.write(bytes);
      if (firstCommandLine !== undefined) return;
      pending = (pending + Buffer.from(bytes).toString('latin1')).slice(-256);
      if (/(^|\n)BENCH-UP [\d.]+\r?\n/.test(pending)) firstCommandLine = now();
    },
    onBootTimer: (e) => {
      bootTimer ??= now();
      bootTimerCpuMs ??= e.cpuUs / 1000;
    },
  });
  const createDone = now();
  vm.start();
  const startDone = now();
  const exit = await vm.wait();
  const waitDone = now();
  const phases: LibraryPhases = {
    timeOrigin: performance.timeOrigin,
    mainStart,
    importDone,
    createDone,
    startDone,
    waitDone,
    exitReason: exit.reason,
    exitStatus: exit.status,
    ...(bootTimer !== undefined ? { bootTimer } : {}),
    ...(bootTimerCpuMs !== undefined ? { bootTimerCpuMs } : {}),
    ...(firstCommandLine !== undefined ? { firstCommandLine } : {}),
  };
  process.stderr.write(`BENCH-LIB ${JSON.stringify(phases)}\n`);
  // When the event loop has drained: the gap from waitDone shows what still held the process
  // (timers, handles, workers); the rest up to the parent seeing the exit is teardown.
  process.on('exit', () => writeSync(2, `BENCH-LIB-EXIT ${now()}\n`));
  return exit.status;
}

process.exitCode = await main();
