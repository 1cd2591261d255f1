/**
 * A microVM running Linux: the machine (KVM, memory, vCPU threads), the platform devices a
 * stock kernel needs, the boot path, and the lifecycle that turns what the guest did into one
 * outcome — powered off, rebooted, panicked, stopped, or failed — with an exit status.
 *
 * Platform devices (ports and addresses are what Linux and the ACPI tables expect):
 *   COM1 16550A     I/O 0x3f8-0x3ff, IRQ 4     the console
 *   i8042           I/O 0x60, 0x64,  IRQ 1     keyboard reset line (reboot), Ctrl-Alt-Del
 *   CMOS RTC        I/O 0x70-0x71              wall-clock time
 *   ACPI sleep/reset I/O 0x600-0x602           poweroff (S5) and reset (FADT registers)
 *   boot timer      MMIO 0xd0000000            Firecracker's "guest booted" magic write
 *   guest status    MMIO 0xd0001000            the default guest's command exit status
 *   PCI host bridge I/O 0xcf8-0xcff, ECAM 0xe0000000 (bus 0), BARs in [0xc0000000, 0xd0000000)
 *   virtio-pci      bus 0, one slot per device, MSI-X; queue kicks on ioeventfds (virtio-pci-wiring.ts):
 *                   the drives first (root drive first: /dev/vda), then network interfaces (eth0, …),
 *                   vsock, and the entropy device
 */
import { COM1, CMOS_RTC, DEFAULT_ACPI_LAYOUT, I8042 as ACPI_I8042, AcpiSleepResetDevice, SLEEP_RESET_BLOCK_SIZE } from '../arch/x86_64/acpi/index.js';
import { PCI_ECAM_START, PCI_MMIO32_SIZE, PCI_MMIO32_START } from '../arch/x86_64/layout.js';
import { GuestStatusDevice } from '../devices/guest-status.js';
import { SharedIrqLines } from '../devices/irq.js';
import { PCI_CONFIG_ADDRESS_PORT, PCI_CONFIG_PORT_COUNT, PciConfigPorts, PciEcam } from '../devices/pci/host-bridge.js';
import { PciBus } from '../devices/pci/pci-bus.js';
import { BLK_MAX_QUEUES, type VirtioBlock } from '../devices/virtio/blk.js';
import { VirtioRng } from '../devices/virtio/rng.js';
import { VirtioNet } from '../devices/virtio/net.js';
import { Tap } from '../devices/virtio/net-tap.js';
import { VirtioVsock } from '../devices/virtio/vsock.js';
import type { EntropyConfig } from '../api/config/entropy.js';
import { BootTimer, type BootTimerEvent, FIRECRACKER_BOOT_TIMER_MMIO_BASE, FIRECRACKER_BOOT_TIMER_MMIO_SIZE } from '../devices/legacy/boot-timer.js';
import { I8042, I8042_COMMAND_PORT, I8042_DATA_PORT, I8042_KEYBOARD_IRQ } from '../devices/legacy/i8042.js';
import { Mc146818Rtc, RTC_PORT_BASE, RTC_PORT_COUNT } from '../devices/legacy/rtc.js';
import { COM1_IRQ, COM1_PORT_BASE, SERIAL_PORT_COUNT, Serial16550 } from '../devices/legacy/serial.js';
import type { SerialPort } from '../devices/legacy/serial-terminal.js';
import { GUEST_STATUS_MMIO_BASE, GUEST_STATUS_MMIO_SIZE } from '../image/guest-protocol.js';
import { ExitReason } from '../kvm/constants.js';
import { VcpuExitError } from '../kvm/exits.js';
import { MiB } from '../memory/layout.js';
import { ConsoleTail } from './console-tail.js';
import { DriveConfigError, openDrives, validateDrives, type DriveOptions } from './drives.js';
import type { VmMetrics } from './vm-control.js';
import { resolve } from 'node:path';
import { EventFdPoller } from './eventfd-poller.js';
import { loadLinux, type LinuxBootInfo } from './linux-boot.js';
import { Machine } from './machine.js';
import type { VirtioDevice } from '../devices/virtio/device.js';
import { VirtioMmioDevices } from './virtio-mmio-wiring.js';
import { VirtioPciDevices } from './virtio-pci-wiring.js';

// tsvmm's machine limits (validated here too, for library users who skip the config parser).
import { MAX_MEMORY_MIB, MAX_VCPUS, MIN_MEMORY_MIB, MIN_VCPUS, MicroVmConfigError, validateMachineShape } from './limits.js';
export { MAX_MEMORY_MIB, MAX_VCPUS, MIN_MEMORY_MIB, MIN_VCPUS, MicroVmConfigError, validateMachineShape };

/** One PCI bus: every device sits on bus 0, as on Firecracker's and Cloud Hypervisor's PCI. */
const PCI_BUS_COUNT = 1;

/** Linux prints this first on a panic (kernel/panic.c). */
const PANIC_MARKER = 'Kernel panic - not syncing';
/** A panicked guest that neither reboots (panic=N) nor stops is stopped after this long. */
const PANIC_GRACE_MS = 3000;
/** Console bytes kept for error reports. */
const CONSOLE_TAIL_BYTES = 16 * 1024;


export interface MicroVmOptions {
  kernel: string;
  initrd?: string;
  cmdline: string;
  vcpus: number;
  memoryMib: number;
  /** Guest console output (the UART's transmitted bytes). */
  onConsoleOutput?: (bytes: Uint8Array) => void;
  /** Called for each boot-timer write (Firecracker's magic 123). */
  onBootTimer?: (event: BootTimerEvent) => void;
  /** KVM paravirtual CPU features (CPUID 0x40000001 EAX mask); undefined offers all. */
  pvFeatures?: number;
  /** Firecracker's `entropy` object: present gives the guest a virtio-rng device (/dev/hwrng). Rate limiting is not implemented. */
  entropy?: EntropyConfig;
  /** Block drives (virtio-blk on raw image files), validated before the VM is created. */
  drives?: readonly DriveOptions[];
  /** Network interfaces: virtio-net on host TAP devices (opened, or created as root, when the VM is created). */
  networkInterfaces?: readonly NetworkInterfaceOptions[];
  /** virtio-vsock proxied to host Unix sockets (Firecracker's hybrid model). */
  vsock?: VsockOptions;
  /**
   * How virtio devices reach the guest: 'pci' (default; every distro kernel's virtio_pci, MSI-X
   * per queue) or 'mmio' (virtio-mmio windows described in the DSDT, as Firecracker's guests use;
   * one level-triggered interrupt per device).
   */
  virtioTransport?: VirtioTransportKind;
  /** Non-fatal device problems (a device needing reset, a lost ioeventfd); ignored by default. */
  onWarning?: (message: string) => void;
}

import type { NetworkInterfaceOptions, VirtioTransportKind, VsockOptions } from './vm-spec.js';
export type { VirtioTransportKind };

export type MicroVmExitReason = 'poweroff' | 'reboot' | 'panic' | 'stopped' | 'error';

export interface MicroVmExit {
  reason: MicroVmExitReason;
  /** What a CLI should exit with: the guest's reported status, 0 for a clean poweroff or reboot, non-zero otherwise. */
  status: number;
  /** The status the default guest's init reported, if it did. */
  guestStatus?: number;
  /** One line for a user. */
  message: string;
  /** The last console output, for panics and errors. */
  consoleTail: string;
  error?: Error;
}

export class MicroVm {
  readonly machine: Machine;
  readonly serial: Serial16550;
  readonly i8042: I8042;
  readonly guestStatus: GuestStatusDevice;
  readonly pci: PciBus;
  /** Wakes the main thread for virtio queue notifications (ioeventfds). */
  readonly eventFds: EventFdPoller;
  /** The virtio devices on the PCI bus, with their ioeventfds and MSI-X wiring. */
  readonly virtio: VirtioPciDevices;
  /** The virtio-mmio devices (virtioTransport 'mmio'), with their ioeventfds and interrupt lines. */
  readonly virtioMmio: VirtioMmioDevices;
  readonly virtioTransport: VirtioTransportKind;
  /** The entropy device, when `entropy` was given. */
  readonly rng: VirtioRng | undefined;
  /** The block drives, in PCI slot order (the guest's vda, vdb, …). */
  readonly drives: readonly VirtioBlock[];
  /** The network interfaces, in attach order (the guest's eth0, eth1, …), with their iface_id. */
  readonly nets: readonly { readonly id: string; readonly device: VirtioNet }[];
  /** The vsock device, when `vsock` was given. */
  readonly vsock: VirtioVsock | undefined;
  readonly boot: LinuxBootInfo;
  /** Microseconds from VMM start to the guest's boot-timer write, once it happened. */
  bootTimeUs: number | undefined;
  private readonly tail = new ConsoleTail(CONSOLE_TAIL_BYTES, PANIC_MARKER, () => {
    // A kernel without panic=N spins forever after a panic: don't hang with it.
    this.panicTimer = setTimeout(() => this.end('panic'), PANIC_GRACE_MS);
  });
  private panicTimer: NodeJS.Timeout | undefined;
  private uartTxBytes = 0;
  private uartRxBytes = 0;
  private consoleOutput: ((bytes: Uint8Array) => void) | undefined;
  /**
   * The guest console (COM1) for a terminal or a stream: output goes to the sink set here while the
   * VMM keeps its own copy (panic watch, console tail, byte counts); input is counted. Use this,
   * not `serial.setOutput`, which would cut the VMM's copy off.
   */
  readonly console: SerialPort;
  private outcome: { reason: MicroVmExitReason; detail?: string } | undefined;

  private constructor(machine: Machine, opts: MicroVmOptions) {
    this.machine = machine;
    this.consoleOutput = opts.onConsoleOutput;
    this.serial = new Serial16550({
      irq: machine.irqLine(COM1_IRQ),
      output: (bytes) => {
        this.uartTxBytes += bytes.length;
        this.tail.push(bytes);
        this.consoleOutput?.(bytes);
      },
    });
    const serial = this.serial;
    const setSink = (output: ((bytes: Uint8Array) => void) | undefined): void => {
      serial.flush();
      this.consoleOutput = output;
    };
    const enqueue = (bytes: Uint8Array): number => this.consoleInput(bytes);
    this.console = {
      setOutput: setSink,
      enqueueInput: enqueue,
      get onInputSpace() {
        return serial.onInputSpace;
      },
      set onInputSpace(f: (() => void) | undefined) {
        serial.onInputSpace = f;
      },
    };
    this.i8042 = new I8042({ irq: machine.irqLine(I8042_KEYBOARD_IRQ), onReset: () => this.end('reboot', 'the guest reset the CPU through the i8042') });
    this.guestStatus = new GuestStatusDevice();
    const io = machine.ioBus;
    io.insert(COM1_PORT_BASE, SERIAL_PORT_COUNT, this.serial, 'serial COM1');
    io.insert(I8042_DATA_PORT, 1, this.i8042.dataPort, 'i8042 data');
    io.insert(I8042_COMMAND_PORT, 1, this.i8042.commandPort, 'i8042 command');
    io.insert(RTC_PORT_BASE, RTC_PORT_COUNT, new Mc146818Rtc(), 'CMOS RTC');
    const sleepReset = DEFAULT_ACPI_LAYOUT.sleepResetRegisters;
    io.insert(
      sleepReset.address,
      SLEEP_RESET_BLOCK_SIZE,
      new AcpiSleepResetDevice({ onPowerOff: () => this.end('poweroff'), onReset: () => this.end('reboot', 'the guest reset through the ACPI reset register') }),
      'ACPI sleep/reset registers',
    );
    const onBootTimer = opts.onBootTimer;
    machine.mmioBus.insert(
      FIRECRACKER_BOOT_TIMER_MMIO_BASE,
      FIRECRACKER_BOOT_TIMER_MMIO_SIZE,
      new BootTimer({
        onEvent: (e) => {
          this.bootTimeUs ??= e.elapsedUs;
          onBootTimer?.(e);
        },
      }),
      'boot timer',
    );
    machine.mmioBus.insert(GUEST_STATUS_MMIO_BASE, GUEST_STATUS_MMIO_SIZE, this.guestStatus, 'guest status');
    // PCI: Linux finds virtio devices here (DESIGN.md); the window must be the one the DSDT announces.
    const mmio32Window = { start: PCI_MMIO32_START, size: PCI_MMIO32_SIZE };
    this.pci = new PciBus({ mmio: machine.mmioBus, mmio32Window });
    io.insert(PCI_CONFIG_ADDRESS_PORT, PCI_CONFIG_PORT_COUNT, new PciConfigPorts(this.pci), 'PCI configuration ports');
    const ecam = new PciEcam(this.pci, PCI_BUS_COUNT);
    machine.mmioBus.insert(PCI_ECAM_START, ecam.size, ecam, 'PCI ECAM');
    const onWarning = opts.onWarning ?? (() => {});
    this.eventFds = new EventFdPoller((e) => onWarning(e.message));
    // One table of IOAPIC inputs for every device that raises them, so shared inputs are ORed.
    const ioapicInputs = new SharedIrqLines((gsi) => machine.irqLine(gsi));
    this.virtio = new VirtioPciDevices({ vm: machine.vm, memory: machine.memory, pci: this.pci, poller: this.eventFds, intx: ioapicInputs, onWarning });
    this.virtioMmio = new VirtioMmioDevices({ vm: machine.vm, memory: machine.memory, mmioBus: machine.mmioBus, poller: this.eventFds, irqLines: ioapicInputs, onWarning });
    this.virtioTransport = opts.virtioTransport ?? 'pci';
    const plug = (device: VirtioDevice): void => {
      if (this.virtioTransport === 'mmio') this.virtioMmio.add(device);
      else this.virtio.add(device);
    };
    // One request queue per vCPU: each vCPU submits and takes completions on its own ring and MSI-X vector.
    this.drives = openDrives(opts.drives ?? [], Math.min(opts.vcpus, BLK_MAX_QUEUES));
    const nets: { id: string; device: VirtioNet }[] = [];
    this.nets = nets;
    try {
      for (const drive of this.drives) plug(drive);
      // Network interfaces come after the drives and before the rest, as Firecracker attaches them.
      for (const iface of opts.networkInterfaces ?? []) {
        const device = new VirtioNet({
          backend: Tap.open(iface.hostDevName),
          readiness: this.eventFds,
          ...(iface.guestMac !== undefined ? { mac: iface.guestMac } : {}),
          ...(iface.mtu !== undefined ? { mtu: iface.mtu } : {}),
          name: `virtio-net '${iface.id}'`,
          onWarning,
        });
        nets.push({ id: iface.id, device });
        plug(device);
      }
      this.vsock = opts.vsock === undefined ? undefined : new VirtioVsock({ guestCid: opts.vsock.guestCid, udsPath: opts.vsock.udsPath, onError: (e) => onWarning(e.message) });
      if (this.vsock !== undefined) plug(this.vsock);
      this.rng = opts.entropy === undefined ? undefined : new VirtioRng();
      if (this.rng !== undefined) plug(this.rng);
      this.boot = this.load(opts);
    } catch (e) {
      this.virtio.close();
      this.virtioMmio.close();
      for (const n of nets) n.device.close();
      void this.vsock?.close();
      void this.eventFds.close();
      // No vCPU ran, so no request is in flight and closing does not wait on guest memory.
      for (const drive of this.drives) void drive.close();
      throw e;
    }
  }

  private load(opts: MicroVmOptions): LinuxBootInfo {
    return loadLinux(this.machine, {
      kernelPath: opts.kernel,
      ...(opts.initrd !== undefined ? { initrdPath: opts.initrd } : {}),
      cmdline: opts.cmdline,
      acpi: {
        legacyDevices: [COM1, ACPI_I8042, CMOS_RTC],
        pci: {
          busStart: 0,
          busEnd: PCI_BUS_COUNT - 1,
          ecamBase: PCI_ECAM_START,
          mmio32Window: { base: PCI_MMIO32_START, size: PCI_MMIO32_SIZE },
          intxRoutes: this.virtio.intxRoutes,
        },
        virtioMmioDevices: this.virtioMmio.acpiDevices,
      },
      ...(opts.pvFeatures !== undefined ? { pvFeatures: opts.pvFeatures } : {}),
    });
  }

  /** Validate, create the VM, load the kernel. Nothing runs until start(). */
  static create(opts: MicroVmOptions): MicroVm {
    validateMachineShape(opts.vcpus, opts.memoryMib);
    const drives = validateDrives(opts.drives ?? []);
    const machine = Machine.create({ memory: { ramBytes: opts.memoryMib * MiB }, vcpuCount: opts.vcpus });
    try {
      return new MicroVm(machine, { ...opts, drives });
    } catch (e) {
      void machine.close();
      throw e;
    }
  }

  start(): void {
    this.eventFds.start();
    this.machine.start();
  }

  /** Resolves once the VM has ended, however it ended; never rejects. Frees the VM's resources. */
  async wait(): Promise<MicroVmExit> {
    let error: Error | undefined;
    try {
      const exit = await this.machine.waitForExit();
      if (this.outcome === undefined) {
        if (exit.reason === 'poweroff') this.outcome = { reason: 'poweroff' };
        else if (exit.reason === 'reset') this.outcome = { reason: 'reboot', detail: 'the guest rebooted' };
        else if (exit.reason === 'hlt') this.outcome = { reason: 'error', detail: 'a vCPU halted with no interrupt controller to wake it' };
        else this.outcome = { reason: 'stopped' };
      }
    } catch (e) {
      error = e as Error;
      if (e instanceof VcpuExitError && e.exitReason === ExitReason.SHUTDOWN) {
        // A triple fault: on a PC it resets the CPU, and Linux's `reboot=t` relies on it.
        this.outcome = { reason: 'reboot', detail: `the guest triple-faulted (CPU reset) on ${e.where}` };
        error = undefined;
      } else {
        this.outcome = { reason: 'error', detail: (e as Error).message.split('\n')[0] ?? String(e) };
      }
    } finally {
      if (this.panicTimer) clearTimeout(this.panicTimer);
      this.serial.flush();
      // The vCPUs have stopped: no more kicks. The network devices stop watching their taps, and
      // vsock drops its connections, so no host event writes into guest memory from here on.
      for (const n of this.nets) n.device.close();
      await this.vsock?.close();
      // Stop the poller (its pending epoll_wait keeps the process alive), drop the ioeventfds
      // while the VM is still open, then close the machine.
      await this.eventFds.close();
      this.virtio.close();
      this.virtioMmio.close();
      // Drive requests still in flight read into or write out of guest memory on the threadpool:
      // wait for them (and close the images) before the memory is unmapped.
      await Promise.all(this.drives.map((d) => d.close()));
      await this.machine.close();
    }
    let reason = this.outcome.reason;
    if (this.tail.markerSeen && (reason === 'reboot' || reason === 'stopped')) reason = 'panic';
    const guestStatus = this.guestStatus.status;
    const consoleTail = this.consoleTail();
    let status: number;
    let message: string;
    switch (reason) {
      case 'poweroff':
        status = guestStatus ?? 0;
        message = guestStatus === undefined ? 'the guest powered off' : `the guest powered off; its command exited with status ${guestStatus}`;
        break;
      case 'reboot':
        status = guestStatus ?? 0;
        message = this.outcome.detail ?? 'the guest rebooted';
        break;
      case 'panic': {
        status = 1;
        const line = consoleTail.split('\n').find((l) => l.includes(PANIC_MARKER)) ?? PANIC_MARKER;
        message = `the guest kernel panicked: ${line.slice(line.indexOf(PANIC_MARKER)).trim()}`;
        break;
      }
      case 'stopped':
        status = 1;
        message = this.outcome.detail ?? 'the VM was stopped';
        break;
      case 'error':
        status = 1;
        message = `the VM failed: ${this.outcome.detail ?? 'unknown error'}`;
        break;
    }
    return { reason, status, message, consoleTail, ...(guestStatus !== undefined ? { guestStatus } : {}), ...(error ? { error } : {}) };
  }

  /** Stop the VM from the host (SIGINT/SIGTERM, an API call). */
  stop(detail = 'the VM was stopped'): void {
    this.end('stopped', detail);
  }

  /** Every vCPU out of KVM_RUN and parked, and the devices' event handling held (queue kicks, tap frames). */
  async pause(): Promise<void> {
    await this.machine.pause();
    this.eventFds.pause();
  }

  resume(): void {
    this.eventFds.resume();
    this.machine.resume();
  }

  /** Press Ctrl-Alt-Del on the guest's keyboard. */
  sendCtrlAltDel(): boolean {
    return this.i8042.sendCtrlAltDel();
  }

  /** Feed bytes to the guest console's receive side; returns how many were accepted. */
  consoleInput(bytes: Uint8Array): number {
    const accepted = this.serial.enqueueInput(bytes);
    this.uartRxBytes += accepted;
    return accepted;
  }

  /**
   * Put a new image behind a drive (Firecracker's PATCH /drives after boot); the guest is told its
   * capacity changed. Throws a DriveConfigError naming the drive when there is no such drive or the
   * file cannot be used.
   */
  updateDrive(driveId: string, pathOnHost: string): void {
    const drive = this.drives.find((d) => d.driveId === driveId);
    if (drive === undefined) throw new DriveConfigError(`drive '${driveId}': no such drive; the drives are ${this.drives.map((d) => `'${d.driveId}'`).join(', ') || 'none'}`);
    const [checked] = validateDrives([{ id: driveId, path: pathOnHost, readOnly: drive.readOnly }]);
    try {
      drive.updateBackingFile(resolve(checked!.path));
    } catch (e) {
      throw new DriveConfigError(`drive '${driveId}': cannot open ${resolve(pathOnHost)}: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  /** The VM's counters (totals since it was created). */
  metrics(): VmMetrics {
    const vcpu = { exits: 0, io_exits: 0, mmio_exits: 0, intr_exits: 0 };
    for (const c of this.machine.exitCounts()) {
      vcpu.exits += c.total;
      vcpu.io_exits += c.io;
      vcpu.mmio_exits += c.mmio;
      vcpu.intr_exits += c.intr;
    }
    const block: VmMetrics['block'] = {};
    for (const d of this.drives) {
      const m = d.metrics;
      block[d.driveId] = { read_count: m.reads, write_count: m.writes, read_bytes: m.bytesRead, write_bytes: m.bytesWritten, flush_count: m.flushes, errors: m.ioErrors + m.unsupported, immediate_count: m.immediateTransfers };
    }
    return {
      vcpu,
      uart: { tx_bytes: this.uartTxBytes, rx_bytes: this.uartRxBytes },
      block,
      ...(this.rng !== undefined ? { entropy: { requests: this.rng.requestsServed, bytes: this.rng.bytesServed } } : {}),
      net: Object.fromEntries(
        this.nets.map(({ id, device }) => {
          const m = device.metrics;
          return [id, { tx_frames: m.txFrames, tx_bytes: m.txBytes, tx_dropped: m.txDropped, rx_frames: m.rxFrames, rx_bytes: m.rxBytes, rx_dropped: m.rxDropped }];
        }),
      ),
      ...(this.vsock !== undefined ? { vsock: { tx_packets: this.vsock.metrics.txPackets, rx_packets: this.vsock.metrics.rxPackets, connections: this.vsock.connectionCount, malformed: this.vsock.metrics.malformed } } : {}),
      virtio: {
        doorbell_wakeups: this.virtio.doorbellWakeups + this.virtioMmio.doorbellWakeups,
        notifications: [...this.virtio.transports, ...this.virtioMmio.transports].reduce((n, t) => n + t.notifications, 0),
        interrupts: this.virtio.interrupts.irqfd + this.virtio.interrupts.signalMsi + this.virtio.intxRaises + this.virtioMmio.interrupts,
      },
    };
  }

  /**
   * What the VM's devices were doing, for a report when it is stopped from outside (`tsvmm run`
   * with TSVMM_STOP_REPORT=1): the console UART's registers and interrupt line, each vCPU's exits,
   * and the counters of metrics().
   */
  describeState(): string[] {
    return [
      `serial COM1: ${this.serial.describeState()}`,
      ...this.machine.exitCounts().map((c, i) => `vcpu ${i}: exits ${c.total} (io ${c.io}, mmio ${c.mmio}, intr ${c.intr})`),
      `metrics: ${JSON.stringify(this.metrics())}`,
    ];
  }

  /** The last console output as text. */
  consoleTail(): string {
    return this.tail.text();
  }

  private end(reason: MicroVmExitReason, detail?: string): void {
    this.outcome ??= detail === undefined ? { reason } : { reason, detail };
    this.machine.requestExit(reason === 'poweroff' ? 'poweroff' : reason === 'reboot' ? 'reset' : 'stopped', detail);
  }
}
