// `skiff lab get` / `skiff lab probe`: the pure parts (src/lab/inspect.ts, the probe
// verdicts and ICMP parsing of src/lab/probe.ts, the reachability check's formatting).
import t from 'tap';
import type { LabObject } from '../../src/lab/config.js';
import {
  asList,
  endpointCell,
  formatGet,
  formatProbe,
  InspectUsageError,
  itemsOf,
  labView,
  parseInspectArgs,
  resolveTarget,
  servicePorts,
  table,
  type InspectSource,
} from '../../src/lab/inspect.js';
import { checkPassed, formatCheck } from '../../src/lab/inspect-cli.js';
import { parseResolvConf, searchCandidates } from '../../src/lab/dnsquery.js';
import { resolvConf } from '../../src/lab/pods.js';
import { firstLine, parseUnreachable, probe, verdictOf } from '../../src/lab/probe.js';
import { echoRequest, icmpChecksum } from '../../src/overlay/probe.js';

const objects: LabObject[] = [
  { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'dev' } },
  {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'web1', namespace: 'dev', labels: { app: 'web' } },
    spec: { nodeName: 'node1', containers: [{ name: 'web', ports: [{ name: 'http', containerPort: 8080 }, { name: 'dns', containerPort: 5353, protocol: 'UDP' }] }] },
  },
  { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web2', namespace: 'dev', labels: { app: 'web' } }, spec: { nodeName: 'node2', containers: [{ name: 'web', ports: [{ name: 'http', containerPort: 8080 }] }] } },
  { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'client', namespace: 'dev' }, spec: { containers: [{ name: 'c' }] } },
  { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'other', namespace: 'default' }, spec: { containers: [{ name: 'c' }] } },
  { apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'dev' }, spec: { selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 'http' }, { name: 'dns', port: 53, targetPort: 5353, protocol: 'UDP' }] } },
  { apiVersion: 'v1', kind: 'Service', metadata: { name: 'hl', namespace: 'dev' }, spec: { clusterIP: 'None', selector: { app: 'web' }, ports: [{ port: 80, targetPort: 'http' }] } },
  { apiVersion: 'v1', kind: 'Service', metadata: { name: 'ext', namespace: 'dev' }, spec: { type: 'ExternalName', externalName: 'example.com' } },
];
const src: InspectSource = {
  objects,
  nodes: [
    { name: 'node1', index: 1, podCIDR: '10.244.1.0/24', underlayIp: '172.31.0.1' },
    { name: 'node2', index: 2, podCIDR: '10.244.2.0/24', underlayIp: '172.31.0.2' },
  ],
  clusterIPs: { 'dev/web': '10.96.0.2', 'dev/hl': 'None' },
  pods: {
    'dev/web1': { node: 'node1', ip: '10.244.1.2', ready: true, uid: 'u1' },
    'dev/web2': { node: 'node2', ip: '10.244.2.2', ready: false, uid: 'u2', terminating: true },
    'dev/client': { node: 'node1', ip: '10.244.1.3', ready: true, uid: 'u3' },
    'default/other': { node: 'node2', ip: '10.244.2.3', ready: true, uid: 'u4' },
  },
  clusterDomain: 'cluster.local',
};
const view = labView(src, { node1: 'running', node2: 'stopped' }, { node1: { 'skiff.io/vtep-mac': '02:00:00:00:00:01' } });

t.test('arguments: get and probe flags, every error names the flag and the value', async (t) => {
  t.same(parseInspectArgs(['get', 'pods', '-n', 'dev', '-o', 'wide', '--name', 'lg']), { cmd: 'get', json: false, rest: ['pods'], namespace: 'dev', output: 'wide', name: 'lg' });
  t.equal(parseInspectArgs(['get', 'svc', '-ojson']).output, 'json', 'kubectl -ojson');
  t.equal(parseInspectArgs(['get', 'svc', '-o=json']).output, 'json');
  t.equal(parseInspectArgs(['get', 'eps', '--output=wide']).output, 'wide');
  t.equal(parseInspectArgs(['get', 'po', '-ndev']).namespace, 'dev');
  t.same(parseInspectArgs(['probe', 'dev/client', 'web', '--port', '80', '--protocol', 'udp', '--timeout', '500', '--json']), {
    cmd: 'probe',
    json: true,
    rest: ['dev/client', 'web'],
    port: 80,
    protocol: 'UDP',
    timeoutMs: 500,
  });
  const bad: [string[], RegExp][] = [
    [['get', 'pods', '-o', 'yaml'], /flag -o: invalid value "yaml" \(json or wide\)/],
    [['get', 'pods', '-n', 'Dev_1'], /flag -n: invalid value "Dev_1"/],
    [['get', 'pods', '-n'], /flag -n: needs a value/],
    [['get', 'pods', '--port', '80'], /get: unknown flag "--port"/],
    [['get', 'widgets'], /get: invalid resource "widgets"/],
    [['get'], /get: one resource is required .* got none/],
    [['get', 'pods', 'nodes'], /one resource is required .* got "pods" "nodes"/],
    [['probe', 'dev/client', 'web', '--port', '0'], /flag --port: invalid value "0" \(an integer from 1 to 65535\)/],
    [['probe', 'dev/client', 'web', '--port', '80x'], /flag --port: invalid value "80x"/],
    [['probe', 'dev/client', 'web', '--port=70000'], /flag --port: invalid value "70000"/],
    [['probe', 'dev/client', 'web', '--protocol', 'SCTP'], /flag --protocol: invalid value "SCTP" \(TCP, UDP or ICMP\)/],
    [['probe', 'dev/client', 'web', '--timeout', '-5'], /flag --timeout: needs a value|flag --timeout: invalid value "-5"/],
    [['probe', 'dev/client', 'web', '--timeout', '1.5'], /flag --timeout: invalid value "1.5"/],
    [['probe', 'dev/client', 'web', '--json=yes'], /flag --json: invalid value "yes" \(takes no value\)/],
    [['probe', 'dev/client', 'web', '--dns=1'], /flag --dns: invalid value "1" \(takes no value\)/],
    [['get', 'pods', '--dns'], /get: unknown flag "--dns"/],
    [['probe', 'dev/client', 'web', '-o', 'json'], /probe: unknown flag "-o"/],
    [['probe', 'dev/client'], /probe: NS\/POD TARGET is required, got "dev\/client"/],
    [['probe', 'a', 'b', '--name', 'Bad-Name'], /flag --name: invalid value "Bad-Name"/],
  ];
  for (const [argv, re] of bad) t.throws(() => parseInspectArgs(argv), re, argv.join(' '));
  let caught: unknown;
  try {
    parseInspectArgs(['get', 'x']);
  } catch (e) {
    caught = e;
  }
  t.ok(caught instanceof InspectUsageError, 'usage errors are InspectUsageError (exit 2)');
});

t.test('table: kubectl layout (padded to the widest cell, three spaces apart, no trailing blanks)', async (t) => {
  t.equal(table(['NAME', 'IP'], [['a', '10.0.0.1'], ['longer-name', '<none>']]), 'NAME          IP\na             10.0.0.1\nlonger-name   <none>\n');
  t.equal(table(['NAME', 'X'], []), 'NAME   X\n');
});

t.test('get nodes: pod CIDR, underlay IP, agent state; wide adds the VTEP MAC', async (t) => {
  t.equal(
    formatGet(view, 'nodes'),
    ['NAME    STATUS     POD-CIDR        UNDERLAY-IP   AGENT', 'node1   Ready      10.244.1.0/24   172.31.0.1    running', 'node2   NotReady   10.244.2.0/24   172.31.0.2    stopped', ''].join('\n'),
  );
  t.match(formatGet(view, 'nodes', { wide: true }), /node1 .* running   02:00:00:00:00:01\nnode2 .* stopped   <none>\n/);
  const list = asList(itemsOf(view, 'nodes')) as { kind: string; items: { kind: string; spec: { podCIDR: string }; status: { conditions: { type: string; status: string }[] }; metadata: { annotations?: Record<string, string> } }[] };
  t.equal(list.kind, 'List');
  t.same(list.items.map((n) => [n.kind, n.spec.podCIDR, n.status.conditions[0]]), [
    ['Node', '10.244.1.0/24', { type: 'Ready', status: 'True', reason: 'SkiffAgentRunning' }],
    ['Node', '10.244.2.0/24', { type: 'Ready', status: 'False', reason: 'SkiffAgentStopped' }],
  ]);
  t.same(list.items[0]!.metadata.annotations, { 'skiff.io/vtep-mac': '02:00:00:00:00:01' });
});

t.test('get pods: namespace, name, ready, status, IP, node; -n filters; wide adds ports and labels', async (t) => {
  t.equal(
    formatGet(view, 'pods'),
    [
      'NAMESPACE   NAME     READY   STATUS        IP           NODE',
      'default     other    1/1     Running       10.244.2.3   node2',
      'dev         client   1/1     Running       10.244.1.3   node1',
      'dev         web1     1/1     Running       10.244.1.2   node1',
      'dev         web2     0/1     Terminating   10.244.2.2   node2',
      '',
    ].join('\n'),
  );
  t.equal(formatGet(view, 'pods', { namespace: 'dev' }).split('\n')[0], 'NAME     READY   STATUS        IP           NODE', 'no NAMESPACE column under -n');
  t.match(formatGet(view, 'pods', { namespace: 'dev', wide: true }), /web1 .* 8080\/TCP,5353\/UDP   app=web\n/);
  t.equal(formatGet(view, 'pods', { namespace: 'nope' }), 'No pods found in nope namespace.\n');
  const items = itemsOf(view, 'pods', 'dev') as { kind: string; metadata: { name: string; uid: string }; status: { podIP: string } }[];
  t.same(items.map((p) => [p.kind, p.metadata.name, p.metadata.uid, p.status.podIP]), [
    ['Pod', 'client', 'u3', '10.244.1.3'],
    ['Pod', 'web1', 'u1', '10.244.1.2'],
    ['Pod', 'web2', 'u2', '10.244.2.2'],
  ]);
});

t.test('get services: type, ClusterIP, ports the kubectl way', async (t) => {
  t.equal(
    formatGet(view, 'services'),
    ['NAMESPACE   NAME   TYPE           CLUSTER-IP    PORT(S)', 'dev         ext    ExternalName   example.com   <none>', 'dev         hl     ClusterIP      None          80/TCP', 'dev         web    ClusterIP      10.96.0.2     80/TCP,53/UDP', ''].join('\n'),
  );
  t.match(formatGet(view, 'services', { wide: true }), /web .* app=web\n/);
  t.equal(servicePorts({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'n' }, spec: { ports: [{ port: 80, nodePort: 30080 }] } }), '80:30080/TCP');
  const svc = itemsOf(view, 'services', 'dev') as { spec: { clusterIP?: string; clusterIPs?: string[] } }[];
  t.same(svc[2]!.spec.clusterIPs, ['10.96.0.2'], 'the Service objects carry their ClusterIP as the agents see it');
});

t.test('get endpointslices: the service and every endpoint with ready/serving/terminating', async (t) => {
  const out = formatGet(view, 'endpointslices', { namespace: 'dev' });
  t.match(out, /^NAME +SERVICE +ADDRESSTYPE +PORTS +ENDPOINTS\n/);
  t.match(out, /web-\w{5} +web +IPv4 +8080\/TCP,5353\/UDP +10\.244\.1\.2\(ready,serving\) 10\.244\.2\.2\(terminating\)\n/, 'web2 terminating: neither ready nor serving (it was not ready)');
  t.match(out, /hl-\w{5} +hl +IPv4 +8080\/TCP +10\.244\.1\.2\(ready,serving\) 10\.244\.2\.2\(terminating\)\n/);
  t.equal(endpointCell({ addresses: ['10.0.0.9'], conditions: { ready: false, serving: false }, nodeName: 'n1', targetRef: { name: 'p' } }, true), '10.0.0.9=p@n1(not-ready)');
  const list = asList(itemsOf(view, 'endpointslices', 'dev')) as { items: { kind: string; apiVersion: string; metadata: { labels: Record<string, string> } }[] };
  t.ok(list.items.every((s) => s.kind === 'EndpointSlice' && s.apiVersion === 'discovery.k8s.io/v1' && s.metadata.labels['kubernetes.io/service-name']));
});

t.test('probe targets: pods, IPs, service names the DNS way, default ports, clear errors', async (t) => {
  const r = (target: string, o: { protocol?: 'TCP' | 'UDP' | 'ICMP'; port?: number; from?: string } = {}) =>
    resolveTarget(view, { fromNamespace: o.from ?? 'dev', target, protocol: o.protocol ?? 'TCP', ...(o.port ? { port: o.port } : {}), domain: 'cluster.local' });
  t.same(r('dev/web1'), { name: 'dev/web1', kind: 'pod', ip: '10.244.1.2', port: 8080 }, 'a pod: its first port of the protocol');
  t.same(r('dev/web1', { protocol: 'UDP' }), { name: 'dev/web1', kind: 'pod', ip: '10.244.1.2', port: 5353 });
  t.same(r('dev/web1', { protocol: 'ICMP' }), { name: 'dev/web1', kind: 'pod', ip: '10.244.1.2' }, 'ICMP: no port');
  t.same(r('dev/web1', { port: 9 }), { name: 'dev/web1', kind: 'pod', ip: '10.244.1.2', port: 9 }, '--port wins');
  t.throws(() => r('other', { port: 1 }), /no service dev\/other/, 'a bare NAME is a service name (pods are NS/POD)');
});

t.test('probe targets (continued)', async (t) => {
  const r = (target: string, o: { protocol?: 'TCP' | 'UDP' | 'ICMP'; port?: number; from?: string } = {}) =>
    resolveTarget(view, { fromNamespace: o.from ?? 'dev', target, protocol: o.protocol ?? 'TCP', ...(o.port ? { port: o.port } : {}), domain: 'cluster.local' });
  for (const name of ['web', 'web.dev', 'web.dev.svc', 'web.dev.svc.cluster.local', 'web.dev.svc.cluster.local.', 'WEB.dev']) {
    t.same(r(name), { name: 'dev/web', kind: 'service', ip: '10.96.0.2', port: 80 }, name);
  }
  t.same(r('web.dev', { from: 'default' }).ip, '10.96.0.2', 'svc.ns from another namespace');
  t.throws(() => r('web', { from: 'default' }), /no service default\/web \(services: dev\/ext, dev\/hl, dev\/web\)/, 'a bare name is looked up in the source namespace');
  t.same(r('web', { protocol: 'UDP' }).port, 53, 'the service port of the protocol');
  t.same(r('hl'), { name: 'dev/hl', kind: 'service', ip: '10.244.1.2', port: 8080 }, 'headless: the first ready endpoint and its target port');
  t.same(r('10.96.0.2'), { name: '10.96.0.2', kind: 'ip', ip: '10.96.0.2', port: 80 }, 'a ClusterIP: the service port');
  t.same(r('10.244.1.2', { protocol: 'UDP' }), { name: '10.244.1.2', kind: 'ip', ip: '10.244.1.2', port: 5353 }, 'a pod IP: the pod port');
  t.same(r('192.0.2.1', { port: 7 }), { name: '192.0.2.1', kind: 'ip', ip: '192.0.2.1', port: 7 });
  t.throws(() => r('192.0.2.1'), /flag --port is required: 192\.0\.2\.1 has no TCP port \(ports: none\)/);
  t.throws(() => r('dev/client'), /flag --port is required: pod dev\/client has no TCP port/);
  t.throws(() => r('dev/nope'), /no pod dev\/nope \(pods: default\/other, dev\/client, dev\/web1, dev\/web2\)/);
  t.throws(() => r('ext'), /service dev\/ext is an ExternalName \(example\.com\)/);
  t.throws(() => r('web.dev.svc.example.org'), /target: invalid value "web\.dev\.svc\.example\.org"/);
  t.throws(() => r('a.b.c'), /target: invalid value "a\.b\.c"/);
  t.throws(() => r('300.1.1.1'), /target: invalid IPv4 address "300\.1\.1\.1"/);
});

t.test('probe verdicts, answers and ICMP parsing', async (t) => {
  t.equal(verdictOf('ECONNREFUSED'), 'refused');
  t.equal(verdictOf('ETIMEDOUT'), 'timed out');
  t.equal(verdictOf('EHOSTUNREACH'), 'unreachable');
  t.equal(verdictOf('ENETUNREACH'), 'unreachable');
  t.equal(verdictOf('EPERM'), 'error');
  t.equal(firstLine('dev/web1\nmore'), 'dev/web1');
  t.equal(firstLine('dev/web1\r\n'), 'dev/web1');
  t.equal(firstLine('partial'), 'partial');
  t.throws(() => probe({ netnsPath: '/nonexistent', ip: '10.0.0.1', protocol: 'TCP', timeoutMs: 10 }), /port: invalid value undefined/);
  t.throws(() => probe({ netnsPath: '/nonexistent', ip: '10.0.0.1', protocol: 'UDP', port: 70000, timeoutMs: 10 }), /port: invalid value 70000/);

  // An ICMP destination unreachable (host unreachable, code 1) quoting our echo request.
  const ipHeader = (proto: number, len: number, src: number[], dst: number[]) => {
    const h = Buffer.alloc(20);
    h[0] = 0x45;
    h.writeUInt16BE(len, 2);
    h[8] = 64;
    h[9] = proto;
    Buffer.from(src).copy(h, 12);
    Buffer.from(dst).copy(h, 16);
    return h;
  };
  const echo = echoRequest(0x1234, 1, Buffer.from('x'));
  const inner = Buffer.concat([ipHeader(1, 20 + echo.length, [10, 244, 1, 3], [10, 244, 9, 9]), echo]);
  const icmp = Buffer.concat([Buffer.from([3, 1, 0, 0, 0, 0, 0, 0]), inner]);
  icmp.writeUInt16BE(icmpChecksum(icmp), 2);
  const pkt = Buffer.concat([ipHeader(1, 20 + icmp.length, [10, 244, 1, 1], [10, 244, 1, 3]), icmp]);
  t.equal(parseUnreachable(pkt, 0x1234), 1, 'our echo: code 1');
  t.equal(parseUnreachable(pkt, 0x4321), undefined, 'someone else\'s echo');
  t.equal(parseUnreachable(Buffer.concat([ipHeader(1, 28, [1, 1, 1, 1], [2, 2, 2, 2]), Buffer.from([0, 0, 0, 0, 0x12, 0x34, 0, 1])]), 0x1234), undefined, 'an echo reply is not unreachable');
  t.equal(parseUnreachable(Buffer.alloc(10), 1), undefined, 'short');
});

t.test('probe output: one line, or the JSON fields {from,to,protocol,port,result,answer,ms}', async (t) => {
  t.equal(
    formatProbe({ from: 'dev/client', to: 'dev/web', ip: '10.96.0.2', protocol: 'TCP', port: 80, result: 'ok', answer: 'dev/web1', ms: 1.234 }),
    'dev/client -> dev/web (10.96.0.2:80/TCP): dev/web1 (1.2 ms)\n',
  );
  t.equal(formatProbe({ from: 'dev/client', to: '10.0.0.9', ip: '10.0.0.9', protocol: 'UDP', port: 53, result: 'timed out', answer: null, ms: 2000 }), 'dev/client -> 10.0.0.9:53/UDP: timed out (2000.0 ms)\n');
  t.equal(formatProbe({ from: 'a/b', to: '10.0.0.9', ip: '10.0.0.9', protocol: 'ICMP', port: null, result: 'unreachable', answer: null, ms: 3, error: 'ICMP destination unreachable (code 1) from 10.244.1.1' }), 'a/b -> 10.0.0.9/ICMP: unreachable (ICMP destination unreachable (code 1) from 10.244.1.1) (3.0 ms)\n');
  t.equal(formatProbe({ from: 'a/b', to: 'a/c', ip: '10.0.0.2', protocol: 'TCP', port: 1, result: 'ok', answer: '', ms: 3 }), 'a/b -> a/c (10.0.0.2:1/TCP): (connected, no answer) (3.0 ms)\n');
  t.equal(formatProbe({ from: 'a/b', to: 'a/c', ip: '10.0.0.2', protocol: 'TCP', port: 1, result: 'error', answer: null, ms: 3, error: 'EPERM' }), 'a/b -> a/c (10.0.0.2:1/TCP): error: EPERM (3.0 ms)\n');
});

t.test('the reachability check lines: judged against what the NetworkPolicies expect', async (t) => {
  const lines = [
    { fromNode: 'node1', toNode: 'node2', expected: true, report: { from: 'dev/client', to: 'dev/web2', ip: '10.244.2.2', protocol: 'ICMP' as const, port: null, result: 'ok', answer: 'echo reply from 10.244.2.2', ms: 0.5 } },
    { fromNode: 'node1', toNode: 'node2', expected: true, report: { from: 'dev/client', to: 'dev/web2', ip: '10.244.2.2', protocol: 'TCP' as const, port: 8080, result: 'ok', answer: 'dev/web2', ms: 1 } },
    { fromNode: 'node1', expected: true, report: { from: 'dev/client', to: 'dev/web', ip: '10.96.0.2', protocol: 'TCP' as const, port: 80, result: 'refused', answer: null, ms: 1 } },
    { fromNode: 'node1', toNode: 'node3', expected: false, report: { from: 'dev/client', to: 'prod/web3', ip: '10.244.3.2', protocol: 'TCP' as const, port: 80, result: 'timed out', answer: null, ms: 500 } },
    { fromNode: 'node1', toNode: 'node3', expected: false, report: { from: 'dev/client', to: 'prod/web3', ip: '10.244.3.2', protocol: 'ICMP' as const, port: null, result: 'ok', answer: 'echo reply', ms: 0.5 } },
  ];
  const out = formatCheck(lines);
  t.match(out, /^cross-node reachability/);
  t.match(out, /node1 -> node2 +dev\/client -> dev\/web2 ICMP \(10\.244\.2\.2\): ok 0\.5 ms\n/);
  t.match(out, /dev\/client -> dev\/web2 TCP\/8080 \(10\.244\.2\.2\): ok "dev\/web2" 1\.0 ms\n/);
  t.match(out, /node1 -> service +dev\/client -> dev\/web TCP\/80 \(10\.96\.0\.2\): FAILED: refused 1\.0 ms\n/);
  t.match(out, /prod\/web3 TCP\/80 \(10\.244\.3\.2\): denied by NetworkPolicy, as expected \(timed out\)/);
  t.match(out, /prod\/web3 ICMP \(10\.244\.3\.2\): FAILED: answered, but the NetworkPolicies deny it/);
  t.same(lines.map(checkPassed), [true, true, false, true, false], 'a line passes when the kernel did what the policies say');
  const empty = { fromNode: 'node1', expected: false, report: { from: 'dev/client', to: 'dev/empty', ip: '10.96.0.9', protocol: 'TCP' as const, port: 80, result: 'refused', answer: null, ms: 1 } };
  t.match(formatCheck([empty]), /dev\/empty TCP\/80 \(10\.96\.0\.9\): no ready endpoints: refused, as expected/);
  t.ok(checkPassed(empty), 'a service without ready endpoints is expected to refuse');
  t.equal(formatCheck([]), '');
});

t.test('--dns: the pod resolv.conf the lab writes, and the names a stub resolver tries in order', async (t) => {
  t.equal(parseInspectArgs(['probe', 'a/b', 'web', '--dns']).dns, true);
  const rc = parseResolvConf(resolvConf('dev', 'cluster.local'));
  t.same(rc, { nameservers: ['169.254.20.10'], search: ['dev.svc.cluster.local', 'svc.cluster.local', 'cluster.local'], ndots: 5 });
  t.same(searchCandidates('web', rc), ['web.dev.svc.cluster.local', 'web.svc.cluster.local', 'web.cluster.local', 'web'], 'fewer dots than ndots: the search list first');
  t.same(searchCandidates('web.prod', rc).slice(0, 1), ['web.prod.dev.svc.cluster.local']);
  t.same(searchCandidates('web.prod.svc.cluster.local.', rc), ['web.prod.svc.cluster.local'], 'a trailing dot: only the name');
  t.same(searchCandidates('a.b.c.d.e.f', rc)[0], 'a.b.c.d.e.f', 'ndots or more: the name first');
  t.same(parseResolvConf('# c\nnameserver 10.0.0.10 ; x\nnameserver 10.0.0.11\ndomain x.test\noptions timeout:1 ndots:2\n'), { nameservers: ['10.0.0.10', '10.0.0.11'], search: ['x.test'], ndots: 2 });
});
