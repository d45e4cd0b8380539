// The manifest-directory source on a real temporary directory: initial read, edits,
// deletes, malformed documents, atomic rename writes and the node annotation overlay.
import t from 'tap';
import { mkdtempSync, readFileSync, renameSync, rmSync, unlinkSync, writeFileSync, existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ManifestSource, parseManifest } from '../../src/cluster/manifests.js';
import { ClusterView } from '../../src/cluster/view.js';
import type { Change, ClusterReader, Node, Pod, Service } from '../../src/cluster/types.js';
import { setLogSink } from '../../src/util/log.js';

// Capture logs (and keep the test output clean).
const logs: Record<string, unknown>[] = [];
const prevSink = setLogSink((line) => logs.push(JSON.parse(line) as Record<string, unknown>));
t.teardown(() => void setLogSink(prevSink));

function tmpDir(t: Tap): string {
  const d = mkdtempSync(join(tmpdir(), 'skiff-manifests-'));
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  return d;
}
type Tap = { teardown(fn: () => unknown): void };

/** Resolves when pred() holds, re-checked after every change the view applies. */
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

async function open(t: Tap, dir: string, opts: Partial<ConstructorParameters<typeof ManifestSource>[0]> = {}) {
  // A long rescan period: changes must arrive through the directory watch.
  const source = new ManifestSource({ dir, rescanIntervalMs: 60_000, ...opts });
  const view = new ClusterView(source);
  const changes: Change[] = [];
  view.onChange((c) => changes.push(...c));
  t.teardown(() => source.stop());
  await source.start();
  await source.whenSynced();
  return { source, view, changes };
}

const SERVICE = (port: number, name = 'web') => `apiVersion: v1
kind: Service
metadata:
  name: ${name}
spec:
  clusterIP: 10.96.0.20
  selector: {app: ${name}}
  ports:
  - {name: http, port: ${port}, targetPort: http, protocol: TCP}
`;

const BASE = `apiVersion: v1
kind: Namespace
metadata: {name: team-a}
---
apiVersion: v1
kind: Node
metadata: {name: node-1, annotations: {from: manifest}}
spec: {podCIDR: 10.244.1.0/24}
status:
  addresses: [{type: InternalIP, address: 192.168.50.11}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ignored}
---
apiVersion: skiff.dev/v1
kind: Lab
metadata: {name: lab}
---
apiVersion: v1
kind: Pod
metadata:
  name: web-0
  labels: {app: web}
spec:
  nodeName: node-1
  containers:
  - name: web
    ports: [{name: http, containerPort: 8080}]
status:
  podIP: 10.244.1.5
  conditions: [{type: Ready, status: "True"}]
---
`;

const SLICE = JSON.stringify({
  apiVersion: 'discovery.k8s.io/v1',
  kind: 'EndpointSlice',
  metadata: { name: 'web-abc', namespace: 'team-a', labels: { 'kubernetes.io/service-name': 'web' } },
  addressType: 'IPv4',
  endpoints: [{ addresses: ['10.244.1.5'], conditions: { ready: true } }],
  ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
});

const POLICY_LIST = `apiVersion: v1
kind: List
items:
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: deny-all, namespace: team-a}
  spec: {podSelector: {}, policyTypes: [Ingress]}
`;

t.test('initial read: every kind, defaults, ignored kinds and files', async (t) => {
  const dir = tmpDir(t);
  writeFileSync(join(dir, '10-base.yaml'), BASE);
  writeFileSync(join(dir, '20-svc.yml'), SERVICE(80));
  writeFileSync(join(dir, '30-slice.json'), SLICE);
  writeFileSync(join(dir, '40-policies.yaml'), POLICY_LIST);
  writeFileSync(join(dir, 'README.md'), 'not a manifest: kind: Pod');
  writeFileSync(join(dir, '.hidden.yaml'), SERVICE(1, 'hidden'));
  logs.length = 0;
  const { source, view, changes } = await open(t, dir);

  t.ok(source.hasSynced());
  t.ok(view.hasSynced());
  t.same(view.list('Namespace').map((n) => n.metadata.name), ['team-a']);
  t.equal(view.get('Node', 'node-1')?.spec.podCIDR, '10.244.1.0/24');
  const p = view.get('Pod', 'default/web-0');
  t.ok(p, 'a namespaced object without a namespace lands in "default"');
  t.equal(p?.status?.podIP, '10.244.1.5');
  t.equal(view.get('Service', 'default/web')?.spec.ports?.[0]?.targetPort, 'http');
  t.same(view.get('EndpointSlice', 'team-a/web-abc')?.endpoints[0]?.addresses, ['10.244.1.5']);
  t.ok(view.get('NetworkPolicy', 'team-a/deny-all'), 'items of a List are read');
  t.equal(view.list('Service').length, 1, 'hidden files are not manifests');
  t.equal(changes.length, 6);
  t.ok(changes.every((c) => c.type === 'add'));
  t.same(source.problems(), []);
  t.notOk(logs.some((l) => l.level === 'error' || l.level === 'warn'), 'Deployment and Lab are ignored silently');
});

t.test('editing a file is an update; deleting it deletes its objects', async (t) => {
  const dir = tmpDir(t);
  writeFileSync(join(dir, 'svc.yaml'), SERVICE(80) + '---\n' + SERVICE(53, 'dns'));
  const { view, changes } = await open(t, dir);
  t.equal(view.list('Service').length, 2);
  changes.length = 0;

  writeFileSync(join(dir, 'svc.yaml'), SERVICE(8080) + '---\n' + SERVICE(53, 'dns'));
  await until(view, () => view.get('Service', 'default/web')?.spec.ports?.[0]?.port === 8080, 'the edited port');
  t.same(
    changes.map((c) => [c.type, c.key]),
    [['update', 'default/web']],
    'one update, the unchanged Service in the same file is not touched',
  );
  t.equal((changes[0]!.old as Service).spec.ports?.[0]?.port, 80);

  changes.length = 0;
  unlinkSync(join(dir, 'svc.yaml'));
  await until(view, () => view.list('Service').length === 0, 'the deletes');
  t.same(changes.map((c) => [c.type, c.key]).sort(), [
    ['delete', 'default/dns'],
    ['delete', 'default/web'],
  ]);
});

t.test('rewriting a file with the same content changes nothing', async (t) => {
  const dir = tmpDir(t);
  writeFileSync(join(dir, 'svc.yaml'), SERVICE(80));
  const { source, changes } = await open(t, dir);
  changes.length = 0;
  writeFileSync(join(dir, 'svc.yaml'), SERVICE(80));
  writeFileSync(join(dir, 'svc.yaml'), '# a comment\n' + SERVICE(80));
  await source.rescan();
  t.same(changes, []);
});

t.test('a malformed document is reported with file, index and reason, and skipped', async (t) => {
  const dir = tmpDir(t);
  const file = join(dir, 'mixed.yaml');
  const docs = [
    SERVICE(80, 'good'),
    'apiVersion: v1\nkind: Service\nmetadata: {name: broken\nspec: {}\n', // 1: YAML syntax error
    'apiVersion: v1\nkind: Service\nmetadata: {namespace: x}\nspec: {}\n', // 2: no name
    'apiVersion: v1beta1\nkind: NetworkPolicy\nmetadata: {name: np}\nspec: {podSelector: {}}\n', // 3: wrong apiVersion
    SERVICE(80, 'badport').replace('port: 80', 'port: "eighty"'), // 4: wrong type
    'metadata: {name: nokind}\n', // 5: no kind
    SERVICE(53, 'also-good'),
  ];
  writeFileSync(file, docs.join('---\n'));
  logs.length = 0;
  const { source, view } = await open(t, dir);

  t.same(view.list('Service').map((s) => s.metadata.name).sort(), ['also-good', 'good'], 'the valid documents are read');
  const problems = source.problems();
  t.same(
    problems.map((p) => [p.file, p.document]),
    [
      [file, 1],
      [file, 2],
      [file, 3],
      [file, 4],
      [file, 5],
    ],
  );
  t.match(problems[0]!.reason, /invalid YAML/);
  t.match(problems[1]!.reason, /metadata\.name: required field is missing/);
  t.match(problems[2]!.reason, /apiVersion: NetworkPolicy must have apiVersion networking\.k8s\.io\/v1, got "v1beta1"/);
  t.match(problems[3]!.reason, /Service badport: spec\.ports\[0\]\.port: expected an integer 1-65535, got "eighty"/);
  t.match(problems[4]!.reason, /kind: required field is missing/);
  const logged = logs.filter((l) => l.level === 'error' && l.msg === 'skipped a malformed manifest document');
  t.equal(logged.length, 5, 'each problem is logged');
  t.match(logged[3], { file, document: 4, reason: /eighty/ });

  // Fixing the file brings the object in; the watch keeps working after errors.
  writeFileSync(file, docs.map((d) => d.replace('"eighty"', '8080')).join('---\n'));
  await until(view, () => view.get('Service', 'default/badport') !== undefined, 'the fixed document');
  t.equal(source.problems().length, 4);
});

t.test('atomic writers: temporary file + rename', async (t) => {
  const dir = tmpDir(t);
  writeFileSync(join(dir, 'svc.yaml'), SERVICE(80));
  const { view, changes } = await open(t, dir);
  changes.length = 0;
  for (const port of [81, 82, 83]) {
    const tmp = join(dir, `.svc.yaml.tmp-${port}`);
    writeFileSync(tmp, SERVICE(port));
    renameSync(tmp, join(dir, 'svc.yaml'));
    await until(view, () => view.get('Service', 'default/web')?.spec.ports?.[0]?.port === port, `port ${port}`);
  }
  t.ok(changes.every((c) => c.type === 'update'), 'never a delete in between');
  // An editor-style "write new name, rename over" with a visible temporary name.
  writeFileSync(join(dir, 'svc.yaml.new'), SERVICE(90));
  renameSync(join(dir, 'svc.yaml.new'), join(dir, 'svc.yaml'));
  await until(view, () => view.get('Service', 'default/web')?.spec.ports?.[0]?.port === 90, 'port 90');
  t.notOk(changes.some((c) => c.type === 'delete'));
});

t.test('an object moving between files is not deleted; the later file wins', async (t) => {
  const dir = tmpDir(t);
  writeFileSync(join(dir, 'a.yaml'), SERVICE(80));
  const { source, view, changes } = await open(t, dir);
  changes.length = 0;

  // Same object, now in b.yaml: no change at all.
  writeFileSync(join(dir, 'b.yaml'), SERVICE(80));
  unlinkSync(join(dir, 'a.yaml'));
  await source.rescan();
  t.same(changes, [], 'moved unchanged: nothing to do');

  // Defined twice with different content: the later file (by name) wins, with a warning.
  logs.length = 0;
  writeFileSync(join(dir, 'c.yaml'), SERVICE(9090));
  await until(view, () => view.get('Service', 'default/web')?.spec.ports?.[0]?.port === 9090, 'c.yaml to win');
  t.same(changes.map((c) => c.type), ['update']);
  t.ok(logs.some((l) => l.level === 'warn' && l.msg === 'object defined twice; the later file wins' && String(l.used).startsWith('c.yaml')));

  // The winner goes away: the earlier definition is back, as an update.
  changes.length = 0;
  unlinkSync(join(dir, 'c.yaml'));
  await until(view, () => view.get('Service', 'default/web')?.spec.ports?.[0]?.port === 80, 'b.yaml again');
  t.same(changes.map((c) => c.type), ['update']);
});

t.test('node annotations overlay: one file per node, merged, seen by every reader', async (t) => {
  const dir = tmpDir(t);
  writeFileSync(join(dir, 'nodes.yaml'), BASE);
  writeFileSync(join(dir, 'node2.yaml'), 'apiVersion: v1\nkind: Node\nmetadata: {name: node-2}\nspec: {podCIDR: 10.244.2.0/24}\n');
  const a = await open(t, dir); // the agent of node-1
  const b = await open(t, dir); // the agent of node-2, another reader of the same directory

  await a.source.annotateNode('node-1', { 'skiff.dev/vtep-mac': '02:00:00:00:00:01' });
  t.same(
    a.view.get('Node', 'node-1')?.metadata.annotations,
    { from: 'manifest', 'skiff.dev/vtep-mac': '02:00:00:00:00:01' },
    'visible in the writer once annotateNode resolves, merged with the manifest annotations',
  );
  await until(b.view, () => b.view.get('Node', 'node-1')?.metadata.annotations?.['skiff.dev/vtep-mac'] !== undefined, 'the other reader');

  await b.source.annotateNode('node-2', { 'skiff.dev/vtep-mac': '02:00:00:00:00:02' });
  await a.source.annotateNode('node-1', { 'skiff.dev/underlay-ip': '192.168.50.11' });
  t.same(a.view.get('Node', 'node-1')?.metadata.annotations, {
    from: 'manifest',
    'skiff.dev/vtep-mac': '02:00:00:00:00:01',
    'skiff.dev/underlay-ip': '192.168.50.11',
  });
  await until(a.view, () => a.view.get('Node', 'node-2')?.metadata.annotations?.['skiff.dev/vtep-mac'] === '02:00:00:00:00:02', 'node-2 in a');
  const onDisk = JSON.parse(readFileSync(join(dir, '.annotations', 'node-1.json'), 'utf8')) as unknown;
  t.same(onDisk, { node: 'node-1', annotations: { 'skiff.dev/underlay-ip': '192.168.50.11', 'skiff.dev/vtep-mac': '02:00:00:00:00:01' } });
  t.ok(existsSync(join(dir, '.annotations', 'node-2.json')), 'each node has its own file');

  // Editing the Node manifest keeps the overlay.
  writeFileSync(join(dir, 'nodes.yaml'), BASE.replace('10.244.1.0/24', '10.244.9.0/24'));
  await until(a.view, () => a.view.get('Node', 'node-1')?.spec.podCIDR === '10.244.9.0/24', 'the edited node');
  t.equal((a.view.get('Node', 'node-1') as Node).metadata.annotations?.['skiff.dev/vtep-mac'], '02:00:00:00:00:01');

  // Annotating with the same values writes nothing new and changes nothing.
  a.changes.length = 0;
  await a.source.annotateNode('node-1', { 'skiff.dev/vtep-mac': '02:00:00:00:00:01' });
  t.same(a.changes, []);

  await t.rejects(a.source.annotateNode('../etc', { x: 'y' }), /node name "\.\.\/etc" is not a valid DNS subdomain/);
  await t.rejects(a.source.annotateNode('node-1', { x: 1 as unknown as string }), /annotation "x" must be a string/);
});

t.test('without fs.watch, the periodic rescan picks changes up', async (t) => {
  const dir = tmpDir(t);
  writeFileSync(join(dir, 'svc.yaml'), SERVICE(80));
  const { view } = await open(t, dir, { watch: false, rescanIntervalMs: 40 });
  writeFileSync(join(dir, 'svc.yaml'), SERVICE(81));
  await until(view, () => view.get('Service', 'default/web')?.spec.ports?.[0]?.port === 81, 'the rescan');
  mkdirSync(join(dir, 'sub.yaml')); // a directory with a manifest-like name is not a file
  writeFileSync(join(dir, 'pod.yaml'), BASE);
  await until(view, () => view.get('Pod', 'default/web-0') !== undefined, 'the new file');
});

t.test('start fails clearly on a missing directory', async (t) => {
  const s = new ManifestSource({ dir: '/nonexistent/skiff-manifests' });
  await t.rejects(s.start(), /cannot read the manifest directory \/nonexistent\/skiff-manifests: ENOENT/);
  t.notOk(s.hasSynced());
});

t.test('parseManifest (pure)', async (t) => {
  const r = parseManifest('---\n' + SERVICE(80) + '---\n---\n', 'x.yaml');
  t.equal(r.objects.length, 1, 'empty documents are skipped silently');
  t.equal(r.objects[0]!.document, 0, 'a leading --- opens the first document');
  t.equal(r.objects[0]!.obj.metadata.namespace, 'default');

  const j = parseManifest('{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}', 'x.json');
  t.match(j.problems[0], { file: 'x.json', document: 0, reason: /invalid JSON/ });

  const list = parseManifest('apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: a}}\n- {apiVersion: v1, kind: Namespace}\n', 'l.yaml');
  t.equal(list.objects.length, 1);
  t.match(list.problems[0], { document: 0, item: 1, reason: /metadata: required field is missing/ });

  const scalar = parseManifest('just a string\n', 's.yaml');
  t.match(scalar.problems[0]!.reason, /expected a Kubernetes object/);

  const ns = parseManifest('apiVersion: v1\nkind: Node\nmetadata: {name: n, namespace: default}\n', 'n.yaml');
  t.equal(ns.objects[0]!.obj.metadata.namespace, undefined, 'a namespace on a cluster-scoped object is dropped');

  const slice = parseManifest('apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s}\naddressType: IPv4\nendpoints: null\n', 'e.yaml');
  t.same((slice.objects[0]!.obj as { endpoints: unknown }).endpoints, [], 'endpoints: null is normalised to []');

  const pod = parseManifest('apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {}\n', 'p.yaml');
  t.same((pod.objects[0]!.obj as Pod).spec.containers, []);

  const bad = [
    ['apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {type: Magic}\n', /spec\.type: expected one of ClusterIP, NodePort, LoadBalancer, ExternalName, got "Magic"/],
    ['apiVersion: v1\nkind: Service\nmetadata: {name: s}\n', /spec: required field is missing/],
    ['apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {a: 1}}\nspec: {}\n', /metadata\.labels\.a: expected a string, got 1/],
    ['apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: {}}\n', /spec\.containers: expected a list/],
    ['apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s}\nendpoints: []\n', /addressType: required field is missing/],
    ['apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s}\naddressType: IPv4\nendpoints: [{addresses: []}]\n', /endpoints\[0\]\.addresses: must list at least one address/],
    ['apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: n}\nspec: {podSelector: {matchExpressions: [{key: a, operator: Is}]}}\n', /spec\.podSelector\.matchExpressions\[0\]\.operator: expected one of In, NotIn, Exists, DoesNotExist/],
    ['apiVersion: v1\nkind: Node\nmetadata: {name: n}\nspec: {podCIDRs: 10.0.0.0/24}\n', /spec\.podCIDRs: expected a list/],
  ] as const;
  for (const [text, re] of bad) {
    const res = parseManifest(text, 'bad.yaml');
    t.equal(res.objects.length, 0, `rejected: ${re}`);
    t.match(res.problems[0]?.reason, re);
  }
});
