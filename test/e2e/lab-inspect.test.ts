// `skiff lab get` and `skiff lab probe` on a real 2-node lab (issue 4, "Inspection"),
// through the CLI and the kernel: the tables and -o json Lists match the lab's state;
// probes run inside the source pod's namespace (an echo server reports the client's
// pod IP), get the built-in servers' answers over TCP and UDP across nodes, ping over
// ICMP, resolve pods, IPs and service names (headless by name end to end; ClusterIP
// services end to end once a node runs the service proxy), and give clear refused /
// timed out verdicts with exit 1; `up` ends with the tables and the reachability check.
// The library (probeFromPod) runs many probes concurrently from one process.
//
// The lab is always removed: t.teardown, and SIGINT/SIGTERM/exit handlers.
// Lab name: $SKIFF_E2E_INSPECT_LAB, else ei<pid> (namespaces skl-<name>-*).
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify as toYaml } from 'yaml';
import { requireRoot } from '../helpers/netns.js';
import { ROOT } from '../helpers/cni.js';

const SKIFF = join(ROOT, 'bin', 'skiff');
const NODE = process.execPath;
const LAB = process.env.SKIFF_E2E_INSPECT_LAB ?? `ei${process.pid % 100000}`;
const LAB_ROOT = process.env.SKIFF_LAB_ROOT ?? '/run/skiff/lab';
const STATE = join(LAB_ROOT, LAB, 'state.json');

// TCP: "peer <client address>" on connect; UDP: the same in reply to any datagram.
const ECHO = `const [t,u]=process.argv.slice(1).map(Number);
require('net').createServer(c=>{c.on('error',()=>{});c.end('peer '+c.remoteAddress+'\\n')}).listen(t,'0.0.0.0');
const s=require('dgram').createSocket('udp4');s.on('message',(m,r)=>s.send('peer '+r.address+'\\n',r.port,r.address));s.bind(u);`;

function skiff(args: string[], timeout = 60_000): { code: number; out: string; err: string; ms: number } {
  const t0 = Date.now();
  const r = spawnSync(SKIFF, ['lab', args[0]!, '--name', LAB, ...args.slice(1)], { encoding: 'utf8', timeout });
  return { code: r.status ?? 1, out: r.stdout ?? '', err: r.stderr ?? '', ms: Date.now() - t0 };
}

interface LabState {
  nodes: { name: string; podCIDR: string; underlayIp: string }[];
  pods: Record<string, { node: string; ip: string; netns: string }>;
  clusterIPs: Record<string, string>;
}
const state = () => JSON.parse(readFileSync(STATE, 'utf8')) as LabState;

if (requireRoot(t)) {
  const dir = mkdtempSync(join(tmpdir(), 'skl-lg-e2e-'));
  let downDone = false;
  const down = () => {
    if (!downDone) spawnSync(SKIFF, ['lab', 'down', '--name', LAB], { stdio: 'ignore', timeout: 60_000 });
    downDone = true;
  };
  const teardown = () => {
    down();
    rmSync(dir, { recursive: true, force: true });
  };
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      teardown();
      process.exit(128 + (sig === 'SIGINT' ? 2 : sig === 'SIGTERM' ? 15 : 1));
    });
  }
  process.once('exit', down);
  t.teardown(teardown);

  // A leftover lab of this name (a crashed earlier run) goes first.
  if (existsSync(STATE) || existsSync(`/run/netns/skl-${LAB}-sw`)) spawnSync(SKIFF, ['lab', 'down', '--name', LAB], { stdio: 'ignore' });

  const labFile = join(dir, 'lab.yaml');
  const docs = [
    { kind: 'Lab', name: LAB, nodes: 2 },
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'a' } },
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'b' } },
    { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'client', namespace: 'a' }, spec: { nodeName: 'node1', containers: [{ name: 'c' }] } },
    {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'srv', namespace: 'a', labels: { app: 'web' } },
      spec: { nodeName: 'node2', containers: [{ name: 'srv', ports: [{ name: 'http', containerPort: 8080 }, { name: 'dns', containerPort: 5353, protocol: 'UDP' }] }] },
    },
    {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'unready', namespace: 'a', labels: { app: 'web' } },
      spec: { nodeName: 'node1', containers: [{ name: 'u', ports: [{ name: 'http', containerPort: 8080 }], readinessProbe: { exec: { command: ['false'] } } }] },
    },
    { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'echo', namespace: 'b' }, spec: { nodeName: 'node2', containers: [{ name: 'e', command: [NODE, '-e', ECHO, '7000', '7001'] }] } },
    { apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'a' }, spec: { selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 'http' }] } },
    { apiVersion: 'v1', kind: 'Service', metadata: { name: 'hl', namespace: 'a' }, spec: { clusterIP: 'None', selector: { app: 'web' }, ports: [{ name: 'http', port: 8080, targetPort: 'http' }] } },
  ];
  writeFileSync(labFile, docs.map((d) => toYaml(d)).join('---\n'));

  t.test('lab up ends with the nodes, pods, services and the probe-based reachability check', async (t) => {
    const r = skiff(['up', '-f', labFile], 180_000);
    t.equal(r.code, 0, `lab up exits 0\n${r.err}\n${r.out}`);
    if (r.code !== 0) return t.bailout('lab up failed');
    const s = state();
    for (const n of s.nodes) t.match(r.out, new RegExp(`\\n${n.name} +Ready +${n.podCIDR.replace(/\./g, '\\.')} +${n.underlayIp.replace(/\./g, '\\.')} +running\\n`), `${n.name} row`);
    for (const [key, p] of Object.entries(s.pods)) {
      const [ns, name] = key.split('/');
      t.match(r.out, new RegExp(`\\n${ns} +${name} +[01]/1 +Running +${p.ip.replace(/\./g, '\\.')} +${p.node}\\n`), `${key} row`);
    }
    t.match(r.out, new RegExp(`\\na +web +ClusterIP +${s.clusterIPs['a/web']!.replace(/\./g, '\\.')} +80/TCP\\n`), 'service row with its ClusterIP');
    t.match(r.out, /cross-node reachability/);
    t.match(r.out, /node1 -> node2 +a\/client -> a\/srv TCP\/8080 \([\d.]+\): ok "a\/srv"/, 'a client on node1 reads the server on node2');
    t.match(r.out, /node1 -> node2 +a\/client -> a\/srv ICMP \([\d.]+\): ok/);
    t.match(r.out, /node2 -> node1 +\S+ -> a\/unready TCP\/8080 \([\d.]+\): ok "a\/unready"/, 'and back');
    t.notMatch(r.out, /FAILED/);
  });

  t.test('get nodes|pods|services|endpointslices: tables and -o json Lists match the lab', async (t) => {
    const s = state();
    const nodes = skiff(['get', 'nodes']);
    t.equal(nodes.code, 0, nodes.err);
    t.equal(nodes.out.split('\n')[0], 'NAME    STATUS   POD-CIDR        UNDERLAY-IP   AGENT');
    const nj = JSON.parse(skiff(['get', 'nodes', '-o', 'json']).out) as { kind: string; items: { metadata: { name: string; annotations?: Record<string, string> }; spec: { podCIDR: string }; status: { conditions: { type: string; status: string }[] } }[] };
    t.equal(nj.kind, 'List');
    t.same(
      nj.items.map((n) => [n.metadata.name, n.spec.podCIDR, n.status.conditions[0]!.status]),
      s.nodes.map((n) => [n.name, n.podCIDR, 'True']),
    );
    t.ok(nj.items.every((n) => /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/.test(n.metadata.annotations?.['skiff.io/vtep-mac'] ?? '')), 'the VTEP MAC the agents published');

    const pods = skiff(['get', 'pods', '-n', 'a']);
    t.match(pods.out.split('\n')[0], /^NAME +READY +STATUS +IP +NODE$/, 'no NAMESPACE column with -n');
    t.match(pods.out, new RegExp(`\\nsrv +1/1 +Running +${s.pods['a/srv']!.ip.replace(/\./g, '\\.')} +node2\\n`));
    t.match(pods.out, /\nunready +0\/1 +Running /, 'the failing readiness probe shows');
    t.notMatch(pods.out, /echo/, '-n a leaves out namespace b');
    t.match(skiff(['get', 'pods', '-o', 'wide']).out, /\nb +echo .* <none> +<none>\n/);
    const pj = JSON.parse(skiff(['get', 'pods', '-o', 'json']).out) as { items: { kind: string; metadata: { namespace: string; name: string }; status: { podIP: string } }[] };
    t.same(
      pj.items.map((p) => [`${p.metadata.namespace}/${p.metadata.name}`, p.status.podIP]).sort(),
      Object.entries(s.pods).map(([k, p]) => [k, p.ip]).sort(),
    );

    const svc = skiff(['get', 'svc']);
    t.match(svc.out, /\na +hl +ClusterIP +None +8080\/TCP\n/);
    t.match(svc.out, new RegExp(`\\na +web +ClusterIP +${s.clusterIPs['a/web']!.replace(/\./g, '\\.')} +80/TCP\\n`));

    const eps = skiff(['get', 'endpointslices', '-n', 'a']);
    const srv = s.pods['a/srv']!.ip.replace(/\./g, '\\.');
    const unready = s.pods['a/unready']!.ip.replace(/\./g, '\\.');
    t.match(eps.out, new RegExp(`\\nweb-\\w+ +web +IPv4 +8080/TCP +(${srv}\\(ready,serving\\) ${unready}\\(not-ready\\)|${unready}\\(not-ready\\) ${srv}\\(ready,serving\\))\\n`), 'ready and not-ready endpoints');
    const ej = JSON.parse(skiff(['get', 'endpointslices', '-o', 'json', '-n', 'a']).out) as { items: { kind: string; metadata: { labels: Record<string, string> }; endpoints: { addresses: string[]; conditions: { ready: boolean } }[] }[] };
    t.same(ej.items.map((e) => e.metadata.labels['kubernetes.io/service-name']).sort(), ['hl', 'web']);
    t.ok(ej.items.every((e) => e.kind === 'EndpointSlice'));

    const bad = skiff(['get', 'pods', '-o', 'yaml']);
    t.equal(bad.code, 2);
    t.match(bad.err, /flag -o: invalid value "yaml"/);
  });

  t.test('probe: answers across nodes over TCP, UDP and ICMP, from inside the source pod', async (t) => {
    const s = state();
    const tcp = skiff(['probe', 'a/client', 'a/srv']);
    t.equal(tcp.code, 0, tcp.err);
    t.match(tcp.out, new RegExp(`^a/client -> a/srv \\(${s.pods['a/srv']!.ip.replace(/\./g, '\\.')}:8080/TCP\\): a/srv \\([\\d.]+ ms\\)\\n$`));
    const udp = JSON.parse(skiff(['probe', 'a/client', 'a/srv', '--protocol', 'UDP', '--json']).out) as Record<string, unknown>;
    t.same({ ...udp, ms: 0 }, { from: 'a/client', to: 'a/srv', ip: s.pods['a/srv']!.ip, protocol: 'UDP', port: 5353, result: 'ok', answer: 'a/srv', ms: 0 });
    const icmp = JSON.parse(skiff(['probe', 'a/client', s.pods['b/echo']!.ip, '--protocol', 'icmp', '--json']).out) as { result: string; answer: string; port: null };
    t.equal(icmp.result, 'ok');
    t.equal(icmp.answer, `echo reply from ${s.pods['b/echo']!.ip}`);
    t.equal(icmp.port, null);
    // The echo server reports the address the connection came from: the client pod's IP.
    const seen = skiff(['probe', 'a/client', 'b/echo', '--port', '7000']);
    t.match(seen.out, new RegExp(`: peer ${s.pods['a/client']!.ip.replace(/\./g, '\\.')} \\(`), 'TCP from the client pod (no NAT, its namespace)');
    const seenUdp = skiff(['probe', 'a/client', 'b/echo', '--port', '7001', '--protocol', 'udp']);
    t.match(seenUdp.out, new RegExp(`: peer ${s.pods['a/client']!.ip.replace(/\./g, '\\.')} \\(`), 'UDP from the client pod');
  });

  t.test('probe: service names resolve the DNS way', async (t) => {
    const s = state();
    for (const name of ['hl', 'hl.a', 'hl.a.svc.cluster.local']) {
      const r = JSON.parse(skiff(['probe', 'a/client', name, '--json']).out) as { to: string; ip: string; port: number; result: string; answer: string };
      t.same([r.to, r.ip, r.port, r.result, r.answer], ['a/hl', s.pods['a/srv']!.ip, 8080, 'ok', 'a/srv'], `${name}: headless, the ready endpoint answers`);
    }
    // --dns: the same names through the cluster DNS, queried from inside the client pod.
    const viaDns = JSON.parse(skiff(['probe', 'a/client', 'hl', '--dns', '--json']).out) as { to: string; ip: string; result: string; answer: string };
    t.same([viaDns.to, viaDns.ip, viaDns.result, viaDns.answer], ['hl.a.svc.cluster.local', s.pods['a/srv']!.ip, 'ok', 'a/srv'], '--dns: headless name -> the ready pod, which answers');
    const webDns = JSON.parse(skiff(['probe', 'a/client', 'web', '--dns', '--protocol', 'ICMP', '--timeout', '300', '--json']).out) as { to: string; ip: string };
    t.same([webDns.to, webDns.ip], ['web.a.svc.cluster.local', s.clusterIPs['a/web']], '--dns: a ClusterIP service name -> its ClusterIP');
    const noName = skiff(['probe', 'a/client', 'nosuch', '--dns', '--timeout', '300']);
    t.equal(noName.code, 1);
    t.match(noName.err, /DNS: "nosuch" does not resolve from pod a\/client through 169\.254\.20\.10 \(nosuch\.a\.svc\.cluster\.local: no such name;/);
    const fromB = skiff(['probe', 'b/echo', 'hl', '--json']);
    t.equal(fromB.code, 2, 'a bare name is looked up in the source namespace');
    t.match(fromB.err, /no service b\/hl \(services: a\/hl, a\/web\)/);
    const proxy = spawnSync('ip', ['netns', 'exec', `skl-${LAB}-n1`, 'nft', 'list', 'tables'], { encoding: 'utf8' }).stdout.includes('skiff-proxy');
    const web = skiff(['probe', 'a/client', 'web.a.svc.cluster.local', '--json', '--timeout', proxy ? '2000' : '300']);
    const r = JSON.parse(web.out) as { to: string; ip: string; port: number; result: string; answer: string };
    t.same([r.to, r.ip, r.port], ['a/web', s.clusterIPs['a/web'], 80], 'a ClusterIP service: its ClusterIP and service port');
    if (proxy) t.same([r.result, r.answer, web.code], ['ok', 'a/srv', 0], 'through the service proxy to the only ready endpoint');
    else t.comment('no node runs the service proxy (no skiff-proxy table): the ClusterIP path is not checked end to end');
  });

  t.test('probe: refused, timed out, bad input; exit codes', async (t) => {
    const refused = skiff(['probe', 'a/client', 'a/srv', '--port', '9']);
    t.equal(refused.code, 1);
    t.match(refused.out, /: refused \(/);
    const udpRefused = JSON.parse(skiff(['probe', 'a/client', 'a/srv', '--port', '9', '--protocol', 'UDP', '--json']).out) as { result: string; answer: null };
    t.same([udpRefused.result, udpRefused.answer], ['refused', null], 'ICMP port unreachable: refused');
    // An address in node2's pod CIDR that no pod holds: nothing answers within the timeout.
    const s = state();
    const ghost = s.nodes[1]!.podCIDR.replace(/0\/24$/, '250');
    for (const proto of ['TCP', 'UDP', 'ICMP']) {
      const r = skiff(['probe', 'a/client', ghost, '--protocol', proto, '--port', '80', '--timeout', '400', '--json']);
      t.equal(r.code, 1, `${proto}: exit 1`);
      const j = JSON.parse(r.out) as { result: string; ms: number };
      t.match(j.result, /^(timed out|unreachable)$/, `${proto}: ${j.result}`);
      t.ok(j.ms < 1500, `${proto}: the verdict within the timeout (${j.ms} ms)`);
    }
    const noPod = skiff(['probe', 'a/nope', 'a/srv']);
    t.equal(noPod.code, 2);
    t.match(noPod.err, /no pod a\/nope \(pods: a\/client, a\/srv, a\/unready, b\/echo\)/);
    const noPort = skiff(['probe', 'a/client', 'a/client']);
    t.equal(noPort.code, 2);
    t.match(noPort.err, /flag --port is required: pod a\/client has no TCP port/);
    const badFlag = skiff(['probe', 'a/client', 'a/srv', '--protocol', 'sctp']);
    t.equal(badFlag.code, 2);
    t.match(badFlag.err, /flag --protocol: invalid value "sctp"/);
  });

  t.test('the library: 60 concurrent probes from one process, all answered', async (t) => {
    process.env.SKIFF_LAB_ROOT = LAB_ROOT;
    const { loadState } = await import('../../src/lab/state.js');
    const { labViewOf, probeFromPod } = await import('../../src/lab/inspect-cli.js');
    const s = loadState(LAB)!;
    const view = labViewOf(s);
    const t0 = Date.now();
    const jobs = [...Array(20).keys()].flatMap(() => [
      probeFromPod(s, view, 'a/client', 'a/srv', { protocol: 'TCP' }),
      probeFromPod(s, view, 'a/client', 'a/srv', { protocol: 'UDP' }),
      probeFromPod(s, view, 'b/echo', 'a/unready', { protocol: 'ICMP' }),
    ]);
    const all = await Promise.all(jobs);
    const ms = Date.now() - t0;
    t.equal(all.filter((r) => r.result === 'ok').length, 60, `all ok (${all.filter((r) => r.result !== 'ok').map((r) => `${r.protocol} ${r.result}`).join(', ')})`);
    t.ok(all.filter((r) => r.protocol !== 'ICMP').every((r) => r.answer === 'a/srv'));
    t.comment(`60 concurrent probes in ${ms} ms; median ${[...all.map((r) => r.ms)].sort((a, b) => a - b)[30]} ms each`);
    t.ok(ms < 10_000, `60 probes in ${ms} ms`);
  });

  t.test('lab down removes it', async (t) => {
    down();
    t.notOk(existsSync(STATE), 'state gone');
    const left = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout.split('\n').filter((l) => l.startsWith(`skl-${LAB}-`));
    t.same(left, [], 'no namespaces left');
  });
}
