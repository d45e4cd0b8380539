// Test namespaces: every one has the "skt-" prefix, and all of them are removed when
// the test process exits, fails or is interrupted, so `ip netns list` stays as it was.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import t from 'tap';

export const PREFIX = 'skt-';
const created = new Set<string>();
let hooked = false;

export function isRoot(): boolean {
  return process.getuid?.() === 0;
}

/** Skips the whole test file with a clear reason when not root. Returns false then. */
export function requireRoot(tap: typeof t = t): boolean {
  if (isRoot()) return true;
  tap.plan(0, 'needs root: creates network namespaces (run as root, e.g. sudo npm test)');
  return false;
}

function cleanup(): void {
  for (const name of created) {
    try {
      execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' });
    } catch {
      /* already gone */
    }
  }
  created.clear();
}

function hook(): void {
  if (hooked) return;
  hooked = true;
  process.on('exit', cleanup);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      cleanup();
      process.kill(process.pid, sig);
    });
  }
}

/** Creates a uniquely named namespace with lo up. */
export function makeNetns(tag = 'ns'): { name: string; path: string } {
  hook();
  const name = `${PREFIX}${tag}-${randomBytes(3).toString('hex')}`;
  execFileSync('ip', ['netns', 'add', name]);
  created.add(name);
  execFileSync('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
  return { name, path: `/var/run/netns/${name}` };
}

export function delNetns(name: string): void {
  try {
    execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' });
  } catch {
    /* gone */
  }
  created.delete(name);
}

/** Runs a command inside a namespace and returns stdout (throws on failure). */
export function nsExec(name: string, cmd: string[], input?: string): string {
  return execFileSync('ip', ['netns', 'exec', name, ...cmd], { encoding: 'utf8', input });
}
