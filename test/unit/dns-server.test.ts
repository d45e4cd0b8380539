// The server over real sockets on 127.0.0.1 (random ports): UDP truncation and TCP
// fallback, TCP pipelining, idle timeout, connection cap, forwarding to a fake upstream
// (cache hits, TTL decrement, negative caching, failover), malformed packets, metrics
// and the health endpoints. No root needed.
import dgram from 'node:dgram';
import net from 'node:net';
import dnsPacket from 'dns-packet';
import { Registry } from 'prom-client';
import t from 'tap';
import { DnsServer, startHttp } from '../../src/dns/server.js';
import { decode, FakeReader, fixture, query, summary, type Decoded } from '../helpers/dns.js';

function udpAsk(port: number, msg: Buffer, timeoutMs = 1000): Promise<Buffer | null> {
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp4');
    const timer = setTimeout(() => {
      s.close();
      resolve(null);
    }, timeoutMs);
    s.on('message', (m) => {
      clearTimeout(timer);
      s.close();
      resolve(m);
    });
    s.send(msg, port, '127.0.0.1');
  });
}

const lc = (xs: string[]) => xs.map((x) => x.toLowerCase());

function frame(m: Buffer): Buffer {
  const b = Buffer.alloc(m.length + 2);
  b.writeUInt16BE(m.length, 0);
  m.copy(b, 2);
  return b;
}

/** Opens a TCP connection, writes `data`, collects `n` framed answers. */
function tcpAsk(port: number, data: Buffer, n: number, timeoutMs = 2000): Promise<Buffer[]> {
  return new Promise((resolve, reject) => {
    const c = net.connect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    const out: Buffer[] = [];
    const timer = setTimeout(() => {
      c.destroy();
      reject(new Error(`tcp: got ${out.length} of ${n} answers`));
    }, timeoutMs);
    c.on('connect', () => c.write(data));
    c.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 2 && buf.length >= buf.readUInt16BE(0) + 2) {
        out.push(buf.subarray(2, buf.readUInt16BE(0) + 2));
        buf = buf.subarray(buf.readUInt16BE(0) + 2);
      }
      if (out.length >= n) {
        clearTimeout(timer);
        c.destroy();
        resolve(out);
      }
    });
    c.on('error', reject);
  });
}

/** A fake upstream resolver (UDP + TCP on one port) answering from a table, counting queries. */
async function fakeUpstream(): Promise<{ port: number; count: () => number; close: () => void }> {
  let n = 0;
  const answer = (m: Buffer, tcp: boolean): Buffer => {
    n++;
    const q = dnsPacket.decode(m);
    const qs = q.questions![0]!;
    const name = qs.name.toLowerCase();
    const base = { type: 'response' as const, id: q.id, flags: dnsPacket.RECURSION_AVAILABLE | dnsPacket.RECURSION_DESIRED, questions: q.questions };
    if (name.startsWith('www') && name.endsWith('.example.com') && qs.type === 'A') {
      return dnsPacket.encode({ ...base, answers: [{ type: 'A', name: qs.name, ttl: 100, data: '93.184.216.34' }] });
    }
    if (name === 'long.example.com') {
      return dnsPacket.encode({ ...base, answers: [{ type: 'A', name: qs.name, ttl: 100000, data: '192.0.2.1' }] });
    }
    if (name === 'big.example.com') {
      const answers = Array.from({ length: 60 }, (_, i) => ({ type: 'A' as const, name: qs.name, ttl: 50, data: `192.0.2.${i + 1}` }));
      if (!tcp) return dnsPacket.encode({ ...base, flags: base.flags | dnsPacket.TRUNCATED_RESPONSE, answers: [] });
      return dnsPacket.encode({ ...base, answers });
    }
    const soa = { type: 'SOA' as const, name: 'example.com', ttl: 60, data: { mname: 'ns.example.com', rname: 'h.example.com', serial: 1, refresh: 1, retry: 1, expire: 1, minimum: 20 } };
    // dns-packet takes the rcode in the low bits of flags: 3 = NXDOMAIN.
    return dnsPacket.encode({ ...base, flags: base.flags | 3, authorities: [soa] });
  };
  const u = dgram.createSocket('udp4');
  u.on('message', (m, r) => u.send(answer(m, false), r.port, r.address));
  await new Promise<void>((r) => u.bind(0, '127.0.0.1', r));
  const port = u.address().port;
  const tsrv = net.createServer((c) => {
    let buf = Buffer.alloc(0);
    c.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= 2 && buf.length >= buf.readUInt16BE(0) + 2) c.end(frame(answer(buf.subarray(2, buf.readUInt16BE(0) + 2), true)));
    });
  });
  await new Promise<void>((r) => tsrv.listen(port, '127.0.0.1', r));
  return { port, count: () => n, close: () => { u.close(); tsrv.close(); } };
}

/** A UDP socket that never answers (a dead upstream). */
async function deadUpstream(): Promise<{ port: number; close: () => void }> {
  const u = dgram.createSocket('udp4');
  await new Promise<void>((r) => u.bind(0, '127.0.0.1', r));
  return { port: u.address().port, close: () => u.close() };
}

t.test('over sockets', async (t) => {
  const up = await fakeUpstream();
  const dead = await deadUpstream();
  let now = 1_000_000;
  const registry = new Registry();
  const reader = new FakeReader(fixture());
  const s = new DnsServer({
    reader, listen: '127.0.0.1:0', upstreams: [`127.0.0.1:${dead.port}`, `127.0.0.1:${up.port}`],
    forwardTimeoutMs: 150, cache: { now: () => now }, tcpIdleTimeoutMs: 300, maxTcpConnections: 3, registry,
  });
  await s.start();
  t.teardown(async () => {
    await s.stop();
    up.close();
    dead.close();
  });
  const port = s.port;

  t.test('UDP answer, truncation with TC, full answer over TCP', async (t) => {
    const a = decode((await udpAsk(port, query({ name: 'web.prod.svc.cluster.local' })))!);
    t.same(summary(a.answers), ['web.prod.svc.cluster.local 5 A 10.96.0.10']);
    const u = (await udpAsk(port, query({ name: 'big.prod.svc.cluster.local' })))!;
    t.ok(u.length <= 512);
    t.equal(decode(u).flag_tc, true);
    const [full] = await tcpAsk(port, frame(query({ name: 'big.prod.svc.cluster.local' })), 1);
    const d = decode(full!);
    t.equal(d.flag_tc, false);
    t.equal(d.answers?.length, 100);
  });

  t.test('TCP pipelining: several queries in one write, all answered', async (t) => {
    const names = ['web.prod.svc.cluster.local', 'nope.prod.svc.cluster.local', 'www2.example.com', 'hl.prod.svc.cluster.local'];
    const data = Buffer.concat(names.map((n, i) => frame(query({ name: n, id: 100 + i }))));
    const answers = (await tcpAsk(port, data, names.length)).map(decode);
    t.same(answers.map((a) => a.id).sort(), [100, 101, 102, 103]);
    const byId = new Map(answers.map((a) => [a.id, a] as [number, Decoded]));
    t.equal(byId.get(101)?.rcode, 'NXDOMAIN');
    t.same(summary(byId.get(102)?.answers), ['www2.example.com 100 A 93.184.216.34']);
  });

  t.test('TCP idle timeout closes the connection', async (t) => {
    const c = net.connect(port, '127.0.0.1');
    const t0 = Date.now();
    await new Promise<void>((r) => c.on('close', () => r()));
    const dt = Date.now() - t0;
    t.ok(dt >= 250 && dt < 2000, `closed after ${dt} ms`);
  });

  t.test('TCP connection cap', async (t) => {
    const conns = await Promise.all([0, 1, 2].map(() => new Promise<net.Socket>((r) => {
      const c = net.connect(port, '127.0.0.1', () => r(c));
    })));
    await new Promise((r) => setTimeout(r, 50));
    const extra = net.connect(port, '127.0.0.1');
    const closed = await new Promise<boolean>((r) => {
      extra.on('close', () => r(true));
      extra.on('error', () => {});
      setTimeout(() => r(false), 1000);
    });
    t.ok(closed, 'the connection over the cap is closed');
    for (const c of conns) c.destroy();
    await new Promise((r) => setTimeout(r, 50));
    const [a] = await tcpAsk(port, frame(query({ name: 'web.prod.svc.cluster.local' })), 1);
    t.equal(decode(a!).rcode, 'NOERROR', 'served again once below the cap');
  });

  t.test('forwarding: failover, cache hit, TTL decrement, negative caching, TCP on TC', async (t) => {
    const before = up.count();
    const a = decode((await udpAsk(port, query({ name: 'WWW.example.com', id: 7 }), 3000))!);
    t.equal(a.id, 7);
    t.equal(a.questions?.[0]?.name, 'WWW.example.com');
    // The fake upstream does not compress, so the owner's case is whatever was cached first.
    t.same(lc(summary(a.answers)), ['www.example.com 100 a 93.184.216.34'], 'answered by the second upstream after the first timed out');
    const afterFirst = up.count();
    t.ok(afterFirst > before);
    now += 3000;
    const b = decode((await udpAsk(port, query({ name: 'www.EXAMPLE.com', id: 8 })))!);
    t.equal(b.id, 8);
    t.same(lc(summary(b.answers)), ['www.example.com 97 a 93.184.216.34'], 'cache hit with the TTL decremented');
    t.equal(up.count(), afterFirst, 'no upstream query for the hit');
    // Positive TTLs are capped at 300 s.
    const l = decode((await udpAsk(port, query({ name: 'long.example.com' }), 3000))!);
    t.equal((l.answers?.[0] as { ttl: number }).ttl, 300);
    // Negative: NXDOMAIN with SOA, cached for min(SOA TTL, minimum) = 20 s.
    const n1 = decode((await udpAsk(port, query({ name: 'nx.example.com' }), 3000))!);
    t.equal(n1.rcode, 'NXDOMAIN');
    t.equal(n1.authorities?.[0]?.type, 'SOA');
    const c1 = up.count();
    now += 5000;
    const n2 = decode((await udpAsk(port, query({ name: 'nx.example.com' })))!);
    t.equal(n2.rcode, 'NXDOMAIN');
    t.equal(up.count(), c1, 'negative answer cached');
    now += 20000;
    await udpAsk(port, query({ name: 'nx.example.com' }), 3000);
    t.ok(up.count() > c1, 'expired after the negative TTL');
    // Truncated upstream UDP answer -> TCP to the same upstream; our client gets TC over UDP, all over TCP.
    const big = (await udpAsk(port, query({ name: 'big.example.com' }), 3000))!;
    t.equal(decode(big).flag_tc, true);
    const [bt] = await tcpAsk(port, frame(query({ name: 'big.example.com' })), 1);
    t.equal(decode(bt!).answers?.length, 60);
  });

  t.test('ExternalName outside the zone: CNAME plus the target from upstream', async (t) => {
    const a = decode((await udpAsk(port, query({ name: 'ext2.prod.svc.cluster.local' }), 3000))!);
    // www.example.com was cached 28 s (of the fake clock) ago.
    t.same(lc(summary(a.answers)), ['ext2.prod.svc.cluster.local 5 cname www.example.com', 'www.example.com 72 a 93.184.216.34']);
  });

  t.test('malformed packets: no reply, FORMERR, NOTIMP', async (t) => {
    t.equal(await udpAsk(port, Buffer.from([1, 2, 3]), 300), null, 'shorter than a header: dropped');
    const resp = query({ name: 'web.prod.svc.cluster.local' });
    resp[2] = resp[2]! | 0x80;
    t.equal(await udpAsk(port, resp, 300), null, 'a response (QR set): dropped');
    const qd0 = Buffer.from(query({ name: 'web.prod.svc.cluster.local' }));
    qd0[5] = 0;
    t.equal(decode((await udpAsk(port, qd0))!).rcode, 'FORMERR', 'QDCOUNT 0');
    const qd2 = Buffer.from(query({ name: 'web.prod.svc.cluster.local' }));
    qd2[5] = 2;
    t.equal(decode((await udpAsk(port, qd2))!).rcode, 'FORMERR', 'QDCOUNT 2');
    const status = Buffer.from(query({ name: 'web.prod.svc.cluster.local' }));
    status[2] = (status[2]! & 0x87) | (2 << 3);
    t.equal(decode((await udpAsk(port, status))!).rcode, 'NOTIMP', 'opcode STATUS');
    const chaos = query({ name: 'version.bind', type: 'TXT', qclass: 'CH' });
    t.equal(decode((await udpAsk(port, chaos))!).rcode, 'NOTIMP', 'class CH');
    // A name that is a pointer to itself (loop), and a forward pointer.
    const loop = Buffer.concat([Buffer.from([0, 9, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]), Buffer.from([0xc0, 12, 0, 1, 0, 1])]);
    t.equal(decode((await udpAsk(port, loop))!).rcode, 'FORMERR', 'compression loop');
    const fwd = Buffer.concat([Buffer.from([0, 9, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]), Buffer.from([0xc0, 30, 0, 1, 0, 1])]);
    t.equal(decode((await udpAsk(port, fwd))!).rcode, 'FORMERR', 'forward pointer');
    const badLabel = Buffer.concat([Buffer.from([0, 9, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]), Buffer.from([0x41, 0x61, 0, 0, 1, 0, 1])]);
    t.equal(decode((await udpAsk(port, badLabel))!).rcode, 'FORMERR', 'label type 0x40');
    const long = Buffer.concat([Buffer.from([0, 9, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]), ...Array.from({ length: 5 }, () => Buffer.concat([Buffer.from([60]), Buffer.alloc(60, 0x61)])), Buffer.from([0, 0, 1, 0, 1])]);
    t.equal(decode((await udpAsk(port, long))!).rcode, 'FORMERR', 'name over 255 bytes');
    const cut = query({ name: 'web.prod.svc.cluster.local' }).subarray(0, 20);
    t.equal(decode((await udpAsk(port, cut))!).rcode, 'FORMERR', 'truncated question');
    const axfr = query({ name: 'cluster.local', type: 'AXFR' });
    t.equal(decode((await udpAsk(port, axfr))!).rcode, 'REFUSED', 'zone transfer');
    // Still alive.
    t.equal(decode((await udpAsk(port, query({ name: 'web.prod.svc.cluster.local' })))!).rcode, 'NOERROR');
  });

  t.test('metrics with CoreDNS names and labels', async (t) => {
    const text = await registry.metrics();
    t.match(text, /coredns_dns_requests_total\{server="dns:\/\/127\.0\.0\.1:0",zone="cluster\.local\.",proto="udp",family="1",type="A"\} \d+/);
    t.match(text, /coredns_dns_requests_total\{[^}]*proto="tcp"/);
    t.match(text, /coredns_dns_responses_total\{[^}]*rcode="NXDOMAIN"\} \d+/);
    t.match(text, /coredns_dns_responses_total\{[^}]*rcode="FORMERR"\} \d+/);
    t.match(text, /coredns_dns_request_duration_seconds_bucket\{[^}]*le="0.00025"\} \d+/);
    t.match(text, /coredns_dns_request_duration_seconds_count\{[^}]*type="A"\} \d+/);
    t.match(text, /coredns_cache_hits_total\{server="[^"]+",type="success"\} [1-9]/);
    t.match(text, /coredns_cache_hits_total\{server="[^"]+",type="denial"\} [1-9]/);
    t.match(text, /coredns_cache_misses_total\{server="[^"]+"\} [1-9]/);
    t.match(text, new RegExp(`coredns_forward_requests_total\\{to="127.0.0.1:${up.port}"\\} [1-9]`));
  });

  t.test('/health and /ready', async (t) => {
    const h = await startHttp('127.0.0.1:0', s, registry);
    const addr = h.address() as net.AddressInfo;
    const get = async (p: string) => {
      const r = await fetch(`http://127.0.0.1:${addr.port}${p}`);
      return { status: r.status, body: await r.text() };
    };
    t.equal((await get('/health')).status, 200);
    t.equal((await get('/ready')).status, 200);
    reader.synced = false;
    t.equal((await get('/ready')).status, 503);
    reader.synced = true;
    t.match((await get('/metrics')).body, /coredns_dns_requests_total/);
    h.close();
  });
});

t.test('udp6 + udp4 on [::]', async (t) => {
  const s = new DnsServer({ reader: new FakeReader(fixture()), listen: '[::]:0', upstreams: [] });
  try {
    await s.start();
  } catch (e) {
    t.comment(`no IPv6 here: ${(e as Error).message}`);
    return;
  }
  t.teardown(() => s.stop());
  const a = decode((await udpAsk(s.port, query({ name: 'web.prod.svc.cluster.local' })))!);
  t.equal(a.rcode, 'NOERROR', 'over IPv4');
  const a6 = await new Promise<Buffer | null>((resolve) => {
    const c = dgram.createSocket('udp6');
    const timer = setTimeout(() => { c.close(); resolve(null); }, 1000);
    c.on('message', (m) => { clearTimeout(timer); c.close(); resolve(m); });
    c.on('error', () => { clearTimeout(timer); resolve(null); });
    c.send(query({ name: 'web.prod.svc.cluster.local' }), s.port, '::1');
  });
  if (a6) t.equal(decode(a6).rcode, 'NOERROR', 'over IPv6');
  else t.comment('::1 unreachable here');
});
