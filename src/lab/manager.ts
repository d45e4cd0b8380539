// The lab's lifecycle: up, apply, delete, down, status. The pure decisions come from
// controller.ts; this module does the I/O (namespaces, agents, pods, the state file
// and the manifest directory) and keeps the state file current after every step, so
// `down` after a crash still finds everything (and sweeps `<prefix><lab>-*` anyway).
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { stringify as toYaml } from 'yaml';
import type { Pod } from '../cluster/types.js';
import { logger } from '../util/log.js';
import type { LabObject, LabSettings } from './config.js';
import { allocateClusterIPs, assignPodCIDRs, buildManifests, desiredPods, podKey, schedule, serviceKey, type LabNode } from './controller.js';
import { alive, AGENT_METRICS, startAgent, stopPid } from './agents.js';
import { CONFLIST, createPod, deletePod, waitStarted } from './pods.js';
import { cniConfDir, labDir, nodeDir, loadState, manifestsDir, removeLabDir, saveState, writeAtomic, type LabState, type PodState } from './state.js';
import { LAB_PREFIX, addNode, createSwitch, destroyNamespaces, labNamespaces, listNetns, nodeNsName, removeNode, type Topology } from './topology.js';

export type Progress = (msg: string) => void;

const objKey = (o: LabObject) => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`;

function topologyOf(s: LabState): Topology {
  return createSwitch({ lab: s.name, prefix: s.prefix, underlayCidr: s.settings.underlayCIDR, mtu: s.settings.mtu });
}

/** Writes the manifest files the agents watch (only files whose bytes changed). */
export function writeManifests(s: LabState): void {
  const m = buildManifests({ objects: s.objects, nodes: s.nodes, clusterIPs: s.clusterIPs, runtime: s.pods });
  const dir = manifestsDir(s.name);
  const files: Record<string, unknown[]> = {
    '00-namespaces.yaml': m.namespaces,
    '10-nodes.yaml': m.nodes,
    '20-services.yaml': m.services,
    '30-pods.yaml': m.pods,
    '40-endpointslices.yaml': m.endpointSlices,
    '50-networkpolicies.yaml': m.networkPolicies,
  };
  for (const [name, objs] of Object.entries(files)) {
    const text = objs.map((o) => toYaml(o)).join('---\n') || '# (none)\n';
    const path = join(dir, name);
    let cur: string | undefined;
    try {
      cur = readFileSync(path, 'utf8');
    } catch {
      cur = undefined;
    }
    if (cur !== text) writeAtomic(path, text);
  }
}

export function requireState(name: string): LabState {
  const s = loadState(name);
  if (!s) throw new Error(`lab ${JSON.stringify(name)} does not exist (no ${join(labDir(name), 'state.json')}); start it with skiff lab up --name ${name}`);
  return s;
}

const agentOptions = (s: LabState, node: string) => ({ lab: s.name, node, clusterCIDR: s.settings.clusterCIDR, serviceCIDR: s.settings.serviceCIDR, clusterDomain: s.settings.clusterDomain, policyAwareDns: s.settings.policyAwareDns === true });

/** Creates the lab's namespaces and agents; applies the objects. */
export async function up(settings: LabSettings, objects: LabObject[], progress: Progress, opts: { prefix?: string } = {}): Promise<LabState> {
  const prefix = opts.prefix ?? LAB_PREFIX;
  const prev = loadState(settings.name);
  if (prev && Object.values(prev.agents).some(alive)) throw new Error(`lab ${settings.name} is already up (use skiff lab apply, or skiff lab down first)`);
  // Leftovers of a crashed run (a state file without live agents, or namespaces without a
  // state file) are removed first: their pods' processes are gone, so nothing is reusable
  // except the allocations, which are kept so pod CIDRs and ClusterIPs stay stable.
  if (prev || labNamespaces(prefix, settings.name).length) {
    progress(`removing the leftovers of an earlier lab ${settings.name}`);
    await down(settings.name, progress, prev?.prefix ?? prefix);
  }
  const s: LabState = { version: 1, name: settings.name, prefix, settings, nodes: [], objects: [], podCIDRs: prev?.podCIDRs ?? {}, clusterIPs: prev?.clusterIPs ?? {}, pods: {}, agents: {} };
  saveState(s); // first, so a failure from here on leaves something `down` can read

  progress(`creating the lab switch ${prefix}${s.name}-sw`);
  const topo = createSwitch({ lab: s.name, prefix, underlayCidr: settings.underlayCIDR, mtu: settings.mtu });
  const names = [...Array(settings.nodes).keys()].map((i) => `node${i + 1}`);
  s.podCIDRs = assignPodCIDRs(settings.clusterCIDR, names, s.podCIDRs);
  s.nodes = [];
  for (const [i, name] of names.entries()) {
    progress(`creating ${name} (${nodeNsName(prefix, s.name, i + 1)}, pod CIDR ${s.podCIDRs[name]})`);
    const w = addNode(topo, i + 1, name);
    s.nodes.push({ name, index: i + 1, podCIDR: s.podCIDRs[name]!, underlayIp: w.underlayIp, ns: w.ns });
    saveState(s);
  }
  writeManifests(s);
  for (const n of s.nodes) {
    progress(`starting the agent on ${n.name}`);
    s.agents[n.name] = startAgent(n.ns, agentOptions(s, n.name));
    saveState(s);
  }
  progress('waiting for the agents to write their CNI configs');
  await waitFor(() => s.nodes.every((n) => existsSync(join(cniConfDir(s.name, n.name), CONFLIST))), 15_000);
  await apply(s, objects, progress);
  return s;
}

async function waitFor(cond: () => boolean, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 200));
  }
  return cond();
}

/** Adds or replaces objects, then converges pods, ClusterIPs and the manifests. */
export async function apply(s: LabState, objects: LabObject[], progress: Progress): Promise<void> {
  const byKey = new Map(s.objects.map((o) => [objKey(o), o]));
  for (const o of objects) byKey.set(objKey(o), o);
  s.objects = [...byKey.values()];
  await converge(s, progress);
}

/** Removes objects (by kind/namespace/name), then converges. */
export async function remove(s: LabState, objects: LabObject[], progress: Progress): Promise<void> {
  const gone = new Set(objects.map(objKey));
  s.objects = s.objects.filter((o) => !gone.has(objKey(o)));
  await converge(s, progress);
}

async function converge(s: LabState, progress: Progress): Promise<void> {
  const services = s.objects.filter((o) => o.kind === 'Service');
  s.clusterIPs = allocateClusterIPs(services as never, s.settings.serviceCIDR, s.clusterIPs);
  const pods = desiredPods(s.objects);
  const placedBefore = Object.fromEntries(Object.entries(s.pods).map(([k, p]) => [k, p.node]));
  const placement = schedule(pods, s.nodes, placedBefore);
  const want = new Map(pods.map((p) => [podKey(p), p]));

  // Pods no longer wanted (or moved to another node): terminating first, so slices drop them, then gone.
  for (const [key, p] of Object.entries(s.pods)) {
    if (want.has(key) && placement[key] === p.node) continue;
    p.terminating = true;
    p.ready = false;
  }
  writeManifests(s);
  for (const [key, p] of Object.entries(s.pods)) {
    if (!p.terminating) continue;
    progress(`deleting pod ${key}`);
    const node = s.nodes.find((n) => n.name === p.node);
    const [namespace, name] = key.split('/') as [string, string];
    await deletePod({ lab: s.name, node: p.node, nodeNs: node?.ns ?? '', netns: p.netns, containerId: p.containerId, pids: p.pids, namespace, name, podCIDR: node?.podCIDR ?? '', mtu: s.settings.mtu });
    delete s.pods[key];
    saveState(s);
  }

  const failures: string[] = [];
  const starting = new Map<string, string[]>();
  for (const [key, pod] of want) {
    if (s.pods[key]) continue;
    const node = s.nodes.find((n) => n.name === placement[key])!;
    progress(`creating pod ${key} on ${node.name}`);
    try {
      const started = createPod({ prefix: s.prefix, lab: s.name, pod, node: node.name, nodeNs: node.ns, podCIDR: node.podCIDR, mtu: s.settings.mtu, domain: s.settings.clusterDomain });
      s.pods[key] = { node: node.name, ip: started.ip, ready: false, uid: started.containerId, netns: started.netns, containerId: started.containerId, pids: started.pids };
      starting.set(key, started.started);
      saveState(s);
    } catch (e) {
      failures.push((e as Error).message);
    }
  }
  // Readiness: a new pod's containers must have started (the built-in servers have bound
  // their ports); then probes (tcpSocket, exec) decide, and pods without one are ready.
  const notStarted = new Set<string>();
  for (const [key, markers] of starting) {
    if (await waitStarted(markers)) continue;
    notStarted.add(key);
    failures.push(`pod ${key}: its servers did not bind their ports within 10 s (see its log under ${nodeDir(s.name, s.pods[key]!.node)}/pods)`);
  }
  for (const [key, p] of Object.entries(s.pods)) {
    const pod = want.get(key);
    if (pod) p.ready = !notStarted.has(key) && (await probeReady(pod, p.netns, p.ip));
  }
  saveState(s);
  writeManifests(s);
  if (failures.length) throw new Error(`${failures.length} pod(s) failed: ${failures.join('; ')}`);
}

/** Runs a pod's readiness probes once (with a few retries while its servers start). */
export async function probeReady(pod: Pod, netns: string, ip: string | undefined, attempts = 15): Promise<boolean> {
  const probes = pod.spec.containers.map((c) => c.readinessProbe).filter((p) => p !== undefined);
  if (probes.length === 0) return true;
  for (let i = 0; i < attempts; i++) {
    const ok = probes.every((p) => {
      try {
        if (p!.exec) {
          execFileSync('ip', ['netns', 'exec', netns, ...p!.exec.command], { stdio: 'ignore', timeout: 5000 });
          return true;
        }
        if (p!.tcpSocket) {
          const port = resolveProbePort(pod, p!.tcpSocket.port);
          const script = `const s=require('net').connect(${port},${JSON.stringify(ip ?? '127.0.0.1')});s.on('connect',()=>process.exit(0));s.on('error',()=>process.exit(1));setTimeout(()=>process.exit(1),1000)`;
          execFileSync('ip', ['netns', 'exec', netns, process.execPath, '-e', script], { stdio: 'ignore', timeout: 5000 });
          return true;
        }
      } catch {
        return false;
      }
      return false;
    });
    if (ok) return true;
    await new Promise((r) => setTimeout(r, 200));
  }
  return false;
}

function resolveProbePort(pod: Pod, port: number | string): number {
  if (typeof port === 'number') return port;
  for (const c of pod.spec.containers) for (const cp of c.ports ?? []) if (cp.name === port) return cp.containerPort;
  return Number(port);
}

/** Adds a node to a running lab: the next free index, a fresh pod CIDR, its agent. */
export async function addLabNode(s: LabState, progress: Progress): Promise<LabNode & { ns: string }> {
  const used = new Set(s.nodes.map((n) => n.index));
  let index = 1;
  while (used.has(index)) index++;
  const name = `node${index}`;
  s.podCIDRs = assignPodCIDRs(s.settings.clusterCIDR, [...s.nodes.map((n) => n.name), name], s.podCIDRs);
  progress(`creating ${name} (${nodeNsName(s.prefix, s.name, index)}, pod CIDR ${s.podCIDRs[name]})`);
  const w = addNode(topologyOf(s), index, name);
  const node = { name, index, podCIDR: s.podCIDRs[name]!, underlayIp: w.underlayIp, ns: w.ns };
  s.nodes.push(node);
  s.nodes.sort((a, b) => a.index - b.index);
  saveState(s);
  writeManifests(s);
  progress(`starting the agent on ${name}`);
  s.agents[name] = startAgent(node.ns, agentOptions(s, name));
  saveState(s);
  await waitFor(() => existsSync(join(cniConfDir(s.name, name), CONFLIST)), 15_000);
  return node;
}

/** Stops a node's agent (TERM: kernel state stays, traffic keeps flowing) and starts a new one. */
export async function restartAgent(s: LabState, name: string, progress: Progress): Promise<number> {
  const n = s.nodes.find((x) => x.name === name);
  if (!n) throw new Error(`node ${JSON.stringify(name)}: not in lab ${s.name} (nodes: ${s.nodes.map((x) => x.name).join(', ')})`);
  progress(`stopping the agent on ${name}`);
  await stopPid(s.agents[name]);
  progress(`starting the agent on ${name}`);
  s.agents[name] = startAgent(n.ns, agentOptions(s, name));
  saveState(s);
  return s.agents[name]!;
}

/** Removes a node from a running lab (its pods go with it). */
export async function removeLabNode(s: LabState, name: string, progress: Progress): Promise<void> {
  const n = s.nodes.find((x) => x.name === name);
  if (!n) throw new Error(`node ${JSON.stringify(name)}: not in lab ${s.name} (nodes: ${s.nodes.map((x) => x.name).join(', ')})`);
  await stopPid(s.agents[name]);
  delete s.agents[name];
  for (const [key, p] of Object.entries(s.pods)) {
    if (p.node !== name) continue;
    for (const pid of p.pids) await stopPid(pid, 1000);
    destroyPodNs(p.netns);
    delete s.pods[key];
  }
  removeNode(topologyOf(s), n.index);
  s.nodes = s.nodes.filter((x) => x !== n);
  delete s.podCIDRs[name];
  saveState(s);
  writeManifests(s);
  rmSync(nodeDir(s.name, name), { recursive: true, force: true });
  progress(`removed ${name}`);
}

function destroyPodNs(ns: string): void {
  try {
    execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
  } catch {
    /* gone */
  }
  rmSync(`/etc/netns/${ns}`, { recursive: true, force: true });
}

/** Everything the lab created goes: processes, namespaces, /etc/netns entries, the state directory. */
export async function down(name: string, progress: Progress, prefix = LAB_PREFIX): Promise<void> {
  const s = loadState(name);
  const pfx = s?.prefix ?? prefix;
  if (s) {
    // Only processes that live in one of this lab's namespaces are stopped: after a
    // crash (or a reboot) a recorded pid may belong to someone else by now.
    const ours = labNetnsInodes(pfx, name);
    const mine = (pid: number | undefined) => pid !== undefined && ours.has(netnsInodeOf(pid) ?? -1);
    if (s.controllerPid && mine(s.controllerPid)) await stopPid(s.controllerPid);
    await Promise.all(
      Object.entries(s.agents).map(async ([node, pid]) => {
        if (!mine(pid)) return;
        progress(`stopping the agent on ${node}`);
        await stopPid(pid);
      }),
    );
    await Promise.all(Object.values(s.pods).flatMap((p) => p.pids.filter(mine).map((pid) => stopPid(pid, 500))));
  }
  // Whatever still runs inside the lab's namespaces (a lost state file after a crash,
  // a `lab exec` session) would outlive them: stop it too. Only processes whose network
  // namespace is one of this lab's are touched.
  const ours = labNetnsInodes(pfx, name);
  const strays = ours.size ? processesIn(ours) : [];
  if (strays.length) {
    progress(`stopping ${strays.length} process(es) still running in the lab's namespaces`);
    await Promise.all(strays.map((pid) => stopPid(pid, 1000)));
  }
  const removed = destroyNamespaces(pfx, name);
  if (removed.length) progress(`removed namespaces ${removed.join(' ')}`);
  if (existsSync('/etc/netns')) {
    for (const d of readdirSync('/etc/netns')) if (d.startsWith(`${pfx}${name}-`)) rmSync(join('/etc/netns', d), { recursive: true, force: true });
  }
  removeLabDir(name);
  logger('lab').debug('lab removed', { name });
}

/** Inode numbers of the lab's namespaces (what /proc/PID/ns/net points at). */
function labNetnsInodes(prefix: string, lab: string): Set<number> {
  const out = new Set<number>();
  for (const ns of labNamespaces(prefix, lab)) {
    try {
      out.add(statSync(`/run/netns/${ns}`).ino);
    } catch {
      /* gone meanwhile */
    }
  }
  return out;
}

/** Pids whose network namespace is one of `inodes` (never this process). */
function processesIn(inodes: Set<number>): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const pid = Number(d);
    if (pid === process.pid) continue;
    const ino = netnsInodeOf(pid);
    if (ino !== undefined && inodes.has(ino)) out.push(pid);
  }
  return out;
}

function netnsInodeOf(pid: number): number | undefined {
  try {
    const m = /^net:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/ns/net`));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** Waits until every running agent reports every peer up (or the time is over). */
export async function waitPeersUp(name: string, ms: number): Promise<LabStatus> {
  const until = Date.now() + ms;
  for (;;) {
    const st = status(name);
    const want = st.nodes.length - 1;
    const ok = st.nodes.every((n) => n.agent === 'running' && Object.keys(n.peers).length === want && Object.values(n.peers).every((p) => p.up));
    if (ok || Date.now() >= until) return st;
    await new Promise((r) => setTimeout(r, 500));
  }
}

export interface LabStatus {
  name: string;
  nodes: {
    name: string;
    ns: string;
    podCIDR: string;
    underlayIp: string;
    agent: 'running' | 'stopped';
    peers: Record<string, { up: boolean; rttSeconds?: number }>;
    /** Host firewall chains (other tables) that drop forwarded traffic by policy, as the agent reports them. */
    firewallDrops: string[];
  }[];
  pods: { key: string; node: string; ip?: string; ready: boolean }[];
  services: { key: string; clusterIP: string }[];
}

/**
 * Reads an agent's /metrics from inside its node namespace: a plain HTTP/1.0 GET through
 * bash's /dev/tcp (milliseconds; starting a Node.js process per node made `lab status`
 * take seconds on a loaded machine).
 */
export function agentMetrics(nodeNs: string): string | undefined {
  const [host, port] = AGENT_METRICS.split(':') as [string, string];
  const script = `exec 3<>/dev/tcp/${host}/${port} && printf 'GET /metrics HTTP/1.0\\r\\nHost: ${host}\\r\\n\\r\\n' >&3 && cat <&3`;
  try {
    const raw = execFileSync('ip', ['netns', 'exec', nodeNs, 'timeout', '5', 'bash', '-c', script], { encoding: 'utf8', timeout: 6000, stdio: ['ignore', 'pipe', 'ignore'] });
    const i = raw.indexOf('\r\n\r\n');
    if (!/^HTTP\/1\.[01] 200/.test(raw) || i < 0) return undefined;
    return raw.slice(i + 4);
  } catch {
    return undefined;
  }
}

export function parsePeerMetrics(text: string): Record<string, { up: boolean; rttSeconds?: number }> {
  const out: Record<string, { up: boolean; rttSeconds?: number }> = {};
  for (const m of text.matchAll(/^skiff_overlay_peer_up\{node="([^"]+)"\} (\S+)$/gm)) out[m[1]!] = { up: Number(m[2]) === 1 };
  for (const m of text.matchAll(/^skiff_overlay_peer_rtt_seconds\{node="([^"]+)"\} (\S+)$/gm)) if (out[m[1]!]) out[m[1]!]!.rttSeconds = Number(m[2]);
  return out;
}

export function parseFirewallDrops(text: string): string[] {
  return [...text.matchAll(/^skiff_overlay_foreign_forward_drop\{chain="([^"]+)"\} 1$/gm)].map((m) => m[1]!).sort();
}

export function status(name: string): LabStatus {
  const s = requireState(name);
  const present = new Set(listNetns());
  return {
    name: s.name,
    nodes: s.nodes.map((n: LabNode & { ns: string }) => {
      const running = alive(s.agents[n.name]) && present.has(n.ns);
      const metrics = running ? agentMetrics(n.ns) : undefined;
      return { name: n.name, ns: n.ns, podCIDR: n.podCIDR, underlayIp: n.underlayIp, agent: running ? 'running' : 'stopped', peers: metrics ? parsePeerMetrics(metrics) : {}, firewallDrops: metrics ? parseFirewallDrops(metrics) : [] };
    }),
    pods: Object.entries(s.pods).map(([key, p]) => ({ key, node: p.node, ...(p.ip ? { ip: p.ip } : {}), ready: p.ready })),
    services: s.objects.filter((o) => o.kind === 'Service').map((o) => ({ key: serviceKey(o as never), clusterIP: s.clusterIPs[serviceKey(o as never)] ?? '' })),
  };
}
