/**
 * The script the network benchmark's guest runs (busybox sh, in the default guest's initramfs with
 * Debian's iperf3 added), and the console protocol between it and the harness.
 *
 * The same script and kernel command line run under both VMMs. The guest drives the iperf3 tests
 * as the client of an iperf3 server the harness runs on the host's end of the tap: plain for
 * guest → host, `-R` for host → guest (the host's server sends). Between the markers of a test
 * nothing reaches the console (every console byte is a VM exit, and the harness reads the VMM's
 * CPU time at the two markers). For the ping phase the roles turn: the guest sits in `nc -l`
 * while the harness pings it from the host, and the harness's connection to that port ends the wait.
 *
 *   NET-INFO key=value ...            once: eth0 is up, the host answers ping; iperf3 version, the guest's view of eth0
 *   NET-WARMUP seconds g2h h2g        after the warm-up: iperf3 each way for that long, unmeasured, so
 *                                     every VMM's ping and first test start warm (a JIT-compiled VMM
 *                                     like tsvmm tiers its network path up only after thousands of
 *                                     frames: seconds in the nested host); the two exit statuses
 *   NET-PING-BEGIN                    the guest waits for the host's ping to finish (host connects to PING_DONE_PORT)
 *   NET-PING-END                      the host connected: ping is over
 *   NET-TESTS-WAIT                    the guest waits for its turn to run the tests (host connects to
 *                                     PING_DONE_PORT again): with two guests up at once (measure.ts),
 *                                     one runs its tests while the other idles here
 *   NET-WAITING                       every WAIT_HEARTBEAT_SECONDS while the guest waits for the host:
 *                                     a guest that waits is alive (the harness's silence limit)
 *   NET-RUN-BEGIN name                iperf3 -c is about to start (name: g2h-N or h2g-N)
 *   NET-RUN-END name status           iperf3 has exited
 *   NET-STAT name before|after k=v …  the guest's counters around a test (eth0 drops, TCP: GUEST_COUNTERS)
 *   NET-JSON-BEGIN name / NET-JSON-END name   iperf3's -J output, gzip + base64, between them
 *   NET-ERR-BEGIN name / NET-ERR-END name     iperf3's messages when it failed
 *   NET-DONE                          every test ran
 *   NET-ERROR text                    the script gave up
 */

export const GUEST_SCRIPT_PATH = '/bench/net.sh';
/** Where the guest listens for the host's "ping is over" connection. */
export const PING_DONE_PORT = 5999;
/** The iperf3 server's port on the host. */
export const IPERF_PORT = 5201;
/**
 * How long past its -t a test may run before the guest gives up on it (busybox `timeout`), so a
 * test that never ends costs one failed test, not the boot. iperf3 3.12's server can drop a test
 * whose data keeps arriving 5 s past -t (esnet/iperf#753: "select failed: Bad file descriptor",
 * seen in the nested host), and the client then waits for its results for ever.
 */
export const TEST_GRACE_SECONDS = 60;
/** How often a waiting guest says it still waits: far below any silence limit, rare enough to cost nothing. */
export const WAIT_HEARTBEAT_SECONDS = 15;
/** The longest the guest waits for the host at one step before it goes on regardless. */
export const WAIT_LIMIT_SECONDS = 1800;

export const MARK = {
  info: 'NET-INFO ',
  warmup: 'NET-WARMUP ',
  pingBegin: 'NET-PING-BEGIN',
  pingEnd: 'NET-PING-END',
  testsWait: 'NET-TESTS-WAIT',
  waiting: 'NET-WAITING',
  begin: 'NET-RUN-BEGIN ',
  end: 'NET-RUN-END ',
  jsonBegin: 'NET-JSON-BEGIN ',
  jsonEnd: 'NET-JSON-END ',
  errBegin: 'NET-ERR-BEGIN ',
  errEnd: 'NET-ERR-END ',
  done: 'NET-DONE',
  error: 'NET-ERROR ',
  stat: 'NET-STAT ',
} as const;

/**
 * The guest's own counters read around each test, to tell where frames were lost: eth0's drops
 * (/sys/class/net/eth0/statistics) and TCP's (Tcp from /proc/net/snmp, TcpExt from
 * /proc/net/netstat; names as Linux's include/uapi/linux/snmp.h prints them).
 */
export const GUEST_COUNTERS = [
  'rx_dropped',
  'rx_errors',
  'Tcp.RetransSegs',
  'Tcp.InErrs',
  'TcpExt.TCPTimeouts',
  'TcpExt.TCPLossProbes',
  'TcpExt.TCPOFOQueue',
  'TcpExt.TCPOFODrop',
  'TcpExt.TCPRcvQDrop',
  'TcpExt.TCPBacklogDrop',
  'TcpExt.TCPZeroWindowDrop',
  'TcpExt.PruneCalled',
] as const;

export type Direction = 'g2h' | 'h2g';
export const DIRECTIONS: readonly Direction[] = ['g2h', 'h2g'];
export const DIRECTION_LABELS: Record<Direction, string> = { g2h: 'guest → host', h2g: 'host → guest' };

/** Test names in the order the guest runs them: per repetition, guest → host then host → guest. */
export function testNames(repetitions: number): string[] {
  return Array.from({ length: repetitions }, (_, i) => DIRECTIONS.map((d) => `${d}-${i + 1}`)).flat();
}

export function directionOf(name: string): Direction {
  return name.startsWith('h2g') ? 'h2g' : 'g2h';
}

/**
 * The script. Arguments: guest address/prefix, host address, seconds per test, repetitions.
 *
 * - eth0 comes up with a link-local address on the tap's subnet; the guest pings the host until it
 *   answers (the tap's carrier, ARP), so the first test does not pay for either.
 * - `iperf3 -c HOST -t S -J` (one TCP stream, iperf3's default 128 KiB writes), `-R` for host → guest,
 *   ended by `timeout` TEST_GRACE_SECONDS after it should have finished.
 * - `nc -l -p PORT` (busybox) blocks until the harness connects (its ping is over; the guest's turn
 *   to run the tests came); `timeout` bounds it should the harness never come. A heartbeat beside it
 *   prints NET-WAITING now and then, so that a guest waiting for a while (for the other guest's
 *   boot or tests) is not taken for a lost one. nc in the background and `wait` on it: a heartbeat
 *   made of `timeout N nc -l` in a loop could miss a connection that came just as nc was killed.
 */
export function guestScript(): string {
  return `#!/bin/sh
# tsvmm bench/net: iperf3 against the host's end of the tap, results between markers (guest-script.ts).
addr=$1; host=$2; secs=$3; reps=$4; warm=$5
i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
ip link set eth0 up && ip addr add $addr dev eth0 || { echo "${MARK.error}cannot configure eth0"; exit 3; }
i=0; until ping -c 1 -W 1 $host >/dev/null 2>&1; do i=$((i + 1)); [ $i -ge 30 ] && { echo "${MARK.error}the host $host does not answer ping"; exit 4; }; done
iperf3 --version >/dev/null 2>&1 || { echo "${MARK.error}iperf3 does not start: $(iperf3 --version 2>&1 | head -n 2 | tr '\\n' ' ')"; exit 5; }
d=/sys/class/net/eth0
echo "${MARK.info}iperf3=$(iperf3 --version | head -n 1 | cut -d' ' -f2) kernel=$(uname -r) nproc=$(nproc) mtu=$(cat $d/mtu) mac=$(cat $d/address) features=$(cat $d/device/features) driver=$(basename $(readlink $d/device/driver)) bus=$(basename $(readlink -f $d/device/..)) mem_kb=$(grep MemTotal /proc/meminfo | tr -s ' ' | cut -d' ' -f2) tcp_cc=$(cat /proc/sys/net/ipv4/tcp_congestion_control) tcp_rmem=$(tr '\\t' ',' < /proc/sys/net/ipv4/tcp_rmem) tcp_wmem=$(tr '\\t' ',' < /proc/sys/net/ipv4/tcp_wmem)"
# NET-STAT: eth0's drop counters and the TCP counters of GUEST_COUNTERS, as name=value.
gstat() {
  echo "${MARK.stat}$1 $2 rx_dropped=$(cat $d/statistics/rx_dropped) rx_errors=$(cat $d/statistics/rx_errors) $(awk -v want="${GUEST_COUNTERS.filter((c) => c.includes('.')).join(' ')}" '
    BEGIN { n = split(want, w, " "); for (j = 1; j <= n; j++) keep[w[j]] = 1 }
    /^(Tcp|TcpExt):/ {
      p = substr($1, 1, length($1) - 1)
      if (!(p in head)) { head[p] = $0; next }
      m = split(head[p], k, " "); split($0, v, " ")
      for (i = 2; i <= m; i++) if ((p "." k[i]) in keep) printf "%s.%s=%s ", p, k[i], v[i]
    }' /proc/net/snmp /proc/net/netstat)"
}
if [ "$warm" -gt 0 ]; then
  timeout $((warm + ${TEST_GRACE_SECONDS})) iperf3 -c $host -p ${IPERF_PORT} -t $warm > /dev/null 2>&1; w1=$?
  timeout $((warm + ${TEST_GRACE_SECONDS})) iperf3 -c $host -p ${IPERF_PORT} -t $warm -R > /dev/null 2>&1; w2=$?
  echo "${MARK.warmup}$warm $w1 $w2"
fi
# hostwait: block until the host connects to PING_DONE_PORT, saying NET-WAITING now and then.
hostwait() {
  timeout ${WAIT_LIMIT_SECONDS} nc -l -p ${PING_DONE_PORT} >/dev/null 2>&1 & ncpid=$!
  ( while sleep ${WAIT_HEARTBEAT_SECONDS}; do echo "${MARK.waiting}"; done ) & beat=$!
  wait $ncpid
  kill $beat 2>/dev/null; wait $beat 2>/dev/null
}
echo "${MARK.pingBegin}"
hostwait
echo "${MARK.pingEnd}"
echo "${MARK.testsWait}"
hostwait
cd /tmp
r=1
while [ $r -le $reps ]; do
  for dir in g2h h2g; do
    name=$dir-$r; flag=; [ $dir = h2g ] && flag=-R
    gstat $name before
    echo "${MARK.begin}$name"
    timeout $((secs + ${TEST_GRACE_SECONDS})) iperf3 -c $host -p ${IPERF_PORT} -t $secs -J $flag > /tmp/$name.json 2> /tmp/$name.err
    st=$?
    echo "${MARK.end}$name $st"
    gstat $name after
    echo "${MARK.jsonBegin}$name"; gzip -c /tmp/$name.json | base64; echo "${MARK.jsonEnd}$name"
    if [ $st != 0 ]; then echo "${MARK.errBegin}$name"; tail -n 20 /tmp/$name.err; echo "${MARK.errEnd}$name"; fi
  done
  r=$((r + 1))
done
echo "${MARK.done}"
`;
}

/** The shell command the default init runs (tsvmm.cmd=<base64> on the kernel command line). */
export function guestCommand(guestCidr: string, hostAddress: string, seconds: number, repetitions: number, warmupSeconds: number): string {
  if (!Number.isInteger(seconds) || seconds < 1) throw new Error(`iperf3 time must be a whole number of seconds ≥ 1, got ${seconds}`);
  if (!Number.isInteger(repetitions) || repetitions < 1) throw new Error(`repetitions must be a whole number ≥ 1, got ${repetitions}`);
  if (!Number.isInteger(warmupSeconds) || warmupSeconds < 0) throw new Error(`warm-up time must be a whole number of seconds ≥ 0, got ${warmupSeconds}`);
  return `sh ${GUEST_SCRIPT_PATH} ${guestCidr} ${hostAddress} ${seconds} ${repetitions} ${warmupSeconds}`;
}
