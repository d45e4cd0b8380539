// Cluster DNS in the lab (lab "dn": namespaces skl-dn-*): two nodes, each agent serving
// 169.254.20.10 in its node namespace; from a client pod on every node, glibc
// (`getent hosts`), `dig` and busybox `nslookup` resolve the Service, short names work
// through the pods' search path (ndots:5), SRV and PTR answer, names outside the
// cluster are refused or forwarded (never answered wrongly), and a Service created
// after start resolves within a second. The lab is removed afterwards.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { ROOT } from '../helpers/cni.js';
import { requireRoot } from '../helpers/netns.js';

const LAB = 'dn';
const SKIFF = join(ROOT, 'bin', 'skiff');
const missing = ['dig', 'getent'].filter((b) => spawnSync('sh', ['-c', `command -v ${b}`]).status !== 0);

const LAB_YAML = `kind: Lab
name: ${LAB}
nodes: 2
clusterCIDR: 10.244.0.0/16
serviceCIDR: 10.96.0.0/12
clusterDomain: cluster.local
---
apiVersion: v1
kind: Namespace
metadata: {name: prod}
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
kind: Pod
metadata: {name: client-1, namespace: prod}
spec: {nodeName: node1, containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client-2, namespace: prod}
spec: {nodeName: node2, containers: [{name: c}]}
`;

const LATE_YAML = `apiVersion: v1
kind: Service
metadata: {name: late, namespace: prod}
spec:
  selector: {app: web}
  ports: [{name: http, port: 8080, targetPort: http}]
`;

function lab(args: string[]): string {
  return execFileSync(SKIFF, ['lab', ...args, '--name', LAB], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function labDown(): void {
  if (existsSync(`/run/skiff/lab/${LAB}`)) spawnSync(SKIFF, ['lab', 'down', '--name', LAB], { stdio: 'ignore' });
}

/** Runs a command in a pod's namespace (ip netns exec binds the pod's resolv.conf). */
function inPod(netns: string, cmd: string[]): { code: number; out: string } {
  const r = spawnSync('ip', ['netns', 'exec', netns, ...cmd], { encoding: 'utf8', timeout: 15000 });
  return { code: r.status ?? 1, out: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}

if (requireRoot(t)) {
  if (missing.length || !existsSync('/bin/busybox')) {
    t.plan(0, `the DNS e2e needs ${[...missing, existsSync('/bin/busybox') ? '' : 'busybox-static'].filter(Boolean).join(', ')}`);
  } else {
    const dir = mkdtempSync(join(tmpdir(), 'skt-dn-e2e-'));
    labDown(); // a leftover of an interrupted run
    process.on('exit', labDown);
    for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => { labDown(); process.exit(130); });
    t.teardown(() => {
      labDown();
      rmSync(dir, { recursive: true, force: true });
    });
    writeFileSync(join(dir, 'lab.yaml'), LAB_YAML);
    writeFileSync(join(dir, 'late.yaml'), LATE_YAML);
    lab(['up', '-f', join(dir, 'lab.yaml')]);
    const state = () => JSON.parse(readFileSync(`/run/skiff/lab/${LAB}/state.json`, 'utf8')) as {
      pods: Record<string, { netns: string; node: string; ip: string }>;
      clusterIPs: Record<string, string>;
    };
    const st = state();
    const webIP = st.clusterIPs['prod/web']!;
    const clients = ['prod/client-1', 'prod/client-2'].map((k) => ({ key: k, ...st.pods[k]! }));
    const webPods = Object.entries(st.pods).filter(([k]) => k.startsWith('prod/web-')).map(([, p]) => p.ip).sort();

    t.test('resolv.conf points pods at the node-local DNS', async (t) => {
      const r = inPod(clients[0]!.netns, ['cat', '/etc/resolv.conf']);
      t.match(r.out, /nameserver 169\.254\.20\.10/);
      t.match(r.out, /search prod\.svc\.cluster\.local svc\.cluster\.local cluster\.local/);
      t.match(r.out, /options ndots:5/);
    });

    // The agents start their DNS servers once their source has synced: allow a few seconds.
    const until = Date.now() + 15000;
    while (Date.now() < until && !inPod(clients[1]!.netns, ['dig', '+short', '+time=1', '+tries=1', 'web.prod.svc.cluster.local']).out.includes(webIP)) {
      await new Promise((r) => setTimeout(r, 250));
    }

    for (const c of clients) {
      t.test(`from ${c.key} on ${c.node}`, async (t) => {
        const getent = (name: string) => inPod(c.netns, ['getent', 'hosts', name]);
        const fq = getent('web.prod.svc.cluster.local');
        t.equal(fq.code, 0, 'getent hosts web.prod.svc.cluster.local');
        t.match(fq.out, new RegExp(`^${webIP.replace(/\./g, '\\.')}\\s+web\\.prod\\.svc\\.cluster\\.local`, 'm'));
        for (const short of ['web', 'web.prod', 'web.prod.svc']) {
          const r = getent(short);
          t.equal(r.code, 0, `getent hosts ${short} (search path)`);
          t.match(r.out, new RegExp(`^${webIP.replace(/\./g, '\\.')}\\s`, 'm'), `${short} -> ${webIP}`);
        }
        // In-zone all the way (a bare name would end at the lab's unreachable upstream).
        t.not(getent('nosuch.prod.svc.cluster.local').code, 0, 'getent hosts of a missing Service fails (NXDOMAIN through the search path)');
        const dig = (...a: string[]) => inPod(c.netns, ['dig', '+short', '+time=2', '+tries=2', ...a]).out.trim();
        t.equal(dig('web.prod.svc.cluster.local'), webIP, 'dig');
        t.equal(dig('+search', 'web'), webIP, 'dig +search web');
        t.equal(dig('-x', webIP), 'web.prod.svc.cluster.local.', 'dig -x (PTR)');
        t.equal(dig('_http._tcp.web.prod.svc.cluster.local', 'SRV'), '0 100 80 web.prod.svc.cluster.local.', 'SRV');
        t.equal(dig('+tcp', 'web.prod.svc.cluster.local'), webIP, 'dig over TCP');
        const full = inPod(c.netns, ['dig', '+time=2', 'nosuch.prod.svc.cluster.local']).out;
        t.match(full, /status: NXDOMAIN/, 'NXDOMAIN');
        t.match(full, /flags: qr aa rd ra/, 'authoritative, recursion available');
        const ns = inPod(c.netns, ['busybox', 'nslookup', 'web.prod.svc.cluster.local']);
        t.match(ns.out, new RegExp(`Address:?\\s+${webIP.replace(/\./g, '\\.')}`), 'busybox nslookup');
        t.ok(webPods.length === 2, 'two web pods');
      });
    }

    t.test('a Service created after start resolves within a second', async (t) => {
      const netns = clients[1]!.netns;
      const t0 = Date.now();
      lab(['apply', '-f', join(dir, 'late.yaml')]);
      const applied = Date.now();
      const ip = state().clusterIPs['prod/late'];
      t.ok(ip, `allocated ${ip}`);
      let answer = '';
      while (Date.now() - applied < 5000) {
        answer = inPod(netns, ['dig', '+short', '+time=1', '+tries=1', 'late.prod.svc.cluster.local']).out.trim();
        if (answer === ip) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      const after = Date.now() - applied;
      t.equal(answer, ip, 'resolves');
      t.ok(after <= 1000, `within a second of \`skiff lab apply\` returning (${after} ms; ${Date.now() - t0} ms including the apply)`);
    });
  }
}
