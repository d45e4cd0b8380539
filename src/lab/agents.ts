// One `skiff agent` per node, inside the node's namespace, on the lab's manifest
// directory; logs to /run/skiff/lab/<lab>/<node>/agent.log.
import { spawn } from 'node:child_process';
import { mkdirSync, openSync, closeSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cniConfDir, manifestsDir, nodeDir } from './state.js';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const SKIFF_BIN = join(ROOT, 'bin', 'skiff');
export const CNI_BIN_DIR = join(ROOT, 'bin');
export const AGENT_METRICS = '127.0.0.1:10256';

export const ipamDir = (lab: string, node: string) => join(nodeDir(lab, node), 'ipam');
export const agentLog = (lab: string, node: string) => join(nodeDir(lab, node), 'agent.log');

export function agentArgs(o: { lab: string; node: string; clusterCIDR: string; serviceCIDR: string; clusterDomain: string; policyAwareDns?: boolean }): string[] {
  return [
    'agent',
    '--node', o.node,
    '--manifests', manifestsDir(o.lab),
    '--cni-conf-dir', cniConfDir(o.lab, o.node),
    '--cni-bin-dir', CNI_BIN_DIR,
    '--ipam-data-dir', ipamDir(o.lab, o.node),
    '--cluster-cidr', o.clusterCIDR,
    '--service-cidr', o.serviceCIDR,
    '--cluster-domain', o.clusterDomain,
    '--metrics-address', AGENT_METRICS,
    ...(o.policyAwareDns ? ['--policy.policy-aware-dns=true'] : []),
  ];
}

/** Starts an agent detached (it outlives `skiff lab up`); returns its pid. */
export function startAgent(nodeNs: string, o: Parameters<typeof agentArgs>[0]): number {
  mkdirSync(nodeDir(o.lab, o.node), { recursive: true });
  const fd = openSync(agentLog(o.lab, o.node), 'a');
  try {
    const child = spawn('ip', ['netns', 'exec', nodeNs, SKIFF_BIN, ...agentArgs(o)], { detached: true, stdio: ['ignore', fd, fd] });
    child.unref();
    return child.pid!;
  } finally {
    closeSync(fd);
  }
}

export function alive(pid: number | undefined): boolean {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A zombie (killed, not yet reaped by its parent) answers kill 0 but is dead.
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** Stops a process the lab started (by its recorded pid): TERM, then KILL after a grace period. */
export async function stopPid(pid: number | undefined, graceMs = 3000): Promise<void> {
  if (!alive(pid)) return;
  try {
    process.kill(pid!, 'SIGTERM');
  } catch {
    return;
  }
  const until = Date.now() + graceMs;
  while (Date.now() < until && alive(pid)) await new Promise((r) => setTimeout(r, 50));
  if (alive(pid)) {
    try {
      process.kill(pid!, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}
