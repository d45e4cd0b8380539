// Cheap structural checks of cluster objects read from manifests, and the
// normalisation every object gets on entry (from either source). The checks are the
// ones that would otherwise surface as a crash or a silently wrong rule far away in a
// reconciler: wrong apiVersion for the kind, missing name, a port that is not a number.
// They are not the API server's full validation.
import { canonical } from '../util/canonical.js';
import { KINDS, type ClusterObject, type Kind } from './types.js';

export const API_VERSION: Readonly<Record<Kind, string>> = {
  Namespace: 'v1',
  Node: 'v1',
  Pod: 'v1',
  Service: 'v1',
  EndpointSlice: 'discovery.k8s.io/v1',
  NetworkPolicy: 'networking.k8s.io/v1',
};

export const NAMESPACED: Readonly<Record<Kind, boolean>> = {
  Namespace: false,
  Node: false,
  Pod: true,
  Service: true,
  EndpointSlice: true,
  NetworkPolicy: true,
};

export function isKind(k: unknown): k is Kind {
  return typeof k === 'string' && (KINDS as readonly string[]).includes(k);
}

/** A problem with one field of an object; `path` is the field ("spec.ports[0].port"). */
export class ValidationError extends Error {
  constructor(
    readonly path: string,
    readonly reason: string,
  ) {
    super(`${path}: ${reason}`);
    this.name = 'ValidationError';
  }
}

type Json = unknown;
const show = (v: Json): string => {
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 60 ? s.slice(0, 57) + '...' : s;
};
const isObj = (v: Json): v is Record<string, Json> => typeof v === 'object' && v !== null && !Array.isArray(v);

// Each checker takes the value and its path; absent (undefined/null) optional fields pass.
function obj(v: Json, path: string, required = false): Record<string, Json> | undefined {
  if (v === undefined || v === null) {
    if (required) throw new ValidationError(path, 'required field is missing');
    return undefined;
  }
  if (!isObj(v)) throw new ValidationError(path, `expected an object, got ${show(v)}`);
  return v;
}
function arr(v: Json, path: string, required = false): Json[] | undefined {
  if (v === undefined || v === null) {
    if (required) throw new ValidationError(path, 'required field is missing');
    return undefined;
  }
  if (!Array.isArray(v)) throw new ValidationError(path, `expected a list, got ${show(v)}`);
  return v;
}
function str(v: Json, path: string, required = false): void {
  if (v === undefined || v === null) {
    if (required) throw new ValidationError(path, 'required field is missing');
    return;
  }
  if (typeof v !== 'string') throw new ValidationError(path, `expected a string, got ${show(v)}`);
  if (required && v === '') throw new ValidationError(path, 'must not be empty');
}
function bool(v: Json, path: string): void {
  if (v !== undefined && v !== null && typeof v !== 'boolean') throw new ValidationError(path, `expected true or false, got ${show(v)}`);
}
function int(v: Json, path: string, min: number, max: number, required = false): void {
  if (v === undefined || v === null) {
    if (required) throw new ValidationError(path, 'required field is missing');
    return;
  }
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new ValidationError(path, `expected an integer ${min}-${max}, got ${show(v)}`);
  }
}
function oneOf(v: Json, path: string, allowed: readonly string[]): void {
  if (v === undefined || v === null) return;
  if (typeof v !== 'string' || !allowed.includes(v)) {
    throw new ValidationError(path, `expected one of ${allowed.join(', ')}, got ${show(v)}`);
  }
}
function strMap(v: Json, path: string): void {
  const o = obj(v, path);
  if (!o) return;
  for (const [k, val] of Object.entries(o)) {
    if (typeof val !== 'string') throw new ValidationError(`${path}.${k}`, `expected a string, got ${show(val)}`);
  }
}
function strList(v: Json, path: string): void {
  arr(v, path)?.forEach((s, i) => str(s, `${path}[${i}]`, true));
}
/** A port given as a number or an IANA name (targetPort, NetworkPolicy port). */
function intOrName(v: Json, path: string): void {
  if (v === undefined || v === null) return;
  if (typeof v === 'string' && v !== '') return;
  int(v, path, 1, 65535);
}

const PROTOCOLS = ['TCP', 'UDP', 'SCTP'] as const;

function labelSelector(v: Json, path: string, required = false): void {
  const s = obj(v, path, required);
  if (!s) return;
  strMap(s.matchLabels, `${path}.matchLabels`);
  arr(s.matchExpressions, `${path}.matchExpressions`)?.forEach((e, i) => {
    const p = `${path}.matchExpressions[${i}]`;
    const r = obj(e, p, true)!;
    str(r.key, `${p}.key`, true);
    if (r.operator === undefined || r.operator === null) throw new ValidationError(`${p}.operator`, 'required field is missing');
    oneOf(r.operator, `${p}.operator`, ['In', 'NotIn', 'Exists', 'DoesNotExist']);
    strList(r.values, `${p}.values`);
  });
}

function checkPod(o: Record<string, Json>): void {
  const spec = obj(o.spec, 'spec', true)!;
  str(spec.nodeName, 'spec.nodeName');
  bool(spec.hostNetwork, 'spec.hostNetwork');
  str(spec.hostname, 'spec.hostname');
  str(spec.subdomain, 'spec.subdomain');
  arr(spec.containers, 'spec.containers')?.forEach((c, i) => {
    const p = `spec.containers[${i}]`;
    const co = obj(c, p, true)!;
    str(co.name, `${p}.name`);
    arr(co.ports, `${p}.ports`)?.forEach((port, j) => {
      const pp = `${p}.ports[${j}]`;
      const po = obj(port, pp, true)!;
      str(po.name, `${pp}.name`);
      int(po.containerPort, `${pp}.containerPort`, 1, 65535, true);
      oneOf(po.protocol, `${pp}.protocol`, PROTOCOLS);
      int(po.hostPort, `${pp}.hostPort`, 1, 65535);
    });
  });
  const status = obj(o.status, 'status');
  if (status) {
    str(status.podIP, 'status.podIP');
    arr(status.podIPs, 'status.podIPs')?.forEach((e, i) => str(obj(e, `status.podIPs[${i}]`, true)!.ip, `status.podIPs[${i}].ip`, true));
    str(status.hostIP, 'status.hostIP');
    arr(status.conditions, 'status.conditions')?.forEach((e, i) => {
      const c = obj(e, `status.conditions[${i}]`, true)!;
      str(c.type, `status.conditions[${i}].type`, true);
      oneOf(c.status, `status.conditions[${i}].status`, ['True', 'False', 'Unknown']);
    });
  }
}

function checkService(o: Record<string, Json>): void {
  const spec = obj(o.spec, 'spec', true)!;
  oneOf(spec.type, 'spec.type', ['ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName']);
  str(spec.clusterIP, 'spec.clusterIP');
  strList(spec.clusterIPs, 'spec.clusterIPs');
  arr(spec.ipFamilies, 'spec.ipFamilies')?.forEach((f, i) => oneOf(f, `spec.ipFamilies[${i}]`, ['IPv4', 'IPv6']));
  arr(spec.ports, 'spec.ports')?.forEach((port, i) => {
    const p = `spec.ports[${i}]`;
    const po = obj(port, p, true)!;
    str(po.name, `${p}.name`);
    oneOf(po.protocol, `${p}.protocol`, PROTOCOLS);
    int(po.port, `${p}.port`, 1, 65535, true);
    intOrName(po.targetPort, `${p}.targetPort`);
    int(po.nodePort, `${p}.nodePort`, 1, 65535);
  });
  strMap(spec.selector, 'spec.selector');
  oneOf(spec.sessionAffinity, 'spec.sessionAffinity', ['None', 'ClientIP']);
  oneOf(spec.externalTrafficPolicy, 'spec.externalTrafficPolicy', ['Cluster', 'Local']);
  oneOf(spec.internalTrafficPolicy, 'spec.internalTrafficPolicy', ['Cluster', 'Local']);
  int(spec.healthCheckNodePort, 'spec.healthCheckNodePort', 1, 65535);
  bool(spec.publishNotReadyAddresses, 'spec.publishNotReadyAddresses');
  str(spec.externalName, 'spec.externalName');
  strList(spec.externalIPs, 'spec.externalIPs');
}

function checkEndpointSlice(o: Record<string, Json>): void {
  if (o.addressType === undefined || o.addressType === null) throw new ValidationError('addressType', 'required field is missing');
  oneOf(o.addressType, 'addressType', ['IPv4', 'IPv6', 'FQDN']);
  arr(o.endpoints, 'endpoints')?.forEach((e, i) => {
    const p = `endpoints[${i}]`;
    const eo = obj(e, p, true)!;
    const addrs = arr(eo.addresses, `${p}.addresses`, true)!;
    if (addrs.length === 0) throw new ValidationError(`${p}.addresses`, 'must list at least one address');
    strList(addrs, `${p}.addresses`);
    const c = obj(eo.conditions, `${p}.conditions`);
    if (c) for (const k of ['ready', 'serving', 'terminating']) bool(c[k], `${p}.conditions.${k}`);
    str(eo.hostname, `${p}.hostname`);
    str(eo.nodeName, `${p}.nodeName`);
    obj(eo.targetRef, `${p}.targetRef`);
  });
  arr(o.ports, 'ports')?.forEach((port, i) => {
    const po = obj(port, `ports[${i}]`, true)!;
    str(po.name, `ports[${i}].name`);
    oneOf(po.protocol, `ports[${i}].protocol`, PROTOCOLS);
    int(po.port, `ports[${i}].port`, 1, 65535);
  });
}

function checkPeers(v: Json, path: string): void {
  arr(v, path)?.forEach((peer, i) => {
    const p = `${path}[${i}]`;
    const po = obj(peer, p, true)!;
    labelSelector(po.podSelector, `${p}.podSelector`);
    labelSelector(po.namespaceSelector, `${p}.namespaceSelector`);
    const ip = obj(po.ipBlock, `${p}.ipBlock`);
    if (ip) {
      str(ip.cidr, `${p}.ipBlock.cidr`, true);
      strList(ip.except, `${p}.ipBlock.except`);
    }
  });
}
function checkPolicyPorts(v: Json, path: string): void {
  arr(v, path)?.forEach((port, i) => {
    const p = `${path}[${i}]`;
    const po = obj(port, p, true)!;
    oneOf(po.protocol, `${p}.protocol`, PROTOCOLS);
    intOrName(po.port, `${p}.port`);
    int(po.endPort, `${p}.endPort`, 1, 65535);
  });
}

function checkNetworkPolicy(o: Record<string, Json>): void {
  const spec = obj(o.spec, 'spec', true)!;
  labelSelector(spec.podSelector, 'spec.podSelector');
  arr(spec.policyTypes, 'spec.policyTypes')?.forEach((t, i) => oneOf(t, `spec.policyTypes[${i}]`, ['Ingress', 'Egress']));
  arr(spec.ingress, 'spec.ingress')?.forEach((r, i) => {
    const ro = obj(r, `spec.ingress[${i}]`, true)!;
    checkPeers(ro.from, `spec.ingress[${i}].from`);
    checkPolicyPorts(ro.ports, `spec.ingress[${i}].ports`);
  });
  arr(spec.egress, 'spec.egress')?.forEach((r, i) => {
    const ro = obj(r, `spec.egress[${i}]`, true)!;
    checkPeers(ro.to, `spec.egress[${i}].to`);
    checkPolicyPorts(ro.ports, `spec.egress[${i}].ports`);
  });
}

function checkNode(o: Record<string, Json>): void {
  const spec = obj(o.spec, 'spec');
  if (spec) {
    str(spec.podCIDR, 'spec.podCIDR');
    strList(spec.podCIDRs, 'spec.podCIDRs');
    bool(spec.unschedulable, 'spec.unschedulable');
  }
  const status = obj(o.status, 'status');
  arr(status?.addresses, 'status.addresses')?.forEach((a, i) => {
    const ao = obj(a, `status.addresses[${i}]`, true)!;
    str(ao.type, `status.addresses[${i}].type`, true);
    str(ao.address, `status.addresses[${i}].address`, true);
  });
}

const KIND_CHECKS: Record<Kind, (o: Record<string, Json>) => void> = {
  Namespace: () => {},
  Node: checkNode,
  Pod: checkPod,
  Service: checkService,
  EndpointSlice: checkEndpointSlice,
  NetworkPolicy: checkNetworkPolicy,
};

/**
 * Checks a parsed object of one of skiff's kinds (the caller has already decided the
 * kind is one of KINDS) and returns it normalised, with the namespace defaulted to
 * `defaultNamespace` for namespaced kinds. Throws ValidationError naming the field.
 */
export function checkObject(raw: unknown, defaultNamespace = 'default'): ClusterObject {
  const o = obj(raw, '(document)', true)!;
  if (!isKind(o.kind)) throw new ValidationError('kind', `expected one of ${KINDS.join(', ')}, got ${show(o.kind)}`);
  const kind = o.kind;
  if (o.apiVersion !== API_VERSION[kind]) {
    throw new ValidationError('apiVersion', `${kind} must have apiVersion ${API_VERSION[kind]}, got ${show(o.apiVersion)}`);
  }
  const meta = obj(o.metadata, 'metadata', true)!;
  str(meta.name, 'metadata.name', true);
  str(meta.namespace, 'metadata.namespace');
  strMap(meta.labels, 'metadata.labels');
  strMap(meta.annotations, 'metadata.annotations');
  KIND_CHECKS[kind](o);
  const metadata = { ...meta } as unknown as ClusterObject['metadata'];
  if (NAMESPACED[kind]) {
    if (!metadata.namespace) metadata.namespace = defaultNamespace;
  } else {
    // kubectl ignores a namespace on a cluster-scoped object; so do we (it would change the key).
    delete metadata.namespace;
  }
  return shareStrings(trim(normalize({ ...o, metadata } as unknown as ClusterObject)));
}

/**
 * Makes fields that repeat another field's value point at the same string (a Pod's
 * podIPs[0].ip is its podIP, a Service's clusterIPs[0] its clusterIP): parsed JSON has a
 * copy of each, which would cost a string per object for nothing. Only strings equal in
 * value are swapped, so no observable value changes; frozen objects are left alone.
 */
export function shareStrings<T extends ClusterObject>(o: T): T {
  if (o.kind === 'Pod') {
    const st = o.status;
    const ip = st?.podIP;
    if (ip !== undefined && Array.isArray(st!.podIPs)) {
      for (const p of st!.podIPs) if (p && typeof p.ip === 'string' && p.ip === ip && !Object.isFrozen(p)) p.ip = ip;
    }
  } else if (o.kind === 'Service') {
    const sp = o.spec;
    const ip = sp?.clusterIP;
    const ips = sp?.clusterIPs;
    if (ip !== undefined && Array.isArray(ips) && !Object.isFrozen(ips)) for (let i = 0; i < ips.length; i++) if (ips[i] === ip) ips[i] = ip;
  }
  return o;
}

/**
 * Brings an object into the shape the rest of skiff relies on, without mutating it:
 * the API server sends `endpoints: null` for an empty EndpointSlice, a Pod or Service
 * may come without the fields a manifest author left out, and managedFields (large,
 * never used) is dropped so it neither costs memory nor reaches consumers.
 */
export function normalize<T extends ClusterObject>(o: T): T {
  let out = o as ClusterObject;
  const meta = o.metadata as T['metadata'] & { managedFields?: unknown };
  if (meta === undefined || meta === null) throw new ValidationError('metadata', 'required field is missing');
  if (meta.managedFields !== undefined) {
    const { managedFields: _mf, ...rest } = meta;
    out = { ...out, metadata: rest } as ClusterObject;
  }
  switch (out.kind) {
    case 'EndpointSlice':
      if (!Array.isArray(out.endpoints)) out = { ...out, endpoints: [] };
      break;
    case 'Pod':
      if (!out.spec) out = { ...out, spec: { containers: [] } };
      else if (!Array.isArray(out.spec.containers)) out = { ...out, spec: { ...out.spec, containers: [] } };
      break;
    case 'Service':
      if (!out.spec) out = { ...out, spec: {} };
      break;
    case 'NetworkPolicy':
      if (!out.spec) out = { ...out, spec: { podSelector: {} } };
      else if (!out.spec.podSelector) out = { ...out, spec: { ...out.spec, podSelector: {} } };
      break;
    case 'Node':
      if (!out.spec) out = { ...out, spec: {} };
      break;
    case 'Namespace':
      break;
  }
  return out as T;
}

// ---------------------------------------------------------------------------
// Trimming at ingestion: an object from the API server carries far more than skiff
// reads (a Pod's container env, volumes, resources, containerStatuses, managedFields,
// the last-applied-configuration annotation, a full copy of the object). Only the fields
// of src/cluster/types.ts are kept; nested structures skiff reads whole (probes, selector
// expressions, policy rules) are kept by reference.

const LAST_APPLIED = 'kubectl.kubernetes.io/last-applied-configuration';

// Shared sub-objects: the replicas of one workload have the same labels, containers and
// conditions, the Services of one kind the same ports. Such a value is kept once (frozen,
// so no consumer can change it under the others) and every object holding an equal one
// points at it: trim() returns these shared values, never the input's. The table is bounded: when full it starts over (objects already
// holding a shared value keep it).
const SHARED_MAX = 8192;
let shared = new Map<string, unknown>();

function share<V>(v: V): V {
  if (v === undefined || v === null || typeof v !== 'object') return v;
  let key: string;
  try {
    key = canonical(v);
  } catch {
    return v; // not JSON (a cycle): not shareable
  }
  if (key.length > 512) return v; // large values are rare and rarely equal (and the table stays under ~8 MiB)
  const hit = shared.get(key);
  if (hit !== undefined) return hit as V;
  if (shared.size >= SHARED_MAX) shared = new Map();
  // A copy (the caller's object stays as it was), parsed from the key: tightly sized.
  const copy = JSON.parse(key) as V;
  deepFreeze(copy);
  shared.set(key, copy);
  return copy;
}

function deepFreeze(v: unknown): void {
  if (typeof v !== 'object' || v === null || Object.isFrozen(v)) return;
  Object.freeze(v);
  for (const x of Object.values(v)) deepFreeze(x);
}

type Obj = Record<string, unknown>;

// An object built by adding properties to `{}` always has room for four (56 bytes even
// for one property); an object literal has exactly the room its properties need. So the
// copy is made by a literal compiled once per set of present keys. The keys come only
// from the constant lists below, never from input.
const MAX_FACTORIES = 512;
const factories = new Map<string, (s: Obj) => Obj>();

function pick(src: unknown, keys: readonly string[]): Obj | undefined {
  if (typeof src !== 'object' || src === null || Array.isArray(src)) return src as Obj | undefined;
  const s = src as Obj;
  let sig = '';
  for (const k of keys) if (s[k] !== undefined) sig += sig ? `,${k}` : k;
  let f = factories.get(sig);
  if (f === undefined) {
    if (factories.size >= MAX_FACTORIES) {
      const out: Obj = {};
      for (const k of keys) if (s[k] !== undefined) out[k] = s[k];
      return out;
    }
    const body = sig ? sig.split(',').map((k) => `${JSON.stringify(k)}: s[${JSON.stringify(k)}]`).join(', ') : '';
    f = new Function('s', `return { ${body} };`) as (s: Obj) => Obj;
    factories.set(sig, f);
  }
  return f(s);
}

function pickList(src: unknown, keys: readonly string[]): unknown {
  return Array.isArray(src) ? src.map((x) => pick(x, keys)) : src;
}

const META = ['name', 'namespace', 'uid', 'resourceVersion', 'generation', 'labels', 'annotations', 'deletionTimestamp'];
const CONTAINER = ['name', 'image', 'command', 'args', 'ports', 'readinessProbe'];
const CONTAINER_PORT = ['name', 'containerPort', 'protocol', 'hostPort'];
const POD_SPEC = ['nodeName', 'hostNetwork', 'hostname', 'subdomain', 'containers'];
const POD_STATUS = ['phase', 'podIP', 'podIPs', 'hostIP', 'conditions'];
const SERVICE_SPEC = [
  'type', 'clusterIP', 'clusterIPs', 'ipFamilies', 'ports', 'selector', 'sessionAffinity', 'sessionAffinityConfig', 'externalTrafficPolicy',
  'internalTrafficPolicy', 'healthCheckNodePort', 'publishNotReadyAddresses', 'externalName', 'externalIPs',
];
const SERVICE_PORT = ['name', 'protocol', 'port', 'targetPort', 'nodePort', 'appProtocol'];
const ENDPOINT = ['addresses', 'conditions', 'hostname', 'nodeName', 'zone', 'targetRef'];
const ENDPOINT_CONDITIONS = ['ready', 'serving', 'terminating'];
const ENDPOINT_PORT = ['name', 'protocol', 'port', 'appProtocol'];
const NODE_SPEC = ['podCIDR', 'podCIDRs', 'unschedulable'];

function trimMeta(m: Obj): Obj {
  const ann = m.annotations as Record<string, string> | undefined;
  let annotations = ann;
  if (ann && typeof ann === 'object' && LAST_APPLIED in ann) {
    const { [LAST_APPLIED]: _la, ...rest } = ann;
    annotations = rest;
  }
  return pick({ ...m, labels: share(m.labels), annotations: share(annotations) }, META)!;
}

/**
 * The object with only the fields skiff uses (src/cluster/types.ts). Returns a new
 * object; the input is not changed. Values of kept fields are the input's own (no copy).
 */
export function trim<T extends ClusterObject>(o: T): T {
  const r = o as unknown as Obj;
  const metadata = trimMeta(r.metadata as Obj);
  switch (o.kind) {
    case 'Pod': {
      const spec = pick(r.spec, POD_SPEC)!;
      if (spec && Array.isArray(spec.containers)) {
        spec.containers = share((spec.containers as unknown[]).map((c) => {
          const t = pick(c, CONTAINER);
          if (t && Array.isArray(t.ports)) t.ports = pickList(t.ports, CONTAINER_PORT);
          return t;
        }));
      }
      const status = pick(r.status, POD_STATUS);
      // A condition's timestamps and messages differ per Pod; type and status are what is read.
      if (status && status.conditions !== undefined) status.conditions = share(pickList(status.conditions, ['type', 'status']));
      return (status === undefined ? { apiVersion: o.apiVersion, kind: o.kind, metadata, spec } : { apiVersion: o.apiVersion, kind: o.kind, metadata, spec, status }) as unknown as T;
    }
    case 'Service': {
      const spec = pick(r.spec, SERVICE_SPEC)!;
      if (spec && Array.isArray(spec.ports)) spec.ports = share(pickList(spec.ports, SERVICE_PORT));
      if (spec && spec.selector !== undefined) spec.selector = share(spec.selector);
      const lb = (r.status as { loadBalancer?: { ingress?: unknown[] } } | undefined)?.loadBalancer;
      const status = lb?.ingress?.length ? { loadBalancer: { ingress: pickList(lb.ingress, ['ip', 'hostname']) } } : undefined;
      return (status === undefined ? { apiVersion: o.apiVersion, kind: o.kind, metadata, spec } : { apiVersion: o.apiVersion, kind: o.kind, metadata, spec, status }) as unknown as T;
    }
    case 'EndpointSlice': {
      const endpoints = Array.isArray(r.endpoints)
        ? r.endpoints.map((e) => {
            const t = pick(e, ENDPOINT);
            if (t && t.conditions !== undefined) t.conditions = pick(t.conditions, ENDPOINT_CONDITIONS);
            return t;
          })
        : r.endpoints;
      const ports = share(pickList(r.ports, ENDPOINT_PORT));
      return (ports === undefined ? { apiVersion: o.apiVersion, kind: o.kind, metadata, addressType: r.addressType, endpoints }
        : { apiVersion: o.apiVersion, kind: o.kind, metadata, addressType: r.addressType, endpoints, ports }) as unknown as T;
    }
    case 'Node': {
      const addrs = (r.status as { addresses?: unknown } | undefined)?.addresses;
      const spec = pick(r.spec, NODE_SPEC);
      return (addrs === undefined ? { apiVersion: o.apiVersion, kind: o.kind, metadata, spec }
        : { apiVersion: o.apiVersion, kind: o.kind, metadata, spec, status: { addresses: pickList(addrs, ['type', 'address']) } }) as unknown as T;
    }
    case 'NetworkPolicy':
      return { apiVersion: o.apiVersion, kind: o.kind, metadata, spec: pick(r.spec, ['podSelector', 'policyTypes', 'ingress', 'egress']) } as unknown as T;
    case 'Namespace':
      return { apiVersion: o.apiVersion, kind: o.kind, metadata } as unknown as T;
  }
  return o;
}
