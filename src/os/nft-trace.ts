// A packet tracer over the fake nftables: walks a packet through the base chains of a
// hook in priority order and through their rules, interpreting the same structured
// expressions (nft.ts `Expr`) that render the nft text — one source of truth, no nft
// grammar. It answers "where does this connection go, and why": the verdict, the DNAT
// target, whether masquerade applied, and the path of rules evaluated.
//
// Modelled semantics (the subset skiff emits):
//   - base chains of one hook run by priority; accept ends a base chain and the packet
//     goes on to the next one; drop/reject are final; a chain that falls off its end
//     applies its policy;
//   - nat chains see only the first packet of a connection (ct state new), and once a
//     nat chain at a hook has bound a NAT mapping, later nat chains at that hook are
//     skipped (netfilter's nat core does the same);
//   - dnat and masquerade are terminal (they accept);
//   - jump returns to the caller when the callee falls through or returns; goto does not;
//   - `KEY vmap @map` / `@set`: a miss means the rule does not match; interval elements
//     (prefixes, ranges) match by containment;
//   - `dnat to numgen ... map @m`: the generator's index looked up in m;
//   - `numgen inc` keeps a counter per rule (the kernel keeps one per expression, so a
//     rewritten rule starts again at 0); `numgen random` uses a seeded generator;
//   - `update @set { KEY }` inserts or refreshes KEY with the set's timeout, measured
//     on an injectable clock; lookups ignore expired entries;
//   - `fib daddr|saddr type local` compares with the tracer's list of local addresses.
// Text rules cannot be interpreted: the tracer throws a TraceError naming the rule.
import { isIPv4 } from 'node:net';
import { ipToBigInt, containsIp, parseCidr } from '../util/ip.js';
import type { FakeChain, FakeNft, FakeRule, FakeSet, FakeTable } from './nft-fake.js';
import { SELECTOR_TYPES, canonLiteral, renderRule, type CtState, type Expr, type Hook, type KeyType, type L4Proto, type RejectWith, type Selector, type VerdictExpr } from './nft.js';
import { mulberry32 } from '../util/rng.js';

export interface Packet {
  family: 4 | 6;
  src: string;
  dst: string;
  proto: L4Proto;
  sport?: number;
  dport?: number;
  iif?: string;
  oif?: string;
  mark?: number;
  ctMark?: number;
  /** Conntrack state of the packet; default "new" (the first packet of a connection). */
  ct?: CtState;
}

export interface TraceStep {
  hook: Hook;
  table: string;
  chain: string;
  /** Index of the rule in its chain; undefined for chain entry/policy steps. */
  rule?: number;
  text: string;
  /** What happened: "no match", "continue", "accept", "jump X", "dnat 10.0.0.1:80", "policy accept", ... */
  result: string;
}

export type FinalVerdict = 'accept' | 'drop' | 'reject';

export interface TraceResult {
  verdict: FinalVerdict;
  reject?: RejectWith;
  /** The packet after mangling (DNAT, mark). */
  packet: Packet;
  dnat?: { addr: string; port?: number };
  masquerade: boolean;
  path: TraceStep[];
  /** Hooks traversed (connect() only). */
  hooks: Hook[];
}

export interface TracerOptions {
  /** Addresses `fib ... type local` considers local (add 127.0.0.1 / ::1 yourself). */
  localAddrs?: readonly string[];
  /** Milliseconds, for dynamic set timeouts. */
  now?: () => number;
  /** Seed of `numgen random`. */
  seed?: number;
}

export class TraceError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TraceError';
  }
}

type Outcome =
  | { t: 'nomatch' }
  | { t: 'continue' }
  | { t: 'verdict'; v: 'accept' | 'drop' | 'return' | 'continue' }
  | { t: 'reject'; with: RejectWith }
  | { t: 'jump' | 'goto'; chain: string }
  | { t: 'nat' };

type ChainResult = { t: 'fallthrough' } | { t: 'final'; v: FinalVerdict; with?: RejectWith } | { t: 'accept' };

interface Ctx {
  hook: Hook;
  table: FakeTable;
  pkt: Packet;
  path: TraceStep[];
  dnat?: { addr: string; port?: number };
  masquerade: boolean;
  natBound: boolean;
  depth: number;
}


const PORTED = new Set(['tcp', 'udp', 'sctp', 'udplite']);

/** The packet's value for a selector, canonical; undefined when the packet has no such field. */
function fieldOf(p: Packet, sel: Selector): string | undefined {
  switch (sel) {
    case 'ip saddr':
      return p.family === 4 ? canonLiteral('ipv4_addr', p.src, false) : undefined;
    case 'ip daddr':
      return p.family === 4 ? canonLiteral('ipv4_addr', p.dst, false) : undefined;
    case 'ip6 saddr':
      return p.family === 6 ? canonLiteral('ipv6_addr', p.src, false) : undefined;
    case 'ip6 daddr':
      return p.family === 6 ? canonLiteral('ipv6_addr', p.dst, false) : undefined;
    case 'meta l4proto':
      return canonLiteral('inet_proto', p.proto);
    case 'th sport':
      return PORTED.has(p.proto) && p.sport !== undefined ? String(p.sport) : undefined;
    case 'th dport':
      return PORTED.has(p.proto) && p.dport !== undefined ? String(p.dport) : undefined;
    case 'meta mark':
      return canonLiteral('mark', p.mark ?? 0);
    case 'ct mark':
      return canonLiteral('mark', p.ctMark ?? 0);
    case 'iifname':
      return p.iif !== undefined ? `"${p.iif}"` : undefined;
    case 'oifname':
      return p.oif !== undefined ? `"${p.oif}"` : undefined;
  }
}

/** Does the canonical literal `lit` (possibly a prefix, range or glob) contain the canonical value `v`? */
function literalMatches(type: KeyType, lit: string, v: string): boolean {
  if (lit === v) return true;
  switch (type) {
    case 'ipv4_addr':
    case 'ipv6_addr': {
      if (lit.includes('/')) return containsIp(parseCidr(lit), v);
      const dash = lit.indexOf('-');
      if (dash > 0) {
        const n = ipToBigInt(v);
        return n >= ipToBigInt(lit.slice(0, dash)) && n <= ipToBigInt(lit.slice(dash + 1));
      }
      return false;
    }
    case 'inet_service': {
      const dash = lit.indexOf('-');
      if (dash < 0) return false;
      const n = Number(v);
      return n >= Number(lit.slice(0, dash)) && n <= Number(lit.slice(dash + 1));
    }
    case 'ifname':
      return lit.endsWith('*"') && v.startsWith(lit.slice(0, -2));
    default:
      return false;
  }
}

export class Tracer {
  private readonly local: Set<string>;
  private readonly now: () => number;
  private readonly rand: () => number;
  private readonly counters = new WeakMap<FakeRule, number>();
  /** Dynamic set entries: "family table set" -> key -> expiry (ms). */
  private readonly dynamic = new Map<string, Map<string, number>>();

  constructor(
    readonly nft: FakeNft,
    opts: TracerOptions = {},
  ) {
    this.local = new Set((opts.localAddrs ?? []).map((a) => canonLiteral(isIPv4(a) ? 'ipv4_addr' : 'ipv6_addr', a, false)));
    this.now = opts.now ?? (() => Date.now());
    this.rand = mulberry32(opts.seed ?? 1);
  }

  /** Dynamic entries currently live in a set (for assertions). */
  dynamicEntries(family: string, table: string, set: string): string[] {
    const m = this.dynamic.get(`${family} ${table} ${set}`);
    if (!m) return [];
    const now = this.now();
    return [...m.entries()].filter(([, exp]) => exp > now).map(([k]) => k);
  }

  /** Runs the packet through every base chain of one hook. */
  hook(hook: Hook, pkt: Packet): TraceResult {
    const p = { ...pkt };
    const path: TraceStep[] = [];
    const r = this.runHook(hook, p, path, { masquerade: false });
    return { ...r, packet: p, path, hooks: [hook] };
  }

  /**
   * Follows a new connection's first packet: from outside (prerouting, then input or
   * forward by the DNATed destination, then postrouting) or from this host (output,
   * postrouting, then input when the destination is local).
   */
  connect(pkt: Packet, from: 'external' | 'local'): TraceResult {
    const p = { ...pkt };
    const path: TraceStep[] = [];
    const acc: { masquerade: boolean; dnat?: { addr: string; port?: number } } = { masquerade: false };
    const hooks: Hook[] = [];
    const isLocal = () => this.local.has(canonLiteral(p.family === 4 ? 'ipv4_addr' : 'ipv6_addr', p.dst, false));
    const order: Hook[] = from === 'external' ? ['prerouting'] : ['output'];
    let last: Omit<TraceResult, 'packet' | 'path' | 'hooks'> = { verdict: 'accept', masquerade: false };
    for (let i = 0; i < order.length; i++) {
      const h = order[i]!;
      hooks.push(h);
      last = this.runHook(h, p, path, acc);
      if (last.verdict !== 'accept') break;
      if (h === 'prerouting') order.push(isLocal() ? 'input' : 'forward');
      else if (h === 'forward') order.push('postrouting');
      else if (h === 'output') order.push('postrouting');
      else if (h === 'postrouting' && from === 'local' && isLocal()) order.push('input');
    }
    return { ...last, ...(acc.dnat ? { dnat: acc.dnat } : {}), masquerade: acc.masquerade, packet: p, path, hooks };
  }

  private runHook(hook: Hook, p: Packet, path: TraceStep[], acc: { masquerade: boolean; dnat?: { addr: string; port?: number } }): Omit<TraceResult, 'packet' | 'path' | 'hooks'> {
    const fam = p.family === 4 ? 'ip' : 'ip6';
    const chains: { t: FakeTable; c: FakeChain }[] = [];
    for (const t of this.nft.tables.values()) {
      if (t.family !== fam && t.family !== 'inet') continue;
      for (const c of t.chains.values()) if (c.hook === hook) chains.push({ t, c });
    }
    chains.sort((a, b) => a.c.prio! - b.c.prio! || (a.t.name < b.t.name ? -1 : 1));
    let natBound = false;
    for (const { t, c } of chains) {
      if (c.type === 'nat' && ((p.ct ?? 'new') !== 'new' || natBound)) continue;
      const ctx: Ctx = { hook, table: t, pkt: p, path, masquerade: false, natBound: false, depth: 0 };
      path.push({ hook, table: t.name, chain: c.name, text: `${t.family} ${t.name} ${c.name} (${c.type} ${hook} priority ${c.prio})`, result: 'enter' });
      const r = this.runChain(c, ctx);
      if (ctx.dnat) acc.dnat = ctx.dnat;
      if (ctx.masquerade) acc.masquerade = true;
      if (ctx.natBound) natBound = true;
      if (r.t === 'final') return { verdict: r.v, ...(r.with ? { reject: r.with } : {}), masquerade: acc.masquerade, ...(acc.dnat ? { dnat: acc.dnat } : {}) };
      if (r.t === 'fallthrough') {
        path.push({ hook, table: t.name, chain: c.name, text: '', result: `policy ${c.policy}` });
        if (c.policy === 'drop') return { verdict: 'drop', masquerade: acc.masquerade, ...(acc.dnat ? { dnat: acc.dnat } : {}) };
      }
    }
    return { verdict: 'accept', masquerade: acc.masquerade, ...(acc.dnat ? { dnat: acc.dnat } : {}) };
  }

  private runChain(c: FakeChain, ctx: Ctx): ChainResult {
    if (++ctx.depth > 64) throw new TraceError(`jump depth exceeded at chain ${c.name}`);
    try {
      for (let i = 0; i < c.rules.length; i++) {
        const rule = c.rules[i]!;
        const out = this.evalRule(rule, ctx);
        const step = (result: string) => ctx.path.push({ hook: ctx.hook, table: ctx.table.name, chain: c.name, rule: i, text: renderRule(rule.rule, ctx.table.family, rule.comment), result });
        switch (out.t) {
          case 'nomatch':
            step('no match');
            continue;
          case 'continue':
            step('continue');
            continue;
          case 'nat':
            step(ctx.dnat && !ctx.masquerade ? `dnat ${ctx.dnat.addr}${ctx.dnat.port !== undefined ? ':' + ctx.dnat.port : ''}` : 'masquerade');
            return { t: 'accept' };
          case 'reject':
            step(`reject (${out.with})`);
            return { t: 'final', v: 'reject', with: out.with };
          case 'verdict':
            step(out.v);
            if (out.v === 'continue') continue;
            if (out.v === 'return') return { t: 'fallthrough' };
            if (out.v === 'accept') return { t: 'accept' };
            return { t: 'final', v: 'drop' };
          case 'jump':
          case 'goto': {
            step(`${out.t} ${out.chain}`);
            const next = ctx.table.chains.get(out.chain);
            if (!next) throw new TraceError(`chain ${out.chain} does not exist`);
            const r = this.runChain(next, ctx);
            if (out.t === 'goto' || r.t !== 'fallthrough') return r;
            continue;
          }
        }
      }
      return { t: 'fallthrough' };
    } finally {
      ctx.depth--;
    }
  }

  private verdictOutcome(v: VerdictExpr): Outcome {
    if ('jump' in v) return { t: 'jump', chain: v.jump };
    if ('goto' in v) return { t: 'goto', chain: v.goto };
    return { t: 'verdict', v: v.verdict };
  }

  private keyOf(p: Packet, sels: readonly Selector[]): string[] | undefined {
    const out: string[] = [];
    for (const s of sels) {
      const v = fieldOf(p, s);
      if (v === undefined) return undefined;
      out.push(v);
    }
    return out;
  }

  private setId(ctx: Ctx, name: string): string {
    return `${ctx.table.family} ${ctx.table.name} ${name}`;
  }

  private lookup(ctx: Ctx, s: FakeSet, key: string[]): { hit: boolean; value?: FakeSet['elements'] extends Map<string, infer E> ? E : never } {
    const ks = key.join(' . ');
    const exact = s.elements.get(ks);
    if (exact) return { hit: true, value: exact };
    const dyn = this.dynamic.get(this.setId(ctx, s.name))?.get(ks);
    if (dyn !== undefined && dyn > this.now()) return { hit: true };
    if (s.flags.includes('interval') || [...s.elements.keys()].some((k) => k.includes('*'))) {
      for (const el of s.elements.values()) if (el.key.every((lit, i) => literalMatches(s.type[i]!, lit, key[i]!))) return { hit: true, value: el };
    }
    return { hit: false };
  }

  /** One draw of a rule's `numgen` (the kernel keeps one counter per expression; skiff's rules have at most one). */
  private numgen(rule: FakeRule, mode: 'inc' | 'random', mod: number): number {
    if (mode === 'random') return Math.floor(this.rand() * mod);
    const n = this.counters.get(rule) ?? 0;
    this.counters.set(rule, n + 1);
    return n % mod;
  }

  private evalRule(rule: FakeRule, ctx: Ctx): Outcome {
    if (typeof rule.rule === 'string') throw new TraceError(`cannot interpret text rule ${JSON.stringify(rule.rule)} in table ${ctx.table.name}`);
    const p = ctx.pkt;
    for (const e of rule.rule as readonly Expr[]) {
      if ('match' in e) {
        const sels = typeof e.match === 'string' ? [e.match as Selector] : (e.match as readonly Selector[]);
        const key = this.keyOf(p, sels);
        if (!key) return { t: 'nomatch' };
        let hit: boolean;
        const v = e.value;
        if (typeof v === 'object' && v !== null && !Array.isArray(v)) {
          const s = ctx.table.sets.get((v as { set: string }).set);
          if (!s) throw new TraceError(`set ${(v as { set: string }).set} does not exist`);
          hit = this.lookup(ctx, s, key).hit;
        } else {
          const type = SELECTOR_TYPES[sels[0]!];
          const lits = (Array.isArray(v) ? v : [v]).map((x) => canonLiteral(type, x as string | number));
          hit = lits.some((lit) => literalMatches(type, lit, key[0]!));
        }
        if (hit === (e.op === '!=')) return { t: 'nomatch' };
      } else if ('fib' in e) {
        const addr = e.fib === 'daddr' ? p.dst : p.src;
        const isLocal = this.local.has(canonLiteral(p.family === 4 ? 'ipv4_addr' : 'ipv6_addr', addr, false));
        if (isLocal === (e.op === '!=')) return { t: 'nomatch' };
      } else if ('ctState' in e) {
        const hit = e.ctState.includes(p.ct ?? 'new');
        if (hit === (e.op === '!=')) return { t: 'nomatch' };
      } else if ('markMask' in e) {
        const hit = ((p.mark ?? 0) & e.markMask) >>> 0 === e.value >>> 0;
        if (hit === (e.op === '!=')) return { t: 'nomatch' };
      } else if ('counter' in e) {
        // counting is not modelled
      } else if ('setMark' in e) {
        const m = p.mark ?? 0;
        p.mark = (e.how === 'or' ? m | e.setMark : e.how === 'xor' ? m ^ e.setMark : e.setMark) >>> 0;
      } else if ('update' in e) {
        const s = ctx.table.sets.get(e.update);
        if (!s) throw new TraceError(`set ${e.update} does not exist`);
        const key = this.keyOf(p, e.key);
        if (key) {
          const id = this.setId(ctx, s.name);
          let m = this.dynamic.get(id);
          if (!m) this.dynamic.set(id, (m = new Map()));
          m.set(key.join(' . '), s.timeout !== undefined ? this.now() + s.timeout * 1000 : Infinity);
        }
      } else if ('dnat' in e) {
        ctx.dnat = { addr: e.dnat, ...(e.port !== undefined ? { port: e.port } : {}) };
        p.dst = e.dnat;
        if (e.port !== undefined) p.dport = e.port;
        ctx.natBound = true;
        return { t: 'nat' };
      } else if ('dnatNumgen' in e) {
        const s = ctx.table.sets.get(e.map);
        if (!s) throw new TraceError(`map ${e.map} does not exist`);
        const n = this.numgen(rule, e.dnatNumgen, e.mod) + (e.offset ?? 0);
        const el = s.elements.get(String(n));
        // A missing element: the lookup fails and the rule does not match.
        if (!el || !Array.isArray(el.value)) return { t: 'nomatch' };
        const [addr, port] = el.value as string[];
        ctx.dnat = { addr: addr!, port: Number(port) };
        p.dst = addr!;
        p.dport = Number(port);
        ctx.natBound = true;
        return { t: 'nat' };
      } else if ('masquerade' in e) {
        ctx.masquerade = true;
        ctx.natBound = true;
        return { t: 'nat' };
      } else if ('reject' in e) {
        return { t: 'reject', with: e.reject };
      } else if ('numgenMatch' in e) {
        if (this.numgen(rule, e.numgenMatch, e.mod) !== e.value) return { t: 'nomatch' };
      } else if ('numgen' in e) {
        return this.verdictOutcome(e.vmap[this.numgen(rule, e.numgen, e.vmap.length)]!);
      } else if ('vmap' in e) {
        const s = ctx.table.sets.get(e.vmap.set);
        if (!s) throw new TraceError(`map ${e.vmap.set} does not exist`);
        const key = this.keyOf(p, e.key);
        if (!key) return { t: 'nomatch' };
        const r = this.lookup(ctx, s, key);
        if (!r.hit || !r.value?.value || Array.isArray(r.value.value)) return { t: 'nomatch' };
        return this.verdictOutcome(r.value.value as VerdictExpr);
      } else {
        return this.verdictOutcome(e as VerdictExpr);
      }
    }
    return { t: 'continue' };
  }
}

/** A human-readable account of a trace (for test failure messages and `skiff explain`). */
export function explain(r: TraceResult): string {
  const lines = r.path.filter((s) => s.result !== 'no match').map((s) => `${s.hook.padEnd(11)} ${s.chain}${s.rule !== undefined ? `[${s.rule}]` : ''}: ${s.result}${s.text && s.rule !== undefined ? `   ${s.text}` : ''}`);
  lines.push(`=> ${r.verdict}${r.reject ? ` (${r.reject})` : ''}${r.dnat ? ` dnat ${r.dnat.addr}${r.dnat.port !== undefined ? ':' + r.dnat.port : ''}` : ''}${r.masquerade ? ' masquerade' : ''}`);
  return lines.join('\n');
}
