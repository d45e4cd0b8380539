// `skiff policy explain` end to end over a manifest directory, run in-process.
import t from 'tap';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from '../../src/policy/cli.js';
import { loadManifestDir, parseEndpoint } from '../../src/policy/explain.js';

const NAMESPACES = `
apiVersion: v1
kind: Namespace
metadata: {name: prod, labels: {env: prod}}
---
apiVersion: v1
kind: Namespace
metadata: {name: dev, labels: {env: dev}}
`;

const PODS = `
apiVersion: v1
kind: Pod
metadata: {name: api, namespace: prod, labels: {app: api}}
spec:
  containers:
  - name: api
    ports: [{name: http, containerPort: 8080}]
status: {podIP: 10.244.1.5, hostIP: 172.18.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: shell, namespace: dev, labels: {app: shell}}
spec: {containers: [{name: sh}]}
status: {podIP: 10.244.2.7}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: prod, labels: {app: web}}
spec: {containers: [{name: web}]}
status: {podIP: 10.244.1.6}
---
apiVersion: v1
kind: Service
metadata: {name: ignored, namespace: prod}
spec: {ports: [{port: 80}]}
`;

const POLICIES = `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-from-prod, namespace: prod}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {env: prod}}
    ports:
    - port: http
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: broken, namespace: prod}
spec:
  podSelector: {}
  ingress:
  - from:
    - ipBlock: {cidr: 10.0.0.0/16, except: [10.1.0.0/16]}
`;

function fixture(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'skiff-policy-cli-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, '00-namespaces.yaml'), NAMESPACES);
  writeFileSync(join(dir, '10-pods.yml'), PODS);
  writeFileSync(join(dir, '20-policies.yaml'), POLICIES);
  writeFileSync(join(dir, 'README.txt'), 'not yaml: ignored');
  return dir;
}

/** Runs the CLI in-process and captures what it writes to stdout and stderr. */
async function cli(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const write = process.stdout.write;
  // Capture process.stdout too, to prove the default io goes there.
  process.stdout.write = ((s: string) => ((out += s), true)) as typeof process.stdout.write;
  try {
    const code = await run(argv, { stdout: (s) => void process.stdout.write(s), stderr: (s) => (err += s) });
    return { code, out, err };
  } finally {
    process.stdout.write = write;
  }
}

t.test('explain a denied connection from a manifest directory', async (t) => {
  const dir = fixture(t);
  const r = await cli(['explain', '--from', 'dev/shell', '--to', 'prod/api', '--port', '8080', '--manifests', dir]);
  t.equal(r.code, 0, r.err);
  t.equal(r.err, '');
  const lines = r.out.split('\n');
  t.equal(lines[0], 'DENIED: dev/shell -> prod/api TCP/8080');
  t.equal(lines[1], '  egress  dev/shell: not isolated: allowed');
  t.equal(lines[2], '  ingress prod/api: isolated by prod/api-from-prod: DENIED');
  t.match(r.out, /ingress:   prod\/api-from-prod ingress\[0\]: dev\/shell \(10\.244\.2\.7\) matches none of from\[0\] \(all pods in namespaces env=prod\)/);
  t.match(r.out, /note: ignored invalid policy prod\/broken: spec\.ingress\[0\]\.from\[0\]\.ipBlock\.except\[0\]: "10\.1\.0\.0\/16" is not inside cidr "10\.0\.0\.0\/16"/);
});

t.test('explain an allowed connection, by IP, with --json', async (t) => {
  const dir = fixture(t);
  const r = await cli(['explain', '--from', '10.244.1.6', '--to', 'prod/api', '--port', '8080', '--manifests', dir, '--json']);
  t.equal(r.code, 0, r.err);
  const v = JSON.parse(r.out);
  t.equal(v.allowed, true);
  t.same(v.connection, { from: { ip: '10.244.1.6' }, to: { pod: 'prod/api' }, protocol: 'TCP', port: 8080 });
  t.same(v.ingress.allowedBy, { policy: 'prod/api-from-prod', ruleIndex: 0, peerIndex: 0, portIndex: 0 });
  t.ok(v.reasons.includes('note: from: 10.244.1.6 is the address of pod prod/web'));
  t.ok(v.reasons.some((s: string) => s.includes('ports[0] TCP/"http" = 8080 on prod/api')));
  const wrongPort = await cli(['explain', '--from', 'prod/web', '--to', 'prod/api', '--port', '80', '--manifests', dir]);
  t.match(wrongPort.out, /^DENIED/);
});

t.test('--from-node and --lab', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'skiff-policy-lab-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const dir = join(root, 'demo', 'manifests');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'all.yaml'), NAMESPACES + '---\n' + PODS + '---\n' + POLICIES);
  const prev = process.env.SKIFF_LAB_ROOT;
  process.env.SKIFF_LAB_ROOT = root;
  t.teardown(() => {
    if (prev === undefined) delete process.env.SKIFF_LAB_ROOT;
    else process.env.SKIFF_LAB_ROOT = prev;
  });
  const r = await cli(['explain', '--from-node', '--to', 'prod/api', '--port', '9999', '--lab', 'demo']);
  t.equal(r.code, 0, r.err);
  t.match(r.out, /^ALLOWED: 172\.18\.0\.2 \(node\) -> prod\/api TCP\/9999/);
  t.match(r.out, /traffic from prod\/api's own node is always allowed \(even though prod\/api-from-prod isolate it\)/);
  const bad = await cli(['explain', '--from', 'dev/shell', '--to', 'prod/api', '--port', '80', '--lab', '../etc']);
  t.equal(bad.code, 2);
  t.match(bad.err, /invalid lab name/);
});

t.test('usage and errors', async (t) => {
  const dir = fixture(t);
  const cases: [string[], number, RegExp][] = [
    [[], 2, /^$/],
    [['frobnicate'], 2, /unknown subcommand "frobnicate"/],
    [['explain', '--to', 'prod/api', '--port', '80', '--manifests', dir], 2, /--from is required/],
    [['explain', '--from', 'dev/shell', '--to', 'prod/api', '--manifests', dir], 2, /--port is required/],
    [['explain', '--from', 'dev/shell', '--to', 'prod/api', '--port', '0', '--manifests', dir], 2, /--port: invalid port "0"/],
    [['explain', '--from', 'dev/shell', '--to', 'prod/api', '--port', '80', '--protocol', 'icmp', '--manifests', dir], 2, /unsupported protocol "icmp"/],
    [['explain', '--from', 'dev/shell', '--to', 'prod/api', '--port', '80'], 2, /exactly one of --manifests DIR or --lab NAME/],
    [['explain', '--from', 'dev/shell', '--to', 'prod/api', '--port', '80', '--manifests', dir, '--bogus'], 2, /bogus/],
    [['explain', '--from', 'dev/nope', '--to', 'prod/api', '--port', '80', '--manifests', dir], 1, /connection: from: unknown pod "dev\/nope"/],
    [['explain', '--from', 'dev/shell', '--to', 'prod/api', '--port', '80', '--manifests', join(dir, 'missing')], 1, /cannot read directory .*ENOENT/],
  ];
  for (const [argv, code, re] of cases) {
    const r = await cli(argv);
    t.equal(r.code, code, argv.join(' '));
    t.match(r.err, re, argv.join(' '));
  }
  const help = await cli(['explain', '--help']);
  t.equal(help.code, 0);
  t.match(help.out, /usage: skiff policy explain/);
});

t.test('manifest loading', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'skiff-policy-load-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'list.yaml'), 'apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Pod, metadata: {name: p}, spec: {containers: []}}\n');
  const m = await loadManifestDir(dir);
  t.equal(m.pods.length, 1);
  t.equal(m.pods[0]!.metadata.namespace, 'default', 'namespace defaults like kubectl');
  writeFileSync(join(dir, 'broken.yaml'), 'kind: Pod\nmetadata: {name: [\n');
  await t.rejects(loadManifestDir(dir), /broken\.yaml: document 1:/);
  t.same(parseEndpoint('x/a'), { pod: 'x/a' });
  t.same(parseEndpoint('a'), { pod: 'default/a' });
  t.same(parseEndpoint('10.0.0.1'), { ip: '10.0.0.1' });
  t.same(parseEndpoint('fd00::1'), { ip: 'fd00::1' });
  t.throws(() => parseEndpoint('a/b/c'), /not NAMESPACE\/POD or an IP address/);
});
