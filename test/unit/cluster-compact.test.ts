// What keeps the cluster state small (docs/dns.md "Memory"): content comparison without a
// serialized copy, trimming to the fields skiff reads, shared equal sub-objects.
import t from 'tap';
import { contentOf, sameContent } from '../../src/cluster/tracker.js';
import type { ClusterObject, Pod, Service } from '../../src/cluster/types.js';
import { checkObject, shareStrings, trim } from '../../src/cluster/validate.js';

const apiPod = (name: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  apiVersion: 'v1', kind: 'Pod',
  metadata: {
    name, namespace: 'prod', uid: `u-${name}`, resourceVersion: '7', labels: { app: 'web', 'pod-template-hash': 'abc' },
    annotations: { 'kubectl.kubernetes.io/last-applied-configuration': '{"huge":true}', note: 'kept' },
    ownerReferences: [{ kind: 'ReplicaSet', name: 'web-abc' }], managedFields: [{ manager: 'kube-controller-manager' }],
  },
  spec: {
    nodeName: 'n1', restartPolicy: 'Always', volumes: [{ name: 'v' }],
    containers: [{ name: 'c', image: 'nginx', env: [{ name: 'A', value: 'x'.repeat(1000) }], ports: [{ name: 'http', containerPort: 80, protocol: 'TCP' }], resources: {} }],
  },
  status: {
    phase: 'Running', podIP: '10.244.1.5', podIPs: [{ ip: '10.244.1.5' }], hostIP: '192.168.0.1',
    conditions: [{ type: 'Ready', status: 'True', lastTransitionTime: 'now' }], containerStatuses: [{ name: 'c' }],
  },
  ...extra,
});

t.test('sameContent decides exactly as comparing contentOf', async (t) => {
  const a = checkObject(apiPod('a')) as Pod;
  const cases: [string, unknown, boolean][] = [
    ['a copy', structuredClone(a), true],
    ['keys in another order', { ...a, status: a.status, spec: a.spec, metadata: { namespace: 'prod', ...a.metadata } }, true],
    ['an undefined member', { ...a, metadata: { ...a.metadata, generation: undefined, deletionTimestamp: undefined } }, true],
    ['a new resourceVersion and generation', { ...a, metadata: { ...a.metadata, resourceVersion: '8', generation: 3 } }, true],
    ['a label changed', { ...a, metadata: { ...a.metadata, labels: { app: 'db' } } }, false],
    ['a label added', { ...a, metadata: { ...a.metadata, labels: { ...a.metadata.labels, x: '1' } } }, false],
    ['a null instead of a missing field', { ...a, status: { ...a.status, hostIP: null } }, false],
    ['an element more', { ...a, status: { ...a.status, podIPs: [...a.status!.podIPs!, { ip: 'fd00::5' }] } }, false],
    ['an array instead of an object', { ...a, spec: [] }, false],
    ['a number instead of a string', { ...a, metadata: { ...a.metadata, name: 5 } }, false],
  ];
  for (const [what, b, same] of cases) {
    t.equal(sameContent(a, b as ClusterObject), same, what);
    t.equal(contentOf(a) === contentOf(b as ClusterObject), same, `${what} (contentOf agrees)`);
  }
});

t.test('trim keeps the fields of types.ts and nothing else', async (t) => {
  const raw = apiPod('a');
  const before = JSON.stringify(raw);
  const p = trim(raw as unknown as Pod);
  t.equal(JSON.stringify(raw), before, 'the input is unchanged');
  t.same(JSON.parse(JSON.stringify(p)), {
    apiVersion: 'v1', kind: 'Pod',
    metadata: { name: 'a', namespace: 'prod', uid: 'u-a', resourceVersion: '7', labels: { app: 'web', 'pod-template-hash': 'abc' }, annotations: { note: 'kept' } },
    spec: { nodeName: 'n1', containers: [{ name: 'c', image: 'nginx', ports: [{ name: 'http', containerPort: 80, protocol: 'TCP' }] }] },
    status: { phase: 'Running', podIP: '10.244.1.5', podIPs: [{ ip: '10.244.1.5' }], hostIP: '192.168.0.1', conditions: [{ type: 'Ready', status: 'True' }] },
  });
  const s = trim({
    apiVersion: 'v1', kind: 'Service', metadata: { name: 's', namespace: 'prod' },
    spec: { clusterIP: '10.96.0.1', clusterIPs: ['10.96.0.1'], ports: [{ name: 'http', port: 80, targetPort: 'http', extra: 1 }], selector: { app: 'web' }, ipFamilyPolicy: 'SingleStack' },
    status: { loadBalancer: {} },
  } as unknown as Service);
  t.same(JSON.parse(JSON.stringify(s)), {
    apiVersion: 'v1', kind: 'Service', metadata: { name: 's', namespace: 'prod' },
    spec: { clusterIP: '10.96.0.1', clusterIPs: ['10.96.0.1'], ports: [{ name: 'http', port: 80, targetPort: 'http' }], selector: { app: 'web' } },
  }, 'a Service without load-balancer ingress has no status');
});

t.test('equal sub-objects are shared, frozen, and never the input', async (t) => {
  const r1 = apiPod('a'), r2 = apiPod('b');
  ((r2.status as { conditions: { lastTransitionTime: string }[] }).conditions[0]!).lastTransitionTime = 'later';
  const a = checkObject(r1) as Pod, b = checkObject(r2) as Pod;
  t.equal(a.metadata.labels, b.metadata.labels, 'equal labels: one object');
  t.equal(a.spec.containers, b.spec.containers, 'equal containers: one array');
  t.equal(a.status!.conditions, b.status!.conditions, 'equal conditions: one array');
  t.ok(Object.isFrozen(a.metadata.labels) && Object.isFrozen(a.spec.containers[0]!.ports![0]), 'shared values are frozen, deeply');
  t.not(a.metadata.labels, (r1.metadata as { labels: unknown }).labels, 'not the input object');
  t.notOk(Object.isFrozen((r1.metadata as { labels: object }).labels), 'the input is not frozen');
  t.throws(() => {
    (a.metadata.labels as Record<string, string>).app = 'x';
  }, TypeError, 'writing to a shared value fails instead of changing every object');
  const c = checkObject(apiPod('c', { metadata: { name: 'c', namespace: 'prod', labels: { app: 'db' } } })) as Pod;
  t.not(c.metadata.labels, a.metadata.labels, 'different labels: different objects');
  t.same(c.metadata.labels, { app: 'db' });
});

t.test('shareStrings makes a repeated address one string, changing no value', async (t) => {
  const p = checkObject(apiPod('a')) as Pod;
  t.equal(p.status!.podIPs![0]!.ip, p.status!.podIP);
  const frozen = Object.freeze({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'f' }, spec: { containers: [] }, status: { podIP: '10.0.0.1', podIPs: [Object.freeze({ ip: '10.0.0.1' })] } }) as unknown as Pod;
  t.equal(shareStrings(frozen), frozen, 'frozen input: left alone');
});
