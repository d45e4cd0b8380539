// The Netlink class over skiff's native socket and rtnetlink codec, against the real
// kernel in namespaces of the test's own: links of each kind, the veth peer created
// directly in another namespace, addresses, routes, neighbours, FDB entries, the
// kernel's errors (with its extended-ack text), and dumps that span many datagrams.
import t from 'tap';
import { closeSync } from 'node:fs';
import { Netlink, NetlinkError } from '../../src/os/netlink.js';
import { openNetns } from '../../src/os/netns.js';
import { makeNetns, nsExec, requireRoot } from '../helpers/netns.js';

if (requireRoot(t)) {
  const host = makeNetns('nlh');
  const pod = makeNetns('nlp');
  const nl = Netlink.open(host.path);
  const pnl = Netlink.open(pod.path);
  t.teardown(() => {
    nl.close();
    pnl.close();
  });

  t.test('bridge, veth with its peer created in the pod namespace, master, hairpin, up', async (t) => {
    await nl.createBridge('br0', { mtu: 1400 });
    const br = (await nl.linkByName('br0'))!;
    t.equal(br.kind, 'bridge');
    t.equal(br.mtu, 1400);
    t.equal(br.up, false);
    await nl.setUp(br.index);
    t.equal((await nl.linkByIndex(br.index))!.up, true);

    const fd = openNetns(pod.path);
    try {
      await nl.createVeth({ name: 'vethA', peerName: 'eth0', peerNetnsFd: fd, mtu: 1400, peerMac: '02:00:00:00:00:42' });
    } finally {
      closeSync(fd);
    }
    const h = (await nl.linkByName('vethA'))!;
    t.equal(h.kind, 'veth');
    t.equal(await nl.linkByName('eth0'), undefined, 'the peer is not in the host namespace');
    const p = (await pnl.linkByName('eth0'))!;
    t.equal(p.mac, '02:00:00:00:00:42');
    t.equal(p.mtu, 1400);
    t.equal(h.peerIndex, p.index, 'IFLA_LINK names the peer');

    await nl.setMaster(h.index, br.index);
    await nl.setHairpin(h.index, true);
    await nl.setUp(h.index);
    t.equal((await nl.linkByIndex(h.index))!.master, br.index);
    t.match(nsExec(host.name, ['ip', '-d', 'link', 'show', 'vethA']), /hairpin on/);
    await nl.setHairpin(h.index, false);
    t.match(nsExec(host.name, ['ip', '-d', 'link', 'show', 'vethA']), /hairpin off/);

    await nl.setPromisc(br.index, true);
    t.equal((await nl.linkByIndex(br.index))!.promisc, true);
    await nl.setPromisc(br.index, false);
    await nl.setMtu(br.index, 1300);
    await nl.setMac(br.index, '02:11:22:33:44:55');
    const br2 = (await nl.linkByIndex(br.index))!;
    t.equal(br2.mtu, 1300);
    t.equal(br2.mac, '02:11:22:33:44:55');
  });

  t.test('errors: EEXIST, lookups of missing links, idempotent deletes, the kernel message', async (t) => {
    const exists = await nl.createBridge('br0').catch((e: unknown) => e);
    t.ok(exists instanceof NetlinkError);
    t.equal((exists as NetlinkError).code, 'EEXIST');
    t.equal((exists as NetlinkError).errno, 17);
    t.match((exists as NetlinkError).message, /^create bridge br0: EEXIST \(file exists\)/);
    t.equal(await nl.linkByName('nope0'), undefined);
    t.equal(await nl.linkByIndex(999999), undefined);
    t.equal(await nl.deleteLink(999999), false, 'deleting a missing link is "already gone"');
    // A VNI the kernel refuses: its extended ack explains why.
    const err = await nl.createVxlan({ name: 'vxbad', vni: 1 << 25, port: 4789 }).catch((e: unknown) => e);
    t.ok(err instanceof NetlinkError);
    t.equal((err as NetlinkError).code, 'ERANGE');
    t.match((err as NetlinkError).message, /VXLAN ID must be lower than 16777216/);
    t.equal(await nl.linkByName('vxbad'), undefined, 'nothing was created');
  });

  t.test('vxlan: create, read back, FDB and neighbour entries', async (t) => {
    await nl.createVxlan({ name: 'vx0', vni: 42, port: 8472, local: '10.9.0.1', mtu: 1450, mac: '02:00:00:00:00:01', learning: false });
    const vx = (await nl.linkByName('vx0'))!;
    t.same(vx.vxlan, { vni: 42, port: 8472, local: '10.9.0.1', learning: false });
    await nl.setUp(vx.index);
    await nl.replaceFdb(vx.index, '02:00:00:00:00:02', '10.9.0.2');
    await nl.replaceFdb(vx.index, '02:00:00:00:00:02', '10.9.0.2');
    t.same(await nl.fdb(vx.index).then((f) => f.filter((e) => e.permanent && e.dst)), [{ mac: '02:00:00:00:00:02', dst: '10.9.0.2', permanent: true }]);
    await nl.replaceNeighbor(vx.index, '10.244.2.0', '02:00:00:00:00:02');
    t.same((await nl.neighbors(vx.index, 4)).map((n) => [n.ip, n.mac, n.permanent]), [['10.244.2.0', '02:00:00:00:00:02', true]]);
    await nl.replaceNeighbor(vx.index, 'fd00:2::', '02:00:00:00:00:02');
    t.same((await nl.neighbors(vx.index, 6)).filter((n) => n.permanent).map((n) => n.ip), ['fd00:2::']);
    t.equal(await nl.deleteNeighbor(vx.index, '10.244.2.0'), true);
    t.equal(await nl.deleteNeighbor(vx.index, '10.244.2.0'), false, 'second delete: already gone');
    t.equal(await nl.deleteFdb(vx.index, '02:00:00:00:00:02', '10.9.0.2'), true);
    t.equal(await nl.deleteFdb(vx.index, '02:00:00:00:00:02', '10.9.0.2'), false);
  });

  t.test('addresses and routes, IPv4 and IPv6', async (t) => {
    const p = (await pnl.linkByName('eth0'))!;
    await pnl.addAddress(p.index, '10.88.0.5/24');
    await pnl.addAddress(p.index, '10.88.0.5/24'); // replace: idempotent
    await pnl.addAddress(p.index, 'fd00:88::5/64', { nodad: true });
    await pnl.setUp(p.index);
    const addrs = await pnl.addresses(p.index);
    t.same(addrs.map((a) => a.cidr).filter((c) => !c.startsWith('fe80:')).sort(), ['10.88.0.5/24', 'fd00:88::5/64']);
    t.ok((await pnl.addresses()).some((a) => a.cidr === '127.0.0.1/8'), 'an unfiltered dump sees lo too');
    t.match(nsExec(pod.name, ['ip', 'addr', 'show', 'eth0']), /brd 10\.88\.0\.255/, 'IPv4 broadcast set');

    await pnl.replaceRoute({ dst: 'default', gw: '10.88.0.1', oif: p.index });
    await pnl.replaceRoute({ dst: '192.168.7.0/24', gw: '10.88.0.1', oif: p.index, table: 1000 });
    await pnl.replaceRoute({ dst: 'default', gw: 'fd00:88::1', oif: p.index });
    const r4 = await pnl.routes(4);
    t.ok(r4.some((r) => r.dst === 'default' && r.gw === '10.88.0.1' && r.oif === p.index), 'default route');
    t.ok(r4.some((r) => r.dst === '10.88.0.0/24' && r.proto === 2), 'the kernel route of the subnet');
    t.same((await pnl.routes(4, 1000)).map((r) => [r.dst, r.gw, r.table]), [['192.168.7.0/24', '10.88.0.1', 1000]], 'table above 255');
    t.ok((await pnl.routes(6)).some((r) => r.dst === 'default' && r.gw === 'fd00:88::1'));
    t.equal(await pnl.deleteRoute({ dst: '192.168.7.0/24', gw: '10.88.0.1', oif: p.index, table: 1000 }), true);
    t.equal(await pnl.deleteRoute({ dst: '192.168.7.0/24', gw: '10.88.0.1', oif: p.index, table: 1000 }), false);
    t.equal(await pnl.deleteAddress(p.index, '10.88.0.5/24'), true);
    t.equal(await pnl.deleteAddress(p.index, '10.88.0.5/24'), false);
  });

  t.test('dumps spanning many datagrams: 250 links', async (t) => {
    const n = 250;
    nsExec(host.name, ['ip', '-batch', '-'], Array.from({ length: n }, (_, i) => `link add d${i} type bridge`).join('\n') + '\n');
    const links = await nl.links();
    const dummies = links.filter((l) => /^d\d+$/.test(l.name));
    t.equal(dummies.length, n, 'every link of a multi-part dump');
    t.equal(new Set(dummies.map((l) => l.index)).size, n);
    // The socket stays in step: the next request gets its own answer.
    t.equal((await nl.linkByName('d249'))!.name, 'd249');
    for (const l of dummies.slice(0, 50)) t.equal(await nl.deleteLink(l.index), true);
    t.equal((await nl.links()).filter((l) => /^d\d+$/.test(l.name)).length, n - 50);
  });

  t.test('a closed socket refuses requests clearly', async (t) => {
    const tmp = Netlink.open(host.path);
    tmp.close();
    tmp.close();
    await t.rejects(tmp.links(), /list links: EBADF/);
  });
}
