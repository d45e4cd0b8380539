// The zone's name index keys names by their dotted string (no wire-form key per name):
// hashName and Query.nameEqualsName must agree exactly with the wire-form key they replace.
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
