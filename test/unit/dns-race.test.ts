// Concurrency of the server's handler and its caches (the fast path's native cache, the
// zone's templates, the forward cache) over real sockets on 127.0.0.1:
// - interleaving: a forwarded query waits on a slow upstream while zone queries are
//   answered; each answer is the right one, the zone's are stored in the native cache
//   under their own key, the forwarded one never is;
// - no cached answer outlives a change: after each change of a Service, the very next
//   UDP query (native cache included) sees it;
// - stress: concurrent mixed queries (apex NS/SOA, Services, NXDOMAIN, forwarded names
//   to a fake upstream that delays its answers) while a Service and a Namespace flip
//   every few ms;
//   every answer is checked against the zone's truth. Bounded: about 5 s.
import dgram from 'node:dgram';
import dnsPacket from 'dns-packet';
import t from 'tap';
import { dnsNative } from '../../src/dns/fastpath.js';
import { DnsServer } from '../../src/dns/server.js';
import { decode, FakeReader, fixture, ns, query, svc, type Decoded } from '../helpers/dns.js';

const UPSTREAM_ADDR = '192.0.2.7';

/** An upstream that answers A with UPSTREAM_ADDR (TTL 1) after `delay()` ms; NODATA for other types. */
async function slowUpstream(delay: () => number): Promise<{ port: number; count: () => number; close: () => void }> {
  const u = dgram.createSocket('udp4');
  let n = 0;
  u.on('message', (m, r) => {
    n++;
    const q = dnsPacket.decode(m);
    const qq = q.questions![0]!;
    const answers = qq.type === 'A' ? [{ name: qq.name, type: 'A' as const, ttl: 1, data: UPSTREAM_ADDR }] : [];
    const out = dnsPacket.encode({ type: 'response', id: q.id, flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE, questions: q.questions, answers });
    setTimeout(() => u.send(out, r.port, r.address), delay());
  });
  await new Promise<void>((r) => u.bind(0, '127.0.0.1', r));
  return { port: u.address().port, count: () => n, close: () => u.close() };
}

/** One client socket, many queries in flight, answers matched by ID. */
class Client {
  private readonly s = dgram.createSocket('udp4');
  private readonly waiting = new Map<number, (d: Decoded | null) => void>();
  private next = 1;
  constructor(private readonly port: number) {
    this.s.on('message', (m) => {
      const id = m.readUInt16BE(0);
      const w = this.waiting.get(id);
      if (!w) return;
      this.waiting.delete(id);
      w(decode(m));
    });
  }
  async open(): Promise<void> {
    await new Promise<void>((r) => this.s.bind(0, '127.0.0.1', r));
  }
  ask(name: string, type = 'A', timeoutMs = 3000): Promise<Decoded | null> {
    const id = this.next;
    this.next = (this.next % 65535) + 1;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        if (this.waiting.delete(id)) resolve(null);
      }, timeoutMs);
      this.waiting.set(id, (d) => {
        clearTimeout(timer);
        resolve(d);
      });
      this.s.send(query({ name, type, id, edns: 1232 }), this.port, '127.0.0.1');
    });
  }
  close(): void {
    this.s.close();
  }
}

const data = (d: Decoded | null) => (d?.answers ?? []).map((a) => {
  const v = (a as { data?: unknown }).data;
  return `${a.type} ${typeof v === 'string' ? v : JSON.stringify(v)}`;
});
const CHURN = svc('prod', 'churn', { clusterIP: '10.96.7.7', clusterIPs: ['10.96.7.7'] });

t.test('concurrency of the handler and its caches', async (t) => {
  let delay = () => 50;
  const up = await slowUpstream(() => delay());
  const reader = new FakeReader(fixture());
  // Forwarded answers are not kept (maxTtl 0 would make them expire at once): each forward reaches the upstream.
  const s = new DnsServer({ reader, listen: '127.0.0.1:0', upstreams: [`127.0.0.1:${up.port}`], ...(dnsNative() ? { threads: 2 } : {}) });
  await s.start();
  const c = new Client(s.port);
  await c.open();
  t.teardown(async () => {
    c.close();
    await s.stop();
    up.close();
  });

  t.test('a zone answer handled while a forward waits is its own, and cached under its own key', async (t) => {
    delay = () => 300;
    const fwd = c.ask('slow.example.org');
    // Let the forward reach the upstream (it is now awaiting), then ask zone names.
    await new Promise((r) => setTimeout(r, 50));
    const [ns, soa, nodata, web] = await Promise.all([c.ask('cluster.local', 'NS'), c.ask('cluster.local', 'SOA'), c.ask('web.prod.svc.cluster.local', 'MX'), c.ask('web.prod.svc.cluster.local')]);
    t.same(data(ns), ['NS ns.dns.cluster.local'], 'apex NS');
    t.equal(soa?.answers?.[0]?.type, 'SOA', 'apex SOA');
    t.equal(nodata?.rcode, 'NOERROR');
    t.same(data(nodata), [], 'NODATA for MX');
    t.same(data(web), ['A 10.96.0.10']);
    const f = await fwd;
    t.same(data(f), [`A ${UPSTREAM_ADDR}`], 'the forwarded answer, after the zone answers');
    t.equal(f?.questions?.[0]?.name, 'slow.example.org', 'for its own question');
    // The same questions again: the native cache answers the zone names with the same records.
    const hits0 = s.metrics.fastPath().hits;
    t.same(data(await c.ask('cluster.local', 'NS')), ['NS ns.dns.cluster.local'], 'apex NS from the cache');
    t.same(data(await c.ask('web.prod.svc.cluster.local', 'MX')), [], 'NODATA from the cache');
    if (dnsNative()) t.equal(s.metrics.fastPath().hits - hits0, 2, 'both from the native cache');
    delay = () => 0;
  });

  t.test('no cached answer outlives a change (the very next query sees it)', async (t) => {
    let wrong = 0;
    for (let i = 0; i < 40; i++) {
      const want = i % 2 === 0;
      if (want) reader.upsert(CHURN);
      else reader.remove('Service', 'prod/churn');
      // Twice: the first may be a miss answered by JS, the second a native cache hit.
      for (let k = 0; k < 2; k++) {
        const d = await c.ask('churn.prod.svc.cluster.local');
        const ok = want ? d?.rcode === 'NOERROR' && data(d)[0] === 'A 10.96.7.7' : d?.rcode === 'NXDOMAIN';
        if (!ok) wrong++;
      }
    }
    t.equal(wrong, 0, '80 queries right after 40 changes');
  });

  t.test('stress: concurrent mixed queries while the zone changes', async (t) => {
    delay = () => Math.random() * 20;
    let present = false;
    // A Service and a Namespace come and go (the apex and svc.<zone> must never waver).
    const flip = setInterval(() => {
      present = !present;
      if (present) {
        reader.upsert(CHURN);
        reader.upsert(ns('churn-ns'));
      } else {
        reader.remove('Service', 'prod/churn');
        reader.remove('Namespace', 'churn-ns');
      }
    }, 3);
    const bad: string[] = [];
    let total = 0;
    const check = (what: string, d: Decoded | null, ok: boolean) => {
      total++;
      if (!ok && bad.length < 10) bad.push(`${what}: ${d ? `${d.rcode} ${JSON.stringify(data(d))}` : 'no answer'}`);
      else if (!ok) bad.push('');
    };
    const until = Date.now() + 4000;
    try {
      while (Date.now() < until) {
        const batch: Promise<void>[] = [];
        for (let k = 0; k < 40; k++) {
          const r = Math.random();
          if (r < 0.25) batch.push(c.ask('cluster.local', 'NS').then((d) => check('apex NS', d, d?.rcode === 'NOERROR' && data(d).join() === 'NS ns.dns.cluster.local')));
          else if (r < 0.35) batch.push(c.ask('cluster.local', 'SOA').then((d) => check('apex SOA', d, d?.rcode === 'NOERROR' && d.answers?.length === 1 && d.answers[0]!.type === 'SOA')));
          else if (r < 0.55) {
            const name = `h${k}.d${Math.floor(Math.random() * 8)}.example.org`;
            batch.push(c.ask(name).then((d) => check(name, d, d?.rcode === 'NOERROR' && d.questions?.[0]?.name === name && data(d).join() === `A ${UPSTREAM_ADDR}`)));
          } else if (r < 0.75) batch.push(c.ask('web.prod.svc.cluster.local').then((d) => check('web A', d, d?.rcode === 'NOERROR' && data(d).join() === 'A 10.96.0.10')));
          else if (r < 0.8) batch.push(c.ask('churn-ns.svc.cluster.local').then((d) => check('churn-ns', d, (d?.rcode === 'NOERROR' || d?.rcode === 'NXDOMAIN') && data(d).length === 0 && (d.authorities ?? []).some((a) => a.type === 'SOA'))));
          else if (r < 0.85) batch.push(c.ask('nope.prod.svc.cluster.local').then((d) => check('nope', d, d?.rcode === 'NXDOMAIN' && (d.authorities ?? []).some((a) => a.type === 'SOA'))));
          // The flipping Service: one of its two states, nothing else.
          else batch.push(c.ask('churn.prod.svc.cluster.local').then((d) => check('churn', d, (d?.rcode === 'NOERROR' && data(d).join() === 'A 10.96.7.7') || (d?.rcode === 'NXDOMAIN' && data(d).length === 0))));
        }
        await Promise.all(batch);
      }
    } finally {
      clearInterval(flip);
    }
    t.ok(total > 1000, `${total} queries`);
    t.same(bad.filter(Boolean), [], `no wrong answer (${bad.length} of ${total})`);
    t.ok(up.count() > 0, 'forwards reached the slow upstream');
  });
});
