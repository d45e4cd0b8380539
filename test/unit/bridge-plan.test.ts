import t from 'tap';
import { hostVethName, podRoutes, type BridgeOptions } from '../../src/bridge/bridge.js';
import { netIdent } from '../../src/bridge/masq.js';
import { vtepMac, vxlanName } from '../../src/overlay/device.js';
import { bytesToIp, containsIp, ipToBytes, networkOf, parseCidr } from '../../src/util/ip.js';

const opts: BridgeOptions = { bridge: 'cni0', isGateway: true, isDefaultGateway: true, forceAddress: false, hairpinMode: true, promiscMode: false };

t.test('IP helpers round-trip IPv4 and IPv6 in canonical form', async (t) => {
  for (const [ip, canon] of [
    ['10.1.2.3', '10.1.2.3'],
    ['fd00::1', 'fd00::1'],
    ['FD00:0:0:0:0:0:0:1', 'fd00::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['::', '::'],
    ['::ffff:10.0.0.1', '::ffff:a00:1'],
    ['1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8'],
  ]) t.equal(bytesToIp(ipToBytes(ip!)), canon, ip);
  t.throws(() => ipToBytes('10.0.0.256'), /invalid IP/);
  t.equal(networkOf(parseCidr('10.244.3.77/24')), '10.244.3.0');
  t.equal(networkOf(parseCidr('fd00:1:2:3::9/64')), 'fd00:1:2:3::');
  t.ok(containsIp(parseCidr('10.244.0.0/16'), '10.244.9.9'));
  t.notOk(containsIp(parseCidr('10.244.0.0/16'), '10.245.0.1'));
  t.notOk(containsIp(parseCidr('10.244.0.0/16'), 'fd00::1'), 'other family');
  t.throws(() => parseCidr('10.0.0.0/33'), /prefix/);
});

t.test('pod routes: default per family via the gateway, IPAM routes via the same-family gateway', async (t) => {
  const req = {
    ips: [
      { address: '10.88.0.5/24', gateway: '10.88.0.1' },
      { address: 'fd88::5/64', gateway: 'fd88::1' },
    ],
    routes: [{ dst: '10.96.0.0/12' }, { dst: '192.168.0.0/16', gw: '10.88.0.254' }, { dst: '0.0.0.0/0' }],
  };
  t.same(podRoutes(opts, req), [
    { dst: 'default', gw: '10.88.0.1' },
    { dst: 'default', gw: 'fd88::1' },
    { dst: '10.96.0.0/12', gw: '10.88.0.1' },
    { dst: '192.168.0.0/16', gw: '10.88.0.254' },
  ]);
  t.same(podRoutes({ ...opts, isDefaultGateway: false }, { ips: req.ips, routes: [{ dst: '0.0.0.0/0' }] }), [{ dst: 'default', gw: '10.88.0.1' }], 'IPAM default route kept without isDefaultGateway');
});

t.test('host veth names are stable, distinct and fit IFNAMSIZ', async (t) => {
  const a = hostVethName('c1', 'eth0');
  t.equal(a, hostVethName('c1', 'eth0'));
  t.not(a, hostVethName('c1', 'eth1'));
  t.not(a, hostVethName('c2', 'eth0'));
  t.ok(a.length <= 15);
  t.match(a, /^veth[0-9a-f]{11}$/);
});

t.test('nftables identifiers for networks are safe', async (t) => {
  t.equal(netIdent('sktnet'), 'sktnet');
  t.match(netIdent('my-net.v2'), /^my_net_v2_[0-9a-f]{8}$/);
  t.not(netIdent('a-b'), netIdent('a_b'), 'different names never collide');
  t.match(netIdent('x"; flush ruleset'), /^[A-Za-z0-9_]+$/);
});

t.test('VTEP MAC: stable, unicast, locally administered', async (t) => {
  const m = vtepMac(1, '192.168.1.2');
  t.equal(m, vtepMac(1, '192.168.1.2'));
  t.not(m, vtepMac(1, '192.168.1.3'));
  t.not(m, vtepMac(2, '192.168.1.2'));
  const first = parseInt(m.slice(0, 2), 16);
  t.equal(first & 1, 0, 'unicast');
  t.equal(first & 2, 2, 'locally administered');
  t.equal(vxlanName({ vni: 7 }), 'skiff.7');
  t.equal(vxlanName({ vni: 7, device: 'flannel.7' }), 'flannel.7');
});
