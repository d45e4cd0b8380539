// Shared pieces of the DNS tests: an in-memory ClusterReader, a fixture of services,
// endpoints and namespaces, and query helpers that encode with dns-packet (the
// independent oracle) and decode our answers with it.
import dnsPacket from 'dns-packet';
import type {
  Change, ClusterObject, ClusterReader, EndpointSlice, Kind, KindMap, Namespace, Node, Service,
} from '../../src/cluster/types.js';
import { keyOf } from '../../src/cluster/types.js';

export class FakeReader implements ClusterReader {
  private readonly objs = new Map<Kind, Map<string, ClusterObject>>();
  private readonly listeners = new Set<(c: readonly Change[]) => void>();
  synced = true;

  constructor(objs: ClusterObject[] = []) {
    for (const o of objs) this.map(o.kind).set(keyOf(o), o);
  }

  private map(k: Kind): Map<string, ClusterObject> {
    let m = this.objs.get(k);
    if (!m) this.objs.set(k, (m = new Map()));
    return m;
  }

  list<K extends Kind>(kind: K): KindMap[K][] {
    return [...this.map(kind).values()] as KindMap[K][];
  }

  get<K extends Kind>(kind: K, key: string): KindMap[K] | undefined {
    return this.map(kind).get(key) as KindMap[K] | undefined;
  }

  hasSynced(): boolean {
    return this.synced;
  }

  onChange(l: (c: readonly Change[]) => void): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  upsert(o: ClusterObject): void {
    const key = keyOf(o);
    const old = this.map(o.kind).get(key);
    this.map(o.kind).set(key, o);
    this.emit([{ type: old ? 'update' : 'add', kind: o.kind, key, old, obj: o } as Change]);
  }

  remove(kind: Kind, key: string): void {
    const old = this.map(kind).get(key);
    if (!old) return;
    this.map(kind).delete(key);
    this.emit([{ type: 'delete', kind, key, old } as Change]);
  }

  private emit(c: Change[]): void {
    for (const l of this.listeners) l(c);
  }
}

export function ns(name: string): Namespace {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name } };
}

export function svc(namespace: string, name: string, spec: Service['spec']): Service {
  return { apiVersion: 'v1', kind: 'Service', metadata: { name, namespace }, spec };
}

export function slice(
  namespace: string, service: string, name: string, addressType: 'IPv4' | 'IPv6',
  endpoints: EndpointSlice['endpoints'], ports: EndpointSlice['ports'] = [],
): EndpointSlice {
  return {
    apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice',
    metadata: { name, namespace, labels: { 'kubernetes.io/service-name': service } },
    addressType, endpoints, ports,
  };
}

export function node(name: string, podCIDR: string, ip: string): Node {
  return {
    apiVersion: 'v1', kind: 'Node', metadata: { name },
    spec: { podCIDR, podCIDRs: [podCIDR] }, status: { addresses: [{ type: 'InternalIP', address: ip }] },
  };
}

/** The fixture every table runs over. */
export function fixture(): ClusterObject[] {
  const many = Array.from({ length: 100 }, (_, i) => ({ addresses: [`10.244.9.${i + 1}`], conditions: { ready: true } }));
  return [
    ns('prod'), ns('default'), ns('empty-ns'),
    svc('prod', 'web', {
      type: 'ClusterIP', clusterIP: '10.96.0.10', clusterIPs: ['10.96.0.10'],
      ports: [{ name: 'http', port: 80, protocol: 'TCP' }, { name: 'dns', port: 53, protocol: 'UDP' }, { port: 8080 }],
    }),
    svc('prod', 'dual', { clusterIP: '10.96.0.11', clusterIPs: ['10.96.0.11', 'fd00::11'], ipFamilies: ['IPv4', 'IPv6'] }),
    svc('prod', 'hl', { clusterIP: 'None', clusterIPs: ['None'], ports: [{ name: 'http', port: 8080 }] }),
    slice('prod', 'hl', 'hl-abc', 'IPv4', [
      { addresses: ['10.244.1.5'], hostname: 'web-0', conditions: { ready: true } },
      { addresses: ['10.244.1.6'], conditions: { ready: true } },
      { addresses: ['10.244.1.7'], conditions: { ready: false } },
    ], [{ name: 'http', port: 8080, protocol: 'TCP' }]),
    svc('prod', 'hl6', { clusterIP: 'None' }),
    slice('prod', 'hl6', 'hl6-x', 'IPv6', [{ addresses: ['fd00::5'] }]),
    svc('prod', 'hlnr', { clusterIP: 'None', publishNotReadyAddresses: true }),
    slice('prod', 'hlnr', 'hlnr-x', 'IPv4', [{ addresses: ['10.244.2.9'], conditions: { ready: false } }]),
    svc('prod', 'empty', { clusterIP: 'None' }),
    svc('prod', 'notready', { clusterIP: 'None' }),
    slice('prod', 'notready', 'notready-x', 'IPv4', [{ addresses: ['10.244.3.1'], conditions: { ready: false } }]),
    svc('prod', 'ext', { type: 'ExternalName', externalName: 'web.prod.svc.cluster.local' }),
    svc('prod', 'ext2', { type: 'ExternalName', externalName: 'www.example.com.' }),
    svc('prod', 'big', { clusterIP: 'None' }),
    slice('prod', 'big', 'big-x', 'IPv4', many),
    node('n1', '10.244.1.0/24', '192.168.50.1'),
  ];
}

export interface Q {
  name: string;
  type?: string;
  id?: number;
  edns?: number | false;
  dnssecOk?: boolean;
  qclass?: string;
}

/** A query encoded by dns-packet. */
export function query(q: Q): Buffer {
  return dnsPacket.encode({
    type: 'query', id: q.id ?? 4242, flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type: (q.type ?? 'A') as dnsPacket.RecordType, name: q.name, class: (q.qclass ?? 'IN') as 'IN' }],
    ...(q.edns ? { additionals: [{ type: 'OPT', name: '.', udpPayloadSize: q.edns, flags: q.dnssecOk ? dnsPacket.DNSSEC_OK : 0 } as dnsPacket.Answer] } : {}),
  });
}

export type Decoded = dnsPacket.Packet & { rcode?: string; flag_tc?: boolean; flag_aa?: boolean; flag_rd?: boolean; flag_ra?: boolean };

export function decode(b: Buffer): Decoded {
  return dnsPacket.decode(b) as Decoded;
}

/** "A 10.0.0.1"-style summaries of a section, for compact table expectations. */
export function summary(rrs: dnsPacket.Answer[] | undefined): string[] {
  return (rrs ?? []).filter((r) => r.type !== 'OPT').map((r) => {
    const a = r as { name: string; type: string; ttl?: number; data?: unknown };
    let d: string;
    switch (a.type) {
      case 'SRV': {
        const s = a.data as { priority: number; weight: number; port: number; target: string };
        d = `${s.priority} ${s.weight} ${s.port} ${s.target}`;
        break;
      }
      case 'SOA': {
        const s = a.data as { mname: string; rname: string; minimum: number };
        d = `${s.mname} ${s.rname} ${s.minimum}`;
        break;
      }
      case 'TXT':
        d = (a.data as Buffer[]).map((x) => x.toString()).join(' ');
        break;
      default:
        d = String(a.data);
    }
    return `${a.name} ${a.ttl} ${a.type} ${d}`;
  });
}
