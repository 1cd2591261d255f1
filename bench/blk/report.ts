/**
 * The block benchmark's report: markdown with the target verdict per job (issue #4: tsvmm at
 * least 1.0× QEMU's IOPS and throughput), the VMM's CPU per I/O and where it goes, latency, what
 * the guest saw of each drive, the setup, and SVG bar charts (bench/boot/svg.ts) beside it, plus
 * the raw result as JSON.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Summary } from '../boot/stats.js';
import { type BarChart, barChartSvg } from '../boot/svg.js';
import { type BlkMetric, headline, idleSummaries, type JobSummaries, jobsOf, kvmStatsPerIo, summarizeResult } from './analysis.js';
import { KVM_STATS_SHOWN } from './kvm-stats.js';
import type { FioJob } from './jobs.js';
import type { BlkResult, MeasuringEnvironment, NestedRestart, RunSampleBase, VmmKind } from './samples.js';

/** Issue #4: at least QEMU's IOPS and throughput. */
export const TARGET_RATIO = 1.0;

export const VMM_LABELS: Record<VmmKind, string> = { tsvmm: 'tsvmm virtio-blk (PCI)', qemu: 'QEMU q35 virtio-blk-pci' };
const COLORS: Record<VmmKind, string> = { tsvmm: '#2b7bb9', qemu: '#d9822b' };

const grouped = (v: number): string => Math.round(v).toLocaleString('en-US');
const fixed = (digits: number) => (v: number): string => v.toFixed(digits);
const FORMAT: Record<BlkMetric, (v: number) => string> = {
  iops: grouped,
  mbps: fixed(1),
  clatMeanUs: fixed(0),
  clatP99Us: fixed(0),
  cpuUsPerIo: fixed(1),
  vmmUsPerIo: fixed(1),
  guestUsPerIo: fixed(1),
  vcpuHostUsPerIo: fixed(1),
  otherUsPerIo: fixed(1),
  deviceRequestsPerIo: fixed(2),
  flushes: grouped,
  interruptsPerIo: fixed(2),
  vmmCpuPct: fixed(0),
};

function cell(s: Summary | undefined, m: BlkMetric): string {
  if (s === undefined) return '–';
  const f = FORMAT[m];
  return s.n > 1 && s.min !== s.max ? `${f(s.median)} <sub>(${f(s.min)}–${f(s.max)})</sub>` : f(s.median);
}

export function ratio(a: Summary | undefined, b: Summary | undefined): number | undefined {
  return a === undefined || b === undefined || b.median <= 0 ? undefined : a.median / b.median;
}
export const ratioText = (r: number | undefined): string => (r === undefined ? '–' : `${r.toFixed(2)}×`);

function chart(title: string, unit: string, vmms: readonly VmmKind[], jobs: readonly FioJob[], sums: Record<VmmKind, Record<string, JobSummaries>>, pick: (j: FioJob, s: JobSummaries) => Summary | undefined): BarChart {
  return {
    title,
    unit,
    series: vmms.map((v) => ({ label: VMM_LABELS[v], color: COLORS[v] })),
    groups: jobs.map((j) => ({ label: j.label, values: vmms.map((v) => pick(j, sums[v][j.name] ?? {})) })),
  };
}

export const code = (s: string): string => `\`${s.replace(/`/g, "'")}\``;

/** argv with the long kernel command line shortened, for a table cell. */
export function shortArgv(argv: readonly string[]): string {
  return argv.map((a) => (a.length > 120 ? `${a.slice(0, 60)}…` : /[\s"']/.test(a) ? `'${a}'` : a)).join(' ');
}

/** The Setup table's first rows: where it ran, the machine under the nested host, the measuring host, QEMU and Node. */
export function machineRows(env: MeasuringEnvironment): string[] {
  const L = ['| | |', '|---|---|'];
  L.push(`| where | ${env.nestedHost ? 'inside the nested host (one boot for the whole run)' : 'directly on this machine'} |`);
  if (env.outer !== undefined) {
    const end = env.outer.loadAverageEnd !== undefined ? ` → ${env.outer.loadAverageEnd.map((x) => x.toFixed(2)).join(' ')}` : '';
    L.push(`| outer machine | ${env.outer.cpuModel}, ${env.outer.cpus} CPUs, Linux ${env.outer.kernelRelease}, load ${env.outer.loadAverage.map((x) => x.toFixed(2)).join(' ')}${end} |`);
  }
  L.push(`| measuring host | ${env.cpuModel}, ${env.cpus} CPUs, ${env.memTotalMiB} MiB, Linux ${env.kernelRelease}, load ${env.loadAverageStart.map((x) => x.toFixed(2)).join(' ')} → ${env.loadAverageEnd.map((x) => x.toFixed(2)).join(' ')} |`);
  L.push(`| QEMU | ${env.qemuVersion} |`, `| Node.js | ${env.nodeVersion} |`);
  return L;
}

/** One Setup row per VMM: its command line (from a successful boot if any). */
export function commandRows(runs: readonly RunSampleBase[], vmms: readonly VmmKind[]): string[] {
  const L: string[] = [];
  for (const v of vmms) {
    const run = runs.find((r) => r.vmm === v && r.ok) ?? runs.find((r) => r.vmm === v);
    if (run !== undefined) L.push(`| ${v} command | ${code(shortArgv(run.argv))} |`);
  }
  return L;
}

/** The Runs table (one row per boot; `ready` names what the INFO line means) and the notes of failed boots. */
export function runRows(runs: readonly RunSampleBase[], ready: string): string[] {
  const L = [`| round | VMM | ok | VMM start → ${ready} | VMM start → exit | problem |`, '|---:|---|---|---:|---:|---|'];
  for (const r of runs) {
    L.push(`| ${r.round + 1} | ${r.vmm}${r.cpuModel !== undefined ? ` (-cpu ${r.cpuModel})` : ''}${r.retriedJobs !== undefined ? `, again for ${r.retriedJobs.join(', ')}` : ''} | ${r.ok ? 'yes' : '**no**'} | ${r.infoAtMs !== undefined ? `${(r.infoAtMs / 1000).toFixed(1)} s` : '–'} | ${(r.wallMs / 1000).toFixed(1)} s | ${r.problem ?? ''} |`);
  }
  for (const r of runs.filter((x) => !x.ok && x.notes.length > 0)) L.push('', `Notes from round ${r.round + 1}, ${r.vmm}:`, '', '```', ...r.notes, '```');
  return L;
}

/** Write `<base>.md`, `<base>.json` and `<base>-*.svg` into `dir`; returns the markdown's path. */
export function writeReport(result: BlkResult, dir: string, base: string): string {
  const vmms = result.config.vmms;
  const jobs = jobsOf(result);
  const sums = summarizeResult(result);
  const random = jobs.filter((j) => j.metric === 'iops');
  const sequential = jobs.filter((j) => j.metric === 'mbps');
  const charts: { file: string; chart: BarChart }[] = [];
  if (random.length > 0) charts.push({ file: `${base}-iops.svg`, chart: chart('4 KiB random I/O', 'IOPS (higher is better)', vmms, random, sums, (_, s) => s.iops) });
  if (sequential.length > 0) charts.push({ file: `${base}-throughput.svg`, chart: chart('1 MiB sequential I/O', 'MB/s (higher is better)', vmms, sequential, sums, (_, s) => s.mbps) });
  charts.push({ file: `${base}-cpu-per-io.svg`, chart: chart('VMM process CPU per I/O (utime + stime)', 'µs per I/O (lower is better)', vmms, jobs, sums, (_, s) => s.cpuUsPerIo) });
  charts.push({ file: `${base}-vmm-cpu-per-io.svg`, chart: chart('VMM CPU per I/O excluding guest time', 'µs per I/O (lower is better)', vmms, jobs, sums, (_, s) => s.vmmUsPerIo) });
  charts.push({ file: `${base}-latency.svg`, chart: chart('Mean completion latency (fio clat)', 'µs (lower is better)', vmms, jobs, sums, (_, s) => s.clatMeanUs) });
  for (const c of charts) writeFileSync(join(dir, c.file), barChartSvg(c.chart));
  writeFileSync(join(dir, `${base}.json`), `${JSON.stringify(result, null, 2)}\n`);

  const env = result.environment;
  const cfg = result.config;
  const L: string[] = [];
  const both = vmms.includes('tsvmm') && vmms.includes('qemu');
  L.push(`# Block I/O: tsvmm virtio-blk vs QEMU virtio-blk-pci — ${result.startedAt.slice(0, 10)}`, '');
  L.push(
    `Generated by \`npm run bench:blk\` (bench/blk/); raw data: [${base}.json](${base}.json). ` +
      `fio ${cfg.runtimeSeconds} s per job${cfg.warmupSeconds ? ` after ${cfg.warmupSeconds} s of unmeasured warm-up I/O (4 KiB random reads and writes, QD 1) in each boot` : ''}, ${cfg.rounds} round${cfg.rounds === 1 ? '' : 's'} (one guest boot per VMM per round, every job in each boot), ` +
      `${cfg.vcpus} vCPUs, ${cfg.memoryMib} MiB, a ${cfg.imageMib} MiB raw image on ${env.imageFsType}. ` +
      `Cells are the median over rounds with (min–max) when they differ. tsvmm revision: ${cfg.tsvmmRevision ?? 'unknown'}${cfg.tsvmmPoller !== undefined ? `, its poller waiting ${cfg.tsvmmPoller} (TSVMM_POLLER)` : ''}.`,
    '',
  );
  if (env.nestedHost) {
    L.push(
      `> **Measured inside the nested host** (${env.outerSummary ?? 'no usable /dev/kvm on the machine'}): a QEMU TCG-emulated x86 machine with AMD-V, ` +
        'whose KVM runs both VMMs. Every VM exit, interrupt and host-side instruction is emulated, so absolute numbers are orders of magnitude below ' +
        'hardware and the cost of exits is inflated; compare the ratios, not the IOPS.',
      '',
    );
  }
  if (result.incomplete !== undefined) {
    L.push(`> **Incomplete run:** ${result.incomplete}. Every table holds only the guest boots that finished; the rounds the run was set for did not all happen.`, '');
  }
  const restarts = nestedRestartNote(result.nestedRestarts);
  if (restarts !== undefined) L.push(restarts, '');

  if (both) {
    L.push(`## Target: at least ${TARGET_RATIO.toFixed(1)}× QEMU's IOPS and throughput (issue #4)`, '');
    L.push('| job | measure | tsvmm | QEMU | tsvmm / QEMU | target |', '|---|---|---:|---:|---:|---|');
    let met = 0;
    let judged = 0;
    for (const j of jobs) {
      const t = headline(j, sums.tsvmm[j.name] ?? {});
      const q = headline(j, sums.qemu[j.name] ?? {});
      const r = ratio(t, q);
      const m: BlkMetric = j.metric === 'iops' ? 'iops' : 'mbps';
      if (r !== undefined) {
        judged++;
        if (r >= TARGET_RATIO) met++;
      }
      L.push(`| ${j.label} | ${j.metric === 'iops' ? 'IOPS' : 'MB/s'} | ${cell(t, m)} | ${cell(q, m)} | ${ratioText(r)} | ${r === undefined ? '–' : r >= TARGET_RATIO ? 'met' : 'missed'} |`);
    }
    L.push('', `**${met} of ${judged} jobs meet the target.** (Ratio of medians; above 1 means tsvmm is faster.)`, '');
  } else {
    L.push('## Results', '', '| job | ' + vmms.map((v) => VMM_LABELS[v]).join(' | ') + ' |', '|---|' + vmms.map(() => '---:|').join(''));
    for (const j of jobs) L.push(`| ${j.label} (${j.metric === 'iops' ? 'IOPS' : 'MB/s'}) | ${vmms.map((v) => cell(headline(j, sums[v][j.name] ?? {}), j.metric === 'iops' ? 'iops' : 'mbps')).join(' | ')} |`);
    L.push('');
  }
  for (const c of charts.slice(0, 2)) L.push(`![${c.chart.title}](${c.file})`, '');

  L.push('## Host CPU per I/O', '');
  L.push(
    'The VMM process\'s CPU time (utime + stime from /proc/PID/stat) over fio\'s I/O phase (from fio\'s exec_prerun to its exec_postrun, each printing a marker the harness reads /proc at), divided by the I/Os fio completed. ' +
      'It includes the time the vCPU threads spent running the guest (Linux counts guest mode as the thread\'s user time), so the columns split it: ' +
      '*guest* (guest_time), *vCPU threads outside guest mode* (KVM exits, halt polling; for QEMU also its MMIO emulation, done on the vCPU thread), ' +
      'and *other threads* (tsvmm: the main event loop with the device models and libuv\'s pool doing the file I/O; QEMU: its main loop and its aio thread pool). ' +
      '*VMM excl. guest* is the total minus guest time: what the VMM itself costs per I/O.',
    '',
  );
  L.push('| job | VMM | total µs/IO | guest | vCPU threads outside guest | other threads | VMM excl. guest | VMM CPU % of one core |', '|---|---|---:|---:|---:|---:|---:|---:|');
  for (const j of jobs) {
    for (const v of vmms) {
      const s = sums[v][j.name] ?? {};
      L.push(`| ${j.label} | ${v} | ${cell(s.cpuUsPerIo, 'cpuUsPerIo')} | ${cell(s.guestUsPerIo, 'guestUsPerIo')} | ${cell(s.vcpuHostUsPerIo, 'vcpuHostUsPerIo')} | ${cell(s.otherUsPerIo, 'otherUsPerIo')} | ${cell(s.vmmUsPerIo, 'vmmUsPerIo')} | ${cell(s.vmmCpuPct, 'vmmCpuPct')} |`);
    }
  }
  L.push('');
  if (both) {
    L.push('| job | total CPU per I/O, tsvmm / QEMU | excl. guest, tsvmm / QEMU |', '|---|---:|---:|');
    for (const j of jobs) {
      const t = sums.tsvmm[j.name] ?? {};
      const q = sums.qemu[j.name] ?? {};
      L.push(`| ${j.label} | ${ratioText(ratio(t.cpuUsPerIo, q.cpuUsPerIo))} | ${ratioText(ratio(t.vmmUsPerIo, q.vmmUsPerIo))} |`);
    }
    L.push('', '(Below 1 means tsvmm spends less CPU per I/O.)', '');
  }
  const kvm = kvmStatsPerIo(result);
  if (vmms.some((v) => Object.keys(kvm[v]).length > 0)) {
    const perIo = (x: Summary | undefined): string => {
      if (x === undefined) return '–';
      const f = (v: number): string => v.toFixed(v >= 10 ? 1 : 2);
      return x.n > 1 && x.min !== x.max ? `${f(x.median)} <sub>(${f(x.min)}–${f(x.max)})</sub>` : f(x.median);
    };
    L.push(
      '### KVM exits per I/O',
      '',
      "KVM's own counters for the VM over the same phase (debugfs `/sys/kernel/debug/kvm/PID-FD/`, summed over vCPUs), per I/O fio completed. " +
        "They count what never reaches the VMM's userspace too: a queue notification through ioeventfd, a halt, a timer. " +
        `Columns: ${KVM_STATS_SHOWN.map((k) => `\`${k.name}\` (${k.label})`).join(', ')}.`,
      '',
      `| job | VMM | ${KVM_STATS_SHOWN.map((k) => k.name).join(' | ')} |`,
      `|---|---|${KVM_STATS_SHOWN.map(() => '---:|').join('')}`,
    );
    for (const j of jobs) {
      for (const v of vmms) {
        const k = kvm[v][j.name];
        if (k !== undefined) L.push(`| ${j.label} | ${v} | ${KVM_STATS_SHOWN.map((x) => perIo(k[x.name])).join(' | ')} |`);
      }
    }
    L.push('');
  }
  // How busy each VMM kept the measuring host: near its CPU count, CPU per I/O mostly mirrors 1 / IOPS.
  const busy = vmms.map((v) => {
    const pct = jobs.map((j) => sums[v][j.name]?.vmmCpuPct?.median).filter((x): x is number => x !== undefined);
    return { v, pct: pct.length > 0 ? pct.reduce((a, b) => a + b, 0) / pct.length : undefined };
  });
  if (busy.every((b) => b.pct !== undefined)) {
    L.push(
      `During the jobs the VMM process kept on average ${busy.map((b) => `${b.pct!.toFixed(0)} % (${b.v})`).join(' and ')} of one CPU busy; the measuring host has ${env.cpus}. ` +
        (busy.some((b) => b.pct! > 70 * env.cpus)
          ? 'That is close to all of them: the host is CPU-bound, so CPU per I/O here is largely the inverse of IOPS, and the split shows where the time goes rather than spare capacity.'
          : 'The host had CPU to spare, so CPU per I/O measures cost, not saturation.'),
      '',
    );
  }
  const idle = idleSummaries(result);
  if (vmms.some((v) => idle[v].total !== undefined)) {
    L.push(
      `With the guest idle (a ${cfg.idleSeconds ?? '?'} s \`sleep\` before the jobs, the drive untouched), the VMM process used, in % of one CPU. ` +
        'It is measured right after the guest came up, so it can hold the guest and the VMM settling after boot (the initramfs freed, garbage collected):',
      '',
      '| VMM | total | guest | vCPU threads outside guest | other threads |',
      '|---|---:|---:|---:|---:|',
    );
    for (const v of vmms) {
      const i = idle[v];
      L.push(`| ${v} | ${cell(i.total, 'vmmCpuPct')} | ${cell(i.guest, 'vmmCpuPct')} | ${cell(i.vcpuHost, 'vmmCpuPct')} | ${cell(i.other, 'vmmCpuPct')} |`);
    }
    L.push('');
  }
  for (const c of charts.slice(2, 4)) L.push(`![${c.chart.title}](${c.file})`, '');

  L.push('## Latency', '', 'fio\'s completion latency (submission to completion, in the guest), µs.', '');
  L.push('| job | ' + vmms.map((v) => `${v} mean | ${v} p99`).join(' | ') + ' |', '|---|' + vmms.map(() => '---:|---:|').join(''));
  for (const j of jobs) L.push(`| ${j.label} | ${vmms.map((v) => `${cell(sums[v][j.name]?.clatMeanUs, 'clatMeanUs')} | ${cell(sums[v][j.name]?.clatP99Us, 'clatP99Us')}`).join(' | ')} |`);
  L.push('');
  const latency = charts.find((c) => c.file.endsWith('-latency.svg'));
  if (latency !== undefined) L.push(`![${latency.chart.title}](${latency.file})`, '');

  L.push(
    '## What the guest saw',
    '',
    'From the guest script\'s BLK-INFO line (first successful boot per VMM), /sys/block/vda/stat around each job, and the interrupts on the drive\'s ' +
      'request queues in /proc/interrupts around each job (below 1 per I/O: the device signalled several completions at once, or the driver suppressed interrupts).',
    '',
  );
  const info = (v: VmmKind): Readonly<Record<string, string>> => result.runs.find((r) => r.vmm === v && Object.keys(r.guestInfo).length > 0)?.guestInfo ?? {};
  const keys = ['fio', 'engine', 'kernel', 'nproc', 'mem_kb', 'sectors', 'hw_queues', 'scheduler_default', 'scheduler', 'write_cache', 'max_sectors_kb', 'max_segments', 'nr_requests'];
  L.push('| | ' + vmms.join(' | ') + ' |', '|---|' + vmms.map(() => '---|').join(''));
  for (const k of keys) L.push(`| ${k} | ${vmms.map((v) => code(info(v)[k] ?? '–')).join(' | ')} |`);
  for (const j of jobs) {
    L.push(`| device requests per fio I/O, ${j.name} | ${vmms.map((v) => cell(sums[v][j.name]?.deviceRequestsPerIo, 'deviceRequestsPerIo')).join(' | ')} |`);
  }
  for (const j of jobs) {
    L.push(`| interrupts per fio I/O, ${j.name} | ${vmms.map((v) => cell(sums[v][j.name]?.interruptsPerIo, 'interruptsPerIo')).join(' | ')} |`);
  }
  L.push(`| flushes sent during the jobs | ${vmms.map((v) => { const f = jobs.map((j) => sums[v][j.name]?.flushes?.max ?? 0).reduce((a, b) => a + b, 0); return String(f); }).join(' | ')} |`);
  L.push('');

  L.push('## Setup', '', ...machineRows(env));
  L.push(`| guest | Debian kernel ${cfg.kernelRelease} (${(cfg.kernelBytes / 2 ** 20).toFixed(1)} MiB), bench initramfs ${(cfg.initrdBytes / 2 ** 20).toFixed(1)} MiB (the default guest's + fio and its libraries) |`);
  L.push(`| guest command | ${code(cfg.guestCommand)} |`);
  L.push(`| image | ${cfg.imageMib} MiB raw, written in full before the first boot${cfg.imageFillSeconds !== undefined ? ` (${cfg.imageFillSeconds.toFixed(1)} s)` : ''}, on ${env.imageFsType} |`);
  L.push(...commandRows(result.runs, vmms));
  L.push('');
  L.push(
    'Drive settings, side by side: tsvmm `--disk IMG,cache=unsafe` (its default) does buffered I/O, at once on its main thread ' +
      'where that cannot block (an image on tmpfs always, elsewhere RWF_NOWAIT page-cache hits; since f2291c8, before which everything went ' +
      'through libuv\'s thread pool) and on libuv\'s thread pool otherwise, and does not offer FLUSH; QEMU `cache=writeback,aio=threads` does buffered I/O on its own thread pool and offers FLUSH. ' +
      'fio writes with O_DIRECT and never fsyncs, so the guest sends no flush to either (see *flushes* above): both do the same buffered I/O ' +
      'into the host page cache. One request queue per vCPU on both, queue size 256 on both. QEMU runs `-M q35` because virtio-blk-pci needs a PCI machine.',
    '',
  );

  L.push('## Runs', '', ...runRows(result.runs, 'guest ready'));
  L.push('');

  L.push('## How to read it', '');
  L.push(
    '- **Throughput** is fio\'s own (`iops`, `bw_bytes`) for the direction the job measures, over its runtime. A 1 MiB job\'s I/Os may reach the device as ' +
      'several requests (the guest splits at max_sectors_kb); *device requests per fio I/O* shows it.',
    '- **CPU per I/O** counts the whole VMM process over fio\'s I/O phase only: fio\'s own start-up in the guest (seconds in the nested host, where the ' +
      'loader relocates some 60 libraries under emulation) is outside it; the raw JSON keeps the whole job\'s window too (`jobCpu`). The phase also holds ' +
      `the two marker commands fio runs (a fork and an echo each). With 100 Hz accounting ticks, over ${cfg.runtimeSeconds} s, a cell is good to a few per cent.`,
    '- **Queue depth 1** measures the round trip of one request through the VMM (doorbell, the VMM noticing it, the file I/O, the interrupt back). ' +
      '**Queue depth 32** measures how many requests the VMM keeps in flight and how it batches them.',
    '- **Noise.** Each round is one boot per VMM, alternating which goes first; the spread (min–max) across rounds is in every cell. The measuring ' +
      'host shares its CPUs with whatever else runs on the machine (load averages under *Setup*), so read a ratio together with its spread.',
    env.nestedHost
      ? '- **In the nested host** the guest\'s doorbell and interrupt paths are emulated twice over (the nested host\'s KVM runs on TCG), so a VMM that needs ' +
          'fewer exits or wake-ups per request gains far more than it would on hardware; CPU per I/O is inflated for both.'
      : '',
  );
  L.push('');
  const md = join(dir, `${base}.md`);
  writeFileSync(md, `${L.filter((l, i, a) => !(l === '' && a[i - 1] === '')).join('\n')}\n`);
  return md;
}

/**
 * The line saying the nested host failed during the run and the run went on in a fresh one
 * (run-helpers.ts measureInNestedHost), or undefined when it never did.
 */
export function nestedRestartNote(restarts: readonly NestedRestart[] | undefined): string | undefined {
  if (restarts === undefined || restarts.length === 0) return undefined;
  // The reason's first clause says what failed; the rest is advice meant for a run that stopped.
  const what = (reason: string): string => reason.split(/; QEMU killed|\. This is the emulated host failing/)[0]!.replace(/\s+/g, ' ').slice(0, 240);
  const each = restarts.map((r) => `after ${r.afterBoots} guest boot${r.afterBoots === 1 ? '' : 's'} (${what(r.reason)})${r.redoneBoots !== undefined ? `, the round it cut short run again from its start (${r.redoneBoots} finished boot${r.redoneBoots === 1 ? '' : 's'} dropped)` : ''}`);
  const whole = restarts.some((r) => r.redoneBoots !== undefined);
  return `> **The nested host failed ${restarts.length === 1 ? 'once' : `${restarts.length} times`} during this run**, and the run went on in a fresh nested host: ${each.join('; ')}. The boots on either side of a restart ran on different boots of the emulated machine${whole ? '; a cut round was run again whole, so the VMMs of each round ran on the same one' : ''}.`;
}
