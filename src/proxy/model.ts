// From Services and EndpointSlices to what the proxy programs (pure): one
// ServicePortInfo per (service, port, IP family) with its endpoints, and the
// endpoint selection rules (ready ones; if none, serving-and-terminating ones; Local
// traffic policies). Bad objects are skipped with a reason the caller logs; they
// never stop other services. Names are checked here against the Kubernetes rules,
// so only DNS-label characters ever reach the nft layer (which escapes again).
import { isIPv4, isIPv6 } from 'node:net';
import type { EndpointSlice, Protocol, Service } from '../cluster/types.js';
import { bytesToIp, ipToBigInt, ipToBytes, parseV4 } from '../util/ip.js';

export type IPFamily = 4 | 6;
export const DEFAULT_AFFINITY_TIMEOUT = 10800;
export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';

export interface ServicePortInfo {
  /** "namespace/name:portName" (kube-proxy's ServicePortName; portName may be ""). */
  id: string;
  /** "namespace/name". */
  svcKey: string;
  namespace: string;
  name: string;
  portName: string;
  protocol: Protocol;
  port: number;
  family: IPFamily;
  clusterIP: string;
  /** NodePort / LoadBalancer services. */
  nodePort?: number;
  externalIPs: string[];
  loadBalancerIPs: string[];
  /** Seconds, when sessionAffinity is ClientIP. */
  affinityTimeout?: number;
  externalLocal: boolean;
  internalLocal: boolean;
  healthCheckNodePort?: number;
  /** The service's targetPort (used only for slices without a port list). */
  targetPort: number | string;
}

export interface EndpointInfo {
  ip: string;
  port: number;
  ready: boolean;
  serving: boolean;
  terminating: boolean;
  nodeName?: string;
  local: boolean;
}

export interface ServicePortState {
  info: ServicePortInfo;
  /** All endpoints known for the port (deduplicated, sorted by address then port). */
  endpoints: EndpointInfo[];
}

export interface Problem {
  kind: 'Service' | 'EndpointSlice';
  key: string;
  reason: string;
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

function canonIp(s: unknown, fam?: IPFamily): string | undefined {
  if (typeof s !== 'string') return undefined;
  if (fam === 4 ? !isIPv4(s) : fam === 6 ? !isIPv6(s) : !isIPv4(s) && !isIPv6(s)) return undefined;
  if (s.includes('%')) return undefined;
  if (isIPv4(s)) return s; // already canonical (isIPv4 rejects leading zeros)
  return bytesToIp(ipToBytes(s));
}

const familyOfIp = (ip: string): IPFamily => (isIPv4(ip) ? 4 : 6);

function validPort(n: unknown): n is number {
  return typeof n === 'number' && Number.isInteger(n) && n >= 1 && n <= 65535;
}

/** The service a slice belongs to ("namespace/name"), or undefined. */
export function sliceServiceKey(s: EndpointSlice): string | undefined {
  const name = s.metadata.labels?.[SERVICE_NAME_LABEL];
  const ns = s.metadata.namespace;
  if (!name || !ns) return undefined;
  return `${ns}/${name}`;
}

/**
 * The service's ports per family, or [] with problems recorded. ExternalName and
 * headless services have nothing to program and are not problems.
 */
export function servicePorts(svc: Service, problems: Problem[]): ServicePortInfo[] {
  const ns = svc.metadata.namespace ?? '';
  const name = svc.metadata.name;
  const key = `${ns}/${name}`;
  const bad = (reason: string): ServicePortInfo[] => {
    problems.push({ kind: 'Service', key, reason });
    return [];
  };
  if (!DNS_LABEL.test(ns) || ns.length > 63) return bad(`invalid namespace ${JSON.stringify(ns)}`);
  if (typeof name !== 'string' || !DNS_LABEL.test(name) || name.length > 63) return bad(`invalid name ${JSON.stringify(name)}`);
  const spec = svc.spec ?? {};
  const type = spec.type ?? 'ClusterIP';
  if (type === 'ExternalName') return [];
  if (!['ClusterIP', 'NodePort', 'LoadBalancer'].includes(type)) return bad(`invalid type ${JSON.stringify(type)}`);
  const rawIPs = spec.clusterIPs?.length ? spec.clusterIPs : spec.clusterIP !== undefined ? [spec.clusterIP] : [];
  if (rawIPs.length === 1 && rawIPs[0] === 'None') return []; // headless: DNS only
  if (rawIPs.length === 0 || rawIPs[0] === '') return bad('spec.clusterIP: missing');
  const clusterIPs: string[] = [];
  for (const ip of rawIPs) {
    const c = canonIp(ip);
    if (!c) return bad(`spec.clusterIPs: invalid IP ${JSON.stringify(ip)}`);
    if (clusterIPs.some((x) => familyOfIp(x) === familyOfIp(c))) return bad(`spec.clusterIPs: two IPv${familyOfIp(c)} addresses`);
    clusterIPs.push(c);
  }
  const ports = spec.ports ?? [];
  if (!Array.isArray(ports)) return bad('spec.ports: not a list');
  const seenName = new Set<string>();
  const seenPort = new Set<string>();
  const seenNode = new Set<string>();
  const external = type === 'NodePort' || type === 'LoadBalancer';
  for (const [i, p] of ports.entries()) {
    const proto = p.protocol ?? 'TCP';
    if (!['TCP', 'UDP', 'SCTP'].includes(proto)) return bad(`spec.ports[${i}].protocol: invalid value ${JSON.stringify(proto)}`);
    if (!validPort(p.port)) return bad(`spec.ports[${i}].port: invalid value ${JSON.stringify(p.port)}`);
    const pn = p.name ?? '';
    if (pn !== '' && (!DNS_LABEL.test(pn) || pn.length > 63)) return bad(`spec.ports[${i}].name: invalid value ${JSON.stringify(pn)}`);
    if (seenName.has(pn)) return bad(`spec.ports[${i}].name: duplicate ${JSON.stringify(pn)}`);
    seenName.add(pn);
    if (seenPort.has(`${proto}/${p.port}`)) return bad(`spec.ports[${i}]: duplicate port ${proto}/${p.port}`);
    seenPort.add(`${proto}/${p.port}`);
    if (external && p.nodePort !== undefined) {
      if (!validPort(p.nodePort)) return bad(`spec.ports[${i}].nodePort: invalid value ${JSON.stringify(p.nodePort)}`);
      if (seenNode.has(`${proto}/${p.nodePort}`)) return bad(`spec.ports[${i}].nodePort: duplicate ${proto}/${p.nodePort}`);
      seenNode.add(`${proto}/${p.nodePort}`);
    }
    const tp = p.targetPort;
    if (tp !== undefined && !(validPort(tp) || (typeof tp === 'string' && /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(tp) && tp.length <= 15))) {
      return bad(`spec.ports[${i}].targetPort: invalid value ${JSON.stringify(tp)}`);
    }
  }
  let affinityTimeout: number | undefined;
  if (spec.sessionAffinity === 'ClientIP') {
    const t = spec.sessionAffinityConfig?.clientIP?.timeoutSeconds ?? DEFAULT_AFFINITY_TIMEOUT;
    if (!Number.isInteger(t) || t < 1 || t > 86400) return bad(`spec.sessionAffinityConfig.clientIP.timeoutSeconds: invalid value ${JSON.stringify(t)} (1-86400)`);
    affinityTimeout = t;
  } else if (spec.sessionAffinity !== undefined && spec.sessionAffinity !== 'None') return bad(`spec.sessionAffinity: invalid value ${JSON.stringify(spec.sessionAffinity)}`);
  const extIPs: string[] = [];
  for (const ip of spec.externalIPs ?? []) {
    const c = canonIp(ip);
    if (c) extIPs.push(c);
    else problems.push({ kind: 'Service', key, reason: `spec.externalIPs: invalid IP ${JSON.stringify(ip)} skipped` });
  }
  const lbIPs: string[] = [];
  if (type === 'LoadBalancer') {
    for (const ing of svc.status?.loadBalancer?.ingress ?? []) {
      if (ing.ip === undefined) continue;
      const c = canonIp(ing.ip);
      if (c) lbIPs.push(c);
      else problems.push({ kind: 'Service', key, reason: `status.loadBalancer.ingress: invalid IP ${JSON.stringify(ing.ip)} skipped` });
    }
  }
  let hc: number | undefined;
  const externalLocal = external && spec.externalTrafficPolicy === 'Local';
  if (externalLocal && spec.healthCheckNodePort !== undefined) {
    if (!validPort(spec.healthCheckNodePort)) problems.push({ kind: 'Service', key, reason: `spec.healthCheckNodePort: invalid value ${JSON.stringify(spec.healthCheckNodePort)} ignored` });
    else hc = spec.healthCheckNodePort;
  }
  const out: ServicePortInfo[] = [];
  for (const cip of clusterIPs) {
    const fam = familyOfIp(cip);
    for (const p of ports) {
      const pn = p.name ?? '';
      const info: ServicePortInfo = {
        id: `${ns}/${name}:${pn}`,
        svcKey: key,
        namespace: ns,
        name,
        portName: pn,
        protocol: p.protocol ?? 'TCP',
        port: p.port,
        family: fam,
        clusterIP: cip,
        externalIPs: extIPs.filter((x) => familyOfIp(x) === fam),
        loadBalancerIPs: lbIPs.filter((x) => familyOfIp(x) === fam),
        externalLocal,
        internalLocal: spec.internalTrafficPolicy === 'Local',
        targetPort: p.targetPort ?? p.port,
      };
      if (external && p.nodePort !== undefined) info.nodePort = p.nodePort;
      if (affinityTimeout !== undefined) info.affinityTimeout = affinityTimeout;
      if (hc !== undefined) info.healthCheckNodePort = hc;
      out.push(info);
    }
  }
  return out;
}

const V4 = new Uint8Array(4);
/** A dotted quad as a number (the sort key of IPv4 endpoints; a bigint costs more). */
function v4Number(ip: string): number {
  parseV4(ip, V4, 0);
  return ((V4[0]! * 256 + V4[1]!) * 256 + V4[2]!) * 256 + V4[3]!;
}

/** Endpoints sorted by address, then port; each address is converted once, not per comparison. */
function sortEndpoints(eps: EndpointInfo[], family: IPFamily): EndpointInfo[] {
  if (eps.length < 2) return eps;
  const keyed = eps.map((e) => ({ e, k: family === 4 ? v4Number(e.ip) : ipToBigInt(e.ip) }));
  keyed.sort((a, b) => (a.k < b.k ? -1 : a.k > b.k ? 1 : a.e.port - b.e.port));
  return keyed.map((x) => x.e);
}

/**
 * Endpoints of one service port from the service's slices: the slice port with the
 * same name and protocol gives the port number (this is how a named targetPort is
 * resolved per endpoint: each slice carries the number its pods use).
 */
export function endpointsFor(info: ServicePortInfo, slices: readonly EndpointSlice[], nodeName: string, problems: Problem[]): EndpointInfo[] {
  const byAddr = new Map<string, EndpointInfo>();
  const wantType = info.family === 4 ? 'IPv4' : 'IPv6';
  for (const s of slices) {
    if (s.addressType !== wantType) continue;
    if (s.metadata.namespace !== info.namespace || sliceServiceKey(s) !== info.svcKey) continue;
    const skey = `${s.metadata.namespace}/${s.metadata.name}`;
    let port: number | undefined;
    if (s.ports && s.ports.length > 0) {
      const sp = s.ports.find((p) => (p.name ?? '') === info.portName && (p.protocol ?? 'TCP') === info.protocol);
      if (!sp) continue; // this slice does not serve the port
      if (!validPort(sp.port)) {
        problems.push({ kind: 'EndpointSlice', key: skey, reason: `port ${JSON.stringify(info.portName)}: invalid number ${JSON.stringify(sp.port)}` });
        continue;
      }
      port = sp.port;
    } else {
      const tp = info.targetPort;
      if (!validPort(tp)) continue; // a named target port needs the slice's port list
      port = tp;
    }
    for (const [i, ep] of (s.endpoints ?? []).entries()) {
      const addr = ep.addresses?.[0];
      const ip = canonIp(addr, info.family);
      if (!ip) {
        problems.push({ kind: 'EndpointSlice', key: skey, reason: `endpoints[${i}].addresses: invalid IPv${info.family} address ${JSON.stringify(addr)} skipped` });
        continue;
      }
      const ready = ep.conditions?.ready ?? true;
      const e: EndpointInfo = {
        ip,
        port,
        ready,
        serving: ep.conditions?.serving ?? ready,
        terminating: ep.conditions?.terminating ?? false,
        local: ep.nodeName !== undefined && ep.nodeName === nodeName,
      };
      if (ep.nodeName !== undefined) e.nodeName = ep.nodeName;
      const k = `${ip}/${port}`;
      const prev = byAddr.get(k);
      // The same endpoint in two slices (during a slice rewrite): keep the more usable record.
      if (!prev || (!prev.ready && e.ready) || (!prev.serving && e.serving)) byAddr.set(k, e);
    }
  }
  return sortEndpoints([...byAddr.values()], info.family);
}

/** Ready endpoints; if there are none, serving-and-terminating ones (KEP-1669). */
export function usable(eps: readonly EndpointInfo[]): EndpointInfo[] {
  const ready = eps.filter((e) => e.ready);
  if (ready.length > 0) return ready;
  return eps.filter((e) => e.serving && e.terminating);
}

export interface Selection {
  /** Endpoints for traffic to the cluster IP (local only with internalTrafficPolicy Local). */
  cluster: EndpointInfo[];
  /** Endpoints for external traffic (NodePort, external and LB IPs); local only with externalTrafficPolicy Local. */
  external: EndpointInfo[];
  /** Usable endpoints anywhere: decides reject (none) versus drop (policy excludes them). */
  any: boolean;
}

export function selectEndpoints(sp: ServicePortState): Selection {
  const all = usable(sp.endpoints);
  const local = usable(sp.endpoints.filter((e) => e.local));
  return {
    cluster: sp.info.internalLocal ? local : all,
    external: sp.info.externalLocal ? local : all,
    any: all.length > 0,
  };
}

/**
 * The distinct endpoints some chain of the port balances to: the cluster endpoints, and
 * the external ones when the port takes external traffic (NodePort, external or
 * load-balancer IPs).
 */
export function balancedEndpoints(sp: ServicePortState, sel: Selection = selectEndpoints(sp)): EndpointInfo[] {
  const i = sp.info;
  if (i.nodePort === undefined && i.externalIPs.length === 0 && i.loadBalancerIPs.length === 0) return sel.cluster;
  const m = new Map<string, EndpointInfo>();
  for (const e of [...sel.cluster, ...sel.external]) m.set(`${e.ip}/${e.port}`, e);
  return [...m.values()];
}

/** Everything the proxy programs for one service. */
export function serviceModel(svc: Service, slices: readonly EndpointSlice[], nodeName: string, problems: Problem[]): ServicePortState[] {
  return servicePorts(svc, problems).map((info) => ({ info, endpoints: endpointsFor(info, slices, nodeName, problems) }));
}
