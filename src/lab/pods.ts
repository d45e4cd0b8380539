// Pods: a network namespace `<prefix><lab>-p-<hash>` attached by invoking the real
// bin/skiff-cni exactly as a container runtime does (CNI_* environment, the node's
// network configuration on stdin, run inside the node's namespace), plus the pod's
// processes (the built-in port servers, or the containers' commands).
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, openSync, closeSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Pod } from '../cluster/types.js';
import { hashOf } from '../util/canonical.js';
import { CNI_BIN_DIR, ROOT, ipamDir, stopPid } from './agents.js';
import { cniConfDir, nodeDir, writeAtomic } from './state.js';
import { deleteNetns, listNetns, nsPathOf } from './topology.js';

export const CNI_PLUGIN = join(CNI_BIN_DIR, 'skiff-cni');
export const CONFLIST = '10-skiff.conflist';
export const CLUSTER_DNS = '169.254.20.10';

export const podNetnsName = (prefix: string, lab: string, key: string) => `${prefix}${lab}-p-${hashOf(key).slice(0, 10)}`;
export const containerIdOf = (lab: string, key: string) => `skiff-lab-${lab}-${hashOf(key).slice(0, 16)}`;

/** The conflist the agent would write (same fields), for nodes whose agent has not written it yet. */
export function fallbackConflist(o: { podCIDR: string; mtu: number; lab: string; node: string }): Record<string, unknown> {
  return {
    cniVersion: '1.1.0',
    name: 'skiff',
    plugins: [
      {
        type: 'skiff-cni',
        bridge: 'skiff0',
        isGateway: true,
        isDefaultGateway: true,
        ipMasq: false,
        mtu: o.mtu,
        hairpinMode: true,
        ipam: { type: 'host-local', ranges: [[{ subnet: o.podCIDR }]], dataDir: ipamDir(o.lab, o.node) },
        overlay: { vni: 1, port: 8472 },
      },
    ],
  };
}

/** Reads the node's conflist (writing the fallback first when absent) and derives the plugin's stdin as libcni does. */
export function pluginConfig(o: { podCIDR: string; mtu: number; lab: string; node: string }): Record<string, unknown> {
  const path = join(cniConfDir(o.lab, o.node), CONFLIST);
  if (!existsSync(path)) writeAtomic(path, JSON.stringify(fallbackConflist(o), null, 2) + '\n');
  const list = JSON.parse(readFileSync(path, 'utf8')) as { cniVersion: string; name: string; plugins: Record<string, unknown>[] };
  if (!Array.isArray(list.plugins) || !list.plugins[0]) throw new Error(`${path}: no plugins`);
  return { cniVersion: list.cniVersion, name: list.name, ...list.plugins[0] };
}

export interface CniCall {
  command: 'ADD' | 'DEL';
  containerId: string;
  netns: string;
  nodeNs: string;
  namespace: string;
  name: string;
  conf: Record<string, unknown>;
}

export function runCni(c: CniCall): { code: number; stdout: string; stderr: string } {
  const env = {
    PATH: '/usr/sbin:/usr/bin:/sbin:/bin',
    CNI_COMMAND: c.command,
    CNI_CONTAINERID: c.containerId,
    CNI_NETNS: nsPathOf(c.netns),
    CNI_IFNAME: 'eth0',
    CNI_PATH: CNI_BIN_DIR,
    CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${c.namespace};K8S_POD_NAME=${c.name};K8S_POD_INFRA_CONTAINER_ID=${c.containerId}`,
  };
  try {
    const stdout = execFileSync('ip', ['netns', 'exec', c.nodeNs, CNI_PLUGIN], { env, input: JSON.stringify(c.conf), encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
    return { code: 0, stdout, stderr: '' };
  } catch (e) {
    const err = e as { status?: number; stdout?: string; stderr?: string };
    return { code: err.status ?? 1, stdout: err.stdout ?? '', stderr: err.stderr ?? '' };
  }
}

export function resolvConf(namespace: string, domain: string): string {
  return `nameserver ${CLUSTER_DNS}\nsearch ${namespace}.svc.${domain} svc.${domain} ${domain}\noptions ndots:5\n`;
}

export interface StartedPod {
  netns: string;
  containerId: string;
  ip: string;
  pids: number[];
  /** Files the built-in servers create once their ports are bound (see waitStarted). */
  started: string[];
}

/** Creates, attaches and starts a pod on a node. Rolls back the namespace on failure. */
export function createPod(o: { prefix: string; lab: string; pod: Pod; node: string; nodeNs: string; podCIDR: string; mtu: number; domain: string }): StartedPod {
  const ns = o.pod.metadata.namespace ?? 'default';
  const key = `${ns}/${o.pod.metadata.name}`;
  const netns = podNetnsName(o.prefix, o.lab, key);
  const containerId = containerIdOf(o.lab, key);
  if (!listNetns().includes(netns)) {
    execFileSync('ip', ['netns', 'add', netns]);
    execFileSync('ip', ['-n', netns, 'link', 'set', 'lo', 'up']);
  }
  try {
    mkdirSync(`/etc/netns/${netns}`, { recursive: true });
    writeFileSync(`/etc/netns/${netns}/resolv.conf`, resolvConf(ns, o.domain));
    const conf = pluginConfig({ podCIDR: o.podCIDR, mtu: o.mtu - 50, lab: o.lab, node: o.node });
    const r = runCni({ command: 'ADD', containerId, netns, nodeNs: o.nodeNs, namespace: ns, name: o.pod.metadata.name, conf });
    if (r.code !== 0) throw new Error(`skiff-cni ADD for pod ${key} failed (exit ${r.code}): ${r.stdout.trim() || r.stderr.trim()}`);
    const res = JSON.parse(r.stdout) as { ips?: { address: string }[] };
    const ip = res.ips?.[0]?.address.split('/')[0];
    if (!ip) throw new Error(`skiff-cni ADD for pod ${key}: no IP in the result ${r.stdout.trim()}`);
    const { pids, started } = startProcesses(o.lab, o.node, netns, key, o.pod);
    return { netns, containerId, ip, pids, started };
  } catch (e) {
    deleteNetns(netns);
    rmSync(`/etc/netns/${netns}`, { recursive: true, force: true });
    throw e;
  }
}

/** Built-in servers for declared ports; a container with `command` runs that instead. */
function startProcesses(lab: string, node: string, netns: string, key: string, pod: Pod): { pids: number[]; started: string[] } {
  const pids: number[] = [];
  const started: string[] = [];
  const logDir = join(nodeDir(lab, node), 'pods');
  mkdirSync(logDir, { recursive: true });
  for (const c of pod.spec.containers) {
    const log = join(logDir, `${key.replace('/', '_')}_${c.name}.log`);
    let argv: string[] | undefined;
    let env: NodeJS.ProcessEnv | undefined;
    if (c.command?.length) argv = [...c.command, ...(c.args ?? [])];
    else if (c.ports?.length) {
      argv = [process.execPath, join(ROOT, 'dist', 'src', 'lab', 'server.js'), key, ...c.ports.map((p) => `${(p.protocol ?? 'TCP').toLowerCase()}:${p.containerPort}`)];
      const marker = log.replace(/\.log$/, '.started');
      rmSync(marker, { force: true });
      env = { ...process.env, SKIFF_LAB_STARTED: marker };
      started.push(marker);
    }
    if (!argv) continue;
    const fd = openSync(log, 'a');
    try {
      const child = spawn('ip', ['netns', 'exec', netns, ...argv], { detached: true, stdio: ['ignore', fd, fd], ...(env ? { env } : {}) });
      child.unref();
      if (child.pid) pids.push(child.pid);
    } finally {
      closeSync(fd);
    }
  }
  return { pids, started };
}

/**
 * Waits until the pod's built-in servers have bound their ports (their marker files
 * exist), at most timeoutMs. Without it a pod without a readiness probe was ready, and
 * in the Service's rotation, while its server was still starting: a connection in that
 * window was refused (seen in CI while scaling a Deployment up on a loaded machine).
 */
export async function waitStarted(markers: string[], timeoutMs = 10_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!markers.every((m) => existsSync(m))) {
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, 10));
  }
  return true;
}

/** Stops the pod's processes, CNI DEL (releases the IP), removes the namespace. */
export async function deletePod(o: { lab: string; node: string; nodeNs: string; netns: string; containerId: string; pids: number[]; namespace: string; name: string; podCIDR: string; mtu: number }): Promise<void> {
  for (const pid of o.pids) await stopPid(pid, 1000);
  if (listNetns().includes(o.nodeNs)) {
    const conf = pluginConfig({ podCIDR: o.podCIDR, mtu: o.mtu - 50, lab: o.lab, node: o.node });
    runCni({ command: 'DEL', containerId: o.containerId, netns: o.netns, nodeNs: o.nodeNs, namespace: o.namespace, name: o.name, conf });
  }
  deleteNetns(o.netns);
  rmSync(`/etc/netns/${o.netns}`, { recursive: true, force: true });
}
