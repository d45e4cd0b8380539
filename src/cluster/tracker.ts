// The change-tracking layer both sources feed: the current object per kind and key,
// and the Change (previous/current) each event makes. No-op changes are dropped, so a
// relist, a rescan of an unchanged manifest file or a status-only bump of
// resourceVersion never wakes a reconciler.
import { canonical } from '../util/canonical.js';
import { keyOf, KINDS, type Change, type ClusterObject, type Kind, type KindMap } from './types.js';

/**
 * The bytes that decide whether an object changed: canonical JSON without the
 * bookkeeping fields the API server bumps on every write (resourceVersion, generation,
 * managedFields). Everything else (spec, labels, annotations, status) counts.
 */
export function contentOf(o: ClusterObject): string {
  const { resourceVersion: _rv, generation: _gen, managedFields: _mf, ...meta } = o.metadata as ClusterObject['metadata'] & {
    managedFields?: unknown;
  };
  return canonical({ ...o, metadata: meta });
}

const BOOKKEEPING = new Set(['resourceVersion', 'generation', 'managedFields']);

/** JSON equality (undefined members ignored, key order irrelevant), as canonical JSON would compare. */
function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) {
    // JSON writes NaN and the infinities as null (and -0 as 0, which === already equates).
    return typeof a === 'number' && typeof b === 'number' && !Number.isFinite(a) && !Number.isFinite(b);
  }
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) {
    const bb = b as unknown[];
    if (a.length !== bb.length) return false;
    for (let i = 0; i < a.length; i++) if (!jsonEqual(a[i], bb[i])) return false;
    return true;
  }
  return membersEqual(a as Record<string, unknown>, b as Record<string, unknown>, null);
}

function membersEqual(a: Record<string, unknown>, b: Record<string, unknown>, skip: Set<string> | null): boolean {
  let n = 0;
  for (const k in a) {
    if (!Object.hasOwn(a, k) || a[k] === undefined || skip?.has(k)) continue;
    n++;
    if (!Object.hasOwn(b, k) || !jsonEqual(a[k], b[k])) return false;
  }
  for (const k in b) {
    if (!Object.hasOwn(b, k) || b[k] === undefined || skip?.has(k)) continue;
    n--;
  }
  return n === 0;
}

/**
 * Whether two objects have the same content: contentOf(a) === contentOf(b), computed
 * without building either string (the tracker keeps no serialized copy per object).
 */
export function sameContent(a: ClusterObject, b: ClusterObject): boolean {
  if (a === b) return true;
  const ra = a as unknown as Record<string, unknown>, rb = b as unknown as Record<string, unknown>;
  const ma = ra.metadata as Record<string, unknown> | undefined, mb = rb.metadata as Record<string, unknown> | undefined;
  if (typeof ma !== 'object' || typeof mb !== 'object' || ma === null || mb === null) return jsonEqual(a, b);
  return membersEqual(ma, mb, BOOKKEEPING) && membersEqual(ra, rb, METADATA);
}
const METADATA = new Set(['metadata']);

export class ChangeTracker {
  /** The current object per kind and key: nothing else is kept per object. */
  private readonly byKind = new Map<Kind, Map<string, ClusterObject>>(KINDS.map((k) => [k, new Map()]));

  private kindMap(kind: Kind): Map<string, ClusterObject> {
    const m = this.byKind.get(kind);
    if (!m) throw new Error(`kind: unknown kind ${JSON.stringify(kind)} (expected one of ${KINDS.join(', ')})`);
    return m;
  }

  /**
   * Adds or updates an object. Returns the change, or undefined when the content is
   * unchanged (the stored object is still replaced, so get() shows the newest
   * resourceVersion). `key` is keyOf(obj) when the caller already has it (sharing the
   * string rather than building another per object).
   */
  upsert(obj: ClusterObject, key: string = keyOf(obj)): Change | undefined {
    const m = this.kindMap(obj.kind);
    const prev = m.get(key);
    m.set(key, obj);
    if (!prev) return { type: 'add', kind: obj.kind, key, obj };
    if (sameContent(prev, obj)) return undefined;
    return { type: 'update', kind: obj.kind, key, old: prev, obj };
  }

  /** Removes an object; undefined when it was not there. */
  remove(kind: Kind, key: string): Change | undefined {
    const m = this.kindMap(kind);
    const prev = m.get(key);
    if (!prev) return undefined;
    m.delete(key);
    return { type: 'delete', kind, key, old: prev };
  }

  /**
   * Makes the kind hold exactly `objs` (a relist or a full rescan) and returns the
   * difference: deletes first (so a consumer never sees an old and a new owner of the
   * same address at once), then adds and updates in input order. With duplicate keys
   * in `objs` the last one wins.
   */
  replaceAll(kind: Kind, objs: readonly ClusterObject[]): Change[] {
    const m = this.kindMap(kind);
    const wanted = new Map<string, ClusterObject>();
    for (const o of objs) {
      if (o.kind !== kind) throw new Error(`replaceAll(${kind}): got an object of kind ${JSON.stringify(o.kind)}`);
      const key = keyOf(o);
      wanted.delete(key); // keep the last occurrence's position
      wanted.set(key, o);
    }
    const changes: Change[] = [];
    for (const key of [...m.keys()].sort()) {
      if (!wanted.has(key)) changes.push(this.remove(kind, key)!);
    }
    for (const [key, o] of wanted) {
      const c = this.upsert(o, key);
      if (c) changes.push(c);
    }
    return changes;
  }

  list<K extends Kind>(kind: K): KindMap[K][] {
    return [...this.kindMap(kind).values()] as KindMap[K][];
  }

  get<K extends Kind>(kind: K, key: string): KindMap[K] | undefined {
    return this.kindMap(kind).get(key) as KindMap[K] | undefined;
  }

  keys(kind: Kind): string[] {
    return [...this.kindMap(kind).keys()];
  }

  size(kind: Kind): number {
    return this.kindMap(kind).size;
  }
}
