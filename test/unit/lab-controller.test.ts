// The lab's control-plane parts: pure functions over its state.
import t from 'tap';
import type { Pod, Service } from '../../src/cluster/types.js';
import { parseLabFile, LabConfigError, resolveSettings } from '../../src/lab/config.js';
import { agentArgs } from '../../src/lab/agents.js';
import { loadConfig } from '../../src/agent/config.js';
import { parseArgs } from '../../src/agent/cli.js';
import {
  allocateClusterIPs,
  assignPodCIDRs,
  buildManifests,
  endpointSlices,
  expandDeployment,
  schedule,
  type LabNode,
} from '../../src/lab/controller.js';

const pod = (name: string, labels: Record<string, string>, ip: string | undefined, ready: boolean, extra: Partial<Pod['spec']> = {}, ns = 'default'): Pod => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name, namespace: ns, labels },
  spec: { containers: [{ name: 'c', ports: [{ name: 'http', containerPort: 8080 }, { name: 'dns', containerPort: 5353, protocol: 'UDP' }] }], nodeName: 'node1', ...extra },
  ...(ip ? { status: { podIP: ip, conditions: [{ type: 'Ready', status: ready ? 'True' : 'False' }] } } : {}),
});
const svc = (name: string, ports: Service['spec']['ports'], extra: Partial<Service['spec']> = {}): Service => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace: 'default' },
  spec: { selector: { app: 'web' }, ports, ...extra },
});

t.test('pod CIDRs: a /24 per node, stable across restarts and removals', async (t) => {
  const a = assignPodCIDRs('10.244.0.0/16', ['node1', 'node2', 'node3'], {});
  t.same(a, { node1: '10.244.1.0/24', node2: '10.244.2.0/24', node3: '10.244.3.0/24' });
  t.same(assignPodCIDRs('10.244.0.0/16', ['node1', 'node2', 'node3'], a), a, 'same answer from persisted state');
  const b = assignPodCIDRs('10.244.0.0/16', ['node1', 'node3', 'node4'], { node1: a.node1!, node3: a.node3! });
  t.same(b, { node1: '10.244.1.0/24', node3: '10.244.3.0/24', node4: '10.244.2.0/24' }, 'kept ones stay, the freed /24 is reused');
  t.same(assignPodCIDRs('10.9.0.0/23', ['a', 'b'], {}), { a: '10.9.1.0/24', b: '10.9.0.0/24' });
  t.throws(() => assignPodCIDRs('10.9.0.0/23', ['a', 'b', 'c'], {}), /no free \/24 left for node c/);
  t.throws(() => assignPodCIDRs('10.9.0.0/25', ['a'], {}), /clusterCIDR: invalid value/);
});

t.test('ClusterIPs: stable, explicit ones honoured, conflicts named', async (t) => {
  const s = [svc('a', [{ port: 80 }]), svc('b', [{ port: 80 }]), svc('h', [{ port: 80 }], { clusterIP: 'None' }), svc('x', [{ port: 80 }], { clusterIP: '10.96.0.10' })];
  const ips = allocateClusterIPs(s, '10.96.0.0/12', {});
  t.same(ips, { 'default/a': '10.96.0.2', 'default/b': '10.96.0.3', 'default/h': 'None', 'default/x': '10.96.0.10' });
  // b removed, c added: a keeps its address, c does not take b's remembered one.
  const again = allocateClusterIPs([s[0]!, svc('c', [{ port: 80 }]), s[3]!], '10.96.0.0/12', ips);
  t.equal(again['default/a'], '10.96.0.2');
  t.equal(again['default/c'], '10.96.0.4');
  t.throws(() => allocateClusterIPs([svc('y', [{ port: 80 }], { clusterIP: '10.96.0.10' }), s[3]!], '10.96.0.0/12', {}), /already allocated to service default\/(x|y)/);
  t.throws(() => allocateClusterIPs([svc('z', [{ port: 80 }], { clusterIP: '192.168.0.1' })], '10.96.0.0/12', {}), /spec\.clusterIP: invalid value "192\.168\.0\.1"/);
});

t.test('EndpointSlices: readiness, named ports, hostname/subdomain, nodeName', async (t) => {
  const pods = [
    pod('w1', { app: 'web' }, '10.244.1.5', true, { hostname: 'w1', subdomain: 'web' }),
    pod('w2', { app: 'web' }, '10.244.2.5', false, { nodeName: 'node2' }),
    pod('w3', { app: 'web' }, undefined, false),
    pod('other', { app: 'db' }, '10.244.1.9', true),
    pod('elsewhere', { app: 'web' }, '10.244.1.10', true, {}, 'prod'),
  ];
  const [slice, ...rest] = endpointSlices([svc('web', [{ name: 'http', port: 80, targetPort: 'http' }, { name: 'dns', port: 53, protocol: 'UDP', targetPort: 'dns' }])], pods);
  t.equal(rest.length, 0);
  t.equal(slice!.metadata.labels!['kubernetes.io/service-name'], 'web');
  t.same(slice!.ports, [
    { name: 'http', protocol: 'TCP', port: 8080 },
    { name: 'dns', protocol: 'UDP', port: 5353 },
  ], 'named targetPorts resolved through the container ports, by protocol');
  t.same(slice!.endpoints.map((e) => [e.addresses[0], e.conditions, e.nodeName, e.hostname]), [
    ['10.244.1.5', { ready: true, serving: true, terminating: false }, 'node1', 'w1'],
    ['10.244.2.5', { ready: false, serving: false, terminating: false }, 'node2', undefined],
  ]);

  // Terminating but still ready: serving, not ready.
  const term = pod('w4', { app: 'web' }, '10.244.1.7', true);
  term.metadata.deletionTimestamp = '2024-01-01T00:00:00Z';
  const [s2] = endpointSlices([svc('web', [{ port: 80, targetPort: 8080 }])], [term]);
  t.same(s2!.endpoints[0]!.conditions, { ready: false, serving: true, terminating: true });

  // Pods mapping a named port to different numbers: one slice per port set.
  const alt = pod('w5', { app: 'web' }, '10.244.3.5', true);
  alt.spec.containers[0]!.ports = [{ name: 'http', containerPort: 9090 }];
  const slices = endpointSlices([svc('web', [{ name: 'http', port: 80, targetPort: 'http' }])], [pods[0]!, alt]);
  t.equal(slices.length, 2);
  t.same(slices.map((s) => s.ports![0]!.port).sort(), [8080, 9090]);

  // A service whose selector matches nothing still gets an (empty) slice; no selector: none.
  t.same(endpointSlices([svc('none', [{ port: 80 }], { selector: { app: 'nope' } })], pods)[0]!.endpoints, []);
  t.same(endpointSlices([svc('manual', [{ port: 80 }], { selector: {} })], pods)[0]!.endpoints, []);
});

t.test('deployments expand to stable pod names; scheduling spreads', async (t) => {
  const d = parseLabFile(`
kind: Deployment
apiVersion: apps/v1
metadata: {name: web, namespace: dev}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, ports: [{containerPort: 80, name: http}]}]}
`).objects[0]!;
  t.equal(d.kind, 'Deployment');
  const pods = expandDeployment(d as never);
  t.equal(pods.length, 3);
  t.same(expandDeployment(d as never).map((p) => p.metadata.name), pods.map((p) => p.metadata.name), 'deterministic');
  t.match(pods[0]!.metadata.name, /^web-[0-9a-f]{8}-[0-9a-f]{5}$/);
  t.equal(new Set(pods.map((p) => p.metadata.name)).size, 3);
  t.equal(pods[0]!.metadata.labels!.app, 'web');
  t.equal(pods[0]!.metadata.namespace, 'dev');

  const nodes: LabNode[] = [1, 2, 3].map((i) => ({ name: `node${i}`, index: i, podCIDR: `10.244.${i}.0/24`, underlayIp: `172.31.0.${i}` }));
  const pinned = { ...pods[0]!, spec: { ...pods[0]!.spec, nodeName: 'node3' } };
  const placement = schedule([pinned, pods[1]!, pods[2]!], nodes, {});
  t.equal(placement[`dev/${pinned.metadata.name}`], 'node3', 'nodeName honoured');
  t.same(new Set(Object.values(placement)).size, 3, 'spread over the three nodes');
  t.same(schedule([pinned, pods[1]!, pods[2]!], nodes, placement), placement, 'stable');
  t.throws(() => schedule([{ ...pods[0]!, spec: { ...pods[0]!.spec, nodeName: 'node9' } }], nodes, {}), /spec\.nodeName: invalid value "node9"/);
});

t.test('lab.yaml parsing and errors name the document and field', async (t) => {
  const f = parseLabFile(`kind: Lab
name: demo
nodes: 2
clusterCIDR: 10.50.0.0/16
---
apiVersion: v1
kind: Namespace
metadata: {name: dev}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: dev}
spec: {containers: [{name: c}]}
`);
  t.same(f.settings, { name: 'demo', nodes: 2, clusterCIDR: '10.50.0.0/16' });
  t.same(f.objects.map((o) => o.kind), ['Namespace', 'Pod']);
  t.throws(() => parseLabFile('kind: Lab\nnodes: 0\n'), /document 1: nodes: invalid value 0/);
  t.throws(() => parseLabFile('kind: Lab\nclusterCIDR: 10.244.1.0/16\n'), /clusterCIDR: invalid value "10\.244\.1\.0\/16" \(host bits set/);
  t.throws(() => parseLabFile('kind: Namespace\nmetadata: {name: a}\n---\nkind: Pod\nmetadata: {name: p}\nspec: {containers: []}\n'), /document 2 \(Pod "p"\): spec\.containers: invalid value \[\]/);
  t.throws(() => parseLabFile('kind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 99999}]}\n'), /spec\.ports\[0\]\.port: invalid value 99999/);
  t.throws(() => parseLabFile('kind: Gadget\nmetadata: {name: g}\n'), LabConfigError);
});

t.test('policyAwareDns: a lab setting that becomes the agents\' policy.policyAwareDns', async (t) => {
  t.same(parseLabFile('kind: Lab\npolicyAwareDns: true\n').settings, { policyAwareDns: true });
  t.equal(resolveSettings({}, {}).policyAwareDns, false, 'off by default');
  t.throws(() => parseLabFile('kind: Lab\npolicyAwareDns: yes please\n'), /document 1: policyAwareDns: invalid value "yes please" \(true or false\)/);
  const o = { lab: 'l', node: 'node1', clusterCIDR: '10.244.0.0/16', serviceCIDR: '10.96.0.0/12', clusterDomain: 'cluster.local' };
  t.notOk(agentArgs(o).some((a) => a.includes('policy-aware')), 'no flag when off');
  const args = agentArgs({ ...o, policyAwareDns: true });
  t.ok(args.includes('--policy.policy-aware-dns=true'));
  // The agent's own parser takes the flag.
  const parsed = loadConfig({ flags: parseArgs(args.slice(1)).flags, env: {} });
  t.equal(parsed.policy.policyAwareDns, true);
});

t.test('manifests: namespaces labelled, pods with status, services with ClusterIPs, slices', async (t) => {
  const objects = parseLabFile(`kind: Pod
apiVersion: v1
metadata: {name: w, namespace: dev, labels: {app: web}}
spec: {containers: [{name: c, ports: [{containerPort: 80, name: http}]}]}
---
kind: Service
apiVersion: v1
metadata: {name: web, namespace: dev}
spec: {selector: {app: web}, ports: [{port: 80, targetPort: http}]}
`).objects;
  const m = buildManifests({
    objects,
    nodes: [{ name: 'node1', index: 1, podCIDR: '10.244.1.0/24', underlayIp: '172.31.0.1' }],
    clusterIPs: { 'dev/web': '10.96.0.2' },
    runtime: { 'dev/w': { node: 'node1', ip: '10.244.1.2', ready: true, uid: 'u1' } },
  });
  t.same(m.namespaces.map((n) => [n.metadata.name, n.metadata.labels!['kubernetes.io/metadata.name']]), [['default', 'default'], ['dev', 'dev'], ['kube-system', 'kube-system']]);
  t.equal(m.pods[0]!.status!.podIP, '10.244.1.2');
  t.equal(m.pods[0]!.status!.hostIP, '172.31.0.1');
  t.equal(m.services[0]!.spec.clusterIP, '10.96.0.2');
  t.same(m.endpointSlices[0]!.endpoints[0]!.addresses, ['10.244.1.2']);
  t.equal(m.endpointSlices[0]!.ports![0]!.port, 80);
  t.same(m.nodes[0]!.spec, { podCIDR: '10.244.1.0/24', podCIDRs: ['10.244.1.0/24'] });
});
