/**
 * Guests that need more than busybox (socat for TCP and vsock), booted through the SDK with their
 * console collected, for the network and vsock guest tests. The initramfs is built by test/run.ts
 * before the nested stage (the cache is read-only inside the nested host).
 */
import { SOCAT, findToolsInitramfs } from '../../src/image/guest-tools.js';
import { commandCmdlineArg } from '../../src/image/guest-protocol.js';
import { MicroVM, type MicroVMConfig } from '../../src/sdk/microvm.js';
import { defaultGuest } from './guest.js';

export function socatInitrd(): string {
  const path = findToolsInitramfs(defaultGuest().initrd, [SOCAT]);
  if (path === undefined) throw new Error('the socat guest initramfs is not built: run the tests with npm test (test/run.ts builds it)');
  return path;
}

export interface ToolsGuest {
  vm: MicroVM;
  /** Everything the guest printed so far. */
  output(): string;
  /** Resolves once the console has printed a line matching `pattern` (its match), or rejects after `timeoutMs`. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
}

/** Boot the socat guest running `command` with the given devices; resolves once it started. */
export async function startToolsGuest(command: string, devices: Omit<MicroVMConfig, 'kernel' | 'initrd' | 'bootArgs'>): Promise<ToolsGuest> {
  const guest = defaultGuest();
  const vm = new MicroVM({ kernel: guest.kernel, initrd: socatInitrd(), bootArgs: `${guest.bootArgs} ${commandCmdlineArg(command)}`, memoryMib: 512, ...devices });
  let text = '';
  const waiters = new Set<() => void>();
  vm.console!.output.on('data', (b: Buffer) => {
    text += b.toString();
    for (const w of waiters) w();
  });
  let ended = false;
  void vm.wait().then(() => {
    ended = true;
    for (const w of waiters) w();
  });
  await vm.start();
  const waitFor = (pattern: RegExp, timeoutMs = 180_000): Promise<RegExpMatchArray> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        const m = pattern.exec(text);
        if (m !== null) {
          cleanup();
          resolve(m);
        } else if (ended) {
          cleanup();
          reject(new Error(`the guest ended before printing ${pattern}:\n${text.slice(-3000)}`));
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`timed out waiting for ${pattern}:\n${text.slice(-3000)}`));
      }, timeoutMs);
      const cleanup = (): void => {
        clearTimeout(timer);
        waiters.delete(check);
      };
      waiters.add(check);
      check();
    });
  return { vm, output: () => text, waitFor };
}
