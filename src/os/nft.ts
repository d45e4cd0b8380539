// nftables through the `nft` binary, the way kube-proxy's knftables does it: a whole
// transaction is built as structured operations, rendered to text and piped to
// `nft -f -`, so it applies atomically or not at all; tables are read back with
// `nft -j list table`.
//
// The builder never throws while building. The first invalid operation (an unsafe
// name, a malformed address, a port out of range) is recorded, the operation is
// dropped, and `Nft.run` refuses the transaction with that error. Nothing that came
// from the cluster reaches nft unchecked: names must match SAFE_NAME (callers build
// them with `hashedName`), comments are stripped of quotes/backslashes/control
// characters and capped, and every literal is validated against its nft type.
//
// Rules are either raw text (escape hatch; the fake only checks their references and
// the tracer cannot interpret them) or, preferably, a list of structured expressions
// (`Expr`). Structured rules are the single source of truth: `renderRule` turns them
// into nft syntax, and the packet tracer (nft-trace.ts) interprets the same objects.
//
// Usage:
//   const tx = new Transaction('ip', 'skiff-proxy');
//   tx.add({ kind: 'table', comment: 'skiff service proxy' });
//   tx.add({ kind: 'chain', name: 'nat-prerouting', type: 'nat', hook: 'prerouting', priority: 'dstnat' });
//   tx.add({ kind: 'map', name: 'service-ips', type: ['ipv4_addr', 'inet_proto', 'inet_service'], value: 'verdict' });
//   tx.add({ kind: 'rule', chain: 'nat-prerouting', rule: [{ vmap: { set: 'service-ips' }, key: ['ip daddr', 'meta l4proto', 'th dport'] }] });
//   tx.add({ kind: 'element', set: 'service-ips', key: ['10.96.0.1', 'tcp', 443], value: { goto: 'service-x' } });
//   await new Nft(realExec, { netns: 'skt-abc' }).run(tx);
import { createHash } from 'node:crypto';
import type { Executor, ExecOptions } from './exec.js';
import { bytesToIp, ipToBytes, isIPv4, isIPv6 } from '../util/ip.js';

// ---------------------------------------------------------------------------------
// Vocabulary

export type TableFamily = 'ip' | 'ip6' | 'inet' | 'arp' | 'bridge' | 'netdev';
export type Hook = 'prerouting' | 'input' | 'forward' | 'output' | 'postrouting' | 'ingress';
export type ChainType = 'filter' | 'nat' | 'route';
/** Named priorities (ip/ip6/inet values) or a number; "filter - 10" style offsets allowed. */
export type Priority = number | string;
export const NAMED_PRIORITIES: Record<string, number> = { raw: -300, mangle: -150, dstnat: -100, filter: 0, security: 50, srcnat: 100 };

/**
 * nft data types usable as set/map keys and map values. `numgen` is the value of a
 * `numgen` expression (a host-order 32-bit integer); nft has no type name for it, so
 * a map keyed by it is declared with `typeof numgen inc mod 2 : ...`.
 */
export type KeyType = 'ipv4_addr' | 'ipv6_addr' | 'inet_proto' | 'inet_service' | 'ifname' | 'mark' | 'numgen';

/** Packet fields a structured rule can read; each has a KeyType (SELECTOR_TYPES). */
export type Selector =
  | 'ip saddr'
  | 'ip daddr'
  | 'ip6 saddr'
  | 'ip6 daddr'
  | 'meta l4proto'
  | 'th sport'
  | 'th dport'
  | 'meta mark'
  | 'ct mark'
  | 'iifname'
  | 'oifname';

export const SELECTOR_TYPES: Record<Selector, KeyType> = {
  'ip saddr': 'ipv4_addr',
  'ip daddr': 'ipv4_addr',
  'ip6 saddr': 'ipv6_addr',
  'ip6 daddr': 'ipv6_addr',
  'meta l4proto': 'inet_proto',
  'th sport': 'inet_service',
  'th dport': 'inet_service',
  'meta mark': 'mark',
  'ct mark': 'mark',
  iifname: 'ifname',
  oifname: 'ifname',
};

/**
 * One value of a key component: an address ("10.0.0.1"), a prefix ("10.0.0.0/8") or
 * range ("10.0.0.1-10.0.0.9") in interval sets, a protocol name or number, a port or
 * port range ("80-90"), an interface name (glob "veth*" allowed), a mark.
 */
export type Literal = string | number;
export interface SetRef {
  set: string;
}
export type CtState = 'new' | 'established' | 'related' | 'invalid' | 'untracked';
export type L4Proto = 'tcp' | 'udp' | 'sctp' | 'udplite' | 'icmp' | 'icmpv6';
export type RejectWith = 'default' | 'icmp port-unreachable' | 'icmpv6 port-unreachable' | 'icmpx port-unreachable' | 'tcp reset' | 'icmp admin-prohibited' | 'icmpv6 admin-prohibited';

/** A verdict: as a rule's final expression, a verdict-map value, or a numgen vmap entry. */
export type VerdictExpr = { verdict: 'accept' | 'drop' | 'return' | 'continue' } | { jump: string } | { goto: string };

/**
 * A structured rule expression. A rule is a list of them, evaluated left to right
 * exactly as nft does: a failing match ends the rule, statements act, a verdict ends
 * evaluation. Every variant renders to one nft fragment (renderExpr).
 */
export type Expr =
  /** `ip saddr 10.0.0.1`, `ip saddr != 10.0.0.0/8`, `th dport { 80, 443 }`, `ip saddr . th dport @set`. */
  | { match: Selector | readonly Selector[]; op?: '==' | '!='; value: Literal | readonly Literal[] | SetRef }
  /** `fib daddr type local` / `fib daddr type != local`. */
  | { fib: 'saddr' | 'daddr'; type: 'local'; op?: '==' | '!=' }
  /** `ct state established,related` / `ct state != established`. */
  | { ctState: readonly CtState[]; op?: '==' | '!=' }
  /** `meta mark & MASK == VALUE` (or !=). */
  | { markMask: number; op?: '==' | '!='; value: number }
  | { counter: true }
  /** `meta mark set VALUE` / `meta mark set meta mark | VALUE` / `... ^ VALUE`. */
  | { setMark: number; how?: 'set' | 'or' | 'xor' }
  /** `update @set { ip saddr }`: adds/refreshes the packet's key in a dynamic set (its timeout restarts). */
  | { update: string; key: readonly Selector[] }
  /** `dnat to ADDR[:PORT]` (a terminal statement). In inet tables rendered `dnat ip to` / `dnat ip6 to`. */
  | { dnat: string; port?: number }
  /** `masquerade [fully-random]` (terminal). */
  | { masquerade: true; fullyRandom?: boolean }
  /** `reject [with ...]` (terminal). */
  | { reject: RejectWith }
  /** `KEY vmap @map`: a miss means the rule does not match. */
  | { vmap: SetRef; key: readonly Selector[] }
  /** `numgen inc|random mod N vmap { 0 : v0, 1 : v1, ... }`; entry i is taken when the generator yields i. */
  | { numgen: 'inc' | 'random'; vmap: readonly VerdictExpr[] }
  /**
   * `numgen inc|random mod N V`: matches when this expression's generator yields V.
   * Each expression has its own generator (an `inc` counter advances every time the
   * expression is evaluated), so a cascade of rules `mod N 0`, `mod N-1 0`, ..., and a
   * last unconditional rule picks the N targets in exact rotation (inc) or uniformly
   * (random) without a set.
   */
  | { numgenMatch: 'inc' | 'random'; mod: number; value: number }
  /**
   * `dnat to numgen inc|random mod N [offset B] map @MAP` (terminal): the generator
   * picks index B..B+N-1 and MAP (key type numgen, value address . inet_service) gives the target.
   * One rule balances over N endpoints, and replacing endpoints only rewrites the
   * map's elements, which, unlike a rule with a verdict or NAT, does not make the
   * kernel re-validate the whole table. A missing element means no match. In inet
   * tables `ip6` selects `dnat ip6 to`.
   */
  | { dnatNumgen: 'inc' | 'random'; mod: number; offset?: number; map: string; ip6?: boolean }
  | VerdictExpr;

// ---------------------------------------------------------------------------------
// Objects and operations

export interface TableObj {
  kind: 'table';
  comment?: string;
}
export interface ChainObj {
  kind: 'chain';
  name: string;
  /** Base chains: all of type, hook and priority. Regular chains: none of them. */
  type?: ChainType;
  hook?: Hook;
  priority?: Priority;
  policy?: 'accept' | 'drop';
  /** netdev ingress only. */
  device?: string;
  comment?: string;
}
export type SetFlag = 'interval' | 'timeout' | 'dynamic' | 'constant';
export interface SetObj {
  kind: 'set';
  name: string;
  /** One type, or several for a concatenation ("ipv4_addr . inet_service"). */
  type: readonly KeyType[];
  flags?: readonly SetFlag[];
  /** Default element timeout in seconds (needs flag "timeout" or "dynamic"). */
  timeout?: number;
  size?: number;
  comment?: string;
}
export interface MapObj {
  kind: 'map';
  name: string;
  type: readonly KeyType[];
  /** "verdict" for verdict maps (vmap), else the data type(s). */
  value: 'verdict' | readonly KeyType[];
  /**
   * Maps declared with typeof (keyed by `numgen`): the transport protocol whose port an
   * inet_service value is (`tcp dport`, ...). nft 1.0.6 reads a `th dport` typeof back
   * from the kernel in a way that conflicts with `meta l4proto tcp` in a later rule.
   */
  portProto?: 'tcp' | 'udp' | 'sctp';
  flags?: readonly SetFlag[];
  timeout?: number;
  size?: number;
  comment?: string;
}
export interface RuleObj {
  kind: 'rule';
  chain: string;
  /** Structured expressions (preferred) or nft rule text (not interpretable by the tracer). */
  rule: readonly Expr[] | string;
  comment?: string;
}
export interface ElementObj {
  kind: 'element';
  /** The set or map the element belongs to. */
  set: string;
  /** One literal per key component (a concatenation has several). */
  key: readonly Literal[];
  /** Maps only: a verdict (verdict maps) or the data literals. */
  value?: VerdictExpr | readonly Literal[];
  /** Seconds; the set needs the "timeout" flag. */
  timeout?: number;
  comment?: string;
}
export type NftObject = TableObj | ChainObj | SetObj | MapObj | RuleObj | ElementObj;

/** What flush/delete name: an object without its definition. */
export type ObjRef =
  | { kind: 'table' }
  | { kind: 'chain'; name: string }
  | { kind: 'set'; name: string }
  | { kind: 'map'; name: string }
  | { kind: 'element'; set: string; key: readonly Literal[] }
  | { kind: 'rule'; chain: string; handle: number };

export type Op =
  | { verb: 'add' | 'create'; obj: NftObject }
  | { verb: 'insert'; obj: RuleObj }
  | { verb: 'flush'; obj: Extract<ObjRef, { kind: 'table' | 'chain' | 'set' | 'map' }> }
  | { verb: 'delete'; obj: ObjRef };

// ---------------------------------------------------------------------------------
// Validation and quoting

/** Names nft accepts unquoted and that cannot carry syntax: a letter first, then [A-Za-z0-9_-./]. */
export const SAFE_NAME = /^[A-Za-z][A-Za-z0-9_\-./]*$/;
/** nft allows 255 characters; stay well below so prefixes can be added. */
export const MAX_NAME = 200;
export const MAX_COMMENT = 128;

export class NftError extends Error {
  constructor(
    message: string,
    /** nft's stderr when the binary ran. */
    readonly stderr = '',
    /** The transaction line nft complained about (1-based), when known. */
    readonly line?: number,
  ) {
    super(message);
    this.name = 'NftError';
  }
}

/**
 * Words nft's scanner turns into keywords in every context (nftables src/scanner.l,
 * the rules without a start condition): a table, chain or set with such a name is a
 * syntax error ("fwd", "counter", "accept", ...), and nft 1.0.x cannot quote names.
 * Hook and family-ish words like input, forward, filter, nat are not keywords.
 */
const NFT_KEYWORDS = new Set(
  (
    'eq ne le lt ge gt lshift rshift xor and or not vmap include define redefine undefine describe hook device devices ' +
    'table chain rule set element map flowtable handle ruleset socket tproxy accept drop continue jump goto return inet ' +
    'netdev add replace update create insert delete get list reset flush rename import export monitor destroy position ' +
    'index comment constant interval dynamic auto-merge timeout gc-interval elements expires policy size flow offload ' +
    'meter counter last log queue limit quota hour day reject snat dnat masquerade redirect random th bridge ether type ' +
    'typeof vlan arp ip ecn time icmp icmpv6 igmp ip6 priority ah esp comp flags udp udplite vxlan vni geneve gre gretap ' +
    'tcp dccp sctp rt rt0 rt2 srh hbh frag dst mh meta mark iif iifname iiftype oif oifname oiftype skuid skgid nftrace ' +
    'rtclassid ibriport ibrname obriport obrname pkttype cpu iifgroup oifgroup cgroup ct numgen jhash symhash dup fwd fib ' +
    'osf synproxy tunnel notrack all exists missing exthdr ipsec secmark xt 8021ad 8021q'
  ).split(' '),
);

export function checkName(what: string, name: string): string | undefined {
  if (typeof name !== 'string' || !SAFE_NAME.test(name)) return `${what} name ${JSON.stringify(name)} is not safe for nft (a letter, then letters, digits, "_", "-", ".", "/")`;
  if (NFT_KEYWORDS.has(name)) return `${what} name ${JSON.stringify(name)} is an nft keyword (nft cannot quote names; pick another)`;
  if (name.length > MAX_NAME) return `${what} name ${JSON.stringify(name.slice(0, 40))}... is longer than ${MAX_NAME} characters`;
  return undefined;
}

/** Replaces every character outside [A-Za-z0-9_-./] by "_" (readable parts of generated names). */
export function sanitizeNamePart(s: string): string {
  return s.replace(/[^A-Za-z0-9_\-./]/g, '_');
}

/**
 * A name that is unique for `identity` and readable: `PREFIX-HASH-readable`, with the
 * readable part sanitized and cut so the whole stays within MAX_NAME. The hash covers
 * the unsanitized identity, so two identities that sanitize alike still differ.
 */
export function hashedName(prefix: string, identity: string, readable: string): string {
  const h = createHash('sha256').update(identity).digest('base64url').replace(/[-_]/g, 'x').slice(0, 8).toUpperCase();
  const head = `${prefix}-${h}-`;
  return head + sanitizeNamePart(readable).slice(0, MAX_NAME - head.length);
}

/** A comment as an nft string: printable ASCII only, no quotes or backslashes, capped. */
export function quoteComment(s: string): string {
  const clean = String(s)
    .replace(/[^\x20-\x7e]/g, ' ')
    .replace(/["\\]/g, '')
    .slice(0, MAX_COMMENT);
  return `"${clean}"`;
}

const PROTO_NAMES: Record<number, string> = { 1: 'icmp', 6: 'tcp', 17: 'udp', 58: 'icmpv6', 132: 'sctp', 136: 'udplite' };
const PROTO_NUMBERS: Record<string, number> = Object.fromEntries(Object.entries(PROTO_NAMES).map(([n, s]) => [s, Number(n)]));

export function protoNumber(p: string | number): number | undefined {
  if (typeof p === 'number') return Number.isInteger(p) && p >= 0 && p <= 255 ? p : undefined;
  return PROTO_NUMBERS[p];
}

function canonIp(s: string, v: 4 | 6): string | undefined {
  if (v === 4 ? !isIPv4(s) : !isIPv6(s) || s.includes('%')) return undefined;
  // node's isIPv4 accepts only canonical dotted quads (no leading zeros): nothing to do.
  if (v === 4) return s;
  return bytesToIp(ipToBytes(s));
}

/**
 * Validates one literal for an nft type and returns its canonical text (the form the
 * fake stores and the tracer compares), or throws with a message naming the value.
 * `interval` allows prefixes and ranges.
 */
export function canonLiteral(type: KeyType, v: Literal, interval = true): string {
  const bad = (why: string): never => {
    throw new NftError(`invalid ${type} value ${JSON.stringify(v)}: ${why}`);
  };
  switch (type) {
    case 'ipv4_addr':
    case 'ipv6_addr': {
      const fam = type === 'ipv4_addr' ? 4 : 6;
      if (typeof v !== 'string') return bad('not an address');
      // The common case first: a plain address (no prefix, no range) needs no regex.
      if (!v.includes('/') && !v.includes('-')) return canonIp(v, fam) ?? bad(`not an IPv${fam} address`);
      const max = fam === 4 ? 32 : 128;
      const pm = /^([^/]+)\/(\d{1,3})$/.exec(v);
      if (pm) {
        if (!interval) bad('prefix not allowed here');
        const ip = canonIp(pm[1]!, fam);
        const len = Number(pm[2]);
        if (!ip || len > max) bad(`not an IPv${fam} prefix`);
        // nft stores the network address; do the same so comparisons are exact.
        const b = ipToBytes(ip!);
        for (let i = 0; i < b.length; i++) {
          const bits = Math.max(0, Math.min(8, len - i * 8));
          b[i] = b[i]! & (0xff << (8 - bits)) & 0xff;
        }
        return `${bytesToIp(b)}/${len}`;
      }
      const rm = /^([0-9a-fA-F.:]+)-([0-9a-fA-F.:]+)$/.exec(v);
      if (rm) {
        if (!interval) bad('range not allowed here');
        const a = canonIp(rm[1]!, fam);
        const b = canonIp(rm[2]!, fam);
        if (!a || !b) bad(`not an IPv${fam} range`);
        return `${a}-${b}`;
      }
      return canonIp(v, fam) ?? bad(`not an IPv${fam} address`);
    }
    case 'inet_proto': {
      const n = protoNumber(typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : v);
      if (n === undefined) bad('not a protocol (tcp, udp, sctp, udplite, icmp, icmpv6 or 0-255)');
      return PROTO_NAMES[n!] ?? String(n);
    }
    case 'inet_service': {
      const port = (x: string | number) => {
        const n = typeof x === 'number' ? x : /^\d{1,5}$/.test(x) ? Number(x) : NaN;
        return Number.isInteger(n) && n >= 0 && n <= 65535 ? n : bad('not a port 0-65535');
      };
      if (typeof v === 'string' && v.includes('-')) {
        if (!interval) bad('range not allowed here');
        const [a, b] = v.split('-') as [string, string];
        const lo = port(a);
        const hi = port(b);
        if (lo > hi) bad('empty range');
        return `${lo}-${hi}`;
      }
      return String(port(v));
    }
    case 'mark': {
      const n = typeof v === 'number' ? v : /^(0x[0-9a-fA-F]{1,8}|\d{1,10})$/.test(v) ? Number(v) : NaN;
      if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) bad('not a 32-bit mark');
      return `0x${n.toString(16).padStart(8, '0')}`;
    }
    case 'numgen': {
      const n = typeof v === 'number' ? v : /^\d{1,10}$/.test(v) ? Number(v) : NaN;
      if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) bad('not a 32-bit unsigned integer');
      return String(n);
    }
    case 'ifname': {
      if (typeof v !== 'string' || !/^[A-Za-z0-9_.\-@:]{1,15}\*?$/.test(v) || v.length > 16) bad('not an interface name');
      return `"${v}"`;
    }
  }
}

/**
 * Throws like canonLiteral on an invalid literal, without building its canonical text
 * for the common plain values (a transaction checks every element literal it takes).
 */
function checkLiteral(type: KeyType, v: Literal): void {
  if (typeof v === 'number') {
    const max = type === 'inet_service' ? 65535 : type === 'inet_proto' ? 255 : type === 'numgen' || type === 'mark' ? 0xffffffff : -1;
    if (Number.isInteger(v) && v >= 0 && v <= max) return;
  } else if (type === 'ipv4_addr' && isIPv4(v)) return;
  canonLiteral(type, v);
}

function checkVerdict(v: VerdictExpr): void {
  if ('jump' in v || 'goto' in v) {
    const target = 'jump' in v ? v.jump : v.goto;
    const why = checkName('chain', target);
    if (why) throw new NftError(why);
  } else if (!['accept', 'drop', 'return', 'continue'].includes(v.verdict)) {
    throw new NftError(`invalid verdict ${JSON.stringify(v.verdict)}`);
  }
}

function checkTypes(what: string, types: readonly KeyType[]): void {
  if (!Array.isArray(types) || types.length === 0) throw new NftError(`${what}: no type`);
  for (const t of types) if (!(t in TYPE_ORDER)) throw new NftError(`${what}: unknown type ${JSON.stringify(t)}`);
}
const TYPE_ORDER: Record<KeyType, number> = { ipv4_addr: 0, ipv6_addr: 1, inet_proto: 2, inet_service: 3, ifname: 4, mark: 5, numgen: 6 };

function selectorTypes(sel: Selector | readonly Selector[]): KeyType[] {
  const list = typeof sel === 'string' ? [sel] : sel;
  return list.map((s) => {
    const t = SELECTOR_TYPES[s];
    if (!t) throw new NftError(`unknown selector ${JSON.stringify(s)}`);
    return t;
  });
}

/** Throws on the first problem of a structured rule. */
export function checkExprs(exprs: readonly Expr[]): void {
  if (!Array.isArray(exprs) || exprs.length === 0) throw new NftError('empty rule');
  for (const e of exprs) {
    if ('match' in e) {
      const types = selectorTypes(e.match);
      const v = e.value;
      if (typeof v === 'object' && v !== null && !Array.isArray(v)) {
        const why = checkName('set', (v as SetRef).set);
        if (why) throw new NftError(why);
      } else {
        if (types.length !== 1) throw new NftError('a concatenated match needs a named set');
        const list = Array.isArray(v) ? (v as Literal[]) : [v as Literal];
        if (list.length === 0) throw new NftError('empty anonymous set');
        for (const x of list) canonLiteral(types[0]!, x);
      }
    } else if ('fib' in e) {
      if (e.type !== 'local') throw new NftError(`unsupported fib type ${JSON.stringify(e.type)}`);
    } else if ('ctState' in e) {
      if (e.ctState.length === 0) throw new NftError('empty ct state list');
      for (const s of e.ctState) if (!['new', 'established', 'related', 'invalid', 'untracked'].includes(s)) throw new NftError(`invalid ct state ${JSON.stringify(s)}`);
    } else if ('markMask' in e) {
      canonLiteral('mark', e.markMask);
      canonLiteral('mark', e.value);
    } else if ('setMark' in e) {
      canonLiteral('mark', e.setMark);
    } else if ('update' in e) {
      const why = checkName('set', e.update);
      if (why) throw new NftError(why);
      selectorTypes(e.key);
    } else if ('dnat' in e) {
      if (!isIPv4(e.dnat) && !isIPv6(e.dnat)) throw new NftError(`invalid dnat address ${JSON.stringify(e.dnat)}`);
      if (e.port !== undefined) canonLiteral('inet_service', e.port, false);
    } else if ('numgenMatch' in e) {
      if (e.numgenMatch !== 'inc' && e.numgenMatch !== 'random') throw new NftError(`invalid numgen mode ${JSON.stringify(e.numgenMatch)}`);
      if (!Number.isInteger(e.mod) || e.mod < 1 || e.mod > 0xffffffff) throw new NftError(`invalid numgen modulus ${JSON.stringify(e.mod)}`);
      if (!Number.isInteger(e.value) || e.value < 0 || e.value >= e.mod) throw new NftError(`invalid numgen value ${JSON.stringify(e.value)} (0 to ${e.mod - 1})`);
    } else if ('dnatNumgen' in e) {
      if (e.dnatNumgen !== 'inc' && e.dnatNumgen !== 'random') throw new NftError(`invalid numgen mode ${JSON.stringify(e.dnatNumgen)}`);
      if (!Number.isInteger(e.mod) || e.mod < 1 || e.mod > 0xffffffff) throw new NftError(`invalid numgen modulus ${JSON.stringify(e.mod)}`);
      if (e.offset !== undefined && (!Number.isInteger(e.offset) || e.offset < 0 || e.offset + e.mod - 1 > 0xffffffff)) throw new NftError(`invalid numgen offset ${JSON.stringify(e.offset)}`);
      const why = checkName('map', e.map);
      if (why) throw new NftError(why);
    } else if ('numgen' in e) {
      if (e.numgen !== 'inc' && e.numgen !== 'random') throw new NftError(`invalid numgen mode ${JSON.stringify(e.numgen)}`);
      if (e.vmap.length === 0) throw new NftError('numgen with no entries');
      e.vmap.forEach(checkVerdict);
    } else if ('vmap' in e) {
      const why = checkName('map', e.vmap.set);
      if (why) throw new NftError(why);
      selectorTypes(e.key);
    } else if ('reject' in e) {
      if (!['default', 'icmp port-unreachable', 'icmpv6 port-unreachable', 'icmpx port-unreachable', 'tcp reset', 'icmp admin-prohibited', 'icmpv6 admin-prohibited'].includes(e.reject)) {
        throw new NftError(`invalid reject type ${JSON.stringify(e.reject)}`);
      }
    } else if ('counter' in e || 'masquerade' in e) {
      // nothing to check
    } else if ('jump' in e || 'goto' in e || 'verdict' in e) {
      checkVerdict(e);
    } else {
      throw new NftError(`unknown rule expression ${JSON.stringify(e)}`);
    }
  }
}

// ---------------------------------------------------------------------------------
// Rendering (shared by Transaction.toText and the fake's dump)

export function renderVerdict(v: VerdictExpr): string {
  if ('jump' in v) return `jump ${v.jump}`;
  if ('goto' in v) return `goto ${v.goto}`;
  return v.verdict;
}

function renderLiteral(type: KeyType, v: Literal): string {
  return canonLiteral(type, v);
}

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

/** One expression as nft text, in a table of `family`. */
export function renderExpr(e: Expr, family: TableFamily): string {
  if ('match' in e) {
    const sels = typeof e.match === 'string' ? [e.match] : e.match;
    const lhs = sels.join(' . ');
    const op = e.op === '!=' ? '!= ' : '';
    const v = e.value;
    if (typeof v === 'object' && v !== null && !Array.isArray(v)) return `${lhs} ${op}@${(v as SetRef).set}`;
    const t = SELECTOR_TYPES[sels[0]!];
    if (Array.isArray(v)) return `${lhs} ${op}{ ${(v as Literal[]).map((x) => renderLiteral(t, x)).join(', ')} }`;
    return `${lhs} ${op}${renderLiteral(t, v as Literal)}`;
  }
  if ('fib' in e) return `fib ${e.fib} type ${e.op === '!=' ? '!= ' : ''}${e.type}`;
  if ('ctState' in e) return `ct state ${e.op === '!=' ? '!= ' : ''}${e.ctState.join(',')}`;
  if ('markMask' in e) return `meta mark & ${hex(e.markMask)} ${e.op ?? '=='} ${hex(e.value)}`;
  if ('counter' in e) return 'counter';
  if ('setMark' in e) {
    if ((e.how ?? 'set') === 'set') return `meta mark set ${hex(e.setMark)}`;
    return `meta mark set meta mark ${e.how === 'or' ? '|' : '^'} ${hex(e.setMark)}`;
  }
  if ('update' in e) return `update @${e.update} { ${e.key.join(' . ')} }`;
  if ('dnat' in e) {
    const v6 = isIPv6(e.dnat);
    const fam = family === 'inet' ? (v6 ? ' ip6' : ' ip') : '';
    const addr = canonIp(e.dnat, v6 ? 6 : 4) ?? e.dnat;
    const target = e.port === undefined ? addr : v6 ? `[${addr}]:${e.port}` : `${addr}:${e.port}`;
    return `dnat${fam} to ${target}`;
  }
  if ('masquerade' in e) return e.fullyRandom ? 'masquerade fully-random' : 'masquerade';
  if ('reject' in e) {
    if (e.reject === 'default') return 'reject';
    if (e.reject === 'tcp reset') return 'reject with tcp reset';
    const [kind, code] = e.reject.split(' ') as [string, string];
    return `reject with ${kind} type ${code}`;
  }
  if ('numgenMatch' in e) return `numgen ${e.numgenMatch} mod ${e.mod} ${e.value}`;
  if ('dnatNumgen' in e) return `dnat${family === 'inet' ? (e.ip6 ? ' ip6' : ' ip') : ''} to numgen ${e.dnatNumgen} mod ${e.mod}${e.offset ? ` offset ${e.offset}` : ''} map @${e.map}`;
  if ('numgen' in e) return `numgen ${e.numgen} mod ${e.vmap.length} vmap { ${e.vmap.map((v, i) => `${i} : ${renderVerdict(v)}`).join(', ')} }`;
  if ('vmap' in e) return `${e.key.join(' . ')} vmap @${e.vmap.set}`;
  return renderVerdict(e);
}

export function renderRule(rule: readonly Expr[] | string, family: TableFamily, comment?: string): string {
  const body = typeof rule === 'string' ? rule : rule.map((e) => renderExpr(e, family)).join(' ');
  return comment !== undefined ? `${body} comment ${quoteComment(comment)}` : body;
}

export function renderKey(types: readonly KeyType[], key: readonly Literal[]): string {
  return key.map((k, i) => renderLiteral(types[i]!, k)).join(' . ');
}

/** Canonical key string (the fake's element index). */
export function keyString(types: readonly KeyType[], key: readonly Literal[]): string {
  return key.map((k, i) => canonLiteral(types[i]!, k)).join(' . ');
}

export function renderPriority(p: Priority): string {
  return typeof p === 'number' ? String(p) : p;
}

/** Resolves "dstnat", "filter - 10", -100 ... to a number. */
export function priorityValue(p: Priority): number {
  if (typeof p === 'number') return p;
  const m = /^([a-z]+)(?:\s*([+-])\s*(\d+))?$/.exec(p.trim());
  if (!m || !(m[1]! in NAMED_PRIORITIES)) throw new NftError(`invalid priority ${JSON.stringify(p)}`);
  const off = m[3] ? Number(m[3]) * (m[2] === '-' ? -1 : 1) : 0;
  return NAMED_PRIORITIES[m[1]!]! + off;
}

/** The expression `typeof` names for a data type (maps keyed by `numgen` need typeof). */
const TYPEOF: Record<KeyType, string> = { ipv4_addr: 'ip daddr', ipv6_addr: 'ip6 daddr', inet_proto: 'meta l4proto', inet_service: 'th dport', ifname: 'iifname', mark: 'meta mark', numgen: 'numgen inc mod 2' };

export function renderSetBody(o: SetObj | MapObj): string {
  const parts: string[] = [];
  if (o.type.includes('numgen')) {
    const tof = (t: KeyType) => (t === 'inet_service' && o.kind === 'map' && o.portProto ? `${o.portProto} dport` : TYPEOF[t]);
    const value = o.kind === 'map' ? ` : ${o.value === 'verdict' ? 'verdict' : o.value.map(tof).join(' . ')}` : '';
    parts.push(`typeof ${o.type.map((t) => TYPEOF[t]).join(' . ')}${value}`);
  } else {
    const value = o.kind === 'map' ? ` : ${o.value === 'verdict' ? 'verdict' : o.value.join(' . ')}` : '';
    parts.push(`type ${o.type.join(' . ')}${value}`);
  }
  if (o.flags?.length) parts.push(`flags ${[...o.flags].sort().join(',')}`);
  if (o.timeout !== undefined) parts.push(`timeout ${o.timeout}s`);
  if (o.size !== undefined) parts.push(`size ${o.size}`);
  if (o.comment !== undefined) parts.push(`comment ${quoteComment(o.comment)}`);
  return parts.join(' ; ');
}

export function renderChainBody(o: ChainObj): string | undefined {
  const parts: string[] = [];
  if (o.hook) {
    const dev = o.device ? ` device "${o.device}"` : '';
    parts.push(`type ${o.type} hook ${o.hook}${dev} priority ${renderPriority(o.priority!)}`);
    parts.push(`policy ${o.policy ?? 'accept'}`);
  }
  if (o.comment !== undefined) parts.push(`comment ${quoteComment(o.comment)}`);
  return parts.length ? parts.join(' ; ') : undefined;
}

/** Renders an element (key [timeout] [comment] [: value]) for a set/map of the given types. */
export function renderElement(types: readonly KeyType[], valueTypes: 'verdict' | readonly KeyType[] | undefined, e: Pick<ElementObj, 'key' | 'value' | 'timeout' | 'comment'>): string {
  let s = renderKey(types, e.key);
  if (e.timeout !== undefined) s += ` timeout ${e.timeout}s`;
  if (e.comment !== undefined) s += ` comment ${quoteComment(e.comment)}`;
  if (e.value !== undefined) {
    if (Array.isArray(e.value)) s += ` : ${renderKey(valueTypes as KeyType[], e.value as Literal[])}`;
    else s += ` : ${renderVerdict(e.value as VerdictExpr)}`;
  }
  return s;
}

// ---------------------------------------------------------------------------------
// The transaction

/** Validates an operation; throws NftError describing the first problem. */
function validate(op: Op): void {
  const o = op.obj;
  switch (o.kind) {
    case 'table':
      return;
    case 'chain': {
      const why = checkName('chain', o.name);
      if (why) throw new NftError(why);
      if (op.verb === 'add' || op.verb === 'create') {
        const c = o as ChainObj;
        const base = [c.type, c.hook, c.priority].filter((x) => x !== undefined).length;
        if (base !== 0 && base !== 3) throw new NftError(`chain ${c.name}: a base chain needs type, hook and priority`);
        if (base === 0 && c.policy) throw new NftError(`chain ${c.name}: policy on a regular chain`);
        if (c.priority !== undefined) {
          priorityValue(c.priority);
          // nft 1.0.x accepts the names dstnat/srcnat only on prerouting/postrouting; use numbers elsewhere.
          const named = typeof c.priority === 'string' ? /^[a-z]+/.exec(c.priority.trim())?.[0] : undefined;
          if ((named === 'dstnat' && c.hook !== 'prerouting') || (named === 'srcnat' && c.hook !== 'postrouting')) {
            throw new NftError(`chain ${c.name}: priority ${JSON.stringify(c.priority)} is not valid on hook ${c.hook} (use a number, e.g. ${priorityValue(c.priority)})`);
          }
        }
        if (c.type && !['filter', 'nat', 'route'].includes(c.type)) throw new NftError(`chain ${c.name}: invalid type ${JSON.stringify(c.type)}`);
        if (c.hook && !['prerouting', 'input', 'forward', 'output', 'postrouting', 'ingress'].includes(c.hook)) throw new NftError(`chain ${c.name}: invalid hook ${JSON.stringify(c.hook)}`);
        if (c.policy && c.policy !== 'accept' && c.policy !== 'drop') throw new NftError(`chain ${c.name}: invalid policy ${JSON.stringify(c.policy)}`);
        if (c.device !== undefined) canonLiteral('ifname', c.device);
      }
      return;
    }
    case 'set':
    case 'map': {
      const why = checkName(o.kind, o.name);
      if (why) throw new NftError(why);
      if (op.verb === 'add' || op.verb === 'create') {
        const s = o as SetObj | MapObj;
        checkTypes(`${o.kind} ${s.name}`, s.type);
        if (s.kind === 'map' && s.value !== 'verdict') checkTypes(`map ${s.name} value`, s.value);
        for (const f of s.flags ?? []) if (!['interval', 'timeout', 'dynamic', 'constant'].includes(f)) throw new NftError(`${o.kind} ${s.name}: invalid flag ${JSON.stringify(f)}`);
        if (s.timeout !== undefined && (!Number.isInteger(s.timeout) || s.timeout <= 0)) throw new NftError(`${o.kind} ${s.name}: invalid timeout ${JSON.stringify(s.timeout)}`);
        if (s.size !== undefined && (!Number.isInteger(s.size) || s.size <= 0)) throw new NftError(`${o.kind} ${s.name}: invalid size ${JSON.stringify(s.size)}`);
      }
      return;
    }
    case 'rule': {
      const why = checkName('chain', o.chain);
      if (why) throw new NftError(why);
      if ('handle' in o) {
        if (!Number.isInteger(o.handle) || o.handle <= 0) throw new NftError(`invalid rule handle ${JSON.stringify(o.handle)}`);
        return;
      }
      const r = o as RuleObj;
      if (typeof r.rule === 'string') {
        // Text rules are trusted code, not cluster data; still refuse line breaks and ';' so one rule stays one rule.
        if (r.rule.trim() === '' || /[\n\r;]/.test(r.rule)) throw new NftError(`rule text ${JSON.stringify(r.rule)}: empty or contains a newline or ";"`);
      } else checkExprs(r.rule);
      return;
    }
    case 'element': {
      const why = checkName('set', o.set);
      if (why) throw new NftError(why);
      if (!Array.isArray(o.key) || o.key.length === 0) throw new NftError(`element of ${o.set}: empty key`);
      const e = o as ElementObj;
      if (e.timeout !== undefined && (!Number.isInteger(e.timeout) || e.timeout <= 0)) throw new NftError(`element of ${o.set}: invalid timeout ${JSON.stringify(e.timeout)}`);
      if (e.value !== undefined && !Array.isArray(e.value)) checkVerdict(e.value as VerdictExpr);
      return;
    }
  }
}

export class Transaction {
  readonly ops: Op[] = [];
  private firstError: NftError | undefined;
  /** Key/value types of the sets and maps declared in this transaction (for rendering and literal checks). */
  private readonly types = new Map<string, { key: readonly KeyType[]; value?: 'verdict' | readonly KeyType[] }>();
  /** The full definitions behind `types` (flags tell interval sets apart), for the netlink encoder. */
  private readonly decls = new Map<string, SetObj | MapObj>();

  constructor(
    readonly family: TableFamily,
    readonly table: string,
  ) {
    const why = checkName('table', table);
    if (why) this.firstError = new NftError(why);
    if (!['ip', 'ip6', 'inet', 'arp', 'bridge', 'netdev'].includes(family)) this.firstError ??= new NftError(`invalid table family ${JSON.stringify(family)}`);
  }

  /** The first error recorded while building, if any. */
  get error(): NftError | undefined {
    return this.firstError;
  }

  get size(): number {
    return this.ops.length;
  }

  /**
   * Declares the types of a set/map that exists in the kernel but is not added in
   * this transaction, so its elements can be validated and rendered exactly.
   */
  declare(o: SetObj | MapObj): this {
    this.types.set(o.name, { key: o.type, ...(o.kind === 'map' ? { value: o.value } : {}) });
    this.decls.set(o.name, o);
    return this;
  }

  /** The definition of a set/map added or declared in this transaction (its types and flags). */
  declared(name: string): SetObj | MapObj | undefined {
    return this.decls.get(name);
  }

  private push(op: Op): this {
    try {
      validate(op);
      if (op.obj.kind === 'element') {
        const t = this.types.get(op.obj.set);
        if (t) {
          if (op.obj.key.length !== t.key.length) throw new NftError(`element of ${op.obj.set}: key has ${op.obj.key.length} parts, the set's type has ${t.key.length}`);
          const key = op.obj.key;
          for (let i = 0; i < key.length; i++) checkLiteral(t.key[i]!, key[i]!);
          const v = (op.obj as ElementObj).value;
          if (Array.isArray(v) && Array.isArray(t.value)) for (let i = 0; i < v.length; i++) checkLiteral(t.value[i]!, v[i] as Literal);
        } else throw new NftError(`element of ${op.obj.set}: the set's type is unknown to this transaction (add the set or map, or declare it first)`);
      }
      if ((op.verb === 'add' || op.verb === 'create') && (op.obj.kind === 'set' || op.obj.kind === 'map')) this.declare(op.obj);
      this.ops.push(op);
    } catch (e) {
      this.firstError ??= e instanceof NftError ? e : new NftError(String(e));
    }
    return this;
  }

  /** `add`: creates the object, or does nothing when an identical one exists. */
  add(obj: NftObject): this {
    return this.push({ verb: 'add', obj });
  }
  /** `create`: like add, but fails when the object exists. */
  create(obj: NftObject): this {
    return this.push({ verb: 'create', obj });
  }
  /** `insert rule`: prepends a rule to its chain. */
  insert(obj: RuleObj): this {
    return this.push({ verb: 'insert', obj });
  }
  /** Removes a chain's rules, a set/map's elements, or all rules and elements of the table. */
  flush(obj: Extract<ObjRef, { kind: 'table' | 'chain' | 'set' | 'map' }>): this {
    return this.push({ verb: 'flush', obj });
  }
  /** Deletes the table, a chain (must be unreferenced), a set/map (unreferenced), an element or a rule by handle. */
  delete(obj: ObjRef): this {
    return this.push({ verb: 'delete', obj });
  }

  private typesOf(set: string): { key: readonly KeyType[]; value?: 'verdict' | readonly KeyType[] } | undefined {
    return this.types.get(set);
  }

  /** The transaction as nft input: one command a line; consecutive element ops on one set are batched. */
  toText(): string {
    const fam = this.family;
    const tbl = `${fam} ${this.table}`;
    const out: string[] = [];
    let batch: { verb: string; set: string; items: string[] } | undefined;
    const flushBatch = () => {
      if (batch) out.push(`${batch.verb} element ${tbl} ${batch.set} { ${batch.items.join(', ')} }`);
      batch = undefined;
    };
    for (const op of this.ops) {
      const o = op.obj;
      if (o.kind === 'element') {
        const t = this.typesOf(o.set)!; // push() refused elements of undeclared sets
        const item = op.verb === 'delete' ? renderKey(t.key, o.key) : renderElement(t.key, t.value, o as ElementObj);
        if (!batch || batch.verb !== op.verb || batch.set !== o.set) {
          flushBatch();
          batch = { verb: op.verb, set: o.set, items: [] };
        }
        batch.items.push(item);
        continue;
      }
      flushBatch();
      switch (o.kind) {
        case 'table':
          out.push(op.verb === 'add' || op.verb === 'create' ? `${op.verb} table ${tbl}${(o as TableObj).comment !== undefined ? ` { comment ${quoteComment((o as TableObj).comment!)} ; }` : ''}` : `${op.verb} table ${tbl}`);
          break;
        case 'chain': {
          if (op.verb === 'add' || op.verb === 'create') {
            const body = renderChainBody(o as ChainObj);
            out.push(`${op.verb} chain ${tbl} ${o.name}${body ? ` { ${body} ; }` : ''}`);
          } else out.push(`${op.verb} chain ${tbl} ${o.name}`);
          break;
        }
        case 'set':
        case 'map':
          if (op.verb === 'add' || op.verb === 'create') out.push(`${op.verb} ${o.kind} ${tbl} ${o.name} { ${renderSetBody(o as SetObj | MapObj)} ; }`);
          else out.push(`${op.verb} ${o.kind} ${tbl} ${o.name}`);
          break;
        case 'rule':
          if (op.verb === 'delete') out.push(`delete rule ${tbl} ${o.chain} handle ${(o as { handle: number }).handle}`);
          else {
            const r = o as RuleObj;
            out.push(`${op.verb} rule ${tbl} ${r.chain} ${renderRule(r.rule, fam, r.comment)}`);
          }
          break;
      }
    }
    flushBatch();
    return out.length ? out.join('\n') + '\n' : '';
  }
}

// ---------------------------------------------------------------------------------
// Applying and listing

/** What reconcilers need from nftables: the real binary (Nft) or the fake (FakeNft). */
export interface NftRunner {
  /** Applies the transactions atomically together (one `nft -f -`); rejects with NftError. */
  run(tx: Transaction | readonly Transaction[]): Promise<void>;
}

/** `nft -j list table` reduced to what callers need; `raw` keeps the full JSON objects. */
export interface NftListing {
  chains: { name: string; type?: string; hook?: string; prio?: number; policy?: string }[];
  sets: { name: string; map: boolean; elements: number }[];
  rules: { chain: string; handle: number; comment?: string }[];
  raw: Record<string, unknown>[];
}

export interface NftOptions {
  /** Run inside this named network namespace (`ip netns exec NAME nft ...`). */
  netns?: string;
  /** Or inside the namespace at this path (`nsenter --net=PATH nft ...`). */
  netnsPath?: string;
  /** The nft binary (default "nft"). */
  binary?: string;
  timeoutMs?: number;
}

export class Nft implements NftRunner {
  constructor(
    private readonly exec: Executor,
    private readonly opts: NftOptions = {},
  ) {}

  private call(args: string[], input?: string) {
    const bin = this.opts.binary ?? 'nft';
    const o: ExecOptions = { input: input ?? '' };
    if (this.opts.timeoutMs) o.timeoutMs = this.opts.timeoutMs;
    if (this.opts.netnsPath) return this.exec('nsenter', [`--net=${this.opts.netnsPath}`, bin, ...args], o);
    if (this.opts.netns) o.netns = this.opts.netns;
    return this.exec(bin, args, o);
  }

  private static text(tx: Transaction | readonly Transaction[]): string {
    const list = tx instanceof Transaction ? [tx] : tx;
    for (const t of list) if (t.error) throw new NftError(`nft transaction for ${t.family} ${t.table} not run: ${t.error.message}`);
    return list.map((t) => t.toText()).join('');
  }

  /** Applies atomically: all or nothing. */
  async run(tx: Transaction | readonly Transaction[]): Promise<void> {
    const text = Nft.text(tx);
    if (text === '') return;
    const r = await this.call(['-f', '-'], text);
    if (r.code !== 0) throw nftFailure(r.code, r.stderr, text);
  }

  /** Checks the transaction without applying it (`nft -c -f -`). */
  async check(tx: Transaction | readonly Transaction[]): Promise<void> {
    const text = Nft.text(tx);
    if (text === '') return;
    const r = await this.call(['-c', '-f', '-'], text);
    if (r.code !== 0) throw nftFailure(r.code, r.stderr, text);
  }

  /** The table's contents, or undefined when it does not exist. */
  async list(table: string, family: TableFamily): Promise<NftListing | undefined> {
    const why = checkName('table', table);
    if (why) throw new NftError(why);
    const r = await this.call(['-j', 'list', 'table', family, table]);
    if (r.code !== 0) {
      if (/No such file or directory/.test(r.stderr)) return undefined;
      throw new NftError(`nft list table ${family} ${table}: exit ${r.code}: ${r.stderr.trim()}`, r.stderr);
    }
    return parseListing(r.stdout);
  }
}

function nftFailure(code: number, stderr: string, text: string): NftError {
  const m = /:(\d+):\d+(?:-\d+)?: Error: (.*)/.exec(stderr);
  const line = m ? Number(m[1]) : undefined;
  const lineText = line !== undefined ? text.split('\n')[line - 1] : undefined;
  const msg = m ? `${m[2]}${lineText ? ` (line ${line}: ${lineText.slice(0, 300)})` : ''}` : stderr.trim().split('\n')[0] ?? '';
  return new NftError(`nft -f - failed (exit ${code}): ${msg}`, stderr, line);
}

export function parseListing(json: string): NftListing {
  const doc = JSON.parse(json) as { nftables?: Record<string, unknown>[] };
  const out: NftListing = { chains: [], sets: [], rules: [], raw: doc.nftables ?? [] };
  for (const item of out.raw) {
    if ('chain' in item) {
      const c = item.chain as { name: string; type?: string; hook?: string; prio?: number; policy?: string };
      out.chains.push({ name: c.name, ...(c.type ? { type: c.type, hook: c.hook!, prio: c.prio!, policy: c.policy! } : {}) });
    } else if ('set' in item || 'map' in item) {
      const s = (item.set ?? item.map) as { name: string; elem?: unknown[] };
      out.sets.push({ name: s.name, map: 'map' in item, elements: s.elem?.length ?? 0 });
    } else if ('rule' in item) {
      const r = item.rule as { chain: string; handle: number; comment?: string };
      out.rules.push({ chain: r.chain, handle: r.handle, ...(r.comment !== undefined ? { comment: r.comment } : {}) });
    }
  }
  return out;
}
