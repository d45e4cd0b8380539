// The NetworkPolicy compiler (pure): the cluster's policy state -> the nftables
// ruleset of ONE node, in skiff's own table `inet skiff-policy`. Ingress is
// enforced at the destination pod's node, egress at the source pod's node, so a
// node's ruleset only holds chains for its own pods; the peer sets hold addresses
// from the whole cluster.
//
// Shape (docs/policy.md, "The nftables ruleset"):
//
//   forward (filter, hook forward, priority 0: after service DNAT at -100)
//     ct state established,related accept
//     meta l4proto icmpv6 ct state untracked accept  (IPv6 only: neighbour discovery)
//     ip  saddr vmap @egress4      -> jump to the source pod's egress chain
//     ip6 saddr vmap @egress6
//     ip  daddr vmap @ingress4     -> jump to the destination pod's ingress chain
//     ip6 daddr vmap @ingress6
//   input (filter, hook input, priority 0): a pod talking to the node itself
//     ct state established,related accept
//     ip saddr vmap @egress4 / ip6 saddr vmap @egress6
//   (no output chain: traffic from the node itself is never filtered.)
//
//   e-HASH-... / i-HASH-... : one chain per distinct allow list (pods isolated by
//   the same policies with the same named-port resolution share one chain):
//     ct state invalid drop
//     [ip saddr @peerset] [meta l4proto . th dport @ports] accept|return   (one per allow entry)
//     counter drop                                                         (the deny)
//   Egress chains `return` on allow (so the ingress check still runs), ingress
//   chains `accept`.
//
// Sets: peer pod sets are named by their identity (policy, direction, rule, peer,
// family), so a label change only moves elements; ipBlock sets (cidr, except) and
// port sets are named by their content. Every name is `hashedName(...)` and every
// literal goes through the builder's checks.
//
// New pods (docs/policy.md, "New pods"): right after `ct state established,related
// accept`, the forward chain drops packets from or to an address of this node's pod
// CIDRs (set podnet4/6) that is not a programmed pod (set known4/6). A pod the CNI
// plugin just created is therefore cut off until the agent has seen it and put its
// rules in place, in the same transaction that adds it to `known`. The guard is
// armed (podnet non-empty) only while the cluster has at least one valid policy, so
// a cluster without policies never delays a new pod.
import { createHash } from 'node:crypto';
import {
  Transaction,
  hashedName,
  keyString,
  type ChainObj,
  type ElementObj,
  type Expr,
  type KeyType,
  type MapObj,
  type NftObject,
  type RuleObj,
  type Selector,
  type SetObj,
  type VerdictExpr,
} from '../os/nft.js';
import { bigIntToIp, ipToBigInt, type Family } from '../util/ip.js';
import { effectiveOf, effectiveSignature, peerMembers, peerSource, type AllowEntry, type CompiledPeer, type CompiledPolicy, type Direction, type PolicyState, type PortRange } from './evaluator.js';

export const POLICY_TABLE = 'skiff-policy';
/** Priority of the policy table's filter chains: after dstnat (-100), so daddr is the DNATed backend. */
export const POLICY_PRIORITY = 0;

export type DenyAction = 'drop' | 'reject';

export interface CompileOptions {
  /** This node: its pods (spec.nodeName) are the ones enforced for. */
  nodeName: string;
  /** IP families to program; default: 4, plus 6 when any pod has an IPv6 address. */
  families?: Family[];
  /** What a denied packet gets (default drop; reject = TCP reset / ICMP port unreachable). */
  denyAction?: DenyAction;
  /**
   * This node's pod CIDRs (Node spec.podCIDRs): addresses in them that are not a
   * known pod are dropped while any policy exists (new-pod isolation). Empty: off.
   */
  podCIDRs?: readonly string[];
  /**
   * Carried from one compile to the next (the reconciler keeps one): the chain of an
   * isolated (pod, direction) whose effectiveSignature did not change is reused with
   * its sets instead of being recomputed. The signature is made of immutable objects'
   * identities (compiled policies, peer member lists), so the result is the same as
   * without a cache whatever states are compiled; it only hits across states built
   * with `prev` (PolicyState.from), which keep unaffected member lists.
   */
  cache?: CompileCache;
  /**
   * Records what every generated set and chain name stands for and reports any name
   * asked for with two different contents in `PolicyModel.nameConflicts` (tests:
   * names must be injective; costs a JSON string per name, so off by default).
   */
  checkNames?: boolean;
}

interface CachedChain {
  name: string;
  chain: ModelChain;
  /** The sets its rules reference (pod peer sets: see peers). */
  sets: ModelSet[];
  /** Its pod peer sets, rebuilt from the current member lists on every reuse. */
  peers: { obj: SetObj; family: Family; policy: CompiledPolicy; peer: CompiledPeer }[];
}

/** Per-(pod, direction) chains of the previous compile, by effectiveSignature. */
export class CompileCache {
  /** @internal */ scope = '';
  /** @internal */ chains = new Map<string, CachedChain>();
  /** Hits and misses of the last compile (tests, benchmark). */
  hits = 0;
  misses = 0;
}

/** A regular (content-addressed) chain of the model. */
export interface ModelChain {
  obj: ChainObj;
  rules: RuleObj[];
  /** Hash of the rules (equal names imply equal content; kept for checks). */
  hash: string;
  direction: Direction;
  /** The policies whose union this chain enforces (metrics label). */
  policies: string[];
}

/** A named set or map of the model, with its elements by canonical key. */
export interface ModelSet {
  obj: SetObj | MapObj;
  elements: Map<string, ElementObj>;
  /** Identity of the elements' source (a peer's pod list): equal tokens, equal elements. */
  token?: object;
  /** Named by its content (port and ipBlock sets): the same name always holds the same elements. */
  byContent?: true;
}

/** Peer-set elements by source pod list and set name, reused while the list is the same array. */
const peerElementsCache = new WeakMap<readonly string[], Map<string, Map<string, ElementObj>>>();

export interface LocalPod {
  key: string;
  ips: string[];
  ingress?: string;
  egress?: string;
}

export interface PolicyModel {
  families: Family[];
  denyAction: DenyAction;
  /** Base chains with their rules, in order (static for given families/deny action). */
  base: { obj: ChainObj; rules: RuleObj[] }[];
  /** Hash of the base part: when it changes, the reconciler rebuilds. */
  baseHash: string;
  chains: Map<string, ModelChain>;
  sets: Map<string, ModelSet>;
  /** This node's pods (running, not hostNetwork, with an IP), by key. */
  localPods: Map<string, LocalPod>;
  /** Namespaces with at least one valid policy (sorted). */
  policyNamespaces: string[];
  /** Valid policies in the cluster. */
  policyCount: number;
  /** Policies skipped as invalid, with reasons. */
  invalid: { key: string; reasons: string[] }[];
  /** With CompileOptions.checkNames: names that were asked for with two different contents. */
  nameConflicts?: { name: string; definitions: string[] }[];
}

export const GUARD_SETS = { podnet: { 4: 'podnet4', 6: 'podnet6' }, known: { 4: 'known4', 6: 'known6' } } as const;

export const DISPATCH: Record<Direction, Record<Family, string>> = {
  ingress: { 4: 'ingress4', 6: 'ingress6' },
  egress: { 4: 'egress4', 6: 'egress6' },
};

const ADDR_TYPE: Record<Family, KeyType> = { 4: 'ipv4_addr', 6: 'ipv6_addr' };
const SADDR: Record<Family, Selector> = { 4: 'ip saddr', 6: 'ip6 saddr' };
const DADDR: Record<Family, Selector> = { 4: 'ip daddr', 6: 'ip6 daddr' };
const PORT_TYPE: readonly KeyType[] = ['inet_proto', 'inet_service'];

const sha = (s: string) => createHash('sha256').update(s).digest('hex');
const famOf = (ip: string): Family => (ip.includes(':') ? 6 : 4);

// ---------------------------------------------------------------------------------
// Interval helpers: nft refuses overlapping elements in interval sets, so CIDR and
// port lists are merged into disjoint ranges first.

function cidrRange(cidr: string): [bigint, bigint, Family] {
  const [ip, len] = cidr.split('/') as [string, string];
  const fam = famOf(ip);
  const bits = fam === 4 ? 32n : 128n;
  const host = bits - BigInt(Number(len));
  const start = (ipToBigInt(ip) >> host) << host;
  return [start, start + (1n << host) - 1n, fam];
}

function mergeRanges(rs: [bigint, bigint][]): [bigint, bigint][] {
  const sorted = [...rs].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const out: [bigint, bigint][] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r[0] <= last[1] + 1n) {
      if (r[1] > last[1]) last[1] = r[1];
    } else out.push([r[0], r[1]]);
  }
  return out;
}

/** Disjoint address ranges ("a-b", or a single address) covering the CIDRs. */
export function cidrElements(cidrs: readonly string[]): { family: Family; elements: string[] } {
  const fam = famOf(cidrs[0]!.split('/')[0]!);
  const merged = mergeRanges(cidrs.map((c) => cidrRange(c)).map(([a, b]) => [a, b]));
  return { family: fam, elements: merged.map(([a, b]) => (a === b ? bigIntToIp(a, fam) : `${bigIntToIp(a, fam)}-${bigIntToIp(b, fam)}`)) };
}

/** Disjoint (protocol, port range) elements for a port list. */
export function portElements(ports: readonly PortRange[]): [string, string][] {
  const byProto = new Map<string, [bigint, bigint][]>();
  for (const p of ports) {
    const proto = p.protocol.toLowerCase();
    const lo = p.port ?? 0;
    const hi = p.port === undefined ? 65535 : p.endPort ?? p.port;
    const l = byProto.get(proto) ?? [];
    l.push([BigInt(lo), BigInt(hi)]);
    byProto.set(proto, l);
  }
  const out: [string, string][] = [];
  for (const proto of [...byProto.keys()].sort()) {
    for (const [a, b] of mergeRanges(byProto.get(proto)!)) out.push([proto, a === b ? String(a) : `${a}-${b}`]);
  }
  return out;
}

// ---------------------------------------------------------------------------------
// The model

class Builder {
  readonly sets = new Map<string, ModelSet>();
  readonly chains = new Map<string, ModelChain>();

  set(obj: SetObj | MapObj, elements: ElementObj[] = []): string {
    let s = this.sets.get(obj.name);
    if (!s) this.sets.set(obj.name, (s = { obj, elements: new Map() }));
    // Addresses come canonical from the evaluator (and ranges from cidrElements):
    // they are their own key. Other types go through nft's canonical form.
    const plainAddr = obj.type.length === 1 && (obj.type[0] === 'ipv4_addr' || obj.type[0] === 'ipv6_addr');
    for (const e of elements) s.elements.set(plainAddr ? String(e.key[0]) : keyString(obj.type, e.key), e);
    return obj.name;
  }
}

function familiesOf(state: PolicyState, opts: CompileOptions): Family[] {
  if (opts.families?.length) return [...new Set(opts.families)].sort();
  return [...new Set<Family>([4, ...state.ipFamilies])].sort();
}

function denyRule(chain: string, action: DenyAction, dir: Direction, policies: string[]): RuleObj {
  const verdict: Expr = action === 'reject' ? { reject: 'default' } : { verdict: 'drop' };
  return { kind: 'rule', chain, rule: [{ counter: true }, verdict], comment: `${dir} denied: ${policies.join(' ')}` };
}

export function baseChains(families: Family[]): { obj: ChainObj; rules: RuleObj[] }[] {
  const fwd: ChainObj = { kind: 'chain', name: 'forward', type: 'filter', hook: 'forward', priority: POLICY_PRIORITY, policy: 'accept', comment: 'NetworkPolicy: pod to pod, after service DNAT' };
  const inp: ChainObj = { kind: 'chain', name: 'input', type: 'filter', hook: 'input', priority: POLICY_PRIORITY, policy: 'accept', comment: 'NetworkPolicy: pod egress to this node' };
  const est = (chain: string): RuleObj => ({ kind: 'rule', chain, rule: [{ ctState: ['established', 'related'] }, { verdict: 'accept' }] });
  // IPv6 neighbour discovery (and MLD) is ICMPv6, so unlike ARP it crosses these
  // hooks (bridged same-node traffic through br_netfilter, a pod's answers to its
  // gateway through input). Dropping it cuts off every pod the policies isolate,
  // allowed connections included. conntrack marks exactly these ICMPv6 types
  // untracked (nf_conntrack_proto_icmpv6.c, noct_valid_new), so they are accepted
  // by that mark; other ICMPv6 (echo, errors of unknown flows) is judged as before.
  const nd = (chain: string): RuleObj[] =>
    families.includes(6) ? [{ kind: 'rule', chain, rule: [{ match: 'meta l4proto', value: 'icmpv6' }, { ctState: ['untracked'] }, { verdict: 'accept' }], comment: 'IPv6 neighbour discovery and MLD' }] : [];
  const disp = (chain: string, dir: Direction, f: Family): RuleObj => ({
    kind: 'rule',
    chain,
    rule: [{ vmap: { set: DISPATCH[dir][f] }, key: [dir === 'egress' ? SADDR[f] : DADDR[f]] }],
  });
  const guard = (chain: string, sel: Record<Family, Selector>, f: Family): RuleObj => ({
    kind: 'rule',
    chain,
    rule: [{ match: sel[f], value: { set: GUARD_SETS.podnet[f] } }, { match: sel[f], op: '!=', value: { set: GUARD_SETS.known[f] } }, { counter: true }, { verdict: 'drop' }],
    comment: 'pod not programmed yet',
  });
  return [
    {
      obj: fwd,
      rules: [
        est('forward'),
        ...nd('forward'),
        ...families.map((f) => guard('forward', SADDR, f)),
        ...families.map((f) => guard('forward', DADDR, f)),
        ...families.map((f) => disp('forward', 'egress', f)),
        ...families.map((f) => disp('forward', 'ingress', f)),
      ],
    },
    { obj: inp, rules: [est('input'), ...nd('input'), ...families.map((f) => guard('input', SADDR, f)), ...families.map((f) => disp('input', 'egress', f))] },
  ];
}

/** Compiles the state into this node's model. Pure and deterministic. */
export function compile(state: PolicyState, opts: CompileOptions): PolicyModel {
  const families = familiesOf(state, opts);
  const denyAction = opts.denyAction ?? 'drop';
  const b = new Builder();
  // checkNames: name -> the distinct contents it was asked for.
  const defs = opts.checkNames ? new Map<string, Set<string>>() : undefined;
  const define = (name: string, what: () => unknown): void => {
    if (!defs) return;
    let d = defs.get(name);
    if (!d) defs.set(name, (d = new Set()));
    d.add(JSON.stringify(what()));
  };
  for (const dir of ['ingress', 'egress'] as const) {
    for (const f of families) b.set({ kind: 'map', name: DISPATCH[dir][f], type: [ADDR_TYPE[f]], value: 'verdict', comment: `${dir} dispatch by pod IPv${f}` });
  }

  for (const f of families) {
    b.set({ kind: 'set', name: GUARD_SETS.podnet[f], type: [ADDR_TYPE[f]], flags: ['interval'], comment: `this node's pod CIDRs (IPv${f}) while policies exist` });
    b.set({ kind: 'set', name: GUARD_SETS.known[f], type: [ADDR_TYPE[f]], comment: `programmed pods of this node (IPv${f})` });
  }
  const localPods = new Map<string, LocalPod>();
  for (const p of state.pods.values()) {
    if (p.nodeName !== opts.nodeName || p.hostNetwork || p.ips.length === 0) continue;
    const lp: LocalPod = { key: p.key, ips: p.ips.filter((ip) => families.includes(famOf(ip))) };
    localPods.set(p.key, lp);
    for (const ip of lp.ips) {
      const set = GUARD_SETS.known[famOf(ip)];
      b.set(b.sets.get(set)!.obj, [{ kind: 'element', set, key: [ip] }]);
    }
  }
  if (state.policies.length > 0) {
    for (const f of families) {
      const cidrs = (opts.podCIDRs ?? []).filter((c) => famOf(c.split('/')[0]!) === f);
      if (!cidrs.length) continue;
      const set = GUARD_SETS.podnet[f];
      b.set(b.sets.get(set)!.obj, cidrElements(cidrs).elements.map((e) => ({ kind: 'element', set, key: [e] })));
    }
  }

  const podIps = (keys: readonly string[], fam: Family): string[] => {
    const out = new Set<string>();
    for (const k of keys) for (const ip of state.pods.get(k)?.ips ?? []) if (famOf(ip) === fam) out.add(ip);
    return [...out].sort();
  };

  // Sets are named by identity or content: build each once, however many pods use it.
  const portSetNames = new Map<string, string>();
  const portSet = (ports: PortRange[]): string => {
    const key = JSON.stringify(ports);
    const known = portSetNames.get(key);
    if (known) return known;
    const els = portElements(ports);
    const name = hashedName('pt', JSON.stringify(els), els.map(([p, r]) => `${p}${r}`).join('.'));
    define(name, () => ['ports', els]);
    if (!b.sets.has(name)) {
      b.set({ kind: 'set', name, type: PORT_TYPE, flags: ['interval'] }, els.map(([p, r]) => ({ kind: 'element', set: name, key: [p, r] })));
      b.sets.get(name)!.byContent = true;
    }
    portSetNames.set(key, name);
    return name;
  };

  const blockNames = new Map<string, { name: string; family: Family }>();
  const peerSetNames = new Map<string, string>();
  const blockSet = (prefix: string, cidrs: string[]): { name: string; family: Family } => {
    const key = `${prefix} ${cidrs.join(',')}`;
    const known = blockNames.get(key);
    if (known) return known;
    const { family, elements } = cidrElements(cidrs);
    const name = hashedName(`${prefix}${family}`, elements.join(','), cidrs[0]!);
    define(name, () => ['block', family, elements]);
    if (!b.sets.has(name)) {
      b.set({ kind: 'set', name, type: [ADDR_TYPE[family]], flags: ['interval'] }, elements.map((e) => ({ kind: 'element', set: name, key: [e] })));
      b.sets.get(name)!.byContent = true;
    }
    blockNames.set(key, { name, family });
    return { name, family };
  };

  /** Adds a pod peer set holding these pods' addresses (elements cached per member list). */
  const peerSet = (obj: SetObj, f: Family, pods: readonly string[]): void => {
    let byName = peerElementsCache.get(pods);
    if (!byName) peerElementsCache.set(pods, (byName = new Map()));
    let els = byName.get(obj.name);
    if (!els) {
      els = new Map(podIps(pods, f).map((ip) => [ip, { kind: 'element', set: obj.name, key: [ip] }]));
      byName.set(obj.name, els);
    }
    b.sets.set(obj.name, { obj, elements: els, token: pods });
  };
  let recording: CachedChain['peers'] | undefined;

  /** The rules (without chain) of one allow entry. */
  const entryRules = (dir: Direction, e: AllowEntry): Expr[][] => {
    const verdict: Expr = dir === 'egress' ? { verdict: 'return' } : { verdict: 'accept' };
    const portMatch: Expr[] = e.ports ? [{ match: ['meta l4proto', 'th dport'], value: { set: portSet(e.ports) } }] : [];
    const peerSel = (f: Family) => (dir === 'ingress' ? SADDR[f] : DADDR[f]);
    switch (e.peer.kind) {
      case 'all':
        return [[...portMatch, verdict]];
      case 'ipBlock': {
        const blk = blockSet('b', [e.peer.cidr]);
        if (!families.includes(blk.family)) return [];
        const r: Expr[] = [{ match: peerSel(blk.family), value: { set: blk.name } }];
        if (e.peer.except.length) r.push({ match: peerSel(blk.family), op: '!=', value: { set: blockSet('x', e.peer.except).name } });
        return [[...r, ...portMatch, verdict]];
      }
      case 'pods': {
        const out: Expr[][] = [];
        const peer = e.peer;
        // A policy peer's own set ("sel": every pod it selects) is one per (policy,
        // direction, rule, peer, family). An egress named-port group ("grp": the pods
        // of a peer whose names resolve to these ports) is one per ports list besides;
        // the tag keeps a group whose ports equal the rule's numeric ports from
        // sharing the peer's set (same name, fewer members).
        const selected = peerSource.has(peer);
        const portsSig = selected ? '' : JSON.stringify(e.ports);
        for (const f of families) {
          if (peer.family !== undefined && peer.family !== f) continue;
          const identity = `peer|${selected ? 'sel' : 'grp'}|${e.policy}|${dir}|${e.ruleIndex}|${e.peerIndex ?? '-'}|${f}|${portsSig}`;
          let setName = peerSetNames.get(identity);
          if (setName === undefined) {
            const [ns, name] = e.policy.split('/') as [string, string];
            setName = hashedName(`p${f}`, identity, `${ns}.${name}.${dir === 'ingress' ? 'in' : 'eg'}${e.ruleIndex}.${e.peerIndex ?? 'all'}`);
            peerSetNames.set(identity, setName);
          }
          if (!b.sets.has(setName)) {
            const obj: SetObj = { kind: 'set', name: setName, type: [ADDR_TYPE[f]], comment: `${e.policy} ${dir}[${e.ruleIndex}] peer ${e.peerIndex ?? '*'}` };
            peerSet(obj, f, peer.pods);
          }
          define(setName, () => ['pods', f, podIps(peer.pods, f)]);
          const src = peerSource.get(peer);
          if (src && recording) recording.push({ obj: b.sets.get(setName)!.obj as SetObj, family: f, policy: src.policy, peer: src.peer });
          out.push([{ match: peerSel(f), value: { set: setName } }, ...portMatch, verdict]);
        }
        return out;
      }
    }
  };

  const cache = opts.cache;
  const scope = JSON.stringify([families, denyAction]);
  const prevChains = cache && cache.scope === scope ? cache.chains : new Map<string, CachedChain>();
  const nextChains = new Map<string, CachedChain>();
  let hits = 0;
  let misses = 0;
  const build = (key: string, dir: Direction): CachedChain | undefined => {
    const eff = effectiveOf(state, key, dir);
    if (!eff) return undefined;
    const bodies: Expr[][] = [[{ ctState: ['invalid'] }, { verdict: 'drop' }]];
    const peers: CachedChain['peers'] = [];
    recording = peers;
    for (const e of eff.allow) bodies.push(...entryRules(eff.direction, e));
    recording = undefined;
    // Dedupe identical rules (several policies allowing the same thing).
    const seen = new Set<string>();
    const unique = bodies.filter((r) => {
      const k = JSON.stringify(r);
      if (seen.has(k)) return false;
      seen.add(k);
      return true;
    });
    const hash = sha(JSON.stringify([eff.direction, eff.policies, denyAction, unique]));
    const first = eff.policies[0]!;
    const name = hashedName(eff.direction === 'ingress' ? 'i' : 'e', hash, first.replace('/', '.'));
    let chain = b.chains.get(name);
    if (!chain) {
      const rules: RuleObj[] = unique.map((rule) => ({ kind: 'rule', chain: name, rule }));
      rules.push(denyRule(name, denyAction, eff.direction, eff.policies));
      chain = { obj: { kind: 'chain', name, comment: `${eff.direction} of pods isolated by ${eff.policies.join(' ')}` }, rules, hash, direction: eff.direction, policies: eff.policies };
      b.chains.set(name, chain);
    }
    define(`chain ${name}`, () => hash);
    const setNames = new Set<string>();
    for (const r of unique) for (const x of r) if ('value' in x && x.value && typeof x.value === 'object' && 'set' in x.value) setNames.add((x.value as { set: string }).set);
    const peerNames = new Set(peers.map((p) => p.obj.name));
    return { name, chain, sets: [...setNames].filter((n) => !peerNames.has(n)).map((n) => b.sets.get(n)!), peers: peers.filter((p) => setNames.has(p.obj.name)) };
  };
  for (const key of [...localPods.keys()].sort()) {
    const lp = localPods.get(key)!;
    for (const dir of ['ingress', 'egress'] as const) {
      const sig = effectiveSignature(state, key, dir);
      if (sig === undefined) continue;
      let c = nextChains.get(sig) ?? prevChains.get(sig);
      if (c) {
        hits++;
        if (!b.chains.has(c.name)) b.chains.set(c.name, c.chain);
        for (const s of c.sets) if (!b.sets.has(s.obj.name)) b.sets.set(s.obj.name, s);
        for (const p of c.peers) if (!b.sets.has(p.obj.name)) peerSet(p.obj, p.family, peerMembers(state, p.policy, p.peer));
        if (defs) {
          const hit = c;
          define(`chain ${hit.name}`, () => hit.chain.hash);
          for (const p of hit.peers) define(p.obj.name, () => ['pods', p.family, podIps(peerMembers(state, p.policy, p.peer), p.family)]);
          for (const st of hit.sets) if (st.token) define(st.obj.name, () => ['pods', st.obj.type[0] === 'ipv6_addr' ? 6 : 4, [...st.elements.keys()].sort()]);
        }
      } else {
        misses++;
        c = build(key, dir);
        if (!c) continue;
      }
      nextChains.set(sig, c);
      lp[dir] = c.name;
      for (const ip of lp.ips) {
        const map = DISPATCH[dir][famOf(ip)];
        b.set(b.sets.get(map)!.obj, [{ kind: 'element', set: map, key: [ip], value: { jump: c.name } }]);
      }
    }
  }
  if (cache) {
    cache.scope = scope;
    cache.chains = nextChains;
    cache.hits = hits;
    cache.misses = misses;
  }

  const base = baseChains(families);
  return {
    families,
    denyAction,
    base,
    baseHash: sha(JSON.stringify([families, base])),
    chains: b.chains,
    sets: b.sets,
    localPods,
    policyNamespaces: [...new Set(state.policies.map((p) => p.namespace))].sort(),
    policyCount: state.policies.length,
    invalid: state.invalid.map((i) => ({ key: i.key, reasons: i.reasons })),
    ...(defs ? { nameConflicts: [...defs].filter(([, d]) => d.size > 1).map(([name, d]) => ({ name, definitions: [...d] })) } : {}),
  };
}

// ---------------------------------------------------------------------------------
// Transactions

/** Appends the whole model: sets, chains with rules, elements, base chains. */
function addModel(tx: Transaction, m: PolicyModel): void {
  for (const s of m.sets.values()) tx.add(s.obj);
  for (const c of m.chains.values()) tx.add(c.obj);
  for (const c of m.chains.values()) for (const r of c.rules) tx.add(r);
  // Plain sets first, verdict maps last (their elements reference chains).
  const sets = [...m.sets.values()].sort((a, b) => Number(a.obj.kind === 'map') - Number(b.obj.kind === 'map'));
  for (const s of sets) for (const e of s.elements.values()) tx.add(e);
  for (const bc of m.base) {
    tx.add(bc.obj);
    for (const r of bc.rules) tx.add(r);
  }
}

/**
 * The full ruleset as one atomic transaction that also adopts whatever table a
 * previous agent left: `add table; delete table; add table; ...everything`.
 */
export function fullTransaction(m: PolicyModel): Transaction {
  const tx = new Transaction('inet', POLICY_TABLE);
  tx.add({ kind: 'table', comment: 'skiff NetworkPolicy' });
  tx.delete({ kind: 'table' });
  tx.add({ kind: 'table', comment: 'skiff NetworkPolicy' });
  addModel(tx, m);
  return tx;
}

// ---------------------------------------------------------------------------------
// Incremental updates

/** What the kernel holds, as far as the reconciler knows (it never lists to diff). */
export interface AppliedState {
  baseHash: string;
  /** Regular chains: name -> rules hash ('' = flushed, awaiting deletion). */
  chains: Map<string, string>;
  /** Sets and maps: name -> definition hash and elements (canonical key -> value JSON). */
  sets: Map<string, { def: string; obj: SetObj | MapObj; elements: Map<string, string>; token?: object }>;
  /** Chains and sets no longer wanted: flushed, deleted by the next transaction. */
  stale: { chains: Set<string>; sets: Set<string> };
}

export interface PlanStats {
  rebuild: boolean;
  ops: number;
  chainsAdded: number;
  chainsFlushed: number;
  chainsDeleted: number;
  setsAdded: number;
  setsDeleted: number;
  elementsAdded: number;
  elementsDeleted: number;
}

// Set objects are reused from compile to compile (cached chains, peer sets): their
// definition string is computed once per object (partial syncs compare every set's).
const setDefs = new WeakMap<SetObj | MapObj, string>();
const setDef = (o: SetObj | MapObj): string => {
  let d = setDefs.get(o);
  if (d === undefined) setDefs.set(o, (d = JSON.stringify([o.kind, o.type, o.kind === 'map' ? o.value : null, [...(o.flags ?? [])].sort(), o.timeout ?? null])));
  return d;
};
const elValue = (e: ElementObj) => JSON.stringify(e.value ?? null);

/** The applied state after a full transaction of `m`. */
export function appliedFrom(m: PolicyModel): AppliedState {
  const sets = new Map<string, { def: string; obj: SetObj | MapObj; elements: Map<string, string>; token?: object }>();
  for (const [name, s] of m.sets) sets.set(name, { def: setDef(s.obj), obj: s.obj, elements: new Map([...s.elements].map(([k, e]) => [k, elValue(e)])), ...(s.token ? { token: s.token } : {}) });
  return { baseHash: m.baseHash, chains: new Map([...m.chains].map(([n, c]) => [n, c.hash])), sets, stale: { chains: new Set(), sets: new Set() } };
}

/**
 * The minimal transaction taking `prev` to `next`, or undefined when only a full
 * rebuild will do (base chains changed, a set's definition changed). Applies nothing;
 * `commit` returns the new applied state for after nft succeeded.
 */
export function planUpdate(prev: AppliedState, next: PolicyModel): { tx: Transaction; stats: PlanStats; commit: () => AppliedState } | undefined {
  if (prev.baseHash !== next.baseHash) return undefined;
  for (const [name, s] of next.sets) {
    const have = prev.sets.get(name);
    if (have && have.def !== setDef(s.obj)) return undefined;
  }
  const tx = new Transaction('inet', POLICY_TABLE);
  const stats: PlanStats = { rebuild: false, ops: 0, chainsAdded: 0, chainsFlushed: 0, chainsDeleted: 0, setsAdded: 0, setsDeleted: 0, elementsAdded: 0, elementsDeleted: 0 };
  const chains = new Map(prev.chains);
  // Element maps are copied on write (most sets are untouched by a partial sync).
  const sets = new Map([...prev.sets].map(([n, s]) => [n, { ...s }]));
  const writable = new Set<string>();
  const own = (name: string) => {
    const x = sets.get(name)!;
    if (!writable.has(name)) {
      x.elements = new Map(x.elements);
      writable.add(name);
    }
    return x;
  };
  const stale = { chains: new Set(prev.stale.chains), sets: new Set(prev.stale.sets) };
  for (const s of prev.sets.values()) tx.declare(s.obj);

  // 1. Delete what went stale in an earlier transaction and is still unwanted
  //    (deferred by one sync: the kernel may briefly hold a reference after the
  //    rules pointing at an object are gone, as kube-proxy notes).
  for (const name of [...stale.chains]) {
    if (next.chains.has(name)) continue;
    tx.delete({ kind: 'chain', name });
    chains.delete(name);
    stale.chains.delete(name);
    stats.chainsDeleted++;
  }
  for (const name of [...stale.sets]) {
    if (next.sets.has(name)) continue;
    const s = sets.get(name)!;
    tx.delete({ kind: s.obj.kind, name });
    sets.delete(name);
    stale.sets.delete(name);
    stats.setsDeleted++;
  }

  // 2. New sets, then new (or revived) chains with their rules.
  for (const [name, s] of next.sets) {
    stale.sets.delete(name);
    if (sets.has(name)) continue;
    tx.add(s.obj);
    sets.set(name, { def: setDef(s.obj), obj: s.obj, elements: new Map() });
    writable.add(name);
    stats.setsAdded++;
  }
  for (const [name, c] of next.chains) {
    stale.chains.delete(name);
    const have = chains.get(name);
    if (have === c.hash) continue;
    if (have === undefined) tx.add(c.obj);
    else if (have !== '') tx.flush({ kind: 'chain', name });
    for (const r of c.rules) tx.add(r);
    chains.set(name, c.hash);
    stats.chainsAdded++;
  }

  // 3. Elements: plain sets, then verdict maps (deletes before adds: a changed value
  //    is delete + add, since `add element` of an existing key with another value fails).
  const ordered = [...next.sets.values()].sort((a, b) => Number(a.obj.kind === 'map') - Number(b.obj.kind === 'map'));
  for (const s of ordered) {
    const seen = sets.get(s.obj.name)!;
    if (s.token !== undefined && seen.token === s.token) continue;
    // A content-named set that was applied already holds exactly these elements.
    if (s.byContent && !writable.has(s.obj.name)) continue;
    const have = own(s.obj.name);
    if (s.token !== undefined) have.token = s.token;
    else delete have.token;
    for (const [k, v] of [...have.elements]) {
      const want = s.elements.get(k);
      if (want && elValue(want) === v) continue;
      tx.delete({ kind: 'element', set: s.obj.name, key: k.split(' . ') });
      have.elements.delete(k);
      stats.elementsDeleted++;
    }
    for (const [k, e] of s.elements) {
      if (have.elements.has(k)) continue;
      tx.add(e);
      have.elements.set(k, elValue(e));
      stats.elementsAdded++;
    }
  }
  // Verdict-map elements of sets that disappear entirely must go before their chains are flushed.
  for (const [name, s0] of sets) {
    if (next.sets.has(name) || s0.obj.kind !== 'map') continue;
    const s = own(name);
    for (const k of [...s.elements.keys()]) {
      tx.delete({ kind: 'element', set: name, key: k.split(' . ') });
      s.elements.delete(k);
      stats.elementsDeleted++;
    }
  }

  // 4. Unwanted chains are flushed now (nothing jumps to them any more) and deleted
  //    next time; unwanted sets are deleted next time (their rules are flushed now).
  for (const [name, hash] of chains) {
    if (next.chains.has(name) || stale.chains.has(name)) continue;
    if (hash !== '') {
      tx.flush({ kind: 'chain', name });
      stats.chainsFlushed++;
    }
    chains.set(name, '');
    stale.chains.add(name);
  }
  for (const name of sets.keys()) if (!next.sets.has(name)) stale.sets.add(name);

  stats.ops = tx.size;
  return { tx, stats, commit: () => ({ baseHash: next.baseHash, chains, sets, stale }) };
}
