// The fast path's UDP port belongs to this server alone. Its sockets use SO_REUSEPORT
// (one per thread), and the kernel lets any other SO_REUSEPORT socket of the same user
// join such a group: an explicit bind to the port succeeds silently, and a port-0 bind
// may be handed a port another process serves. The kernel then splits the queries
// between the two by a hash of the client's address and port: an answer now and then
// comes from the other server (the CI flake of dns-dig.test.ts, docs/dns.md). Checked:
// a second server on the port fails with EADDRINUSE, a SO_REUSEPORT socket that joins
// later receives nothing, and (root, in a namespace with a two-port ephemeral range)
// port 0 never lands on a port someone else holds.
import dgram from 'node:dgram';
import t from 'tap';
import { dnsNative } from '../../src/dns/fastpath.js';
import { DnsServer } from '../../src/dns/server.js';
import { inNetns } from '../../src/os/netns.js';
import { decode, FakeReader, fixture, query } from '../helpers/dns.js';
import { isRoot, makeNetns, nsExec } from '../helpers/netns.js';

const native = dnsNative();

function server(listen: string, extra: Partial<ConstructorParameters<typeof DnsServer>[0]> = {}): DnsServer {
  return new DnsServer({ reader: new FakeReader(fixture()), listen, upstreams: [], threads: 2, ...extra });
}

t.test('the fast path\'s port is exclusive', { skip: native ? false : 'build/skiff_dns.node not built' }, async (t) => {
  t.test('a second server on the same port is refused (EADDRINUSE)', async (t) => {
    const a = server('127.0.0.1:0');
    await a.start();
    t.teardown(() => a.stop());
    const b = server(`127.0.0.1:${a.port}`);
    await t.rejects(b.start(), { code: 'EADDRINUSE', message: /already in use/ }, 'not silently sharing the port');
    await b.stop();
  });

  t.test('a port another process\'s SO_REUSEPORT socket holds is refused', async (t) => {
    const other = dgram.createSocket({ type: 'udp4', reusePort: true });
    await new Promise<void>((r) => other.bind(0, '127.0.0.1', r));
    t.teardown(() => other.close());
    const s = server(`127.0.0.1:${other.address().port}`);
    await t.rejects(s.start(), { code: 'EADDRINUSE' });
    await s.stop();
  });

  t.test('a SO_REUSEPORT socket that joins the port later receives no query', async (t) => {
    const s = server('127.0.0.1:0');
    await s.start();
    t.teardown(() => s.stop());
    // What knotd or a port-0 bind of another program can do: join the group.
    const intruder = dgram.createSocket({ type: 'udp4', reusePort: true });
    let stolen = 0;
    intruder.on('message', () => stolen++);
    await new Promise<void>((resolve, reject) => {
      intruder.once('error', reject); // e.g. a Node without dgram's reusePort (it needs 22.12+)
      intruder.bind(s.port, '127.0.0.1', resolve);
    });
    t.teardown(() => intruder.close());
    // 60 clients (each its own source port, so its own hash), one query each.
    const answers = await Promise.all(Array.from({ length: 60 }, (_, i) => new Promise<boolean>((resolve) => {
      const c = dgram.createSocket('udp4');
      const timer = setTimeout(() => { c.close(); resolve(false); }, 1500);
      c.on('message', (m) => {
        clearTimeout(timer);
        c.close();
        const d = decode(m);
        resolve(d.id === 1000 + i && d.answers?.[0]?.type === 'NS');
      });
      c.send(query({ name: 'cluster.local', type: 'NS', id: 1000 + i }), s.port, '127.0.0.1');
    })));
    t.equal(stolen, 0, 'the intruder got none of the queries');
    t.equal(answers.filter(Boolean).length, 60, 'the server answered all 60');
  });

  t.test('port 0 is never a port someone else serves', { skip: isRoot() ? false : 'needs root: a network namespace with a two-port ephemeral range' }, async (t) => {
    const ns = makeNetns('dn-port');
    // Per namespace: this namespace's port-0 binds may only use 40000 and 40001.
    nsExec(ns.name, ['sysctl', '-q', '-w', 'net.ipv4.ip_local_port_range=40000 40001']);
    const held = inNetns(ns.path, () => native!.bindUdp('127.0.0.1', 40000, false));
    t.teardown(() => native!.closeFd(held));
    const ports: number[] = [];
    for (let i = 0; i < 10; i++) {
      const s = server('127.0.0.1:0', { netnsPath: ns.path });
      await s.start();
      ports.push(s.port);
      await s.stop();
    }
    t.same(ports, Array(10).fill(40001), 'every server got the free port (40000 is held by another socket)');
  });
});
