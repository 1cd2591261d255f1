/**
 * `tsvmm --api-sock PATH [--config-file F] [--id ID] [--boot-timer]`: serve Firecracker's REST API
 * on a Unix socket until the microVM it starts has ended (then exit with the VM's status), as
 * Firecracker does. With a config file the VM boots at once and the API serves the runtime calls.
 * `--config-file F --no-api` is the same without the socket: one controller behind both, so a
 * config file means the same with or without the API (logger and metrics included).
 */
import type { ConfigFeature } from '../api/config.js';
import { ApiServer } from '../api/server/http-server.js';
import { VmmController } from '../api/server/controller.js';
import { TsvmmError } from '../util/errors.js';
import type { launchVm as LaunchVm } from '../vmm/launch.js';
import { packageVersion } from '../util/version.js';

/** What the API boots today (the rest is refused when PUT, saying so). */
export const API_SUPPORTED_FEATURES: readonly ConfigFeature[] = ['initrd', 'entropy', 'drives', 'network-interfaces', 'net-mtu', 'vsock', 'logger', 'metrics'];

/** Firecracker's default `--id`. */
export const DEFAULT_INSTANCE_ID = 'anonymous-instance';

export interface ApiModeOptions {
  /** Where to serve the API; absent (`--no-api`) boots from the config file with no socket. */
  apiSock?: string;
  configFile?: string;
  id?: string;
  bootTimer: boolean;
}


function say(line: string): void {
  process.stderr.write(`tsvmm: ${line}\n`);
}

/**
 * The VMM's boot code (launch.ts and the 30-odd modules behind it: Linux loader, ACPI, CPUID,
 * device models) is imported at InstanceStart, not before the socket listens: no request before it
 * needs that code. Under emulation every module costs start-up time, and loading them in the
 * background right after listening delayed the first answers instead (bench/results/api-*.md).
 */
async function loadLauncher(): Promise<{ launchVm: typeof LaunchVm }> {
  return import('../vmm/launch.js');
}

export async function runApiServer(opts: ApiModeOptions): Promise<number> {
  let finish: (status: number) => void = () => {};
  const finished = new Promise<number>((resolve) => (finish = resolve));
  const vmm = new VmmController({
    id: opts.id ?? DEFAULT_INSTANCE_ID,
    version: packageVersion(),
    supported: API_SUPPORTED_FEATURES,
    launch: async (spec) =>
      (await loadLauncher()).launchVm(spec, {
        onWarning: (m) => vmm.logger.warn(m),
        onNested: (why) => say(why),
        onBootTimer: (e) => {
          vmm.logger.info(`guest booted in ${(e.elapsedUs / 1000).toFixed(1)} ms`);
          if (opts.bootTimer) say(`guest booted in ${(e.elapsedUs / 1000).toFixed(1)} ms (boot timer; ${(e.cpuUs / 1000).toFixed(1)} ms VMM CPU)`);
        },
      }),
    onExit: (exit) => {
      if (exit.reason === 'panic' || exit.reason === 'error') say(exit.message);
      finish(exit.status);
    },
  });
  if (opts.apiSock === undefined && opts.configFile === undefined) throw new TsvmmError('without an API socket a config file is needed');
  const server = opts.apiSock === undefined ? undefined : await ApiServer.listen(vmm, opts.apiSock);
  let stoppedBy: NodeJS.Signals | undefined;
  const onSignal = (signal: NodeJS.Signals): void => {
    stoppedBy ??= signal;
    if (vmm.state === 'Not started') finish(0);
    else vmm.close();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    if (opts.configFile !== undefined) {
      const { checkConfigFiles, loadConfigFile } = await import('../api/config.js');
      const config = await loadConfigFile(opts.configFile);
      await checkConfigFiles(config);
      // One queued operation: no API request can slip in between loading the file and starting.
      await vmm.serialize(async () => {
        await vmm.loadConfig(config);
        return vmm.instanceStart();
      });
    }
    const status = await finished;
    return stoppedBy !== undefined ? 128 + (stoppedBy === 'SIGINT' ? 2 : 15) : status;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await server?.close();
    vmm.close();
  }
}
