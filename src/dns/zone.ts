// The cluster zone (Kubernetes DNS specification, schema 1.1.0): an index from names to
// records, maintained incrementally per Service (and its EndpointSlices) and per
// Namespace, and encoded answers cached per name and type. Any change bumps a
// generation number, which invalidates every cached encoding at once: no answer
// outlives the change it depends on, and rebuilding one template costs microseconds.
import { isIPv4, isIPv6 } from 'node:net';
import type { Change, ClusterReader, EndpointSlice, Service } from '../cluster/types.js';
import { ipToBytes, bytesToIp } from '../util/ip.js';
import {
  buildTemplate, hashName, keyOfName, MsgWriter, nameToWire, RCODE, TYPE, wireToName,
  type Query, type QueryInfo, type RR, type Template,
} from './wire.js';

export interface ZoneOptions {
  /** The cluster domain (default cluster.local). */
  zone?: string;
  /** TTL of every answer (default 5 s); also the SOA minimum, hence the negative TTL. */
  ttl?: number;
  /**
   * Reverse zones skiff is authoritative for (service CIDR, cluster CIDR): an unknown
   * address inside them is NXDOMAIN; other reverse names are forwarded.
   */
  reverseCidrs?: string[];
  /** Addresses of this DNS server, published as A/AAAA of ns.dns.<zone>. */
  nsAddresses?: string[];
}

/** The answer to an in-zone query. */
export type ZoneAnswer =
  | Template
  /** Not the cluster's to answer: forward (or refuse). */
  | typeof FORWARD
  /** A negative answer before the source has synced. */
  | typeof NOT_SYNCED
  /** An ExternalName whose target lies outside the zone: resolve the target and append. */
  | ExternalChase;

export const FORWARD = Symbol('forward');
export const NOT_SYNCED = Symbol('not-synced');

export interface ExternalChase {
  chase: true;
  /** The CNAME chain inside the zone, in order. */
  cnames: RR[];
  /** The out-of-zone name to resolve (lowercase dotted). */
  target: string;
}

const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
const MAX_CHAIN = 8;

/** Where a name belongs: the cluster zone, a reverse tree, or elsewhere. */
const KIND_ZONE = 0, KIND_V4 = 1, KIND_V6 = 2;
const REV4 = 'in-addr.arpa';
const REV6 = 'ip6.arpa';

/** Encoded answers per query type, valid for one zone generation. */
class TemplateCache extends Map<number, Template | ExternalChase> {
  constructor(public gen: number) {
    super();
  }
}

/** NameNode.o1 when several owners contribute to a name (no owner id starts with NUL). */
const MULTI = '\0multi';

/** The records of a name with no records (it only exists): one shared empty list. */
const NO_RECORDS: RR[] = [];

class NameNode {
  /**
   * Records at this name per contributor (service, namespace, apex); an empty list still
   * makes the name exist. Nearly every name has one contributor: it is kept inline, and
   * a Map is made only for the rare name several contribute to (a shared address's PTR).
   * Nearly every contributor has one record at a name: it is kept without a list.
   */
  private o1: string | null = null;
  /** o1's records; when several contribute (o1 === MULTI), a Map of each one's records. */
  private l1: RR | RR[] | Map<string, RR[]> | null = null;
  /** Contributed names strictly below this one (an empty non-terminal exists while > 0). */
  below = 0;
  /** Encoded answers per type, created on the first query (most names are never asked for). */
  templates: TemplateCache | null = null;
  /**
   * The next node in this one's hash bucket. The hash (of the lowercase wire name, see
   * hashName) is not stored: it is recomputed when the table grows, and a lookup compares
   * names directly (length first). Every field here costs 8 bytes per name.
   */
  nextSameHash: NameNode | null = null;
  /** `name`: lowercase dotted, no trailing dot (usually the string its records hold too). */
  constructor(readonly name: string) {}

  hasOwner(o: string): boolean {
    return this.o1 === MULTI ? (this.l1 as Map<string, RR[]>).has(o) : this.o1 === o;
  }

  setOwner(o: string, l: RR[]): void {
    if (this.o1 === MULTI) (this.l1 as Map<string, RR[]>).set(o, l);
    else if (this.o1 === o || this.o1 === null) {
      this.o1 = o;
      this.l1 = l.length === 1 ? l[0]! : l.length === 0 ? NO_RECORDS : l;
    } else {
      const mine = this.l1 as RR | RR[];
      this.l1 = new Map([[this.o1, Array.isArray(mine) ? mine : [mine]], [o, l]]);
      this.o1 = MULTI;
    }
  }

  deleteOwner(o: string): void {
    if (this.o1 === MULTI) {
      const m = this.l1 as Map<string, RR[]>;
      m.delete(o);
      if (m.size === 0) {
        this.o1 = null;
        this.l1 = null;
      }
    } else if (this.o1 === o) {
      this.o1 = null;
      this.l1 = null;
    }
  }

  get ownerCount(): number {
    return this.o1 === MULTI ? (this.l1 as Map<string, RR[]>).size : this.o1 !== null ? 1 : 0;
  }

  records(type: number): RR[] {
    const out: RR[] = [];
    const l1 = this.l1;
    if (l1 === null) return out;
    if (l1 instanceof Map) {
      for (const list of l1.values()) for (const r of list) if (type === TYPE.ANY || r.type === type) out.push(r);
    } else if (!Array.isArray(l1)) {
      if (type === TYPE.ANY || l1.type === type) out.push(l1);
    } else for (const r of l1) if (type === TYPE.ANY || r.type === type) out.push(r);
    return out;
  }
}

interface Cidr { bytes: Buffer; prefix: number }

function parseCidr(s: string): Cidr {
  const m = /^([^/]+)\/(\d{1,3})$/.exec(s);
  if (!m || !(isIPv4(m[1]!) || isIPv6(m[1]!))) throw new Error(`reverse CIDR: invalid value ${JSON.stringify(s)}`);
  const bytes = ipToBytes(m[1]!);
  const prefix = Number(m[2]);
  if (prefix > bytes.length * 8) throw new Error(`reverse CIDR: invalid prefix in ${JSON.stringify(s)}`);
  return { bytes, prefix };
}

function prefixMatch(a: Buffer, b: Buffer, bits: number): boolean {
  const full = bits >> 3;
  for (let i = 0; i < full; i++) if (a[i] !== b[i]) return false;
  const rest = bits & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return (a[full]! & mask) === (b[full]! & mask);
}

/** The reverse (PTR) name of an address. */
export function reverseName(ip: string): string {
  const b = ipToBytes(ip);
  if (b.length === 4) return `${b[3]}.${b[2]}.${b[1]}.${b[0]}.${REV4}`;
  const nibbles: string[] = [];
  for (let i = 15; i >= 0; i--) nibbles.push((b[i]! & 0xf).toString(16), (b[i]! >> 4).toString(16));
  return `${nibbles.join('.')}.${REV6}`;
}

/** A reverse name -> the address prefix it covers (bytes, prefix length), or null. */
function parseReverse(name: string): { bytes: Buffer; bits: number } | null {
  if (name.endsWith('.' + REV4) || name === REV4) {
    const labels = name === REV4 ? [] : name.slice(0, -REV4.length - 1).split('.');
    if (labels.length > 4) return null;
    const bytes = Buffer.alloc(4);
    for (let i = 0; i < labels.length; i++) {
      const l = labels[labels.length - 1 - i]!;
      if (!/^(0|[1-9]\d{0,2})$/.test(l) || Number(l) > 255) return null;
      bytes[i] = Number(l);
    }
    return { bytes, bits: labels.length * 8 };
  }
  if (name.endsWith('.' + REV6) || name === REV6) {
    const labels = name === REV6 ? [] : name.slice(0, -REV6.length - 1).split('.');
    if (labels.length > 32) return null;
    const bytes = Buffer.alloc(16);
    for (let i = 0; i < labels.length; i++) {
      const l = labels[labels.length - 1 - i]!;
      if (!/^[0-9a-f]$/.test(l)) return null;
      const v = parseInt(l, 16);
      bytes[i >> 1] = bytes[i >> 1]! | (i & 1 ? v : v << 4);
    }
    return { bytes, bits: labels.length * 4 };
  }
  return null;
}

/** Endpoints without a hostname are named by their dashed address (CoreDNS's convention). */
export function dashedName(ip: string): string {
  return isIPv4(ip) ? ip.replace(/\./g, '-') : bytesToIp(ipToBytes(ip)).replace(/:/g, '-');
}

/** `ip` must be a valid address; the record keeps the string (usually the cluster object's own), not bytes. */
function addrRR(name: string, ip: string, ttl: number): RR {
  return { name, type: ip.includes(':') ? TYPE.AAAA : TYPE.A, ttl, ip };
}

function normalizeName(s: string): string {
  let n = s.trim().toLowerCase();
  while (n.endsWith('.')) n = n.slice(0, -1);
  return n;
}

function validIP(s: string | undefined): s is string {
  return !!s && (isIPv4(s) || isIPv6(s));
}

/**
 * The records one Service contributes (pure). ClusterIP: A/AAAA, SRV per named port
 * targeting the service, PTR per ClusterIP. Headless: A/AAAA per ready endpoint (all
 * endpoints with publishNotReadyAddresses), one name per endpoint (hostname or dashed
 * IP), SRV per endpoint and named port targeting that name, PTR per endpoint IP; no
 * endpoint -> no records at all (NXDOMAIN). ExternalName: a CNAME.
 */
export function serviceRecords(svc: Service, slices: readonly EndpointSlice[], zone: string, ttl: number): RR[] {
  const ns = svc.metadata.namespace ?? 'default';
  const base = `${svc.metadata.name}.${ns}.svc.${zone}`.toLowerCase();
  const out: RR[] = [];
  const spec = svc.spec ?? {};
  if (spec.type === 'ExternalName') {
    const target = spec.externalName ? normalizeName(spec.externalName) : '';
    if (target) out.push({ name: base, type: TYPE.CNAME, ttl, target });
    return out;
  }
  const ips = spec.clusterIPs?.length ? spec.clusterIPs : spec.clusterIP ? [spec.clusterIP] : [];
  const headless = ips.includes('None');
  if (!headless) {
    const valid = ips.filter(validIP);
    if (valid.length === 0) return out; // not allocated yet
    for (const ip of valid) {
      out.push(addrRR(base, ip, ttl));
      out.push({ name: reverseName(ip), type: TYPE.PTR, ttl, target: base });
    }
    for (const p of spec.ports ?? []) {
      if (!p.name) continue;
      out.push({
        name: `_${p.name}._${(p.protocol ?? 'TCP').toLowerCase()}.${base}`.toLowerCase(),
        type: TYPE.SRV, ttl, priority: 0, weight: 100, port: p.port, target: base,
      });
    }
    return out;
  }
  const all = spec.publishNotReadyAddresses === true;
  const seenAddr = new Set<string>();
  const srv = new Map<string, { port: number; target: string }[]>();
  const seenName = new Set<string>();
  for (const sl of slices) {
    if (sl.addressType !== 'IPv4' && sl.addressType !== 'IPv6') continue;
    for (const ep of sl.endpoints ?? []) {
      // The API: a nil `ready` is to be read as ready.
      if (!all && ep.conditions?.ready === false) continue;
      const addrs = (ep.addresses ?? []).filter(validIP);
      if (addrs.length === 0) continue;
      const epName = `${ep.hostname ? ep.hostname.toLowerCase() : dashedName(addrs[0]!)}.${base}`;
      for (const a of addrs) {
        const c = bytesToIp(ipToBytes(a));
        const canon = c === a ? a : c; // share the object's string when it is already canonical
        const k = `${epName}|${canon}`;
        if (!seenAddr.has(k)) {
          seenAddr.add(k);
          out.push(addrRR(epName, canon, ttl));
          out.push({ name: reverseName(canon), type: TYPE.PTR, ttl, target: epName });
          if (!seenAddr.has(canon)) {
            seenAddr.add(canon);
            out.push(addrRR(base, canon, ttl));
          }
        }
      }
      for (const p of sl.ports ?? []) {
        if (!p.name || p.port === undefined) continue;
        const n = `_${p.name}._${(p.protocol ?? 'TCP').toLowerCase()}.${base}`.toLowerCase();
        const k = `${n}|${epName}|${p.port}`;
        if (seenName.has(k)) continue;
        seenName.add(k);
        let l = srv.get(n);
        if (!l) srv.set(n, (l = []));
        l.push({ port: p.port, target: epName });
      }
    }
  }
  for (const [n, l] of srv) {
    const weight = Math.max(1, Math.floor(100 / l.length));
    for (const s of l) out.push({ name: n, type: TYPE.SRV, ttl, priority: 0, weight, port: s.port, target: s.target });
  }
  return out;
}

export class ClusterZone {
  readonly zone: string;
  readonly zoneKey: string;
  readonly ttl: number;
  /**
   * The names, by hash of their wire name (chains in buckets[hash & mask]): lookups hash
   * the packet's bytes, no string is built. The only index: a second Map by key would
   * cost an entry per name.
   */
  private buckets: (NameNode | null)[] = new Array<NameNode | null>(1024).fill(null);
  private mask = 1023;
  private nameCount = 0;
  private readonly zoneWire: Buffer;
  private readonly zoneLabels: number;
  /**
   * owner -> the names it contributed (their records live in the name nodes). Owners:
   * 'apex', 'ns:<name>', and a Service's own key '<ns>/<name>' (the view's string, not a
   * new one per Service; a '/' tells it from the others).
   */
  private readonly contrib = new Map<string, string[]>();
  /** service key -> keys of its EndpointSlices. */
  private readonly slicesOf = new Map<string, Set<string>>();
  private readonly namespaces = new Set<string>();
  private readonly reverse: Cidr[];
  private readonly soaOwner: [string, string, string];
  private readonly negCache = new Map<number, Template>();
  private negGen = -1;
  private gen = 0;
  private serial: number;
  private unsubscribe: (() => void) | null = null;
  private readonly nsAddresses: string[];
  /** Called after every applied change (the server clears its caches). */
  onUpdate: (() => void) | null = null;

  constructor(private readonly reader: ClusterReader, opts: ZoneOptions = {}) {
    this.zone = normalizeName(opts.zone ?? 'cluster.local');
    if (!this.zone) throw new Error('zone: invalid value "" (e.g. cluster.local)');
    this.zoneKey = keyOfName(this.zone);
    this.zoneWire = nameToWire(this.zone);
    this.zoneLabels = this.zone.split('.').length;
    this.ttl = opts.ttl ?? 5;
    if (!Number.isInteger(this.ttl) || this.ttl < 0 || this.ttl > 86400) throw new Error(`ttl: invalid value ${JSON.stringify(opts.ttl)} (0..86400)`);
    this.reverse = (opts.reverseCidrs ?? []).map(parseCidr);
    this.nsAddresses = (opts.nsAddresses ?? []).filter(validIP);
    this.soaOwner = [this.zone, REV4, REV6];
    this.serial = Math.floor(Date.now() / 1000);
  }

  /** Builds the whole index and follows changes. */
  start(): void {
    this.rebuild();
    this.unsubscribe = this.reader.onChange((changes) => this.apply(changes));
  }

  stop(): void {
    this.unsubscribe?.();
    this.unsubscribe = null;
  }

  get generation(): number {
    return this.gen;
  }

  /** Rebuilds everything from the reader. */
  rebuild(): void {
    for (const owner of [...this.contrib.keys()]) this.setOwner(owner, []);
    this.slicesOf.clear();
    this.namespaces.clear();
    this.setOwner('apex', this.apexRecords(), [`svc.${this.zone}`, `pod.${this.zone}`]);
    for (const sl of this.reader.list('EndpointSlice')) {
      const svc = sl.metadata.labels?.[SERVICE_NAME_LABEL];
      if (svc) this.linkSlice(`${sl.metadata.namespace}/${svc}`, `${sl.metadata.namespace}/${sl.metadata.name}`);
    }
    for (const ns of this.reader.list('Namespace')) this.updateNamespace(ns.metadata.name);
    for (const svc of this.reader.list('Service')) this.updateService(`${svc.metadata.namespace}/${svc.metadata.name}`);
    this.bump();
  }

  /** Applies changes from the reader (incrementally: only the services and namespaces touched). */
  apply(changes: readonly Change[]): void {
    const services = new Set<string>();
    for (const c of changes) {
      if (c.kind === 'Service') services.add(c.key);
      else if (c.kind === 'EndpointSlice') {
        // A slice may move between services (its label changed): unlink old, link new.
        const old = c.old as EndpointSlice | undefined;
        const cur = c.obj as EndpointSlice | undefined;
        const oldSvc = old?.metadata.labels?.[SERVICE_NAME_LABEL];
        const newSvc = cur?.metadata.labels?.[SERVICE_NAME_LABEL];
        if (old && oldSvc) {
          const sk = `${old.metadata.namespace}/${oldSvc}`;
          this.slicesOf.get(sk)?.delete(c.key);
          services.add(sk);
        }
        if (cur && newSvc) {
          const sk = `${cur.metadata.namespace}/${newSvc}`;
          this.linkSlice(sk, c.key);
          services.add(sk);
        }
      } else if (c.kind === 'Namespace') {
        this.updateNamespace(c.key);
      }
    }
    for (const s of services) this.updateService(s);
    if (services.size || changes.some((c) => c.kind === 'Namespace')) this.bump();
  }

  private linkSlice(svcKey: string, sliceKey: string): void {
    let s = this.slicesOf.get(svcKey);
    if (!s) this.slicesOf.set(svcKey, (s = new Set()));
    s.add(sliceKey);
  }

  private bump(): void {
    this.gen++;
    this.serial = Math.max(this.serial + 1, Math.floor(Date.now() / 1000));
    this.onUpdate?.();
  }

  private updateService(key: string): void {
    const svc = this.reader.get('Service', key);
    if (!svc) {
      this.setOwner(key, []);
      return;
    }
    const slices: EndpointSlice[] = [];
    for (const sk of this.slicesOf.get(key) ?? []) {
      const sl = this.reader.get('EndpointSlice', sk);
      if (sl && sl.metadata.labels?.[SERVICE_NAME_LABEL] === svc.metadata.name) slices.push(sl);
    }
    this.setOwner(key, serviceRecords(svc, slices, this.zone, this.ttl));
  }

  private updateNamespace(name: string): void {
    if (this.reader.get('Namespace', name)) {
      this.namespaces.add(name.toLowerCase());
      this.setOwner(`ns:${name}`, [], [`${name}.svc.${this.zone}`.toLowerCase(), `${name}.pod.${this.zone}`.toLowerCase()]);
    } else {
      this.namespaces.delete(name.toLowerCase());
      this.setOwner(`ns:${name}`, []);
    }
  }

  private apexRecords(): RR[] {
    const z = this.zone;
    const out: RR[] = [
      { name: z, type: TYPE.NS, ttl: this.ttl, target: `ns.dns.${z}` },
      { name: `dns-version.${z}`, type: TYPE.TXT, ttl: this.ttl, texts: ['1.1.0'] },
    ];
    for (const ip of this.nsAddresses) out.push(addrRR(`ns.dns.${z}`, ip, this.ttl));
    return out;
  }

  private soa(kind: number): RR {
    return {
      name: this.soaOwner[kind]!, type: TYPE.SOA, ttl: this.ttl,
      mname: `ns.dns.${this.zone}`, rname: `hostmaster.${this.zone}`,
      serial: this.serial >>> 0, refresh: 7200, retry: 1800, expire: 86400, minimum: this.ttl,
    };
  }

  /** Replaces what `owner` contributes; `empty` names exist without records. */
  private setOwner(owner: string, rrs: readonly RR[], empty: readonly string[] = []): void {
    const next = new Map<string, RR[]>();
    for (const n of empty) if (validName(n)) next.set(n, []);
    for (const r of rrs) {
      // Names from the cluster are validated by the API server, but a manifest directory
      // is not: a record whose name cannot be encoded is left out rather than crashing.
      if (!validName(r.name) || ('target' in r && !validName(r.target))) continue;
      let l = next.get(r.name);
      if (!l) next.set(r.name, (l = []));
      l.push(r);
    }
    const prev = this.contrib.get(owner);
    if (prev) {
      for (const n of prev) {
        if (next.has(n)) continue;
        const key = lowerName(n);
        const node = this.node(key);
        if (!node) continue;
        node.deleteOwner(owner);
        this.adjustAncestors(n, -1);
        this.prune(key, node);
      }
    }
    for (const [n, l] of next) {
      const key = lowerName(n);
      const node = this.node(key) ?? this.addNode(key);
      if (!node.hasOwner(owner)) this.adjustAncestors(n, +1);
      node.setOwner(owner, l);
    }
    if (next.size) this.contrib.set(owner, [...next.keys()]);
    else this.contrib.delete(owner);
  }

  private prune(key: string, node: NameNode): void {
    if (node.ownerCount === 0 && node.below === 0) this.removeNode(node);
  }

  // An open hash table of chains in a plain array (8 bytes a slot, at most one slot per
  // name): a Map<number, NameNode> costs several times that per entry.
  private node(key: string): NameNode | undefined {
    let n = this.buckets[hashName(key) & this.mask] ?? null;
    while (n !== null) {
      if (n.name === key) return n;
      n = n.nextSameHash;
    }
    return undefined;
  }

  private addNode(key: string): NameNode {
    const node = new NameNode(key);
    if (++this.nameCount > this.buckets.length) this.grow();
    const i = hashName(node.name) & this.mask;
    node.nextSameHash = this.buckets[i] ?? null;
    this.buckets[i] = node;
    return node;
  }

  private grow(): void {
    const old = this.buckets;
    this.buckets = new Array<NameNode | null>(old.length * 2).fill(null);
    this.mask = this.buckets.length - 1;
    for (let head of old) {
      while (head) {
        const next: NameNode | null = head.nextSameHash;
        const i = hashName(head.name) & this.mask;
        head.nextSameHash = this.buckets[i] ?? null;
        this.buckets[i] = head;
        head = next;
      }
    }
  }

  private removeNode(node: NameNode): void {
    const i = hashName(node.name) & this.mask;
    let cur = this.buckets[i] ?? null;
    let prev: NameNode | null = null;
    while (cur && cur !== node) {
      prev = cur;
      cur = cur.nextSameHash;
    }
    if (!cur) return;
    this.nameCount--;
    if (prev) prev.nextSameHash = node.nextSameHash;
    else this.buckets[i] = node.nextSameHash;
    node.nextSameHash = null;
  }

  private find(q: Query): NameNode | undefined {
    let n = this.buckets[q.hash & this.mask] ?? null;
    while (n !== null) {
      if (q.nameEqualsName(n.name)) return n;
      n = n.nextSameHash;
    }
    return undefined;
  }

  /** Ancestors up to (excluding) the zone apex or the reverse root are empty non-terminals. */
  private adjustAncestors(name: string, d: number): void {
    let n = name;
    for (;;) {
      const dot = n.indexOf('.');
      if (dot < 0) return;
      n = n.slice(dot + 1);
      if (n === this.zone || n === REV4 || n === REV6 || !n.includes('.')) return;
      const key = lowerName(n);
      let node = this.node(key);
      if (!node) {
        if (d < 0) continue;
        node = this.addNode(key);
      }
      node.below += d;
      if (d < 0) this.prune(key, node);
    }
  }

  /** Where a query name belongs. -1: outside anything skiff answers for. */
  private kindOf(q: Query): number {
    if (q.endsWithName(this.zoneWire)) return KIND_ZONE;
    if (q.endsWithName(REV4_WIRE)) return KIND_V4;
    if (q.endsWithName(REV6_WIRE)) return KIND_V6;
    return -1;
  }

  /**
   * Answers a query from the index. The hot path: one Map lookup and, after the first
   * query per name/type/generation, a cached Template.
   */
  answer(q: Query): ZoneAnswer {
    const node = this.find(q);
    if (node !== undefined) {
      const cache = node.templates;
      if (cache !== null) {
        if (cache.gen === this.gen) {
          const t = cache.get(q.qtype);
          if (t !== undefined) return t;
        } else {
          cache.clear();
          cache.gen = this.gen;
        }
      }
      const kind = this.kindOf(q);
      if (kind < 0) return FORWARD; // cannot happen: nodes live under the zone or the reverse roots
      const t = this.buildPositive(node, q.qtype, q.nameLen, kind);
      if (!this.reader.hasSynced() && !('chase' in t) && (t.an === 0 || t.rcode !== RCODE.NOERROR)) return NOT_SYNCED;
      (node.templates ??= new TemplateCache(this.gen)).set(q.qtype, t);
      return t;
    }
    const kind = this.kindOf(q);
    if (kind < 0) return FORWARD;
    if (kind === KIND_ZONE) {
      // Only `<ip>.<ns>.pod.<zone>` can be a pod: checked on the labels before any parsing.
      const pod = q.labelCount === this.zoneLabels + 3 && q.labelIs(2, 'pod') ? this.podAnswer(q) : null;
      if (pod) return pod;
    } else if (!this.reverseAuthoritative(q.key)) {
      return FORWARD;
    }
    if (!this.reader.hasSynced()) return NOT_SYNCED;
    return this.negative(kind, q.nameLen, RCODE.NXDOMAIN);
  }

  private reverseAuthoritative(key: string): boolean {
    if (this.reverse.length === 0) return false;
    const r = parseReverse(wireToName(Buffer.from(key, 'latin1')));
    if (!r) return false;
    for (const c of this.reverse) {
      if (c.bytes.length !== r.bytes.length) continue;
      if (r.bits >= c.prefix && prefixMatch(r.bytes, c.bytes, c.prefix)) return true;
    }
    return false;
  }

  /** NXDOMAIN/NODATA shared by every name of one length: only the SOA owner (a suffix) is pointed at. */
  private negative(kind: number, qlen: number, rcode: number): Template {
    if (this.negGen !== this.gen) {
      this.negCache.clear();
      this.negGen = this.gen;
    }
    const k = (qlen << 8) | (kind << 4) | rcode;
    let t = this.negCache.get(k);
    if (!t) {
      const owner = this.soaOwner[kind]!;
      // Any name of this length under the owner: the pointer targets only the owner suffix.
      const name = placeholder(qlen, owner);
      const w = new MsgWriter(name, TYPE.A, 1, owner);
      w.add(this.soa(kind));
      t = w.finish({ an: 0, ns: 1, ar: 0 }, rcode, true);
      this.negCache.set(k, t);
    }
    return t;
  }

  private buildPositive(node: NameNode, qtype: number, qlen: number, kind: number): Template | ExternalChase {
    const cname = node.records(TYPE.CNAME);
    if (cname.length && qtype !== TYPE.CNAME && qtype !== TYPE.ANY) return this.chase(node, cname[0]!, qtype);
    let rrs = node.records(qtype);
    // The apex SOA is synthesised: its serial follows every change.
    if (node.name === this.zone && (qtype === TYPE.SOA || qtype === TYPE.ANY)) rrs = [this.soa(KIND_ZONE), ...rrs];
    if (rrs.length === 0) return this.negative(kind, qlen, RCODE.NOERROR);
    const additional: RR[] = [];
    if (qtype === TYPE.SRV || qtype === TYPE.NS) {
      const seen = new Set<string>();
      for (const r of rrs) {
        if ((r.type !== TYPE.SRV && r.type !== TYPE.NS) || !('target' in r)) continue;
        if (seen.has(r.target)) continue;
        seen.add(r.target);
        const t = this.node(lowerName(r.target));
        if (t) additional.push(...t.records(TYPE.A), ...t.records(TYPE.AAAA));
      }
    }
    return buildTemplate(node.name, qtype, RCODE.NOERROR, true, rrs, [], additional);
  }

  /** Follows an in-zone CNAME chain (ExternalName pointing into the zone), or hands off to the forwarder. */
  private chase(node: NameNode, first: RR, qtype: number): Template | ExternalChase {
    const chain: RR[] = [first];
    let target = (first as { target: string }).target;
    for (let i = 0; i < MAX_CHAIN; i++) {
      const inZone = target === this.zone || target.endsWith('.' + this.zone);
      if (!inZone) return { chase: true, cnames: chain, target };
      const next = this.node(lowerName(target));
      if (!next) {
        const w = new MsgWriter(node.name, qtype);
        for (const c of chain) w.add(c);
        w.add(this.soa(KIND_ZONE));
        return w.finish({ an: chain.length, ns: 1, ar: 0 }, RCODE.NXDOMAIN, true);
      }
      const c = next.records(TYPE.CNAME);
      if (c.length) {
        chain.push(c[0]!);
        target = (c[0] as { target: string }).target;
        continue;
      }
      const rrs = next.records(qtype);
      return buildTemplate(node.name, qtype, RCODE.NOERROR, true, [...chain, ...rrs], rrs.length ? [] : [this.soa(KIND_ZONE)], []);
    }
    // A loop or an overlong chain: answer what we have.
    return buildTemplate(node.name, qtype, RCODE.SERVFAIL, true, chain, [], []);
  }

  /** `a-b-c-d.<ns>.pod.<zone>` in CoreDNS's `pods insecure` mode: the dashed address, for existing namespaces. */
  private podAnswer(q: QueryInfo): Template | null {
    const name = wireToName(q.nameOrig);
    const rest = name.slice(0, name.length - this.zone.length - 1);
    const labels = rest.split('.');
    if (labels.length !== 3 || labels[2] !== 'pod' || !this.namespaces.has(labels[1]!)) return null;
    const d = labels[0]!;
    let ip: string | null = null;
    if (/^\d{1,3}(-\d{1,3}){3}$/.test(d) && isIPv4(d.replace(/-/g, '.'))) ip = d.replace(/-/g, '.');
    else if (d.includes('-') && isIPv6(d.replace(/-/g, ':'))) ip = d.replace(/-/g, ':');
    if (!ip) return null;
    const rr = addrRR(name, ip, this.ttl);
    if (q.qtype !== rr.type && q.qtype !== TYPE.ANY) return this.negative(KIND_ZONE, q.nameOrig.length, RCODE.NOERROR);
    return buildTemplate(name, q.qtype, RCODE.NOERROR, true, [rr], [], []);
  }

  /**
   * Policy-aware DNS: the Service a query name belongs to, from the name's shape alone:
   * `<svc>.<ns>.svc.<zone>` and every name below it (SRV names, headless endpoint
   * names, empty non-terminals such as `_tcp.<svc>...`, names that do not exist).
   * Null for anything else.
   */
  serviceOf(q: Query): { namespace: string; name: string } | null {
    const l = q.labelCount;
    const z = this.zoneLabels;
    if (l < z + 3 || !q.labelIs(l - z - 1, 'svc') || !q.endsWithName(this.zoneWire)) return null;
    return { namespace: q.labelText(l - z - 2), name: q.labelText(l - z - 3) };
  }

  /** The Service a record target such as `web.prod.svc.<zone>` or `host.web.prod.svc.<zone>` belongs to. */
  serviceOfName(name: string): { namespace: string; name: string } | null {
    const suffix = `.svc.${this.zone}`;
    if (!name.endsWith(suffix)) return null;
    const labels = name.slice(0, -suffix.length).split('.');
    if (labels.length < 2) return null;
    return { namespace: labels[labels.length - 1]!, name: labels[labels.length - 2]! };
  }

  /**
   * Policy-aware DNS: for a reverse name that exists in the index, the Services its PTR
   * records name (a ClusterIP's Service, a headless endpoint's Service); null when the
   * name is not a reverse name of the index.
   */
  ptrServices(q: Query): { namespace: string; name: string }[] | null {
    const kind = this.kindOf(q);
    if (kind !== KIND_V4 && kind !== KIND_V6) return null;
    const node = this.find(q);
    if (!node) return null;
    const out: { namespace: string; name: string }[] = [];
    for (const r of node.records(TYPE.PTR)) {
      const s = 'target' in r ? this.serviceOfName(r.target) : null;
      if (s) out.push(s);
    }
    return out;
  }

  /** The NXDOMAIN a hidden name gets: the same bytes as for a name that does not exist. */
  nxdomain(q: Query): Template {
    const kind = this.kindOf(q);
    return this.negative(kind < 0 ? KIND_ZONE : kind, q.nameLen, RCODE.NXDOMAIN);
  }

  /** Records at a name (tests, debugging). */
  lookupName(name: string, type: number): RR[] {
    return this.node(lowerName(name))?.records(type) ?? [];
  }

  /** Number of names in the index. */
  get size(): number {
    return this.nameCount;
  }

  /** Synthesises the SOA-only negative answer for an ExternalName chase that failed. */
  soaRecord(): RR {
    return this.soa(KIND_ZONE);
  }
}

const REV4_WIRE = nameToWire(REV4);
const REV6_WIRE = nameToWire(REV6);

/** A name of exactly `qlen` wire bytes ending in `owner` (for length-keyed negative templates). */
function placeholder(qlen: number, owner: string): string {
  const ownerLen = owner === '' ? 1 : owner.length + 2;
  let left = qlen - ownerLen; // bytes of labels (each: length byte + 1..63 characters)
  const labels: string[] = [];
  while (left > 0) {
    // Never leave a remainder of 1 byte: no label is that short.
    const take = left <= 64 ? left : left - 64 === 1 ? 63 : 64;
    labels.push('x'.repeat(take - 1));
    left -= take;
  }
  return [...labels, owner].join('.');
}

/** A dotted name as the index keys it: lowercase, no trailing dot (the same string when it already is). */
function lowerName(n: string): string {
  let s = n.endsWith('.') ? n.replace(/\.+$/, '') : n;
  const l = s.toLowerCase();
  if (l !== s) s = l;
  return s;
}

function validName(n: string): boolean {
  try {
    keyOfName(n);
    return true;
  } catch {
    return false;
  }
}
