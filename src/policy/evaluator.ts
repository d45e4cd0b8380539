// The NetworkPolicy evaluator: networking.k8s.io/v1 semantics as a pure function.
// It is the oracle for everything else (the nftables compiler, the lab's matrix, the
// policy-aware DNS), so it favours being obviously right over being clever, and it
// explains every verdict: which policies isolate each end, which rule allowed the
// connection, or why each rule did not.
//
// Semantics (REFERENCE.md, kubernetes test/e2e/network/netpol, cyclonus):
// - A pod is isolated for ingress (egress) iff some valid policy in its namespace
//   selects it and has Ingress (Egress) in its effective policyTypes. policyTypes
//   defaults to [Ingress] plus Egress when the policy has egress rules.
// - A connection needs the source's egress (when the source is a pod) AND the
//   destination's ingress (when the destination is a pod). Allowed traffic is the
//   union of the rules of every policy isolating that end.
// - A rule with no (or empty) from/to matches every peer; no (or empty) ports
//   matches every port. ingress: [] allows nothing; ingress: [{}] allows everything.
// - Peers: podSelector alone = pods of the policy's namespace; namespaceSelector
//   alone = every pod of the matching namespaces; both in one peer = AND.
//   ipBlock = cidr minus except, matched against the address of the other end —
//   pod addresses included (evaluated after service DNAT, as the upstream e2e suite
//   and cyclonus do).
// - Ports: protocol defaults to TCP; no port = every port of that protocol; endPort
//   is inclusive; a named port is resolved against the destination pod's container
//   ports (name and protocol), per pod; it matches nothing when unresolvable
//   (destination not a pod, or no such port) but the policy still isolates.
// - Traffic from the destination pod's own node is always allowed (conn.fromNode).
// - Invalid policies are skipped whole, with their reasons; they isolate nothing.
// Decisions beyond the API text are in docs/policy.md.
import { createHash } from 'node:crypto';
import type { ClusterReader, Namespace, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, Pod, Protocol } from '../cluster/types.js';
import { bytesToIp, type Family } from '../util/ip.js';
import { compileSelector, describeSelector, isEmptySelector, type LabelPredicate, type Labels } from './selector.js';
import { checkPolicy, netContains, parseCidr, parseIp, type IpNet } from './validate.js';

export const NAMESPACE_NAME_LABEL = 'kubernetes.io/metadata.name';
export type Direction = 'ingress' | 'egress';

// ---------------------------------------------------------------------------------
// State

export interface PolicyStateInput {
  namespaces?: readonly Namespace[];
  pods?: readonly Pod[];
  policies?: readonly NetworkPolicy[];
}

export interface NamedPort {
  name: string;
  protocol: Protocol;
  port: number;
}

interface Addr {
  family: Family;
  bytes: Uint8Array;
  text: string;
}

export interface PodInfo {
  key: string;
  namespace: string;
  name: string;
  labels: Labels;
  /** Canonical pod IPs (status.podIPs, else status.podIP). */
  ips: string[];
  hostNetwork: boolean;
  nodeName?: string;
  hostIP?: string;
  namedPorts: NamedPort[];
  /** @internal parsed ips */
  addrs: Addr[];
}

export type CompiledPeer =
  | { kind: 'pods'; index: number; namespaceSel: LabelPredicate | null; podSel: LabelPredicate; text: string }
  | { kind: 'ipBlock'; index: number; cidr: IpNet; except: IpNet[]; text: string };

type CompiledPort =
  | { kind: 'all'; index: number; protocol: Protocol; text: string }
  | { kind: 'range'; index: number; protocol: Protocol; from: number; to: number; text: string }
  | { kind: 'named'; index: number; protocol: Protocol; name: string; text: string };

interface CompiledRule {
  index: number;
  /** null: every peer (from/to absent or empty). */
  peers: CompiledPeer[] | null;
  /** null: every port (ports absent or empty). */
  ports: CompiledPort[] | null;
}

export interface CompiledPolicy {
  key: string;
  namespace: string;
  name: string;
  selects: LabelPredicate;
  selectorText: string;
  /** null: this policy does not isolate in that direction. */
  ingress: CompiledRule[] | null;
  egress: CompiledRule[] | null;
  warnings: string[];
  object: NetworkPolicy;
}

export interface InvalidPolicy {
  key: string;
  namespace: string;
  reasons: string[];
}

const q = (v: unknown): string => JSON.stringify(v);
const TERMINAL_PHASES = new Set(['Succeeded', 'Failed']);

function parseAddr(ip: string): Addr | undefined {
  const p = parseIp(ip);
  return p && { ...p, text: bytesToIp(p.bytes) };
}

function podInfo(pod: Pod): PodInfo {
  const namespace = pod.metadata.namespace || 'default';
  const raw = pod.status?.podIPs?.length ? pod.status.podIPs.map((x) => x.ip) : pod.status?.podIP ? [pod.status.podIP] : [];
  const addrs: Addr[] = [];
  for (const ip of raw) {
    const a = parseAddr(ip);
    if (a && !addrs.some((x) => x.text === a.text)) addrs.push(a);
  }
  const namedPorts: NamedPort[] = [];
  for (const c of pod.spec?.containers ?? []) {
    for (const p of c.ports ?? []) {
      if (p.name) namedPorts.push({ name: p.name, protocol: p.protocol ?? 'TCP', port: p.containerPort });
    }
  }
  const info: PodInfo = {
    key: `${namespace}/${pod.metadata.name}`,
    namespace,
    name: pod.metadata.name,
    labels: { ...(pod.metadata.labels ?? {}) },
    ips: addrs.map((a) => a.text),
    hostNetwork: pod.spec?.hostNetwork === true,
    namedPorts,
    addrs,
  };
  if (pod.spec?.nodeName) info.nodeName = pod.spec.nodeName;
  if (pod.status?.hostIP) info.hostIP = pod.status.hostIP;
  return info;
}

function portText(protocol: Protocol, p: NetworkPolicyPort): string {
  if (p.port === undefined || p.port === null) return `${protocol}/*`;
  if (typeof p.port === 'string') return `${protocol}/${q(p.port)}`;
  return p.endPort !== undefined && p.endPort !== null ? `${protocol}/${p.port}-${p.endPort}` : `${protocol}/${p.port}`;
}

function compilePorts(ports: NetworkPolicyPort[] | undefined): CompiledPort[] | null {
  if (!ports || ports.length === 0) return null;
  return ports.map((p, index) => {
    const protocol: Protocol = p.protocol ?? 'TCP';
    const text = portText(protocol, p);
    if (p.port === undefined || p.port === null) return { kind: 'all', index, protocol, text };
    if (typeof p.port === 'string') return { kind: 'named', index, protocol, name: p.port, text };
    return { kind: 'range', index, protocol, from: p.port, to: p.endPort ?? p.port, text };
  });
}

function compilePeers(peers: NetworkPolicyPeer[] | undefined, policyNs: string): CompiledPeer[] | null {
  if (!peers || peers.length === 0) return null;
  return peers.map((peer, index): CompiledPeer => {
    if (peer.ipBlock) {
      const c = parseCidr(peer.ipBlock.cidr);
      if (typeof c === 'string') throw new Error(`unreachable: invalid cidr passed validation`);
      const except = (peer.ipBlock.except ?? []).map((e) => {
        const pe = parseCidr(e);
        if (typeof pe === 'string') throw new Error(`unreachable: invalid except passed validation`);
        return pe.net;
      });
      const text = `ipBlock ${c.net.text}${except.length ? ` except ${except.map((e) => e.text).join(', ')}` : ''}`;
      return { kind: 'ipBlock', index, cidr: c.net, except, text };
    }
    const podSel = compileSelector(peer.podSelector);
    const ns = peer.namespaceSelector;
    const podText = peer.podSelector && !isEmptySelector(peer.podSelector) ? `pods ${describeSelector(peer.podSelector)}` : 'all pods';
    if (ns === undefined || ns === null) {
      return { kind: 'pods', index, namespaceSel: null, podSel, text: `${podText} in namespace ${policyNs}` };
    }
    const nsText = isEmptySelector(ns) ? 'in all namespaces' : `in namespaces ${describeSelector(ns)}`;
    return { kind: 'pods', index, namespaceSel: compileSelector(ns), podSel, text: `${podText} ${nsText}` };
  });
}

function compileRules(rules: { from?: NetworkPolicyPeer[]; to?: NetworkPolicyPeer[]; ports?: NetworkPolicyPort[] }[] | undefined, dir: Direction, ns: string): CompiledRule[] {
  return (rules ?? []).map((r, index) => ({
    index,
    peers: compilePeers(dir === 'ingress' ? r.from : r.to, ns),
    ports: compilePorts(r.ports),
  }));
}

/** The effective policyTypes: as given, else Ingress plus Egress when egress rules exist. */
export function effectivePolicyTypes(p: NetworkPolicy): { ingress: boolean; egress: boolean } {
  const types = p.spec.policyTypes;
  if (types && types.length > 0) return { ingress: types.includes('Ingress'), egress: types.includes('Egress') };
  return { ingress: true, egress: (p.spec.egress?.length ?? 0) > 0 };
}

// Compiled policies are memoized per object (checked against its JSON, so an object
// changed in place is recompiled): a state rebuilt after a pod label change reuses
// every compiled policy, and with it the peer membership caches (PolicyState.from's
// `prev`).
const compiledMemo = new WeakMap<object, { json: string; c: CompiledPolicy | InvalidPolicy }>();
const compiledById = new WeakMap<object, CompiledPolicy | InvalidPolicy>();
function compilePolicyMemo(p: NetworkPolicy, immutable = false): CompiledPolicy | InvalidPolicy {
  if (typeof p !== 'object' || p === null) return compilePolicy(p);
  if (immutable) {
    // The caller promises objects are replaced, never changed in place: identity is content.
    let c = compiledById.get(p);
    if (!c) compiledById.set(p, (c = compilePolicyMemo(p)));
    return c;
  }
  const json = JSON.stringify(p);
  const hit = compiledMemo.get(p);
  if (hit && hit.json === json) return hit.c;
  const c = compilePolicy(p);
  compiledMemo.set(p, { json, c });
  return c;
}

/** Validates and compiles one policy; returns the reasons when it is invalid. */
export function compilePolicy(p: NetworkPolicy): CompiledPolicy | InvalidPolicy {
  const namespace = (p as { metadata?: { namespace?: string } })?.metadata?.namespace || 'default';
  const name = (p as { metadata?: { name?: string } })?.metadata?.name ?? '';
  const key = `${namespace}/${name}`;
  const { errors, warnings } = checkPolicy(p);
  if (errors.length) return { key, namespace, reasons: errors };
  const types = effectivePolicyTypes(p);
  return {
    key,
    namespace,
    name,
    selects: compileSelector(p.spec.podSelector),
    selectorText: describeSelector(p.spec.podSelector),
    ingress: types.ingress ? compileRules(p.spec.ingress, 'ingress', namespace) : null,
    egress: types.egress ? compileRules(p.spec.egress, 'egress', namespace) : null,
    warnings,
    object: p,
  };
}

const isInvalid = (c: CompiledPolicy | InvalidPolicy): c is InvalidPolicy => 'reasons' in c;

export interface StateOptions {
  /** The state before a change: valid peer memberships are carried over (see PolicyState.from). */
  prev?: PolicyState;
  /**
   * The input objects are never changed in place (a change replaces the object, as
   * the agent's cluster view does): compiled policies and pod infos are reused by
   * object identity, without comparing content.
   */
  immutable?: boolean;
}

function sortedHas(xs: readonly string[], k: string): boolean {
  let lo = 0;
  let hi = xs.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const v = xs[mid]!;
    if (v === k) return true;
    if (v < k) lo = mid + 1;
    else hi = mid - 1;
  }
  return false;
}

const podInfoById = new WeakMap<object, { info: PodInfo; sig: string }>();

/**
 * The cluster state the evaluator reads, with its indices precomputed: namespace
 * labels, pods by key and by IP, compiled policies by namespace, and (lazily) the
 * policies isolating each pod. Immutable: build a new one when the cluster changes.
 */
export class PolicyState {
  readonly namespaces = new Map<string, Labels>();
  readonly pods = new Map<string, PodInfo>();
  /** Valid policies, sorted by key. */
  readonly policies: CompiledPolicy[];
  /** Invalid policies (skipped), sorted by key. */
  readonly invalid: InvalidPolicy[];
  /** The compiled input policies in input order (a state with the very same ones shares the indices below). */
  private readonly compiledInput: (CompiledPolicy | InvalidPolicy)[];
  /** Address families of the pods' IPs. */
  readonly ipFamilies = new Set<Family>();
  private readonly byNamespace: Map<string, CompiledPolicy[]>;
  private readonly byIp = new Map<string, PodInfo | null>();
  private readonly isolatingCache = new Map<string, { ingress: CompiledPolicy[]; egress: CompiledPolicy[] }>();
  /** @internal per-peer caches for the normalized form (pods matching each pod peer). */
  readonly peerPodsCache = new Map<CompiledPeer, { policy: CompiledPolicy; pods: string[] }>();
  /** @internal label/namespace signature of each pod (what peer membership depends on). */
  private readonly podSig = new Map<string, string>();

  /**
   * Builds the state. With `prev` (the state before a change), peer memberships that
   * are still valid are carried over and only pods whose labels, namespace or
   * existence changed are re-tested (namespace label changes start afresh).
   */
  static from(input: PolicyStateInput, opts: StateOptions = {}): PolicyState {
    const s = new PolicyState(input, opts.immutable === true, opts.prev);
    if (opts.prev) s.inherit(opts.prev);
    return s;
  }

  static fromReader(reader: Pick<ClusterReader, 'list'>, opts: StateOptions = {}): PolicyState {
    return PolicyState.from({ namespaces: reader.list('Namespace'), pods: reader.list('Pod'), policies: reader.list('NetworkPolicy') }, opts);
  }

  private inherit(prev: PolicyState): void {
    // Peer membership depends on a pod's labels, its namespace's labels and its
    // existence: a namespace whose labels changed (or that appeared or went) makes
    // every pod in it a changed pod.
    const changedNs = new Set<string>();
    for (const [n, l] of this.namespaces) if (JSON.stringify(prev.namespaces.get(n)) !== JSON.stringify(l)) changedNs.add(n);
    for (const n of prev.namespaces.keys()) if (!this.namespaces.has(n)) changedNs.add(n);
    const changedSet = new Set<string>();
    for (const [k, sig] of this.podSig) if (prev.podSig.get(k) !== sig) changedSet.add(k);
    for (const k of prev.podSig.keys()) if (!this.podSig.has(k)) changedSet.add(k);
    if (changedNs.size) {
      for (const p of this.pods.values()) if (changedNs.has(p.namespace)) changedSet.add(p.key);
      for (const p of prev.pods.values()) if (changedNs.has(p.namespace)) changedSet.add(p.key);
    }
    const changed = [...changedSet];
    // Which policies isolate a pod depends only on the policies of its namespace and
    // its own labels: with the very same policies, unchanged pods keep their answer.
    if (this.policies === prev.policies) {
      for (const [k, v] of prev.isolatingCache) if (!changedSet.has(k) && this.pods.has(k)) this.isolatingCache.set(k, v);
    }
    const live = new Set(this.policies);
    const netOf = (p: PodInfo | undefined) => (p ? `${p.ips.join(',')}${JSON.stringify(p.namedPorts)}` : undefined);
    const sameNet = new Set(changed.filter((k) => this.pods.has(k) && netOf(this.pods.get(k)) === netOf(prev.pods.get(k))));
    for (const [peer, e] of prev.peerPodsCache) {
      if (!live.has(e.policy)) continue;
      // An unaffected peer keeps the very same array: the compiler caches a set's
      // elements by it (a changed pod's address change also yields a new array).
      const now = changed.filter((k) => {
        const pod = this.pods.get(k);
        return pod !== undefined && peerMatches(this, e.policy, peer, { pod, label: k });
      });
      // The list changes when a member leaves, a pod joins, or a member that stays
      // changed addresses or container ports (label-only changes of members do not).
      // e.pods is sorted: look the (few) changed pods up instead of scanning the members.
      // (members = the changed pods in e.pods; without allocating: this runs for every
      // peer of every policy on each sync, and nearly always finds nothing.)
      let differs = false;
      for (const k of changed) {
        if (sortedHas(e.pods, k) && (!sameNet.has(k) || !now.includes(k))) {
          differs = true;
          break;
        }
      }
      if (!differs) differs = now.some((k) => !sortedHas(e.pods, k));
      let pods = e.pods;
      if (differs) {
        pods = e.pods.filter((k) => !changedSet.has(k));
        pods.push(...now);
        pods.sort();
      }
      this.peerPodsCache.set(peer, { policy: e.policy, pods });
    }
  }

  private constructor(input: PolicyStateInput, immutable: boolean, prev?: PolicyState) {
    const addNs = (name: string, labels?: Record<string, string>) => {
      const prev = this.namespaces.get(name);
      // The API server always sets kubernetes.io/metadata.name to the name; so do we.
      this.namespaces.set(name, { ...(prev ?? {}), ...(labels ?? {}), [NAMESPACE_NAME_LABEL]: name });
    };
    for (const ns of input.namespaces ?? []) addNs(ns.metadata.name, ns.metadata.labels);
    for (const pod of input.pods ?? []) {
      // Completed pods have no network (and their IPs may already be reused).
      if (pod.status?.phase && TERMINAL_PHASES.has(pod.status.phase)) continue;
      let memo = immutable ? podInfoById.get(pod) : undefined;
      if (!memo) {
        const info = podInfo(pod);
        memo = { info, sig: `${info.hostNetwork ? 'h' : ''}${info.ips.join(',')}${JSON.stringify(info.labels)}${JSON.stringify(info.namedPorts)}` };
        if (immutable) podInfoById.set(pod, memo);
      }
      const info = memo.info;
      this.pods.set(info.key, info);
      this.podSig.set(info.key, memo.sig);
      for (const a of info.addrs) this.ipFamilies.add(a.family);
      if (!this.namespaces.has(info.namespace)) addNs(info.namespace);
      // hostNetwork pods share the node's address: an IP never resolves to them.
      if (info.hostNetwork) continue;
      for (const ip of info.ips) this.byIp.set(ip, this.byIp.has(ip) ? null : info);
    }
    const compiled = (input.policies ?? []).map((p) => compilePolicyMemo(p, immutable));
    this.compiledInput = compiled;
    const prevIn = prev?.compiledInput;
    if (prevIn && prevIn.length === compiled.length && compiled.every((c, i) => c === prevIn[i])) {
      // The same compiled policies in the same order (a pod or namespace change):
      // share the previous state's sorted lists and per-namespace index (immutable).
      this.policies = prev!.policies;
      this.invalid = prev!.invalid;
      this.byNamespace = prev!.byNamespace;
      for (const c of this.policies) if (!this.namespaces.has(c.namespace)) addNs(c.namespace);
      return;
    }
    this.policies = [];
    this.invalid = [];
    this.byNamespace = new Map();
    const sorted = [...compiled].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    for (const c of sorted) {
      if (isInvalid(c)) {
        this.invalid.push(c);
        continue;
      }
      this.policies.push(c);
      if (!this.namespaces.has(c.namespace)) addNs(c.namespace);
      const list = this.byNamespace.get(c.namespace) ?? [];
      list.push(c);
      this.byNamespace.set(c.namespace, list);
    }
  }

  pod(key: string): PodInfo | undefined {
    return this.pods.get(key);
  }

  namespaceLabels(ns: string): Labels | undefined {
    return this.namespaces.get(ns);
  }

  /** The pod owning this IP (not hostNetwork pods); undefined when none or ambiguous. */
  podByIp(ip: string): PodInfo | undefined {
    const a = parseAddr(ip);
    return a ? this.byIp.get(a.text) ?? undefined : undefined;
  }

  /** True when two running pods claim the IP. */
  ipIsAmbiguous(ip: string): boolean {
    const a = parseAddr(ip);
    return a !== undefined && this.byIp.get(a.text) === null;
  }

  /** Valid policies of a namespace (sorted by key). */
  policiesIn(ns: string): readonly CompiledPolicy[] {
    return this.byNamespace.get(ns) ?? [];
  }

  /** The valid policies that isolate the pod in that direction (sorted by key). */
  isolating(podKey: string, dir: Direction): readonly CompiledPolicy[] {
    let e = this.isolatingCache.get(podKey);
    if (!e) {
      e = { ingress: [], egress: [] };
      const pod = this.pods.get(podKey);
      // NetworkPolicy does not apply to hostNetwork pods: they are the node.
      if (pod && !pod.hostNetwork) {
        for (const p of this.policiesIn(pod.namespace)) {
          if (!p.selects(pod.labels)) continue;
          if (p.ingress) e.ingress.push(p);
          if (p.egress) e.egress.push(p);
        }
      }
      this.isolatingCache.set(podKey, e);
    }
    return e[dir];
  }

  /** Invalid policies of a namespace. */
  invalidIn(ns: string): InvalidPolicy[] {
    return this.invalid.filter((p) => p.namespace === ns);
  }
}

// ---------------------------------------------------------------------------------
// Connections and verdicts

export type ConnEndpoint = { pod: string } | { ip: string };

export interface Connection {
  from: ConnEndpoint;
  to: ConnEndpoint;
  /** Default TCP. */
  protocol?: Protocol;
  /** Destination port after service DNAT. */
  port: number;
  /** The source is the destination pod's own node: always allowed in. */
  fromNode?: boolean;
  /** Address family when both ends are pods (default: the destination pod's first IP). */
  family?: Family;
}

export interface RuleRef {
  policy: string;
  ruleIndex: number;
  /** Absent when the rule matches every peer. */
  peerIndex?: number;
  /** Absent when the rule matches every port. */
  portIndex?: number;
}

export interface DirectionVerdict {
  /** The pod this direction is about (source for egress, destination for ingress); absent when that end is not a pod. */
  subject?: string;
  isolated: boolean;
  /** Policies isolating the subject in this direction. */
  policies: string[];
  allowed: boolean;
  allowedBy?: RuleRef;
}

export interface Verdict {
  allowed: boolean;
  egress: DirectionVerdict;
  ingress: DirectionVerdict;
  reasons: string[];
}

interface Resolved {
  pod?: PodInfo;
  addr?: Addr;
  label: string;
}

export class ConnectionError extends Error {
  override name = 'ConnectionError';
}

const PROTOCOL_SET = new Set<string>(['TCP', 'UDP', 'SCTP']);

function resolveEndpoint(state: PolicyState, ep: ConnEndpoint, role: 'from' | 'to'): { pod?: PodInfo; ip?: Addr; note?: string } {
  if (ep && 'pod' in ep && typeof ep.pod === 'string') {
    const key = ep.pod.includes('/') ? ep.pod : `default/${ep.pod}`;
    const pod = state.pod(key);
    if (!pod) throw new ConnectionError(`${role}: unknown pod ${q(ep.pod)}`);
    return { pod };
  }
  if (ep && 'ip' in ep && typeof ep.ip === 'string') {
    const a = parseAddr(ep.ip);
    if (!a) throw new ConnectionError(`${role}: ${q(ep.ip)} is not an IP address`);
    const pod = state.podByIp(a.text);
    if (pod) return { pod, ip: a, note: `${a.text} is the address of pod ${pod.key}` };
    if (state.ipIsAmbiguous(a.text)) return { ip: a, note: `${a.text} is claimed by more than one pod: treated as a non-pod address` };
    return { ip: a };
  }
  throw new ConnectionError(`${role}: must be {pod: "ns/name"} or {ip: "address"}, got ${q(ep)}`);
}

function finishEndpoint(r: { pod?: PodInfo; ip?: Addr }, family: Family): Resolved {
  const addr = r.ip ?? r.pod?.addrs.find((a) => a.family === family);
  const label = r.pod ? (addr ? `${r.pod.key} (${addr.text})` : `${r.pod.key} (no IPv${family} address)`) : addr!.text;
  const out: Resolved = { label };
  if (r.pod) out.pod = r.pod;
  if (addr) out.addr = addr;
  return out;
}

function peerMatches(state: PolicyState, policy: CompiledPolicy, peer: CompiledPeer, ep: Resolved): boolean {
  if (peer.kind === 'ipBlock') {
    if (!ep.addr || !netContains(peer.cidr, ep.addr.family, ep.addr.bytes)) return false;
    for (const e of peer.except) if (netContains(e, ep.addr.family, ep.addr.bytes)) return false;
    return true;
  }
  const pod = ep.pod;
  if (!pod || pod.hostNetwork) return false;
  if (peer.namespaceSel === null) {
    if (pod.namespace !== policy.namespace) return false;
  } else if (!peer.namespaceSel(state.namespaceLabels(pod.namespace))) return false;
  return peer.podSel(pod.labels);
}

function resolveNamed(pod: PodInfo | undefined, name: string, protocol: Protocol): number | undefined {
  return pod?.namedPorts.find((p) => p.name === name && p.protocol === protocol)?.port;
}

function portMatches(port: CompiledPort, protocol: Protocol, num: number, dest: PodInfo | undefined): boolean {
  if (port.protocol !== protocol) return false;
  switch (port.kind) {
    case 'all':
      return true;
    case 'range':
      return num >= port.from && num <= port.to;
    case 'named':
      return resolveNamed(dest, port.name, protocol) === num;
  }
}

function describePort(port: CompiledPort, dest: PodInfo | undefined): string {
  if (port.kind !== 'named') return `ports[${port.index}] ${port.text}`;
  if (!dest) return `ports[${port.index}] ${port.text} (named ports match only pod destinations)`;
  const n = resolveNamed(dest, port.name, port.protocol);
  return n === undefined
    ? `ports[${port.index}] ${port.text} (${dest.key} has no ${port.protocol} container port named ${q(port.name)})`
    : `ports[${port.index}] ${port.text} = ${n} on ${dest.key}`;
}

function evaluateDirection(
  state: PolicyState,
  dir: Direction,
  subject: PodInfo,
  peer: Resolved,
  dest: PodInfo | undefined,
  protocol: Protocol,
  port: number,
  /** null: no explanation wanted (matrices, DNS): skip building the text. */
  reasons: string[] | null,
): DirectionVerdict {
  const policies = state.isolating(subject.key, dir);
  const Dir = dir === 'ingress' ? 'Ingress' : 'Egress';
  const peersField = dir === 'ingress' ? 'from' : 'to';
  const verdict: DirectionVerdict = { subject: subject.key, isolated: policies.length > 0, policies: policies.map((p) => p.key), allowed: false };
  if (subject.hostNetwork) {
    verdict.allowed = true;
    reasons?.push(`${dir}: ${subject.key} uses the host network: NetworkPolicy does not apply to it`);
    return verdict;
  }
  if (policies.length === 0) {
    verdict.allowed = true;
    reasons?.push(`${dir}: ${subject.key} is not isolated for ${dir} (no policy in namespace ${subject.namespace} selects it with ${Dir} in policyTypes): allowed`);
    return verdict;
  }
  reasons?.push(`${dir}: ${subject.key} is isolated for ${dir} by ${verdict.policies.join(', ')}`);
  const misses: string[] | null = reasons && [];
  for (const p of policies) {
    const rules = dir === 'ingress' ? p.ingress! : p.egress!;
    if (rules.length === 0) {
      misses?.push(`${p.key} has no ${dir} rules (it allows no ${dir} traffic)`);
      continue;
    }
    for (const rule of rules) {
      const where = `${p.key} ${dir}[${rule.index}]`;
      const peerHit = rule.peers === null ? null : rule.peers.find((pp) => peerMatches(state, p, pp, peer));
      const portHit = rule.ports === null ? null : rule.ports.find((pt) => portMatches(pt, protocol, port, dest));
      if (peerHit !== undefined && portHit !== undefined) {
        const ref: RuleRef = { policy: p.key, ruleIndex: rule.index };
        if (peerHit) ref.peerIndex = peerHit.index;
        if (portHit) ref.portIndex = portHit.index;
        verdict.allowed = true;
        verdict.allowedBy = ref;
        if (reasons) {
          const peerText = peerHit ? `${peersField}[${peerHit.index}] ${peerHit.text}` : `every ${dir === 'ingress' ? 'source' : 'destination'}`;
          const portText = portHit ? describePort(portHit, dest) : 'every port';
          reasons.push(`${dir}: allowed by ${where}: ${peer.label} matches ${peerText}; ${protocol}/${port} matches ${portText}`);
        }
        return verdict;
      }
      if (!misses) continue;
      const why: string[] = [];
      if (peerHit === undefined) why.push(`${peer.label} matches none of ${rule.peers!.map((pp) => `${peersField}[${pp.index}] (${pp.text})`).join(', ')}`);
      if (portHit === undefined) why.push(`${protocol}/${port} matches none of ${rule.ports!.map((pt) => describePort(pt, dest)).join(', ')}`);
      misses.push(`${where}: ${why.join('; ')}`);
    }
  }
  reasons?.push(`${dir}: denied: no ${dir} rule of ${verdict.policies.join(', ')} allows ${peer.label} on ${protocol}/${port}`);
  for (const m of misses ?? []) reasons?.push(`${dir}:   ${m}`);
  return verdict;
}

/**
 * Decides whether a connection is allowed, and explains why. Pure: the same state
 * and connection always give the same verdict. Accepts a prebuilt PolicyState
 * (fast: indices are reused) or the raw objects. Throws ConnectionError for a
 * malformed connection or an unknown pod.
 */
export interface EvaluateOptions {
  /** Build the human-readable reasons (default true). Off for bulk use (matrices, DNS). */
  reasons?: boolean;
}

export function evaluate(stateIn: PolicyState | PolicyStateInput, conn: Connection, opts: EvaluateOptions = {}): Verdict {
  const state = stateIn instanceof PolicyState ? stateIn : PolicyState.from(stateIn);
  const protocol = conn.protocol ?? 'TCP';
  if (!PROTOCOL_SET.has(protocol)) throw new ConnectionError(`protocol: unsupported protocol ${q(protocol)} (TCP, UDP, SCTP)`);
  if (!Number.isInteger(conn.port) || conn.port < 1 || conn.port > 65535) throw new ConnectionError(`port: ${q(conn.port)} is not a valid port number (1-65535)`);
  const out: string[] = [];
  const reasons = opts.reasons === false ? null : out;
  const fromR = resolveEndpoint(state, conn.from, 'from');
  const toR = resolveEndpoint(state, conn.to, 'to');
  if (fromR.ip && toR.ip && fromR.ip.family !== toR.ip.family) {
    throw new ConnectionError(`from ${fromR.ip.text} and to ${toR.ip.text} are of different address families`);
  }
  const family: Family =
    toR.ip?.family ?? fromR.ip?.family ?? conn.family ?? toR.pod?.addrs[0]?.family ?? fromR.pod?.addrs[0]?.family ?? 4;
  if (conn.family && conn.family !== family) throw new ConnectionError(`family: IPv${conn.family} does not match the IPv${family} addresses given`);
  const from = finishEndpoint(fromR, family);
  const to = finishEndpoint(toR, family);
  if (fromR.note) reasons?.push(`note: from: ${fromR.note}`);
  if (toR.note) reasons?.push(`note: to: ${toR.note}`);

  // Egress: only a pod source has egress policy.
  let egress: DirectionVerdict;
  // Named ports resolve against the destination's container ports; a hostNetwork
  // pod is its node, whose ports are not the pod's to name.
  const portDest = to.pod && !to.pod.hostNetwork ? to.pod : undefined;
  if (from.pod) {
    egress = evaluateDirection(state, 'egress', from.pod, to, portDest, protocol, conn.port, reasons);
  } else {
    egress = { isolated: false, policies: [], allowed: true };
    reasons?.push(`egress: source ${from.label} is not a pod in the cluster: no egress policy applies`);
  }

  let ingress: DirectionVerdict;
  if (!to.pod) {
    ingress = { isolated: false, policies: [], allowed: true };
    reasons?.push(`ingress: destination ${to.label} is not a pod in the cluster: no ingress policy applies`);
  } else if (conn.fromNode) {
    const pols = state.isolating(to.pod.key, 'ingress').map((p) => p.key);
    ingress = { subject: to.pod.key, isolated: pols.length > 0, policies: pols, allowed: true };
    reasons?.push(`ingress: traffic from ${to.pod.key}'s own node is always allowed${pols.length ? ` (even though ${pols.join(', ')} isolate it)` : ''}`);
  } else {
    ingress = evaluateDirection(state, 'ingress', to.pod, from, portDest, protocol, conn.port, reasons);
  }

  if (reasons) {
    if (from.pod && to.pod && from.pod.key === to.pod.key) {
      reasons.push(
        'note: source and destination are the same pod: this verdict is for traffic that leaves the pod (through a Service back to itself); ' +
          'traffic to its own address stays inside the pod and is never filtered',
      );
    }
    for (const ns of new Set([from.pod?.namespace, to.pod?.namespace].filter((x): x is string => !!x))) {
      for (const bad of state.invalidIn(ns)) reasons.push(`note: ignored invalid policy ${bad.key}: ${bad.reasons.join('; ')}`);
    }
    const seen = new Set<string>();
    for (const key of [...egress.policies, ...ingress.policies]) {
      if (seen.has(key)) continue;
      seen.add(key);
      const p = state.policies.find((x) => x.key === key);
      for (const w of p?.warnings ?? []) reasons.push(`note: ${key}: ${w}`);
    }
  }
  return { allowed: egress.allowed && ingress.allowed, egress, ingress, reasons: out };
}

// ---------------------------------------------------------------------------------
// The normalized form: the compiler's input

/** Ports of an allow entry: numbers only (named ports already resolved). */
export interface PortRange {
  protocol: Protocol;
  /** Absent: every port of the protocol. */
  port?: number;
  /** Inclusive; absent: just `port`. */
  endPort?: number;
}

export type NormalizedPeer =
  | { kind: 'all' }
  /** These pods (keys, sorted); with family, only their addresses of that family. */
  | { kind: 'pods'; pods: string[]; family?: Family }
  | { kind: 'ipBlock'; cidr: string; except: string[] };

export interface AllowEntry {
  policy: string;
  ruleIndex: number;
  /** Absent when the rule matches every peer. */
  peerIndex?: number;
  peer: NormalizedPeer;
  /** null: every port of every protocol. Never empty. */
  ports: PortRange[] | null;
}

export interface EffectiveDirection {
  pod: string;
  direction: Direction;
  /** The isolating policies (sorted). */
  policies: string[];
  /** The union of these is what the pod allows in this direction; empty = deny all. */
  allow: AllowEntry[];
}

const namedGroupsCache = new WeakMap<readonly string[], Map<string, { peer: NormalizedPeer; ports: PortRange[] }[]>>();

/** @internal The policy peer a normalized pods peer stands for (the compiler refreshes its members by it). */
export const peerSource = new WeakMap<NormalizedPeer, { policy: CompiledPolicy; peer: CompiledPeer }>();

function podsPeer(state: PolicyState, policy: CompiledPolicy, peer: CompiledPeer): NormalizedPeer {
  const np: NormalizedPeer = { kind: 'pods', pods: peerPods(state, policy, peer) };
  peerSource.set(np, { policy, peer });
  return np;
}

/** @internal The pods a policy peer matches in this state (sorted; the same array while unchanged). */
export function peerMembers(state: PolicyState, policy: CompiledPolicy, peer: CompiledPeer): readonly string[] {
  return peerPods(state, policy, peer);
}

function peerPods(state: PolicyState, policy: CompiledPolicy, peer: CompiledPeer): string[] {
  let pods = state.peerPodsCache.get(peer)?.pods;
  if (!pods) {
    pods = [];
    for (const pod of state.pods.values()) {
      if (peerMatches(state, policy, peer, { pod, label: pod.key })) pods.push(pod.key);
    }
    pods.sort();
    state.peerPodsCache.set(peer, { policy, pods });
  }
  return pods;
}

function numericPort(p: CompiledPort): PortRange | undefined {
  if (p.kind === 'all') return { protocol: p.protocol };
  if (p.kind === 'range') return p.to === p.from ? { protocol: p.protocol, port: p.from } : { protocol: p.protocol, port: p.from, endPort: p.to };
  return undefined;
}

function ipBlockText(peer: CompiledPeer & { kind: 'ipBlock' }): NormalizedPeer {
  return { kind: 'ipBlock', cidr: peer.cidr.text, except: peer.except.map((e) => e.text) };
}

/**
 * For every isolated (pod, direction): what it allows, as a flat union of entries
 * {peer, ports} with every selector evaluated to a pod set and every named port
 * resolved to numbers (per destination pod). A connection is allowed in a direction
 * iff the pod is not isolated or some entry matches it — exactly what evaluate()
 * decides (allowedByEffective checks this against the evaluator in the tests).
 * Not included: traffic from the pod's own node (always allowed). `only` limits the
 * subjects (a node's compiler needs only its own pods).
 */
export function effectivePolicies(state: PolicyState, only?: (podKey: string) => boolean): EffectiveDirection[] {
  const out: EffectiveDirection[] = [];
  const keys = [...state.pods.keys()].filter((k) => !only || only(k)).sort();
  for (const key of keys) {
    for (const dir of ['ingress', 'egress'] as const) {
      const e = effectiveOf(state, key, dir);
      if (e) out.push(e);
    }
  }
  return out;
}

// Egress named-port groups per (policy, rule, peer): they do not depend on the subject
// pod, so they are computed once per state.
const egressGroupsOf = new WeakMap<PolicyState, Map<string, { peer: NormalizedPeer; ports: PortRange[] }[]>>();
const objIds = new WeakMap<object, number>();
let nextObjId = 1;
const objId = (o: object): number => {
  let id = objIds.get(o);
  if (id === undefined) objIds.set(o, (id = nextObjId++));
  return id;
};
const netSigOf = new WeakMap<PolicyState, string>();
/** Addresses and container ports of every pod (what egress named ports to non-pod peers depend on). */
function netSignature(state: PolicyState): string {
  let s = netSigOf.get(state);
  if (s === undefined) {
    const parts: string[] = [];
    for (const p of state.pods.values()) parts.push(`${p.key}${p.hostNetwork ? 'h' : ''}${p.ips.join(',')}${JSON.stringify(p.namedPorts)}`);
    s = createHash('sha256').update(parts.join('\n')).digest('hex');
    netSigOf.set(state, s);
  }
  return s;
}

/**
 * A key that determines the compiled chain of effectiveOf(state, key, dir) (its
 * rules; pod peer sets are named by identity, their members are not part of it):
 * the isolating policies (compiled objects are memoized), the pod's own container
 * ports (ingress named ports) and, for egress named ports, the peer's member list
 * (the same array while no member joined, left or changed addresses or ports) or,
 * for a non-pod peer, every pod's addresses and ports. Undefined when the pod is
 * not isolated.
 */
const namedPortsJson = new WeakMap<PodInfo, string>();
export function effectiveSignature(state: PolicyState, key: string, dir: Direction): string | undefined {
  // Not the pod's key: pods with equal signatures have equal allow lists.
  const policies = state.isolating(key, dir);
  if (policies.length === 0) return undefined;
  const pod = state.pods.get(key)!;
  const parts: (string | number)[] = [dir];
  let ownPorts = false;
  for (const p of policies) {
    parts.push(objId(p));
    for (const rule of (dir === 'ingress' ? p.ingress : p.egress)!) {
      const named = rule.ports?.some((x) => x.kind === 'named') ?? false;
      if (named && dir === 'ingress') ownPorts = true;
      // Chains name pod peer sets by identity, not content: a member list matters to
      // the chain only where egress named ports split it into groups.
      if (!named || dir !== 'egress') continue;
      for (const peer of rule.peers ?? [null]) {
        if (peer?.kind === 'pods') parts.push(objId(peerPods(state, p, peer)));
        else parts.push(netSignature(state));
      }
    }
  }
  // The pod's own container ports matter once (ingress named ports resolve against them).
  if (ownPorts) {
    let j = namedPortsJson.get(pod);
    if (j === undefined) namedPortsJson.set(pod, (j = JSON.stringify(pod.namedPorts)));
    parts.push(j);
  }
  return parts.join('|');
}

/** What one isolated (pod, direction) allows (see effectivePolicies); undefined when not isolated. */
export function effectiveOf(state: PolicyState, key: string, dir: Direction): EffectiveDirection | undefined {
  let egressGroups = egressGroupsOf.get(state);
  if (!egressGroups) egressGroupsOf.set(state, (egressGroups = new Map()));
  const pod = state.pods.get(key);
  if (!pod) return undefined;
  const policies = state.isolating(key, dir);
  if (policies.length === 0) return undefined;
  const allow: AllowEntry[] = [];
  for (const p of policies) {
    for (const rule of (dir === 'ingress' ? p.ingress : p.egress)!) {
      const peers: (CompiledPeer | null)[] = rule.peers ?? [null];
      for (const peer of peers) {
        const base = { policy: p.key, ruleIndex: rule.index, ...(peer ? { peerIndex: peer.index } : {}) };
        const np: NormalizedPeer =
          peer === null ? { kind: 'all' } : peer.kind === 'ipBlock' ? ipBlockText(peer) : podsPeer(state, p, peer);
        if (rule.ports === null) {
          allow.push({ ...base, peer: np, ports: null });
          continue;
        }
        const numeric = rule.ports.map(numericPort).filter((x): x is PortRange => x !== undefined);
        const named = rule.ports.filter((x): x is CompiledPort & { kind: 'named' } => x.kind === 'named');
        if (dir === 'ingress') {
          // The destination is this pod: resolve against its own container ports.
          for (const n of named) {
            const num = resolveNamed(pod, n.name, n.protocol);
            if (num !== undefined) numeric.push({ protocol: n.protocol, port: num });
          }
          if (numeric.length) allow.push({ ...base, peer: np, ports: numeric });
          continue;
        }
        if (numeric.length) allow.push({ ...base, peer: np, ports: numeric });
        if (named.length === 0) continue;
        // Egress named ports resolve per destination pod: group the destinations
        // the peer can reach by what the names resolve to. This does not depend
        // on the subject pod: computed once per (policy, rule, peer).
        const gkey = `${p.key}|${rule.index}|${peer?.index ?? -1}`;
        const cachedGroups = egressGroups.get(gkey);
        if (cachedGroups) {
          for (const g of cachedGroups) allow.push({ ...base, peer: g.peer, ports: g.ports });
          continue;
        }
        let candidates: PodInfo[];
        let family: Family | undefined;
        // For a pod peer the groups depend only on its member list (the same array
        // while no member changed labels, addresses or container ports) and the names.
        const peerList = peer?.kind === 'pods' ? peerPods(state, p, peer) : undefined;
        const namedSig = JSON.stringify(named.map((n) => [n.name, n.protocol]));
        const crossState = peerList && namedGroupsCache.get(peerList)?.get(namedSig);
        if (crossState) {
          egressGroups.set(gkey, crossState);
          for (const g of crossState) allow.push({ ...base, peer: g.peer, ports: g.ports });
          continue;
        }
        if (peer === null) candidates = [...state.pods.values()].filter((x) => !x.hostNetwork);
        else if (peer.kind === 'pods') candidates = peerList!.map((k) => state.pods.get(k)!);
        else {
          family = peer.cidr.family;
          candidates = [...state.pods.values()].filter((x) => {
            const addr = x.addrs.find((a) => a.family === family);
            return !x.hostNetwork && addr !== undefined && peerMatches(state, p, peer, { pod: x, addr, label: x.key });
          });
        }
        const groups = new Map<string, { ports: PortRange[]; pods: string[] }>();
        for (const c of candidates) {
          const ports: PortRange[] = [];
          for (const n of named) {
            const num = resolveNamed(c, n.name, n.protocol);
            if (num !== undefined && !ports.some((x) => x.protocol === n.protocol && x.port === num)) ports.push({ protocol: n.protocol, port: num });
          }
          if (!ports.length) continue;
          const sig = JSON.stringify(ports);
          const g = groups.get(sig) ?? { ports, pods: [] };
          g.pods.push(c.key);
          groups.set(sig, g);
        }
        const list: { peer: NormalizedPeer; ports: PortRange[] }[] = [];
        for (const g of groups.values()) {
          g.pods.sort();
          list.push({ peer: family ? { kind: 'pods', pods: g.pods, family } : { kind: 'pods', pods: g.pods }, ports: g.ports });
        }
        egressGroups.set(gkey, list);
        if (peerList) {
          let m = namedGroupsCache.get(peerList);
          if (!m) namedGroupsCache.set(peerList, (m = new Map()));
          m.set(namedSig, list);
        }
        for (const g of list) allow.push({ ...base, peer: g.peer, ports: g.ports });
      }
    }
  }
  return { pod: key, direction: dir, policies: policies.map((x) => x.key), allow };
}

const netCache = new Map<string, IpNet>();
function cachedNet(cidr: string): IpNet {
  let n = netCache.get(cidr);
  if (!n) {
    const c = parseCidr(cidr);
    if (typeof c === 'string') throw new Error(`invalid CIDR ${q(cidr)} in a normalized entry: ${c}`);
    n = c.net;
    netCache.set(cidr, n);
  }
  return n;
}

const effectiveIndex = new WeakMap<readonly EffectiveDirection[], Map<string, EffectiveDirection>>();

function entryMatches(state: PolicyState, e: AllowEntry, peer: Resolved, protocol: Protocol, port: number): boolean {
  if (e.ports && !e.ports.some((p) => p.protocol === protocol && (p.port === undefined || (port >= p.port && port <= (p.endPort ?? p.port))))) return false;
  switch (e.peer.kind) {
    case 'all':
      return true;
    case 'pods':
      if (e.peer.family && peer.addr?.family !== e.peer.family) return false;
      return !!peer.pod && e.peer.pods.includes(peer.pod.key);
    case 'ipBlock': {
      if (!peer.addr) return false;
      if (!netContains(cachedNet(e.peer.cidr), peer.addr.family, peer.addr.bytes)) return false;
      return !e.peer.except.some((x) => netContains(cachedNet(x), peer.addr!.family, peer.addr!.bytes));
    }
  }
}

/**
 * Decides a connection from the normalized form alone (what a compiled ruleset
 * does): the reference for checking that a compiler agrees with the evaluator.
 */
export function allowedByEffective(state: PolicyState, effective: readonly EffectiveDirection[], conn: Connection): boolean {
  const protocol = conn.protocol ?? 'TCP';
  const fromR = resolveEndpoint(state, conn.from, 'from');
  const toR = resolveEndpoint(state, conn.to, 'to');
  const family: Family = toR.ip?.family ?? fromR.ip?.family ?? conn.family ?? toR.pod?.addrs[0]?.family ?? fromR.pod?.addrs[0]?.family ?? 4;
  const from = finishEndpoint(fromR, family);
  const to = finishEndpoint(toR, family);
  let index = effectiveIndex.get(effective);
  if (!index) {
    index = new Map(effective.map((e) => [`${e.direction} ${e.pod}`, e]));
    effectiveIndex.set(effective, index);
  }
  const find = (pod: string, dir: Direction) => index.get(`${dir} ${pod}`);
  if (from.pod) {
    const eg = find(from.pod.key, 'egress');
    if (eg && !eg.allow.some((e) => entryMatches(state, e, to, protocol, conn.port))) return false;
  }
  if (to.pod && !conn.fromNode) {
    const ing = find(to.pod.key, 'ingress');
    if (ing && !ing.allow.some((e) => entryMatches(state, e, from, protocol, conn.port))) return false;
  }
  return true;
}
