// An in-memory nftables for unit tests, in the spirit of knftables' fake: a real
// model, not a recorder. A transaction's operations are applied one by one to the
// live model with an undo log; the first invalid operation (or a failed whole-ruleset
// check at the end) rolls everything back and rejects, exactly as `nft -f -` leaves
// the kernel untouched. Checked like the kernel does (each rule verified against nft
// 1.0.6 on Linux 6.x):
//   - objects must exist before they are used (tables, chains, sets, maps), and not
//     exist for `create`; delete/flush of a missing object fails;
//   - jump/goto (in rules, numgen vmaps and verdict-map elements) must target an
//     existing regular chain; a base chain cannot be a jump target;
//   - @set / vmap @map / update @set must name an existing set (or a verdict map for
//     vmap) whose key type equals the selectors' types;
//   - a chain or set still referenced cannot be deleted ("Device or resource busy");
//   - `add element` of an existing key with a different value fails ("File exists"),
//     with the same value is a no-op; `create element` of an existing key fails;
//     deleting a missing element fails; prefixes/ranges need `flags interval`;
//     per-element timeouts need `flags timeout`; keys must match the set's types;
//   - nat statements (dnat, masquerade) may only be reachable from nat base chains
//     ("Operation not supported"), and jumps must not loop.
// Text rules are accepted with their jump/goto/@set references checked; the tracer
// cannot interpret them.
import {
  NftError,
  SELECTOR_TYPES,
  canonLiteral,
  keyString,
  priorityValue,
  quoteComment,
  renderChainBody,
  renderElement,
  renderRule,
  renderSetBody,
  type ChainObj,
  type ElementObj,
  type Expr,
  type KeyType,
  type Literal,
  type MapObj,
  type NftRunner,
  type Op,
  type RuleObj,
  type Selector,
  type SetFlag,
  type SetObj,
  type TableFamily,
  type Transaction,
  type VerdictExpr,
} from './nft.js';

export interface FakeRule {
  readonly handle: number;
  readonly rule: readonly Expr[] | string;
  readonly comment?: string;
}

export interface FakeChain {
  name: string;
  type?: ChainObj['type'];
  hook?: ChainObj['hook'];
  priority?: ChainObj['priority'];
  /** Numeric priority of base chains. */
  prio?: number;
  policy?: 'accept' | 'drop';
  device?: string;
  comment?: string;
  rules: FakeRule[];
}

export interface FakeElement {
  /** Canonical literals, one per key component. */
  key: string[];
  value?: VerdictExpr | string[];
  timeout?: number;
  comment?: string;
}

export interface FakeSet {
  name: string;
  map: boolean;
  type: KeyType[];
  value?: 'verdict' | KeyType[];
  /** Maps declared with typeof: the protocol of an inet_service value (MapObj.portProto). */
  portProto?: 'tcp' | 'udp' | 'sctp';
  flags: SetFlag[];
  timeout?: number;
  size?: number;
  comment?: string;
  /** By canonical key string. */
  elements: Map<string, FakeElement>;
}

export interface FakeTable {
  family: TableFamily;
  name: string;
  comment?: string;
  chains: Map<string, FakeChain>;
  /** Sets and maps share one namespace in nftables. */
  sets: Map<string, FakeSet>;
  /** Reference counts: "chain:NAME" / "set:NAME". */
  refs: Map<string, number>;
  nextHandle: number;
}

const NAT_STATEMENT = /\b(dnat|snat|masquerade|redirect)\b/;

function isNatExpr(e: Expr): boolean {
  return 'dnat' in e || 'dnatNumgen' in e || 'masquerade' in e;
}

/** Chains a rule can transfer control to directly (not via maps). */
function ruleChainRefs(rule: FakeRule['rule']): string[] {
  if (typeof rule === 'string') return [...rule.matchAll(/\b(?:jump|goto)\s+([A-Za-z][A-Za-z0-9_\-./]*)/g)].map((m) => m[1]!);
  const out: string[] = [];
  for (const e of rule) {
    if ('jump' in e) out.push(e.jump);
    else if ('goto' in e) out.push(e.goto);
    else if ('numgen' in e) {
      for (const v of e.vmap) {
        if ('jump' in v) out.push(v.jump);
        else if ('goto' in v) out.push(v.goto);
      }
    }
  }
  return out;
}

function ruleSetRefs(rule: FakeRule['rule']): string[] {
  if (typeof rule === 'string') return [...rule.matchAll(/@([A-Za-z][A-Za-z0-9_\-./]*)/g)].map((m) => m[1]!);
  const out: string[] = [];
  for (const e of rule) {
    if ('match' in e && typeof e.value === 'object' && e.value !== null && !Array.isArray(e.value)) out.push((e.value as { set: string }).set);
    else if ('update' in e) out.push(e.update);
    else if ('vmap' in e && !('numgen' in e)) out.push(e.vmap.set);
    else if ('dnatNumgen' in e) out.push(e.map);
  }
  return out;
}

function verdictTarget(v: VerdictExpr | string[] | undefined): string | undefined {
  if (!v || Array.isArray(v)) return undefined;
  if ('jump' in v) return v.jump;
  if ('goto' in v) return v.goto;
  return undefined;
}

const tkey = (family: string, name: string) => `${family} ${name}`;

export class FakeNft implements NftRunner {
  readonly tables = new Map<string, FakeTable>();
  /** The transactions of every successful run, one list per run. */
  readonly runs: Transaction[][] = [];
  private undo: (() => void)[] = [];
  private failures: string[] = [];

  /** Makes the next `count` runs fail (after validation, before applying) with `message`. */
  failNext(count = 1, message = 'injected failure'): void {
    for (let i = 0; i < count; i++) this.failures.push(message);
  }

  async run(tx: Transaction | readonly Transaction[]): Promise<void> {
    this.apply(tx);
  }

  /** Synchronous apply; throws NftError and leaves the model untouched on failure. */
  apply(tx: Transaction | readonly Transaction[]): void {
    const list = Array.isArray(tx) ? (tx as readonly Transaction[]) : [tx as Transaction];
    for (const t of list) if (t.error) throw new NftError(`nft transaction for ${t.family} ${t.table} not run: ${t.error.message}`);
    const injected = this.failures.shift();
    if (injected !== undefined) throw new NftError(`nft -f - failed: ${injected}`);
    this.undo = [];
    try {
      for (const t of list) {
        for (const op of t.ops) {
          try {
            this.applyOp(t.family, t.table, op);
          } catch (e) {
            const what = `${op.verb} ${op.obj.kind} ${t.family} ${t.table} ${'name' in op.obj ? op.obj.name : 'chain' in op.obj ? op.obj.chain : 'set' in op.obj ? op.obj.set : ''}`.trim();
            throw new NftError(`nft -f - failed: ${(e as Error).message} (${what})`);
          }
        }
      }
      for (const t of list) {
        const table = this.tables.get(tkey(t.family, t.table));
        if (table) this.checkTable(table);
      }
    } catch (e) {
      for (let i = this.undo.length - 1; i >= 0; i--) this.undo[i]!();
      this.undo = [];
      throw e;
    }
    this.undo = [];
    this.runs.push([...list]);
  }

  /** Every transaction applied successfully, in order (tests count operations). */
  get history(): Transaction[] {
    return this.runs.flat();
  }

  table(family: TableFamily, name: string): FakeTable | undefined {
    return this.tables.get(tkey(family, name));
  }

  // ------------------------------------------------------------------ undoable mutations

  private mapSet<K, V>(m: Map<K, V>, k: K, v: V): void {
    const had = m.has(k);
    const old = m.get(k);
    m.set(k, v);
    this.undo.push(() => (had ? m.set(k, old as V) : m.delete(k)));
  }
  private mapDel<K, V>(m: Map<K, V>, k: K): void {
    if (!m.has(k)) return;
    const old = m.get(k) as V;
    m.delete(k);
    this.undo.push(() => m.set(k, old));
  }
  private prop<T extends object, K extends keyof T>(o: T, k: K, v: T[K]): void {
    const old = o[k];
    o[k] = v;
    this.undo.push(() => (o[k] = old));
  }
  private bump(t: FakeTable, key: string, delta: number): void {
    const n = (t.refs.get(key) ?? 0) + delta;
    if (n === 0) this.mapDel(t.refs, key);
    else this.mapSet(t.refs, key, n);
  }

  // ------------------------------------------------------------------ operations

  private need(family: TableFamily, name: string): FakeTable {
    const t = this.tables.get(tkey(family, name));
    if (!t) throw new Error(`No such file or directory: table ${family} ${name} does not exist`);
    return t;
  }

  private applyOp(family: TableFamily, tname: string, op: Op): void {
    const o = op.obj;
    if (o.kind === 'table') {
      const existing = this.tables.get(tkey(family, tname));
      if (op.verb === 'add' || op.verb === 'create') {
        if (existing) {
          if (op.verb === 'create') throw new Error(`File exists: table ${family} ${tname}`);
          return;
        }
        const t: FakeTable = { family, name: tname, chains: new Map(), sets: new Map(), refs: new Map(), nextHandle: 1 };
        if ('comment' in o && o.comment !== undefined) t.comment = o.comment;
        this.mapSet(this.tables, tkey(family, tname), t);
      } else if (op.verb === 'delete') {
        if (!existing) throw new Error(`No such file or directory: table ${family} ${tname}`);
        this.mapDel(this.tables, tkey(family, tname));
      } else if (op.verb === 'flush') {
        const t = this.need(family, tname);
        for (const c of t.chains.values()) this.flushChain(t, c);
        for (const s of t.sets.values()) this.flushSet(t, s);
      }
      return;
    }
    const t = this.need(family, tname);
    switch (o.kind) {
      case 'chain': {
        const c = t.chains.get(o.name);
        if (op.verb === 'add' || op.verb === 'create') {
          const def = o as ChainObj;
          if (c) {
            if (op.verb === 'create') throw new Error(`File exists: chain ${o.name}`);
            const same = c.type === def.type && c.hook === def.hook && (def.priority === undefined || c.prio === priorityValue(def.priority));
            if (!same) throw new Error(`Operation not supported: chain ${o.name} exists with a different type/hook/priority`);
            if (def.policy && def.policy !== c.policy) this.prop(c, 'policy', def.policy);
            return;
          }
          const chain: FakeChain = { name: def.name, rules: [] };
          if (def.hook) {
            chain.type = def.type!;
            chain.hook = def.hook;
            chain.priority = def.priority!;
            chain.prio = priorityValue(def.priority!);
            chain.policy = def.policy ?? 'accept';
            if (def.type === 'nat' && !['ip', 'ip6', 'inet'].includes(family)) throw new Error(`Operation not supported: nat chain in ${family} table`);
            if (def.device !== undefined) chain.device = def.device;
          }
          if (def.comment !== undefined) chain.comment = def.comment;
          this.mapSet(t.chains, def.name, chain);
          return;
        }
        if (!c) throw new Error(`No such file or directory: chain ${o.name}`);
        if (op.verb === 'flush') {
          this.flushChain(t, c);
          return;
        }
        // delete
        const refs = t.refs.get(`chain:${o.name}`) ?? 0;
        if (refs > 0) throw new Error(`Device or resource busy: chain ${o.name} is still referenced (${refs})`);
        this.flushChain(t, c);
        this.mapDel(t.chains, o.name);
        return;
      }
      case 'set':
      case 'map': {
        const s = t.sets.get(o.name);
        if (op.verb === 'add' || op.verb === 'create') {
          const def = o as SetObj | MapObj;
          const value = def.kind === 'map' ? (def.value === 'verdict' ? 'verdict' : [...def.value]) : undefined;
          const flags = [...(def.flags ?? [])].sort();
          if (s) {
            if (op.verb === 'create') throw new Error(`File exists: ${o.kind} ${o.name}`);
            const same =
              s.map === (def.kind === 'map') &&
              s.type.join('.') === def.type.join('.') &&
              JSON.stringify(s.value) === JSON.stringify(value) &&
              s.flags.join(',') === flags.join(',') &&
              s.timeout === def.timeout;
            if (!same) throw new Error(`File exists: ${o.kind} ${o.name} exists with a different definition`);
            return;
          }
          if (def.timeout !== undefined && !flags.includes('timeout') && !flags.includes('dynamic')) {
            // nft adds the timeout flag itself when a default timeout is given.
            flags.push('timeout');
            flags.sort();
          }
          const set: FakeSet = { name: def.name, map: def.kind === 'map', type: [...def.type], flags, elements: new Map() };
          if (value !== undefined) set.value = value;
          if (def.timeout !== undefined) set.timeout = def.timeout;
          if (def.size !== undefined) set.size = def.size;
          if (def.comment !== undefined) set.comment = def.comment;
          if (def.kind === 'map' && def.portProto) set.portProto = def.portProto;
          this.mapSet(t.sets, def.name, set);
          return;
        }
        if (!s || s.map !== (o.kind === 'map')) throw new Error(`No such file or directory: ${o.kind} ${o.name}`);
        if (op.verb === 'flush') {
          this.flushSet(t, s);
          return;
        }
        const refs = t.refs.get(`set:${o.name}`) ?? 0;
        if (refs > 0) throw new Error(`Device or resource busy: ${o.kind} ${o.name} is still referenced (${refs})`);
        this.flushSet(t, s);
        this.mapDel(t.sets, o.name);
        return;
      }
      case 'rule': {
        const c = t.chains.get(o.chain);
        if (!c) throw new Error(`No such file or directory: chain ${o.chain}`);
        if (op.verb === 'delete') {
          const handle = (o as { handle: number }).handle;
          const idx = c.rules.findIndex((r) => r.handle === handle);
          if (idx < 0) throw new Error(`No such file or directory: rule handle ${handle} in chain ${o.chain}`);
          const [r] = c.rules.splice(idx, 1);
          this.undo.push(() => c.rules.splice(idx, 0, r!));
          this.refRule(t, r!, -1);
          return;
        }
        const def = o as RuleObj;
        this.checkRule(t, family, def);
        const r: FakeRule = { handle: t.nextHandle, rule: def.rule, ...(def.comment !== undefined ? { comment: def.comment } : {}) };
        this.prop(t, 'nextHandle', t.nextHandle + 1);
        if (op.verb === 'insert') {
          c.rules.unshift(r);
          this.undo.push(() => c.rules.shift());
        } else {
          c.rules.push(r);
          this.undo.push(() => c.rules.pop());
        }
        this.refRule(t, r, +1);
        return;
      }
      case 'element': {
        const s = t.sets.get(o.set);
        if (!s) throw new Error(`No such file or directory: set ${o.set}`);
        if (o.key.length !== s.type.length) throw new Error(`Invalid argument: element key has ${o.key.length} parts, ${o.set} has type ${s.type.join(' . ')}`);
        const interval = s.flags.includes('interval');
        const key = o.key.map((k, i) => {
          const c = canonLiteral(s.type[i]!, k);
          if (!interval && (c.includes('/') || (c.includes('-') && s.type[i] !== 'ifname'))) {
            throw new Error(`You must add 'flags interval' to your set declaration if you want to add prefix or range elements (${o.set})`);
          }
          return c;
        });
        const ks = key.join(' . ');
        const existing = s.elements.get(ks);
        if (op.verb === 'delete') {
          if (!existing) throw new Error(`No such file or directory: element ${ks} in ${o.set}`);
          this.mapDel(s.elements, ks);
          const target = verdictTarget(existing.value);
          if (target) this.bump(t, `chain:${target}`, -1);
          return;
        }
        const def = o as ElementObj;
        let value: FakeElement['value'];
        if (s.map) {
          if (def.value === undefined) throw new Error(`Invalid argument: element ${ks} of map ${o.set} needs a value`);
          if (s.value === 'verdict') {
            if (Array.isArray(def.value)) throw new Error(`Invalid argument: map ${o.set} holds verdicts`);
            value = def.value as VerdictExpr;
            const target = verdictTarget(value);
            if (target) this.checkJumpTarget(t, target);
          } else {
            if (!Array.isArray(def.value) || def.value.length !== s.value!.length) throw new Error(`Invalid argument: map ${o.set} holds ${(s.value as KeyType[]).join(' . ')}`);
            value = (def.value as Literal[]).map((v, i) => canonLiteral((s.value as KeyType[])[i]!, v, false));
          }
        } else if (def.value !== undefined) throw new Error(`Invalid argument: set ${o.set} has no values`);
        if (def.timeout !== undefined && !s.flags.includes('timeout')) throw new Error(`Invalid argument: element timeout in ${o.set} without flags timeout`);
        if (existing) {
          if (op.verb === 'create') throw new Error(`File exists: element ${ks} in ${o.set}`);
          if (JSON.stringify(existing.value) !== JSON.stringify(value)) throw new Error(`File exists: element ${ks} in ${o.set} has a different value`);
          return;
        }
        const el: FakeElement = { key };
        if (value !== undefined) el.value = value;
        if (def.timeout !== undefined) el.timeout = def.timeout;
        if (def.comment !== undefined) el.comment = def.comment;
        this.mapSet(s.elements, ks, el);
        const target = verdictTarget(value);
        if (target) this.bump(t, `chain:${target}`, +1);
        return;
      }
    }
  }

  private flushChain(t: FakeTable, c: FakeChain): void {
    for (const r of c.rules) this.refRule(t, r, -1);
    this.prop(c, 'rules', []);
  }

  private flushSet(t: FakeTable, s: FakeSet): void {
    for (const el of s.elements.values()) {
      const target = verdictTarget(el.value);
      if (target) this.bump(t, `chain:${target}`, -1);
    }
    this.prop(s, 'elements', new Map());
  }

  private refRule(t: FakeTable, r: FakeRule, delta: number): void {
    for (const c of ruleChainRefs(r.rule)) this.bump(t, `chain:${c}`, delta);
    for (const s of ruleSetRefs(r.rule)) this.bump(t, `set:${s}`, delta);
  }

  private checkJumpTarget(t: FakeTable, name: string): void {
    const c = t.chains.get(name);
    if (!c) throw new Error(`No such file or directory: chain ${name} (jump/goto target)`);
    if (c.hook) throw new Error(`Operation not supported: cannot jump to base chain ${name}`);
  }

  private checkRule(t: FakeTable, family: TableFamily, def: RuleObj): void {
    for (const c of ruleChainRefs(def.rule)) this.checkJumpTarget(t, c);
    if (typeof def.rule === 'string') {
      for (const s of ruleSetRefs(def.rule)) if (!t.sets.has(s)) throw new Error(`No such file or directory: set ${s}`);
      return;
    }
    const famOk = (sel: Selector) => {
      if (family === 'ip' && sel.startsWith('ip6 ')) throw new Error(`conflicting protocols: ${sel} in an ip table`);
      if (family === 'ip6' && sel.startsWith('ip ')) throw new Error(`conflicting protocols: ${sel} in an ip6 table`);
    };
    const setOf = (name: string, keys: readonly Selector[], wantMap: boolean): FakeSet => {
      const s = t.sets.get(name);
      if (!s) throw new Error(`No such file or directory: ${wantMap ? 'map' : 'set'} ${name}`);
      if (s.map !== wantMap) throw new Error(`Operation not supported: @${name} is a ${s.map ? 'map' : 'set'}`);
      if (wantMap && s.value !== 'verdict') throw new Error(`Operation not supported: vmap @${name} is not a verdict map`);
      const types = keys.map((k) => SELECTOR_TYPES[k]);
      if (types.join(' . ') !== s.type.join(' . ')) throw new Error(`datatype mismatch: ${keys.join(' . ')} (${types.join(' . ')}) vs @${name} (${s.type.join(' . ')})`);
      return s;
    };
    for (const e of def.rule) {
      if ('match' in e) {
        const sels = typeof e.match === 'string' ? [e.match as Selector] : (e.match as readonly Selector[]);
        sels.forEach(famOk);
        if (typeof e.value === 'object' && e.value !== null && !Array.isArray(e.value)) setOf((e.value as { set: string }).set, sels, false);
      } else if ('update' in e) {
        e.key.forEach(famOk);
        setOf(e.update, e.key, false);
      } else if ('numgen' in e) {
        // targets checked above
      } else if ('vmap' in e) {
        e.key.forEach(famOk);
        setOf(e.vmap.set, e.key, true);
      } else if ('dnatNumgen' in e) {
        const s = t.sets.get(e.map);
        if (!s) throw new Error(`No such file or directory: map ${e.map}`);
        const want = [family === 'ip6' || (family === 'inet' && e.ip6) ? 'ipv6_addr' : 'ipv4_addr', 'inet_service'];
        if (!s.map || s.type.join(' . ') !== 'numgen' || JSON.stringify(s.value) !== JSON.stringify(want)) {
          throw new Error(`datatype mismatch: dnat to numgen map @${e.map} needs a map of numgen : ${want.join(' . ')}`);
        }
      } else if ('dnat' in e) {
        const v6 = e.dnat.includes(':');
        if ((family === 'ip' && v6) || (family === 'ip6' && !v6)) throw new Error(`conflicting protocols: dnat to ${e.dnat} in an ${family} table`);
      }
    }
  }

  /** Whole-table checks the kernel does when a transaction commits: nat reachability, loops. */
  private checkTable(t: FakeTable): void {
    const successors = (c: FakeChain): string[] => {
      const out: string[] = [];
      for (const r of c.rules) {
        out.push(...ruleChainRefs(r.rule));
        const maps =
          typeof r.rule === 'string'
            ? [...r.rule.matchAll(/vmap\s+@([A-Za-z][A-Za-z0-9_\-./]*)/g)].map((m) => m[1]!)
            : r.rule.flatMap((e) => ('vmap' in e && !('numgen' in e) ? [e.vmap.set] : []));
        for (const m of maps) for (const el of t.sets.get(m)?.elements.values() ?? []) {
          const target = verdictTarget(el.value);
          if (target) out.push(target);
        }
      }
      return out;
    };
    const hasNat = (c: FakeChain) => c.rules.some((r) => (typeof r.rule === 'string' ? NAT_STATEMENT.test(r.rule) : r.rule.some(isNatExpr)));
    for (const base of t.chains.values()) {
      if (!base.hook) continue;
      const state = new Map<string, 1 | 2>(); // 1 = on the stack, 2 = done
      const walk = (c: FakeChain) => {
        state.set(c.name, 1);
        if (base.type !== 'nat' && hasNat(c)) throw new NftError(`nft -f - failed: Operation not supported: chain ${c.name} has a nat statement and is reachable from ${base.type} chain ${base.name}`);
        for (const n of successors(c)) {
          const s = state.get(n);
          if (s === 1) throw new NftError(`nft -f - failed: Too many levels of symbolic links: jump loop through chain ${n}`);
          const next = t.chains.get(n);
          if (s === undefined && next) walk(next);
        }
        state.set(c.name, 2);
      };
      walk(base);
    }
  }

  // ------------------------------------------------------------------ output

  /** The whole model as canonical, sorted nft text (golden tests). */
  dump(): string {
    const out: string[] = [];
    const tables = [...this.tables.values()].sort((a, b) => (a.family + ' ' + a.name < b.family + ' ' + b.name ? -1 : 1));
    for (const t of tables) out.push(dumpTable(t));
    return out.join('\n');
  }

  /** One table as canonical text, or "" when it does not exist. */
  dumpTable(family: TableFamily, name: string): string {
    const t = this.table(family, name);
    return t ? dumpTable(t) : '';
  }
}

const byName = <T extends { name: string }>(a: T, b: T) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

function dumpTable(t: FakeTable): string {
  const lines: string[] = [`table ${t.family} ${t.name} {`];
  if (t.comment !== undefined) lines.push(`\tcomment ${quoteComment(t.comment)}`);
  for (const s of [...t.sets.values()].sort(byName)) {
    lines.push('', `\t${s.map ? 'map' : 'set'} ${s.name} {`);
    const def = { kind: s.map ? 'map' : 'set', name: s.name, type: s.type, flags: s.flags, ...(s.map ? { value: s.value } : {}) } as SetObj | MapObj;
    if (s.timeout !== undefined) def.timeout = s.timeout;
    if (s.size !== undefined) def.size = s.size;
    if (s.comment !== undefined) def.comment = s.comment;
    if (s.portProto && def.kind === 'map') def.portProto = s.portProto;
    for (const part of renderSetBody(def).split(' ; ')) lines.push(`\t\t${part}`);
    const els = [...s.elements.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    if (els.length) {
      lines.push('\t\telements = {');
      for (const [, el] of els) {
        const e: Pick<ElementObj, 'key' | 'value' | 'timeout' | 'comment'> = { key: el.key };
        if (el.value !== undefined) e.value = el.value;
        if (el.timeout !== undefined) e.timeout = el.timeout;
        if (el.comment !== undefined) e.comment = el.comment;
        lines.push(`\t\t\t${renderElement(s.type, s.value, e)},`);
      }
      lines.push('\t\t}');
    }
    lines.push('\t}');
  }
  const chains = [...t.chains.values()].sort((a, b) => (a.hook ? 0 : 1) - (b.hook ? 0 : 1) || byName(a, b));
  for (const c of chains) {
    lines.push('', `\tchain ${c.name} {`);
    const def: ChainObj = { kind: 'chain', name: c.name };
    if (c.hook) Object.assign(def, { type: c.type, hook: c.hook, priority: c.priority, policy: c.policy });
    if (c.comment !== undefined) def.comment = c.comment;
    const body = renderChainBody(def);
    if (body) lines.push(`\t\t${body.replace(/ ; /g, '; ')};`);
    for (const r of c.rules) lines.push(`\t\t${renderRule(r.rule, t.family, r.comment)}`);
    lines.push('\t}');
  }
  lines.push('}');
  return lines.join('\n') + '\n';
}

/** Canonical key of an element, as the fake indexes it (tests look elements up with it). */
export function fakeKey(types: readonly KeyType[], key: readonly Literal[]): string {
  return keyString(types, key);
}
