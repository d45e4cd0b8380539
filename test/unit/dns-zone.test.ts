// The cluster zone, table-driven (in the manner of CoreDNS's handler_test.go): every
// rule of the Kubernetes DNS specification over a fixture, checked on rcode, answer,
// authority, additional, TTL and case, with dns-packet decoding our bytes.
import t from 'tap';
import { DnsServer } from '../../src/dns/server.js';
import { decode, FakeReader, fixture, query, slice, summary, svc, type Decoded, type Q } from '../helpers/dns.js';

function server(reader: FakeReader, extra: Partial<ConstructorParameters<typeof DnsServer>[0]> = {}): DnsServer {
  const s = new DnsServer({ reader, listen: '127.0.0.1:0', upstreams: [], reverseCidrs: ['10.96.0.0/12'], ...extra });
  s.zone.start();
  return s;
}

async function ask(s: DnsServer, q: Q, src = '127.0.0.1', tcp = false): Promise<Decoded> {
  const r = await s.handle(query(q), src, false, tcp);
  if (!r) throw new Error('no reply');
  return decode(r);
}

const SOA = 'cluster.local 5 SOA ns.dns.cluster.local hostmaster.cluster.local 5';
const SOA_REV = 'in-addr.arpa 5 SOA ns.dns.cluster.local hostmaster.cluster.local 5';

interface Case {
  name: string;
  q: Q;
  rcode: string;
  answer?: string[];
  authority?: string[];
  additional?: string[];
  /** answer compared as a set */
  unordered?: boolean;
}

const cases: Case[] = [
  { name: 'ClusterIP A', q: { name: 'web.prod.svc.cluster.local' }, rcode: 'NOERROR', answer: ['web.prod.svc.cluster.local 5 A 10.96.0.10'] },
  { name: 'ClusterIP AAAA on a v4-only service is NODATA', q: { name: 'web.prod.svc.cluster.local', type: 'AAAA' }, rcode: 'NOERROR', answer: [], authority: [SOA] },
  { name: 'ClusterIP TXT is NODATA', q: { name: 'web.prod.svc.cluster.local', type: 'TXT' }, rcode: 'NOERROR', answer: [], authority: [SOA] },
  { name: 'missing service NXDOMAIN with SOA', q: { name: 'nope.prod.svc.cluster.local' }, rcode: 'NXDOMAIN', answer: [], authority: [SOA] },
  { name: 'search-path miss NXDOMAIN', q: { name: 'web.prod.svc.cluster.local.prod.svc.cluster.local' }, rcode: 'NXDOMAIN', answer: [], authority: [SOA] },
  { name: 'dual-stack A', q: { name: 'dual.prod.svc.cluster.local' }, rcode: 'NOERROR', answer: ['dual.prod.svc.cluster.local 5 A 10.96.0.11'] },
  { name: 'dual-stack AAAA', q: { name: 'dual.prod.svc.cluster.local', type: 'AAAA' }, rcode: 'NOERROR', answer: ['dual.prod.svc.cluster.local 5 AAAA fd00::11'] },
  {
    name: 'headless A: ready endpoints only', q: { name: 'hl.prod.svc.cluster.local' }, rcode: 'NOERROR', unordered: true,
    answer: ['hl.prod.svc.cluster.local 5 A 10.244.1.5', 'hl.prod.svc.cluster.local 5 A 10.244.1.6'],
  },
  { name: 'headless endpoint hostname', q: { name: 'web-0.hl.prod.svc.cluster.local' }, rcode: 'NOERROR', answer: ['web-0.hl.prod.svc.cluster.local 5 A 10.244.1.5'] },
  { name: 'headless endpoint without hostname: dashed IP', q: { name: '10-244-1-6.hl.prod.svc.cluster.local' }, rcode: 'NOERROR', answer: ['10-244-1-6.hl.prod.svc.cluster.local 5 A 10.244.1.6'] },
  { name: 'headless not-ready endpoint has no name', q: { name: '10-244-1-7.hl.prod.svc.cluster.local' }, rcode: 'NXDOMAIN', authority: [SOA] },
  { name: 'headless IPv6 AAAA', q: { name: 'hl6.prod.svc.cluster.local', type: 'AAAA' }, rcode: 'NOERROR', answer: ['hl6.prod.svc.cluster.local 5 AAAA fd00::5'] },
  { name: 'headless IPv6 dashed name', q: { name: 'fd00--5.hl6.prod.svc.cluster.local', type: 'AAAA' }, rcode: 'NOERROR', answer: ['fd00--5.hl6.prod.svc.cluster.local 5 AAAA fd00::5'] },
  { name: 'publishNotReadyAddresses', q: { name: 'hlnr.prod.svc.cluster.local' }, rcode: 'NOERROR', answer: ['hlnr.prod.svc.cluster.local 5 A 10.244.2.9'] },
  { name: 'headless without endpoints NXDOMAIN', q: { name: 'empty.prod.svc.cluster.local' }, rcode: 'NXDOMAIN', answer: [], authority: [SOA] },
  { name: 'headless without ready endpoints NXDOMAIN', q: { name: 'notready.prod.svc.cluster.local' }, rcode: 'NXDOMAIN', authority: [SOA] },
  {
    name: 'SRV ClusterIP with A in additional', q: { name: '_http._tcp.web.prod.svc.cluster.local', type: 'SRV' }, rcode: 'NOERROR',
    answer: ['_http._tcp.web.prod.svc.cluster.local 5 SRV 0 100 80 web.prod.svc.cluster.local'],
    additional: ['web.prod.svc.cluster.local 5 A 10.96.0.10'],
  },
  {
    name: 'SRV UDP port', q: { name: '_dns._udp.web.prod.svc.cluster.local', type: 'SRV' }, rcode: 'NOERROR',
    answer: ['_dns._udp.web.prod.svc.cluster.local 5 SRV 0 100 53 web.prod.svc.cluster.local'],
  },
  { name: 'SRV for an unnamed port does not exist', q: { name: '_8080._tcp.web.prod.svc.cluster.local', type: 'SRV' }, rcode: 'NXDOMAIN' },
  { name: 'SRV parent (_tcp) is an empty non-terminal', q: { name: '_tcp.web.prod.svc.cluster.local', type: 'SRV' }, rcode: 'NOERROR', answer: [], authority: [SOA] },
  {
    name: 'SRV headless: one per ready endpoint', q: { name: '_http._tcp.hl.prod.svc.cluster.local', type: 'SRV' }, rcode: 'NOERROR', unordered: true,
    answer: [
      '_http._tcp.hl.prod.svc.cluster.local 5 SRV 0 50 8080 web-0.hl.prod.svc.cluster.local',
      '_http._tcp.hl.prod.svc.cluster.local 5 SRV 0 50 8080 10-244-1-6.hl.prod.svc.cluster.local',
    ],
    additional: ['web-0.hl.prod.svc.cluster.local 5 A 10.244.1.5', '10-244-1-6.hl.prod.svc.cluster.local 5 A 10.244.1.6'],
  },
  { name: 'PTR ClusterIP', q: { name: '10.0.96.10.in-addr.arpa', type: 'PTR' }, rcode: 'NOERROR', answer: ['10.0.96.10.in-addr.arpa 5 PTR web.prod.svc.cluster.local'] },
  {
    name: 'PTR ClusterIP IPv6 nibbles', q: { name: '1.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa', type: 'PTR' }, rcode: 'NOERROR',
    answer: ['1.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa 5 PTR dual.prod.svc.cluster.local'],
  },
  { name: 'PTR headless endpoint', q: { name: '5.1.244.10.in-addr.arpa', type: 'PTR' }, rcode: 'NOERROR', answer: ['5.1.244.10.in-addr.arpa 5 PTR web-0.hl.prod.svc.cluster.local'] },
  { name: 'PTR unknown IP in the service CIDR: NXDOMAIN', q: { name: '99.0.96.10.in-addr.arpa', type: 'PTR' }, rcode: 'NXDOMAIN', authority: [SOA_REV] },
  { name: 'PTR outside skiff\'s reverse zones is forwarded (no upstream: SERVFAIL)', q: { name: '1.2.0.192.in-addr.arpa', type: 'PTR' }, rcode: 'SERVFAIL' },
  {
    name: 'ExternalName in the zone: CNAME plus target records', q: { name: 'ext.prod.svc.cluster.local' }, rcode: 'NOERROR',
    answer: ['ext.prod.svc.cluster.local 5 CNAME web.prod.svc.cluster.local', 'web.prod.svc.cluster.local 5 A 10.96.0.10'],
  },
  { name: 'ExternalName CNAME query', q: { name: 'ext2.prod.svc.cluster.local', type: 'CNAME' }, rcode: 'NOERROR', answer: ['ext2.prod.svc.cluster.local 5 CNAME www.example.com'] },
  { name: 'ExternalName outside the zone without upstream: the CNAME', q: { name: 'ext2.prod.svc.cluster.local' }, rcode: 'NOERROR', answer: ['ext2.prod.svc.cluster.local 5 CNAME www.example.com'] },
  { name: 'dns-version TXT', q: { name: 'dns-version.cluster.local', type: 'TXT' }, rcode: 'NOERROR', answer: ['dns-version.cluster.local 5 TXT 1.1.0'] },
  { name: 'apex SOA', q: { name: 'cluster.local', type: 'SOA' }, rcode: 'NOERROR', answer: [SOA] },
  { name: 'apex NS', q: { name: 'cluster.local', type: 'NS' }, rcode: 'NOERROR', answer: ['cluster.local 5 NS ns.dns.cluster.local'] },
  { name: 'apex A is NODATA', q: { name: 'cluster.local' }, rcode: 'NOERROR', answer: [], authority: [SOA] },
  { name: 'svc.<zone> is NODATA', q: { name: 'svc.cluster.local' }, rcode: 'NOERROR', answer: [], authority: [SOA] },
  { name: '<ns>.svc.<zone> of an existing namespace is NODATA', q: { name: 'empty-ns.svc.cluster.local' }, rcode: 'NOERROR', answer: [], authority: [SOA] },
  { name: '<ns>.svc.<zone> of a missing namespace is NXDOMAIN', q: { name: 'nope.svc.cluster.local' }, rcode: 'NXDOMAIN', authority: [SOA] },
  { name: 'pod A (pods insecure)', q: { name: '10-244-1-5.prod.pod.cluster.local' }, rcode: 'NOERROR', answer: ['10-244-1-5.prod.pod.cluster.local 5 A 10.244.1.5'] },
  { name: 'pod AAAA of a v4 pod is NODATA', q: { name: '10-244-1-5.prod.pod.cluster.local', type: 'AAAA' }, rcode: 'NOERROR', answer: [], authority: [SOA] },
  { name: 'pod in a missing namespace NXDOMAIN', q: { name: '10-244-1-5.nope.pod.cluster.local' }, rcode: 'NXDOMAIN' },
  { name: 'pod with a bad address NXDOMAIN', q: { name: '10-244-1.prod.pod.cluster.local' }, rcode: 'NXDOMAIN' },
  { name: 'out-of-zone name, allowed client, no upstream: SERVFAIL', q: { name: 'example.org' }, rcode: 'SERVFAIL' },
];

t.test('cluster zone table', async (t) => {
  const s = server(new FakeReader(fixture()));
  for (const c of cases) {
    const r = await ask(s, c.q);
    t.test(c.name, async (t) => {
      t.equal(r.rcode, c.rcode, 'rcode');
      t.equal(r.id, 4242, 'id echoed');
      t.ok(r.flag_rd, 'RD echoed');
      t.equal(r.questions?.[0]?.name, c.q.name, 'question echoed');
      const sort = (x: string[]) => (c.unordered ? [...x].sort() : x);
      if (c.answer) t.same(sort(summary(r.answers)), sort(c.answer), 'answer');
      if (c.authority) t.same(summary(r.authorities), c.authority, 'authority');
      if (c.additional) t.same(summary(r.additionals).sort(), [...c.additional].sort(), 'additional');
      if (c.rcode !== 'SERVFAIL') t.ok(r.flag_aa, 'authoritative');
    });
  }
});

t.test('the query case is echoed in the question and compressed answer names', async (t) => {
  const s = server(new FakeReader(fixture()));
  const r = await ask(s, { name: 'WeB.PrOd.SVC.Cluster.LOCAL' });
  t.equal(r.questions?.[0]?.name, 'WeB.PrOd.SVC.Cluster.LOCAL');
  t.same(summary(r.answers), ['WeB.PrOd.SVC.Cluster.LOCAL 5 A 10.96.0.10']);
  // A second query in another case is served from the same cached template.
  const r2 = await ask(s, { name: 'web.PROD.svc.cluster.local' });
  t.equal(r2.questions?.[0]?.name, 'web.PROD.svc.cluster.local');
  t.equal(r2.answers?.[0]?.name, 'web.PROD.svc.cluster.local');
  const neg = await ask(s, { name: 'NoPe.Prod.Svc.Cluster.Local' });
  t.equal(neg.questions?.[0]?.name, 'NoPe.Prod.Svc.Cluster.Local');
  t.equal(neg.rcode, 'NXDOMAIN');
  t.equal(neg.authorities?.[0]?.name, 'Cluster.Local', 'the SOA owner points into the question');
});

t.test('names are compressed', async (t) => {
  const s = server(new FakeReader(fixture()));
  const raw = (await s.handle(query({ name: 'hl.prod.svc.cluster.local' }), '127.0.0.1', false, false)) as Buffer;
  // Each answer's owner is a 2-byte pointer to the question at offset 12.
  t.equal(raw.indexOf(Buffer.from([0xc0, 0x0c])) > 0, true);
  const qlen = 'hl.prod.svc.cluster.local'.length + 2;
  t.equal(raw.length, 12 + qlen + 4 + 2 * (2 + 10 + 4), 'two A records with pointer owners');
  const srv = (await s.handle(query({ name: '_http._tcp.hl.prod.svc.cluster.local', type: 'SRV' }), '127.0.0.1', false, false)) as Buffer;
  const d = decode(srv);
  t.equal(d.answers?.length, 2);
  // The additional owners are compressed against the SRV targets or the question.
  const uncompressed = 12 + 4 + 40 + 2 * (40 + 10 + 6 + 34) + 2 * (34 + 10 + 4);
  t.ok(srv.length < uncompressed, `compressed size ${srv.length} < ${uncompressed}`);
});

t.test('a custom zone (k8stest.local)', async (t) => {
  const s = server(new FakeReader(fixture()), { zone: 'k8stest.local', allow: ['10.0.0.0/8'], allowClusterCidrs: false });
  const r = await ask(s, { name: 'web.prod.svc.k8stest.local' });
  t.same(summary(r.answers), ['web.prod.svc.k8stest.local 5 A 10.96.0.10']);
  const n = await ask(s, { name: 'nope.prod.svc.k8stest.local' });
  t.equal(n.rcode, 'NXDOMAIN');
  t.same(summary(n.authorities), ['k8stest.local 5 SOA ns.dns.k8stest.local hostmaster.k8stest.local 5']);
  const v = await ask(s, { name: 'dns-version.k8stest.local', type: 'TXT' });
  t.same(summary(v.answers), ['dns-version.k8stest.local 5 TXT 1.1.0']);
  // cluster.local is not ours now: forwarded, and 127.0.0.1 is not allowed to forward.
  const o = await ask(s, { name: 'web.prod.svc.cluster.local' });
  t.equal(o.rcode, 'REFUSED');
});

t.test('custom TTL', async (t) => {
  const s = server(new FakeReader(fixture()), { ttl: 30 });
  const r = await ask(s, { name: 'web.prod.svc.cluster.local' });
  t.equal((r.answers?.[0] as { ttl?: number }).ttl, 30);
  const n = await ask(s, { name: 'nope.prod.svc.cluster.local' });
  const soa = n.authorities?.[0] as { ttl: number; data: { minimum: number } };
  t.equal(soa.ttl, 30);
  t.equal(soa.data.minimum, 30);
});

t.test('before the source has synced, negative answers are SERVFAIL', async (t) => {
  const reader = new FakeReader(fixture());
  reader.synced = false;
  const s = server(reader);
  t.equal((await ask(s, { name: 'nope.prod.svc.cluster.local' })).rcode, 'SERVFAIL');
  t.equal((await ask(s, { name: 'web.prod.svc.cluster.local', type: 'AAAA' })).rcode, 'SERVFAIL', 'NODATA too');
  t.equal((await ask(s, { name: 'web.prod.svc.cluster.local' })).rcode, 'NOERROR', 'positive answers are fine');
  t.notOk(s.isReady());
  reader.synced = true;
  t.equal((await ask(s, { name: 'nope.prod.svc.cluster.local' })).rcode, 'NXDOMAIN');
  t.equal((await ask(s, { name: 'web.prod.svc.cluster.local', type: 'AAAA' })).rcode, 'NOERROR');
  t.ok(s.isReady());
});

t.test('changes are visible at once (well within 100 ms), and no cached answer outlives them', async (t) => {
  const reader = new FakeReader(fixture());
  const s = server(reader);
  t.equal((await ask(s, { name: 'new.prod.svc.cluster.local' })).rcode, 'NXDOMAIN');
  const t0 = performance.now();
  reader.upsert(svc('prod', 'new', { clusterIP: '10.96.0.50' }));
  let r = await ask(s, { name: 'new.prod.svc.cluster.local' });
  const dt = performance.now() - t0;
  t.same(summary(r.answers), ['new.prod.svc.cluster.local 5 A 10.96.0.50']);
  t.ok(dt < 100, `visible after ${dt.toFixed(2)} ms`);
  // Warm the template, then change the ClusterIP: the next answer has the new IP.
  await ask(s, { name: 'web.prod.svc.cluster.local' });
  reader.upsert(svc('prod', 'web', { clusterIP: '10.96.0.99', ports: [{ name: 'http', port: 80 }] }));
  r = await ask(s, { name: 'web.prod.svc.cluster.local' });
  t.same(summary(r.answers), ['web.prod.svc.cluster.local 5 A 10.96.0.99']);
  r = await ask(s, { name: '10.0.96.10.in-addr.arpa', type: 'PTR' });
  t.equal(r.rcode, 'NXDOMAIN', 'the old PTR is gone');
  r = await ask(s, { name: 'ext.prod.svc.cluster.local' });
  t.same(summary(r.answers), ['ext.prod.svc.cluster.local 5 CNAME web.prod.svc.cluster.local', 'web.prod.svc.cluster.local 5 A 10.96.0.99'], 'CNAME chase follows');
  // EndpointSlice change: an endpoint becomes ready; then the slice goes away.
  await ask(s, { name: 'notready.prod.svc.cluster.local' });
  reader.upsert(slice('prod', 'notready', 'notready-x', 'IPv4', [{ addresses: ['10.244.3.1'], conditions: { ready: true } }]));
  r = await ask(s, { name: 'notready.prod.svc.cluster.local' });
  t.same(summary(r.answers), ['notready.prod.svc.cluster.local 5 A 10.244.3.1']);
  reader.remove('EndpointSlice', 'prod/notready-x');
  r = await ask(s, { name: 'notready.prod.svc.cluster.local' });
  t.equal(r.rcode, 'NXDOMAIN');
  // Service deleted: its names, SRV and ENTs disappear.
  reader.remove('Service', 'prod/web');
  t.equal((await ask(s, { name: 'web.prod.svc.cluster.local' })).rcode, 'NXDOMAIN');
  t.equal((await ask(s, { name: '_http._tcp.web.prod.svc.cluster.local', type: 'SRV' })).rcode, 'NXDOMAIN');
  t.equal((await ask(s, { name: '_tcp.web.prod.svc.cluster.local', type: 'SRV' })).rcode, 'NXDOMAIN');
  // Namespace deleted: <ns>.svc.<zone> no longer exists unless services keep it.
  reader.remove('Namespace', 'empty-ns');
  t.equal((await ask(s, { name: 'empty-ns.svc.cluster.local' })).rcode, 'NXDOMAIN');
});

t.test('EDNS: OPT echoed with our size, DO echoed, BADVERS', async (t) => {
  const s = server(new FakeReader(fixture()));
  const r = await ask(s, { name: 'web.prod.svc.cluster.local', edns: 4096, dnssecOk: true });
  const opt = r.additionals?.find((a) => a.type === 'OPT') as { udpPayloadSize: number; flag_do: boolean } | undefined;
  t.ok(opt, 'OPT present');
  t.equal(opt?.udpPayloadSize, 1232);
  t.equal(opt?.flag_do, true);
  const plain = await ask(s, { name: 'web.prod.svc.cluster.local' });
  t.notOk(plain.additionals?.some((a) => a.type === 'OPT'), 'no OPT without one in the query');
  // EDNS version 1 -> BADVERS (extended rcode 16: header 0, OPT upper bits 1).
  const q = query({ name: 'web.prod.svc.cluster.local', edns: 1232 });
  q[q.length - 11 + 6] = 1; // the OPT's version byte
  const b = (await s.handle(q, '127.0.0.1', false, false)) as Buffer;
  const d = decode(b);
  const o = d.additionals?.find((a) => a.type === 'OPT') as { extendedRcode: number } | undefined;
  t.equal(b[3]! & 0x0f, 0);
  t.equal(o?.extendedRcode, 1, 'BADVERS');
});

t.test('UDP truncation at a record boundary, full answer over TCP', async (t) => {
  const s = server(new FakeReader(fixture()));
  const udp = (await s.handle(query({ name: 'big.prod.svc.cluster.local' }), '127.0.0.1', false, false)) as Buffer;
  t.ok(udp.length <= 512, `${udp.length} <= 512`);
  const d = decode(udp);
  t.equal(d.flag_tc, true, 'TC');
  t.ok((d.answers?.length ?? 0) > 0 && (d.answers?.length ?? 0) < 100, `${d.answers?.length} whole records`);
  const e = (await s.handle(query({ name: 'big.prod.svc.cluster.local', edns: 1232 }), '127.0.0.1', false, false)) as Buffer;
  t.ok(e.length <= 1232 && e.length > 512, `EDNS answer ${e.length} bytes`);
  t.equal(decode(e).flag_tc, true);
  t.ok(decode(e).additionals?.some((a) => a.type === 'OPT'), 'OPT kept when truncated');
  const tcp = decode((await s.handle(query({ name: 'big.prod.svc.cluster.local' }), '127.0.0.1', false, true)) as Buffer);
  t.equal(tcp.flag_tc, false);
  t.equal(tcp.answers?.length, 100);
  // Only additional records dropped: no TC (RFC 2181 §9).
  const srv = (await s.handle(query({ name: '_http._tcp.hl.prod.svc.cluster.local', type: 'SRV' }), '127.0.0.1', false, false)) as Buffer;
  t.equal(decode(srv).flag_tc, false);
});

t.test('REFUSED for out-of-zone names from clients outside the allowed CIDRs', async (t) => {
  const s = server(new FakeReader(fixture()), { allow: ['10.0.0.0/8'], upstreams: ['127.0.0.1:9'] });
  t.equal((await ask(s, { name: 'example.org' }, '192.0.2.7')).rcode, 'REFUSED');
  t.equal((await ask(s, { name: 'example.org' }, '127.0.0.1')).rcode, 'REFUSED', 'loopback is not in this allow list');
  t.equal((await ask(s, { name: 'web.prod.svc.cluster.local' }, '192.0.2.7')).rcode, 'NOERROR', 'the zone is answered for anyone');
  t.ok(s.allowed('10.1.2.3'));
  t.ok(s.allowed('192.168.50.1'), 'node InternalIP allowed');
  t.ok(s.allowed('10.244.1.77'), 'node podCIDR allowed');
  t.ok(s.allowed('::ffff:10.1.2.3'), 'v4-mapped');
  t.notOk(s.allowed('192.0.2.7'));
  s.forwarder.close();
});
