// The proxy's desired nftables state (pure). One table per IP family, `ip
// skiff-proxy` and `ip6 skiff-proxy` (as kube-proxy does): the families' maps have
// different key types anyway, each family can fail and resync alone, and a node
// without IPv6 services never needs the ip6 table.
//
//   nat-prerouting / nat-output (nat, dstnat)    jump services
//   nat-postrouting (nat, srcnat)                jump masquerading
//   filter-input / filter-forward / filter-output (filter, priority filter - 10)
//                                                new connections to services without
//                                                usable endpoints: reject (or drop)
//   services            sources outside the cluster CIDR to a ClusterIP port in
//                       @cluster-ips: masquerade mark; then
//                       daddr . l4proto . dport vmap @service-ips
//                       <node address> l4proto . dport vmap @service-nodeports
//   service-H-ns/name/proto/port     per service port, cluster traffic: ONE rule
//                       `meta l4proto P dnat to numgen inc|random mod N offset B map @endpoints-P-b`
//                       exact round-robin (default) or uniform random; with session
//                       affinity, lookups first and a cascade of `numgen ... goto
//                       endpoint_k` instead
//   endpoints-P-b       (P = tcp|udp|sctp, b = bucket 0..255) index -> endpoint
//                       address . port, shared by the service ports whose slot falls in
//                       bucket b: a port owns the indexes B..B+N-1 (B = slot *
//                       SLOT_SIZE; external traffic balancing over other endpoints has
//                       a slot of its own)
//   external-H-...      per service port, external traffic (NodePort, externalIPs, LB):
//                       eTP Cluster: mark + the service chain; eTP Local: pods and the
//                       node go to the service chain, others to local endpoints only,
//                       unmasqueraded (client IP preserved)
//   endpoint-H-...__IP/port   session affinity only: affinity refresh, DNAT
//   affinity-H-...__IP/port   set of client IPs (flags dynamic,timeout) per endpoint
//   masquerading        hairpin (saddr . daddr in @hairpin: an endpoint reaching itself
//                       after DNAT) and packets carrying the mark are masqueraded
//   hairpin             set of `EP . EP` for every local endpoint programmed
//   reject-chain        ICMP port unreachable
//
// NodePorts answer on the configured node IPs (`nodeport-ips`), or when none are
// configured on every local address except loopback (`fib daddr type local`,
// daddr != 127.0.0.0/8 / ::1): NodePorts never answer on 127.0.0.1.
//
// Services whose (internal or external) traffic has nowhere to go are listed in
// `no-endpoint-services` / `no-endpoint-nodeports`: reject when the service has no
// usable endpoint at all, drop when a Local traffic policy excludes the endpoints it
// has (kube-proxy does the same).
import { hashedName, type ElementObj, type Expr, type Literal, type MapObj, type NftObject, type SetObj, type VerdictExpr } from '../os/nft.js';
import type { EndpointInfo, IPFamily, ServicePortState } from './model.js';
import { balancedEndpoints, selectEndpoints } from './model.js';

export const PROXY_TABLE = 'skiff-proxy';

/**
 * The service dispatch (the nat base chains, `service-ips`, `service-nodeports`,
 * `cluster-ips` and every service's chains, sets and endpoint maps) is spread over
 * PROXY_SHARDS tables `skiff-proxy-<k>`, a service to the table its key hashes to; the
 * rest (filter chains, masquerading, hairpin, no-endpoint maps) is the main table
 * `skiff-proxy`. The kernel re-validates every chain reachable from a table's base
 * chains on each commit that adds a NAT rule or a goto element to that table, and only
 * that table: adding one service to a table of 10,000 walked all 10,000 service chains
 * twice (once per nat hook), 17-22 ms. A packet that no service matches crosses one nat
 * chain per shard (a lookup or two each), on the first packet of a connection only.
 */
export const PROXY_SHARDS = 8;
/** The table index of the main table (shards are 0 .. PROXY_SHARDS-1). */
export const MAIN_TABLE = -1;
export function proxyTableName(table: number): string {
  return table === MAIN_TABLE ? PROXY_TABLE : `${PROXY_TABLE}-${table}`;
}
/** Every table index: the main table, then the shards. */
export const PROXY_TABLES: readonly number[] = [MAIN_TABLE, ...Array.from({ length: PROXY_SHARDS }, (_, i) => i)];
/** The shard of a service (by its key, namespace/name): FNV-1a. */
export function shardOf(svcKey: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < svcKey.length; i++) h = Math.imul(h ^ svcKey.charCodeAt(i), 0x01000193);
  return (h >>> 0) % PROXY_SHARDS;
}
/** The table an element of `set` contributed by service `svcKey` lives in. */
export function elementTable(set: string, svcKey: string): number {
  return set === 'service-ips' || set === 'service-nodeports' || set === 'cluster-ips' || set.startsWith('endpoints-') ? shardOf(svcKey) : MAIN_TABLE;
}
/** The packet mark bit meaning "masquerade in postrouting" (kube-proxy uses the same bit). */
export const MASQ_MARK = 0x4000;

export interface RulesetConfig {
  /** Pod network(s); sources outside them are masqueraded when they reach a cluster IP. */
  clusterCIDRs: string[];
  balancing: 'round-robin' | 'random';
  /** Masquerade all service traffic. */
  masqueradeAll?: boolean;
  /** Addresses NodePorts answer on; empty = every local address except loopback. */
  nodeIPs: string[];
}

/** `endpoints-<proto>-<bucket>`: see endpointMapName. */
export type EndpointMap = `endpoints-${'tcp' | 'udp' | 'sctp'}-${number}`;

/** An element a service contributes: an ElementObj of one of the proxy's sets and maps, added to transactions as it is. */
export interface FragElement extends ElementObj {
  /** A verdict map, an endpoint map (value: address . port), or the `hairpin` / `cluster-ips` set (no value). */
  set: 'service-ips' | 'service-nodeports' | 'no-endpoint-services' | 'no-endpoint-nodeports' | 'hairpin' | 'cluster-ips' | EndpointMap;
  key: Literal[];
  value?: VerdictExpr | Literal[];
}

/** What one service contributes to a family's table. Chains, sets and maps are owned by the service. */
export interface Fragment {
  chains: Map<string, (readonly Expr[])[]>;
  sets: Map<string, SetObj>;
  elements: FragElement[];
  /** The endpoint-map slots the fragment holds (identities, see EndpointSlots). */
  slots: string[];
}

/** Indexes per slot in the endpoint maps: a service port balances over at most this many endpoints through a map. */
export const SLOT_SIZE = 4096;
const SLOT_COUNT = 1 << 20;

/**
 * Assigns each balancing service port a slot of SLOT_SIZE indexes in its protocol's
 * endpoint map. A slot is derived from a hash of the identity (so a port usually keeps
 * the same indexes whatever order services arrive in), probing linearly on collision.
 * It is held until released, when the service port goes away.
 */
export class EndpointSlots {
  private readonly owner = new Map<number, string>();
  private readonly slotOf = new Map<string, number>();

  get(id: string): number {
    const have = this.slotOf.get(id);
    if (have !== undefined) return have;
    if (this.owner.size >= SLOT_COUNT) throw new Error(`endpoint map slots exhausted (${SLOT_COUNT} service ports)`);
    let h = 0x811c9dc5;
    for (let i = 0; i < id.length; i++) h = Math.imul(h ^ id.charCodeAt(i), 0x01000193);
    let slot = (h >>> 0) % SLOT_COUNT;
    while (this.owner.has(slot)) slot = (slot + 1) % SLOT_COUNT;
    this.owner.set(slot, id);
    this.slotOf.set(id, slot);
    return slot;
  }

  release(id: string): void {
    const s = this.slotOf.get(id);
    if (s === undefined) return;
    this.slotOf.delete(id);
    this.owner.delete(s);
  }

  get size(): number {
    return this.slotOf.size;
  }
}

const fam = (f: IPFamily) => (f === 4 ? 'ip' : 'ip6');
const addrType = (f: IPFamily) => (f === 4 ? 'ipv4_addr' : 'ipv6_addr');
const saddr = (f: IPFamily) => (f === 4 ? 'ip saddr' : 'ip6 saddr');
const daddr = (f: IPFamily) => (f === 4 ? 'ip daddr' : 'ip6 daddr');
const isV4 = (s: string) => !s.includes(':');
const ofFamily = (list: readonly string[], f: IPFamily) => list.filter((x) => isV4(x) === (f === 4));

export const MAP_TYPES: Record<Exclude<FragElement['set'], 'hairpin' | 'cluster-ips' | EndpointMap>, { type: ('ipv4_addr' | 'ipv6_addr' | 'inet_proto' | 'inet_service')[]; withAddr: boolean }> = {
  'service-ips': { type: ['inet_proto', 'inet_service'], withAddr: true },
  'no-endpoint-services': { type: ['inet_proto', 'inet_service'], withAddr: true },
  'service-nodeports': { type: ['inet_proto', 'inet_service'], withAddr: false },
  'no-endpoint-nodeports': { type: ['inet_proto', 'inet_service'], withAddr: false },
};

/** The verdict maps: all of them, or those of the main table or of a shard. */
export function mapObjects(f: IPFamily, which: 'all' | 'main' | 'shard' = 'all'): MapObj[] {
  const inShard = (n: string) => n.startsWith('service-');
  return (Object.keys(MAP_TYPES) as (keyof typeof MAP_TYPES)[]).filter((n) => which === 'all' || inShard(n) === (which === 'shard')).map((name) => ({
    kind: 'map',
    name,
    type: MAP_TYPES[name].withAddr ? [addrType(f), ...MAP_TYPES[name].type] : [...MAP_TYPES[name].type],
    value: 'verdict',
  }));
}

/**
 * `EP . EP` for every endpoint on this node: after DNAT, a packet whose source and
 * destination are the same endpoint is a pod reaching itself through a service
 * (hairpin), and must be masqueraded so the reply comes back through the bridge. The
 * DNAT happens on the client's node, so a hairpin endpoint is always a local one:
 * remote endpoints need no element (endpoints without a nodeName get one, to be safe).
 * One set element per local endpoint IP replaces a chain per endpoint that set a mark.
 */
export function hairpinSet(f: IPFamily): SetObj {
  return { kind: 'set', name: 'hairpin', type: [addrType(f), addrType(f)], comment: 'endpoint . endpoint: hairpin traffic to masquerade' };
}

/**
 * ClusterIP . protocol . port of every service port with endpoints: the `services`
 * chain marks traffic to them from outside the cluster CIDR for masquerading. One set
 * lookup there, instead of a rule in each service chain: the kernel re-validates every
 * rule of every service chain on each commit that adds a service, so each rule a
 * service chain does not have makes that commit cheaper.
 */
export function clusterIPSet(f: IPFamily): SetObj {
  return { kind: 'set', name: 'cluster-ips', type: [addrType(f), 'inet_proto', 'inet_service'], comment: 'ClusterIP ports: masquerade sources outside the cluster CIDR' };
}

/** The condition "the destination is a NodePort address". */
function nodePortMatch(f: IPFamily, cfg: RulesetConfig): Expr[] {
  if (ofFamily(cfg.nodeIPs, f).length > 0) return [{ match: daddr(f), value: { set: 'nodeport-ips' } }];
  return [
    { fib: 'daddr', type: 'local' },
    { match: daddr(f), op: '!=', value: f === 4 ? '127.0.0.0/8' : '::1' },
  ];
}

/** The main table: filter chains, masquerading, the hairpin set and the no-endpoint maps. */
export function staticObjects(f: IPFamily, cfg: RulesetConfig): NftObject[] {
  const objs: NftObject[] = [{ kind: 'table', comment: 'skiff service proxy; managed by the skiff agent' }];
  objs.push(
    baseChain('nat-postrouting', 'nat', 'postrouting', 'srcnat'),
    baseChain('filter-input', 'filter', 'input', 'filter - 10'),
    baseChain('filter-forward', 'filter', 'forward', 'filter - 10'),
    baseChain('filter-output', 'filter', 'output', 'filter - 10'),
  );
  for (const name of ['masquerading', 'service-endpoints-check', 'nodeport-endpoints-check', 'reject-chain']) objs.push({ kind: 'chain', name });
  objs.push(...mapObjects(f, 'main'), hairpinSet(f), ...nodePortIPs(f, cfg));
  const svcKey = [daddr(f), 'meta l4proto', 'th dport'] as const;
  objs.push(
    rule('nat-postrouting', { jump: 'masquerading' }),
    rule('filter-input', { ctState: ['new'] }, { jump: 'service-endpoints-check' }),
    rule('filter-input', { ctState: ['new'] }, { jump: 'nodeport-endpoints-check' }),
    rule('filter-forward', { ctState: ['new'] }, { jump: 'service-endpoints-check' }),
    rule('filter-output', { ctState: ['new'] }, { jump: 'service-endpoints-check' }),
    rule('filter-output', { ctState: ['new'] }, { jump: 'nodeport-endpoints-check' }),
    rule('masquerading', { match: [saddr(f), daddr(f)], value: { set: 'hairpin' } }, { masquerade: true, fullyRandom: true }),
    rule('masquerading', { markMask: MASQ_MARK, value: 0 }, { verdict: 'return' }),
    rule('masquerading', { setMark: MASQ_MARK, how: 'xor' }),
    rule('masquerading', { masquerade: true, fullyRandom: true }),
    rule('service-endpoints-check', { vmap: { set: 'no-endpoint-services' }, key: svcKey }),
    rule('nodeport-endpoints-check', ...nodePortMatch(f, cfg), { vmap: { set: 'no-endpoint-nodeports' }, key: ['meta l4proto', 'th dport'] }),
    rule('reject-chain', { reject: f === 4 ? 'icmp port-unreachable' : 'icmpv6 port-unreachable' }),
  );
  return objs;
}

/** A shard table's skeleton: the nat base chains and the dispatch of its services (see PROXY_SHARDS). */
export function shardStaticObjects(f: IPFamily, cfg: RulesetConfig): NftObject[] {
  const objs: NftObject[] = [{ kind: 'table', comment: 'skiff service proxy (a shard of the services); managed by the skiff agent' }];
  objs.push(
    baseChain('nat-prerouting', 'nat', 'prerouting', 'dstnat'),
    // -100 is dstnat; nft 1.0.x accepts the name only on prerouting.
    baseChain('nat-output', 'nat', 'output', -100),
    { kind: 'chain', name: 'services' },
    ...mapObjects(f, 'shard'),
    clusterIPSet(f),
    ...nodePortIPs(f, cfg),
  );
  const svcKey = [daddr(f), 'meta l4proto', 'th dport'] as const;
  const cidrs = ofFamily(cfg.clusterCIDRs, f);
  if (!cfg.masqueradeAll && cidrs.length > 0) objs.push(rule('services', { match: saddr(f), op: '!=', value: cidrs }, { match: svcKey, value: { set: 'cluster-ips' } }, MARK_MASQ));
  objs.push(
    rule('nat-prerouting', { jump: 'services' }),
    rule('nat-output', { jump: 'services' }),
    rule('services', { vmap: { set: 'service-ips' }, key: svcKey }),
    rule('services', ...nodePortMatch(f, cfg), { vmap: { set: 'service-nodeports' }, key: ['meta l4proto', 'th dport'] }),
  );
  return objs;
}

const baseChain = (name: string, type: 'nat' | 'filter', hook: 'prerouting' | 'output' | 'postrouting' | 'input' | 'forward', priority: string | number): NftObject => ({ kind: 'chain', name, type, hook, priority });
const rule = (chain: string, ...rule: Expr[]): NftObject => ({ kind: 'rule', chain, rule });

/** The `nodeport-ips` set and its elements, when NodePorts answer on configured addresses only. */
function nodePortIPs(f: IPFamily, cfg: RulesetConfig): NftObject[] {
  const nodeIPs = ofFamily(cfg.nodeIPs, f);
  if (nodeIPs.length === 0) return [];
  return [{ kind: 'set', name: 'nodeport-ips', type: [addrType(f)], comment: 'addresses NodePorts answer on' }, ...nodeIPs.map((ip): NftObject => ({ kind: 'element', set: 'nodeport-ips', key: [ip] }))];
}

/** kube-proxy-style readable identity of a service port: ns/name/proto/portname. */
function portIdent(sp: ServicePortState): string {
  const i = sp.info;
  return `${i.namespace}/${i.name}/${i.protocol.toLowerCase()}/${i.portName}`;
}

export function serviceChainName(sp: ServicePortState): string {
  return hashedName('service', `${sp.info.family}/${portIdent(sp)}`, portIdent(sp));
}
export function externalChainName(sp: ServicePortState): string {
  return hashedName('external', `${sp.info.family}/${portIdent(sp)}`, portIdent(sp));
}
export function endpointChainName(sp: ServicePortState, ep: EndpointInfo): string {
  const id = `${portIdent(sp)}__${ep.ip}/${ep.port}`;
  return hashedName('endpoint', `${sp.info.family}/${id}`, id);
}
/**
 * Endpoint maps are shared by the service ports of one protocol, in ENDPOINT_BUCKETS
 * buckets (by slot). Two kernel costs set the number:
 *  - binding a map to a rule in a new chain walks every element of the map, so one map
 *    for all services made a full sync at 10,000 services take 244 s in the kernel;
 *  - the kernel finds a named set by walking the table's list of sets, so one map per
 *    service port made it 14 s.
 * With buckets both walks stay short (about 10,000 / 256 ports per map).
 */
export const ENDPOINT_BUCKETS = 256;
export function endpointMapName(proto: string, slot: number): EndpointMap {
  const p = proto === 'udp' ? 'udp' : proto === 'sctp' ? 'sctp' : 'tcp';
  return `endpoints-${p}-${slot % ENDPOINT_BUCKETS}`;
}

/** The definition of an endpoint map (numgen index -> address . port); maps are created when first used. */
export function endpointMap(f: IPFamily, name: string): MapObj | undefined {
  const m = /^endpoints-(tcp|udp|sctp)-(\d+)$/.exec(name);
  if (!m) return undefined;
  return { kind: 'map', name, type: ['numgen'], value: [addrType(f), 'inet_service'], portProto: m[1] as 'tcp' | 'udp' | 'sctp' };
}

/** The affinity set's name includes the timeout, so a timeout change makes a new set instead of redefining one in use. */
export function affinitySetName(sp: ServicePortState, ep: EndpointInfo): string {
  const id = `${portIdent(sp)}__${ep.ip}/${ep.port}`;
  return hashedName('affinity', `${sp.info.family}/${id}/${sp.info.affinityTimeout}`, id);
}

/**
 * The balancing rules over `eps`. Without session affinity: one rule, `dnat to numgen
 * inc|random mod N offset B map @endpoints-P`, and the elements B+k -> endpoint k of
 * the protocol's shared endpoint map. An endpoint replaced without a change in their
 * number rewrites only map elements; the kernel re-validates the whole table (every
 * chain reachable from the base chains) on each commit that adds a rule with a verdict
 * or a NAT statement, but not for elements of a data map. The maps are shared because
 * the kernel finds a named set by walking the table's list of sets: a map per service
 * made a full sync at 10,000 services quadratic (14 s in the kernel). `numgen inc` is
 * one counter per expression, so new connections take the endpoints in exact rotation
 * (0, 1, ..., N-1, 0, ...); with `random` each has probability 1/N.
 *
 * With affinity, sticky clients are looked up first, and a cascade `numgen inc mod N-k
 * 0 goto endpoint_k` goes to per-endpoint chains, which refresh the client's entry.
 * (A cascade, not `numgen ... vmap { ... }`: each anonymous verdict map is a set the
 * kernel walks when it checks any jump for loops, which made full syncs quadratic:
 * 48 s for 4,000 services x 10 endpoints.)
 */
function balanceRules(sp: ServicePortState, eps: EndpointInfo[], cfg: RulesetConfig, frag: Fragment, slots: EndpointSlots, which: 'cluster' | 'external'): Expr[][] {
  const f = sp.info.family;
  const rules: Expr[][] = [];
  const mode = cfg.balancing === 'random' ? 'random' : 'inc';
  const proto = sp.info.protocol.toLowerCase();
  if (sp.info.affinityTimeout === undefined && eps.length <= SLOT_SIZE) {
    const id = `${f}/${portIdent(sp)}/${which}`;
    const slot = slots.get(id);
    const offset = slot * SLOT_SIZE;
    const map = endpointMapName(proto, slot);
    frag.slots.push(id);
    eps.forEach((ep, k) => frag.elements.push({ kind: 'element', set: map, key: [offset + k], value: [ep.ip, ep.port] }));
    rules.push([{ match: 'meta l4proto', value: proto }, { dnatNumgen: mode, mod: eps.length, offset, map }]);
    return rules;
  }
  if (sp.info.affinityTimeout === undefined) {
    // More endpoints than a slot holds: a cascade of DNAT rules (see above).
    eps.forEach((ep, k) => {
      const pick: Expr[] = k < eps.length - 1 ? [{ numgenMatch: mode, mod: eps.length - k, value: 0 }] : [];
      rules.push([{ match: 'meta l4proto', value: proto }, ...pick, { dnat: ep.ip, port: ep.port }]);
    });
    return rules;
  }
  for (const ep of eps) rules.push([{ match: saddr(f), value: { set: affinitySetName(sp, ep) } }, { goto: endpointChainName(sp, ep) }]);
  eps.forEach((ep, k) => {
    const pick: Expr[] = k < eps.length - 1 ? [{ numgenMatch: mode, mod: eps.length - k, value: 0 }] : [];
    rules.push([...pick, { goto: endpointChainName(sp, ep) }]);
  });
  return rules;
}

/** Marks the packet for masquerading in postrouting (inline: a jump per service would be validated per service). */
const MARK_MASQ: Expr = { setMark: MASQ_MARK, how: 'or' };

/** The chains, sets and map elements of one service (all its ports of family `f`). */
export function serviceFragment(f: IPFamily, cfg: RulesetConfig, ports: readonly ServicePortState[], slots: EndpointSlots): Fragment {
  const frag: Fragment = { chains: new Map(), sets: new Map(), elements: [], slots: [] };
  const cidrs = ofFamily(cfg.clusterCIDRs, f);
  for (const sp of ports) {
    const i = sp.info;
    if (i.family !== f) continue;
    const proto = i.protocol.toLowerCase();
    const comment = `${i.namespace}/${i.name}${i.portName ? ':' + i.portName : ''}`;
    const sel = selectEndpoints(sp);
    const svcChain = serviceChainName(sp);
    const noEndpoints: VerdictExpr = sel.any ? { verdict: 'drop' } : { goto: 'reject-chain' };

    // Cluster traffic.
    if (sel.cluster.length > 0) {
      const rules: Expr[][] = [];
      if (cfg.masqueradeAll) rules.push([MARK_MASQ]);
      else if (cidrs.length > 0) frag.elements.push({ kind: 'element', set: 'cluster-ips', key: [i.clusterIP, proto, i.port] });
      rules.push(...balanceRules(sp, sel.cluster, cfg, frag, slots, 'cluster'));
      frag.chains.set(svcChain, rules);
      frag.elements.push({ kind: 'element', set: 'service-ips', key: [i.clusterIP, proto, i.port], value: { goto: svcChain }, comment });
    } else {
      frag.elements.push({ kind: 'element', set: 'no-endpoint-services', key: [i.clusterIP, proto, i.port], value: noEndpoints, comment });
    }

    // External traffic: NodePort, external IPs, load-balancer IPs.
    const externalDests = [...i.externalIPs, ...i.loadBalancerIPs];
    const hasExternal = i.nodePort !== undefined || externalDests.length > 0;
    if (hasExternal) {
      const extChain = externalChainName(sp);
      if (sel.external.length > 0) {
        const rules: Expr[][] = [];
        if (!i.externalLocal) {
          rules.push([MARK_MASQ]);
          if (sel.cluster.length > 0) rules.push([{ goto: svcChain }]);
          else rules.push(...balanceRules(sp, sel.external, cfg, frag, slots, 'external'));
        } else {
          // Pods and the node itself are not "external": they use all endpoints.
          if (sel.cluster.length > 0 && !i.internalLocal) {
            if (cidrs.length > 0) rules.push([{ match: saddr(f), value: cidrs }, { goto: svcChain }]);
            rules.push([{ fib: 'saddr', type: 'local' }, MARK_MASQ]);
            rules.push([{ fib: 'saddr', type: 'local' }, { goto: svcChain }]);
          }
          rules.push(...balanceRules(sp, sel.external, cfg, frag, slots, 'external'));
        }
        frag.chains.set(extChain, rules);
        for (const ip of externalDests) frag.elements.push({ kind: 'element', set: 'service-ips', key: [ip, proto, i.port], value: { goto: extChain }, comment: `${comment} external` });
        if (i.nodePort !== undefined) frag.elements.push({ kind: 'element', set: 'service-nodeports', key: [proto, i.nodePort], value: { goto: extChain }, comment: `${comment} nodePort` });
      } else {
        for (const ip of externalDests) frag.elements.push({ kind: 'element', set: 'no-endpoint-services', key: [ip, proto, i.port], value: noEndpoints, comment: `${comment} external` });
        if (i.nodePort !== undefined) frag.elements.push({ kind: 'element', set: 'no-endpoint-nodeports', key: [proto, i.nodePort], value: noEndpoints, comment: `${comment} nodePort` });
      }
    }

    // Hairpin elements for the endpoints on this node (and those whose node is not
    // known): a pod that reaches itself through a service was DNATed on its own node,
    // so only local endpoints can hairpin here. Endpoint chains (and affinity sets)
    // only with session affinity.
    // Endpoint chains exist only for endpoints some chain balances to.
    for (const ep of balancedEndpoints(sp, sel)) {
      if (ep.local || ep.nodeName === undefined) frag.elements.push({ kind: 'element', set: 'hairpin', key: [ep.ip, ep.ip] });
      if (i.affinityTimeout === undefined) continue;
      const set = affinitySetName(sp, ep);
      frag.sets.set(set, { kind: 'set', name: set, type: [addrType(f)], flags: ['dynamic', 'timeout'], timeout: i.affinityTimeout });
      frag.chains.set(endpointChainName(sp, ep), [[{ update: set, key: [saddr(f)] }], [{ match: 'meta l4proto', value: proto }, { dnat: ep.ip, port: ep.port }]]);
    }
  }
  return frag;
}

export const tableFamily = fam;
