import t from 'tap';
import { mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Change, ClusterReader, KindMap, Kind, Node } from '../../src/cluster/types.js';
import { parseNetConf } from '../../src/cni/config.js';
import { CniConfReconciler, buildConflist, podCIDRsOf, podMtu, renderConflist, writeFileAtomic, type CniConfOptions } from '../../src/agent/cniconf.js';
import { logger, setLogSink } from '../../src/util/log.js';

/** A view holding only Nodes, mutable by the test. */
class FakeView implements ClusterReader {
  nodes = new Map<string, Node>();
  list<K extends Kind>(kind: K): KindMap[K][] {
    return (kind === 'Node' ? [...this.nodes.values()] : []) as KindMap[K][];
  }
  get<K extends Kind>(kind: K, key: string): KindMap[K] | undefined {
    return (kind === 'Node' ? this.nodes.get(key) : undefined) as KindMap[K] | undefined;
  }
  hasSynced(): boolean {
    return true;
  }
  onChange(): () => void {
    return () => {};
  }
}

function node(name: string, spec: Node['spec'], ip = '192.168.1.10'): Node {
  return { apiVersion: 'v1', kind: 'Node', metadata: { name }, spec, status: { addresses: [{ type: 'InternalIP', address: ip }] } };
}

const logs: string[] = [];
setLogSink((l) => logs.push(l));

async function setup(t: { teardown(fn: () => unknown): void }, over: Partial<CniConfOptions> = {}) {
  const dir = await mkdtemp(join(tmpdir(), 'skiff-cniconf-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const view = new FakeView();
  const uplinkCalls: string[][] = [];
  const opts: CniConfOptions = {
    nodeName: 'n1',
    confDir: join(dir, 'net.d'),
    confName: '10-skiff.conflist',
    dataDir: '/var/lib/cni/networks',
    mtu: 0,
    overlay: { vni: 1, port: 8472 },
    uplink: async (ips) => {
      uplinkCalls.push(ips);
      return { name: 'eth0', mtu: 1500 };
    },
    ...over,
  };
  const rec = new CniConfReconciler({ view, log: logger('test') }, opts);
  return { dir, view, rec, path: join(opts.confDir, opts.confName), uplinkCalls };
}

const full = { full: true, changes: [] as Change[] };

t.test('the conflist: shape, and skiff-cni accepts it', async (t) => {
  const conf = buildConflist({ podCIDRs: ['10.244.1.0/24', 'fd00:10:244:1::/64'], mtu: 1450, dataDir: '/var/lib/cni/networks', overlay: { vni: 1, port: 8472, device: 'skiff.1' } });
  t.same(conf, {
    cniVersion: '1.1.0',
    name: 'skiff',
    plugins: [
      {
        type: 'skiff-cni',
        bridge: 'skiff0',
        isGateway: true,
        isDefaultGateway: true,
        ipMasq: false,
        mtu: 1450,
        hairpinMode: true,
        ipam: { type: 'host-local', ranges: [[{ subnet: '10.244.1.0/24' }], [{ subnet: 'fd00:10:244:1::/64' }]], dataDir: '/var/lib/cni/networks' },
        overlay: { vni: 1, port: 8472, device: 'skiff.1' },
      },
    ],
  });
  // The runtime hands each plugin its entry plus name and cniVersion: check skiff-cni's own parser takes it.
  const plugin = (conf.plugins as Record<string, unknown>[])[0]!;
  const net = parseNetConf(JSON.stringify({ cniVersion: conf.cniVersion, name: conf.name, ...plugin }), 'ADD');
  t.equal(net.bridge, 'skiff0');
  t.equal(net.mtu, 1450);
  t.same(net.overlay, { vni: 1, port: 8472, device: 'skiff.1' });
  t.equal(net.hairpinMode, true);
  t.equal(net.ipMasq, false);
  t.notOk('overlay' in (buildConflist({ podCIDRs: ['10.244.1.0/24'], mtu: 1500, dataDir: '/d' }).plugins as object[])[0]!, 'no overlay key without the overlay');
  t.equal(renderConflist({ podCIDRs: ['10.0.0.0/24'], mtu: 1500, dataDir: '/d' }), renderConflist({ dataDir: '/d', mtu: 1500, podCIDRs: ['10.0.0.0/24'] }), 'canonical bytes');
});

t.test('pod CIDRs and MTU', async (t) => {
  t.same(podCIDRsOf(node('a', { podCIDR: '10.244.3.0/24' })), ['10.244.3.0/24']);
  t.same(podCIDRsOf(node('a', { podCIDR: '10.244.3.0/24', podCIDRs: ['10.244.3.0/24', 'fd00::/64'] })), ['10.244.3.0/24', 'fd00::/64']);
  t.same(podCIDRsOf(node('a', {})), []);
  t.throws(() => podCIDRsOf(node('a', { podCIDR: '10.244.3.1/24' })), /Node a: spec\.podCIDR: invalid value "10\.244\.3\.1\/24" \(host bits set\)/);
  t.throws(() => podCIDRsOf(node('a', { podCIDRs: ['10.1.0.0/24', 'garbage'] })), /spec\.podCIDRs\[1\]: invalid value "garbage"/);
  t.throws(() => podCIDRsOf(node('a', { podCIDRs: ['10.1.0.0/24', '10.2.0.0/24'] })), /a second IPv4 CIDR/);
  t.equal(podMtu(1400, 9000, true), 1400, 'configured wins');
  t.equal(podMtu(0, 1500, true), 1450, 'overlay costs 50');
  t.equal(podMtu(0, 9000, false), 9000);
  t.throws(() => podMtu(0, undefined, true), /uplink MTU is unknown/);
});

t.test('waits for the Node and its pod CIDR, then writes; no rewrite when unchanged; rewrites on change; cleanup removes', async (t) => {
  const { view, rec, path, uplinkCalls, dir } = await setup(t);
  await rec.sync(full);
  t.notOk(rec.hasSynced(), 'no Node: not synced');
  await t.rejects(stat(path), { code: 'ENOENT' });
  view.nodes.set('n1', node('n1', {}));
  await rec.sync(full);
  t.notOk(rec.hasSynced(), 'no podCIDR: not synced');
  t.match(rec.health().detail, /no spec\.podCIDR/);
  t.ok(logs.some((l) => /no spec.podCIDR yet/.test(l)), 'waiting is logged');

  view.nodes.set('n1', node('n1', { podCIDR: '10.244.7.0/24' }));
  view.nodes.set('other', node('other', { podCIDR: '10.244.9.0/24' }));
  await rec.sync({ full: false, changes: [{ type: 'update', kind: 'Node', key: 'n1', obj: view.nodes.get('n1')! }] });
  t.ok(rec.hasSynced());
  t.equal(rec.writes, 1);
  t.same(uplinkCalls[0], ['192.168.1.10'], 'uplink looked up with the node InternalIP');
  const conf = JSON.parse(await readFile(path, 'utf8'));
  t.same(conf.plugins[0].ipam.ranges, [[{ subnet: '10.244.7.0/24' }]]);
  t.equal(conf.plugins[0].mtu, 1450);
  t.equal((await stat(path)).mode & 0o777, 0o644);
  const ino = (await stat(path)).ino;

  await rec.sync(full);
  t.equal(rec.writes, 1, 'unchanged: not rewritten');
  t.equal((await stat(path)).ino, ino, 'same inode');

  // A change to another node alone does nothing (no read, no uplink lookup).
  const calls = uplinkCalls.length;
  await rec.sync({ full: false, changes: [{ type: 'update', kind: 'Node', key: 'other', obj: view.nodes.get('other')! }] });
  t.equal(uplinkCalls.length, calls, 'other node: skipped');

  view.nodes.set('n1', node('n1', { podCIDR: '10.244.8.0/24' }));
  await rec.sync({ full: false, changes: [{ type: 'update', kind: 'Node', key: 'n1', obj: view.nodes.get('n1')! }] });
  t.equal(rec.writes, 2);
  t.same(JSON.parse(await readFile(path, 'utf8')).plugins[0].ipam.ranges, [[{ subnet: '10.244.8.0/24' }]]);
  t.not((await stat(path)).ino, ino, 'replaced by rename, not rewritten in place');
  t.same((await readdir(join(dir, 'net.d'))).sort(), ['10-skiff.conflist'], 'no temp file left behind');

  // The Node going away leaves the file (running pods keep their network).
  view.nodes.delete('n1');
  await rec.sync(full);
  await stat(path);

  await rec.cleanup();
  await t.rejects(stat(path), { code: 'ENOENT' });
  await rec.cleanup(); // idempotent
});

t.test('a file edited by someone else is put back; a restarted reconciler adopts an identical file', async (t) => {
  const { view, rec, path, dir } = await setup(t, { mtu: 1380 });
  view.nodes.set('n1', node('n1', { podCIDR: '10.244.7.0/24' }));
  await rec.sync(full);
  const good = await readFile(path, 'utf8');
  t.equal(JSON.parse(good).plugins[0].mtu, 1380, 'configured MTU');
  await writeFile(path, '{"tampered":true}');
  await rec.sync(full);
  t.equal(await readFile(path, 'utf8'), good);
  const again = new CniConfReconciler({ view, log: logger('test') }, { nodeName: 'n1', confDir: join(dir, 'net.d'), confName: '10-skiff.conflist', dataDir: '/var/lib/cni/networks', mtu: 1380, overlay: { vni: 1, port: 8472 } });
  const mtime = (await stat(path)).mtimeMs;
  await again.sync(full);
  t.ok(again.hasSynced());
  t.equal(again.writes, 0, 'restart: identical bytes are left alone');
  t.equal((await stat(path)).mtimeMs, mtime);
});

t.test('an uplink failure fails the sync (the runner retries)', async (t) => {
  const { view, rec } = await setup(t, {
    uplink: async () => {
      throw new Error('mtu: cannot find the uplink');
    },
  });
  view.nodes.set('n1', node('n1', { podCIDR: '10.244.7.0/24' }));
  await t.rejects(rec.sync(full), /cannot find the uplink/);
  t.notOk(rec.hasSynced());
});

t.test('writeFileAtomic creates the directory and replaces atomically', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'skiff-atomic-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const p = join(dir, 'a/b/c.conflist');
  await writeFileAtomic(p, 'one');
  await writeFileAtomic(p, 'two');
  t.equal(await readFile(p, 'utf8'), 'two');
  t.same(await readdir(join(dir, 'a/b')), ['c.conflist']);
});
