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

interface Entry {
  obj: ClusterObject;
  content: string;
}

export class ChangeTracker {
  private readonly byKind = new Map<Kind, Map<string, Entry>>(KINDS.map((k) => [k, new Map()]));

  private kindMap(kind: Kind): Map<string, Entry> {
    const m = this.byKind.get(kind);
    if (!m) throw new Error(`kind: unknown kind ${JSON.stringify(kind)} (expected one of ${KINDS.join(', ')})`);
    return m;
  }

  /**
   * Adds or updates an object. Returns the change, or undefined when the content is
   * unchanged (the stored object is still replaced, so get() shows the newest
   * resourceVersion).
   */
  upsert(obj: ClusterObject): Change | undefined {
    const m = this.kindMap(obj.kind);
    const key = keyOf(obj);
    const content = contentOf(obj);
    const prev = m.get(key);
    m.set(key, { obj, content });
    if (!prev) return { type: 'add', kind: obj.kind, key, obj };
    if (prev.content === content) return undefined;
    return { type: 'update', kind: obj.kind, key, old: prev.obj, obj };
  }

  /** Removes an object; undefined when it was not there. */
  remove(kind: Kind, key: string): Change | undefined {
    const m = this.kindMap(kind);
    const prev = m.get(key);
    if (!prev) return undefined;
    m.delete(key);
    return { type: 'delete', kind, key, old: prev.obj };
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
    for (const o of wanted.values()) {
      const c = this.upsert(o);
      if (c) changes.push(c);
    }
    return changes;
  }

  list<K extends Kind>(kind: K): KindMap[K][] {
    return [...this.kindMap(kind).values()].map((e) => e.obj as KindMap[K]);
  }

  get<K extends Kind>(kind: K, key: string): KindMap[K] | undefined {
    return this.kindMap(kind).get(key)?.obj as KindMap[K] | undefined;
  }

  keys(kind: Kind): string[] {
    return [...this.kindMap(kind).keys()];
  }

  size(kind: Kind): number {
    return this.kindMap(kind).size;
  }
}
