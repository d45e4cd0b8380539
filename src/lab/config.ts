// lab.yaml: an optional `kind: Lab` document with the lab's settings, then ordinary
// Kubernetes objects (Namespace, Pod, Deployment, Service, NetworkPolicy). Pure:
// the caller reads the file. Every error names the document (1-based, as editors
// count) and the field.
import { parseAllDocuments } from 'yaml';
import type { Container, LabelSelector, Namespace, NetworkPolicy, ObjectMeta, Pod, Service } from '../cluster/types.js';
import { networkOf, parseCidr } from '../util/ip.js';

export interface LabSettings {
  name: string;
  nodes: number;
  clusterCIDR: string;
  serviceCIDR: string;
  clusterDomain: string;
  underlayCIDR: string;
  /** Underlay MTU (VXLAN and pods get 50 less). */
  mtu: number;
  /** The agents' policy.policyAwareDns (policy-aware DNS; default false). */
  policyAwareDns: boolean;
}

export const DEFAULT_SETTINGS: LabSettings = {
  name: 'skiff',
  nodes: 3,
  clusterCIDR: '10.244.0.0/16',
  serviceCIDR: '10.96.0.0/12',
  clusterDomain: 'cluster.local',
  underlayCIDR: '172.31.0.0/24',
  mtu: 1500,
  policyAwareDns: false,
};

export interface Deployment {
  apiVersion: 'apps/v1';
  kind: 'Deployment';
  metadata: ObjectMeta;
  spec: {
    replicas?: number;
    selector?: LabelSelector;
    template: { metadata?: { labels?: Record<string, string>; annotations?: Record<string, string> }; spec: Pod['spec'] };
  };
}

export type LabObject = Namespace | Pod | Deployment | Service | NetworkPolicy;
export const LAB_KINDS = ['Namespace', 'Pod', 'Deployment', 'Service', 'NetworkPolicy'] as const;

export class LabConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LabConfigError';
  }
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function cidr(where: string, field: string, v: unknown): string {
  if (typeof v !== 'string') throw new LabConfigError(`${where}: ${field}: invalid value ${JSON.stringify(v)} (a CIDR such as 10.244.0.0/16)`);
  let c;
  try {
    c = parseCidr(v);
  } catch {
    throw new LabConfigError(`${where}: ${field}: invalid value ${JSON.stringify(v)} (a CIDR such as 10.244.0.0/16)`);
  }
  if (networkOf(c) !== c.ip) throw new LabConfigError(`${where}: ${field}: invalid value ${JSON.stringify(v)} (host bits set; did you mean ${networkOf(c)}/${c.prefix}?)`);
  return v;
}

function parseSettings(where: string, doc: Record<string, unknown>): Partial<LabSettings> {
  // Settings may sit at the top level or under `spec` (both read naturally).
  const src: Record<string, unknown> = { ...(isObj(doc.metadata) && typeof doc.metadata.name === 'string' ? { name: doc.metadata.name } : {}), ...(isObj(doc.spec) ? doc.spec : {}), ...doc };
  const out: Partial<LabSettings> = {};
  const known = new Set(['apiVersion', 'kind', 'metadata', 'spec', 'name', 'nodes', 'clusterCIDR', 'serviceCIDR', 'clusterDomain', 'underlayCIDR', 'mtu', 'policyAwareDns']);
  for (const k of Object.keys(src)) if (!known.has(k)) throw new LabConfigError(`${where}: unknown field ${JSON.stringify(k)} (known: name, nodes, clusterCIDR, serviceCIDR, clusterDomain, underlayCIDR, mtu, policyAwareDns)`);
  if (src.name !== undefined) {
    if (typeof src.name !== 'string' || !/^[a-z0-9]{1,16}$/.test(src.name)) throw new LabConfigError(`${where}: name: invalid value ${JSON.stringify(src.name)} (1-16 lowercase letters or digits)`);
    out.name = src.name;
  }
  if (src.nodes !== undefined) {
    if (typeof src.nodes !== 'number' || !Number.isInteger(src.nodes) || src.nodes < 1 || src.nodes > 200) throw new LabConfigError(`${where}: nodes: invalid value ${JSON.stringify(src.nodes)} (an integer from 1 to 200)`);
    out.nodes = src.nodes;
  }
  if (src.clusterCIDR !== undefined) {
    out.clusterCIDR = cidr(where, 'clusterCIDR', src.clusterCIDR);
    const p = parseCidr(out.clusterCIDR);
    if (p.family !== 4 || p.prefix > 23) throw new LabConfigError(`${where}: clusterCIDR: invalid value ${JSON.stringify(src.clusterCIDR)} (IPv4, /23 or shorter: each node gets a /24)`);
  }
  if (src.serviceCIDR !== undefined) {
    out.serviceCIDR = cidr(where, 'serviceCIDR', src.serviceCIDR);
    const p = parseCidr(out.serviceCIDR);
    if (p.family !== 4 || p.prefix > 30) throw new LabConfigError(`${where}: serviceCIDR: invalid value ${JSON.stringify(src.serviceCIDR)} (IPv4, /30 or shorter)`);
  }
  if (src.underlayCIDR !== undefined) {
    out.underlayCIDR = cidr(where, 'underlayCIDR', src.underlayCIDR);
    const p = parseCidr(out.underlayCIDR);
    if (p.family !== 4 || p.prefix > 29) throw new LabConfigError(`${where}: underlayCIDR: invalid value ${JSON.stringify(src.underlayCIDR)} (IPv4, /29 or shorter)`);
  }
  if (src.clusterDomain !== undefined) {
    if (typeof src.clusterDomain !== 'string' || !DNS_SUBDOMAIN.test(src.clusterDomain)) throw new LabConfigError(`${where}: clusterDomain: invalid value ${JSON.stringify(src.clusterDomain)} (a DNS name such as cluster.local)`);
    out.clusterDomain = src.clusterDomain;
  }
  if (src.mtu !== undefined) {
    if (typeof src.mtu !== 'number' || !Number.isInteger(src.mtu) || src.mtu < 1280 || src.mtu > 9000) throw new LabConfigError(`${where}: mtu: invalid value ${JSON.stringify(src.mtu)} (an integer from 1280 to 9000)`);
    out.mtu = src.mtu;
  }
  if (src.policyAwareDns !== undefined) {
    if (typeof src.policyAwareDns !== 'boolean') throw new LabConfigError(`${where}: policyAwareDns: invalid value ${JSON.stringify(src.policyAwareDns)} (true or false)`);
    out.policyAwareDns = src.policyAwareDns;
  }
  return out;
}

function meta(where: string, o: Record<string, unknown>, namespaced: boolean): ObjectMeta {
  if (!isObj(o.metadata)) throw new LabConfigError(`${where}: metadata: missing (an object with a name)`);
  const m = o.metadata;
  if (typeof m.name !== 'string' || !DNS_SUBDOMAIN.test(m.name) || m.name.length > 253) throw new LabConfigError(`${where}: metadata.name: invalid value ${JSON.stringify(m.name)} (a lowercase DNS name)`);
  if (m.namespace !== undefined && (typeof m.namespace !== 'string' || !DNS_LABEL.test(m.namespace))) throw new LabConfigError(`${where}: metadata.namespace: invalid value ${JSON.stringify(m.namespace)} (a lowercase DNS label)`);
  for (const f of ['labels', 'annotations'] as const) {
    if (m[f] === undefined) continue;
    if (!isObj(m[f]) || Object.values(m[f]).some((v) => typeof v !== 'string')) throw new LabConfigError(`${where}: metadata.${f}: invalid value ${JSON.stringify(m[f])} (a map of strings)`);
  }
  const out: ObjectMeta = { ...(m as unknown as ObjectMeta) };
  if (namespaced) out.namespace = (m.namespace as string | undefined) ?? 'default';
  else delete out.namespace;
  return out;
}

function checkPodSpec(where: string, field: string, spec: unknown): Pod['spec'] {
  if (!isObj(spec)) throw new LabConfigError(`${where}: ${field}: missing (an object with containers)`);
  const cs = spec.containers;
  if (!Array.isArray(cs) || cs.length === 0) throw new LabConfigError(`${where}: ${field}.containers: invalid value ${JSON.stringify(cs)} (a non-empty list)`);
  cs.forEach((c: unknown, i) => {
    const f = `${field}.containers[${i}]`;
    if (!isObj(c) || typeof c.name !== 'string' || !DNS_LABEL.test(c.name)) throw new LabConfigError(`${where}: ${f}.name: invalid value ${JSON.stringify(isObj(c) ? c.name : c)} (a lowercase DNS label)`);
    if (c.command !== undefined && (!Array.isArray(c.command) || c.command.some((x) => typeof x !== 'string'))) throw new LabConfigError(`${where}: ${f}.command: invalid value ${JSON.stringify(c.command)} (a list of strings)`);
    if (c.args !== undefined && (!Array.isArray(c.args) || c.args.some((x) => typeof x !== 'string'))) throw new LabConfigError(`${where}: ${f}.args: invalid value ${JSON.stringify(c.args)} (a list of strings)`);
    if (c.ports !== undefined) {
      if (!Array.isArray(c.ports)) throw new LabConfigError(`${where}: ${f}.ports: invalid value ${JSON.stringify(c.ports)} (a list)`);
      c.ports.forEach((p: unknown, j) => {
        const pf = `${f}.ports[${j}]`;
        if (!isObj(p) || typeof p.containerPort !== 'number' || !Number.isInteger(p.containerPort) || p.containerPort < 1 || p.containerPort > 65535) {
          throw new LabConfigError(`${where}: ${pf}.containerPort: invalid value ${JSON.stringify(isObj(p) ? p.containerPort : p)} (an integer from 1 to 65535)`);
        }
        if (p.protocol !== undefined && !['TCP', 'UDP', 'SCTP'].includes(p.protocol as string)) throw new LabConfigError(`${where}: ${pf}.protocol: invalid value ${JSON.stringify(p.protocol)} (TCP, UDP or SCTP)`);
        if (p.name !== undefined && (typeof p.name !== 'string' || !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(p.name) || p.name.length > 15)) throw new LabConfigError(`${where}: ${pf}.name: invalid value ${JSON.stringify(p.name)} (an IANA service name: up to 15 lowercase letters, digits, "-")`);
      });
    }
    const rp = c.readinessProbe;
    if (rp !== undefined) {
      if (!isObj(rp) || (!isObj(rp.tcpSocket) && !isObj(rp.exec))) throw new LabConfigError(`${where}: ${f}.readinessProbe: invalid value ${JSON.stringify(rp)} (tcpSocket or exec)`);
    }
  });
  if (spec.nodeName !== undefined && typeof spec.nodeName !== 'string') throw new LabConfigError(`${where}: ${field}.nodeName: invalid value ${JSON.stringify(spec.nodeName)} (a node name)`);
  for (const f of ['hostname', 'subdomain'] as const) {
    if (spec[f] !== undefined && (typeof spec[f] !== 'string' || !DNS_LABEL.test(spec[f] as string))) throw new LabConfigError(`${where}: ${field}.${f}: invalid value ${JSON.stringify(spec[f])} (a lowercase DNS label)`);
  }
  return spec as unknown as Pod['spec'];
}

function checkObject(where: string, o: Record<string, unknown>): LabObject {
  switch (o.kind) {
    case 'Namespace': {
      const m = meta(where, o, false);
      if (!DNS_LABEL.test(m.name)) throw new LabConfigError(`${where}: metadata.name: invalid value ${JSON.stringify(m.name)} (a lowercase DNS label)`);
      return { apiVersion: 'v1', kind: 'Namespace', metadata: m };
    }
    case 'Pod': {
      const m = meta(where, o, true);
      return { apiVersion: 'v1', kind: 'Pod', metadata: m, spec: checkPodSpec(where, 'spec', o.spec) };
    }
    case 'Deployment': {
      const m = meta(where, o, true);
      const spec = o.spec;
      if (!isObj(spec)) throw new LabConfigError(`${where}: spec: missing`);
      if (spec.replicas !== undefined && (typeof spec.replicas !== 'number' || !Number.isInteger(spec.replicas) || spec.replicas < 0 || spec.replicas > 1000)) {
        throw new LabConfigError(`${where}: spec.replicas: invalid value ${JSON.stringify(spec.replicas)} (an integer from 0 to 1000)`);
      }
      if (!isObj(spec.template)) throw new LabConfigError(`${where}: spec.template: missing`);
      const tmeta = isObj(spec.template.metadata) ? spec.template.metadata : {};
      const podSpec = checkPodSpec(where, 'spec.template.spec', spec.template.spec);
      const sel = spec.selector as LabelSelector | undefined;
      const labels = (tmeta.labels ?? {}) as Record<string, string>;
      if (sel?.matchLabels) {
        for (const [k, v] of Object.entries(sel.matchLabels)) {
          if (labels[k] !== v) throw new LabConfigError(`${where}: spec.selector.matchLabels: ${k}=${v} does not match spec.template.metadata.labels`);
        }
      }
      return {
        apiVersion: 'apps/v1',
        kind: 'Deployment',
        metadata: m,
        spec: { ...(spec.replicas !== undefined ? { replicas: spec.replicas as number } : {}), ...(sel ? { selector: sel } : {}), template: { metadata: tmeta as { labels?: Record<string, string> }, spec: podSpec } },
      };
    }
    case 'Service': {
      const m = meta(where, o, true);
      if (!DNS_LABEL.test(m.name)) throw new LabConfigError(`${where}: metadata.name: invalid value ${JSON.stringify(m.name)} (a lowercase DNS label)`);
      const spec = isObj(o.spec) ? o.spec : {};
      const ports = spec.ports;
      if (ports !== undefined) {
        if (!Array.isArray(ports)) throw new LabConfigError(`${where}: spec.ports: invalid value ${JSON.stringify(ports)} (a list)`);
        ports.forEach((p: unknown, i) => {
          if (!isObj(p) || typeof p.port !== 'number' || !Number.isInteger(p.port) || p.port < 1 || p.port > 65535) throw new LabConfigError(`${where}: spec.ports[${i}].port: invalid value ${JSON.stringify(isObj(p) ? p.port : p)} (an integer from 1 to 65535)`);
          if (p.protocol !== undefined && !['TCP', 'UDP', 'SCTP'].includes(p.protocol as string)) throw new LabConfigError(`${where}: spec.ports[${i}].protocol: invalid value ${JSON.stringify(p.protocol)} (TCP, UDP or SCTP)`);
          if (p.targetPort !== undefined && typeof p.targetPort !== 'number' && typeof p.targetPort !== 'string') throw new LabConfigError(`${where}: spec.ports[${i}].targetPort: invalid value ${JSON.stringify(p.targetPort)} (a number or a port name)`);
        });
        if (ports.length > 1 && ports.some((p: Record<string, unknown>) => !p.name)) throw new LabConfigError(`${where}: spec.ports: every port needs a name when there are several`);
      }
      if (spec.selector !== undefined && (!isObj(spec.selector) || Object.values(spec.selector).some((v) => typeof v !== 'string'))) throw new LabConfigError(`${where}: spec.selector: invalid value ${JSON.stringify(spec.selector)} (a map of strings)`);
      if (spec.clusterIP !== undefined && typeof spec.clusterIP !== 'string') throw new LabConfigError(`${where}: spec.clusterIP: invalid value ${JSON.stringify(spec.clusterIP)} (an IP or "None")`);
      return { apiVersion: 'v1', kind: 'Service', metadata: m, spec: spec as Service['spec'] };
    }
    case 'NetworkPolicy': {
      const m = meta(where, o, true);
      if (!isObj(o.spec) || !isObj(o.spec.podSelector)) throw new LabConfigError(`${where}: spec.podSelector: missing (use {} to select every pod)`);
      return { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: m, spec: o.spec as unknown as NetworkPolicy['spec'] };
    }
    default:
      throw new LabConfigError(`${where}: kind: invalid value ${JSON.stringify(o.kind)} (Lab, Namespace, Pod, Deployment, Service or NetworkPolicy)`);
  }
}

export interface LabFile {
  settings: Partial<LabSettings>;
  objects: LabObject[];
}

/** Parses lab.yaml text. `source` names the file in errors. */
export function parseLabFile(text: string, source = 'lab.yaml'): LabFile {
  const docs = parseAllDocuments(text);
  const out: LabFile = { settings: {}, objects: [] };
  const seen = new Set<string>();
  let i = 0;
  for (const d of Array.isArray(docs) ? docs : [docs]) {
    i++;
    const where = `${source}: document ${i}`;
    if (d.errors.length) throw new LabConfigError(`${where}: ${d.errors[0]!.message}`);
    const v: unknown = d.toJS();
    if (v === null || v === undefined) continue;
    if (!isObj(v)) throw new LabConfigError(`${where}: expected an object with a kind, got ${JSON.stringify(v)}`);
    if (v.kind === 'Lab') {
      if (i !== 1 && out.objects.length) throw new LabConfigError(`${where}: the kind: Lab document must come first`);
      out.settings = { ...out.settings, ...parseSettings(where, v) };
      continue;
    }
    const obj = checkObject(`${where} (${String(v.kind)} ${JSON.stringify(isObj(v.metadata) ? v.metadata.name : undefined)})`, v);
    const key = `${obj.kind}/${obj.metadata.namespace ?? ''}/${obj.metadata.name}`;
    if (seen.has(key)) throw new LabConfigError(`${where}: duplicate ${obj.kind} ${obj.metadata.namespace ? obj.metadata.namespace + '/' : ''}${obj.metadata.name}`);
    seen.add(key);
    out.objects.push(obj);
  }
  return out;
}

export function resolveSettings(file: Partial<LabSettings>, flags: Partial<LabSettings>): LabSettings {
  return { ...DEFAULT_SETTINGS, ...file, ...flags };
}
