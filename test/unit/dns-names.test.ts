// The zone's name index keys names by their dotted string (no wire-form key per name):
// hashName and Query.nameEqualsName must agree exactly with the wire-form key they replace;
// a name with several owners keeps one field for them (a Map only then).
import t from 'tap';
import { encodeQuery, hashKey, hashName, keyOfName, nameToWire, parseQuery, Query } from '../../src/dns/wire.js';

const NAMES = [
  '', 'local', 'cluster.local', 'svc1.ns1.svc.cluster.local', '_http._tcp.svc1.ns1.svc.cluster.local',
  '4.3.2.10.in-addr.arpa', 'p0.svc0.ns0.svc.cluster.local', 'x'.repeat(63) + '.cluster.local', 'a.b', 'ab',
];

t.test('hashName(name) === hashKey(keyOfName(name))', async (t) => {
  for (const n of NAMES) t.equal(hashName(n), hashKey(keyOfName(n)), JSON.stringify(n));
});

function parsed(wire: Buffer): Query {
  const q = new Query();
  parseQuery(encodeQuery(1, wire, 1, 1, false), q);
  return q;
}

t.test('nameEqualsName agrees with nameEqualsKey, case-insensitively', async (t) => {
  for (const a of NAMES) {
    const q = parsed(nameToWire(a.toUpperCase()));
    t.equal(q.hash, hashName(a), `hash of the packet's ${JSON.stringify(a)}`);
    for (const b of NAMES) t.equal(q.nameEqualsName(b), q.nameEqualsKey(keyOfName(b)), `${JSON.stringify(a)} vs ${JSON.stringify(b)}`);
  }
});

t.test('a label holding a dot is not the two labels it looks like', async (t) => {
  // One label "a.b" (wire 03 'a' '.' 'b' 00) has the length of "a.b" as two labels.
  const q = parsed(Buffer.from([3, 0x61, 0x2e, 0x62, 0]));
  t.equal(q.nameEqualsName('a.b'), false);
  t.equal(q.nameEqualsKey(keyOfName('a.b')), false);
});

t.test('a name several Services contribute to (a shared endpoint address) keeps each one\'s records', async (t) => {
  const { ClusterZone } = await import('../../src/dns/zone.js');
  const { FakeReader, ns, slice, svc } = await import('../helpers/dns.js');
  const ep = [{ addresses: ['10.244.1.5'], hostname: 'p', conditions: { ready: true } }];
  const reader = new FakeReader([
    ns('a'),
    svc('a', 'one', { clusterIP: 'None', clusterIPs: ['None'] }), slice('a', 'one', 'one-x', 'IPv4', ep),
    svc('a', 'two', { clusterIP: 'None', clusterIPs: ['None'] }), slice('a', 'two', 'two-x', 'IPv4', ep),
  ]);
  const z = new ClusterZone(reader);
  z.start();
  const ptr = () => z.lookupName('5.1.244.10.in-addr.arpa', 12).map((r) => (r as { target: string }).target).sort();
  t.same(ptr(), ['p.one.a.svc.cluster.local', 'p.two.a.svc.cluster.local'], 'both owners\' PTR records');
  const size = z.size;
  reader.remove('Service', 'a/one');
  t.same(ptr(), ['p.two.a.svc.cluster.local'], 'one owner gone: the other\'s record stays');
  reader.upsert(svc('a', 'three', { clusterIP: 'None', clusterIPs: ['None'] }));
  reader.upsert(slice('a', 'three', 'three-x', 'IPv4', ep));
  t.same(ptr(), ['p.three.a.svc.cluster.local', 'p.two.a.svc.cluster.local'], 'a new owner joins');
  reader.remove('Service', 'a/two');
  reader.remove('Service', 'a/three');
  t.same(ptr(), [], 'no owner left: no records');
  t.ok(z.size < size, 'and the names are gone from the index');
  t.equal(z.lookupName('p.two.a.svc.cluster.local', 1).length, 0);
  z.stop();
});
