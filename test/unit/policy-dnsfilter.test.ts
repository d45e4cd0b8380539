// Policy-aware DNS: which Service names a pod may resolve.
import t from 'tap';
import type { ClusterObject, Pod } from '../../src/cluster/types.js';
import { MemoryView, slice, svc } from '../../src/proxy/fixtures.js';
import { DnsPolicyFilter, endpointsOf, mayResolve } from '../../src/policy/dnsfilter.js';
import { PolicyState } from '../../src/policy/evaluator.js';
import { ing, np, nsObj, podObj, sel } from '../../src/policy/fixtures.js';

const pods: Pod[] = [
  podObj('dev', 'client', { node: 'n1', ips: ['10.244.1.5'], labels: { app: 'client' } }),
  podObj('prod', 'web-1', { node: 'n2', ips: ['10.244.2.5'], labels: { app: 'web' } }),
  podObj('prod', 'web-2', { node: 'n3', ips: ['10.244.3.5'], labels: { app: 'web' } }),
  podObj('prod', 'client', { node: 'n3', ips: ['10.244.3.9'], labels: { app: 'client' } }),
];
const base = [nsObj('dev', { env: 'dev' }), nsObj('prod', { env: 'prod' }), ...pods];
const webSlice = slice('web', ['10.244.2.5', '10.244.3.5'], { ns: 'prod', ports: [{ name: 'http', port: 80, protocol: 'TCP' }] });
const onlyFromProd = np('prod', 'only-from-prod', { ingress: [ing([{ podSelector: {} }])] });

function setup(...extra: ClusterObject[]) {
  const view = new MemoryView();
  view.put(...([...base, svc('web', { ns: 'prod', clusterIP: '10.96.0.20' }), webSlice, svc('api', { ns: 'dev', clusterIP: '10.96.0.21' }), ...extra] as never[]));
  return { view, filter: new DnsPolicyFilter(view) };
}

t.test('without policies every name resolves', async (t) => {
  const { filter } = setup();
  t.match(filter.check('10.244.1.5', { namespace: 'prod', name: 'web' }), { allow: true });
});

t.test('prod denies dev: NXDOMAIN for dev, answers for prod, own namespace, nodes', async (t) => {
  const { filter } = setup(onlyFromProd);
  const d = filter.check('10.244.1.5', { namespace: 'prod', name: 'web' });
  t.equal(d.allow, false);
  t.match(d.reason, /no endpoint of prod\/web \(2\) is reachable from dev\/client/);
  t.equal(filter.check('10.244.3.9', { namespace: 'prod', name: 'web' }).allow, true, 'prod client');
  t.equal(filter.check('10.244.1.5', { namespace: 'dev', name: 'api' }).allow, true, 'own namespace');
  t.equal(filter.check('192.168.1.10', { namespace: 'prod', name: 'web' }).allow, true, 'a node is not a pod');
});

t.test('allowing dev flips the answer on the next query', async (t) => {
  const { view, filter } = setup(onlyFromProd);
  t.equal(filter.check('10.244.1.5', { namespace: 'prod', name: 'web' }).allow, false);
  view.put(np('prod', 'allow-dev', { ingress: [ing([{ namespaceSelector: sel({ env: 'dev' }) }], [{ port: 80 }])] }) as never);
  t.equal(filter.check('10.244.1.5', { namespace: 'prod', name: 'web' }).allow, true);
});

t.test('one reachable endpoint is enough; ports and egress count', async (t) => {
  const st = PolicyState.from({
    namespaces: base.filter((o) => o.kind === 'Namespace') as never,
    pods,
    policies: [
      np('prod', 'web-1-only', { podSelector: sel({ app: 'web' }), ingress: [ing(undefined, [{ port: 8080 }])] }),
      np('dev', 'egress-443', { podSelector: sel({ app: 'client' }), policyTypes: ['Egress'], egress: [{ ports: [{ port: 443 }, { port: 8080 }] }] }),
    ],
  });
  const eps = [{ ip: '10.244.2.5', ports: [{ port: 80, protocol: 'TCP' as const }, { port: 8080, protocol: 'TCP' as const }] }];
  t.equal(mayResolve(st, '10.244.1.5', { namespace: 'prod', name: 'web' }, eps).allow, true, 'port 8080 is allowed both ways');
  t.equal(mayResolve(st, '10.244.1.5', { namespace: 'prod', name: 'web' }, [{ ip: '10.244.2.5', ports: [{ port: 80, protocol: 'TCP' }] }]).allow, false, 'port 80: denied by both');
  t.equal(mayResolve(st, '10.244.1.5', { namespace: 'prod', name: 'web' }, []).allow, false, 'no endpoints: hidden across namespaces');
  t.equal(mayResolve(st, '10.244.1.5', { namespace: 'prod', name: 'ext', externalName: true }, []).allow, true, 'ExternalName');
  t.equal(mayResolve(st, '10.244.1.5', { namespace: 'prod', name: 'outside' }, [{ ip: '203.0.113.1', ports: [{ port: 443, protocol: 'TCP' }] }]).allow, true, 'a non-pod endpoint: the client egress decides');
});

t.test('endpointsOf keeps ready endpoints with their ports', async (t) => {
  const s = slice('web', [{ ip: '10.0.0.1' }, { ip: '10.0.0.2', ready: false }], { ns: 'prod', ports: [{ port: 80 }, { port: 53, protocol: 'UDP' }] });
  t.same(endpointsOf([s]), [{ ip: '10.0.0.1', ports: [{ port: 80, protocol: 'TCP' }, { port: 53, protocol: 'UDP' }] }]);
});
