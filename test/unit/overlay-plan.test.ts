// The overlay plan: desired entries from Node objects, and the diff against the
// kernel that touches only what skiff owns.
import t from 'tap';
import type { Node } from '../../src/cluster/types.js';
import { OVERLAY_ROUTE_PROTO, desiredOverlay, diffOverlay, planOverlay, type CurrentOverlay, type OverlayOp } from '../../src/overlay/plan.js';
import { overlayRuleset } from '../../src/overlay/firewall.js';
import { echoRequest, icmpChecksum, parseEchoReply } from '../../src/overlay/probe.js';

const VX = 7;

function node(name: string, cidr: string | undefined, mac?: string, ip?: string): Node {
  const annotations: Record<string, string> = {};
  if (mac) annotations['skiff.io/vtep-mac'] = mac;
  if (ip) annotations['skiff.io/underlay-ip'] = ip;
  return { apiVersion: 'v1', kind: 'Node', metadata: { name, annotations }, spec: cidr ? { podCIDR: cidr } : {} };
}

const n1 = node('n1', '10.244.1.0/24', '02:00:00:00:00:01', '172.31.0.1');
const n2 = node('n2', '10.244.2.0/24', '02:00:00:00:00:02', '172.31.0.2');
const n3 = node('n3', '10.244.3.0/24', '02:00:00:00:00:03', '172.31.0.3');

const empty = (): CurrentOverlay => ({ neighbors: [], fdb: [], routes: [], addresses: [] });

/** Applies ops to a model of the kernel, as the netlink adapter would. */
function applyOps(cur: CurrentOverlay, ops: OverlayOp[]): CurrentOverlay {
  const s: CurrentOverlay = structuredClone(cur);
  for (const op of ops) {
    switch (op.op) {
      case 'replaceNeighbor':
        s.neighbors = s.neighbors.filter((n) => n.ip !== op.ip).concat({ ip: op.ip, mac: op.mac, permanent: true });
        break;
      case 'deleteNeighbor':
        s.neighbors = s.neighbors.filter((n) => n.ip !== op.ip);
        break;
      case 'replaceFdb': {
        const i = s.fdb.findIndex((f) => f.mac === op.mac);
        if (i >= 0) s.fdb[i] = { mac: op.mac, dst: op.dst, permanent: true };
        else s.fdb.push({ mac: op.mac, dst: op.dst, permanent: true });
        break;
      }
      case 'deleteFdb':
        s.fdb = s.fdb.filter((f) => !(f.mac === op.mac && f.dst === op.dst));
        break;
      case 'replaceRoute':
        s.routes = s.routes.filter((r) => r.dst !== op.dst).concat({ dst: op.dst, gw: op.gw, oif: VX, onlink: true, proto: OVERLAY_ROUTE_PROTO, family: op.family });
        break;
      case 'deleteRoute':
        s.routes = s.routes.filter((r) => !(r.dst === op.dst && r.proto === OVERLAY_ROUTE_PROTO));
        break;
      case 'addAddress':
        s.addresses.push({ cidr: op.cidr, scope: 0 });
        break;
      case 'deleteAddress':
        s.addresses = s.addresses.filter((a) => a.cidr !== op.cidr);
        break;
    }
  }
  return s;
}

t.test('desired entries for every other complete node', async (t) => {
  const d = desiredOverlay('n1', [n1, n2, n3]);
  t.same(d.addresses, ['10.244.1.0/32'], 'own .0 on the vxlan device');
  t.same(d.neighbors, [
    { ip: '10.244.2.0', mac: '02:00:00:00:00:02' },
    { ip: '10.244.3.0', mac: '02:00:00:00:00:03' },
  ]);
  t.same(d.fdb, [
    { mac: '02:00:00:00:00:02', dst: '172.31.0.2' },
    { mac: '02:00:00:00:00:03', dst: '172.31.0.3' },
  ]);
  t.same(d.routes, [
    { dst: '10.244.2.0/24', gw: '10.244.2.0', family: 4 },
    { dst: '10.244.3.0/24', gw: '10.244.3.0', family: 4 },
  ]);
  t.same(d.skipped, []);
});

t.test('incomplete or invalid nodes are skipped with a reason', async (t) => {
  const d = desiredOverlay('n1', [
    n1,
    node('nocidr', undefined, '02:00:00:00:00:09', '172.31.0.9'),
    node('nomac', '10.244.4.0/24', undefined, '172.31.0.4'),
    node('badmac', '10.244.5.0/24', 'zz:00:00:00:00:01', '172.31.0.5'),
    node('mcast', '10.244.6.0/24', '01:00:5e:00:00:01', '172.31.0.6'),
    node('noip', '10.244.7.0/24', '02:00:00:00:00:07'),
    node('badip', '10.244.8.0/24', '02:00:00:00:00:08', '172.31.0'),
    node('overlap', '10.244.1.128/25', '02:00:00:00:00:0a', '172.31.0.10'),
    node('sameip', '10.244.11.0/24', '02:00:00:00:00:0b', '172.31.0.1'),
  ]);
  t.same(d.peers, []);
  const reasons = Object.fromEntries(d.skipped.map((s) => [s.node, s.reason]));
  t.match(reasons.nocidr, /podCIDR not assigned/);
  t.match(reasons.nomac, /skiff\.io\/vtep-mac missing/);
  t.match(reasons.badmac, /invalid value "zz:00/);
  t.match(reasons.mcast, /unicast/);
  t.match(reasons.noip, /underlay-ip missing/);
  t.match(reasons.badip, /invalid value "172\.31\.0"/);
  t.match(reasons.overlap, /overlaps 10\.244\.1\.0\/24 of node n1/);
  t.match(reasons.sameip, /this node's own/);
});

t.test('two nodes claiming one CIDR or MAC: the first by name wins, on every node alike', async (t) => {
  const a = node('a', '10.244.9.0/24', '02:00:00:00:00:aa', '172.31.0.20');
  const b = node('b', '10.244.9.0/24', '02:00:00:00:00:bb', '172.31.0.21');
  const c = node('c', '10.244.10.0/24', '02:00:00:00:00:aa', '172.31.0.22');
  const d = desiredOverlay('n1', [n1, c, b, a]);
  t.same(d.peers.map((p) => p.node), ['a']);
  t.same(d.skipped.map((s) => s.node).sort(), ['b', 'c']);
});

t.test('add, converge, change and remove nodes', async (t) => {
  let cur = empty();
  let { ops } = planOverlay('n1', [n1, n2], cur, VX);
  t.same(ops.map((o) => o.op), ['replaceFdb', 'replaceNeighbor', 'replaceRoute', 'addAddress']);
  cur = applyOps(cur, ops);
  t.same(planOverlay('n1', [n1, n2], cur, VX).ops, [], 'converged: no ops');

  // A node joins.
  ops = planOverlay('n1', [n1, n2, n3], cur, VX).ops;
  t.same(ops, [
    { op: 'replaceFdb', mac: '02:00:00:00:00:03', dst: '172.31.0.3' },
    { op: 'replaceNeighbor', ip: '10.244.3.0', mac: '02:00:00:00:00:03' },
    { op: 'replaceRoute', dst: '10.244.3.0/24', gw: '10.244.3.0', family: 4 },
  ]);
  cur = applyOps(cur, ops);

  // n2 moves to another underlay IP: only its FDB entry is replaced.
  const n2ip = node('n2', '10.244.2.0/24', '02:00:00:00:00:02', '172.31.0.42');
  ops = planOverlay('n1', [n1, n2ip, n3], cur, VX).ops;
  t.same(ops, [{ op: 'replaceFdb', mac: '02:00:00:00:00:02', dst: '172.31.0.42' }]);
  cur = applyOps(cur, ops);

  // n2 gets a new MAC: the old FDB entry goes, neighbour replaced.
  const n2mac = node('n2', '10.244.2.0/24', '02:00:00:00:00:22', '172.31.0.42');
  ops = planOverlay('n1', [n1, n2mac, n3], cur, VX).ops;
  t.same(ops, [
    { op: 'deleteFdb', mac: '02:00:00:00:00:02', dst: '172.31.0.42' },
    { op: 'replaceFdb', mac: '02:00:00:00:00:22', dst: '172.31.0.42' },
    { op: 'replaceNeighbor', ip: '10.244.2.0', mac: '02:00:00:00:00:22' },
  ]);
  cur = applyOps(cur, ops);

  // n3 changes its pod CIDR: old route and neighbour removed first, new ones added.
  const n3cidr = node('n3', '10.244.30.0/24', '02:00:00:00:00:03', '172.31.0.3');
  ops = planOverlay('n1', [n1, n2mac, n3cidr], cur, VX).ops;
  t.same(ops, [
    { op: 'deleteRoute', dst: '10.244.3.0/24', gw: '10.244.3.0', family: 4 },
    { op: 'deleteNeighbor', ip: '10.244.3.0' },
    { op: 'replaceNeighbor', ip: '10.244.30.0', mac: '02:00:00:00:00:03' },
    { op: 'replaceRoute', dst: '10.244.30.0/24', gw: '10.244.30.0', family: 4 },
  ]);
  cur = applyOps(cur, ops);

  // n2 disappears: all three of its entries go.
  ops = planOverlay('n1', [n1, n3cidr], cur, VX).ops;
  t.same(ops, [
    { op: 'deleteRoute', dst: '10.244.2.0/24', gw: '10.244.2.0', family: 4 },
    { op: 'deleteNeighbor', ip: '10.244.2.0' },
    { op: 'deleteFdb', mac: '02:00:00:00:00:22', dst: '172.31.0.42' },
  ]);
  cur = applyOps(cur, ops);
  t.same(planOverlay('n1', [n1, n3cidr], cur, VX).ops, []);

  // A node whose annotations become incomplete loses its entries too.
  ops = planOverlay('n1', [n1, node('n3', '10.244.30.0/24')], cur, VX).ops;
  t.same(ops.map((o) => o.op).sort(), ['deleteFdb', 'deleteNeighbor', 'deleteRoute']);
});

t.test('entries skiff did not create are left alone', async (t) => {
  const cur: CurrentOverlay = {
    neighbors: [
      { ip: '10.244.2.0', mac: '02:00:00:00:00:02', permanent: true }, // ours, stale
      { ip: '10.244.99.7', mac: '02:aa:00:00:00:01', permanent: false }, // learnt by the kernel
    ],
    fdb: [
      { mac: '00:00:00:00:00:00', dst: '172.31.0.200', permanent: true }, // someone's flood entry
      { mac: '02:bb:00:00:00:01', permanent: true }, // a bridge master entry (no dst)
      { mac: '02:cc:00:00:00:01', dst: '172.31.0.9', permanent: false }, // learnt
    ],
    routes: [
      { dst: '10.244.2.0/24', gw: '10.244.2.0', oif: VX, onlink: true, proto: OVERLAY_ROUTE_PROTO, family: 4 }, // ours, stale
      { dst: '192.168.50.0/24', gw: '10.244.2.0', oif: VX, onlink: true, proto: 4, family: 4 }, // admin's static route via our device
      { dst: '10.244.7.0/24', gw: '172.31.0.7', oif: 3, proto: OVERLAY_ROUTE_PROTO, family: 4 }, // other device
      { dst: 'default', gw: '172.31.0.254', oif: 3, proto: 3, family: 4 },
    ],
    addresses: [{ cidr: 'fe80::1/64', scope: 253 }],
  };
  const ops = diffOverlay(desiredOverlay('n1', [n1]), cur, VX);
  t.same(ops, [
    { op: 'deleteRoute', dst: '10.244.2.0/24', gw: '10.244.2.0', family: 4 },
    { op: 'deleteNeighbor', ip: '10.244.2.0' },
    { op: 'addAddress', cidr: '10.244.1.0/32' },
  ]);
});

t.test('IPv6 and dual-stack pod CIDRs', async (t) => {
  const ds = (name: string, i: number): Node => ({
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name, annotations: { 'skiff.io/vtep-mac': `02:00:00:00:00:0${i}`, 'skiff.io/underlay-ip': `172.31.0.${i}` } },
    spec: { podCIDR: `10.244.${i}.0/24`, podCIDRs: [`10.244.${i}.0/24`, `fd00:10:244:${i}::/64`] },
  });
  const d = desiredOverlay('a', [ds('a', 1), ds('b', 2)]);
  t.same(d.addresses, ['10.244.1.0/32', 'fd00:10:244:1::/128']);
  t.same(d.routes, [
    { dst: '10.244.2.0/24', gw: '10.244.2.0', family: 4 },
    { dst: 'fd00:10:244:2::/64', gw: 'fd00:10:244:2::', family: 6 },
  ]);
  t.same(d.fdb, [{ mac: '02:00:00:00:00:02', dst: '172.31.0.2' }], 'one FDB entry per node, whatever the families');
});

t.test('firewall ruleset: one atomic rebuild of our own table only', async (t) => {
  const s = overlayRuleset({ clusterCIDRs: ['10.244.0.0/16', '10.245.3.7/16'], masquerade: true });
  t.match(s, /^add table inet skiff-overlay\ndelete table inet skiff-overlay\ntable inet skiff-overlay \{/);
  t.match(s, /elements = \{ 10\.244\.0\.0\/16, 10\.245\.0\.0\/16 \}/, 'normalised');
  t.match(s, /ip saddr @cluster4 ip daddr != @cluster4 ip daddr != 224\.0\.0\.0\/4 counter masquerade/);
  t.notMatch(s, /cluster6/);
  const tables = [...s.matchAll(/table (\w+) ([\w-]+)/g)].map((m) => `${m[1]} ${m[2]}`);
  t.same([...new Set(tables)], ['inet skiff-overlay'], 'names no other table');
  t.notMatch(overlayRuleset({ clusterCIDRs: ["10.244.0.0/16"], masquerade: false }), / masquerade\n/);
  t.throws(() => overlayRuleset({ clusterCIDRs: ['10.244.0.0/16; flush ruleset'], masquerade: true }), /invalid CIDR/);
});

t.test('ICMP echo encoding and reply parsing', async (t) => {
  const req = echoRequest(0x1234, 7, Buffer.from('abc'));
  t.equal(req[0], 8);
  t.equal(icmpChecksum(req), 0, 'checksum over the whole message verifies');
  const ip = Buffer.alloc(20);
  ip[0] = 0x45;
  ip[9] = 1;
  const reply = Buffer.from(req);
  reply[0] = 0;
  t.same(parseEchoReply(Buffer.concat([ip, reply])), { id: 0x1234, seq: 7 });
  t.equal(parseEchoReply(Buffer.concat([ip, req])), undefined, 'a request is not a reply');
});
