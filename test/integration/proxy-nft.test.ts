// The proxy against the real kernel: a "node" namespace runs the ruleset (real nft),
// routes between a client pod namespace, an external namespace and three backend
// namespaces, each backend serving TCP and UDP with its own name. Everything lives in
// skt-* namespaces removed at exit.
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { Registry } from 'prom-client';
import type { AgentContext } from '../../src/agent/reconciler.js';
import { Conntrack } from '../../src/os/conntrack.js';
import { realExec } from '../../src/os/exec.js';
import { Nft, type NftRunner } from '../../src/os/nft.js';
import { NftNetlink } from '../../src/os/nftnl.js';
import { MemoryView, slice, svc } from '../../src/proxy/fixtures.js';
import { Proxier } from '../../src/proxy/proxier.js';
import { PROXY_TABLES, proxyTableName, shardOf } from '../../src/proxy/ruleset.js';
import { logger } from '../../src/util/log.js';
import { makeNetns, nsExec, requireRoot } from '../helpers/netns.js';

const BACKEND_CODE = `
const net = require('node:net'), dgram = require('node:dgram');
const name = process.argv[1];
net.createServer((s) => s.end(name)).listen(8080, '0.0.0.0', () => {
  const u = dgram.createSocket('udp4');
  u.on('message', (m, r) => u.send(name, r.port, r.address));
  u.bind(5353, '0.0.0.0', () => console.log('ready'));
});`;

/** Runs a small client script in a namespace; resolves with its stdout lines. */
function client(ns: string, code: string, ...args: string[]): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const p = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', code, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    p.on('close', (c) => (c === 0 ? resolve(out.trim().split('\n').filter(Boolean)) : reject(new Error(`client exit ${c}: ${err}`))));
  });
}

/** n sequential TCP connections; each line is the backend's name or the error code, and the time taken. */
const TCP_CLIENT = `
const net = require('node:net');
const [host, port, n] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3])];
(async () => {
  for (let i = 0; i < n; i++) {
    const t0 = Date.now();
    const r = await new Promise((res) => {
      const s = net.connect({ host, port, timeout: 3000 });
      let d = '';
      s.on('data', (x) => (d += x));
      s.on('end', () => res(d));
      s.on('timeout', () => { s.destroy(); res('TIMEOUT'); });
      s.on('error', (e) => res(e.code));
    });
    console.log(r + ' ' + (Date.now() - t0));
  }
})();`;

/** n UDP requests from one fixed source port, waiting for each answer. */
const UDP_CLIENT = `
const dgram = require('node:dgram');
const [host, port, n, sport] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3]), Number(process.argv[4])];
const s = dgram.createSocket('udp4');
s.bind(sport, async () => {
  for (let i = 0; i < n; i++) {
    const r = await new Promise((res) => {
      const to = setTimeout(() => res('TIMEOUT'), 1500);
      s.once('message', (m) => { clearTimeout(to); res(String(m)); });
      s.send('q', port, host);
    });
    console.log(r);
  }
  s.close();
});`;

if (requireRoot(t)) {
  const node = makeNetns('pnode');
  const pod = makeNetns('ppod');
  const ext = makeNetns('pext');
  const backends = [1, 2, 3].map((i) => ({ ns: makeNetns(`pb${i}`), ip: `10.244.${i}.5`, name: `b${i}` }));
  const procs: ChildProcess[] = [];
  t.teardown(() => {
    for (const p of procs) p.kill('SIGKILL');
  });
  const sh = (ns: string, ...cmd: string[]) => nsExec(ns, cmd);
  const link = (a: string, aIf: string, aAddr: string, b: string, bIf: string, bAddr: string) => {
    sh(a, 'ip', 'link', 'add', aIf, 'type', 'veth', 'peer', 'name', bIf, 'netns', b);
    sh(a, 'ip', 'addr', 'add', aAddr, 'dev', aIf);
    sh(b, 'ip', 'addr', 'add', bAddr, 'dev', bIf);
    sh(a, 'ip', 'link', 'set', aIf, 'up');
    sh(b, 'ip', 'link', 'set', bIf, 'up');
  };
  sh(node.name, 'sysctl', '-qw', 'net.ipv4.ip_forward=1');
  link(node.name, 'to-pod', '10.244.0.1/24', pod.name, 'eth0', '10.244.0.2/24');
  sh(pod.name, 'ip', 'route', 'add', 'default', 'via', '10.244.0.1');
  link(node.name, 'uplink', '192.168.50.1/24', ext.name, 'eth0', '192.168.50.2/24');
  // A node has a default route; without one, unknown destinations (a ClusterIP) fail routing before any hook.
  sh(node.name, 'ip', 'route', 'add', 'default', 'via', '192.168.50.2');
  for (const [i, b] of backends.entries()) {
    link(node.name, `to-b${i + 1}`, `10.244.${i + 1}.1/24`, b.ns.name, 'eth0', `${b.ip}/24`);
    sh(b.ns.name, 'ip', 'route', 'add', 'default', 'via', `10.244.${i + 1}.1`);
  }

  const startBackends = () =>
    Promise.all(
      backends.map(
        (b) =>
          new Promise<void>((resolve, reject) => {
            const p = spawn('ip', ['netns', 'exec', b.ns.name, process.execPath, '-e', BACKEND_CODE, b.name], { stdio: ['ignore', 'pipe', 'inherit'] });
            procs.push(p);
            p.stdout.once('data', () => resolve());
            p.once('exit', (c) => reject(new Error(`backend ${b.name} exited ${c}`)));
          }),
      ),
    );

  const view = new MemoryView();
  const nft = new Nft(realExec, { netns: node.name });
  // test/integration/nftnl-packet.test.ts runs this file with the proxier programming
  // nftables over netlink (NftNetlink) instead of the nft binary; listings still use nft.
  const runner: NftRunner = process.env.SKIFF_PROXY_TEST_RUNNER === 'netlink' ? new NftNetlink({ netns: node.name }) : nft;
  t.comment(`proxier runner: ${runner === nft ? 'nft -f' : 'NftNetlink'}`);
  const mkProxier = () => {
    const ctx: AgentContext = { nodeName: 'node-a', view, registry: new Registry(), log: logger('proxy-it'), exec: realExec };
    return new Proxier(ctx, { clusterCIDR: '10.244.0.0/16', balancing: 'round-robin', nodeIPs: ['192.168.50.1'], healthCheckBind: false }, runner, {
      conntrack: new Conntrack(realExec, { netns: node.name }),
    });
  };
  let proxier = mkProxier();
  const eps = backends.map((b) => b.ip);
  const udpPorts = { ports: [{ name: 'http', port: 8080, protocol: 'TCP' as const }, { name: 'dns', port: 5353, protocol: 'UDP' as const }] };
  const webSvc = svc('web', {
    clusterIP: '10.96.0.10',
    type: 'NodePort',
    ports: [
      { name: 'http', port: 80, targetPort: 8080, nodePort: 30080 },
      { name: 'dns', protocol: 'UDP', port: 53, targetPort: 5353, nodePort: 30053 },
    ],
  });

  t.before(async () => {
    await startBackends();
    view.put(webSvc, slice('web', eps, udpPorts), svc('empty', { clusterIP: '10.96.0.12' }));
    await proxier.sync({ full: true, changes: [] });
  });

  t.test('round-robin: 6 new connections from a pod land 1,2,3,1,2,3 without masquerade', async (t) => {
    const r = await client(pod.name, TCP_CLIENT, '10.96.0.10', '80', '6');
    t.same(r.map((l) => l.split(' ')[0]), ['b1', 'b2', 'b3', 'b1', 'b2', 'b3']);
    // The backends saw the pod's own address: check conntrack's reply tuple (no SNAT).
    const ct = sh(node.name, 'conntrack', '-L', '-p', 'tcp', '--orig-dst', '10.96.0.10');
    t.match(ct, /src=10\.244\.0\.2 dst=10\.96\.0\.10 .* src=10\.244\.1\.5 dst=10\.244\.0\.2/);
  });

  t.test('a service without endpoints refuses at once', async (t) => {
    const [line] = await client(pod.name, TCP_CLIENT, '10.96.0.12', '80', '1');
    const [code, ms] = line!.split(' ');
    t.equal(code, 'ECONNREFUSED');
    t.ok(Number(ms) < 500, `refused in ${ms} ms`);
  });

  t.test('NodePort answers on the node IP from outside (masqueraded), not on 127.0.0.1', async (t) => {
    const r = await client(ext.name, TCP_CLIENT, '192.168.50.1', '30080', '3');
    t.same(r.map((l) => l.split(' ')[0]).sort(), ['b1', 'b2', 'b3']);
    const ct = sh(node.name, 'conntrack', '-L', '-p', 'tcp', '--orig-dst', '192.168.50.1');
    t.match(ct, /src=192\.168\.50\.2 dst=192\.168\.50\.1 .* src=10\.244\.\d\.5 dst=10\.244\.\d\.1 /, 'replies go to the node: masqueraded');
    const [lo] = await client(node.name, TCP_CLIENT, '127.0.0.1', '30080', '1');
    t.match(lo, /^ECONNREFUSED/);
  });

  t.test('partial sync: scaling down changes the rotation and the hairpin set; the chain of a removed service is deleted later', async (t) => {
    const hairpin = () => sh(node.name, 'nft', 'list', 'set', 'ip', 'skiff-proxy', 'hairpin');
    let changes = view.put(slice('web', eps.slice(0, 2), udpPorts));
    await proxier.sync({ full: false, changes });
    const r = await client(pod.name, TCP_CLIENT, '10.96.0.10', '80', '4');
    t.same(r.map((l) => l.split(' ')[0]), ['b1', 'b2', 'b1', 'b2']);
    t.notMatch(hairpin(), new RegExp(`${eps[2]!.replace(/\./g, '\\.')} \\.`), 'the removed endpoint left the hairpin set');
    changes = view.put(slice('web', eps, udpPorts));
    await proxier.sync({ full: false, changes });
    t.match(hairpin(), new RegExp(`${eps[2]!.replace(/\./g, '\\.')} \\.`), 'and is back');

    const serviceChains = async () => (await nft.list(proxyTableName(shardOf('default/tmp')), 'ip'))!.chains.filter((c) => c.name.startsWith('service-')).length;
    changes = view.put(svc('tmp', { clusterIP: '10.96.0.13' }), slice('tmp', [eps[0]!]));
    await proxier.sync({ full: false, changes });
    const before = await serviceChains();
    changes = [...view.remove('Service', 'default/tmp'), ...view.remove('EndpointSlice', 'default/tmp-abc')];
    await proxier.sync({ full: false, changes });
    t.equal(await serviceChains(), before, 'the stale chain is flushed, not yet deleted');
    await proxier.sync({ full: false, changes: [] });
    t.equal(await serviceChains(), before - 1, 'deleted in the next transaction');
  });

  t.test('stale UDP conntrack entries of a removed endpoint are deleted', async (t) => {
    // One client source port: its flow is pinned to the first endpoint.
    const first = await client(pod.name, UDP_CLIENT, '10.96.0.10', '53', '2', '40053');
    t.equal(first[0], first[1], 'pinned while the entry lives');
    const pinned = first[0]!;
    t.match(pinned, /^b[123]$/);
    const remaining = backends.filter((b) => b.name !== pinned).map((b) => b.ip);
    const changes = view.put(slice('web', remaining, udpPorts));
    await proxier.sync({ full: false, changes });
    const ct = sh(node.name, 'conntrack', '-L', '-p', 'udp', '--orig-dst', '10.96.0.10');
    t.notMatch(ct, new RegExp(`src=${backends.find((b) => b.name === pinned)!.ip.replace(/\./g, '\\.')} `), 'entry to the removed endpoint deleted');
    const after = await client(pod.name, UDP_CLIENT, '10.96.0.10', '53', '1', '40053');
    t.not(after[0], pinned, `the same client flow now reaches a live endpoint (${after[0]})`);
    t.match(after[0], /^b[123]$/);
    await proxier.sync({ full: false, changes: view.put(slice('web', eps, udpPorts)) });
  });

  t.test('a restarted agent adopts the table and the rotation starts over', async (t) => {
    await proxier.close();
    proxier = mkProxier();
    await proxier.sync({ full: true, changes: [] });
    const r = await client(pod.name, TCP_CLIENT, '10.96.0.10', '80', '3');
    t.same(r.map((l) => l.split(' ')[0]), ['b1', 'b2', 'b3']);
    const tables = sh(node.name, 'nft', 'list', 'tables');
    const mine = tables.trim().split('\n').filter((l) => l.includes('skiff-proxy'));
    t.same(mine.sort(), PROXY_TABLES.map((x) => `table ip ${proxyTableName(x)}`).sort(), 'the main table and the shards, each replaced in place');
  });

  t.test('cleanup removes the table', async (t) => {
    await proxier.cleanup();
    for (const x of PROXY_TABLES) t.equal(await nft.list(proxyTableName(x), 'ip'), undefined, proxyTableName(x));
    await proxier.close();
  });
}
