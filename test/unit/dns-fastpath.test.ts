// The native UDP fast path against the JavaScript handler: every answer the native
// cache sends must be byte-identical to what the handler renders for the same packet
// (ID, the client's case, RD/CD, EDNS size and DO, TC), a zone change must empty the
// cache within the same tick, every client must be answered, and the
// CoreDNS metrics must count the answers the cache sent. No root needed.
import dgram from 'node:dgram';
import { Registry } from 'prom-client';
import t from 'tap';
import { dnsNative, parseSockaddr } from '../../src/dns/fastpath.js';
import { DnsServer } from '../../src/dns/server.js';
import { decode, FakeReader, fixture, query, svc } from '../helpers/dns.js';

const native = dnsNative();

/** Sends each packet from one socket and collects the answers by ID (in order of sending). */
function ask(port: number, msgs: Buffer[], timeoutMs = 5000): Promise<(Buffer | null)[]> {
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp4');
    const out: (Buffer | null)[] = msgs.map(() => null);
    const byId = new Map<number, number>();
    msgs.forEach((m, i) => byId.set(m.readUInt16BE(0), i));
    let got = 0;
    const done = () => {
      clearTimeout(timer);
      s.close();
      resolve(out);
    };
    const timer = setTimeout(done, timeoutMs);
    s.on('message', (m) => {
      const i = byId.get(m.readUInt16BE(0));
      if (i === undefined || out[i]) return;
      out[i] = m;
      if (++got === msgs.length) done();
    });
    s.bind(0, '127.0.0.1', () => {
      for (const m of msgs) s.send(m, port, '127.0.0.1');
    });
  });
}

/** Flips the case of letters in the question name (offset 12 on), deterministically per seed. */
function recase(m: Buffer, seed: number): Buffer {
  const b = Buffer.from(m);
  let p = 12;
  let k = seed;
  while (p < b.length && b[p] !== 0 && (b[p]! & 0xc0) === 0) {
    const l = b[p]!;
    for (let i = 1; i <= l; i++) {
      const c = b[p + i]!;
      k = (k * 1103515245 + 12345) >>> 0;
      if (((c | 0x20) >= 97 && (c | 0x20) <= 122) && k & 0x100) b[p + i] = c ^ 0x20;
    }
    p += l + 1;
  }
  return b;
}

function withId(m: Buffer, id: number): Buffer {
  const b = Buffer.from(m);
  b.writeUInt16BE(id, 0);
  return b;
}

function setFlags(m: Buffer, rd: boolean, cd: boolean): Buffer {
  const b = Buffer.from(m);
  b[2] = (b[2]! & ~1) | (rd ? 1 : 0);
  b[3] = (b[3]! & ~0x10) | (cd ? 0x10 : 0);
  return b;
}

t.test('the fast path', { skip: native ? false : 'build/skiff_dns.node not built' }, async (t) => {
  t.test('sockaddr parsing', async (t) => {
    const v4 = Buffer.alloc(16);
    v4.writeUInt16LE(2, 0);
    v4.writeUInt16BE(5353, 2);
    Buffer.from([10, 1, 2, 3]).copy(v4, 4);
    t.same(parseSockaddr(v4), { address: '10.1.2.3', v6: false });
    const v6 = Buffer.alloc(28);
    v6.writeUInt16LE(10, 0);
    v6.writeUInt16BE(0xfd00, 8);
    v6.writeUInt16BE(1, 22);
    t.same(parseSockaddr(v6), { address: 'fd00::1', v6: true });
    const lo = Buffer.alloc(28);
    lo.writeUInt16LE(10, 0);
    lo[23] = 1;
    t.same(parseSockaddr(lo), { address: '::1', v6: true });
  });

  const reader = new FakeReader(fixture());
  const registry = new Registry();
  const s = new DnsServer({ reader, listen: '127.0.0.1:0', upstreams: [], fastPath: true, threads: 2, registry });
  await s.start();
  t.teardown(() => s.stop());

  const table: Buffer[] = [
    query({ name: 'web.prod.svc.cluster.local' }),
    query({ name: 'web.prod.svc.cluster.local', type: 'AAAA' }),
    query({ name: 'web.prod.svc.cluster.local', edns: 1232 }),
    query({ name: 'web.prod.svc.cluster.local', edns: 4096, dnssecOk: true }),
    query({ name: 'web.prod.svc.cluster.local', edns: 100 }),
    query({ name: '_http._tcp.web.prod.svc.cluster.local', type: 'SRV' }),
    query({ name: '_http._tcp.hl.prod.svc.cluster.local', type: 'SRV', edns: 1232 }),
    query({ name: 'hl.prod.svc.cluster.local' }),
    query({ name: 'web-0.hl.prod.svc.cluster.local' }),
    query({ name: 'dual.prod.svc.cluster.local', type: 'AAAA' }),
    query({ name: 'nope.prod.svc.cluster.local' }),
    query({ name: 'empty.prod.svc.cluster.local' }),
    query({ name: 'prod.svc.cluster.local' }),
    query({ name: 'cluster.local', type: 'SOA' }),
    query({ name: 'cluster.local', type: 'NS' }),
    query({ name: 'dns-version.cluster.local', type: 'TXT' }),
    query({ name: '10.0.96.10.in-addr.arpa', type: 'PTR' }),
    query({ name: 'web.prod.svc.cluster.local', type: 'ANY' }),
    // 100 A records: truncated (TC) at 512 without EDNS, at 1232 with EDNS 4096, and at 700.
    query({ name: 'big.prod.svc.cluster.local' }),
    query({ name: 'big.prod.svc.cluster.local', edns: 4096 }),
    query({ name: 'big.prod.svc.cluster.local', edns: 700 }),
    query({ name: '10-244-1-5.prod.pod.cluster.local' }),
    // Not for the cache: FORMERR (QDCOUNT 2), NOTIMP (opcode), BADVERS (EDNS version 1), class CH.
    (() => { const b = query({ name: 'web.prod.svc.cluster.local' }); b[5] = 2; return b; })(),
    (() => { const b = query({ name: 'web.prod.svc.cluster.local' }); b[2] = b[2]! | (4 << 3); return b; })(),
    (() => { const b = query({ name: 'web.prod.svc.cluster.local', edns: 1232 }); b[b.length - 5] = 1; return b; })(),
    query({ name: 'web.prod.svc.cluster.local', qclass: 'CH' }),
  ];
  const variants: Buffer[] = [];
  let id = 1;
  for (const base of table) {
    for (let round = 0; round < 3; round++) {
      const flags = [[true, false], [false, false], [true, true]][round]!;
      variants.push(withId(recase(setFlags(base, flags[0]!, flags[1]!), round * 7 + id), id++));
    }
    // The same question again in another case and ID: a cache hit for cacheable ones.
    variants.push(withId(recase(base, id * 13), id++));
  }

  t.test('answers equal the handler\'s, byte for byte, across IDs, case, flags and sizes', async (t) => {
    const before = s.metrics.fastPath().hits;
    // Twice: the first pass fills the cache, the second is answered from it.
    for (let pass = 0; pass < 2; pass++) {
      const got = await ask(s.port, variants);
      for (let i = 0; i < variants.length; i++) {
        const want = s.handle(variants[i]!, '127.0.0.1', false, false);
        t.ok(want instanceof Uint8Array, `handler answers ${i} synchronously`);
        t.same(got[i], want, `pass ${pass}: answer ${i} (id ${variants[i]!.readUInt16BE(0)}) matches the handler`);
      }
    }
    const hits = s.metrics.fastPath().hits - before;
    // 22 cacheable questions x 4 variants x 2 passes, minus the first sighting of each key.
    t.ok(hits >= 22 * 4, `the native cache answered ${hits} of them`);
    const tc = decode((await ask(s.port, [withId(table[18]!, 9999)]))[0]!);
    t.ok(tc.flag_tc, 'the 512-byte answer for 100 records has TC');
  });

  t.test('the client\'s case is echoed from the cache', async (t) => {
    await ask(s.port, [query({ name: 'web.prod.svc.cluster.local', id: 1 })]);
    const [r] = await ask(s.port, [query({ name: 'WeB.PrOd.SvC.cLuStEr.LoCaL', id: 2 })]);
    const d = decode(r!);
    t.equal(d.id, 2);
    t.equal(d.questions![0]!.name, 'WeB.PrOd.SvC.cLuStEr.LoCaL');
    t.equal((d.answers![0] as { data: string }).data, '10.96.0.10');
  });

  t.test('a zone change empties the cache in the same tick', async (t) => {
    const q = query({ name: 'web.prod.svc.cluster.local', id: 77 });
    await ask(s.port, [q]);
    const hits0 = s.metrics.fastPath().hits;
    await ask(s.port, [q]);
    t.equal(s.metrics.fastPath().hits, hits0 + 1, 'answered from the cache');
    reader.upsert(svc('prod', 'web', { clusterIP: '10.96.0.99', clusterIPs: ['10.96.0.99'] }));
    const [r] = await ask(s.port, [q]);
    t.equal((decode(r!).answers![0] as { data: string }).data, '10.96.0.99', 'the next query sees the change');
    reader.remove('Service', 'prod/web');
    const [r2] = await ask(s.port, [q]);
    t.equal(decode(r2!).rcode, 'NXDOMAIN', 'and the deletion');
  });

  t.test('every client is answered (one socket, several threads)', async (t) => {
    // 40 client sockets, each its own address and port.
    const answers = await Promise.all(Array.from({ length: 40 }, (_, i) => ask(s.port, [query({ name: 'hl.prod.svc.cluster.local', id: 500 + i })])));
    t.equal(answers.filter((a) => a[0]).length, 40, 'all 40 clients got answers');
  });

  t.test('CoreDNS metrics count the cache\'s answers', async (t) => {
    const text = await registry.metrics();
    const fast = s.metrics.fastPath().hits;
    const m = /coredns_dns_requests_total\{[^}]*zone="cluster.local."[^}]*proto="udp"[^}]*type="A"\} (\d+)/.exec(text);
    t.ok(m && Number(m[1]) >= fast / 2, 'requests_total includes them');
    t.match(text, /skiff_dns_fastpath_answers_total\{server="dns:\/\/127.0.0.1:0"\} \d+/);
    t.match(text, /coredns_dns_request_duration_seconds_bucket\{[^}]*le="0.00025"\} \d+/);
  });

  t.test('the response latency histogram counts every answer of the cache, from the kernel\'s arrival time', async (t) => {
    const h0 = s.metrics.fastLatency();
    const hits0 = s.metrics.fastPath().hits;
    const q = query({ name: 'web.prod.svc.cluster.local', id: 5 });
    await ask(s.port, [q]);
    const t0 = performance.now();
    await ask(s.port, Array.from({ length: 50 }, (_, i) => withId(q, 100 + i)));
    const wall = (performance.now() - t0) / 1000;
    const hits = s.metrics.fastPath().hits - hits0;
    // Answers are counted before they are sent, their latency right after: a worker may
    // still be between the two when the last answer arrives here.
    for (const until = Date.now() + 2000; s.metrics.fastLatency().count - h0.count < hits && Date.now() < until; ) await new Promise((r) => setTimeout(r, 5));
    const h1 = s.metrics.fastLatency();
    t.ok(hits >= 50, `${hits} answers from the cache`);
    t.equal(h1.count - h0.count, hits, 'one latency sample per cached answer');
    t.ok(h1.sum > h0.sum, 'the sum grows');
    const p50 = h1.quantile(0.5);
    t.ok(p50 > 0 && p50 <= wall + 0.001, `median ${(p50 * 1e6).toFixed(0)} µs, within the ${(wall * 1e3).toFixed(1)} ms the batch took end to end`);
    t.equal(h1.bounds.length, h1.cumulative.length);
    const text = await registry.metrics();
    t.match(text, /skiff_dns_fastpath_response_seconds_bucket\{server="dns:\/\/127.0.0.1:0",le="\+Inf"\} \d+/);
    t.match(text, /skiff_dns_fastpath_response_seconds_count\{server="dns:\/\/127.0.0.1:0"\} \d+/);
  });
});
