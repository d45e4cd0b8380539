// Named network namespaces owned by one process: every one carries a recognisable
// prefix, and all are removed when the process exits, fails or is interrupted.
// Tests ("skt-"), benchmarks ("skb-") and the lab share this.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';

export class NetnsSandbox {
  private readonly created = new Set<string>();
  private hooked = false;

  constructor(readonly prefix: string) {
    if (!/^[a-z0-9][a-z0-9-]*-$/.test(prefix)) throw new Error(`sandbox prefix ${JSON.stringify(prefix)}: lowercase letters/digits/dashes ending in "-"`);
  }

  private hook(): void {
    if (this.hooked) return;
    this.hooked = true;
    process.on('exit', () => this.removeAll());
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
      process.once(sig, () => {
        this.removeAll();
        process.kill(process.pid, sig);
      });
    }
  }

  /** Creates a uniquely named namespace with lo up. */
  create(tag = 'ns'): { name: string; path: string } {
    this.hook();
    const name = `${this.prefix}${tag}-${randomBytes(3).toString('hex')}`;
    execFileSync('ip', ['netns', 'add', name]);
    this.created.add(name);
    execFileSync('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
    return { name, path: `/var/run/netns/${name}` };
  }

  remove(name: string): void {
    try {
      execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' });
    } catch {
      /* already gone */
    }
    this.created.delete(name);
  }

  removeAll(): void {
    for (const name of [...this.created]) this.remove(name);
  }
}

/** Runs a command inside a namespace and returns stdout (throws on failure). */
export function nsExec(name: string, cmd: string[], input?: string): string {
  return execFileSync('ip', ['netns', 'exec', name, ...cmd], { encoding: 'utf8', input });
}
