// The proxy's ruleset walked by the packet tracer: where each new connection goes.
import t from 'tap';
import { explain } from '../../src/os/nft-trace.js';
import { NODE, NODE_IP, harness, slice, svc, tcp, udp } from '../../src/proxy/fixtures.js';

const EPS = ['10.244.1.5', '10.244.2.5', '10.244.3.5'];
const POD = '10.244.1.9';

async function ready(objs: Parameters<ReturnType<typeof harness>['view']['put']>, cfg = {}) {
  const h = harness(cfg);
  h.view.put(...objs);
  await h.proxier.sync({ full: true, changes: [] });
  return h;
}

t.test('round-robin: six connections to the ClusterIP go 1,2,3,1,2,3; pod sources keep their IP', async (t) => {
  const h = await ready([svc('web', { clusterIP: '10.96.0.10' }), slice('web', EPS)]);
  const tr = h.tracer();
  const got: string[] = [];
  for (let i = 0; i < 6; i++) {
    const r = tr.connect(tcp(POD, '10.96.0.10', 80, 40000 + i), 'external');
    t.equal(r.verdict, 'accept', explain(r));
    t.equal(r.masquerade, false, 'pod in the cluster CIDR is not masqueraded');
    t.equal(r.dnat?.port, 8080);
    got.push(r.dnat!.addr);
  }
  t.same(got, [...EPS, ...EPS]);
  // From the node itself (outside the cluster CIDR): masqueraded.
  const fromNode = tr.connect(tcp(NODE_IP, '10.96.0.10', 80), 'local');
  t.equal(fromNode.masquerade, true, explain(fromNode));
  t.same(fromNode.hooks, ['output', 'postrouting']);
});

t.test('random balancing uses numgen random and reaches every endpoint', async (t) => {
  const h = await ready([svc('web', { clusterIP: '10.96.0.10' }), slice('web', EPS)], { balancing: 'random' });
  const tr = h.tracer({ seed: 7 });
  const seen = new Set(Array.from({ length: 30 }, (_, i) => tr.connect(tcp(POD, '10.96.0.10', 80, 40000 + i), 'external').dnat?.addr));
  t.same([...seen].sort(), EPS);
  t.match(h.nft.dump(), /dnat to numgen random mod 3 offset \d+ map @endpoints-tcp-\d+/);
});

t.test('session affinity pins a client to its endpoint until the timeout', async (t) => {
  const h = await ready([svc('sticky', { clusterIP: '10.96.0.13', affinity: 30 }), slice('sticky', EPS)]);
  let now = 1_000_000;
  const tr = h.tracer({ now: () => now });
  const a = tr.connect(tcp('10.244.5.1', '10.96.0.13', 80), 'external').dnat?.addr;
  for (let i = 0; i < 5; i++) t.equal(tr.connect(tcp('10.244.5.1', '10.96.0.13', 80, 41000 + i), 'external').dnat?.addr, a, 'same client, same endpoint');
  const b = tr.connect(tcp('10.244.5.2', '10.96.0.13', 80), 'external').dnat?.addr;
  t.not(b, a, 'another client is balanced to the next endpoint');
  now += 29_000;
  t.equal(tr.connect(tcp('10.244.5.1', '10.96.0.13', 80), 'external').dnat?.addr, a, 'refreshed within the timeout');
  now += 31_000;
  t.not(tr.connect(tcp('10.244.5.1', '10.96.0.13', 80), 'external').dnat?.addr, a, 'expired: re-balanced');
});

t.test('hairpin: a pod reaching itself through its service is masqueraded, others are not', async (t) => {
  const h = await ready([svc('web', { clusterIP: '10.96.0.10' }), slice('web', EPS)]);
  const tr = h.tracer();
  const self = EPS[0]!;
  const results = Array.from({ length: 3 }, (_, i) => tr.connect(tcp(self, '10.96.0.10', 80, 42000 + i), 'external'));
  const toSelf = results.find((r) => r.dnat?.addr === self)!;
  const toOther = results.find((r) => r.dnat?.addr !== self)!;
  t.equal(toSelf.masquerade, true, explain(toSelf));
  t.equal(toOther.masquerade, false, explain(toOther));
});

t.test('hairpin elements: local endpoints and endpoints of unknown node only (a remote endpoint never hairpins here)', async (t) => {
  const eps = [{ ip: '10.244.1.5', node: NODE }, { ip: '10.244.2.5', node: 'node-b' }, { ip: '10.244.3.5' }];
  const h = await ready([svc('web', { clusterIP: '10.96.0.10' }), slice('web', eps)]);
  const text = h.nft.dumpTable('ip', 'skiff-proxy');
  const hairpin = /set hairpin \{[^}]*\}/s.exec(text)?.[0] ?? '';
  t.match(hairpin, /10\.244\.1\.5 \. 10\.244\.1\.5/, 'the local endpoint');
  t.match(hairpin, /10\.244\.3\.5 \. 10\.244\.3\.5/, 'the endpoint without a nodeName');
  t.notMatch(hairpin, /10\.244\.2\.5/, 'not the remote endpoint');
  const tr = h.tracer();
  const results = Array.from({ length: 3 }, (_, i) => tr.connect(tcp('10.244.1.5', '10.96.0.10', 80, 43000 + i), 'external'));
  const toSelf = results.find((r) => r.dnat?.addr === '10.244.1.5')!;
  t.equal(toSelf.masquerade, true, explain(toSelf));
});

t.test('NodePort answers on the node IP, never on 127.0.0.1; also with fib-local mode', async (t) => {
  for (const nodeIPs of [[NODE_IP], []]) {
    const h = await ready([svc('np', { clusterIP: '10.96.0.19', type: 'NodePort', ports: [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30019 }] }), slice('np', ['10.244.1.5'])], { nodeIPs });
    const tr = h.tracer();
    const ext = tr.connect(tcp('203.0.113.7', NODE_IP, 30019), 'external');
    t.equal(ext.dnat?.addr, '10.244.1.5', explain(ext));
    t.equal(ext.masquerade, true, 'external traffic with eTP Cluster is masqueraded');
    const lo = tr.connect(tcp('127.0.0.1', '127.0.0.1', 30019), 'local');
    t.equal(lo.dnat, undefined, `not on loopback (nodeIPs ${JSON.stringify(nodeIPs)})`);
    t.equal(lo.verdict, 'accept');
    const other = tr.connect(tcp('203.0.113.7', '10.1.2.3', 30019), 'external');
    t.equal(other.dnat, undefined, 'not on addresses that are not the node\'s');
  }
});

t.test('externalTrafficPolicy Local: external clients reach local endpoints only, unmasqueraded', async (t) => {
  const objs = [
    svc('lb', { clusterIP: '10.96.0.14', type: 'LoadBalancer', eTP: 'Local', lbIPs: ['203.0.113.14'], ports: [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30014 }] }),
    slice('lb', [{ ip: '10.244.1.5', node: 'node-a' }, { ip: '10.244.2.5', node: 'node-b' }]),
  ];
  const h = await ready(objs);
  const tr = h.tracer();
  for (let i = 0; i < 4; i++) {
    for (const dst of [[NODE_IP, 30014], ['203.0.113.14', 80]] as const) {
      const r = tr.connect(tcp('198.51.100.1', dst[0], dst[1], 43000 + i), 'external');
      t.equal(r.dnat?.addr, '10.244.1.5', explain(r));
      t.equal(r.masquerade, false, 'client IP preserved');
    }
  }
  // Pods use every endpoint through the ClusterIP and through the LB IP.
  const viaCluster = new Set(Array.from({ length: 4 }, (_, i) => tr.connect(tcp(POD, '10.96.0.14', 80, 44000 + i), 'external').dnat?.addr));
  t.same([...viaCluster].sort(), ['10.244.1.5', '10.244.2.5']);
  const viaLB = new Set(Array.from({ length: 4 }, (_, i) => tr.connect(tcp(POD, '203.0.113.14', 80, 45000 + i), 'external').dnat?.addr));
  t.same([...viaLB].sort(), ['10.244.1.5', '10.244.2.5']);

  // No local endpoint: external traffic is dropped (not rejected: the service has endpoints elsewhere); the ClusterIP still works.
  const h2 = await ready([objs[0]!, slice('lb', [{ ip: '10.244.2.5', node: 'node-b' }])]);
  const tr2 = h2.tracer();
  const dropped = tr2.connect(tcp('198.51.100.1', NODE_IP, 30014), 'external');
  t.equal(dropped.verdict, 'drop', explain(dropped));
  t.equal(tr2.connect(tcp(POD, '10.96.0.14', 80), 'external').dnat?.addr, '10.244.2.5');
});

t.test('internalTrafficPolicy Local: cluster traffic to local endpoints only; none local -> drop', async (t) => {
  const h = await ready([svc('itp', { clusterIP: '10.96.0.16', iTP: 'Local' }), slice('itp', [{ ip: '10.244.1.5', node: 'node-a' }, { ip: '10.244.2.5', node: 'node-b' }])]);
  const tr = h.tracer();
  for (let i = 0; i < 4; i++) t.equal(tr.connect(tcp(POD, '10.96.0.16', 80, 46000 + i), 'external').dnat?.addr, '10.244.1.5');
  const h2 = await ready([svc('itp', { clusterIP: '10.96.0.16', iTP: 'Local' }), slice('itp', [{ ip: '10.244.2.5', node: 'node-b' }])]);
  const r = h2.tracer().connect(tcp(POD, '10.96.0.16', 80), 'external');
  t.equal(r.verdict, 'drop', explain(r));
});

t.test('endpoint conditions: ready first; none ready -> serving+terminating; never non-serving', async (t) => {
  const h = await ready([
    svc('term', { clusterIP: '10.96.0.17' }),
    slice('term', [
      { ip: '10.244.1.5', ready: false, serving: true, terminating: true },
      { ip: '10.244.2.5', ready: false, serving: false, terminating: true },
      { ip: '10.244.3.5', ready: false },
    ]),
  ]);
  const tr = h.tracer();
  for (let i = 0; i < 3; i++) t.equal(tr.connect(tcp(POD, '10.96.0.17', 80, 47000 + i), 'external').dnat?.addr, '10.244.1.5');
  const h2 = await ready([svc('term', { clusterIP: '10.96.0.17' }), slice('term', [{ ip: '10.244.1.5', ready: false, serving: true, terminating: true }, { ip: '10.244.2.5' }])]);
  const tr2 = h2.tracer();
  for (let i = 0; i < 3; i++) t.equal(tr2.connect(tcp(POD, '10.96.0.17', 80, 47000 + i), 'external').dnat?.addr, '10.244.2.5', 'a ready endpoint wins over terminating ones');
});

t.test('no endpoints: ICMP port unreachable for the ClusterIP and the NodePort, from pods and the node', async (t) => {
  const h = await ready([svc('empty', { clusterIP: '10.96.0.12', type: 'NodePort', ports: [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30012 }, { name: 'dns', protocol: 'UDP', port: 53, nodePort: 30053 }] })]);
  const tr = h.tracer();
  for (const [pkt, from] of [
    [tcp(POD, '10.96.0.12', 80), 'external'],
    [udp(POD, '10.96.0.12', 53), 'external'],
    [tcp(NODE_IP, '10.96.0.12', 80), 'local'],
    [tcp('203.0.113.7', NODE_IP, 30012), 'external'],
    [udp('203.0.113.7', NODE_IP, 30053), 'external'],
  ] as const) {
    const r = tr.connect(pkt, from);
    t.equal(r.verdict, 'reject', explain(r));
    t.equal(r.reject, 'icmp port-unreachable');
  }
  // Another port of the same ClusterIP is not the proxy's business.
  t.equal(tr.connect(tcp(POD, '10.96.0.12', 81), 'external').verdict, 'accept');
});

t.test('externalIPs, UDP, SCTP and IPv6 services', async (t) => {
  const h = await ready(
    [
      svc('dns', { clusterIP: '10.96.0.18', externalIPs: ['198.51.100.18'], ports: [{ name: 'dns', protocol: 'UDP', port: 53, targetPort: 'dns' }, { name: 'sig', protocol: 'SCTP', port: 3868 }] }),
      slice('dns', ['10.244.1.5'], { ports: [{ name: 'dns', port: 5353, protocol: 'UDP' }, { name: 'sig', port: 3868, protocol: 'SCTP' }] }),
      svc('v6', { clusterIPs: ['fd00:96::10'] }),
      slice('v6', ['fd00:244:1::5', 'fd00:244:2::5']),
    ],
    { clusterCIDR: ['10.244.0.0/16', 'fd00:244::/56'], nodeIPs: [NODE_IP, 'fd00:1::10'] },
  );
  const tr = h.tracer();
  t.same(tr.connect(udp(POD, '10.96.0.18', 53), 'external').dnat, { addr: '10.244.1.5', port: 5353 }, 'named targetPort resolved from the slice');
  const ext = tr.connect(udp('203.0.113.9', '198.51.100.18', 53), 'external');
  t.same(ext.dnat, { addr: '10.244.1.5', port: 5353 });
  t.equal(ext.masquerade, true);
  t.same(tr.connect({ ...tcp(POD, '10.96.0.18', 3868), proto: 'sctp' }, 'external').dnat, { addr: '10.244.1.5', port: 3868 });
  const v6 = [0, 1, 2, 3].map((i) => tr.connect(tcp('fd00:244:1::9', 'fd00:96::10', 80, 48000 + i), 'external').dnat?.addr);
  t.same(v6, ['fd00:244:1::5', 'fd00:244:2::5', 'fd00:244:1::5', 'fd00:244:2::5']);
});
