// The read side of the cluster state: the current objects of one source, which
// reconcilers, DNS and the policy evaluator read. Listeners hear about a batch of
// changes only after the view has applied it, so a listener that reads the view sees
// the state the changes describe.
import { logger, type Logger } from '../util/log.js';
import { ChangeTracker } from './tracker.js';
import { keyOf, type Change, type ClusterObject, type ClusterReader, type ClusterSource, type Kind, type KindMap } from './types.js';
import { normalize } from './validate.js';

export class ClusterView implements ClusterReader {
  private readonly tracker = new ChangeTracker();
  private readonly listeners = new Set<(changes: readonly Change[]) => void>();
  private readonly log: Logger;

  constructor(
    private readonly source: ClusterSource,
    opts: { log?: Logger } = {},
  ) {
    this.log = opts.log ?? logger('cluster.view');
    source.onChange((changes) => this.apply(changes));
  }

  /**
   * Applies a batch from the source. The view recomputes each change against its own
   * state (so a repeated event is a no-op, and `old` is what the view held) and passes
   * on only the ones that changed something.
   */
  private apply(changes: readonly Change[]): void {
    const applied: Change[] = [];
    for (const c of changes) {
      try {
        let r: Change | undefined;
        if (c.type === 'delete') r = this.tracker.remove(c.kind, c.key);
        else {
          const obj = normalize(c.obj!);
          // The source's key string is shared rather than rebuilt (one less string per object).
          r = this.tracker.upsert(obj, isKeyOf(c.key, obj) ? c.key : keyOf(obj));
        }
        if (r) applied.push(r);
      } catch (err) {
        // One bad object must not stop the others from reaching the reconcilers.
        this.log.error('dropped a change the view could not apply', { kind: c.kind, key: c.key, type: c.type, error: String(err) });
      }
    }
    if (applied.length === 0) return;
    for (const l of [...this.listeners]) {
      try {
        l(applied);
      } catch (err) {
        this.log.error('change listener threw', { error: err instanceof Error ? (err.stack ?? err.message) : String(err) });
      }
    }
  }

  list<K extends Kind>(kind: K): KindMap[K][] {
    return this.tracker.list(kind);
  }

  get<K extends Kind>(kind: K, key: string): KindMap[K] | undefined {
    return this.tracker.get(kind, key);
  }

  hasSynced(): boolean {
    return this.source.hasSynced();
  }

  onChange(listener: (changes: readonly Change[]) => void): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }
}

/** key === keyOf(o), without building the string. */
function isKeyOf(key: string, o: ClusterObject): boolean {
  const { name, namespace } = o.metadata;
  if (!namespace) return key === name;
  return key.length === namespace.length + 1 + name.length && key.charCodeAt(namespace.length) === 47 && key.startsWith(namespace) && key.endsWith(name);
}
