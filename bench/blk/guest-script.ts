/**
 * The script the benchmark guest runs (busybox sh, inside the bench initramfs), and the console
 * protocol between it and the harness.
 *
 * The same script, the same jobs and the same kernel command line run under every VMM. Per job it
 * prints a BEGIN marker, runs fio with its JSON going to a file (nothing reaches the console while
 * fio runs: every console byte is a VM exit, and the harness reads the VMM's CPU time at the two
 * markers), then an END marker, the block device's counters, and the JSON between markers.
 *
 *   BLK-INFO key=value ...            once: fio version, engine, the guest's view of /dev/vda
 *   BLK-JOB-BEGIN name                fio is about to start
 *   BLK-IO-BEGIN name                 fio has set up and starts its I/O (fio's exec_prerun)
 *   BLK-IO-END name                   fio's I/O loop is over (fio's exec_postrun)
 *   BLK-JOB-END name status           fio has exited
 *   BLK-WARMUP seconds status         after the warm-up: fio (4 KiB random reads and writes, QD 1, not
 *                                     measured) for that long, so every VMM's first job starts warm (a
 *                                     JIT-compiled VMM like tsvmm tiers its I/O path up only after
 *                                     thousands of requests: seconds in the nested host)
 *   BLK-IDLE-BEGIN / BLK-IDLE-END     around a sleep before the jobs: what each VMM burns with the guest idle
 *   BLK-STAT name <16+ numbers>       /sys/block/vda/stat after the job (read/write/flush counts)
 *   BLK-IRQ name <count>              interrupts taken so far on the drive's request queues (/proc/interrupts)
 *   BLK-JSON-BEGIN name / BLK-JSON-END name   fio's --output-format=json, gzip + base64, between them
 *   BLK-ERR-BEGIN name / BLK-ERR-END name     fio's messages when it failed
 *   BLK-DONE                          every job ran
 *
 * The IO markers matter: fio itself takes seconds to start in the nested host (the dynamic loader
 * relocates 60-odd libraries, all emulated), and that time must not count as CPU per I/O. fio runs
 * exec_prerun right before its I/O loop and exec_postrun right after, through system() with the
 * output sent to a file, so the helper writes to /dev/console itself.
 */
import { type FioJob, jobWord } from './jobs.js';

export const GUEST_SCRIPT_PATH = '/bench/fio-jobs.sh';
export const GUEST_MARK_PATH = '/bench/mark.sh';
export const MARK = {
  info: 'BLK-INFO ',
  begin: 'BLK-JOB-BEGIN ',
  ioBegin: 'BLK-IO-BEGIN ',
  ioEnd: 'BLK-IO-END ',
  end: 'BLK-JOB-END ',
  stat: 'BLK-STAT ',
  jsonBegin: 'BLK-JSON-BEGIN ',
  jsonEnd: 'BLK-JSON-END ',
  errBegin: 'BLK-ERR-BEGIN ',
  errEnd: 'BLK-ERR-END ',
  warmup: 'BLK-WARMUP ',
  idleBegin: 'BLK-IDLE-BEGIN',
  idleEnd: 'BLK-IDLE-END',
  irq: 'BLK-IRQ ',
  done: 'BLK-DONE',
  error: 'BLK-ERROR ',
} as const;

/**
 * The script. `libraryPath` is where the initramfs put fio's libraries (the guest has no
 * ld.so.cache). Arguments: runtime in seconds, idle seconds (0: none), warm-up seconds (0: none), then one `name:rw:bs:iodepth` word per job.
 *
 * - `--direct=1` on /dev/vda: no guest page cache, every I/O reaches the VMM.
 * - the engine: libaio (true asynchronous submission, so iodepth 32 means 32 in flight), else
 *   io_uring, else psync (where iodepth > 1 means nothing; the report shows the engine used).
 * - the I/O scheduler is set to `none` on both VMMs, so the guest queues requests the same way
 *   whatever either VMM's queue count would make Linux choose by default.
 * - `--thread`: fio's workers are threads, not processes sharing memory through SysV shm.
 * - `--randrepeat=1` (fio's default): both VMMs see the same sequence of random offsets.
 */
export function guestScript(libraryPath: readonly string[]): string {
  return `#!/bin/sh
# tsvmm bench/blk: run fio jobs on /dev/vda and print the results between markers (guest-script.ts).
runtime=$1; idle=$2; warmup=$3; shift 3
# Interrupts on the drive's request queues (virtioN-req.M), summed over CPUs: one per completion batch.
irqs() { awk '/virtio[0-9]+-req/ { for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) s += $i } END { print s + 0 }' /proc/interrupts; }
dev=/dev/vda
export LD_LIBRARY_PATH=${libraryPath.join(':')}
i=0; while [ ! -b $dev ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
if [ ! -b $dev ]; then echo "${MARK.error}$dev did not appear"; exit 3; fi
if ! fio --version >/dev/null 2>&1; then echo "${MARK.error}fio does not start: $(fio --version 2>&1 | head -n 2 | tr '\\n' ' ')"; exit 4; fi
engine=psync
for e in io_uring libaio; do fio --enghelp 2>/dev/null | grep -qw $e && engine=$e; done
cd /tmp
q=/sys/block/vda/queue
sched0=$(tr ' ' ',' < $q/scheduler)
echo none > $q/scheduler 2>/dev/null
echo "${MARK.info}fio=$(fio --version) engine=$engine nproc=$(nproc) kernel=$(uname -r) sectors=$(cat /sys/block/vda/size) hw_queues=$(ls /sys/block/vda/mq | wc -l) scheduler_default=$sched0 scheduler=$(tr ' ' ',' < $q/scheduler) write_cache=$(tr ' ' '-' < $q/write_cache) max_sectors_kb=$(cat $q/max_sectors_kb) max_segments=$(cat $q/max_segments) nr_requests=$(cat $q/nr_requests) mem_kb=$(grep MemTotal /proc/meminfo | tr -s ' ' | cut -d' ' -f2)"
if [ "$warmup" -gt 0 ]; then
  fio --name=warmup --filename=$dev --direct=1 --ioengine=$engine --rw=randrw --bs=4096 --iodepth=1 --numjobs=1 --thread \\
    --time_based --runtime=$warmup --output=/dev/null > /tmp/warmup.err 2>&1
  echo "${MARK.warmup}$warmup $?"
fi
if [ "$idle" -gt 0 ]; then echo "${MARK.idleBegin}"; sleep $idle; echo "${MARK.idleEnd}"; fi
echo "${MARK.stat}start $(cat /sys/block/vda/stat)"
echo "${MARK.irq}start $(irqs)"
for w in "$@"; do
  old=$IFS; IFS=:; set -- $w; IFS=$old
  name=$1
  echo "${MARK.begin}$name"
  fio --name=$name --filename=$dev --direct=1 --ioengine=$engine --rw=$2 --bs=$3 --iodepth=$4 --numjobs=1 --thread \\
    --time_based --runtime=$runtime --output-format=json --output=/tmp/$name.json \\
    --exec_prerun="${GUEST_MARK_PATH} ${MARK.ioBegin}$name" --exec_postrun="${GUEST_MARK_PATH} ${MARK.ioEnd}$name" > /tmp/$name.err 2>&1
  st=$?
  echo "${MARK.end}$name $st"
  echo "${MARK.stat}$name $(cat /sys/block/vda/stat)"
  echo "${MARK.irq}$name $(irqs)"
  # Compressed: every console byte is a VM exit, and fio's JSON is ~7 KB.
  echo "${MARK.jsonBegin}$name"; gzip -c /tmp/$name.json | base64; echo "${MARK.jsonEnd}$name"
  if [ $st != 0 ]; then echo "${MARK.errBegin}$name"; tail -n 20 /tmp/$name.err; echo "${MARK.errEnd}$name"; fi
done
echo "${MARK.done}"
`;
}

/** /bench/mark.sh: a line straight to the console, whatever the caller did with stdout. */
export function markScript(): string {
  return '#!/bin/sh\necho "$*" > /dev/console\n';
}

/** The shell command the default init runs (it arrives as tsvmm.cmd=<base64> on the kernel command line). */
export function guestCommand(runtimeSeconds: number, idleSeconds: number, warmupSeconds: number, jobs: readonly FioJob[]): string {
  if (!Number.isInteger(runtimeSeconds) || runtimeSeconds < 1) throw new Error(`fio runtime must be a whole number of seconds ≥ 1, got ${runtimeSeconds}`);
  if (!Number.isInteger(idleSeconds) || idleSeconds < 0) throw new Error(`idle time must be a whole number of seconds ≥ 0, got ${idleSeconds}`);
  if (!Number.isInteger(warmupSeconds) || warmupSeconds < 0) throw new Error(`warm-up time must be a whole number of seconds ≥ 0, got ${warmupSeconds}`);
  return `sh ${GUEST_SCRIPT_PATH} ${runtimeSeconds} ${idleSeconds} ${warmupSeconds} ${jobs.map(jobWord).join(' ')}`;
}
