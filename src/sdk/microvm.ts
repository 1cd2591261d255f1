/**
 * The TypeScript SDK: `new MicroVM(config)` boots a microVM in this process (or, on a machine
 * without VT-x/AMD-V, in the nested host), `new MicroVM(config, { apiSocket })` drives a running
 * `tsvmm --api-sock` (or Firecracker) instead. Both speak Firecracker's API underneath — the
 * in-process one through the very dispatch the HTTP server uses — so a config that works here
 * works over the socket, and every refusal is the API's one-line fault message.
 *
 *   const vm = new MicroVM({ kernel: 'vmlinux', bootArgs: 'console=ttyS0 reboot=k panic=1', memoryMib: 256 });
 *   vm.console?.output.pipe(process.stdout);
 *   vm.on('exit', (exit) => console.log(exit.message));
 *   await vm.start();
 *   await vm.pause(); await vm.resume();
 *   const exit = await vm.wait();
 */
import { EventEmitter } from 'node:events';
import { PassThrough, type Readable, type Writable } from 'node:stream';
import type { CacheType, ConfigFeature, LogLevel } from '../api/config.js';
import { VmmController } from '../api/server/controller.js';
import { launchVm } from '../vmm/launch.js';
import type { VmExitSummary } from '../vmm/vm-control.js';
import { type ApiTransport, ApiUnreachableError, InProcessTransport, UnixSocketTransport, call } from './api-transport.js';
import { packageVersion } from '../util/version.js';

export { ApiRequestError, ApiUnreachableError } from './api-transport.js';
export type { VmExitSummary, VmMetrics } from '../vmm/vm-control.js';

export interface MicroVMDrive {
  /** Firecracker's drive_id (the guest reads it as the disk's serial). */
  id: string;
  /** A raw disk image. */
  path: string;
  readOnly?: boolean;
  /** Boot from it: attached first (/dev/vda) and named in `root=` on the command line. */
  root?: boolean;
  cacheType?: CacheType;
  /** With `root`: boot from this partition (`root=PARTUUID=…`) instead of the whole disk. */
  partuuid?: string;
}

export interface MicroVMConfig {
  /** Linux kernel: a bzImage or an ELF vmlinux. */
  kernel: string;
  initrd?: string;
  /** The kernel command line (default `console=ttyS0 reboot=k panic=1`). */
  bootArgs?: string;
  /** Default 1. */
  vcpus?: number;
  /** Default 128 (Firecracker's). */
  memoryMib?: number;
  drives?: MicroVMDrive[];
  /** virtio-net interfaces on host TAP devices (eth0, eth1, …). */
  networkInterfaces?: { id: string; hostDevName: string; guestMac?: string; mtu?: number }[];
  /** virtio-vsock: host programs connect to `udsPath` and write "CONNECT <port>\n"; guest connections to port P reach `${udsPath}_${P}`. */
  vsock?: { guestCid: number; udsPath: string };
  /** Give the guest a virtio-rng device. */
  entropy?: boolean;
  /** The VMM's own log. */
  logger?: { path: string; level?: LogLevel };
  /** JSON metrics lines, written on flushMetrics() and every 60 s. */
  metrics?: { path: string };
}

export interface MicroVMOptions {
  /** Drive a VMM already serving this API socket instead of starting one in this process. */
  apiSocket?: string;
  /** The instance id (in-process only; Firecracker's --id). */
  id?: string;
}

/** The guest's serial console (in-process VMs only). */
export interface MicroVMConsole {
  /** What the guest prints. Read it (or resume() it): at most CONSOLE_BUFFER_BYTES wait unread. */
  readonly output: Readable;
  /** What the guest reads (not carried into the nested host). */
  readonly input: Writable;
}

export interface MicroVMEvents {
  /** The guest wrote Firecracker's boot-complete value to the boot timer (in-process only). */
  booted: [{ elapsedMs: number }];
  /** The VM ended. */
  exit: [VmExitSummary];
}

/** Guest output held for a reader that is not reading; beyond it, output is dropped (and counted). */
export const CONSOLE_BUFFER_BYTES = 4 * 1024 * 1024;
/** How often a remote VM is asked whether it still runs. */
const REMOTE_POLL_MS = 500;
const IN_PROCESS_FEATURES: readonly ConfigFeature[] = ['initrd', 'entropy', 'drives', 'network-interfaces', 'net-mtu', 'vsock', 'logger', 'metrics'];

export class MicroVM extends EventEmitter<MicroVMEvents> {
  readonly console: MicroVMConsole | undefined;
  /** Console bytes dropped because nobody read `console.output`. */
  droppedConsoleBytes = 0;
  private readonly transport: ApiTransport;
  private readonly controller: VmmController | undefined;
  private readonly ended: Promise<VmExitSummary>;
  private settle: (exit: VmExitSummary) => void = () => {};
  private started = false;

  constructor(
    readonly config: MicroVMConfig,
    options: MicroVMOptions = {},
  ) {
    super();
    this.ended = new Promise<VmExitSummary>((resolve) => (this.settle = resolve));
    void this.ended.then((exit) => this.emit('exit', exit));
    if (options.apiSocket !== undefined) {
      this.transport = new UnixSocketTransport(options.apiSocket);
      this.controller = undefined;
      this.console = undefined;
      return;
    }
    const output = new PassThrough();
    const input = new PassThrough();
    this.console = { output, input };
    this.controller = new VmmController({
      id: options.id ?? 'sdk-instance',
      version: packageVersion(),
      supported: IN_PROCESS_FEATURES,
      launch: (spec) =>
        launchVm(spec, {
          stdin: input,
          stdout: {
            write: (bytes: Uint8Array) => {
              // Both sides of the PassThrough: its readable side stops growing at the high-water mark and
              // the rest waits on the writable side.
              if (output.readableLength + output.writableLength > CONSOLE_BUFFER_BYTES) this.droppedConsoleBytes += bytes.length;
              else output.write(Buffer.from(bytes));
            },
          },
          onBootTimer: (e) => this.emit('booted', { elapsedMs: e.elapsedUs / 1000 }),
        }),
      onExit: (exit) => {
        output.end();
        this.controller?.close();
        this.settle(exit);
      },
    });
    this.transport = new InProcessTransport(this.controller);
  }

  /**
   * Configure and boot, in the order firecracker-go-sdk uses (logger, metrics, machine-config,
   * boot-source, drives, network interfaces, vsock, then entropy, InstanceStart). Rejects with an ApiRequestError naming the
   * request and the VMM's reason.
   */
  async start(): Promise<void> {
    if (this.started) throw new Error('this MicroVM was started already');
    this.started = true;
    const c = this.config;
    const t = this.transport;
    if (c.logger !== undefined) await call(t, 'PUT', '/logger', { log_path: c.logger.path, level: c.logger.level ?? 'Info', show_level: true });
    if (c.metrics !== undefined) await call(t, 'PUT', '/metrics', { metrics_path: c.metrics.path });
    await call(t, 'PUT', '/machine-config', { vcpu_count: c.vcpus ?? 1, mem_size_mib: c.memoryMib ?? 128 });
    await call(t, 'PUT', '/boot-source', {
      kernel_image_path: c.kernel,
      ...(c.initrd !== undefined ? { initrd_path: c.initrd } : {}),
      ...(c.bootArgs !== undefined ? { boot_args: c.bootArgs } : {}),
    });
    for (const d of c.drives ?? []) {
      await call(t, 'PUT', `/drives/${encodeURIComponent(d.id)}`, {
        drive_id: d.id,
        path_on_host: d.path,
        is_root_device: d.root ?? false,
        is_read_only: d.readOnly ?? false,
        ...(d.cacheType !== undefined ? { cache_type: d.cacheType } : {}),
        ...(d.partuuid !== undefined ? { partuuid: d.partuuid } : {}),
      });
    }
    for (const n of c.networkInterfaces ?? []) {
      await call(t, 'PUT', `/network-interfaces/${encodeURIComponent(n.id)}`, {
        iface_id: n.id,
        host_dev_name: n.hostDevName,
        ...(n.guestMac !== undefined ? { guest_mac: n.guestMac } : {}),
        ...(n.mtu !== undefined ? { mtu: n.mtu } : {}),
      });
    }
    if (c.vsock !== undefined) await call(t, 'PUT', '/vsock', { guest_cid: c.vsock.guestCid, uds_path: c.vsock.udsPath });
    if (c.entropy) await call(t, 'PUT', '/entropy', {});
    await call(t, 'PUT', '/actions', { action_type: 'InstanceStart' });
    if (this.controller === undefined) this.watchRemote();
  }

  /** Every vCPU out of KVM_RUN, devices quiet. */
  async pause(): Promise<void> {
    await call(this.transport, 'PATCH', '/vm', { state: 'Paused' });
  }

  async resume(): Promise<void> {
    await call(this.transport, 'PATCH', '/vm', { state: 'Resumed' });
  }

  /** Ctrl-Alt-Del on the guest's keyboard: a Linux guest reboots (and the VMM ends). */
  async sendCtrlAltDel(): Promise<void> {
    await call(this.transport, 'PUT', '/actions', { action_type: 'SendCtrlAltDel' });
  }

  /** Write a metrics line now (needs `metrics` in the config). */
  async flushMetrics(): Promise<void> {
    await call(this.transport, 'PUT', '/actions', { action_type: 'FlushMetrics' });
  }

  /** Put a new image behind a drive; the guest is told its capacity changed. */
  async updateDrive(id: string, path: string): Promise<void> {
    await call(this.transport, 'PATCH', `/drives/${encodeURIComponent(id)}`, { drive_id: id, path_on_host: path });
  }

  /** GET /: id, state ("Not started", "Running", "Paused"), version. */
  async describe(): Promise<{ id: string; state: string; vmm_version: string; app_name: string }> {
    return (await call(this.transport, 'GET', '/')) as { id: string; state: string; vmm_version: string; app_name: string };
  }

  /**
   * Stop the VM. In-process it is stopped at once; over a socket, where Firecracker's API has no
   * stop, the guest is sent Ctrl-Alt-Del.
   */
  async stop(): Promise<VmExitSummary> {
    if (this.controller !== undefined) {
      if (this.controller.state === 'Not started') this.settle({ reason: 'stopped', status: 0, message: 'the VM was never started' });
      this.controller.close();
    } else {
      await this.sendCtrlAltDel();
    }
    return this.ended;
  }

  /** Resolves once the VM has ended, however it ended. */
  wait(): Promise<VmExitSummary> {
    return this.ended;
  }

  /** A VMM over a socket says it ended by going away: ask until it does. */
  private watchRemote(): void {
    const timer = setInterval(() => {
      this.transport.send('GET', '/').catch((e: unknown) => {
        if (!(e instanceof ApiUnreachableError)) return;
        clearInterval(timer);
        this.settle({ reason: 'stopped', status: 0, message: 'the VMM process ended (its API socket is gone)' });
      });
    }, REMOTE_POLL_MS);
    timer.unref();
  }
}

