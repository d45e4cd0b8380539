// The parts of a control plane the lab plays, as pure functions over its persisted
// state: node pod CIDRs (a /24 each, stable across restarts), Node objects,
// Deployment -> Pods, scheduling, Service ClusterIPs (stable, spec.clusterIP
// honoured) and EndpointSlices derived from Services, Pods and readiness.
// lab/manager.ts does the I/O: it persists the state and writes `manifests()` into
// the directory every agent watches.
import type { Endpoint, EndpointPort, EndpointSlice, Namespace, NetworkPolicy, Node, Pod, Protocol, Service } from '../cluster/types.js';
import { bytesToIp, ipToBytes, networkOf, parseCidr } from '../util/ip.js';
import { hashOf } from '../util/canonical.js';
import type { Deployment, LabObject } from './config.js';

export class ControllerError extends Error {}

// ---- node pod CIDRs -------------------------------------------------------------

function v4ToInt(ip: string): number {
  return ipToBytes(ip).readUInt32BE(0);
}
function intToV4(n: number): string {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return bytesToIp(b);
}

/**
 * Assigns each node a /24 from clusterCIDR. Existing assignments are kept (stable
 * across restarts); new nodes get the lowest free /24, starting at the second one
 * so that node1 gets x.y.1.0/24 as people expect.
 */
export function assignPodCIDRs(clusterCIDR: string, nodes: readonly string[], existing: Readonly<Record<string, string>>): Record<string, string> {
  const c = parseCidr(clusterCIDR);
  if (c.family !== 4 || c.prefix > 24) throw new ControllerError(`clusterCIDR: invalid value ${JSON.stringify(clusterCIDR)} (IPv4, /24 or shorter)`);
  const base = v4ToInt(networkOf(c));
  const count = 2 ** (24 - c.prefix);
  const out: Record<string, string> = {};
  const used = new Set<number>();
  for (const n of nodes) {
    const e = existing[n];
    if (!e) continue;
    const p = parseCidr(e);
    const idx = (v4ToInt(p.ip) - base) / 256;
    if (p.prefix === 24 && Number.isInteger(idx) && idx >= 0 && idx < count && !used.has(idx)) {
      out[n] = e;
      used.add(idx);
    }
  }
  const order = [...Array(count).keys()].map((i) => (i + 1) % count);
  for (const n of nodes) {
    if (out[n]) continue;
    const idx = order.find((i) => !used.has(i));
    if (idx === undefined) throw new ControllerError(`clusterCIDR ${clusterCIDR}: no free /24 left for node ${n} (${count} in use)`);
    used.add(idx);
    out[n] = `${intToV4(base + idx * 256)}/24`;
  }
  return out;
}

export interface LabNode {
  name: string;
  index: number;
  podCIDR: string;
  underlayIp: string;
}

/** Node objects. The VTEP annotations are added by each agent (.annotations/), not here. */
export function nodeObjects(nodes: readonly LabNode[]): Node[] {
  return nodes.map((n) => ({
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: n.name, labels: { 'kubernetes.io/hostname': n.name, 'skiff.io/lab-node': String(n.index) } },
    spec: { podCIDR: n.podCIDR, podCIDRs: [n.podCIDR] },
    status: { addresses: [{ type: 'InternalIP', address: n.underlayIp }, { type: 'Hostname', address: n.name }] },
  }));
}

// ---- workloads --------------------------------------------------------------------

/** Pods of a Deployment: `<name>-<template hash>-<ordinal hash>`, stable for an unchanged template. */
export function expandDeployment(d: Deployment): Pod[] {
  const replicas = d.spec.replicas ?? 1;
  const th = hashOf(d.spec.template).slice(0, 8);
  const labels = { ...(d.spec.template.metadata?.labels ?? {}), 'pod-template-hash': th };
  return [...Array(replicas).keys()].map((i) => ({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: `${d.metadata.name}-${th}-${hashOf([d.metadata.name, i]).slice(0, 5)}`,
      namespace: d.metadata.namespace ?? 'default',
      labels,
      annotations: { 'skiff.io/owner': `Deployment/${d.metadata.name}` },
    },
    spec: structuredClone(d.spec.template.spec),
  }));
}

export const podKey = (p: { metadata: { namespace?: string; name: string } }) => `${p.metadata.namespace ?? 'default'}/${p.metadata.name}`;

/** Every pod the objects ask for (Pods as written, Deployments expanded). */
export function desiredPods(objects: readonly LabObject[]): Pod[] {
  const pods: Pod[] = [];
  for (const o of objects) {
    if (o.kind === 'Pod') pods.push({ ...structuredClone(o), metadata: { ...o.metadata, namespace: o.metadata.namespace ?? 'default' } });
    else if (o.kind === 'Deployment') pods.push(...expandDeployment(o));
  }
  return pods;
}

/**
 * Places pods: spec.nodeName when given, else the node it already runs on, else the
 * node with the fewest pods (ties: lowest index) — a spread across nodes.
 */
export function schedule(pods: readonly Pod[], nodes: readonly LabNode[], placed: Readonly<Record<string, string>>): Record<string, string> {
  const names = new Set(nodes.map((n) => n.name));
  const load = new Map(nodes.map((n) => [n.name, 0]));
  const out: Record<string, string> = {};
  const pending: Pod[] = [];
  for (const p of pods) {
    const k = podKey(p);
    const want = p.spec.nodeName;
    if (want) {
      if (!names.has(want)) throw new ControllerError(`pod ${k}: spec.nodeName: invalid value ${JSON.stringify(want)} (nodes: ${[...names].join(', ')})`);
      out[k] = want;
    } else if (placed[k] && names.has(placed[k]!)) out[k] = placed[k]!;
    else {
      pending.push(p);
      continue;
    }
    load.set(out[k]!, (load.get(out[k]!) ?? 0) + 1);
  }
  if (pending.length && nodes.length === 0) throw new ControllerError('no nodes to schedule pods on');
  for (const p of pending) {
    const best = [...nodes].sort((a, b) => load.get(a.name)! - load.get(b.name)! || a.index - b.index)[0]!;
    out[podKey(p)] = best.name;
    load.set(best.name, load.get(best.name)! + 1);
  }
  return out;
}

// ---- services ---------------------------------------------------------------------

export const serviceKey = (s: Service) => `${s.metadata.namespace ?? 'default'}/${s.metadata.name}`;

/**
 * ClusterIPs: `spec.clusterIP` when set (must be in serviceCIDR and free; "None" =
 * headless), else the one allocated before, else the lowest free address (skipping
 * the network address and the first host, which clusters reserve for kubernetes.default).
 */
export function allocateClusterIPs(services: readonly Service[], serviceCIDR: string, existing: Readonly<Record<string, string>>): Record<string, string> {
  const c = parseCidr(serviceCIDR);
  const base = v4ToInt(networkOf(c));
  const size = 2 ** (32 - c.prefix);
  const inRange = (ip: string) => {
    try {
      const n = v4ToInt(ip);
      return parseCidr(`${ip}/32`).family === 4 && n > base && n < base + size - 1;
    } catch {
      return false;
    }
  };
  const out: Record<string, string> = {};
  const used = new Map<string, string>();
  const claim = (key: string, ip: string) => {
    const holder = used.get(ip);
    if (holder && holder !== key) throw new ControllerError(`service ${key}: spec.clusterIP: ${ip} is already allocated to service ${holder}`);
    used.set(ip, key);
    out[key] = ip;
  };
  // Explicit addresses first: they win over remembered allocations.
  for (const s of services) {
    const key = serviceKey(s);
    const want = s.spec.clusterIP;
    if (s.spec.type === 'ExternalName') continue;
    if (want === 'None') out[key] = 'None';
    else if (want) {
      if (!inRange(want)) throw new ControllerError(`service ${key}: spec.clusterIP: invalid value ${JSON.stringify(want)} (an address inside serviceCIDR ${serviceCIDR})`);
      claim(key, want);
    }
  }
  for (const s of services) {
    const key = serviceKey(s);
    if (out[key] || s.spec.type === 'ExternalName') continue;
    const prev = existing[key];
    if (prev && prev !== 'None' && inRange(prev) && !used.has(prev)) claim(key, prev);
  }
  let next = base + 2;
  for (const s of services) {
    const key = serviceKey(s);
    if (out[key] || s.spec.type === 'ExternalName') continue;
    while (next < base + size - 1 && (used.has(intToV4(next)) || Object.values(existing).includes(intToV4(next)))) next++;
    if (next >= base + size - 1) {
      // Everything left was remembered for services that no longer exist: reuse those.
      next = base + 2;
      while (next < base + size - 1 && used.has(intToV4(next))) next++;
      if (next >= base + size - 1) throw new ControllerError(`serviceCIDR ${serviceCIDR}: no free ClusterIP for service ${key}`);
    }
    claim(key, intToV4(next));
  }
  return out;
}

export function withClusterIP(s: Service, ip: string | undefined): Service {
  if (!ip || s.spec.type === 'ExternalName') return s;
  return { ...s, spec: { ...s.spec, type: s.spec.type ?? 'ClusterIP', clusterIP: ip, clusterIPs: [ip], ...(ip !== 'None' ? { ipFamilies: ['IPv4'] } : {}) } };
}

// ---- endpoint slices ----------------------------------------------------------------

export function podReady(p: Pod): boolean {
  return p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
}

function selects(selector: Record<string, string> | undefined, labels: Record<string, string> | undefined): boolean {
  if (!selector || Object.keys(selector).length === 0) return false; // no selector: endpoints are managed by hand
  return Object.entries(selector).every(([k, v]) => labels?.[k] === v);
}

/** A service port's target on one pod: a number, or a named container port (with the service port's protocol). */
export function resolveTargetPort(p: Pod, port: { port: number; targetPort?: number | string; protocol?: Protocol }): number | undefined {
  const t = port.targetPort ?? port.port;
  if (typeof t === 'number') return t;
  if (/^\d+$/.test(t)) return Number(t);
  const proto = port.protocol ?? 'TCP';
  for (const c of p.spec.containers) for (const cp of c.ports ?? []) if (cp.name === t && (cp.protocol ?? 'TCP') === proto) return cp.containerPort;
  return undefined;
}

/**
 * EndpointSlices for every selector Service: one slice per distinct set of resolved
 * ports (pods may map a named targetPort to different numbers), as the
 * EndpointSlice controller does. Pods without an IP are not endpoints; a pod whose
 * named port does not resolve is left out of that port set.
 */
export function endpointSlices(services: readonly Service[], pods: readonly Pod[]): EndpointSlice[] {
  const out: EndpointSlice[] = [];
  for (const s of services) {
    if (s.spec.type === 'ExternalName') continue;
    const ns = s.metadata.namespace ?? 'default';
    const members = pods.filter((p) => (p.metadata.namespace ?? 'default') === ns && selects(s.spec.selector, p.metadata.labels) && p.status?.podIP);
    const ports = s.spec.ports ?? [];
    const groups = new Map<string, { ports: EndpointPort[]; endpoints: Endpoint[] }>();
    for (const p of members) {
      const resolved: EndpointPort[] = [];
      let missing = false;
      for (const sp of ports) {
        const n = resolveTargetPort(p, sp);
        if (n === undefined) {
          missing = true;
          continue;
        }
        resolved.push({ ...(sp.name ? { name: sp.name } : { name: '' }), protocol: sp.protocol ?? 'TCP', port: n, ...(sp.appProtocol ? { appProtocol: sp.appProtocol } : {}) });
      }
      if (missing && resolved.length === 0 && ports.length > 0) continue;
      const gk = JSON.stringify(resolved);
      if (!groups.has(gk)) groups.set(gk, { ports: resolved, endpoints: [] });
      const terminating = !!p.metadata.deletionTimestamp;
      const ready = podReady(p);
      const pub = s.spec.publishNotReadyAddresses === true;
      const ep: Endpoint = {
        addresses: [p.status!.podIP!],
        conditions: { ready: pub || (ready && !terminating), serving: pub || ready, terminating },
        ...(p.spec.nodeName ? { nodeName: p.spec.nodeName } : {}),
        ...(p.spec.hostname && p.spec.subdomain === s.metadata.name ? { hostname: p.spec.hostname } : {}),
        targetRef: { kind: 'Pod', namespace: ns, name: p.metadata.name, ...(p.metadata.uid ? { uid: p.metadata.uid } : {}) },
      };
      groups.get(gk)!.endpoints.push(ep);
    }
    if (groups.size === 0) groups.set('[]', { ports: ports.map((sp) => ({ name: sp.name ?? '', protocol: sp.protocol ?? 'TCP', port: typeof sp.targetPort === 'number' ? sp.targetPort : sp.port })), endpoints: [] });
    for (const [gk, g] of [...groups].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      g.endpoints.sort((a, b) => (a.targetRef!.name! < b.targetRef!.name! ? -1 : 1));
      out.push({
        apiVersion: 'discovery.k8s.io/v1',
        kind: 'EndpointSlice',
        metadata: {
          name: `${s.metadata.name}-${hashOf([s.metadata.name, gk]).slice(0, 5)}`,
          namespace: ns,
          labels: { 'kubernetes.io/service-name': s.metadata.name, 'endpointslice.kubernetes.io/managed-by': 'skiff-lab' },
        },
        addressType: 'IPv4',
        endpoints: g.endpoints,
        ports: g.ports,
      });
    }
  }
  return out;
}

// ---- the manifest set -----------------------------------------------------------------

export interface PodRuntime {
  node: string;
  ip?: string;
  ready: boolean;
  terminating?: boolean;
  uid: string;
}

/** Pod objects as the agents should see them: placement and status from the lab's runtime. */
export function podObjects(pods: readonly Pod[], runtime: Readonly<Record<string, PodRuntime>>, hostIPs: Readonly<Record<string, string>>): Pod[] {
  return pods.map((p) => {
    const r = runtime[podKey(p)];
    if (!r) return p;
    return {
      ...p,
      metadata: { ...p.metadata, uid: r.uid, ...(r.terminating ? { deletionTimestamp: new Date(0).toISOString() } : {}) },
      spec: { ...p.spec, nodeName: r.node },
      status: {
        phase: r.ip ? 'Running' : 'Pending',
        ...(r.ip ? { podIP: r.ip, podIPs: [{ ip: r.ip }] } : {}),
        ...(hostIPs[r.node] ? { hostIP: hostIPs[r.node] } : {}),
        conditions: [{ type: 'Ready', status: r.ready ? 'True' : 'False' }],
      },
    };
  });
}

export interface ManifestSet {
  namespaces: Namespace[];
  nodes: Node[];
  pods: Pod[];
  services: Service[];
  endpointSlices: EndpointSlice[];
  networkPolicies: NetworkPolicy[];
}

/** Every object the agents need, derived from the lab's objects and runtime state. */
export function buildManifests(o: {
  objects: readonly LabObject[];
  nodes: readonly LabNode[];
  clusterIPs: Readonly<Record<string, string>>;
  runtime: Readonly<Record<string, PodRuntime>>;
}): ManifestSet {
  const nsNames = new Set<string>(['default', 'kube-system']);
  for (const x of o.objects) nsNames.add(x.kind === 'Namespace' ? x.metadata.name : (x.metadata.namespace ?? 'default'));
  const declared = new Map(o.objects.filter((x): x is Namespace => x.kind === 'Namespace').map((n) => [n.metadata.name, n]));
  const namespaces: Namespace[] = [...nsNames].sort().map((name) => {
    const d = declared.get(name);
    return { apiVersion: 'v1', kind: 'Namespace', metadata: { ...(d?.metadata ?? { name }), labels: { ...(d?.metadata.labels ?? {}), 'kubernetes.io/metadata.name': name } } };
  });
  const hostIPs = Object.fromEntries(o.nodes.map((n) => [n.name, n.underlayIp]));
  const pods = podObjects(desiredPods(o.objects), o.runtime, hostIPs).filter((p) => o.runtime[podKey(p)]);
  const services = o.objects.filter((x): x is Service => x.kind === 'Service').map((s) => withClusterIP(s, o.clusterIPs[serviceKey(s)]));
  return {
    namespaces,
    nodes: nodeObjects(o.nodes),
    pods,
    services,
    endpointSlices: endpointSlices(services, pods),
    networkPolicies: o.objects.filter((x): x is NetworkPolicy => x.kind === 'NetworkPolicy'),
  };
}
