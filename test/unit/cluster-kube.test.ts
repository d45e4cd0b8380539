// The production KubeSource (client-node's HTTP and watch code included) against a
// local server speaking the API's list/watch wire format: initial lists, watch
// events, bookmarks, 410 Gone (event and HTTP) with a relist that deletes what went
// away during the gap, dropped connections, backoff, and the Node annotation patch.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubeSource, KubeApiError, type KubeSourceOptions } from '../../src/cluster/kube.js';
import { ClusterView } from '../../src/cluster/view.js';
import { createSource } from '../../src/cluster/index.js';
import { KINDS, keyOf, type Change, type ClusterReader, type EndpointSlice, type Kind } from '../../src/cluster/types.js';
import { setLogSink } from '../../src/util/log.js';
import { FakeApiServer } from '../helpers/fake-apiserver.js';

const logs: Record<string, unknown>[] = [];
const prevSink = setLogSink((line) => logs.push(JSON.parse(line) as Record<string, unknown>));
t.teardown(() => void setLogSink(prevSink));

const dir = mkdtempSync(join(tmpdir(), 'skiff-kube-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

type Tap = { teardown(fn: () => unknown): void };

function until(view: ClusterReader, pred: () => boolean, what: string, ms = 5000): Promise<void> {
  return new Promise((resolve, reject) => {
    if (pred()) return resolve();
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timed out after ${ms} ms waiting for ${what}`));
    }, ms);
    const off = view.onChange(() => {
      if (!pred()) return;
      clearTimeout(timer);
      off();
      resolve();
    });
  });
}

const pod = (name: string, ip: string, ns = 'default') => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name, namespace: ns, labels: { app: 'web' } },
  spec: { nodeName: 'node-1', containers: [{ name: 'c', ports: [{ name: 'http', containerPort: 8080 }] }] },
  status: { podIP: ip, conditions: [{ type: 'Ready', status: 'True' }] },
});

async function setup(t: Tap, opts: Partial<KubeSourceOptions> = {}, seed?: (s: FakeApiServer) => void) {
  const server = await FakeApiServer.start();
  t.teardown(() => server.close());
  seed?.(server);
  const kubeconfig = server.writeKubeconfig(mkdtempSync(join(dir, 'kc-')));
  const source = new KubeSource({ kubeconfig, backoff: { initialMs: 10, maxMs: 40, jitter: 0 }, minWatchMs: 200, ...opts });
  const view = new ClusterView(source);
  const changes: Change[] = [];
  view.onChange((c) => changes.push(...c));
  t.teardown(() => source.stop());
  await source.start();
  await source.whenSynced();
  // Every kind watching: from here on, server changes reach the view by watch.
  await server.waitFor(() => server.watcherCount() === KINDS.length, 'all watches');
  return { server, source, view, changes };
}

/** Every object of every kind, as "key@resourceVersion": the view must end equal to the server. */
const serverState = (s: FakeApiServer) => Object.fromEntries(KINDS.map((k) => [k, s.list(k).map((o) => `${keyOf(o)}@${o.metadata.resourceVersion}`).sort()]));
const viewState = (v: ClusterReader) => Object.fromEntries(KINDS.map((k) => [k, v.list(k as Kind).map((o) => `${keyOf(o)}@${o.metadata.resourceVersion}`).sort()]));

const watchRequests = (s: FakeApiServer, path: string) => s.requests.filter((r) => r.watch && r.path === path);
const listRequests = (s: FakeApiServer, path: string) => s.requests.filter((r) => !r.watch && r.method === 'GET' && r.path === path);

t.test('initial lists: every kind, paged, completed with kind/apiVersion, then synced', async (t) => {
  const { server, source, view, changes } = await setup(t, { pageSize: 2 }, (s) => {
    s.apply({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'default' } });
    s.apply({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'node-1' }, spec: { podCIDR: '10.244.1.0/24' } });
    for (let i = 0; i < 5; i++) s.apply(pod(`web-${i}`, `10.244.1.${10 + i}`));
    s.apply({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'default' }, spec: { clusterIP: '10.96.0.10', ports: [{ port: 80 }] } });
    s.apply({ apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', metadata: { name: 'web-x', namespace: 'default' }, addressType: 'IPv4', endpoints: null });
    s.apply({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'np', namespace: 'default' }, spec: { podSelector: {} } });
  });
  t.ok(source.hasSynced());
  t.ok(view.hasSynced());
  t.same(viewState(view), serverState(server), 'the view equals the server');
  t.equal(listRequests(server, '/api/v1/pods').length, 3, '5 pods in pages of 2');
  t.equal(view.list('Pod').length, 5);
  const p = view.get('Pod', 'default/web-3')!;
  t.equal(p.kind, 'Pod', 'list items get their kind back');
  t.equal(p.apiVersion, 'v1');
  t.equal(view.get('EndpointSlice', 'default/web-x')?.apiVersion, 'discovery.k8s.io/v1');
  t.same((view.get('EndpointSlice', 'default/web-x') as EndpointSlice).endpoints, [], 'endpoints: null normalised');
  t.equal(changes.length, 10);
  const w = watchRequests(server, '/api/v1/pods')[0]!;
  t.equal(w.query.allowWatchBookmarks, 'true', 'bookmarks requested');
  t.equal(w.query.resourceVersion, server.resourceVersion, 'watch starts at the list resourceVersion');
  t.ok(Number(w.query.timeoutSeconds) >= 300 && Number(w.query.timeoutSeconds) <= 600, 'server-side watch timeout set');
});

t.test('watch events: add, modify, delete; a resourceVersion-only bump is dropped', async (t) => {
  const { server, view, changes } = await setup(t, {}, (s) => s.apply(pod('a', '10.0.0.1')));
  changes.length = 0;
  server.apply(pod('b', '10.0.0.2'));
  await until(view, () => view.get('Pod', 'default/b') !== undefined, 'ADDED b');
  server.apply(pod('a', '10.0.0.9'));
  await until(view, () => view.get('Pod', 'default/a')?.status?.podIP === '10.0.0.9', 'MODIFIED a');
  server.apply(pod('b', '10.0.0.2')); // same content, new resourceVersion
  server.remove('Pod', 'default/b');
  await until(view, () => view.get('Pod', 'default/b') === undefined, 'DELETED b');
  t.same(
    changes.map((c) => [c.type, c.key]),
    [
      ['add', 'default/b'],
      ['update', 'default/a'],
      ['delete', 'default/b'],
    ],
    'the no-op MODIFIED of b produced no change',
  );
  t.equal(changes[1]!.old?.kind === 'Pod' && changes[1]!.old.status?.podIP, '10.0.0.1');
  t.same(viewState(view), serverState(server), 'the view equals the server');
});

t.test('bookmarks move the resourceVersion a reconnect resumes from', async (t) => {
  const { server, view } = await setup(t, {}, (s) => s.apply(pod('a', '10.0.0.1')));
  // Other kinds move the server's resourceVersion; the Pod watch sees none of it...
  server.apply({ apiVersion: 'v1', kind: 'Service', metadata: { name: 's', namespace: 'default' }, spec: {} });
  await until(view, () => view.get('Service', 'default/s') !== undefined, 'the Service');
  const rv = server.resourceVersion;
  // ...until a bookmark tells it where the stream is.
  t.equal(server.bookmark('Pod'), 1);
  const before = watchRequests(server, '/api/v1/pods').length;
  // The stream ends after the bookmark (a server-side timeout); the reconnect shows the RV the client holds.
  server.endWatches('Pod');
  await server.waitFor(() => watchRequests(server, '/api/v1/pods').length > before && server.watcherCount('Pod') === 1, 'the Pod watch to reconnect');
  const again = watchRequests(server, '/api/v1/pods').at(-1)!;
  t.equal(again.query.resourceVersion, rv, 'resumed from the bookmark');
  t.equal(listRequests(server, '/api/v1/pods').length, 1, 'no relist for a dropped connection');
});

t.test('a dropped watch reconnects and loses nothing', async (t) => {
  const { server, view, changes } = await setup(t, {}, (s) => s.apply(pod('a', '10.0.0.1')));
  changes.length = 0;
  // The connection dies and changes happen before the client is back: the resumed watch replays them.
  server.failNext('watch', 503, { kind: 'Pod', count: 2 });
  server.dropWatches();
  server.apply(pod('b', '10.0.0.2'));
  server.remove('Pod', 'default/a');
  await until(view, () => view.get('Pod', 'default/b') !== undefined && view.get('Pod', 'default/a') === undefined, 'the replayed events');
  await server.waitFor(() => server.watcherCount() === KINDS.length, 'every watch back');
  t.same(changes.map((c) => [c.type, c.key]).sort(), [
    ['add', 'default/b'],
    ['delete', 'default/a'],
  ]);
  t.equal(listRequests(server, '/api/v1/pods').length, 1, 'resumed from the resourceVersion, no relist');
  t.ok(logs.some((l) => l.msg === 'watch failed' && String(l.error).includes('Service Unavailable')), 'the failed reconnect is logged');
  server.apply(pod('c', '10.0.0.3'));
  await until(view, () => view.get('Pod', 'default/c') !== undefined, 'events after the reconnect');
  t.same(viewState(view), serverState(server), 'the view equals the server');
});

for (const mode of ['event', 'http'] as const) {
  t.test(`410 Gone (${mode === 'event' ? 'ERROR event' : 'HTTP status'}): relist, and deletes for what vanished in the gap`, async (t) => {
    const { server, view, changes } = await setup(t, {}, (s) => {
      s.apply(pod('a', '10.0.0.1'));
      s.apply(pod('b', '10.0.0.2'));
      s.apply(pod('c', '10.0.0.3'));
    });
    server.expireMode = mode;
    changes.length = 0;
    const lists = listRequests(server, '/api/v1/pods').length;
    // The client is cut off while the cluster changes and etcd compacts the history
    // (all in one tick: the client cannot reconnect in between).
    server.dropWatches('Pod');
    server.remove('Pod', 'default/a');
    server.apply(pod('b', '10.0.0.22'));
    server.apply(pod('d', '10.0.0.4'));
    server.compact();
    await until(view, () => view.get('Pod', 'default/d') !== undefined && view.get('Pod', 'default/a') === undefined, 'the relist');
    t.equal(listRequests(server, '/api/v1/pods').length, lists + 1, 'exactly one relist');
    t.same(
      changes.map((c) => [c.type, c.key]),
      [
        ['delete', 'default/a'],
        ['update', 'default/b'],
        ['add', 'default/d'],
      ],
      'the relist diff: a gone, b changed, c untouched, d new',
    );
    t.same(viewState(view), serverState(server), 'the view equals the server');
    await server.waitFor(() => server.watcherCount('Pod') === 1, 'the Pod watch back');
    server.apply(pod('e', '10.0.0.5'));
    await until(view, () => view.get('Pod', 'default/e') !== undefined, 'events after the relist');
  });
}

t.test('a live watch expired by the server relists without spurious changes', async (t) => {
  const { server, view, changes } = await setup(t, {}, (s) => s.apply(pod('a', '10.0.0.1')));
  changes.length = 0;
  const lists = listRequests(server, '/api/v1/pods').length;
  server.compact();
  t.equal(server.expireWatches('Pod'), 1);
  await server.waitFor(() => listRequests(server, '/api/v1/pods').length === lists + 1 && server.watcherCount('Pod') === 1, 'relist and rewatch');
  server.apply(pod('z', '10.0.0.26'));
  await until(view, () => view.get('Pod', 'default/z') !== undefined, 'a later event');
  t.same(changes.map((c) => [c.type, c.key]), [['add', 'default/z']], 'the relist of unchanged state emitted nothing');
  t.ok(logs.some((l) => l.msg === 'watch expired (410 Gone); relisting'));
});

t.test('failures back off exponentially, capped; sync waits for every kind', async (t) => {
  const server = await FakeApiServer.start();
  t.teardown(() => server.close());
  server.apply(pod('a', '10.0.0.1'));
  server.failNext('list', 500, { kind: 'Pod', count: 5 });
  const kubeconfig = server.writeKubeconfig(mkdtempSync(join(dir, 'kc-')));
  const sleeps: number[] = [];
  const source = new KubeSource({
    kubeconfig,
    backoff: { initialMs: 100, maxMs: 1000, jitter: 0 },
    // Record the delays, but do not actually wait them out.
    sleep: async (ms) => {
      sleeps.push(ms);
      await new Promise((r) => setImmediate(r));
    },
  });
  t.teardown(() => source.stop());
  const view = new ClusterView(source);
  await source.start();
  await server.waitFor(() => listRequests(server, '/api/v1/nodes').length === 1 && listRequests(server, '/api/v1/pods').length >= 2, 'lists');
  t.notOk(source.hasSynced(), 'not synced while Pods cannot be listed');
  await source.whenSynced();
  t.same(sleeps, [100, 200, 400, 800, 1000], 'doubling from 100 ms, capped at 1 s');
  t.ok(view.get('Pod', 'default/a'));
  t.equal(logs.filter((l) => l.msg === 'list failed' && String(l.error).includes('injected list failure')).length >= 5, true);
});

t.test('annotateNode sends a merge patch of the annotations', async (t) => {
  const { server, source, view } = await setup(t, {}, (s) =>
    s.apply({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'node-1', annotations: { keep: 'me' } }, spec: {} }),
  );
  await source.annotateNode('node-1', { 'skiff.dev/vtep-mac': '02:00:00:00:00:01' });
  t.equal(server.patches.length, 1);
  t.match(server.patches[0], {
    name: 'node-1',
    contentType: /^application\/merge-patch\+json/,
    body: { metadata: { annotations: { 'skiff.dev/vtep-mac': '02:00:00:00:00:01' } } },
  });
  await until(view, () => view.get('Node', 'node-1')?.metadata.annotations?.['skiff.dev/vtep-mac'] !== undefined, 'the patched node');
  t.same(view.get('Node', 'node-1')?.metadata.annotations, { keep: 'me', 'skiff.dev/vtep-mac': '02:00:00:00:00:01' });
  const err = await source.annotateNode('nope', { a: 'b' }).catch((e: unknown) => e);
  t.type(err, KubeApiError);
  t.equal((err as KubeApiError).statusCode, 404);
  t.match((err as Error).message, /annotateNode nope: nodes "nope" not found/);
});

t.test('stop closes every watch', async (t) => {
  const { server, source } = await setup(t);
  await source.stop();
  await server.waitFor(() => server.watcherCount() === 0, 'no watchers');
  t.equal(server.watcherCount(), 0);
});

t.test('createSource: exactly one source, errors name the flags', async (t) => {
  t.throws(() => createSource({}), /give exactly one of --manifests DIR, --kubeconfig FILE or in-cluster config; none was given/);
  t.throws(() => createSource({ manifests: '/x', kubeconfig: '/y' }), /got --manifests and --kubeconfig/);
  // The Kubernetes client loads on start() (it is slow to load), so that is where a bad config surfaces.
  await t.rejects(createSource({ kubeconfig: '/nonexistent/kubeconfig' }).start(), /--kubeconfig \/nonexistent\/kubeconfig: /);
  const saved = process.env.KUBERNETES_SERVICE_HOST;
  delete process.env.KUBERNETES_SERVICE_HOST;
  await t.rejects(createSource({ inCluster: true }).start(), /KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set/);
  if (saved !== undefined) process.env.KUBERNETES_SERVICE_HOST = saved;
  t.equal(createSource({ manifests: dir }).name, 'manifests');
  const server = await FakeApiServer.start();
  t.teardown(() => server.close());
  t.equal(createSource({ kubeconfig: server.writeKubeconfig(mkdtempSync(join(dir, 'kc-'))) }).name, 'kubernetes');
});
