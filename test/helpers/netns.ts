// Test namespaces: every one has the "skt-" prefix (or $SKIFF_NETNS_PREFIX, e.g.
// "skt-cn-" so that concurrent test runs are told apart), and all of them are removed
// when the test process exits, fails or is interrupted, so `ip netns list` stays as it was.
import t from 'tap';
import { NetnsSandbox, nsExec } from '../../src/os/sandbox.js';

export const PREFIX = process.env.SKIFF_NETNS_PREFIX ?? 'skt-';
const sandbox = new NetnsSandbox(PREFIX);
export { nsExec };

export function isRoot(): boolean {
  return process.getuid?.() === 0;
}

/** Skips the whole test file with a clear reason when not root. Returns false then. */
export function requireRoot(tap: typeof t = t): boolean {
  if (isRoot()) return true;
  tap.plan(0, 'needs root: creates network namespaces (run as root, e.g. sudo npm test)');
  return false;
}

/** Creates a uniquely named namespace with lo up; removed at exit. */
export function makeNetns(tag = 'ns'): { name: string; path: string } {
  return sandbox.create(tag);
}

export function delNetns(name: string): void {
  sandbox.remove(name);
}
