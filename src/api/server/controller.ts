/**
 * The microVM behind Firecracker's API: the resources a client PUTs before boot, the state
 * machine (Not started → Running ⇄ Paused), and the actions. It knows nothing of HTTP: each
 * operation takes the parsed JSON body and path parameters and returns a status and a body, or
 * throws an ApiFault (400 with Firecracker's `fault_message`). http-server.ts puts it on a socket;
 * the SDK calls it in-process.
 *
 * Semantics follow Firecracker's (src/vmm/src/rpc_interface.rs): pre-boot resources are refused
 * after InstanceStart ("not supported after starting"), runtime ones before it; a PUT replaces the
 * resource with the same id; a body's id must match the path's. Requests are handled one at a time
 * in arrival order, as Firecracker's single API thread does, so a PATCH cannot race a start.
 */
import type {
  BootSourceConfig,
  ConfigFeature,
  DriveConfig,
  EntropyConfig,
  LoggerConfig,
  MachineConfig,
  MetricsConfig,
  NetworkInterfaceConfig,
  VmConfig,
  VsockConfig,
} from '../config.js';
import { defaultMachineConfig } from '../config/limits.js';
import { isJsonObject } from '../config/schema.js';
import { TsvmmError } from '../../util/errors.js';
import type { VmControl, VmExitSummary } from '../../vmm/vm-control.js';
import type { VmSpec } from '../../vmm/vm-spec.js';
import { MetricsWriter, type ApiMetrics } from './metrics-writer.js';
import { VmmLogger } from './vmm-logger.js';

/** A request the VMM refuses: HTTP status (400 unless said otherwise) and Firecracker's fault_message. */
export class ApiFault extends TsvmmError {
  constructor(
    message: string,
    readonly status = 400,
  ) {
    super(message);
  }
}

/** Firecracker's words for a resource or action in the wrong state (rpc_interface.rs). */
export const NOT_SUPPORTED_AFTER_START = 'The requested operation is not supported after starting the microVM.';
export const NOT_SUPPORTED_BEFORE_START = 'The requested operation is not supported before starting the microVM.';

export type InstanceState = 'Not started' | 'Running' | 'Paused';

export interface ApiReply {
  status: number;
  body?: unknown;
}

/** Starts a VM from a spec: in this process, or inside the nested host. */
export type VmLauncher = (spec: VmSpec) => Promise<VmControl>;

export interface VmmControllerOptions {
  /** Firecracker's `--id`; reported by GET / and in log lines. */
  id: string;
  /** What GET /version reports. */
  version: string;
  launch: VmLauncher;
  /** Features this build boots (the rest are refused when PUT, with one line saying so). */
  supported: readonly ConfigFeature[];
  /** Called once the VM has ended (the CLI exits with its status). */
  onExit?: (exit: VmExitSummary) => void;
  /** Files named by the config are checked relative to this folder (default: the working directory). */
  baseDir?: string;
}

const DONE: ApiReply = { status: 204 };

/** The configuration parsers and rules (src/api/config.js), loaded when a request first needs them. */
type ConfigRules = typeof import('../config.js');
let configRules: Promise<ConfigRules> | undefined;

/**
 * The parsers are twenty-odd modules that no request before the first PUT runs; loading them at
 * start-up was a third of the time `tsvmm --api-sock` took to answer its first request
 * (bench/results/api-*.md), which is what orchestrators wait on before they configure a VM.
 */
function loadConfigRules(): Promise<ConfigRules> {
  return (configRules ??= import('../config.js'));
}

export class VmmController {
  readonly logger: VmmLogger;
  readonly metrics = new MetricsWriter();
  readonly apiMetrics: ApiMetrics = { requests: 0, bad_requests: 0 };
  private bootSource: BootSourceConfig | undefined;
  private machineConfig: MachineConfig = defaultMachineConfig();
  private drives: DriveConfig[] = [];
  private networkInterfaces: NetworkInterfaceConfig[] = [];
  private vsock: VsockConfig | undefined;
  private entropy: EntropyConfig | undefined;
  private loggerConfig: LoggerConfig | undefined;
  private metricsConfig: MetricsConfig | undefined;
  private vm: VmControl | undefined;
  private starting = false;
  private paused = false;
  private exit: VmExitSummary | undefined;
  /** close() was called while the VM ran: release the log and metrics files once it has ended. */
  private closeWhenEnded = false;
  /** The tail of the request queue: each operation starts when the one before it settled. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly options: VmmControllerOptions) {
    this.logger = new VmmLogger(options.id);
  }

  get state(): InstanceState {
    if (this.vm === undefined) return 'Not started';
    return this.paused ? 'Paused' : 'Running';
  }

  /** How the VM ended, once it has. */
  get exited(): VmExitSummary | undefined {
    return this.exit;
  }

  /** Run `op` after every operation submitted before it (Firecracker handles one request at a time). */
  serialize<T>(op: () => Promise<T> | T): Promise<T> {
    const run = this.queue.then(op, op);
    this.queue = run.catch(() => undefined);
    return run;
  }

  // ---- GET

  instanceInfo(): ApiReply {
    return { status: 200, body: { id: this.options.id, state: this.state, vmm_version: this.options.version, app_name: 'tsvmm' } };
  }

  version(): ApiReply {
    return { status: 200, body: { firecracker_version: this.options.version } };
  }

  async vmConfig(): Promise<ApiReply> {
    const c = await loadConfigRules();
    const json = c.toFirecrackerJson(this.assemble(c, this.bootSource ?? { kernel_image_path: '' }));
    if (this.bootSource === undefined) delete json['boot-source'];
    return { status: 200, body: json };
  }

  getMachineConfig(): ApiReply {
    return { status: 200, body: this.machineConfig };
  }

  // ---- pre-boot resources

  async putBootSource(body: unknown): Promise<ApiReply> {
    this.beforeStart();
    const c = await loadConfigRules();
    const bootSource = c.parseBootSource(body, '');
    this.tryApply(c, { bootSource });
    this.bootSource = bootSource;
    return DONE;
  }

  async putMachineConfig(body: unknown): Promise<ApiReply> {
    this.beforeStart();
    const c = await loadConfigRules();
    const machineConfig = c.parseMachineConfig(body, '');
    this.tryApply(c, { machineConfig });
    this.machineConfig = machineConfig;
    return DONE;
  }

  async patchMachineConfig(body: unknown): Promise<ApiReply> {
    this.beforeStart();
    const c = await loadConfigRules();
    const machineConfig = c.parseMachineConfigPatch(body, '', this.machineConfig);
    this.tryApply(c, { machineConfig });
    this.machineConfig = machineConfig;
    return DONE;
  }

  async putDrive(driveId: string, body: unknown): Promise<ApiReply> {
    this.beforeStart();
    const c = await loadConfigRules();
    const drive = c.parseDrive(body, '');
    sameId(driveId, drive.drive_id);
    const drives = replaceById(this.drives, drive, (d) => d.drive_id);
    this.tryApply(c, { drives });
    this.drives = drives;
    return DONE;
  }

  async putNetworkInterface(ifaceId: string, body: unknown): Promise<ApiReply> {
    this.beforeStart();
    const c = await loadConfigRules();
    const iface = c.parseNetworkInterface(body, '');
    sameId(ifaceId, iface.iface_id);
    const networkInterfaces = replaceById(this.networkInterfaces, iface, (n) => n.iface_id);
    this.tryApply(c, { networkInterfaces });
    this.networkInterfaces = networkInterfaces;
    return DONE;
  }

  async putVsock(body: unknown): Promise<ApiReply> {
    this.beforeStart();
    const c = await loadConfigRules();
    const vsock = c.parseVsock(body, '');
    this.tryApply(c, { vsock });
    this.vsock = vsock;
    return DONE;
  }

  async putEntropy(body: unknown): Promise<ApiReply> {
    this.beforeStart();
    const c = await loadConfigRules();
    const entropy = c.parseEntropy(body, '');
    this.tryApply(c, { entropy });
    this.entropy = entropy;
    return DONE;
  }

  async putLogger(body: unknown): Promise<ApiReply> {
    this.beforeStart();
    const c = await loadConfigRules();
    this.applyLogger(c.parseLogger(body, ''));
    return DONE;
  }

  async putMetrics(body: unknown): Promise<ApiReply> {
    this.beforeStart();
    const c = await loadConfigRules();
    this.applyMetrics(c.parseMetrics(body, ''));
    return DONE;
  }

  // ---- runtime resources

  async patchDrive(driveId: string, body: unknown): Promise<ApiReply> {
    const c = await loadConfigRules();
    const update = c.parseDriveUpdate(body, '');
    sameId(driveId, update.drive_id);
    const vm = this.afterStart();
    if (!this.drives.some((d) => d.drive_id === driveId)) throw new ApiFault(`Invalid block device ID: no drive has drive_id '${driveId}'.`);
    if (update.rate_limiter !== undefined) {
      throw new c.NotSupportedYetError({ feature: 'rate-limiter', path: 'rate_limiter' });
    }
    if (update.path_on_host !== undefined) {
      await vm.updateDrive(driveId, update.path_on_host);
      const path = update.path_on_host;
      this.drives = this.drives.map((d) => (d.drive_id === driveId ? { ...d, path_on_host: path } : d));
      this.logger.info(`drive '${driveId}' now reads ${path}`);
    }
    return DONE;
  }

  async patchNetworkInterface(ifaceId: string, body: unknown): Promise<ApiReply> {
    const c = await loadConfigRules();
    const update = c.parseNetworkInterfaceUpdate(body, '');
    sameId(ifaceId, update.iface_id);
    this.afterStart();
    if (!this.networkInterfaces.some((n) => n.iface_id === ifaceId)) throw new ApiFault(`Invalid network interface ID: no interface has iface_id '${ifaceId}'.`);
    // Rate limiters are the only thing a PATCH can change, and tsvmm has none yet.
    if (update.rx_rate_limiter !== undefined) throw new c.NotSupportedYetError({ feature: 'rate-limiter', path: 'rx_rate_limiter' });
    if (update.tx_rate_limiter !== undefined) throw new c.NotSupportedYetError({ feature: 'rate-limiter', path: 'tx_rate_limiter' });
    return DONE;
  }

  // ---- actions

  async action(body: unknown): Promise<ApiReply> {
    if (!isJsonObject(body)) throw new ApiFault('The body must be a JSON object like {"action_type": "InstanceStart"}.');
    const extra = Object.keys(body).filter((k) => k !== 'action_type');
    if (extra.length > 0) throw new ApiFault(`unknown field '${extra[0]}'; an action has only 'action_type'`);
    switch (body['action_type']) {
      case 'InstanceStart':
        return this.instanceStart();
      case 'SendCtrlAltDel': {
        const vm = this.afterStart();
        if (!(await vm.sendCtrlAltDel())) throw new ApiFault('The guest keyboard did not take Ctrl-Alt-Del (its buffer is full); try again.');
        this.logger.info('sent Ctrl-Alt-Del');
        return DONE;
      }
      case 'FlushMetrics':
        if (!(await this.flushMetrics())) throw new ApiFault('Metrics are not configured: PUT /metrics with a metrics_path first.');
        return DONE;
      default:
        throw new ApiFault(`action_type: must be one of "InstanceStart", "SendCtrlAltDel", "FlushMetrics", got ${JSON.stringify(body['action_type']) ?? 'nothing'}`);
    }
  }

  async patchVm(body: unknown): Promise<ApiReply> {
    if (!isJsonObject(body) || Object.keys(body).some((k) => k !== 'state')) throw new ApiFault('The body must be {"state": "Paused"} or {"state": "Resumed"}.');
    const state = body['state'];
    if (state !== 'Paused' && state !== 'Resumed') throw new ApiFault(`state: must be "Paused" or "Resumed", got ${JSON.stringify(state) ?? 'nothing'}`);
    const vm = this.afterStart();
    if (state === 'Paused' && !this.paused) {
      await vm.pause();
      this.paused = true;
      this.logger.info('paused');
    } else if (state === 'Resumed' && this.paused) {
      await vm.resume();
      this.paused = false;
      this.logger.info('resumed');
    }
    return DONE;
  }

  /** Write a metrics line now; false when metrics are not configured. */
  async flushMetrics(): Promise<boolean> {
    if (!this.metrics.configured) return false;
    // After the VM ended its counters are still there in-process (the final line keeps them); a VM
    // in the nested host has gone with its agent, and the line carries the API's counters only.
    const vm = this.vm !== undefined ? await this.vm.metrics().catch(() => undefined) : undefined;
    return this.metrics.write(this.apiMetrics, vm);
  }

  /** Boot with everything configured so far (InstanceStart). */
  async instanceStart(): Promise<ApiReply> {
    if (this.vm !== undefined || this.starting) throw new ApiFault(NOT_SUPPORTED_AFTER_START);
    if (this.bootSource === undefined) throw new ApiFault('Cannot start microvm without kernel configuration: PUT /boot-source first.');
    const c = await loadConfigRules();
    const config = this.assemble(c, this.bootSource);
    c.checkVmConfig(config);
    await c.checkConfigFiles(config, this.options.baseDir);
    this.starting = true;
    try {
      const { vmSpecFromConfig } = await import('../../vmm/vm-spec.js');
      this.vm = await this.options.launch(vmSpecFromConfig(config));
    } finally {
      this.starting = false;
    }
    this.logger.info(`started: ${config.machineConfig.vcpu_count} vCPU(s), ${config.machineConfig.mem_size_mib} MiB, kernel ${config.bootSource.kernel_image_path}`);
    void this.vm.wait().then(async (exit) => {
      this.exit = exit;
      this.logger.info(`the microVM ended: ${exit.message}`);
      // The last metrics line (with the VM's final counters) is written before anyone is told.
      await this.flushMetrics().catch(() => false);
      this.options.onExit?.(exit);
      if (this.closeWhenEnded) this.releaseFiles();
    });
    return DONE;
  }

  /** Replace every resource from a config file (Firecracker's --config-file with the API). */
  async loadConfig(config: VmConfig): Promise<void> {
    this.beforeStart();
    const c = await loadConfigRules();
    const unsupported = c.unsupportedFeatures(config, this.options.supported)[0];
    if (unsupported !== undefined) throw new c.NotSupportedYetError(unsupported);
    if (config.logger !== undefined) this.applyLogger(config.logger);
    if (config.metrics !== undefined) this.applyMetrics(config.metrics);
    this.bootSource = config.bootSource;
    this.machineConfig = config.machineConfig;
    this.drives = config.drives;
    this.networkInterfaces = config.networkInterfaces;
    this.vsock = config.vsock;
    this.entropy = config.entropy;
  }

  /**
   * Stop the VM (if running) and release the log and metrics files. With a VM still running the
   * files are released once it has ended, so its last log line and metrics line reach them
   * (closed at once, the log line would go to standard error and the metrics line be lost).
   */
  close(): void {
    if (this.vm !== undefined && this.exit === undefined) {
      this.closeWhenEnded = true;
      this.vm.stop('the API server was closed');
      return;
    }
    this.releaseFiles();
  }

  private releaseFiles(): void {
    this.metrics.close();
    this.logger.close();
  }

  // ---- helpers

  private beforeStart(): void {
    if (this.vm !== undefined || this.starting) throw new ApiFault(NOT_SUPPORTED_AFTER_START);
  }

  private afterStart(): VmControl {
    if (this.vm === undefined) throw new ApiFault(NOT_SUPPORTED_BEFORE_START);
    if (this.exit !== undefined) throw new ApiFault(`The microVM has already ended (${this.exit.message}).`);
    return this.vm;
  }

  private applyLogger(logger: LoggerConfig): void {
    this.logger.configure(logger);
    this.loggerConfig = logger;
  }

  private applyMetrics(metrics: MetricsConfig): void {
    // Firecracker initializes metrics once; a second PUT is refused rather than silently moving them.
    if (this.metricsConfig !== undefined) throw new ApiFault('Reinitialization of metrics not allowed.');
    this.metrics.configure(metrics, () => void this.flushMetrics().catch(() => undefined));
    this.metricsConfig = metrics;
  }

  private assemble(c: ConfigRules, bootSource: BootSourceConfig): VmConfig {
    const config: VmConfig = {
      bootSource,
      machineConfig: this.machineConfig,
      drives: this.drives,
      networkInterfaces: this.networkInterfaces,
      pmem: [],
    };
    if (this.vsock !== undefined) config.vsock = this.vsock;
    if (this.entropy !== undefined) config.entropy = this.entropy;
    if (this.loggerConfig !== undefined) config.logger = this.loggerConfig;
    if (this.metricsConfig !== undefined) config.metrics = this.metricsConfig;
    return config;
  }

  /**
   * Check the configuration with `change` applied, without applying it: the cross-resource rules
   * (one root drive, unique names) and features this build does not boot yet are refused when the
   * resource is PUT, not at InstanceStart.
   */
  private tryApply(c: ConfigRules, change: Partial<VmConfig>): void {
    const config = { ...this.assemble(c, this.bootSource ?? { kernel_image_path: '' }), ...change };
    c.checkVmConfig(config);
    const unsupported = c.unsupportedFeatures(config, this.options.supported)[0];
    if (unsupported !== undefined) throw new c.NotSupportedYetError(unsupported);
  }
}

/** Firecracker refuses a body whose id differs from the path's (parsed_request.rs). */
function sameId(fromPath: string, fromBody: string): void {
  if (fromPath !== fromBody) throw new ApiFault(`The id from the path [${fromPath}] does not match the id from the body [${fromBody}]!`);
}

/** The list with `item` in place of the one with the same id, or appended. */
function replaceById<T>(list: readonly T[], item: T, id: (t: T) => string): T[] {
  const i = list.findIndex((x) => id(x) === id(item));
  return i < 0 ? [...list, item] : list.map((x, j) => (j === i ? item : x));
}
