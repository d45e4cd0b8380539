// A seeded random-packet fuzz run: mutations of valid queries and random bytes through
// the handler (every reply must decode, carry the query's ID and never be produced for
// packets that must be dropped; memory stays bounded), then a slice of them over a real
// UDP socket, after which the server must still answer. SKIFF_FUZZ_PACKETS sets the
// count (default 50,000; the bench mode runs >= 1,000,000); SKIFF_FUZZ_SEED the seed.
import dgram from 'node:dgram';
import dnsPacket from 'dns-packet';
import t from 'tap';
import { DnsServer } from '../../src/dns/server.js';
import { decode, FakeReader, fixture, query } from '../helpers/dns.js';
import { mulberry32 } from '../../src/util/rng.js';

const N = Number(process.env.SKIFF_FUZZ_PACKETS ?? 50_000);
const SEED = Number(process.env.SKIFF_FUZZ_SEED ?? 0x5eed);

const rng = mulberry32;

const seeds = [
  query({ name: 'web.prod.svc.cluster.local' }),
  query({ name: 'hl.prod.svc.cluster.local', edns: 1232 }),
  query({ name: '_http._tcp.hl.prod.svc.cluster.local', type: 'SRV', edns: 4096, dnssecOk: true }),
  query({ name: '10.0.96.10.in-addr.arpa', type: 'PTR' }),
  query({ name: 'nope.prod.svc.cluster.local', type: 'AAAA' }),
  query({ name: 'ext.prod.svc.cluster.local' }),
  query({ name: 'big.prod.svc.cluster.local' }),
  query({ name: 'example.org', type: 'MX' }),
  query({ name: '10-244-1-5.prod.pod.cluster.local' }),
  // A compressed question (pointer back into itself is illegal; into a prior label is fine).
  Buffer.concat([Buffer.from([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]), Buffer.from([3, 0x77, 0x65, 0x62, 0xc0, 12, 0, 1, 0, 1])]),
];

function mutate(r: () => number): Buffer {
  const pick = r();
  const int = (n: number) => Math.floor(r() * n);
  if (pick < 0.2) {
    const b = Buffer.alloc(int(600));
    for (let i = 0; i < b.length; i++) b[i] = int(256);
    return b;
  }
  const b = Buffer.from(seeds[int(seeds.length)]!);
  if (pick < 0.25) return b.subarray(0, int(b.length)); // truncation
  const n = 1 + int(6);
  for (let k = 0; k < n; k++) {
    const m = r();
    const at = int(b.length);
    if (m < 0.35) b[at] = b[at]! ^ (1 << int(8));
    else if (m < 0.6) b[at] = int(256);
    else if (m < 0.75) b[4 + int(8)] = int(4); // counts
    else if (m < 0.85 && b.length > 14) { b[12 + int(b.length - 14)] = 0xc0 | int(4); } // pointers
    else if (m < 0.92) b[2] = int(256); // flags/opcode
    else b[at] = int(64); // label lengths
  }
  return b;
}

t.test(`fuzz: ${N} packets (seed ${SEED})`, async (t) => {
  const s = new DnsServer({
    reader: new FakeReader(fixture()), listen: '127.0.0.1:0', upstreams: [],
    allow: [], allowClusterCidrs: false, reverseCidrs: ['10.96.0.0/12'],
  });
  s.zone.start();
  const r = rng(SEED);
  const heap0 = process.memoryUsage().heapUsed;
  let replies = 0, dropped = 0, bad = 0;
  const rcodes = new Map<string, number>();
  for (let i = 0; i < N; i++) {
    const p = mutate(r);
    let out = s.handle(p, '192.0.2.1', false, (i & 7) === 0);
    if (out instanceof Promise) out = await out;
    if (out === null) {
      dropped++;
      if (p.length >= 12 && !(p[2]! & 0x80)) {
        bad++;
        if (bad < 5) t.fail(`a well-formed-header query got no reply: ${p.toString('hex')}`);
      }
      continue;
    }
    replies++;
    let d: dnsPacket.Packet & { rcode?: string };
    try {
      d = dnsPacket.decode(out) as typeof d;
    } catch (e) {
      bad++;
      if (bad < 5) t.fail(`undecodable reply to ${p.toString('hex')}: ${(e as Error).message}`);
      continue;
    }
    if (d.id !== p.readUInt16BE(0) || d.type !== 'response') {
      bad++;
      if (bad < 5) t.fail(`reply ID/QR mismatch for ${p.toString('hex')}`);
    }
    rcodes.set(d.rcode ?? '?', (rcodes.get(d.rcode ?? '?') ?? 0) + 1);
    if (out.length > ((i & 7) === 0 ? 65535 : 1232)) {
      bad++;
      if (bad < 5) t.fail(`reply of ${out.length} bytes over the limit`);
    }
  }
  t.equal(bad, 0, 'every reply decodes and matches its query');
  t.ok(replies > N / 4, `${replies} replies, ${dropped} dropped`);
  t.comment(`rcodes: ${JSON.stringify(Object.fromEntries(rcodes))}`);
  global.gc?.();
  const grown = (process.memoryUsage().heapUsed - heap0) / 1e6;
  t.ok(grown < 64, `heap grew ${grown.toFixed(1)} MB`);
  t.equal(s.cache.size, 0, 'nothing cached from refused clients');
  s.forwarder.close();
});

t.test('fuzz over a real UDP socket: the server stays up', async (t) => {
  const s = new DnsServer({ reader: new FakeReader(fixture()), listen: '127.0.0.1:0', upstreams: [], allow: [], allowClusterCidrs: false });
  await s.start();
  t.teardown(() => s.stop());
  const c = dgram.createSocket('udp4');
  let got = 0;
  c.on('message', (m) => {
    decode(m); // throws (fails the test) when undecodable
    got++;
  });
  await new Promise<void>((res) => c.bind(0, '127.0.0.1', () => res()));
  const r = rng(SEED + 1);
  for (let i = 0; i < 3000; i++) {
    c.send(mutate(r), s.port, '127.0.0.1');
    if (i % 200 === 0) await new Promise((res) => setTimeout(res, 5));
  }
  await new Promise((res) => setTimeout(res, 200));
  const ok = await new Promise<Buffer | null>((resolve) => {
    const timer = setTimeout(() => resolve(null), 1000);
    c.removeAllListeners('message');
    c.on('message', (m) => {
      if (m.readUInt16BE(0) === 777) {
        clearTimeout(timer);
        resolve(m);
      }
    });
    c.send(query({ name: 'web.prod.svc.cluster.local', id: 777 }), s.port, '127.0.0.1');
  });
  c.close();
  t.ok(got > 500, `${got} replies to fuzz packets`);
  t.ok(ok, 'still answering');
  t.equal(decode(ok!).rcode, 'NOERROR');
});
