/**
 * The VM's GSI routing table: which interrupt controller input, or which MSI message, each KVM
 * GSI stands for. An irqfd asserts a GSI, so an MSI-X vector delivered through an irqfd needs a
 * GSI routed to its message.
 *
 * KVM_SET_GSI_ROUTING replaces the whole table (Documentation/virt/kvm/api.rst), including the
 * routes KVM_CREATE_IRQCHIP set up for the legacy pins that KVM_IRQ_LINE and the in-kernel PIT
 * use. So the table always starts with KVM's own default routing (virt/kvm/irqchip.c
 * kvm_setup_default_irq_routing, arch/x86/kvm/irq_comm.c default_routing): GSIs 0–15 to both the
 * PIC pair and the IOAPIC, GSIs 16–23 to the IOAPIC only. MSI routes take GSIs from 24 up.
 */
import { KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE } from '../kvm/constants.js';
import type { IrqRoute } from '../kvm/structs.js';
import type { Vm } from '../kvm/vm.js';

/** IOAPIC inputs KVM emulates (arch/x86/kvm/ioapic.h IOAPIC_NUM_PINS). */
export const IOAPIC_PINS = 24;
/** GSIs wired to the 8259 pair as well (8 pins each, ISA IRQs 0–15). */
const PIC_PINS = 8;
const ISA_IRQS = 16;
/** KVM_MAX_IRQ_ROUTES (include/linux/kvm_host.h). */
export const MAX_IRQ_ROUTES = 4096;

/** KVM's default routes for the legacy interrupt controllers. */
export function defaultIrqchipRoutes(): IrqRoute[] {
  const routes: IrqRoute[] = [];
  for (let gsi = 0; gsi < IOAPIC_PINS; gsi++) {
    if (gsi < ISA_IRQS) {
      routes.push({ gsi, kind: 'irqchip', irqchip: gsi < PIC_PINS ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE, pin: gsi % PIC_PINS });
    }
    routes.push({ gsi, kind: 'irqchip', irqchip: KVM_IRQCHIP_IOAPIC, pin: gsi });
  }
  return routes;
}

type MsiRoute = Extract<IrqRoute, { kind: 'msi' }>;

export class GsiRouter {
  /** Table rewrites (each is one KVM_SET_GSI_ROUTING). */
  updates = 0;
  private readonly legacy = defaultIrqchipRoutes();
  private readonly msi = new Map<number, MsiRoute>();
  private nextGsi = IOAPIC_PINS;

  constructor(private readonly vm: Pick<Vm, 'setGsiRouting'>) {}

  /** A GSI of its own for an MSI route. Throws when KVM's table would be full. */
  allocateMsiGsi(): number {
    if (this.legacy.length + this.msi.size + 1 > MAX_IRQ_ROUTES) throw new RangeError(`no GSI left: KVM allows ${MAX_IRQ_ROUTES} routes`);
    const gsi = this.nextGsi++;
    return gsi;
  }

  /** Route `gsi` to this MSI message, rewriting KVM's table only if the message changed. */
  setMsiRoute(gsi: number, addressLo: number, addressHi: number, data: number): void {
    const current = this.msi.get(gsi);
    if (current !== undefined && current.addressLo === addressLo && current.addressHi === addressHi && current.data === data) return;
    this.msi.set(gsi, { gsi, kind: 'msi', addressLo, addressHi, data });
    this.commit();
  }

  /** Drop `gsi`'s route (its irqfd must be unregistered first). */
  removeMsiRoute(gsi: number): void {
    if (this.msi.delete(gsi)) this.commit();
  }

  private commit(): void {
    this.updates++;
    this.vm.setGsiRouting([...this.legacy, ...this.msi.values()]);
  }
}
