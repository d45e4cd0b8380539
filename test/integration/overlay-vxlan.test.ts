// The overlay against the real kernel: a lab switch and two node namespaces built
// with the lab's topology code (prefix skt-), the overlay reconciler run in-process
// against each node's namespace, pods as plain namespaces on a bridge per node.
// Proves: cross-node pod traffic over VXLAN with the pod source IP preserved, the
// MTU, the nftables table, forwarding only inside the node namespaces, the ICMP
// prober's socket living in the node namespace, and removal of a node's entries.
import t from 'tap';
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { Registry } from 'prom-client';
import { makeNetns, nsExec, PREFIX, requireRoot } from '../helpers/netns.js';
import type { Node } from '../../src/cluster/types.js';
import { OverlayReconciler, readNetSysctl } from '../../src/overlay/reconciler.js';
import { IcmpPinger } from '../../src/overlay/probe.js';
import { OVERLAY_ROUTE_PROTO } from '../../src/overlay/plan.js';
import { addNode, createSwitch, destroyNamespaces, removeNode, type NodeWiring } from '../../src/lab/topology.js';
import { Netlink } from '../../src/os/netlink.js';

const NODE = process.execPath;
const linkNames = () => [...execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' }).matchAll(/^\d+: ([^:@]+)/gm)].map((m) => m[1]).sort().join(' ');

if (requireRoot(t)) {
  const lab = 'ov' + randomBytes(3).toString('hex');
  process.on('exit', () => destroyNamespaces(PREFIX, lab));
  t.teardown(() => {
    destroyNamespaces(PREFIX, lab);
  });

  const rootBefore = {
    forward: readNetSysctl(undefined, 'net.ipv4.ip_forward'),
    tables: execFileSync('nft', ['list', 'tables'], { encoding: 'utf8' }),
    links: linkNames(),
    routes: execFileSync('ip', ['route', 'show', 'table', 'all'], { encoding: 'utf8' }),
  };

  const topo = createSwitch({ lab, prefix: PREFIX });
  const n1 = addNode(topo, 1);
  const n2 = addNode(topo, 2);

  const nodes: Node[] = [n1, n2].map((w, i) => ({
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: w.name, annotations: {} },
    spec: { podCIDR: `10.244.${i + 1}.0/24` },
  }));
  const annotate = async (name: string, a: Record<string, string>) => {
    const n = nodes.find((x) => x.metadata.name === name);
    if (!n) throw new Error(`no node ${name}`);
    n.metadata.annotations = { ...n.metadata.annotations, ...a };
  };
  const registries = new Map<string, Registry>();
  const recs = new Map<string, OverlayReconciler>();
  for (const w of [n1, n2]) {
    const registry = new Registry();
    registries.set(w.name, registry);
    recs.set(
      w.name,
      new OverlayReconciler(
        { nodeName: w.name, nodes: () => nodes, annotate, netnsPath: w.nsPath, registry },
        { clusterCIDRs: ['10.244.0.0/16'], probeIntervalMs: 200, probeTimeoutMs: 500 },
      ),
    );
  }
  t.teardown(async () => {
    for (const r of recs.values()) await r.stop();
  });
  const syncAll = async () => {
    for (const r of recs.values()) await r.sync({ full: true, changes: [] });
  };

  /** A pod: a namespace with eth0 on the node's bridge skiff0 (10.244.K.1/24). */
  const pod = (w: NodeWiring, k: number, host: number) => {
    const p = makeNetns('pod');
    const br = 'skiff0';
    try {
      nsExec(w.ns, ['ip', 'link', 'show', br]);
    } catch {
      nsExec(w.ns, ['ip', 'link', 'add', br, 'mtu', '1450', 'type', 'bridge']);
      nsExec(w.ns, ['ip', 'addr', 'add', `10.244.${k}.1/24`, 'dev', br]);
      nsExec(w.ns, ['ip', 'link', 'set', br, 'up']);
    }
    const hv = `veth${host}`;
    nsExec(w.ns, ['ip', 'link', 'add', hv, 'mtu', '1450', 'type', 'veth', 'peer', 'name', 'eth0', 'mtu', '1450', 'netns', p.name]);
    nsExec(w.ns, ['ip', 'link', 'set', hv, 'master', br, 'up']);
    nsExec(p.name, ['ip', 'addr', 'add', `10.244.${k}.${host}/24`, 'dev', 'eth0']);
    nsExec(p.name, ['ip', 'link', 'set', 'eth0', 'up']);
    nsExec(p.name, ['ip', 'route', 'add', 'default', 'via', `10.244.${k}.1`]);
    return { ...p, ip: `10.244.${k}.${host}` };
  };

  t.test('first syncs: device, published VTEPs, peer entries', async (t) => {
    await syncAll();
    t.match(nodes[0]!.metadata.annotations!['skiff.io/vtep-mac'], /^02|[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
    t.equal(nodes[0]!.metadata.annotations!['skiff.io/underlay-ip'], n1.underlayIp);
    t.equal(nodes[1]!.metadata.annotations!['skiff.io/underlay-ip'], n2.underlayIp);
    await syncAll(); // now each sees the other's annotations

    const dev = nsExec(n1.ns, ['ip', '-d', 'link', 'show', 'skiff.1']);
    t.match(dev, /mtu 1450/, 'VXLAN MTU = underlay 1500 - 50');
    t.match(dev, /vxlan id 1 .*dstport 8472/);
    t.match(dev, new RegExp(`link/ether ${nodes[0]!.metadata.annotations!['skiff.io/vtep-mac']}`), 'published MAC is the device MAC');
    t.match(nsExec(n1.ns, ['ip', 'route', 'show', '10.244.2.0/24']), /10\.244\.2\.0\/24 via 10\.244\.2\.0 dev skiff\.1 proto 95 onlink/);
    t.match(nsExec(n1.ns, ['ip', 'neigh', 'show', 'dev', 'skiff.1']), new RegExp(`10\\.244\\.2\\.0 lladdr ${nodes[1]!.metadata.annotations!['skiff.io/vtep-mac']} PERMANENT`));
    t.match(nsExec(n1.ns, ['bridge', 'fdb', 'show', 'dev', 'skiff.1']), new RegExp(`${nodes[1]!.metadata.annotations!['skiff.io/vtep-mac']} dst ${n2.underlayIp} self permanent`));
    t.match(nsExec(n1.ns, ['ip', '-o', 'addr', 'show', 'dev', 'skiff.1']), /10\.244\.1\.0\/32/);
    t.equal(readNetSysctl(n1.nsPath, 'net.ipv4.ip_forward'), '1', 'forwarding on in the node namespace');
    const tables = nsExec(n1.ns, ['nft', 'list', 'table', 'inet', 'skiff-overlay']);
    t.match(tables, /masquerade/);
    // A second sync changes nothing.
    await recs.get('node1')!.sync({ full: false, changes: [] });
    t.equal(recs.get('node1')!.overlayStatus().lastOps, 0, 'converged');
  });

  t.test('pods on two nodes talk over the overlay, source IP preserved', async (t) => {
    const p1 = pod(n1, 1, 2);
    const p2 = pod(n2, 2, 2);
    t.match(nsExec(p1.name, ['ping', '-c', '2', '-W', '2', p2.ip]), /2 received/, 'cross-node ping');
    // 1400-byte payload + 28 bytes of headers fits the 1450 MTU without fragmentation.
    t.match(nsExec(p1.name, ['ping', '-c', '1', '-W', '2', '-M', 'do', '-s', '1400', p2.ip]), /1 received/, 'large packet, DF set');

    // UDP echo in pod2 replies with the source address it saw.
    const server = spawn('ip', ['netns', 'exec', p2.name, NODE, '-e', `
      const s = require('dgram').createSocket('udp4');
      s.on('message', (m, r) => s.send(r.address, r.port, r.address));
      s.bind(9999, () => console.log('ready'));`], { stdio: ['ignore', 'pipe', 'inherit'] });
    t.teardown(() => {
      server.kill();
    });
    await once(server.stdout!, 'data');
    const seen = nsExec(p1.name, [NODE, '-e', `
      const s = require('dgram').createSocket('udp4');
      const timer = setTimeout(() => { console.log('timeout'); process.exit(1); }, 3000);
      s.on('message', (m) => { console.log(m.toString()); clearTimeout(timer); s.close(); });
      s.send('hi', 9999, '${p2.ip}');`]).trim();
    t.equal(seen, p1.ip, 'server saw the client pod IP: no NAT inside the cluster');
  });

  t.test('the prober ICMP socket lives in the node namespace', async (t) => {
    // The underlay address of node2 exists only inside the lab: an answer proves the socket's namespace.
    const pinger = new IcmpPinger(n1.nsPath);
    t.teardown(() => pinger.close());
    const r = await pinger.ping(n2.underlayIp, 1000);
    t.ok(r.ok, `echo reply from ${n2.underlayIp} inside the lab: ${r.error ?? ''}`);
    const overlay = await pinger.ping('10.244.2.0', 1000);
    t.ok(overlay.ok, 'peer answers on its VXLAN-side address');
    // /proc/net/raw is per namespace: our pid's raw ICMP socket shows up in the node's, not in the root's.
    const mine = (out: string) => out.split('\n').filter((l) => l.includes(`pid=${process.pid},`));
    t.ok(mine(nsExec(n1.ns, ['ss', '-w', '-a', '-n', '-p'])).length >= 1, 'raw socket listed in the node namespace');
    t.same(mine(execFileSync('ss', ['-w', '-a', '-n', '-p'], { encoding: 'utf8' })), [], 'and not in the root namespace');
    // The reconciler's prober publishes the peer as up.
    let metrics = '';
    for (let i = 0; i < 30; i++) {
      metrics = await registries.get('node1')!.metrics();
      if (/skiff_overlay_peer_up\{node="node2"\} 1/.test(metrics)) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    t.match(metrics, /skiff_overlay_peer_up\{node="node2"\} 1/);
    t.match(metrics, /skiff_overlay_peer_rtt_seconds\{node="node2"\} [0-9.e-]+/);
  });

  t.test('entries skiff did not create are left alone', async (t) => {
    const nl = Netlink.open(n1.nsPath);
    t.teardown(() => nl.close());
    const dev = (await nl.linkByName('skiff.1'))!;
    await nl.replaceRoute({ dst: '192.168.77.0/24', gw: '10.244.2.0', oif: dev.index, onlink: true, proto: 4 });
    // The kernel refuses NLM_F_REPLACE for the all-zero (flood) MAC: append it as an admin would.
    nsExec(n1.ns, ['bridge', 'fdb', 'append', '00:00:00:00:00:00', 'dev', 'skiff.1', 'dst', '172.31.0.200']);
    await syncAll();
    t.match(nsExec(n1.ns, ['ip', 'route', 'show', '192.168.77.0/24']), /via 10\.244\.2\.0/, 'foreign route kept');
    t.match(nsExec(n1.ns, ['bridge', 'fdb', 'show', 'dev', 'skiff.1']), /00:00:00:00:00:00 dst 172\.31\.0\.200/, 'foreign FDB kept');
    await nl.deleteRoute({ dst: '192.168.77.0/24', gw: '10.244.2.0', oif: dev.index, proto: 4 });
    nsExec(n1.ns, ['bridge', 'fdb', 'del', '00:00:00:00:00:00', 'dev', 'skiff.1', 'dst', '172.31.0.200']);
  });

  t.test('a node that leaves takes its entries with it', async (t) => {
    const gone = nodes.splice(1, 1)[0]!;
    removeNode(topo, 2);
    await recs.get('node1')!.sync({ full: false, changes: [{ type: 'delete', kind: 'Node', key: 'node2', old: gone }] });
    t.equal(nsExec(n1.ns, ['ip', 'route', 'show', 'proto', String(OVERLAY_ROUTE_PROTO)]).trim(), '', 'no overlay routes');
    t.notMatch(nsExec(n1.ns, ['ip', 'neigh', 'show', 'dev', 'skiff.1']), /10\.244\.2\.0/, 'no neighbour');
    t.notMatch(nsExec(n1.ns, ['bridge', 'fdb', 'show', 'dev', 'skiff.1']), /dst 172\.31\.0\.2 /, 'no FDB entry');
    let metrics = await registries.get('node1')!.metrics();
    t.notMatch(metrics, /node="node2"/, 'gauges for the gone peer removed');
  });

  t.test('the root namespace is untouched', async (t) => {
    t.equal(readNetSysctl(undefined, 'net.ipv4.ip_forward'), rootBefore.forward, 'root ip_forward unchanged');
    t.equal(execFileSync('nft', ['list', 'tables'], { encoding: 'utf8' }), rootBefore.tables, 'root nftables unchanged');
    t.equal(linkNames(), rootBefore.links, 'root links unchanged');
    t.equal(execFileSync('ip', ['route', 'show', 'table', 'all'], { encoding: 'utf8' }), rootBefore.routes, 'root routes unchanged');
  });
}
