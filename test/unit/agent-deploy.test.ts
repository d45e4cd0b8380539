// The deploy/ manifests, validated without a cluster: every object parses with
// the right kind/apiVersion and required fields, the RBAC rules cover every API
// call the agent makes, and the DaemonSet's arguments with the ConfigMap's config
// load through the agent's own config code.
import t from 'tap';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { RESOURCES } from '../../src/cluster/kube.js';
import { KINDS } from '../../src/cluster/types.js';
import { parseArgs, configFromArgs } from '../../src/agent/cli.js';

function deployDir(): string {
  let d = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++, d = dirname(d)) if (existsSync(join(d, 'deploy/skiff-daemonset.yaml'))) return join(d, 'deploy');
  return join(process.cwd(), 'deploy');
}
const DIR = deployDir();

type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

function load(file: string): Obj[] {
  const docs = parseAllDocuments(readFileSync(join(DIR, file), 'utf8'));
  return docs.map((d, i) => {
    if (d.errors.length) throw new Error(`${file} document ${i}: ${d.errors[0]!.message}`);
    return d.toJS() as Obj;
  });
}

const all = ['rbac.yaml', 'configmap.yaml', 'skiff-daemonset.yaml'].flatMap((f) => load(f).map((o) => ({ file: f, o })));
const find = (kind: string) => all.filter((x) => x.o.kind === kind).map((x) => x.o);

const API_VERSIONS: Record<string, string> = {
  ServiceAccount: 'v1',
  ConfigMap: 'v1',
  ClusterRole: 'rbac.authorization.k8s.io/v1',
  ClusterRoleBinding: 'rbac.authorization.k8s.io/v1',
  DaemonSet: 'apps/v1',
};
const CLUSTER_SCOPED = new Set(['ClusterRole', 'ClusterRoleBinding']);

t.test('every object has a known kind, its apiVersion, a name, a namespace when namespaced', async (t) => {
  t.same(all.map((x) => x.o.kind).sort(), ['ClusterRole', 'ClusterRoleBinding', 'ConfigMap', 'DaemonSet', 'ServiceAccount']);
  for (const { file, o } of all) {
    t.equal(o.apiVersion, API_VERSIONS[o.kind], `${file} ${o.kind} apiVersion`);
    t.match(o.metadata?.name, /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, `${file} ${o.kind} name`);
    if (CLUSTER_SCOPED.has(o.kind)) t.notOk(o.metadata.namespace, `${o.kind} is cluster-scoped`);
    else t.equal(o.metadata.namespace, 'kube-system', `${o.kind} namespace`);
  }
});

/** API group and resource of a collection path (/api/v1/pods, /apis/discovery.k8s.io/v1/endpointslices). */
function groupResource(path: string): [string, string] {
  const core = /^\/api\/v1\/(\w+)$/.exec(path);
  if (core) return ['', core[1]!];
  const named = /^\/apis\/([^/]+)\/[^/]+\/(\w+)$/.exec(path);
  if (named) return [named[1]!, named[2]!];
  throw new Error(`unexpected path ${path}`);
}

function allows(rules: Obj[], group: string, resource: string, verb: string): boolean {
  return rules.some(
    (r) =>
      (r.apiGroups ?? []).some((g: string) => g === group || g === '*') &&
      (r.resources ?? []).some((x: string) => x === resource || x === '*') &&
      (r.verbs ?? []).some((v: string) => v === verb || v === '*'),
  );
}

t.test('the ClusterRole covers every API call the agent makes, and no more', async (t) => {
  const [role] = find('ClusterRole');
  const rules = role!.rules as Obj[];
  t.same(RESOURCES.map((r) => r.kind).sort(), [...KINDS].sort(), 'the Kubernetes source watches every kind');
  const granted: string[] = [];
  for (const r of rules) for (const g of r.apiGroups) for (const res of r.resources) for (const v of r.verbs) granted.push(`${g}/${res}:${v}`);
  const needed: string[] = [];
  for (const res of RESOURCES) {
    const [group, resource] = groupResource(res.path);
    for (const verb of ['list', 'watch']) {
      t.ok(allows(rules, group, resource, verb), `${verb} ${group || 'core'}/${resource} (${res.kind})`);
      needed.push(`${group}/${resource}:${verb}`);
    }
  }
  // KubeSource.annotateNode merge-patches the Node (overlay: VTEP MAC, underlay IP).
  t.ok(allows(rules, '', 'nodes', 'patch'), 'patch nodes');
  needed.push('/nodes:patch');
  t.same(granted.sort(), needed.sort(), 'least privilege: nothing beyond what the agent calls');
  t.notOk(rules.some((r) => r.verbs.includes('*') || r.resources.includes('*') || r.apiGroups.includes('*')), 'no wildcards');
});

t.test('the binding ties the ServiceAccount the DaemonSet uses to the role', async (t) => {
  const [sa] = find('ServiceAccount');
  const [binding] = find('ClusterRoleBinding');
  const [role] = find('ClusterRole');
  const [ds] = find('DaemonSet');
  t.same(binding!.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: role!.metadata.name });
  t.same(binding!.subjects, [{ kind: 'ServiceAccount', name: sa!.metadata.name, namespace: sa!.metadata.namespace }]);
  t.equal(ds!.spec.template.spec.serviceAccountName, sa!.metadata.name);
});

t.test('the DaemonSet: host network, privileged, every node, the mounts skiff needs, probes on the metrics port', async (t) => {
  const [ds] = find('DaemonSet');
  const spec = ds!.spec.template.spec;
  t.same(ds!.spec.selector.matchLabels, ds!.spec.template.metadata.labels, 'selector matches the template');
  t.equal(spec.hostNetwork, true);
  t.ok(spec.tolerations.some((x: Obj) => x.operator === 'Exists' && !x.key && !x.effect), 'tolerates every taint');
  const [agent] = spec.containers;
  t.equal(agent.securityContext.privileged, true);
  const volumes = new Map<string, Obj>(spec.volumes.map((v: Obj) => [v.name, v]));
  const hostPathOf = (mount: string) => {
    const m = agent.volumeMounts.find((x: Obj) => x.mountPath === mount);
    return m ? volumes.get(m.name)?.hostPath?.path : undefined;
  };
  for (const p of ['/etc/cni/net.d', '/opt/cni/bin', '/var/lib/cni', '/run/netns']) t.equal(hostPathOf(p), p, `${p} is the host's`);
  t.equal(agent.volumeMounts.find((m: Obj) => m.mountPath === '/run/netns').mountPropagation, 'HostToContainer', 'namespaces created later are visible');
  for (const c of [...spec.initContainers, ...spec.containers]) {
    for (const m of c.volumeMounts) t.ok(volumes.has(m.name), `${c.name}: volume ${m.name} exists`);
  }
  const [init] = spec.initContainers;
  t.match(init.args.join('\n'), /skiff-cni/, 'the init container installs skiff-cni');
  t.equal(init.volumeMounts.map((m: Obj) => volumes.get(m.name)?.hostPath?.path)[0], '/opt/cni/bin');
  const cm = find('ConfigMap')[0]!;
  t.equal(volumes.get('config')?.configMap?.name, cm.metadata.name, 'the config volume is the ConfigMap');
  t.equal(agent.livenessProbe.httpGet.path, '/healthz');
  t.equal(agent.readinessProbe.httpGet.path, '/readyz');
  t.equal(agent.env.find((e: Obj) => e.name === 'NODE_NAME').valueFrom.fieldRef.fieldPath, 'spec.nodeName');
});

t.test('the DaemonSet arguments and the ConfigMap config load through the agent config', async (t) => {
  const [ds] = find('DaemonSet');
  const agent = ds!.spec.template.spec.containers[0];
  const cm = find('ConfigMap')[0]!;
  const args: string[] = agent.args.map((a: string) => a.replace('$(NODE_NAME)', 'worker-1'));
  t.equal(args[0], 'agent');
  const parsed = parseArgs(args.slice(1));
  const mount = agent.volumeMounts.find((m: Obj) => m.name === 'config').mountPath;
  t.equal(parsed.configFile, `${mount}/agent.yaml`, 'the config file is the mounted ConfigMap key');
  // Read the ConfigMap's text in place of the mounted file.
  const { loadConfig } = await import('../../src/agent/config.js');
  const c = loadConfig({ file: { path: parsed.configFile!, text: cm.data['agent.yaml'] }, flags: parsed.flags });
  t.equal(c.nodeName, 'worker-1');
  t.equal(c.inCluster, true);
  const port = Number(c.metricsAddress.split(':').pop());
  t.equal(agent.livenessProbe.httpGet.port, port, 'probes hit the configured metrics port');
  t.equal(agent.livenessProbe.httpGet.host, c.metricsAddress.split(':')[0]);
  t.equal(c.cniConfDir, '/etc/cni/net.d');
  t.ok(configFromArgs, 'cli helper exported');
});
