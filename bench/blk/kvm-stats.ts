/**
 * KVM's own counters for one VM, read from outside the VMM: exits by reason, halt polling,
 * interrupt injections. They count what happens *inside* the kernel too (an ioeventfd kick, a
 * halt, a timer interrupt never reach the VMM's userspace), which the VMM's exit counters cannot
 * see, and they exist for QEMU and tsvmm alike, so the two VMMs' guests can be compared exit for
 * exit.
 *
 * Source: debugfs, /sys/kernel/debug/kvm/<pid>-<vm fd>/<stat> (virt/kvm/kvm_main.c,
 * kvm_create_vm_debugfs): one file per statistic of Documentation/virt/kvm/api.rst
 * "KVM_GET_STATS_FD", with the vCPU statistics summed over the VM's vCPUs. The nested host mounts
 * debugfs (src/host/nested-init.ts); elsewhere it may be missing or root-only, and the snapshot is
 * then undefined.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export const KVM_DEBUGFS = '/sys/kernel/debug/kvm';

/** Statistic name → value. */
export type KvmStats = Readonly<Record<string, number>>;

/** The counters of every VM process `pid` holds (summed; a VMM holds one). Undefined when none can be read. */
export function kvmStatsSnapshot(pid: number, root: string = KVM_DEBUGFS): KvmStats | undefined {
  let dirs: string[];
  try {
    dirs = readdirSync(root).filter((d) => d.startsWith(`${pid}-`));
  } catch {
    return undefined;
  }
  const out: Record<string, number> = {};
  let found = false;
  for (const d of dirs) {
    let names: string[];
    try {
      names = readdirSync(join(root, d), { withFileTypes: true }).filter((e) => e.isFile()).map((e) => e.name);
    } catch {
      continue; // the VM went away between listing and reading
    }
    for (const name of names) {
      let text: string;
      try {
        text = readFileSync(join(root, d, name), 'utf8');
      } catch {
        continue; // some statistics are write-only or vanish with the VM
      }
      const v = Number(text.trim());
      if (!Number.isFinite(v)) continue;
      out[name] = (out[name] ?? 0) + v;
      found = true;
    }
  }
  return found ? out : undefined;
}

/** b − a for the statistics both have; cumulative counters only grow, gauges (max_mmu_page_hash_collisions…) may not. */
export function kvmStatsDelta(a: KvmStats, b: KvmStats): KvmStats {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(b)) {
    const before = a[k];
    if (before !== undefined) out[k] = v - before;
  }
  return out;
}

/**
 * The counters the reports show per I/O (or per packet), in order, with what each means.
 * Names as in Linux 6.1 (arch/x86/kvm/x86.c kvm_vcpu_stats_desc, virt/kvm/kvm_main.c).
 */
export const KVM_STATS_SHOWN: readonly { readonly name: string; readonly label: string }[] = [
  { name: 'exits', label: 'VM exits (all)' },
  { name: 'halt_exits', label: 'HLT exits' },
  { name: 'irq_exits', label: 'exits for a host interrupt' },
  { name: 'io_exits', label: 'port I/O exits' },
  { name: 'mmio_exits', label: 'MMIO exits to userspace' },
  { name: 'irq_injections', label: 'interrupts injected' },
  { name: 'halt_attempted_poll', label: 'halt polls' },
  { name: 'halt_successful_poll', label: 'halt polls that caught a wake-up' },
  { name: 'halt_wakeup', label: 'wake-ups from a halt' },
];
