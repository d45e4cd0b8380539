// The proxy's memory of one family's tables (pure): the desired fragments per
// service, and what it believes the kernel holds (chain contents by hash, sets, map
// elements). `plan()` turns the difference into one transaction; `commit()` records
// it once nft succeeded. The kernel is never listed to compute a diff.
//
//   rebuild (first sync, after any failure): add + delete + re-add the table and write
//     everything in the same transaction — atomic, and adopts whatever table a
//     previous agent left (dynamic affinity entries and numgen counters restart);
//   incremental: only services marked dirty are compared: new chains are added,
//     changed chains flushed and rewritten, map elements diffed one by one; chains and
//     sets a service no longer uses are flushed now and deleted in a later
//     transaction (older kernels keep a reference to a chain briefly after the rules
//     pointing at it are gone, as kube-proxy notes).
//
// Map elements may be claimed by several services (two services with the same
// external IP and port, or the same NodePort); the service whose key sorts first
// wins, deterministically, whatever order changes arrive in. Endpoint-map elements
// are the exception: their keys lie in the slot their service port holds alone
// (EndpointSlots), so they are owned, not claimed, and diffed per service against the
// fragment last applied (most of a table's elements: 100,000 of 121,000 at 10,000
// services x 10 endpoints).
//
// The family's tables are the main one and PROXY_SHARDS shards (ruleset.ts): a
// service's chains, sets and endpoint elements live in its shard; a claimed element
// lives where its winning service puts it (elementTable). A plan is one transaction per
// table it touches, applied together in one batch.
import { Transaction, type Expr, type MapObj, type NftObject, type SetObj, type VerdictExpr } from '../os/nft.js';
import type { IPFamily } from './model.js';
import { EndpointSlots, MAIN_TABLE, PROXY_TABLES, clusterIPSet, elementTable, endpointMap, hairpinSet, mapObjects, proxyTableName, shardOf, type FragElement, type Fragment } from './ruleset.js';

interface Claim {
  svc: string;
  el: FragElement;
}

export interface PlanStats {
  rebuild: boolean;
  chainsAdded: number;
  chainsRewritten: number;
  chainsFlushedStale: number;
  chainsDeleted: number;
  setsAdded: number;
  setsDeleted: number;
  elementsAdded: number;
  elementsDeleted: number;
}

export interface Plan {
  /** One transaction per table the plan touches (main table first); run them together. */
  txs: Transaction[];
  /** Operations in all of them. */
  size: number;
  stats: PlanStats;
  /** Records the plan as applied. Call only after nft succeeded. */
  commit(): void;
}

const rulesHash = (rules: readonly (readonly Expr[])[]) => JSON.stringify(rules);
const setHash = (s: SetObj) => JSON.stringify([s.type, s.flags, s.timeout]);
/** Endpoint-map elements are owned by one service port (see the header). */
const owned = (el: FragElement) => el.set.startsWith('endpoints-');
const ownedKey = (el: FragElement) => `${el.set}|${el.key[0]}`;
/** A set or map of one table, "table|name": endpoint maps, and the rebuild's elements grouped by set. */
const inTable = (table: number, name: string) => `${table}|${name}`;
const splitInTable = (k: string): [number, string] => {
  const i = k.indexOf('|');
  return [Number(k.slice(0, i)), k.slice(i + 1)];
};

/** The transactions of one plan, one per table, created when first needed. */
class TxSet {
  private readonly byTable = new Map<number, Transaction>();
  constructor(
    private readonly family: IPFamily,
    private readonly maps: Map<string, MapObj | SetObj>,
  ) {}

  of(table: number): Transaction {
    let tx = this.byTable.get(table);
    if (!tx) {
      tx = new Transaction(this.family === 4 ? 'ip' : 'ip6', proxyTableName(table));
      for (const m of this.maps.values()) tx.declare(m);
      this.byTable.set(table, tx);
    }
    return tx;
  }

  list(): Transaction[] {
    return [...this.byTable.entries()].sort((a, b) => a[0] - b[0]).map(([, tx]) => tx);
  }
}

/** A comparable form of an element's value (a verdict, or address . port). */
function verdictStr(v: VerdictExpr | readonly unknown[] | undefined): string {
  if (v === undefined) return '';
  if (Array.isArray(v)) return v.join(' . ');
  return JSON.stringify(v);
}

export class TableState {
  readonly family: IPFamily;
  /** Desired fragments by service key. */
  private readonly desired = new Map<string, Fragment>();
  /** Fragments as last applied, by service key. */
  private applied = new Map<string, Fragment>();
  private readonly dirty = new Set<string>();
  /**
   * "map|key" -> its claim: one service's (almost always), or claiming service ->
   * claim when several services want the key (a Map only then: a Map per key cost a
   * tenth of a 10,000-service full sync).
   */
  private readonly claims = new Map<string, Claim | Map<string, Claim>>();
  /** Verdict-map keys claimed by more than one service (kept incrementally: O(1) per sync). */
  private readonly contested = new Set<string>();
  /** What the kernel holds (as far as we know). */
  private kChains = new Map<string, string>();
  private kSets = new Map<string, string>();
  private kElements = new Map<string, Claim>();
  /** Chains/sets flushed and awaiting deletion: name -> generation they went stale in, and their table. */
  private readonly stale = new Map<string, { kind: 'chain' | 'set'; gen: number; table: number }>();
  private generation = 0;
  private needRebuild = true;
  /** The containers of fragment elements: verdict maps, the hairpin and cluster-ips sets, endpoint maps (added when first seen). */
  private readonly maps: Map<string, MapObj | SetObj>;
  /** Endpoint maps that exist in the kernel, "table|name" (created when first used, kept until the next rebuild). */
  private readonly kEndpointMaps = new Set<string>();
  /** Elements per endpoint map ("table|name") in the desired fragments; a map left with none is deleted a transaction later. */
  private readonly epRefs = new Map<string, number>();
  private readonly epUnused = new Map<string, number>();
  /** Endpoint-map slots of this family's service ports (ruleset.ts serviceFragment). */
  readonly slots = new EndpointSlots();

  constructor(
    family: IPFamily,
    private staticObjs: NftObject[],
    private shardObjs: NftObject[],
  ) {
    this.family = family;
    this.maps = new Map<string, MapObj | SetObj>([...mapObjects(family), hairpinSet(family), clusterIPSet(family)].map((m) => [m.name, m]));
  }

  /** Forces the next plan to rebuild the whole table (after a failure, or on start). */
  invalidate(): void {
    this.needRebuild = true;
  }

  get rebuildPending(): boolean {
    return this.needRebuild;
  }

  /** Replaces the static parts (config change); forces a rebuild. */
  setStatic(objs: NftObject[], shardObjs: NftObject[]): void {
    this.staticObjs = objs;
    this.shardObjs = shardObjs;
    this.needRebuild = true;
  }

  /** Sets (or with undefined removes) a service's desired fragment. */
  setService(key: string, frag: Fragment | undefined): void {
    const old = this.desired.get(key);
    if (old) for (const el of old.elements) if (owned(el)) this.epRef(key, el.set, -1);
    else this.unclaim(key, el);
    // Endpoint-map slots the service no longer uses go back to the pool (their elements
    // were just unclaimed, so the plan deletes them unless another port takes them over).
    if (old) for (const id of old.slots) if (!frag?.slots.includes(id)) this.slots.release(id);
    if (frag && (frag.chains.size > 0 || frag.elements.length > 0)) {
      this.desired.set(key, frag);
      for (const el of frag.elements) if (owned(el)) this.epRef(key, el.set, 1);
      else this.claim(key, el);
    } else this.desired.delete(key);
    this.dirty.add(key);
  }

  serviceKeys(): IterableIterator<string> {
    return this.desired.keys();
  }

  /** Number of chains in the kernel (desired and stale). */
  get chainCount(): number {
    return this.kChains.size;
  }

  /** The definition of a container of fragment elements (endpoint maps are registered when first seen). */
  private mapOf(name: string): MapObj | SetObj {
    let m = this.maps.get(name);
    if (!m) {
      m = endpointMap(this.family, name);
      if (!m) throw new Error(`proxy state: element of unknown map ${name}`);
      this.maps.set(name, m);
    }
    return m;
  }

  /**
   * The identity of an element: its map and key. Fragment literals are canonical by
   * construction (the model canonicalizes every address; protocols are lower case,
   * ports and indexes numbers), so joining them is exact; Transaction.add still
   * validates every literal before it reaches the kernel.
   */
  private elKey(el: FragElement): string {
    this.mapOf(el.set);
    return `${el.set}|${el.key.join(' . ')}`;
  }

  private claim(svc: string, el: FragElement): void {
    const k = this.elKey(el);
    const c: Claim = { svc, el };
    const cur = this.claims.get(k);
    if (cur === undefined) {
      this.claims.set(k, c);
      return;
    }
    if (!(cur instanceof Map)) {
      if (cur.svc === svc) {
        this.claims.set(k, c);
        return;
      }
      this.claims.set(k, new Map<string, Claim>([[cur.svc, cur], [svc, c]]));
    } else cur.set(svc, c);
    // Several services sharing an endpoint share its hairpin element: not a conflict.
    if (el.set !== 'hairpin' && el.set !== 'cluster-ips') this.contested.add(k);
  }

  private unclaim(svc: string, el: FragElement): void {
    const k = this.elKey(el);
    const cur = this.claims.get(k);
    if (cur === undefined) return;
    if (cur instanceof Map) {
      cur.delete(svc);
      if (cur.size > 1) return;
      this.contested.delete(k);
      const [only] = cur.values();
      if (only) {
        this.claims.set(k, only);
        return;
      }
    } else if (cur.svc !== svc) return;
    this.claims.delete(k);
  }

  private epRef(svc: string, map: string, d: number): void {
    this.mapOf(map);
    const k = inTable(shardOf(svc), map);
    this.epRefs.set(k, (this.epRefs.get(k) ?? 0) + d);
  }

  /** The winning claim of an element key: the smallest service key. */
  private winner(k: string): Claim | undefined {
    const cur = this.claims.get(k);
    if (!(cur instanceof Map)) return cur;
    let best: string | undefined;
    for (const svc of cur.keys()) if (best === undefined || svc < best) best = svc;
    return cur.get(best!);
  }

  /** Element keys claimed by more than one service (for logging). */
  conflicts(): { key: string; services: string[] }[] {
    const out: { key: string; services: string[] }[] = [];
    for (const k of this.contested) {
      const cur = this.claims.get(k)!;
      out.push({ key: k, services: cur instanceof Map ? [...cur.keys()].sort() : [cur.svc] });
    }
    return out;
  }

  plan(): Plan {
    return this.needRebuild ? this.planRebuild() : this.planIncremental();
  }

  private newTxs(): TxSet {
    return new TxSet(this.family, this.maps);
  }

  private finish(txs: TxSet, stats: PlanStats, commit: () => void): Plan {
    const list = txs.list();
    return { txs: list, size: list.reduce((n, tx) => n + tx.size, 0), stats, commit };
  }

  private stats(rebuild: boolean): PlanStats {
    return { rebuild, chainsAdded: 0, chainsRewritten: 0, chainsFlushedStale: 0, chainsDeleted: 0, setsAdded: 0, setsDeleted: 0, elementsAdded: 0, elementsDeleted: 0 };
  }

  private planRebuild(): Plan {
    const txs = this.newTxs();
    const st = this.stats(true);
    // Every table is added, deleted and added again: atomic, and adopts (or, for a
    // shard nobody needs, removes) whatever a previous agent left.
    for (const t of PROXY_TABLES) {
      txs.of(t).add({ kind: 'table' });
      txs.of(t).delete({ kind: 'table' });
    }
    // Order per table: the static skeleton (its maps bound while still empty), the
    // service chains (empty), the endpoint maps and affinity sets, the service rules,
    // and every element last, grouped by set. Binding a map to a rule walks all the
    // map's elements (for loops), so rules bind the endpoint maps while they are empty;
    // consecutive elements of one set share netlink messages (the kernel looks the set
    // up by name once per message, walking the table's list of sets). Measured at
    // 10,000 services x 10 endpoints: 2.1 s in the kernel with elements per service
    // before the rules, 1.2 s so.
    const skeleton = (table: number, objs: NftObject[]) => {
      const tx = txs.of(table);
      const rules: NftObject[] = [];
      const elements: NftObject[] = [];
      for (const o of objs) {
        if (o.kind === 'element') elements.push(o);
        else if (o.kind === 'rule') rules.push(o);
        else tx.add(o);
      }
      for (const e of elements) tx.add(e);
      for (const r of rules) tx.add(r);
    };
    for (const t of PROXY_TABLES) skeleton(t, t === MAIN_TABLE ? this.staticObjs : this.shardObjs);
    const chains = new Map<string, string>();
    const sets = new Map<string, string>();
    for (const [svc, frag] of this.desired) {
      const tx = txs.of(shardOf(svc));
      for (const [name, rs] of frag.chains) {
        tx.add({ kind: 'chain', name });
        chains.set(name, rulesHash(rs));
        st.chainsAdded++;
      }
    }
    const kel = new Map<string, Claim>();
    /** "table|set" -> elements, in first-seen order. */
    const bySet = new Map<string, FragElement[]>();
    const push = (table: number, el: FragElement) => {
      const k = inTable(table, el.set);
      let list = bySet.get(k);
      if (!list) bySet.set(k, (list = []));
      list.push(el);
    };
    for (const [k, cur] of this.claims) {
      const w = cur instanceof Map ? this.winner(k)! : cur;
      kel.set(k, w);
      push(elementTable(w.el.set, w.svc), w.el);
    }
    for (const [svc, frag] of this.desired) for (const el of frag.elements) if (owned(el)) push(shardOf(svc), el);
    const epMaps = [...bySet.keys()].filter((k) => splitInTable(k)[1].startsWith('endpoints-'));
    for (const k of epMaps) {
      const [table, name] = splitInTable(k);
      txs.of(table).add(this.mapOf(name) as MapObj);
    }
    for (const [svc, frag] of this.desired) {
      const tx = txs.of(shardOf(svc));
      for (const [name, s] of frag.sets) {
        tx.add(s);
        sets.set(name, setHash(s));
        st.setsAdded++;
      }
    }
    for (const [svc, frag] of this.desired) {
      const tx = txs.of(shardOf(svc));
      for (const [name, rs] of frag.chains) for (const r of rs) tx.add({ kind: 'rule', chain: name, rule: r });
    }
    for (const [k, list] of bySet) {
      const tx = txs.of(splitInTable(k)[0]);
      for (const el of list) tx.add(el);
      st.elementsAdded += list.length;
    }
    return this.finish(txs, st, () => {
      // The plan's maps become the record (the plan is committed at most once).
      this.kChains = chains;
      this.kSets = sets;
      this.kEndpointMaps.clear();
      for (const k of epMaps) this.kEndpointMaps.add(k);
      this.epUnused.clear();
      this.kElements = kel;
      this.stale.clear();
      this.applied = new Map(this.desired);
      this.dirty.clear();
      this.needRebuild = false;
      this.generation++;
    });
  }

  private planIncremental(): Plan {
    const txs = this.newTxs();
    const st = this.stats(false);
    const gen = this.generation;
    const chainUpdates = new Map<string, string>(); // name -> new hash
    const setUpdates = new Map<string, string>();
    const newlyStale = new Map<string, { kind: 'chain' | 'set'; table: number }>();
    const unstale: string[] = [];
    const ruleOps: [number, string, (readonly Expr[])[], boolean][] = []; // table, chain, rules, flush first
    const touchedKeys = new Set<string>();

    // name -> definition and table (a service's chains and sets live in its shard).
    const wantChains = new Map<string, { rules: (readonly Expr[])[]; table: number }>();
    const wantSets = new Map<string, { set: SetObj; table: number }>();
    const hadChains = new Map<string, number>();
    const hadSets = new Map<string, number>();
    for (const svc of this.dirty) {
      const table = shardOf(svc);
      const now = this.desired.get(svc);
      const before = this.applied.get(svc);
      if (now) {
        for (const [n, r] of now.chains) wantChains.set(n, { rules: r, table });
        for (const [n, s] of now.sets) wantSets.set(n, { set: s, table });
        for (const el of now.elements) if (!owned(el)) touchedKeys.add(this.elKey(el));
      }
      if (before) {
        for (const n of before.chains.keys()) hadChains.set(n, table);
        for (const n of before.sets.keys()) hadSets.set(n, table);
        for (const el of before.elements) if (!owned(el)) touchedKeys.add(this.elKey(el));
      }
    }

    // 1. Sets: new ones first (rules may reference them). A stale set with the same definition is reused.
    for (const [name, { set: s, table }] of wantSets) {
      const h = setHash(s);
      const cur = this.kSets.get(name);
      if (cur === h) {
        if (this.stale.has(name)) unstale.push(name);
        continue;
      }
      if (cur !== undefined) {
        // Same name, other definition: only possible for a stale set (names hash the timeout); replace it.
        txs.of(table).delete({ kind: 'set', name });
        st.setsDeleted++;
        unstale.push(name);
      }
      txs.of(table).add(s);
      setUpdates.set(name, h);
      st.setsAdded++;
    }
    // 1b. Endpoint maps used for the first time (in the service's shard).
    const newEpMaps: string[] = [];
    for (const svc of this.dirty) {
      const table = shardOf(svc);
      for (const el of this.desired.get(svc)?.elements ?? []) {
        if (!el.set.startsWith('endpoints-')) continue;
        const k = inTable(table, el.set);
        if (this.kEndpointMaps.has(k) || newEpMaps.includes(k)) continue;
        txs.of(table).add(this.mapOf(el.set) as MapObj);
        newEpMaps.push(k);
      }
    }
    // 2. Chains: declare new ones, then write rules of new and changed ones.
    for (const [name, { rules, table }] of wantChains) {
      const h = rulesHash(rules);
      const cur = this.kChains.get(name);
      if (this.stale.has(name)) unstale.push(name);
      if (cur === h) continue;
      if (cur === undefined) {
        txs.of(table).add({ kind: 'chain', name });
        st.chainsAdded++;
        ruleOps.push([table, name, rules, false]);
      } else {
        st.chainsRewritten++;
        ruleOps.push([table, name, rules, true]);
      }
      chainUpdates.set(name, h);
    }
    for (const [table, name, rules, flush] of ruleOps) {
      const tx = txs.of(table);
      if (flush) tx.flush({ kind: 'chain', name });
      for (const r of rules) tx.add({ kind: 'rule', chain: name, rule: r });
    }
    // 3. Map elements. A claimed element lives where its winning service puts it: a new
    // winner in another shard moves it even when its value is the same.
    const elementUpdates = new Map<string, Claim | undefined>();
    const adds: [number, FragElement][] = [];
    for (const k of touchedKeys) {
      const want = this.winner(k);
      const have = this.kElements.get(k);
      const wantTable = want && elementTable(want.el.set, want.svc);
      const haveTable = have && elementTable(have.el.set, have.svc);
      if (want && have && wantTable === haveTable && (want.el === have.el || (verdictStr(want.el.value) === verdictStr(have.el.value) && want.el.comment === have.el.comment))) continue;
      if (have) {
        txs.of(haveTable!).delete({ kind: 'element', set: have.el.set, key: have.el.key });
        st.elementsDeleted++;
      }
      if (want) adds.push([wantTable!, want.el]);
      elementUpdates.set(k, want);
    }
    // Owned (endpoint-map) elements: the applied fragment against the desired one. All
    // deletions come before all additions, so a slot one port released and another took
    // in the same sync is rewritten correctly.
    for (const svc of this.dirty) {
      const before = this.applied.get(svc)?.elements;
      const now = this.desired.get(svc)?.elements;
      if (before === now) continue;
      const table = shardOf(svc);
      const tx = txs.of(table);
      const had = new Map<string, FragElement>();
      for (const el of before ?? []) if (owned(el)) had.set(ownedKey(el), el);
      for (const el of now ?? []) {
        if (!owned(el)) continue;
        const k = ownedKey(el);
        const prev = had.get(k);
        if (prev !== undefined) {
          had.delete(k);
          if (verdictStr(prev.value) === verdictStr(el.value)) continue;
          tx.delete({ kind: 'element', set: prev.set, key: prev.key });
          st.elementsDeleted++;
        }
        adds.push([table, el]);
      }
      for (const el of had.values()) {
        tx.delete({ kind: 'element', set: el.set, key: el.key });
        st.elementsDeleted++;
      }
    }
    for (const [table, el] of adds) {
      txs.of(table).add(el);
      st.elementsAdded++;
    }
    // 4. Chains and sets no longer wanted: flush now, delete later.
    for (const [name, table] of hadChains) {
      if (wantChains.has(name) || this.stale.has(name) || !this.kChains.has(name)) continue;
      txs.of(table).flush({ kind: 'chain', name });
      newlyStale.set(name, { kind: 'chain', table });
      st.chainsFlushedStale++;
    }
    for (const [name, table] of hadSets) {
      if (wantSets.has(name) || this.stale.has(name) || !this.kSets.has(name)) continue;
      newlyStale.set(name, { kind: 'set', table });
    }
    // 4b. Endpoint maps nobody uses any more: noted now, deleted in a later transaction
    // (like stale chains: the rules that used them were flushed in this one).
    const epDeleted: string[] = [];
    const epNoted: string[] = [];
    for (const k of this.kEndpointMaps) {
      if ((this.epRefs.get(k) ?? 0) > 0) continue;
      const since = this.epUnused.get(k);
      if (since === undefined) epNoted.push(k);
      else if (since < gen + 1) {
        const [table, name] = splitInTable(k);
        txs.of(table).delete({ kind: 'map', name });
        epDeleted.push(k);
      }
    }
    // 5. Delete what went stale in an earlier transaction and is still unwanted.
    const deleted: string[] = [];
    const unstaleSet = new Set(unstale);
    for (const [name, s] of this.stale) {
      if (s.gen >= gen + 1 || unstaleSet.has(name)) continue;
      if (s.kind === 'chain') {
        txs.of(s.table).delete({ kind: 'chain', name });
        st.chainsDeleted++;
      } else {
        txs.of(s.table).delete({ kind: 'set', name });
        st.setsDeleted++;
      }
      deleted.push(name);
    }

    return this.finish(txs, st, () => {
      for (const [n, h] of setUpdates) this.kSets.set(n, h);
      for (const k of newEpMaps) this.kEndpointMaps.add(k);
      for (const [k] of this.epUnused) if ((this.epRefs.get(k) ?? 0) > 0) this.epUnused.delete(k);
      for (const k of epNoted) this.epUnused.set(k, gen + 1);
      for (const k of epDeleted) {
        this.kEndpointMaps.delete(k);
        this.epUnused.delete(k);
      }
      for (const [n, h] of chainUpdates) this.kChains.set(n, h);
      for (const n of unstale) this.stale.delete(n);
      for (const [k, c] of elementUpdates) {
        if (c) this.kElements.set(k, c);
        else this.kElements.delete(k);
      }
      for (const [n, { kind, table }] of newlyStale) {
        this.stale.set(n, { kind, gen: gen + 1, table });
        if (kind === 'chain') this.kChains.set(n, rulesHash([]));
      }
      for (const n of deleted) {
        const s = this.stale.get(n)!;
        this.stale.delete(n);
        if (s.kind === 'chain') this.kChains.delete(n);
        else this.kSets.delete(n);
      }
      for (const svc of this.dirty) {
        const d = this.desired.get(svc);
        if (d) this.applied.set(svc, d);
        else this.applied.delete(svc);
      }
      this.dirty.clear();
      this.generation = gen + 1;
    });
  }
}
