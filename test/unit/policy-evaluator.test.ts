// Table tests of the NetworkPolicy evaluator. The matrix scenarios follow the
// upstream e2e suite's standard model (kubernetes test/e2e/network/netpol):
// namespaces x, y, z labelled ns=<name>, pods a, b, c labelled pod=<name>, each
// serving TCP and UDP on 80 and 81 (container ports named serve-80-tcp, ...).
import t from 'tap';
import type { LabelSelector, Namespace, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer, Pod, Protocol } from '../../src/cluster/types.js';
import {
  allowedByEffective,
  ConnectionError,
  effectivePolicies,
  evaluate,
  PolicyState,
  type Connection,
  type PolicyStateInput,
} from '../../src/policy/evaluator.js';

// ---------------------------------------------------------------------------------
// Fixtures

const NSS = ['x', 'y', 'z'];
const PODS = ['a', 'b', 'c'];

function ns(name: string, labels: Record<string, string> = { ns: name }): Namespace {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } };
}

interface PodOpts {
  ip?: string;
  ips?: string[];
  labels?: Record<string, string>;
  ports?: { name?: string; containerPort: number; protocol?: Protocol }[];
  hostNetwork?: boolean;
  phase?: string;
  hostIP?: string;
}

function pod(namespace: string, name: string, o: PodOpts = {}): Pod {
  const p: Pod = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace, labels: o.labels ?? { pod: name } },
    spec: { nodeName: 'node-1', containers: [{ name: 'c', ports: o.ports ?? [] }] },
    status: { phase: o.phase ?? 'Running' },
  };
  if (o.hostNetwork) p.spec.hostNetwork = true;
  if (o.ip) p.status!.podIP = o.ip;
  if (o.ips) p.status!.podIPs = o.ips.map((ip) => ({ ip }));
  if (o.hostIP) p.status!.hostIP = o.hostIP;
  return p;
}

const SERVE_PORTS = [
  { name: 'serve-80-tcp', containerPort: 80, protocol: 'TCP' as const },
  { name: 'serve-80-udp', containerPort: 80, protocol: 'UDP' as const },
  { name: 'serve-81-tcp', containerPort: 81, protocol: 'TCP' as const },
  { name: 'serve-81-udp', containerPort: 81, protocol: 'UDP' as const },
];

const ipOf = (n: string, p: string) => `10.0.${NSS.indexOf(n) + 1}.${PODS.indexOf(p) + 1}`;
const ip6Of = (n: string, p: string) => `fd00::${NSS.indexOf(n) + 1}:${PODS.indexOf(p) + 1}`;

function model(): { namespaces: Namespace[]; pods: Pod[] } {
  return {
    namespaces: NSS.map((n) => ns(n)),
    pods: NSS.flatMap((n) => PODS.map((p) => pod(n, p, { ips: [ipOf(n, p), ip6Of(n, p)], ports: SERVE_PORTS }))),
  };
}

function np(namespace: string, name: string, spec: Partial<NetworkPolicy['spec']>): NetworkPolicy {
  return { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name, namespace }, spec: { podSelector: {}, ...spec } };
}

const podSel = (labels: Record<string, string>): LabelSelector => ({ matchLabels: labels });
const nsName = (name: string): LabelSelector => ({ matchLabels: { 'kubernetes.io/metadata.name': name } });

function withPolicies(...policies: NetworkPolicy[]): PolicyState {
  return PolicyState.from({ ...model(), policies });
}

// Reachability matrices, printed like the upstream truth tables.
const ALL = NSS.flatMap((n) => PODS.map((p) => `${n}/${p}`));
type Pred = (key: string) => boolean;
const any: Pred = () => true;
const inNs = (n: string): Pred => (k) => k.startsWith(`${n}/`);
const is = (k0: string): Pred => (k) => k === k0;

class Reach {
  private m = new Map<string, boolean>();
  constructor(def = true) {
    for (const f of ALL) for (const to of ALL) this.m.set(`${f}>${to}`, def);
  }
  expect(from: Pred, to: Pred, v: boolean): this {
    for (const f of ALL) for (const d of ALL) if (from(f) && to(d)) this.m.set(`${f}>${d}`, v);
    return this;
  }
  table(): string {
    const rows = [`     ${ALL.map((k) => k.padEnd(4)).join('')}`];
    for (const f of ALL) rows.push(`${f.padEnd(5)}${ALL.map((d) => (this.m.get(`${f}>${d}`) ? '.' : 'X').padEnd(4)).join('')}`);
    return rows.join('\n');
  }
  static of(state: PolicyState, port: number, protocol: Protocol = 'TCP', family?: 4 | 6): Reach {
    const r = new Reach();
    for (const f of ALL) {
      for (const d of ALL) {
        const conn: Connection = { from: { pod: f }, to: { pod: d }, port, protocol };
        if (family) conn.family = family;
        r.m.set(`${f}>${d}`, evaluate(state, conn).allowed);
      }
    }
    return r;
  }
}

const ok = (state: PolicyState | PolicyStateInput, conn: Connection) => evaluate(state, conn).allowed;
const tcp = (from: string, to: string, port = 80): Connection => ({
  from: from.includes('/') ? { pod: from } : { ip: from },
  to: to.includes('/') ? { pod: to } : { ip: to },
  port,
});
const udp = (from: string, to: string, port = 80): Connection => ({ ...tcp(from, to, port), protocol: 'UDP' });

const rule = (from?: NetworkPolicyPeer[], ports?: NetworkPolicyIngressRule['ports']): NetworkPolicyIngressRule => ({ ...(from ? { from } : {}), ...(ports ? { ports } : {}) });
const erule = (to?: NetworkPolicyPeer[], ports?: NetworkPolicyEgressRule['ports']): NetworkPolicyEgressRule => ({ ...(to ? { to } : {}), ...(ports ? { ports } : {}) });

// Every state a test builds is also checked against the normalized form.
const checkedStates: PolicyState[] = [];
function track(s: PolicyState): PolicyState {
  checkedStates.push(s);
  return s;
}

// ---------------------------------------------------------------------------------
// Upstream e2e scenarios: full 9×9 matrices

t.test('e2e matrices', async (t) => {
  const scenarios: [string, NetworkPolicy[], (r: Reach) => Reach, number?, Protocol?][] = [
    ['default-deny-ingress', [np('x', 'deny-ingress', { ingress: [] })], (r) => r.expect(any, inNs('x'), false)],
    [
      'default-deny-all',
      [np('x', 'deny-all', { policyTypes: ['Ingress', 'Egress'] })],
      (r) => r.expect(any, inNs('x'), false).expect(inNs('x'), any, false),
    ],
    [
      'allow from pods in the server namespace by podSelector',
      [np('x', 'x-a-allows-x-b', { podSelector: podSel({ pod: 'a' }), ingress: [rule([{ podSelector: podSel({ pod: 'b' }) }])] })],
      (r) => r.expect(any, is('x/a'), false).expect(is('x/b'), is('x/a'), true),
    ],
    [
      'allow ingress for a target on top of deny-all (pod {} + ns {})',
      [
        np('x', 'deny-all', { ingress: [] }),
        np('x', 'allow-all-to-a', { podSelector: podSel({ pod: 'a' }), ingress: [rule([{ podSelector: {}, namespaceSelector: {} }])] }),
      ],
      (r) => r.expect(any, inNs('x'), false).expect(any, is('x/a'), true),
    ],
    [
      'allow from all namespaces (namespaceSelector {})',
      [np('x', 'allow-from-another-ns', { podSelector: podSel({ pod: 'a' }), ingress: [rule([{ namespaceSelector: {} }])] })],
      (r) => r,
    ],
    [
      'allow only from namespace y by kubernetes.io/metadata.name',
      [np('x', 'allow-client-a-via-ns-selector', { podSelector: podSel({ pod: 'a' }), ingress: [rule([{ namespaceSelector: nsName('y') }])] })],
      (r) => r.expect(inNs('x'), is('x/a'), false).expect(inNs('z'), is('x/a'), false),
    ],
    [
      'podSelector with matchExpressions In',
      [np('x', 'x-a-allows-x-b', { podSelector: podSel({ pod: 'a' }), ingress: [rule([{ podSelector: { matchExpressions: [{ key: 'pod', operator: 'In', values: ['b'] }] } }])] })],
      (r) => r.expect(any, is('x/a'), false).expect(is('x/b'), is('x/a'), true),
    ],
    [
      'namespaceSelector with matchExpressions In',
      [np('x', 'allow-ns-y', { podSelector: podSel({ pod: 'a' }), ingress: [rule([{ namespaceSelector: { matchExpressions: [{ key: 'ns', operator: 'In', values: ['y'] }] } }])] })],
      (r) => r.expect(inNs('x'), is('x/a'), false).expect(inNs('z'), is('x/a'), false),
    ],
    [
      'podSelector OR namespaceSelector (separate peers)',
      [
        np('x', 'or', {
          podSelector: podSel({ pod: 'a' }),
          ingress: [rule([{ namespaceSelector: { matchExpressions: [{ key: 'ns', operator: 'NotIn', values: ['x'] }] } }, { podSelector: podSel({ pod: 'b' }) }])],
        }),
      ],
      (r) => r.expect(is('x/a'), is('x/a'), false).expect(is('x/c'), is('x/a'), false),
    ],
    [
      'podSelector AND namespaceSelector (one peer)',
      [
        np('x', 'and', {
          podSelector: podSel({ pod: 'a' }),
          ingress: [rule([{ namespaceSelector: { matchExpressions: [{ key: 'ns', operator: 'NotIn', values: ['x'] }] }, podSelector: podSel({ pod: 'b' }) }])],
        }),
      ],
      (r) => r.expect(any, is('x/a'), false).expect(is('y/b'), is('x/a'), true).expect(is('z/b'), is('x/a'), true),
    ],
    [
      'ingress on port 81 only: port 80 denied',
      [np('x', 'allow-81', { podSelector: podSel({ pod: 'a' }), ingress: [rule([{ namespaceSelector: nsName('y') }], [{ port: 81 }])] })],
      (r) => r.expect(any, is('x/a'), false),
    ],
    [
      'ingress on port 81 only: port 81 allowed from y',
      [np('x', 'allow-81', { podSelector: podSel({ pod: 'a' }), ingress: [rule([{ namespaceSelector: nsName('y') }], [{ port: 81 }])] })],
      (r) => r.expect(any, is('x/a'), false).expect(inNs('y'), is('x/a'), true),
      81,
    ],
    [
      'named port serve-81-tcp: port 80 denied',
      [np('x', 'named', { podSelector: podSel({ pod: 'a' }), ingress: [rule([{ namespaceSelector: nsName('y') }], [{ port: 'serve-81-tcp' }])] })],
      (r) => r.expect(any, is('x/a'), false),
      80,
    ],
    [
      'named port serve-81-tcp: port 81 allowed from y',
      [np('x', 'named', { podSelector: podSel({ pod: 'a' }), ingress: [rule([{ namespaceSelector: nsName('y') }], [{ port: 'serve-81-tcp' }])] })],
      (r) => r.expect(any, is('x/a'), false).expect(inNs('y'), is('x/a'), true),
      81,
    ],
    [
      'named TCP port does not match UDP traffic',
      [np('x', 'named', { podSelector: podSel({ pod: 'a' }), ingress: [rule(undefined, [{ port: 'serve-81-tcp' }])] })],
      (r) => r.expect(any, is('x/a'), false),
      81,
      'UDP',
    ],
    [
      'UDP-only rule denies TCP',
      [np('x', 'udp-only', { ingress: [rule(undefined, [{ protocol: 'UDP', port: 80 }])] })],
      (r) => r.expect(any, inNs('x'), false),
    ],
    [
      'UDP-only rule allows UDP',
      [np('x', 'udp-only', { ingress: [rule(undefined, [{ protocol: 'UDP', port: 80 }])] })],
      (r) => r,
      80,
      'UDP',
    ],
    [
      'egress deny-all in x',
      [np('x', 'deny-egress', { policyTypes: ['Egress'] })],
      (r) => r.expect(inNs('x'), any, false),
    ],
    [
      'egress to namespace y only',
      [np('x', 'egress-y', { podSelector: podSel({ pod: 'a' }), policyTypes: ['Egress'], egress: [erule([{ namespaceSelector: nsName('y') }])] })],
      (r) => r.expect(is('x/a'), any, false).expect(is('x/a'), inNs('y'), true),
    ],
    [
      'policyTypes [Egress] with ingress rules: ingress not isolated',
      [np('x', 'egress-only', { policyTypes: ['Egress'], ingress: [], egress: [erule()] })],
      (r) => r,
    ],
    [
      'multiple policies: union of allows',
      [
        np('x', 'from-y', { podSelector: podSel({ pod: 'a' }), ingress: [rule([{ namespaceSelector: nsName('y') }])] }),
        np('x', 'from-z-b', { podSelector: podSel({ pod: 'a' }), ingress: [rule([{ namespaceSelector: nsName('z'), podSelector: podSel({ pod: 'b' }) }])] }),
      ],
      (r) => r.expect(any, is('x/a'), false).expect(inNs('y'), is('x/a'), true).expect(is('z/b'), is('x/a'), true),
    ],
    [
      'invalid policy skipped, valid one unaffected',
      [
        np('x', 'bad', { podSelector: {}, ingress: [rule([{ ipBlock: { cidr: '10.0.0.0/16', except: ['10.1.0.0/16'] } }])] }),
        np('x', 'good', { podSelector: podSel({ pod: 'a' }), ingress: [rule([{ podSelector: podSel({ pod: 'b' }) }])] }),
      ],
      (r) => r.expect(any, is('x/a'), false).expect(is('x/b'), is('x/a'), true),
    ],
    [
      'ipBlock with except matches pod IPs (ingress)',
      [np('x', 'cidr', { podSelector: podSel({ pod: 'a' }), ingress: [rule([{ ipBlock: { cidr: '10.0.2.0/24', except: ['10.0.2.2/32'] } }])] })],
      (r) => r.expect(any, is('x/a'), false).expect(inNs('y'), is('x/a'), true).expect(is('y/b'), is('x/a'), false),
    ],
    [
      'egress ipBlock with except to pod IPs',
      [np('x', 'egress-cidr', { podSelector: podSel({ pod: 'a' }), policyTypes: ['Egress'], egress: [erule([{ ipBlock: { cidr: '10.0.0.0/16', except: ['10.0.3.0/24'] } }])] })],
      (r) => r.expect(is('x/a'), inNs('z'), false),
    ],
    [
      'endPort range 80-81 allows 81',
      [np('x', 'range', { ingress: [rule(undefined, [{ port: 80, endPort: 81 }])] })],
      (r) => r,
      81,
    ],
    [
      'endPort range 81-90 excludes 80',
      [np('x', 'range', { ingress: [rule(undefined, [{ port: 81, endPort: 90 }])] })],
      (r) => r.expect(any, inNs('x'), false),
    ],
    [
      'SCTP rule: TCP denied',
      [np('x', 'sctp', { ingress: [rule(undefined, [{ protocol: 'SCTP', port: 80 }])] })],
      (r) => r.expect(any, inNs('x'), false),
    ],
    [
      'SCTP rule: SCTP allowed',
      [np('x', 'sctp', { ingress: [rule(undefined, [{ protocol: 'SCTP', port: 80 }])] })],
      (r) => r,
      80,
      'SCTP',
    ],
    [
      'ingress: [{}] allows everything',
      [np('x', 'allow-all', { ingress: [{}] })],
      (r) => r,
    ],
    [
      'from: [] and ports: [] match everything',
      [np('x', 'empty-lists', { ingress: [{ from: [], ports: [] }] })],
      (r) => r,
    ],
    [
      'port without number: every port of the protocol',
      [np('x', 'all-tcp', { ingress: [rule(undefined, [{ protocol: 'TCP' }])] })],
      (r) => r,
      81,
    ],
    [
      'policy in y does not affect x',
      [np('y', 'deny', { podSelector: podSel({ pod: 'a' }) })],
      (r) => r.expect(any, is('y/a'), false),
    ],
    [
      'podSelector alone means the policy namespace (egress)',
      [np('y', 'egress-to-b', { policyTypes: ['Egress'], egress: [erule([{ podSelector: podSel({ pod: 'b' }) }])] })],
      (r) => r.expect(inNs('y'), any, false).expect(inNs('y'), is('y/b'), true),
    ],
  ];
  for (const [name, policies, build, port, proto] of scenarios) {
    const state = track(withPolicies(...policies));
    t.equal(Reach.of(state, port ?? 80, proto ?? 'TCP').table(), build(new Reach()).table(), name);
  }
});

t.test('IPv6: same verdicts over IPv6 addresses, ipBlock per family', async (t) => {
  const state = track(
    withPolicies(np('x', 'v6-cidr', { podSelector: podSel({ pod: 'a' }), ingress: [rule([{ ipBlock: { cidr: 'fd00::2:0/112', except: ['fd00::2:2/128'] } }])] })),
  );
  t.equal(Reach.of(state, 80, 'TCP', 6).table(), new Reach().expect(any, is('x/a'), false).expect(inNs('y'), is('x/a'), true).expect(is('y/b'), is('x/a'), false).table());
  // Over IPv4 the IPv6 block matches nothing.
  t.equal(Reach.of(state, 80, 'TCP', 4).table(), new Reach().expect(any, is('x/a'), false).table());
  t.ok(ok(state, { from: { ip: 'fd00::2:1' }, to: { ip: 'fd00::1:1' }, port: 80 }), 'addresses given as IPv6 text resolve to pods');
  t.ok(ok(state, { from: { ip: 'fd00:0::2:1' }, to: { pod: 'x/a' }, port: 80 }), 'non-canonical IPv6 text resolves');
  t.notOk(ok(state, { from: { ip: 'fd00::3:1' }, to: { pod: 'x/a' }, port: 80 }));
});

// ---------------------------------------------------------------------------------
// Point cases

t.test('DNS: egress deny-all with UDP 53 to kube-system allowed', async (t) => {
  const base = model();
  const state = track(
    PolicyState.from({
      namespaces: [...base.namespaces, ns('kube-system', {})],
      pods: [...base.pods, pod('kube-system', 'coredns', { ip: '10.0.9.10', labels: { 'k8s-app': 'kube-dns' }, ports: [{ name: 'dns', containerPort: 53, protocol: 'UDP' }, { name: 'dns-tcp', containerPort: 53 }] })],
      policies: [
        np('x', 'default-deny-egress', { policyTypes: ['Egress'] }),
        np('x', 'allow-dns', {
          policyTypes: ['Egress'],
          egress: [erule([{ namespaceSelector: nsName('kube-system'), podSelector: podSel({ 'k8s-app': 'kube-dns' }) }], [{ protocol: 'UDP', port: 53 }, { protocol: 'TCP', port: 53 }])],
        }),
      ],
    }),
  );
  t.ok(ok(state, udp('x/a', 'kube-system/coredns', 53)), 'DNS over UDP allowed');
  t.ok(ok(state, tcp('x/a', 'kube-system/coredns', 53)), 'DNS over TCP allowed');
  t.notOk(ok(state, udp('x/a', 'kube-system/coredns', 54)), 'other port denied');
  t.notOk(ok(state, tcp('x/a', 'y/a', 80)), 'everything else denied');
  t.notOk(ok(state, udp('x/a', '8.8.8.8', 53)), 'external DNS denied: the rule names kube-system pods only');
  t.ok(ok(state, tcp('y/a', 'x/a', 80)), 'ingress to x untouched');
  const v = evaluate(state, udp('x/a', 'kube-system/coredns', 53));
  t.same(v.egress.allowedBy, { policy: 'x/allow-dns', ruleIndex: 0, peerIndex: 0, portIndex: 0 });
  t.same(v.egress.policies, ['x/allow-dns', 'x/default-deny-egress']);
});

t.test('NotIn / DoesNotExist select objects that lack the key', async (t) => {
  const state = track(
    PolicyState.from({
      namespaces: [ns('x'), ns('y', {}), ns('z', { env: 'prod' })],
      pods: [
        pod('x', 'server', { ip: '10.0.1.1' }),
        pod('y', 'nolabels', { ip: '10.0.2.1', labels: {} }),
        pod('y', 'dev', { ip: '10.0.2.2', labels: { env: 'dev' } }),
        pod('z', 'prod', { ip: '10.0.3.1', labels: { env: 'prod' } }),
      ],
      policies: [
        np('x', 'not-prod-ns', {
          podSelector: podSel({ pod: 'server' }),
          ingress: [rule([{ namespaceSelector: { matchExpressions: [{ key: 'env', operator: 'NotIn', values: ['prod'] }] }, podSelector: { matchExpressions: [{ key: 'env', operator: 'DoesNotExist' }] } }])],
        }),
      ],
    }),
  );
  t.ok(ok(state, tcp('y/nolabels', 'x/server')), 'namespace without env (NotIn) and pod without env (DoesNotExist)');
  t.notOk(ok(state, tcp('y/dev', 'x/server')), 'pod has env: DoesNotExist fails');
  t.notOk(ok(state, tcp('z/prod', 'x/server')), 'namespace env=prod: NotIn fails');
});

t.test('named ports resolve per destination pod', async (t) => {
  // Two pods with the same port name on different numbers.
  const state = track(
    PolicyState.from({
      namespaces: [ns('x')],
      pods: [
        pod('x', 'one', { ip: '10.0.1.1', labels: { app: 'web', pod: 'one' }, ports: [{ name: 'http', containerPort: 8080 }] }),
        pod('x', 'two', { ip: '10.0.1.2', labels: { app: 'web', pod: 'two' }, ports: [{ name: 'http', containerPort: 9090 }] }),
        pod('x', 'three', { ip: '10.0.1.3', labels: { app: 'web', pod: 'three' }, ports: [{ name: 'metrics', containerPort: 8080 }] }),
        pod('x', 'client', { ip: '10.0.1.9', labels: { app: 'client' } }),
      ],
      policies: [
        np('x', 'web-http', { podSelector: podSel({ app: 'web' }), ingress: [rule(undefined, [{ port: 'http' }])] }),
        np('x', 'client-egress-http', { podSelector: podSel({ app: 'client' }), policyTypes: ['Egress'], egress: [erule(undefined, [{ port: 'http' }])] }),
      ],
    }),
  );
  t.ok(ok(state, tcp('x/client', 'x/one', 8080)), 'one: http=8080');
  t.notOk(ok(state, tcp('x/client', 'x/one', 9090)), 'one: 9090 is not its http');
  t.ok(ok(state, tcp('x/client', 'x/two', 9090)), 'two: http=9090');
  t.notOk(ok(state, tcp('x/client', 'x/two', 8080)), 'two: 8080 is not its http');
  t.notOk(ok(state, tcp('x/client', 'x/three', 8080)), 'three has no http port: nothing matches, still isolated');
  t.equal(evaluate(state, tcp('x/client', 'x/three', 8080)).ingress.isolated, true);
  t.notOk(ok(state, tcp('x/client', '10.9.9.9', 8080)), 'egress named port to a non-pod IP matches nothing');
  t.ok(ok(state, tcp('x/client', '10.0.1.2', 9090)), 'egress named port to a pod IP resolves against that pod');
  t.notOk(ok(state, udp('x/client', 'x/one', 8080)), 'named port is TCP (protocol default): UDP does not match');
  const v = evaluate(state, tcp('x/client', 'x/three', 8080));
  t.ok(v.reasons.some((r) => r.includes('x/three has no TCP container port named "http"')), 'the reason says why');
});

t.test('named port with protocol UDP', async (t) => {
  const state = track(
    PolicyState.from({
      pods: [pod('x', 'dns', { ip: '10.0.1.1', ports: [{ name: 'dns', containerPort: 53, protocol: 'UDP' }, { name: 'dns-tcp', containerPort: 53 }] }), pod('x', 'c', { ip: '10.0.1.2' })],
      policies: [np('x', 'dns', { podSelector: podSel({ pod: 'dns' }), ingress: [rule(undefined, [{ protocol: 'UDP', port: 'dns' }])] })],
    }),
  );
  t.ok(ok(state, udp('x/c', 'x/dns', 53)));
  t.notOk(ok(state, tcp('x/c', 'x/dns', 53)), 'the UDP name does not open TCP');
});

t.test('policyTypes defaulting', async (t) => {
  const egressRules = np('x', 'p', { podSelector: podSel({ pod: 'a' }), egress: [erule([{ namespaceSelector: nsName('y') }])] });
  const s1 = track(withPolicies(egressRules));
  t.notOk(ok(s1, tcp('x/b', 'x/a')), 'absent policyTypes: Ingress always (no ingress rules: deny)');
  t.notOk(ok(s1, tcp('x/a', 'z/a')), 'absent policyTypes + egress rules: Egress too');
  t.ok(ok(s1, tcp('x/a', 'y/a')));
  const s2 = track(withPolicies(np('x', 'p', { podSelector: podSel({ pod: 'a' }), policyTypes: ['Ingress'], egress: [erule([{ namespaceSelector: nsName('y') }])] })));
  t.ok(ok(s2, tcp('x/a', 'z/a')), 'policyTypes [Ingress]: egress rules ignored, egress not isolated');
  t.ok(evaluate(s2, tcp('x/a', 'z/a')).reasons.some((r) => r.includes('ignored: policyTypes does not include "Egress"')) === false, 'warning only shown for isolating policies in that connection');
  const s3 = track(withPolicies(np('x', 'p', { podSelector: podSel({ pod: 'a' }), egress: [] })));
  t.ok(ok(s3, tcp('x/a', 'z/a')), 'egress: [] without policyTypes does not isolate egress');
  const s4 = track(withPolicies(np('x', 'p', { podSelector: podSel({ pod: 'a' }), policyTypes: [], egress: [erule()] })));
  t.notOk(ok(s4, tcp('y/a', 'x/a')), 'policyTypes: [] is defaulted like absent');
  t.ok(ok(s4, tcp('x/a', 'z/a')), 'egress [{}] allows all');
  t.equal(evaluate(s4, tcp('x/a', 'z/a')).egress.isolated, true);
});

t.test('both directions must allow', async (t) => {
  const state = track(
    withPolicies(
      np('x', 'egress-to-y', { podSelector: podSel({ pod: 'a' }), policyTypes: ['Egress'], egress: [erule([{ namespaceSelector: nsName('y') }])] }),
      np('y', 'ingress-from-x-b', { podSelector: podSel({ pod: 'a' }), ingress: [rule([{ namespaceSelector: nsName('x'), podSelector: podSel({ pod: 'b' }) }])] }),
    ),
  );
  const v = evaluate(state, tcp('x/a', 'y/a'));
  t.equal(v.allowed, false);
  t.equal(v.egress.allowed, true, 'x/a may send to y');
  t.equal(v.ingress.allowed, false, 'but y/a only accepts x/b');
  t.ok(ok(state, tcp('x/a', 'y/b')), 'y/b is not isolated');
  t.notOk(ok(state, tcp('x/a', 'z/a')), 'x/a egress forbids z');
  t.ok(ok(state, tcp('x/b', 'y/a')));
});

t.test('non-pod endpoints', async (t) => {
  const state = track(
    withPolicies(
      np('x', 'from-cidr', { podSelector: podSel({ pod: 'a' }), ingress: [rule([{ ipBlock: { cidr: '192.0.2.0/24', except: ['192.0.2.128/25'] } }])] }),
      np('x', 'egress-cidr', { podSelector: podSel({ pod: 'b' }), policyTypes: ['Egress'], egress: [erule([{ ipBlock: { cidr: '0.0.0.0/0', except: ['169.254.169.254/32'] } }])] }),
    ),
  );
  t.ok(ok(state, tcp('192.0.2.10', 'x/a')), 'external source in the block');
  t.notOk(ok(state, tcp('192.0.2.200', 'x/a')), 'external source in except');
  t.notOk(ok(state, tcp('198.51.100.1', 'x/a')), 'external source outside the block');
  t.ok(ok(state, tcp('198.51.100.1', 'x/b')), 'x/b is not isolated for ingress');
  t.ok(ok(state, tcp('x/b', '93.184.216.34', 443)), 'egress to the internet');
  t.notOk(ok(state, tcp('x/b', '169.254.169.254')), 'metadata endpoint excepted');
  t.ok(ok(state, tcp('x/b', 'y/a')), 'pod IPs are inside 0.0.0.0/0');
  const v = evaluate(state, tcp('192.0.2.10', '203.0.113.1'));
  t.equal(v.allowed, true, 'neither end is a pod: nothing applies');
  t.notOk(v.egress.subject);
  t.notOk(v.ingress.subject);
  t.match(evaluate(state, tcp('192.0.2.10', 'x/a')).reasons.join('\n'), /source 192\.0\.2\.10 is not a pod in the cluster/);
});

t.test('traffic from the pod\'s own node is always allowed', async (t) => {
  const state = track(withPolicies(np('x', 'deny', {})));
  const conn: Connection = { from: { ip: '172.18.0.2' }, to: { pod: 'x/a' }, port: 80, fromNode: true };
  const v = evaluate(state, conn);
  t.equal(v.allowed, true);
  t.equal(v.ingress.isolated, true);
  t.same(v.ingress.policies, ['x/deny']);
  t.notOk(ok(state, { ...conn, fromNode: false }), 'the same address from elsewhere is denied');
});

t.test('hostNetwork and completed pods', async (t) => {
  const state = track(
    PolicyState.from({
      pods: [
        pod('x', 'agent', { ip: '172.18.0.2', hostNetwork: true, labels: { pod: 'agent' } }),
        pod('x', 'web', { ip: '10.0.1.1', labels: { pod: 'web' } }),
        pod('x', 'done', { ip: '10.0.1.2', labels: { pod: 'done' }, phase: 'Succeeded' }),
        pod('x', 'reuser', { ip: '10.0.1.2', labels: { pod: 'reuser' } }),
      ],
      policies: [np('x', 'deny-all', { policyTypes: ['Ingress', 'Egress'], ingress: [rule([{ podSelector: podSel({ pod: 'agent' }) }])] })],
    }),
  );
  const v = evaluate(state, tcp('x/web', 'x/agent'));
  t.equal(v.ingress.allowed, true, 'NetworkPolicy does not isolate hostNetwork pods');
  t.equal(v.egress.allowed, false, 'but x/web egress is denied');
  t.notOk(ok(state, tcp('x/agent', 'x/web')), 'podSelector does not match hostNetwork pods as peers');
  t.equal(state.podByIp('10.0.1.2')?.key, 'x/reuser', 'a completed pod\'s IP belongs to the new pod');
  t.equal(state.pod('x/done'), undefined);
});

t.test('label changes change verdicts without any policy change', async (t) => {
  const policy = np('x', 'from-team-a', { ingress: [rule([{ namespaceSelector: { matchLabels: { team: 'a' } } }])] });
  const before = track(PolicyState.from({ ...model(), policies: [policy] }));
  const m = model();
  m.namespaces[1] = ns('y', { ns: 'y', team: 'a' });
  const after = track(PolicyState.from({ ...m, policies: [policy] }));
  t.notOk(ok(before, tcp('y/a', 'x/a')));
  t.ok(ok(after, tcp('y/a', 'x/a')), 'labelling namespace y opens it');
  m.pods[0]!.metadata.labels = { pod: 'renamed' };
  const unselected = track(PolicyState.from({ ...m, policies: [np('x', 'a-only', { podSelector: podSel({ pod: 'a' }) })] }));
  t.ok(ok(unselected, tcp('y/a', 'x/a')), 'relabelled pod no longer selected');
});

t.test('namespaces are implicit and always carry kubernetes.io/metadata.name', async (t) => {
  const state = PolicyState.from({
    namespaces: [ns('x', { 'kubernetes.io/metadata.name': 'spoofed', team: 'a' })],
    pods: [pod('x', 'a', { ip: '10.0.1.1' }), pod('undeclared', 'b', { ip: '10.0.2.1' })],
  });
  t.same(state.namespaceLabels('x'), { 'kubernetes.io/metadata.name': 'x', team: 'a' });
  t.same(state.namespaceLabels('undeclared'), { 'kubernetes.io/metadata.name': 'undeclared' });
  const s2 = track(PolicyState.from({ pods: [pod('x', 'a', { ip: '10.0.1.1' }), pod('undeclared', 'b', { ip: '10.0.2.1' })], policies: [np('x', 'p', { ingress: [rule([{ namespaceSelector: nsName('undeclared') }])] })] }));
  t.ok(ok(s2, tcp('undeclared/b', 'x/a')));
});

t.test('invalid policies are skipped with their reasons', async (t) => {
  const state = withPolicies(
    np('x', 'bad-endport', { ingress: [rule(undefined, [{ port: 90, endPort: 80 }])] }),
    np('x', 'bad-op', { podSelector: { matchExpressions: [{ key: 'pod', operator: 'Is' as 'In', values: ['a'] }] } }),
  );
  t.equal(state.policies.length, 0);
  t.same(state.invalid.map((p) => p.key), ['x/bad-endport', 'x/bad-op']);
  const v = evaluate(state, tcp('y/a', 'x/a'));
  t.equal(v.allowed, true, 'an invalid deny-all isolates nothing');
  t.ok(v.reasons.includes('note: ignored invalid policy x/bad-endport: spec.ingress[0].ports[0].endPort: 80 must be greater than or equal to port 90'));
});

t.test('explanations', async (t) => {
  const state = withPolicies(
    np('x', 'deny', { podSelector: podSel({ pod: 'a' }) }),
    np('x', 'from-y-b', { podSelector: podSel({ pod: 'a' }), ingress: [rule([{ namespaceSelector: nsName('y'), podSelector: podSel({ pod: 'b' }) }], [{ port: 80 }])] }),
  );
  const denied = evaluate(state, tcp('z/b', 'x/a', 81));
  t.equal(denied.allowed, false);
  t.same(denied.ingress, { subject: 'x/a', isolated: true, policies: ['x/deny', 'x/from-y-b'], allowed: false });
  t.same(denied.reasons.filter((r) => r.startsWith('ingress')), [
    'ingress: x/a is isolated for ingress by x/deny, x/from-y-b',
    'ingress: denied: no ingress rule of x/deny, x/from-y-b allows z/b (10.0.3.2) on TCP/81',
    'ingress:   x/deny has no ingress rules (it allows no ingress traffic)',
    'ingress:   x/from-y-b ingress[0]: z/b (10.0.3.2) matches none of from[0] (pods pod=b in namespaces kubernetes.io/metadata.name=y); TCP/81 matches none of ports[0] TCP/80',
  ]);
  const allowed = evaluate(state, tcp('y/b', 'x/a', 80));
  t.equal(allowed.allowed, true);
  t.same(allowed.ingress.allowedBy, { policy: 'x/from-y-b', ruleIndex: 0, peerIndex: 0, portIndex: 0 });
  t.ok(allowed.reasons.includes('ingress: allowed by x/from-y-b ingress[0]: y/b (10.0.2.2) matches from[0] pods pod=b in namespaces kubernetes.io/metadata.name=y; TCP/80 matches ports[0] TCP/80'));
  t.ok(allowed.reasons.includes('egress: y/b is not isolated for egress (no policy in namespace y selects it with Egress in policyTypes): allowed'));
  const self = evaluate(state, tcp('x/a', 'x/a'));
  t.ok(self.reasons.some((r) => r.startsWith('note: source and destination are the same pod')));
});

t.test('connection errors', async (t) => {
  const state = withPolicies();
  t.throws(() => evaluate(state, tcp('x/nope', 'x/a')), ConnectionError);
  t.throws(() => evaluate(state, tcp('x/a', 'x/a', 0)), /port: 0 is not a valid port/);
  t.throws(() => evaluate(state, { ...tcp('x/a', 'x/b'), protocol: 'ICMP' as Protocol }), /unsupported protocol "ICMP"/);
  t.throws(() => evaluate(state, { from: { ip: '10.0.0.1' }, to: { ip: 'fd00::1' }, port: 80 }), /different address families/);
  t.throws(() => evaluate(state, { from: { ip: 'not-an-ip' }, to: { pod: 'x/a' }, port: 80 }), /"not-an-ip" is not an IP address/);
});

t.test('raw input works as well as a prebuilt state', async (t) => {
  const input = { ...model(), policies: [np('x', 'deny', {})] };
  t.notOk(ok(input, tcp('y/a', 'x/a')));
  const reader = {
    list: ((kind: string) => (kind === 'Namespace' ? input.namespaces : kind === 'Pod' ? input.pods : kind === 'NetworkPolicy' ? input.policies : [])) as never,
  };
  t.notOk(ok(PolicyState.fromReader(reader), tcp('y/a', 'x/a')), 'fromReader');
});

t.test('performance: a 50-pod N×N matrix with 30 policies is fast', async (t) => {
  const namespaces = ['p', 'q', 'r', 's', 't'].map((n) => ns(n, { team: n }));
  const pods: Pod[] = [];
  namespaces.forEach((n, i) => {
    for (let j = 0; j < 10; j++) pods.push(pod(n.metadata.name, `pod${j}`, { ip: `10.1.${i}.${j + 1}`, labels: { app: `app${j % 3}`, tier: j % 2 ? 'web' : 'db' }, ports: SERVE_PORTS }));
  });
  const policies: NetworkPolicy[] = [];
  for (let k = 0; k < 30; k++) {
    const n = namespaces[k % 5]!.metadata.name;
    policies.push(np(n, `p${k}`, {
      podSelector: podSel({ app: `app${k % 3}` }),
      ingress: [rule([{ namespaceSelector: { matchExpressions: [{ key: 'team', operator: 'NotIn', values: ['q'] }] }, podSelector: podSel({ tier: 'web' }) }, { ipBlock: { cidr: '10.1.0.0/16', except: ['10.1.4.0/24'] } }], [{ port: 'serve-80-tcp' }, { port: 81, endPort: 90 }])],
    }));
  }
  const start = performance.now();
  const state = PolicyState.from({ namespaces, pods, policies });
  let allowed = 0;
  for (const f of pods) for (const d of pods) if (evaluate(state, tcp(`${f.metadata.namespace}/${f.metadata.name}`, `${d.metadata.namespace}/${d.metadata.name}`)).allowed) allowed++;
  const ms = performance.now() - start;
  t.ok(allowed > 0 && allowed < 2500, `mixed verdicts (${allowed} of 2500 allowed)`);
  t.ok(ms < 1500, `2500 evaluations took ${ms.toFixed(0)} ms`);
  track(state);
});

// ---------------------------------------------------------------------------------
// The normalized form agrees with the evaluator on every state above.

t.test('effectivePolicies agrees with evaluate on every case', async (t) => {
  const probes: [Protocol, number][] = [['TCP', 80], ['TCP', 81], ['UDP', 80], ['UDP', 53], ['TCP', 53], ['SCTP', 80], ['TCP', 8080], ['TCP', 9090], ['TCP', 85]];
  const externals = ['192.0.2.10', '192.0.2.200', '169.254.169.254', '8.8.8.8'];
  let checked = 0;
  let mismatches: string[] = [];
  for (const state of checkedStates) {
    const eff = effectivePolicies(state);
    const podKeys = [...state.pods.keys()];
    const ends = [...podKeys.map((k) => ({ pod: k })), ...externals.map((ip) => ({ ip }))];
    // The big performance state gets fewer probes (it is there for its selector mix).
    const big = podKeys.length > 20;
    for (const from of ends) {
      for (const to of ends) {
        for (const [protocol, port] of big ? probes.filter(([, p]) => p === 80 || p === 85) : probes) {
          for (const family of big ? [4 as const] : ([4, 6] as const)) {
            if (('ip' in from || 'ip' in to) && family === 6) continue;
            const conn: Connection = { from, to, protocol, port };
            if (!('ip' in from || 'ip' in to)) conn.family = family;
            const want = evaluate(state, conn, { reasons: false }).allowed;
            const got = allowedByEffective(state, eff, conn);
            checked++;
            if (want !== got) mismatches.push(`${JSON.stringify(conn)}: evaluate=${want} effective=${got}`);
          }
        }
      }
    }
  }
  mismatches = mismatches.slice(0, 10);
  t.same(mismatches, [], `no mismatches over ${checked} connections`);
  t.ok(checked > 10000, `${checked} connections checked`);
});

t.test('effectivePolicies shape', async (t) => {
  const state = PolicyState.from({
    namespaces: [ns('x')],
    pods: [
      pod('x', 'one', { ip: '10.0.1.1', labels: { app: 'web' }, ports: [{ name: 'http', containerPort: 8080 }] }),
      pod('x', 'two', { ip: '10.0.1.2', labels: { app: 'web' }, ports: [{ name: 'http', containerPort: 9090 }] }),
      pod('x', 'client', { ip: '10.0.1.9', labels: { app: 'client' } }),
    ],
    policies: [
      np('x', 'web', { podSelector: podSel({ app: 'web' }), ingress: [rule([{ podSelector: podSel({ app: 'client' }) }], [{ port: 'http' }, { port: 443 }])] }),
      np('x', 'client', { podSelector: podSel({ app: 'client' }), policyTypes: ['Egress'], egress: [erule([{ podSelector: podSel({ app: 'web' }) }], [{ port: 'http' }])] }),
    ],
  });
  const eff = effectivePolicies(state);
  t.same(eff.map((e) => `${e.pod} ${e.direction}`), ['x/client egress', 'x/one ingress', 'x/two ingress']);
  t.same(eff.find((e) => e.pod === 'x/one')!.allow, [
    { policy: 'x/web', ruleIndex: 0, peerIndex: 0, peer: { kind: 'pods', pods: ['x/client'] }, ports: [{ protocol: 'TCP', port: 443 }, { protocol: 'TCP', port: 8080 }] },
  ]);
  t.same(eff.find((e) => e.pod === 'x/client')!.allow, [
    { policy: 'x/client', ruleIndex: 0, peerIndex: 0, peer: { kind: 'pods', pods: ['x/one'] }, ports: [{ protocol: 'TCP', port: 8080 }] },
    { policy: 'x/client', ruleIndex: 0, peerIndex: 0, peer: { kind: 'pods', pods: ['x/two'] }, ports: [{ protocol: 'TCP', port: 9090 }] },
  ]);
});
