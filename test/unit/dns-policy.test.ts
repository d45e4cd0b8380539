// Policy-aware DNS in the server (policyAware: true): a pod asking for a Service of
// another namespace whose endpoints it may not reach gets NXDOMAIN for every name
// under the Service (A, AAAA, SRV, ANY, headless endpoint names, empty non-terminals)
// and for its PTR names; its own namespace, allowed Services and clients that are not
// pods are answered normally; a policy or label change flips the very next answer; and
// the native fast path's shared cache never hands one client's answer to another.
// Clients are real UDP sockets bound to distinct loopback addresses, which the fixture
// makes pod IPs.
import dgram from 'node:dgram';
import net from 'node:net';
import t from 'tap';
import type { ClusterObject } from '../../src/cluster/types.js';
import { DnsServer } from '../../src/dns/server.js';
import { dnsNative } from '../../src/dns/fastpath.js';
import { ing, np, nsObj, podObj, sel } from '../../src/policy/fixtures.js';
import { decode, FakeReader, query, slice, summary, svc, type Decoded } from '../helpers/dns.js';

const DEV = '127.0.0.5'; // pod dev/client
const PROD = '127.0.0.9'; // pod prod/client
const NODE = '127.0.0.1'; // not a pod

function cluster(): ClusterObject[] {
  return [
    nsObj('dev', { env: 'dev' }), nsObj('prod', { env: 'prod' }),
    podObj('dev', 'client', { node: 'n1', ips: [DEV], labels: { app: 'client' } }),
    podObj('prod', 'client', { node: 'n1', ips: [PROD], labels: { app: 'client' } }),
    podObj('prod', 'web-0', { node: 'n2', ips: ['10.244.2.5'], labels: { app: 'web' } }),
    podObj('prod', 'web-1', { node: 'n2', ips: ['10.244.2.6'], labels: { app: 'web' } }),
    podObj('dev', 'api-0', { node: 'n2', ips: ['10.244.2.7'], labels: { app: 'api' } }),
    svc('prod', 'web', { clusterIP: '10.96.0.20', clusterIPs: ['10.96.0.20', 'fd00::20'], ports: [{ name: 'http', port: 80, protocol: 'TCP' }] }),
    slice('prod', 'web', 'web-x', 'IPv4', [{ addresses: ['10.244.2.5'] }, { addresses: ['10.244.2.6'] }], [{ name: 'http', port: 80, protocol: 'TCP' }]),
    svc('prod', 'hl', { clusterIP: 'None', clusterIPs: ['None'], ports: [{ name: 'http', port: 80 }] }),
    slice('prod', 'hl', 'hl-x', 'IPv4', [{ addresses: ['10.244.2.5'], hostname: 'web-0' }, { addresses: ['10.244.2.6'], hostname: 'web-1' }], [{ name: 'http', port: 80, protocol: 'TCP' }]),
    svc('dev', 'api', { clusterIP: '10.96.0.21', clusterIPs: ['10.96.0.21'], ports: [{ name: 'http', port: 80, protocol: 'TCP' }] }),
    svc('dev', 'alias', { type: 'ExternalName', externalName: 'web.prod.svc.cluster.local.' }),
    svc('dev', 'alias2', { type: 'ExternalName', externalName: 'alias.dev.svc.cluster.local' }),
    svc('prod', 'ext', { type: 'ExternalName', externalName: 'api.dev.svc.cluster.local' }),
    slice('dev', 'api', 'api-x', 'IPv4', [{ addresses: ['10.244.2.7'] }], [{ name: 'http', port: 80, protocol: 'TCP' }]),
  ];
}

const onlyFromProd = np('prod', 'only-from-prod', { ingress: [ing([{ podSelector: {} }])] });
const allowDev = np('prod', 'allow-dev', { ingress: [ing([{ namespaceSelector: sel({ env: 'dev' }) }], [{ port: 80 }])] });

/** Every name a dev pod must not see while prod denies it: [name, type]. */
const PROD_NAMES: [string, string][] = [
  ['web.prod.svc.cluster.local', 'A'],
  ['web.prod.svc.cluster.local', 'AAAA'],
  ['WEB.Prod.svc.cluster.local', 'A'],
  ['web.prod.svc.cluster.local', 'ANY'],
  ['web.prod.svc.cluster.local', 'TXT'],
  ['_http._tcp.web.prod.svc.cluster.local', 'SRV'],
  ['_tcp.web.prod.svc.cluster.local', 'A'], // an empty non-terminal: NODATA would betray the Service
  ['hl.prod.svc.cluster.local', 'A'],
  ['web-0.hl.prod.svc.cluster.local', 'A'],
  ['_http._tcp.hl.prod.svc.cluster.local', 'SRV'],
  ['20.0.96.10.in-addr.arpa', 'PTR'],
  ['5.2.244.10.in-addr.arpa', 'PTR'], // a headless endpoint's PTR
];

function udpAsk(port: number, from: string, msg: Buffer): Promise<Decoded> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket('udp4');
    const timer = setTimeout(() => {
      s.close();
      reject(new Error(`no answer from ${from}`));
    }, 2000);
    s.on('message', (m) => {
      clearTimeout(timer);
      s.close();
      resolve(decode(m));
    });
    s.bind(0, from, () => s.send(msg, port, '127.0.0.1'));
  });
}

function tcpAsk(port: number, from: string, msg: Buffer): Promise<Decoded> {
  return new Promise((resolve, reject) => {
    const c = net.connect({ port, host: '127.0.0.1', localAddress: from });
    let buf = Buffer.alloc(0);
    c.setTimeout(2000, () => {
      c.destroy();
      reject(new Error('tcp timeout'));
    });
    c.on('error', reject);
    c.on('connect', () => {
      const f = Buffer.alloc(2);
      f.writeUInt16BE(msg.length);
      c.write(Buffer.concat([f, msg]));
    });
    c.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= 2 && buf.length >= buf.readUInt16BE(0) + 2) {
        c.destroy();
        resolve(decode(buf.subarray(2, buf.readUInt16BE(0) + 2)));
      }
    });
  });
}

type T = { teardown(fn: () => unknown): void };

async function server(t: T, policyAware: boolean, extra: ClusterObject[] = []) {
  const reader = new FakeReader([...cluster(), ...extra]);
  const s = new DnsServer({ reader, listen: '127.0.0.1:0', upstreams: [], reverseCidrs: ['10.96.0.0/12', '10.244.0.0/16'], policyAware, ...(dnsNative() ? { threads: 1 } : {}) });
  await s.start();
  t.teardown(() => s.stop());
  const ask = (from: string, name: string, type = 'A', id = 7) => udpAsk(s.port, from, query({ name, type, id }));
  return { reader, s, ask };
}

const rc = (d: Decoded) => d.rcode ?? 'NOERROR';

t.test('prod denies dev: every name of a prod Service is NXDOMAIN for dev, answered for the rest', async (t) => {
  const { s, ask } = await server(t, true, [onlyFromProd]);
  for (const [name, type] of PROD_NAMES) {
    const d = await ask(DEV, name, type);
    t.equal(rc(d), 'NXDOMAIN', `dev: ${type} ${name}`);
    t.same(d.answers ?? [], [], `dev: no answer records for ${name}`);
    t.equal(d.authorities?.[0]?.type, 'SOA', 'the SOA of a name that does not exist');
    const p = await ask(PROD, name, type);
    const n = await ask(NODE, name, type);
    if (name === '_tcp.web.prod.svc.cluster.local' || (name === 'web.prod.svc.cluster.local' && type === 'TXT')) {
      t.equal(rc(p), 'NOERROR', `prod: NODATA for ${type} ${name}`);
    } else {
      t.equal(rc(p), 'NOERROR', `prod: ${type} ${name}`);
      t.ok((p.answers ?? []).length > 0, `prod: answers ${type} ${name}`);
      t.same(summary(n.answers), summary(p.answers), `the node gets the same answer as prod: ${type} ${name}`);
    }
  }
  // Hidden is indistinguishable from absent: the same NXDOMAIN as a made-up name of the same length.
  const hidden = await ask(DEV, 'web.prod.svc.cluster.local');
  const absent = await ask(NODE, 'wxb.prod.svc.cluster.local');
  t.same(summary(hidden.authorities), summary(absent.authorities));
  t.equal(rc(absent), 'NXDOMAIN');
  // Own namespace, pod names and the zone itself are not filtered.
  t.same(summary((await ask(DEV, 'api.dev.svc.cluster.local')).answers), ['api.dev.svc.cluster.local 5 A 10.96.0.21']);
  t.same(summary((await ask(DEV, '10-244-2-5.prod.pod.cluster.local')).answers), ['10-244-2-5.prod.pod.cluster.local 5 A 10.244.2.5']);
  t.same(summary((await ask(DEV, '21.0.96.10.in-addr.arpa', 'PTR')).answers), ['21.0.96.10.in-addr.arpa 5 PTR api.dev.svc.cluster.local']);
  // ExternalName: the chain is judged link by link (a CNAME into prod would hand out prod's address).
  t.equal(rc(await ask(DEV, 'alias.dev.svc.cluster.local')), 'NXDOMAIN', 'dev/alias -> prod/web: hidden');
  t.equal(rc(await ask(DEV, 'alias2.dev.svc.cluster.local')), 'NXDOMAIN', 'dev/alias2 -> dev/alias -> prod/web: hidden');
  t.same(summary((await ask(PROD, 'alias2.dev.svc.cluster.local')).answers), [
    'alias2.dev.svc.cluster.local 5 CNAME alias.dev.svc.cluster.local',
    'alias.dev.svc.cluster.local 5 CNAME web.prod.svc.cluster.local',
    'web.prod.svc.cluster.local 5 A 10.96.0.20',
  ], 'prod may follow the chain');
  t.same(summary((await ask(DEV, 'ext.prod.svc.cluster.local')).answers), [
    'ext.prod.svc.cluster.local 5 CNAME api.dev.svc.cluster.local',
    'api.dev.svc.cluster.local 5 A 10.96.0.21',
  ], 'an ExternalName of prod fronts no pods: answered, and its target is dev\'s own');
  // A limit (docs/dns.md): namespaces are not hidden, `prod.svc.cluster.local` exists.
  t.equal(rc(await ask(DEV, 'prod.svc.cluster.local')), 'NOERROR');
  // TCP goes through the same decision.
  t.equal(rc(await tcpAsk(s.port, DEV, query({ name: 'web.prod.svc.cluster.local' }))), 'NXDOMAIN', 'TCP: dev');
  t.same(summary((await tcpAsk(s.port, PROD, query({ name: 'web.prod.svc.cluster.local' }))).answers), ['web.prod.svc.cluster.local 5 A 10.96.0.20'], 'TCP: prod');
  t.ok(s.metrics.policyHidden >= PROD_NAMES.length + 2, `skiff_dns_policy_hidden_total counts them (${s.metrics.policyHidden})`);
});

t.test('policy and label changes flip the very next answer', async (t) => {
  const { reader, ask } = await server(t, true, [onlyFromProd]);
  const web = () => ask(DEV, 'web.prod.svc.cluster.local');
  t.equal(rc(await web()), 'NXDOMAIN', 'denied');
  reader.upsert(allowDev);
  t.same(summary((await web()).answers), ['web.prod.svc.cluster.local 5 A 10.96.0.20'], 'a policy allowing dev');
  t.equal(rc(await ask(DEV, 'web-1.hl.prod.svc.cluster.local')), 'NOERROR', 'headless endpoint names too');
  reader.upsert(nsObj('dev', { env: 'staging' }));
  t.equal(rc(await web()), 'NXDOMAIN', 'the namespace label no longer matches');
  reader.upsert(nsObj('dev', { env: 'dev' }));
  t.equal(rc(await web()), 'NOERROR', 'the label is back');
  reader.remove('NetworkPolicy', 'prod/allow-dev');
  t.equal(rc(await web()), 'NXDOMAIN', 'the allowing policy deleted');
  reader.remove('NetworkPolicy', 'prod/only-from-prod');
  t.equal(rc(await web()), 'NOERROR', 'no policy at all');
  // Egress of the client counts too.
  reader.upsert(np('dev', 'deny-egress', { podSelector: sel({ app: 'client' }), policyTypes: ['Egress'] }));
  t.equal(rc(await web()), 'NXDOMAIN', 'dev may not send anywhere');
  t.equal(rc(await ask(DEV, 'api.dev.svc.cluster.local')), 'NOERROR', 'its own namespace still resolves');
  // A pod's labels: the client's label changes, the deny-egress no longer selects it.
  reader.upsert(podObj('dev', 'client', { node: 'n1', ips: [DEV], labels: { app: 'other' } }));
  t.equal(rc(await web()), 'NOERROR', 'the pod label change');
});

t.test('the fast path never serves one client\'s answer to another', async (t) => {
  const { s, ask } = await server(t, true, [onlyFromProd]);
  const before = s.metrics.fastPath().hits;
  // The same bytes (same ID, same case) from both clients, interleaved, several times.
  for (let i = 0; i < 5; i++) {
    t.equal(rc(await ask(PROD, 'web.prod.svc.cluster.local')), 'NOERROR');
    t.equal(rc(await ask(DEV, 'web.prod.svc.cluster.local')), 'NXDOMAIN');
    t.equal(rc(await ask(PROD, '20.0.96.10.in-addr.arpa', 'PTR')), 'NOERROR');
    t.equal(rc(await ask(DEV, '20.0.96.10.in-addr.arpa', 'PTR')), 'NXDOMAIN');
  }
  t.equal(s.metrics.fastPath().hits, before, 'Service names were all decided in JS');
  if (dnsNative()) {
    // Names that do not depend on the client still use the native cache.
    for (let i = 0; i < 3; i++) await ask(DEV, '10-244-2-5.prod.pod.cluster.local');
    t.ok(s.metrics.fastPath().hits >= before + 2, 'pod names are served from the native cache');
  }
});

t.test('Services every client may resolve stay in the native cache; a policy change empties it', async (t) => {
  const { s, reader, ask } = await server(t, true);
  const api = () => ask(PROD, 'api.dev.svc.cluster.local');
  t.equal(rc(await api()), 'NOERROR', 'no policies: prod resolves dev/api');
  const before = s.metrics.fastPath().hits;
  for (let i = 0; i < 3; i++) t.equal(rc(await api()), 'NOERROR');
  if (dnsNative()) t.ok(s.metrics.fastPath().hits >= before + 2, 'answered from the native cache (the same for every client)');
  // dev now admits only dev: the cached answer must not outlive the change.
  reader.upsert(np('dev', 'only-from-dev', { ingress: [ing([{ podSelector: {} }])] }));
  t.equal(rc(await api()), 'NXDOMAIN', 'the very next query from prod is hidden');
  t.equal(rc(await ask(DEV, 'api.dev.svc.cluster.local')), 'NOERROR', 'dev still resolves it');
  t.equal(rc(await api()), 'NXDOMAIN', 'and prod still does not (dev\'s answer was not shared)');
  reader.remove('NetworkPolicy', 'dev/only-from-dev');
  t.equal(rc(await api()), 'NOERROR', 'deleted: answered again');
  // Egress isolation of any pod elsewhere makes answers client-dependent too.
  await api();
  reader.upsert(np('prod', 'deny-egress', { podSelector: sel({ app: 'client' }), policyTypes: ['Egress'] }));
  t.equal(rc(await api()), 'NXDOMAIN', 'prod/client may not send: hidden from it');
  t.equal(rc(await ask(NODE, 'api.dev.svc.cluster.local')), 'NOERROR', 'the node still resolves it');
  t.equal(rc(await api()), 'NXDOMAIN', 'and the node\'s answer was not shared');
});

t.test('off (the default): no filtering, Service names cached natively', async (t) => {
  const { s, ask } = await server(t, false, [onlyFromProd]);
  t.same(summary((await ask(DEV, 'web.prod.svc.cluster.local')).answers), ['web.prod.svc.cluster.local 5 A 10.96.0.20']);
  const before = s.metrics.fastPath().hits;
  for (let i = 0; i < 3; i++) await ask(DEV, 'web.prod.svc.cluster.local');
  if (dnsNative()) t.ok(s.metrics.fastPath().hits >= before + 2, 'answered from the native cache');
  t.equal(s.metrics.policyHidden, 0);
});

t.test('zone helpers: the Service of a name', async (t) => {
  const { s } = await server(t, true);
  t.same(s.zone.serviceOfName('web.prod.svc.cluster.local'), { namespace: 'prod', name: 'web' });
  t.same(s.zone.serviceOfName('web-0.hl.prod.svc.cluster.local'), { namespace: 'prod', name: 'hl' });
  t.equal(s.zone.serviceOfName('prod.svc.cluster.local'), null);
  t.equal(s.zone.serviceOfName('web.prod.svc.example.org'), null);
});
