/**
 * Preloaded into the tsvmm process by the benchmarks' --profile-vmm (`node --import
 * <this file>?dir=DIR&interval=US`): a V8 CPU profile of the main thread only, written to
 * DIR/tsvmm-<pid>.cpuprofile when the process exits (open it in Chrome DevTools' Performance panel).
 *
 * Why not `node --cpu-prof`: it profiles every thread, and the profiler's SIGPROF to a vCPU worker
 * thread kicks its vCPU out of KVM_RUN at every sample, a thousand extra exits a second per vCPU that
 * the main thread then handles: the profile measured the profiler. The devices run on the main
 * thread; the vCPU workers only sit in KVM_RUN.
 */
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { join } from 'node:path';
import { isMainThread } from 'node:worker_threads';

const params = new URL(import.meta.url).searchParams;
const dir = params.get('dir');
const intervalUs = Number(params.get('interval') ?? '1000');

if (isMainThread && dir !== null) {
  const session = new Session();
  session.connect();
  // An in-thread inspector session answers synchronously, so the profile can be taken in 'exit'.
  session.post('Profiler.enable');
  session.post('Profiler.setSamplingInterval', { interval: intervalUs });
  session.post('Profiler.start');
  process.on('exit', () => {
    session.post('Profiler.stop', (err, result) => {
      if (err === null) writeFileSync(join(dir, `tsvmm-${process.pid}.cpuprofile`), JSON.stringify(result.profile));
    });
  });
}
