// Builders for Services and EndpointSlices, a minimal in-memory ClusterReader, and a
// harness (Proxier over the fake nftables, with a tracer) for the proxy's tests and
// benchmarks. No I/O.
import { Registry } from 'prom-client';
import type { AgentContext } from '../agent/reconciler.js';
import type { ConntrackFilter } from '../os/conntrack.js';
import type { Executor } from '../os/exec.js';
import { FakeNft } from '../os/nft-fake.js';
import { Tracer, type Packet } from '../os/nft-trace.js';
import { logger, setLogSink } from '../util/log.js';
import { Proxier, type ProxierConfig, type ProxierDeps } from './proxier.js';
import type { Change, ClusterReader, EndpointConditions, EndpointSlice, Kind, KindMap, Protocol, Service, ServicePort } from '../cluster/types.js';
import { keyOf } from '../cluster/types.js';
import { SERVICE_NAME_LABEL } from './model.js';

export interface SvcOpts {
  ns?: string;
  clusterIP?: string;
  clusterIPs?: string[];
  type?: Service['spec']['type'];
  ports?: ServicePort[];
  affinity?: number | true;
  eTP?: 'Cluster' | 'Local';
  iTP?: 'Cluster' | 'Local';
  externalIPs?: string[];
  lbIPs?: string[];
  healthCheckNodePort?: number;
}

export function svc(name: string, o: SvcOpts = {}): Service {
  const s: Service = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: o.ns ?? 'default' },
    spec: {
      type: o.type ?? 'ClusterIP',
      ports: o.ports ?? [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 8080 }],
    },
  };
  if (o.clusterIPs) s.spec.clusterIPs = o.clusterIPs;
  if (o.clusterIP !== undefined) s.spec.clusterIP = o.clusterIP;
  if (o.affinity !== undefined) {
    s.spec.sessionAffinity = 'ClientIP';
    if (o.affinity !== true) s.spec.sessionAffinityConfig = { clientIP: { timeoutSeconds: o.affinity } };
  }
  if (o.eTP) s.spec.externalTrafficPolicy = o.eTP;
  if (o.iTP) s.spec.internalTrafficPolicy = o.iTP;
  if (o.externalIPs) s.spec.externalIPs = o.externalIPs;
  if (o.healthCheckNodePort !== undefined) s.spec.healthCheckNodePort = o.healthCheckNodePort;
  if (o.lbIPs) s.status = { loadBalancer: { ingress: o.lbIPs.map((ip) => ({ ip })) } };
  return s;
}

export interface EpOpts {
  ip: string;
  node?: string;
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
}

export function slice(
  service: string,
  eps: (string | EpOpts)[],
  o: { ns?: string; name?: string; ports?: { name?: string; port: number; protocol?: Protocol }[]; family?: 'IPv4' | 'IPv6' } = {},
): EndpointSlice {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: o.name ?? `${service}-abc`, namespace: o.ns ?? 'default', labels: { [SERVICE_NAME_LABEL]: service } },
    addressType: o.family ?? (eps.some((e) => (typeof e === 'string' ? e : e.ip).includes(':')) ? 'IPv6' : 'IPv4'),
    ports: o.ports ?? [{ name: 'http', port: 8080, protocol: 'TCP' }],
    endpoints: eps.map((e) => {
      const x = typeof e === 'string' ? { ip: e } : e;
      const conditions: EndpointConditions = { ready: x.ready ?? true };
      if (x.serving !== undefined) conditions.serving = x.serving;
      if (x.terminating !== undefined) conditions.terminating = x.terminating;
      return { addresses: [x.ip], conditions, ...(x.node ? { nodeName: x.node } : {}) };
    }),
  };
}

/** A ClusterReader over plain maps; `apply` returns the Change list a source would deliver. */
export class MemoryView implements ClusterReader {
  private readonly objs = new Map<Kind, Map<string, KindMap[Kind]>>();
  private readonly listeners = new Set<(c: readonly Change[]) => void>();

  list<K extends Kind>(kind: K): KindMap[K][] {
    return [...(this.objs.get(kind)?.values() ?? [])] as KindMap[K][];
  }
  get<K extends Kind>(kind: K, key: string): KindMap[K] | undefined {
    return this.objs.get(kind)?.get(key) as KindMap[K] | undefined;
  }
  hasSynced(): boolean {
    return true;
  }
  onChange(listener: (changes: readonly Change[]) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Adds or replaces objects. */
  put(...objs: (Service | EndpointSlice)[]): Change[] {
    const changes: Change[] = [];
    for (const o of objs) {
      let m = this.objs.get(o.kind);
      if (!m) this.objs.set(o.kind, (m = new Map()));
      const key = keyOf(o);
      const old = m.get(key) as Service | EndpointSlice | undefined;
      m.set(key, o);
      changes.push(old ? { type: 'update', kind: o.kind, key, old, obj: o } : { type: 'add', kind: o.kind, key, obj: o });
    }
    for (const l of this.listeners) l(changes);
    return changes;
  }

  remove(kind: 'Service' | 'EndpointSlice', key: string): Change[] {
    const m = this.objs.get(kind);
    const old = m?.get(key) as Service | EndpointSlice | undefined;
    if (!old) return [];
    m!.delete(key);
    const changes: Change[] = [{ type: 'delete', kind, key, old }];
    for (const l of this.listeners) l(changes);
    return changes;
  }
}

// ---------------------------------------------------------------------------------
// Harness

export const NODE = 'node-a';
export const NODE_IP = '192.168.1.10';

/** Log lines captured by harnesses (the sink is installed by the first harness). */
export const logLines: string[] = [];
let sinkInstalled = false;

const noExec: Executor = async (cmd) => {
  throw new Error(`unexpected exec of ${cmd} in a proxy harness`);
};

export interface Harness {
  view: MemoryView;
  nft: FakeNft;
  proxier: Proxier;
  registry: Registry;
  conntrack: ConntrackFilter[];
  tracer: (opts?: { now?: () => number; seed?: number }) => Tracer;
}

export function harness(cfg: Partial<ProxierConfig> = {}, deps: Pick<ProxierDeps, 'now'> = {}): Harness {
  if (!sinkInstalled) {
    setLogSink((l) => logLines.push(l));
    sinkInstalled = true;
  }
  const view = new MemoryView();
  const nft = new FakeNft();
  const registry = new Registry();
  const ctx: AgentContext = { nodeName: NODE, view, registry, log: logger('proxy-test'), exec: noExec };
  const conntrack: ConntrackFilter[] = [];
  const proxier = new Proxier(
    ctx,
    { clusterCIDR: '10.244.0.0/16', balancing: 'round-robin', nodeIPs: [NODE_IP], healthCheckBind: false, ...cfg },
    nft,
    {
      ...deps,
      conntrack: {
        delete: async (f) => {
          conntrack.push(f);
          return 0;
        },
      },
    },
  );
  return {
    view,
    nft,
    proxier,
    registry,
    conntrack,
    tracer: (o = {}) => new Tracer(nft, { localAddrs: [NODE_IP, '127.0.0.1', '10.244.1.1', 'fd00:1::10', '::1'], ...o }),
  };
}

export const tcp = (src: string, dst: string, dport: number, sport = 40000): Packet => ({ family: src.includes(':') ? 6 : 4, src, dst, proto: 'tcp', sport, dport });
export const udp = (src: string, dst: string, dport: number, sport = 40000): Packet => ({ ...tcp(src, dst, dport, sport), proto: 'udp' });
