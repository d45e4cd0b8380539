// The fast path's UDP port belongs to this server alone. It used one SO_REUSEPORT
// socket per thread, and the kernel lets any other SO_REUSEPORT socket of the same user
// share such a port: an explicit bind succeeded silently, a port-0 bind could be handed
// the port, and the kernel then split the queries. dig sets SO_REUSEPORT on its query
// socket and binds port 0: when it was given the server's port, its connected socket
// received its own query and dig printed it as the answer, NOERROR with no records (the
// CI flake of dns-dig.test.ts, docs/dns.md). Checked: a second server on the port fails
// with EADDRINUSE, a SO_REUSEPORT socket cannot join, and (root, in a namespace with a
// two-port ephemeral range) neither a server's port 0 nor a client's SO_REUSEPORT
// port-0 bind (dig's) lands on a port someone else holds.
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import dgram from 'node:dgram';
import t from 'tap';
import { dnsNative } from '../../src/dns/fastpath.js';
import { DnsServer } from '../../src/dns/server.js';
import { inNetns } from '../../src/os/netns.js';
import { decode, FakeReader, fixture, query } from '../helpers/dns.js';
import { isRoot, makeNetns, nsExec } from '../helpers/netns.js';

const native = dnsNative();
const run = promisify(execFile);

/** The apex NS targets, asked from a fresh client socket. */
function askNs(port: number): Promise<string[]> {
  return new Promise((resolve) => {
    const c = dgram.createSocket('udp4');
    const timer = setTimeout(() => { c.close(); resolve([]); }, 2000);
    c.on('message', (m) => {
      clearTimeout(timer);
      c.close();
      resolve((decode(m).answers ?? []).map((a) => String((a as { data?: unknown }).data)));
    });
    c.send(query({ name: 'cluster.local', type: 'NS', id: 7 }), port, '127.0.0.1');
  });
}

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

  t.test('a SO_REUSEPORT socket cannot join the port later', async (t) => {
    const s = server('127.0.0.1:0');
    await s.start();
    t.teardown(() => s.stop());
    // What knotd or another server's port-0 bind could do to a SO_REUSEPORT port: join it.
    const intruder = dgram.createSocket({ type: 'udp4', reusePort: true });
    const err = await new Promise<NodeJS.ErrnoException | null>((resolve) => {
      intruder.once('error', resolve);
      intruder.bind(s.port, '127.0.0.1', () => resolve(null));
    });
    intruder.close();
    t.equal(err?.code, 'EADDRINUSE', 'refused by the kernel');
    t.same(await askNs(s.port), ['ns.dns.cluster.local'], 'the server still answers');
  });

  t.test('a client\'s SO_REUSEPORT port-0 bind (what dig does) never gets the server\'s port', { skip: isRoot() ? false : 'needs root: a network namespace with a two-port ephemeral range' }, async (t) => {
    const ns = makeNetns('dn-cli');
    nsExec(ns.name, ['sysctl', '-q', '-w', 'net.ipv4.ip_local_port_range=40000 40001']);
    const s = server('127.0.0.1:40000', { netnsPath: ns.path });
    await s.start();
    t.teardown(() => s.stop());
    // dig 9.18 sets SO_REUSEPORT on its query socket, binds 0.0.0.0:0 and connects.
    const ports = inNetns(ns.path, () => Array.from({ length: 10 }, () => {
      const fd = native!.bindUdp('0.0.0.0', 0, false, true);
      const p = native!.localPort(fd);
      native!.closeFd(fd);
      return p;
    }));
    t.same(ports, Array(10).fill(40001), 'every client bind got the other port');
    if (spawnSync('sh', ['-c', 'command -v dig']).status === 0) {
      // Given the server's own port, dig's connected socket received its own query and
      // printed it as the answer: NOERROR, no records (the dns-dig CI flake).
      // Asynchronously: the server answers misses on this process's event loop.
      const answers: string[] = [];
      for (let i = 0; i < 5; i++) {
        const r = await run('ip', ['netns', 'exec', ns.name, 'dig', '@127.0.0.1', '-p', '40000', '+time=2', '+tries=1', '+nocookie', '+norecurse', '+short', 'cluster.local', 'NS']).catch((e: { stdout?: string }) => ({ stdout: e.stdout ?? '' }));
        answers.push(r.stdout.trim());
      }
      t.same(answers, Array(5).fill('ns.dns.cluster.local.'), 'dig gets the server\'s answer every time');
    }
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
