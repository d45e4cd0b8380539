// skiff-cni's bridge options through the real plugin on real pods: mtu, promiscMode,
// isGateway/isDefaultGateway, forceAddress and a requested MAC (runtimeConfig.mac,
// args.cni.mac, CNI_ARGS MAC=), each checked in the kernel, against a control where the
// option is absent. A node namespace runs the plugin; every network has its own bridge
// and subnet; everything lives in skt-* namespaces removed at exit.
import t from 'tap';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeNetns, nsExec, requireRoot } from '../helpers/netns.js';
import { bridgeConf, runPlugin } from '../helpers/cni.js';
import { hostVethName } from '../../src/bridge/bridge.js';

if (requireRoot(t)) {
  const node = makeNetns('node');
  const dataDir = mkdtempSync(join(tmpdir(), 'skt-ipam-'));
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
  const reservations = (net: string) => {
    try {
      return readdirSync(join(dataDir, net)).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f));
    } catch {
      return [];
    }
  };
  type Pod = { name: string; path: string };
  const call = (command: string, cid: string, pod: Pod | undefined, c: unknown, o: { args?: string } = {}) =>
    runPlugin({ command, containerId: cid, ifname: 'eth0', ...(pod ? { netns: pod.path } : {}), nodeNs: node.name, args: o.args ?? 'IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p' }, c);
  /** A network of its own: name, bridge and subnet 10.<n>.0.0/24. */
  const network = (name: string, n: number, extra: Record<string, unknown> = {}, cniVersion = '1.0.0') =>
    bridgeConf({ name, dataDir, subnet: `10.${n}.0.0/24`, bridge: `cni${name}`.slice(0, 15), cniVersion, extra });
  /** `ip -j [-d] link show dev X` in a namespace. */
  const link = (ns: string, dev: string, detail = false) => JSON.parse(nsExec(ns, ['ip', '-j', ...(detail ? ['-d'] : []), 'link', 'show', 'dev', dev]))[0];
  const v4addrs = (ns: string, dev: string): string[] =>
    (JSON.parse(nsExec(ns, ['ip', '-j', '-4', 'addr', 'show', 'dev', dev]))[0]?.addr_info ?? []).map((a: { local: string; prefixlen: number }) => `${a.local}/${a.prefixlen}`).sort();
  const v4routes = (ns: string): { dst: string; gateway?: string; dev: string }[] => JSON.parse(nsExec(ns, ['ip', '-j', '-4', 'route', 'show']));
  const pings = (ns: string, ip: string, extra: string[] = []) => {
    try {
      return /1 received/.test(nsExec(ns, ['ping', '-c', '1', '-W', '1', ...extra, ip]));
    } catch {
      return false;
    }
  };

  t.test('mtu: both veth ends (and the bridge it creates) get it, and the pod sends no larger packet', async (t) => {
    const c = network('mtu', 93, { mtu: 1400 }, '1.1.0');
    const pod = makeNetns('pod');
    const add = await call('ADD', 'mtu1', pod, c);
    t.equal(add.code, 0, add.stdout);
    const host = hostVethName('mtu1', 'eth0');
    t.equal(link(pod.name, 'eth0').mtu, 1400, 'pod end');
    t.equal(link(node.name, host).mtu, 1400, 'host end');
    t.equal(link(node.name, 'cnimtu').mtu, 1400, 'the bridge created for it');
    t.equal(add.json.interfaces[2].mtu, 1400, 'the 1.1.0 result reports the pod interface MTU');
    // Real packets: 1372 bytes of ICMP payload + 28 of headers fit in 1400 with DF set; one more does not.
    t.ok(pings(pod.name, '10.93.0.1', ['-M', 'do', '-s', '1372']), 'a 1400-byte packet reaches the gateway');
    t.notOk(pings(pod.name, '10.93.0.1', ['-M', 'do', '-s', '1373']), 'a 1401-byte packet does not leave the pod');
    // Control: without mtu the veths get the kernel's default.
    const plain = network('nomtu', 103, {}, '1.1.0');
    const pod2 = makeNetns('pod');
    const add2 = await call('ADD', 'mtu2', pod2, plain);
    t.equal(add2.code, 0, add2.stdout);
    t.equal(link(pod2.name, 'eth0').mtu, 1500, 'control: pod end at 1500');
    t.equal(link(node.name, hostVethName('mtu2', 'eth0')).mtu, 1500, 'control: host end at 1500');
    // The result shape: mtu is a 1.1.0 field, absent in 1.0.0.
    const pod3 = makeNetns('pod');
    const add3 = await call('ADD', 'mtu3', pod3, { ...c, cniVersion: '1.0.0' });
    t.equal(add3.code, 0, add3.stdout);
    t.notOk('mtu' in add3.json.interfaces[2], 'no interfaces[].mtu in a 1.0.0 result');
    t.equal(link(pod3.name, 'eth0').mtu, 1400);
    for (const [cid, p, conf] of [['mtu1', pod, c], ['mtu2', pod2, plain], ['mtu3', pod3, c]] as const) t.equal((await call('DEL', cid, p, conf)).code, 0);
  });

  t.test('promiscMode: the bridge is promiscuous (and hairpin stays off); without it, not', async (t) => {
    const c = network('prom', 104, { promiscMode: true, hairpinMode: false });
    const pod = makeNetns('pod');
    const add = await call('ADD', 'prom1', pod, c);
    t.equal(add.code, 0, add.stdout);
    const br = link(node.name, 'cniprom', true);
    t.ok(br.flags.includes('PROMISC'), `bridge flags ${br.flags.join(',')}`);
    t.ok(br.promiscuity >= 1, 'promiscuity counter');
    t.equal(link(node.name, hostVethName('prom1', 'eth0'), true).linkinfo.info_slave_data.hairpin, false, 'hairpin off on the pod port');
    // Control: the same options without promiscMode (hairpin on, as bridgeConf's default).
    const plain = network('noprom', 105);
    const pod2 = makeNetns('pod');
    t.equal((await call('ADD', 'prom2', pod2, plain)).code, 0);
    const br2 = link(node.name, 'cninoprom', true);
    t.notOk(br2.flags.includes('PROMISC'), 'control: bridge not promiscuous');
    t.equal(br2.promiscuity, 0);
    t.equal(link(node.name, hostVethName('prom2', 'eth0'), true).linkinfo.info_slave_data.hairpin, true, 'control: hairpin on');
    // A second pod on the promiscuous bridge: still promiscuous once, not twice.
    const pod3 = makeNetns('pod');
    t.equal((await call('ADD', 'prom3', pod3, c)).code, 0);
    t.equal(link(node.name, 'cniprom', true).promiscuity, br.promiscuity, 'promiscuity not raised again by a later ADD');
    for (const [cid, p, conf] of [['prom1', pod, c], ['prom2', pod2, plain], ['prom3', pod3, c]] as const) t.equal((await call('DEL', cid, p, conf)).code, 0);
  });

  t.test('isGateway false: no gateway address on the bridge, no default route; pods still reach each other', async (t) => {
    const c = network('nogw', 94, { isGateway: false, isDefaultGateway: false });
    const pods = [makeNetns('pod'), makeNetns('pod')];
    const adds = [await call('ADD', 'nogw1', pods[0], c), await call('ADD', 'nogw2', pods[1], c)];
    for (const a of adds) t.equal(a.code, 0, a.stdout);
    t.same(v4addrs(node.name, 'cninogw'), [], 'the bridge has no IPv4 address');
    const routes = v4routes(pods[0]!.name);
    t.same(routes.map((r) => r.dst), ['10.94.0.0/24'], 'the pod has only its subnet route');
    t.notOk(routes.some((r) => r.gateway), 'no route via a gateway');
    t.notOk(adds[0]!.json.routes?.some((r: { dst: string }) => r.dst === '0.0.0.0/0'), 'no default route in the result');
    t.notOk(pings(pods[0]!.name, '10.94.0.1'), 'nothing answers at the gateway address');
    t.ok(pings(pods[0]!.name, adds[1]!.json.ips[0].address.split('/')[0]), 'pod to pod across the bridge');
    for (const [i, p] of pods.entries()) t.equal((await call('DEL', `nogw${i + 1}`, p, c)).code, 0);
  });

  t.test('isGateway without isDefaultGateway: the address, no default route; isDefaultGateway alone implies isGateway', async (t) => {
    const gwOnly = network('gwonly', 95, { isGateway: true, isDefaultGateway: false });
    const pod = makeNetns('pod');
    const a = await call('ADD', 'gw1', pod, gwOnly);
    t.equal(a.code, 0, a.stdout);
    t.same(v4addrs(node.name, 'cnigwonly'), ['10.95.0.1/24'], 'the bridge has the gateway address');
    t.same(v4routes(pod.name).map((r) => r.dst), ['10.95.0.0/24'], 'no default route in the pod');
    t.notOk(a.json.routes?.some((r: { dst: string }) => r.dst === '0.0.0.0/0'), 'nor in the result');
    t.ok(pings(pod.name, '10.95.0.1'), 'the pod reaches the gateway');

    const defOnly = network('defgw', 96, { isGateway: false, isDefaultGateway: true });
    const pod2 = makeNetns('pod');
    const b = await call('ADD', 'gw2', pod2, defOnly);
    t.equal(b.code, 0, b.stdout);
    t.same(v4addrs(node.name, 'cnidefgw'), ['10.96.0.1/24'], 'isDefaultGateway put the gateway address on the bridge');
    const def = v4routes(pod2.name).find((r) => r.dst === 'default');
    t.same(def && { gateway: def.gateway, dev: def.dev }, { gateway: '10.96.0.1', dev: 'eth0' }, 'default route via the gateway');
    t.same(b.json.routes, [{ dst: '0.0.0.0/0', gw: '10.96.0.1' }], 'and in the result');
    t.ok(pings(pod2.name, '10.96.0.1'));
    t.equal((await call('DEL', 'gw1', pod, gwOnly)).code, 0);
    t.equal((await call('DEL', 'gw2', pod2, defOnly)).code, 0);
  });

  t.test('forceAddress: another address in the subnet on the bridge fails ADD without it and is replaced with it', async (t) => {
    const c = network('force', 97);
    nsExec(node.name, ['ip', 'link', 'add', 'cniforce', 'type', 'bridge']);
    nsExec(node.name, ['ip', 'addr', 'add', '10.97.0.254/24', 'dev', 'cniforce']);
    nsExec(node.name, ['ip', 'addr', 'add', '192.168.77.1/24', 'dev', 'cniforce']);
    nsExec(node.name, ['ip', 'link', 'set', 'cniforce', 'up']);
    const pod = makeNetns('pod');
    const bad = await call('ADD', 'force1', pod, c);
    t.equal(bad.code, 1);
    t.equal(bad.json.code, 7);
    t.match(bad.json.msg, /bridge cniforce already has address 10\.97\.0\.254\/24 in subnet 10\.97\.0\.0\/24; set forceAddress/);
    t.same(reservations('force'), [], 'the failed ADD released its address');
    t.throws(() => link(node.name, hostVethName('force1', 'eth0')), 'no host veth');
    t.throws(() => link(pod.name, 'eth0'), 'the pod has no interface');
    t.same(v4addrs(node.name, 'cniforce'), ['10.97.0.254/24', '192.168.77.1/24'], 'the bridge addresses are unchanged');

    const ok = await call('ADD', 'force1', pod, { ...c, forceAddress: true });
    t.equal(ok.code, 0, ok.stdout);
    t.same(v4addrs(node.name, 'cniforce'), ['10.97.0.1/24', '192.168.77.1/24'], 'replaced in the subnet; the other subnet\'s address kept');
    t.ok(pings(pod.name, '10.97.0.1'), 'the pod reaches the new gateway');
    t.equal((await call('DEL', 'force1', pod, c)).code, 0);
  });

  t.test('a requested MAC: runtimeConfig.mac, args.cni.mac, CNI_ARGS MAC=, precedence, validation', async (t) => {
    const c = network('mac', 98, { capabilities: { mac: true } });
    const cases: [string, Record<string, unknown>, string | undefined, string][] = [
      ['runtimeConfig.mac', { runtimeConfig: { mac: '0a:58:0a:62:00:11' } }, undefined, '0a:58:0a:62:00:11'],
      ['args.cni.mac', { args: { cni: { mac: '0a:58:0a:62:00:12' } } }, undefined, '0a:58:0a:62:00:12'],
      ['CNI_ARGS MAC=', {}, 'MAC=0a:58:0a:62:00:13', '0a:58:0a:62:00:13'],
      ['CNI_ARGS MAC= with other keys', {}, 'IgnoreUnknown=1;K8S_POD_NAME=p;MAC=0a:58:0a:62:00:14', '0a:58:0a:62:00:14'],
      ['all three: runtimeConfig wins', { runtimeConfig: { mac: '0a:58:0a:62:00:15' }, args: { cni: { mac: '0a:58:0a:62:00:16' } } }, 'MAC=0a:58:0a:62:00:17', '0a:58:0a:62:00:15'],
      ['args and CNI_ARGS: args wins', { args: { cni: { mac: '0a:58:0a:62:00:18' } } }, 'MAC=0a:58:0a:62:00:19', '0a:58:0a:62:00:18'],
      ['upper case, normalised', { runtimeConfig: { mac: '0A:58:0A:62:00:1A' } }, undefined, '0a:58:0a:62:00:1a'],
    ];
    for (const [i, [name, extra, args, want]] of cases.entries()) {
      const pod = makeNetns('pod');
      const cid = `mac${i}`;
      const conf = { ...c, ...extra };
      const add = await call('ADD', cid, pod, conf, args ? { args } : {});
      t.equal(add.code, 0, `${name}: ${add.stdout}`);
      t.equal(link(pod.name, 'eth0').address, want, `${name}: the pod interface has the MAC`);
      t.equal(add.json.interfaces[2].mac, want, `${name}: the result reports it`);
      const check = await call('CHECK', cid, pod, { ...conf, prevResult: add.json }, args ? { args } : {});
      t.equal(check.code, 0, `${name}: CHECK agrees: ${check.stdout}`);
      t.equal((await call('DEL', cid, pod, conf)).code, 0);
    }
    // Control: without a request the kernel picks a random MAC, different per pod.
    const p1 = makeNetns('pod');
    const p2 = makeNetns('pod');
    const r1 = await call('ADD', 'macr1', p1, c);
    const r2 = await call('ADD', 'macr2', p2, c);
    t.not(link(p1.name, 'eth0').address, link(p2.name, 'eth0').address, 'control: random MACs differ');
    t.equal(r1.json.interfaces[2].mac, link(p1.name, 'eth0').address, 'the result reports the random MAC');
    t.equal(r2.json.interfaces[2].mac, link(p2.name, 'eth0').address);
    // CHECK notices a MAC that differs from the result.
    nsExec(p1.name, ['ip', 'link', 'set', 'eth0', 'address', '0a:58:0a:62:00:99']);
    const drift = await call('CHECK', 'macr1', p1, { ...c, prevResult: r1.json });
    t.equal(drift.json?.code, 100);
    t.match(drift.json?.msg, /MAC 0a:58:0a:62:00:99 differs/);
    t.equal((await call('DEL', 'macr1', p1, c)).code, 0);
    t.equal((await call('DEL', 'macr2', p2, c)).code, 0);

    // Refused MACs (multicast, malformed) are code 7 naming the source, and change nothing.
    const bad: [string, Record<string, unknown>, string | undefined, RegExp][] = [
      ['multicast in runtimeConfig', { runtimeConfig: { mac: '01:00:5e:00:00:01' } }, undefined, /^runtimeConfig\.mac: invalid value "01:00:5e:00:00:01"/],
      ['malformed in args.cni', { args: { cni: { mac: '0a:58:0a:62:00' } } }, undefined, /^args\.cni\.mac: invalid value "0a:58:0a:62:00"/],
      ['broadcast in CNI_ARGS', {}, 'MAC=ff:ff:ff:ff:ff:ff', /^CNI_ARGS MAC: invalid value "ff:ff:ff:ff:ff:ff"/],
    ];
    const pod = makeNetns('pod');
    for (const [name, extra, args, msg] of bad) {
      const r = await call('ADD', 'macbad', pod, { ...c, ...extra }, args ? { args } : {});
      t.equal(r.code, 1, name);
      t.equal(r.json?.code, 7, `${name}: code 7`);
      t.match(r.json?.msg, msg, `${name}: names the source and the value`);
      t.throws(() => link(pod.name, 'eth0'), `${name}: no interface in the pod`);
      t.throws(() => link(node.name, hostVethName('macbad', 'eth0')), `${name}: no host veth`);
    }
    t.same(reservations('mac'), [], 'no address left reserved');
  });

  t.test('the result reports the bridge MAC as it is once the pod is attached', async (t) => {
    // A bridge takes the lowest MAC of its ports (unless one was set), and 00:00:00:00:00:00
    // when it has none: reading it before the veth is enslaved reports a stale value.
    const c = network('brmac', 99);
    for (const i of [1, 2, 3]) {
      const pod = makeNetns('pod');
      const add = await call('ADD', `brmac${i}`, pod, c);
      t.equal(add.code, 0, add.stdout);
      const actual = link(node.name, 'cnibrmac').address;
      t.equal(add.json.interfaces[0].mac, actual, `ADD ${i}: the bridge's MAC after the attachment`);
      t.not(add.json.interfaces[0].mac, '00:00:00:00:00:00', `ADD ${i}: not the MAC of a bridge without ports`);
      t.equal(add.json.interfaces[1].mac, link(node.name, add.json.interfaces[1].name).address, `ADD ${i}: host veth MAC`);
      // Leave the bridge without ports before the next ADD.
      t.equal((await call('DEL', `brmac${i}`, pod, c)).code, 0);
    }
  });
}
