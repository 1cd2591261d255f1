/**
 * Which controller operation answers each endpoint of the OpenAPI document (openapi.ts), keyed by
 * "METHOD /path/{template}" exactly as the document spells its paths. A test checks that the two
 * list the same operations, so an endpoint cannot be documented and not served, or the reverse.
 */
import type { ApiReply, VmmController } from './controller.js';

export type RouteHandler = (vmm: VmmController, params: Readonly<Record<string, string>>, body: unknown) => ApiReply | Promise<ApiReply>;

export const ROUTES: Readonly<Record<string, RouteHandler>> = {
  'GET /': (vmm) => vmm.instanceInfo(),
  'GET /version': (vmm) => vmm.version(),
  'GET /vm/config': (vmm) => vmm.vmConfig(),
  'PUT /boot-source': (vmm, _p, body) => vmm.putBootSource(body),
  'GET /machine-config': (vmm) => vmm.getMachineConfig(),
  'PUT /machine-config': (vmm, _p, body) => vmm.putMachineConfig(body),
  'PATCH /machine-config': (vmm, _p, body) => vmm.patchMachineConfig(body),
  'PUT /drives/{drive_id}': (vmm, p, body) => vmm.putDrive(p['drive_id']!, body),
  'PATCH /drives/{drive_id}': (vmm, p, body) => vmm.patchDrive(p['drive_id']!, body),
  'PUT /network-interfaces/{iface_id}': (vmm, p, body) => vmm.putNetworkInterface(p['iface_id']!, body),
  'PATCH /network-interfaces/{iface_id}': (vmm, p, body) => vmm.patchNetworkInterface(p['iface_id']!, body),
  'PUT /vsock': (vmm, _p, body) => vmm.putVsock(body),
  'PUT /entropy': (vmm, _p, body) => vmm.putEntropy(body),
  'PUT /logger': (vmm, _p, body) => vmm.putLogger(body),
  'PUT /metrics': (vmm, _p, body) => vmm.putMetrics(body),
  'PUT /actions': (vmm, _p, body) => vmm.action(body),
  'PATCH /vm': (vmm, _p, body) => vmm.patchVm(body),
};
