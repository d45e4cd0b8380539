import t from 'tap';
import { ChangeTracker, contentOf } from '../../src/cluster/tracker.js';
import type { Node, Pod, Service } from '../../src/cluster/types.js';

const svc = (name: string, port = 80, extra: Partial<Service['metadata']> = {}): Service => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace: 'default', ...extra },
  spec: { clusterIP: '10.96.0.10', ports: [{ port, protocol: 'TCP' }] },
});
const pod = (name: string, ip: string): Pod => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name, namespace: 'ns1' },
  spec: { containers: [] },
  status: { podIP: ip },
});

t.test('add, no-op, update, delete', async (t) => {
  const tr = new ChangeTracker();
  const a = svc('web');
  t.same(tr.upsert(a), { type: 'add', kind: 'Service', key: 'default/web', obj: a });
  t.equal(tr.upsert(structuredClone(a)), undefined, 'the same content again is a no-op');

  const b = svc('web', 8080);
  const c = tr.upsert(b);
  t.same(c, { type: 'update', kind: 'Service', key: 'default/web', old: a, obj: b }, 'update carries old and new');
  t.equal(tr.get('Service', 'default/web'), b);

  t.same(tr.remove('Service', 'default/web'), { type: 'delete', kind: 'Service', key: 'default/web', old: b });
  t.equal(tr.remove('Service', 'default/web'), undefined, 'deleting what is gone is a no-op');
  t.same(tr.list('Service'), []);
});

t.test('bookkeeping fields do not make a change; content does', async (t) => {
  const tr = new ChangeTracker();
  tr.upsert(svc('web', 80, { resourceVersion: '1', generation: 1 }));
  const bumped = { ...svc('web', 80, { resourceVersion: '2', generation: 2 }) };
  (bumped.metadata as unknown as Record<string, unknown>).managedFields = [{ manager: 'kubectl' }];
  t.equal(tr.upsert(bumped), undefined, 'resourceVersion/generation/managedFields only: no-op');
  t.equal(tr.get('Service', 'default/web')?.metadata.resourceVersion, '2', 'but the stored object is the newest');

  const labelled = svc('web', 80, { resourceVersion: '3', labels: { app: 'web' } });
  const c = tr.upsert(labelled);
  t.equal(c?.type, 'update', 'a label change is a change');
  t.equal(c?.old?.metadata.resourceVersion, '2');
});

t.test('content is canonical: key order does not matter', async (t) => {
  const x: Node = { apiVersion: 'v1', kind: 'Node', metadata: { name: 'n1' }, spec: { podCIDR: '10.0.0.0/24', podCIDRs: ['10.0.0.0/24'] } };
  const y = { spec: { podCIDRs: ['10.0.0.0/24'], podCIDR: '10.0.0.0/24' }, metadata: { name: 'n1' }, kind: 'Node', apiVersion: 'v1' } as Node;
  t.equal(contentOf(x), contentOf(y));
  const tr = new ChangeTracker();
  tr.upsert(x);
  t.equal(tr.upsert(y), undefined);
});

t.test('replaceAll: a relist yields exactly the difference', async (t) => {
  const tr = new ChangeTracker();
  const first = tr.replaceAll('Pod', [pod('a', '10.0.0.1'), pod('b', '10.0.0.2'), pod('c', '10.0.0.3')]);
  t.same(
    first.map((c) => [c.type, c.key]),
    [
      ['add', 'ns1/a'],
      ['add', 'ns1/b'],
      ['add', 'ns1/c'],
    ],
  );
  tr.upsert(svc('web')); // another kind is untouched by a Pod relist

  const second = tr.replaceAll('Pod', [pod('b', '10.0.0.2'), pod('c', '10.0.0.9'), pod('d', '10.0.0.4')]);
  t.same(
    second.map((c) => [c.type, c.key]),
    [
      ['delete', 'ns1/a'],
      ['update', 'ns1/c'],
      ['add', 'ns1/d'],
    ],
    'deletes first, then updates/adds; unchanged b is dropped',
  );
  t.equal((second[0]!.old as Pod).status?.podIP, '10.0.0.1', 'the delete carries the last state');
  t.equal((second[1]!.old as Pod).status?.podIP, '10.0.0.3');
  t.equal((second[1]!.obj as Pod).status?.podIP, '10.0.0.9');
  t.same(tr.keys('Pod').sort(), ['ns1/b', 'ns1/c', 'ns1/d']);
  t.equal(tr.size('Service'), 1);
  t.same(tr.replaceAll('Pod', tr.list('Pod')), [], 'relisting the same state changes nothing');
});

t.test('replaceAll: duplicate keys, the last wins; wrong kinds are refused', async (t) => {
  const tr = new ChangeTracker();
  const ch = tr.replaceAll('Pod', [pod('a', '10.0.0.1'), pod('a', '10.0.0.2')]);
  t.equal(ch.length, 1);
  t.equal(tr.get('Pod', 'ns1/a')?.status?.podIP, '10.0.0.2');
  t.throws(() => tr.replaceAll('Pod', [svc('x') as never]), /replaceAll\(Pod\): got an object of kind "Service"/);
  t.throws(() => tr.upsert({ ...svc('x'), kind: 'Deployment' } as never), /unknown kind "Deployment"/);
});

t.test('cluster-scoped objects are keyed by name', async (t) => {
  const tr = new ChangeTracker();
  const c = tr.upsert({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'kube-system' } });
  t.equal(c?.key, 'kube-system');
});
