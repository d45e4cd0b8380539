// ClusterView over a scripted ClusterSource: the view applies a batch before its
// listeners hear of it, drops repeats, normalises objects and isolates listeners.
import t from 'tap';
import { ClusterView } from '../../src/cluster/view.js';
import type { Change, ClusterSource, EndpointSlice, Service } from '../../src/cluster/types.js';
import { setLogSink } from '../../src/util/log.js';

const logs: Record<string, unknown>[] = [];
const prevSink = setLogSink((line) => logs.push(JSON.parse(line) as Record<string, unknown>));
t.teardown(() => void setLogSink(prevSink));

/** A source whose changes and synced state the test drives by hand. */
class ScriptedSource implements ClusterSource {
  readonly name = 'scripted';
  synced = false;
  private listeners: ((c: Change[]) => void)[] = [];
  async start() {}
  async stop() {}
  hasSynced() {
    return this.synced;
  }
  async whenSynced() {}
  onChange(l: (c: Change[]) => void) {
    this.listeners.push(l);
  }
  emit(changes: Change[]) {
    for (const l of this.listeners) l(changes);
  }
}

const svc = (name: string, port: number): Service => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace: 'default' },
  spec: { ports: [{ port }] },
});
const add = (obj: Service): Change => ({ type: 'add', kind: 'Service', key: `default/${obj.metadata.name}`, obj });

t.test('listeners see the batch after the view applied it', async (t) => {
  const src = new ScriptedSource();
  const view = new ClusterView(src);
  const seen: { changes: readonly Change[]; inView: number }[] = [];
  view.onChange((changes) => seen.push({ changes, inView: view.list('Service').length }));

  src.emit([add(svc('a', 80)), add(svc('b', 81))]);
  t.equal(seen.length, 1, 'one batch in, one notification out');
  t.equal(seen[0]!.inView, 2, 'the listener already reads the new state');
  t.equal(view.get('Service', 'default/a')?.spec.ports?.[0]?.port, 80);
});

t.test('repeats are dropped; old is what the view held', async (t) => {
  const src = new ScriptedSource();
  const view = new ClusterView(src);
  const got: Change[] = [];
  view.onChange((c) => got.push(...c));
  src.emit([add(svc('a', 80))]);
  src.emit([add(svc('a', 80))]); // the same object again (e.g. a source replays it)
  t.equal(got.length, 1);
  src.emit([{ type: 'update', kind: 'Service', key: 'default/a', obj: svc('a', 90) }]);
  t.equal((got[1]!.old as Service).spec.ports?.[0]?.port, 80);
  src.emit([{ type: 'delete', kind: 'Service', key: 'default/a', old: svc('a', 90) }]);
  src.emit([{ type: 'delete', kind: 'Service', key: 'default/a', old: svc('a', 90) }]);
  t.same(
    got.map((c) => c.type),
    ['add', 'update', 'delete'],
  );
  t.same(view.list('Service'), []);
});

t.test('hasSynced mirrors the source; unsubscribe works', async (t) => {
  const src = new ScriptedSource();
  const view = new ClusterView(src);
  t.notOk(view.hasSynced());
  src.synced = true;
  t.ok(view.hasSynced());
  let n = 0;
  const off = view.onChange(() => n++);
  src.emit([add(svc('a', 80))]);
  off();
  src.emit([add(svc('b', 80))]);
  t.equal(n, 1);
});

t.test('objects are normalised on entry; a throwing listener does not stop the others', async (t) => {
  const src = new ScriptedSource();
  const view = new ClusterView(src);
  let second = 0;
  view.onChange(() => {
    throw new Error('boom');
  });
  view.onChange(() => second++);
  const slice = {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: 's', namespace: 'default', managedFields: [{ manager: 'x' }] },
    addressType: 'IPv4',
    endpoints: null,
  } as unknown as EndpointSlice;
  src.emit([{ type: 'add', kind: 'EndpointSlice', key: 'default/s', obj: slice }]);
  const got = view.get('EndpointSlice', 'default/s')!;
  t.same(got.endpoints, [], 'endpoints: null becomes []');
  t.notOk('managedFields' in got.metadata, 'managedFields dropped');
  t.equal(second, 1);
  t.ok(logs.some((l) => l.msg === 'change listener threw' && String(l.error).includes('boom')));
});
