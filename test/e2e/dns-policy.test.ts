// Policy-aware DNS in the lab (lab "pd": namespaces skl-pd-*): two nodes whose agents
// run with policy.policyAwareDns (the lab setting policyAwareDns: true). prod admits
// only prod pods; a dev pod resolves its own Services and gets NXDOMAIN for prod's
// (ClusterIP and headless, A and SRV), while a prod pod and the node itself still
// resolve them; applying a policy that admits dev flips the answer within a second,
// and deleting it flips it back. The lab is removed afterwards (finally, exit, signals).
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { ROOT } from '../helpers/cni.js';
import { requireRoot } from '../helpers/netns.js';

const LAB = 'pd';
const SKIFF = join(ROOT, 'bin', 'skiff');
const missing = ['dig'].filter((b) => spawnSync('sh', ['-c', `command -v ${b}`]).status !== 0);

const LAB_YAML = `kind: Lab
name: ${LAB}
nodes: 2
clusterCIDR: 10.244.0.0/16
serviceCIDR: 10.96.0.0/12
clusterDomain: cluster.local
policyAwareDns: true
---
apiVersion: v1
kind: Namespace
metadata: {name: prod, labels: {env: prod}}
---
apiVersion: v1
kind: Namespace
metadata: {name: dev, labels: {env: dev}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: prod}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          ports: [{name: http, containerPort: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: prod}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: web-hl, namespace: prod}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: dev}
spec:
  replicas: 1
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers:
        - name: api
          ports: [{name: http, containerPort: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: dev}
spec:
  selector: {app: api}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: dev, labels: {app: client}}
spec: {nodeName: node1, containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: prod, labels: {app: client}}
spec: {nodeName: node2, containers: [{name: c}]}
`;

// Applied after \`lab up\`: up's cross-node ping check picks arbitrary pod pairs and
// fails when a policy in the file denies the pair it picked.
const ONLY_FROM_PROD = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: only-from-prod, namespace: prod}
spec:
  podSelector: {}
  ingress: [{from: [{podSelector: {}}]}]
`;

const ALLOW_DEV = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-dev, namespace: prod}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
    - from: [{namespaceSelector: {matchLabels: {env: dev}}}]
      ports: [{port: 80}]
`;

function lab(args: string[]): string {
  return execFileSync(SKIFF, ['lab', ...args, '--name', LAB], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function labDown(): void {
  if (existsSync(`/run/skiff/lab/${LAB}`)) spawnSync(SKIFF, ['lab', 'down', '--name', LAB], { stdio: 'ignore' });
}

function inNs(netns: string, cmd: string[]): { code: number; out: string } {
  const r = spawnSync('ip', ['netns', 'exec', netns, ...cmd], { encoding: 'utf8', timeout: 15000 });
  return { code: r.status ?? 1, out: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

if (requireRoot(t)) {
  if (missing.length) {
    t.plan(0, `the policy-aware DNS e2e needs ${missing.join(', ')}`);
  } else {
    const dir = mkdtempSync(join(tmpdir(), 'skt-pd-e2e-'));
    labDown(); // a leftover of an interrupted run
    process.on('exit', labDown);
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.once(sig, () => { labDown(); process.exit(130); });
    t.teardown(() => {
      labDown();
      rmSync(dir, { recursive: true, force: true });
    });
    try {
      writeFileSync(join(dir, 'lab.yaml'), LAB_YAML);
      writeFileSync(join(dir, 'allow-dev.yaml'), ALLOW_DEV);
      writeFileSync(join(dir, 'only-from-prod.yaml'), ONLY_FROM_PROD);
      lab(['up', '-f', join(dir, 'lab.yaml')]);
      lab(['apply', '-f', join(dir, 'only-from-prod.yaml')]);
    } catch (e) {
      labDown();
      throw e;
    }
    const st = JSON.parse(readFileSync(`/run/skiff/lab/${LAB}/state.json`, 'utf8')) as {
      pods: Record<string, { netns: string; node: string; ip: string }>;
      nodes: { name: string; ns: string }[];
      clusterIPs: Record<string, string>;
    };
    const webIP = st.clusterIPs['prod/web']!;
    const apiIP = st.clusterIPs['dev/api']!;
    const dev = st.pods['dev/client']!;
    const prod = st.pods['prod/client']!;
    const node1 = st.nodes.find((n) => n.name === dev.node)!;
    const webPods = Object.entries(st.pods).filter(([k]) => k.startsWith('prod/web-')).map(([, p]) => p.ip).sort();

    /** `dig` from a namespace: status and the answer lines. */
    const dig = (netns: string, name: string, type = 'A', server?: string) => {
      const r = inNs(netns, ['dig', '+time=1', '+tries=2', '+noall', '+comments', '+answer', ...(server ? [`@${server}`] : []), name, type]);
      const status = /status: ([A-Z]+)/.exec(r.out)?.[1] ?? `no answer (${r.out.trim().split('\n').pop()})`;
      const answers = r.out.split('\n').filter((l) => l && !l.startsWith(';')).map((l) => l.split(/\s+/).slice(3).join(' '));
      return { status, answers };
    };

    // The agents start their DNS servers once their source has synced: allow a few seconds.
    const until = Date.now() + 20000;
    while (Date.now() < until && dig(prod.netns, 'web.prod.svc.cluster.local').answers[0] !== `A ${webIP}`) await sleep(250);

    // only-from-prod went in before the DNS servers were up: wait until dev sees it.
    const denied = Date.now() + 5000;
    while (Date.now() < denied && dig(dev.netns, 'web.prod.svc.cluster.local').status !== 'NXDOMAIN') await sleep(100);

    t.test('prod denies dev: dev gets NXDOMAIN for prod, answers for its own namespace', async (t) => {
      t.same(dig(dev.netns, 'api.dev.svc.cluster.local').answers, [`A ${apiIP}`], 'dev resolves its own Service');
      for (const [name, type] of [
        ['web.prod.svc.cluster.local', 'A'],
        ['web.prod.svc.cluster.local', 'AAAA'],
        ['_http._tcp.web.prod.svc.cluster.local', 'SRV'],
        ['web-hl.prod.svc.cluster.local', 'A'],
        ['_http._tcp.web-hl.prod.svc.cluster.local', 'SRV'],
      ] as const) {
        const d = dig(dev.netns, name, type);
        t.equal(d.status, 'NXDOMAIN', `dev: ${type} ${name}`);
        t.same(d.answers, [], 'no records');
      }
      t.equal(dig(dev.netns, 'nosuch.prod.svc.cluster.local').status, 'NXDOMAIN', 'the same as a Service that does not exist');
      // glibc through the search path: `web.prod` is not found, `api` is.
      t.not(inNs(dev.netns, ['getent', 'hosts', 'web.prod']).code, 0, 'getent hosts web.prod fails for dev');
      t.match(inNs(dev.netns, ['getent', 'hosts', 'api']).out, new RegExp(`^${apiIP.replace(/\./g, '\\.')}\\s`, 'm'), 'getent hosts api');
    });

    t.test('prod pods and the node itself still resolve prod', async (t) => {
      t.same(dig(prod.netns, 'web.prod.svc.cluster.local').answers, [`A ${webIP}`], 'prod client');
      t.same(dig(prod.netns, 'web-hl.prod.svc.cluster.local').answers.sort(), webPods.map((ip) => `A ${ip}`), 'prod client: headless');
      t.same(dig(node1.ns, 'web.prod.svc.cluster.local', 'A', '169.254.20.10').answers, [`A ${webIP}`], `the node ${node1.name}`);
    });

    t.test('a policy admitting dev flips the answer within a second, deleting it flips it back', async (t) => {
      const flip = async (want: string, what: string) => {
        const t0 = Date.now();
        lab([what, '-f', join(dir, 'allow-dev.yaml')]);
        const applied = Date.now();
        let d = dig(dev.netns, 'web.prod.svc.cluster.local');
        while (d.status !== want && Date.now() - applied < 5000) {
          await sleep(20);
          d = dig(dev.netns, 'web.prod.svc.cluster.local');
        }
        const after = Date.now() - applied;
        t.equal(d.status, want, `${what}: ${want}`);
        t.ok(after <= 1000, `within a second of \`skiff lab ${what}\` returning (${after} ms; ${Date.now() - t0} ms including it)`);
        return d;
      };
      const d = await flip('NOERROR', 'apply');
      t.same(d.answers, [`A ${webIP}`], 'dev now resolves web.prod');
      t.same(dig(dev.netns, 'web-hl.prod.svc.cluster.local').answers.sort(), webPods.map((ip) => `A ${ip}`), 'and the headless Service');
      await flip('NXDOMAIN', 'delete');
    });
  }
}
