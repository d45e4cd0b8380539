// The proxier's syncs over the fake nftables: partial syncs touch only what changed,
// stale chains go in a later transaction, failures force a rebuild, and the result
// always equals a from-scratch full sync.
import t from 'tap';
import { request } from 'node:http';
import type { Change } from '../../src/cluster/types.js';
import type { Op, Transaction } from '../../src/os/nft.js';
import { harness, logLines, slice, svc, tcp, NODE_IP } from '../../src/proxy/fixtures.js';
import { EndpointSlots, PROXY_TABLE, PROXY_TABLES, proxyTableName, shardOf } from '../../src/proxy/ruleset.js';

const ips = (n: number, k: number) => Array.from({ length: k }, (_, i) => `10.244.${n % 250}.${i + 10}`);

/** A run's transactions (one per table it touched: the main table and the service shards). */
type Run = readonly Transaction[] | Transaction | undefined;
function opsOf(tx: Run): Op[] {
  if (!tx) return [];
  return Array.isArray(tx) ? tx.flatMap((t: Transaction) => t.ops) : (tx as Transaction).ops;
}
function textOf(tx: Run): string {
  if (!tx) return '';
  return Array.isArray(tx) ? tx.map((t: Transaction) => t.toText()).join('') : (tx as Transaction).toText();
}
function summary(tx: Run): Record<string, number> {
  const out: Record<string, number> = {};
  for (const op of opsOf(tx)) {
    const k = `${op.verb} ${op.obj.kind}`;
    out[k] = (out[k] ?? 0) + 1;
  }
  return out;
}
function names(tx: Run): string[] {
  return opsOf(tx).flatMap((op) => ('name' in op.obj ? [op.obj.name] : 'chain' in op.obj ? [op.obj.chain] : []));
}

async function populated(n: number) {
  const h = harness();
  for (let i = 0; i < n; i++) h.view.put(svc(`s${i}`, { clusterIP: `10.96.${Math.floor(i / 250)}.${(i % 250) + 1}` }), slice(`s${i}`, ips(i, 3)));
  await h.proxier.sync({ full: true, changes: [] });
  return h;
}

/** A fresh proxier's full-sync dump of the same view, for equivalence checks. */
async function reference(h: Awaited<ReturnType<typeof populated>>): Promise<string> {
  const r = harness();
  r.view.put(...h.view.list('Service'), ...h.view.list('EndpointSlice'));
  await r.proxier.sync({ full: true, changes: [] });
  return r.nft.dump();
}

t.test('partial sync of one endpoint change writes only that service', async (t) => {
  const h = await populated(50);
  const first = h.nft.runs.at(-1);
  t.ok(opsOf(first).some((op) => op.verb === 'delete' && op.obj.kind === 'table'), 'first sync rebuilds (adopts) the table');
  t.ok(opsOf(first).length > 50 * 5);

  // Replace one endpoint of s7 (still 3): only its element of the endpoint map changes
  // (no rule: the kernel re-validates the whole table when a rule with a NAT statement
  // is added, not for data-map elements), and its hairpin element is swapped.
  const changes = h.view.put(slice('s7', [...ips(7, 2), '10.244.7.99']));
  await h.proxier.sync({ full: false, changes });
  const tx = h.nft.runs.at(-1);
  t.same(summary(tx), { 'delete element': 2, 'add element': 2 }, JSON.stringify(textOf(tx)));
  t.match(textOf(tx), /add element ip skiff-proxy-\d+ endpoints-tcp-\d+ \{ \d+ : 10\.244\.7\.99 \. 8080 \}/);
  t.ok(opsOf(tx).every((op) => op.obj.kind === 'element'), 'no rule rewritten');

  // A fourth endpoint: the rule's modulus changes, so the rule is rewritten too.
  await h.proxier.sync({ full: false, changes: h.view.put(slice('s7', [...ips(7, 2), '10.244.7.99', '10.244.7.98'])) });
  const tx4 = h.nft.runs.at(-1);
  t.equal(summary(tx4)['flush chain'], 1);
  t.match(textOf(tx4), /numgen inc mod 4 offset \d+ map @endpoints-tcp-\d+/);
  t.match(textOf(tx), /delete element ip skiff-proxy hairpin \{ 10\.244\.7\.12 \. 10\.244\.7\.12 \}/);
  t.equal(h.nft.dump(), await reference(h), 'equals a from-scratch sync');
});

t.test('with session affinity, the chain of a removed endpoint is flushed, then deleted in the next transaction', async (t) => {
  const h = await populated(20);
  const aff = { clusterIP: '10.96.9.7', affinity: true as const };
  await h.proxier.sync({ full: false, changes: h.view.put(svc('sticky', aff), slice('sticky', ips(77, 3))) });
  const changes = h.view.put(slice('sticky', [...ips(77, 2), '10.244.77.99']));
  await h.proxier.sync({ full: false, changes });
  const tx = h.nft.runs.at(-1);
  t.equal(summary(tx)['add chain'], 1, 'the new endpoint chain');
  t.equal(summary(tx)['flush chain'], 2, 'the service chain rewritten, the old endpoint chain flushed');
  t.ok(names(tx).every((n) => n.includes('default/sticky/') || n === 'hairpin'), 'only sticky chains and sets');
  t.equal(h.proxier.lastStats.get(4)?.chainsFlushedStale, 1);

  // The next sync (even without changes) deletes the chain that went stale, and its affinity set.
  await h.proxier.sync({ full: false, changes: [] });
  const tx2 = h.nft.runs.at(-1);
  t.same(summary(tx2), { 'delete chain': 1, 'delete set': 1 });
  t.match(names(tx2).join(' '), /endpoint-.*__10\.244\.77\.12\/8080/);
  t.equal(h.nft.dump(), await reference(h), 'equals a from-scratch sync');
});

t.test('adding, changing and deleting services: map elements are diffed', async (t) => {
  const h = await populated(20);
  let changes: Change[] = h.view.put(svc('new', { clusterIP: '10.96.9.9' }), slice('new', ['10.244.9.1']));
  await h.proxier.sync({ full: false, changes });
  // (and the endpoint map of its bucket, when no other service used that bucket yet)
  const { ['add map']: _newBucket, ...added } = summary(h.nft.runs.at(-1));
  t.same(added, { 'add chain': 1, 'add rule': 1, 'add element': 4 }, 'one chain with one rule; the service-ips, cluster-ips, endpoint-map and hairpin elements');

  changes = h.view.put(svc('new', { clusterIP: '10.96.9.9', ports: [{ name: 'http', port: 81, targetPort: 8080 }] }));
  await h.proxier.sync({ full: false, changes });
  const s = summary(h.nft.runs.at(-1));
  t.equal(s['delete element'], 2, 'old port elements deleted (service-ips, cluster-ips)');
  t.equal(s['add element'], 2, 'new port elements added');

  changes = [...h.view.remove('Service', 'default/new'), ...h.view.remove('EndpointSlice', 'default/new-abc')];
  await h.proxier.sync({ full: false, changes });
  t.same(summary(h.nft.runs.at(-1)), { 'delete element': 4, 'flush chain': 1 });
  await h.proxier.sync({ full: false, changes: [] });
  // (and its bucket's endpoint map, when no other service uses that bucket)
  const { ['delete map']: _oldBucket, ...deleted } = summary(h.nft.runs.at(-1));
  t.same(deleted, { 'delete chain': 1 });
  t.equal(h.nft.dump(), await reference(h));

  // A service losing all endpoints moves from service-ips to no-endpoint-services (reject).
  changes = h.view.put(slice('s3', []));
  await h.proxier.sync({ full: false, changes });
  t.equal(h.tracer().connect(tcp('10.244.1.9', '10.96.0.4', 80), 'external').verdict, 'reject');
  await h.proxier.sync({ full: false, changes: [] });
  t.equal(h.nft.dump(), await reference(h));
});

t.test('a no-op partial sync and a periodic full sync with nothing changed emit nothing', async (t) => {
  const h = await populated(10);
  const n = h.nft.history.length;
  await h.proxier.sync({ full: false, changes: h.view.put(svc('s1', { clusterIP: '10.96.0.2' })) });
  await h.proxier.sync({ full: true, changes: [] });
  t.equal(h.nft.history.length, n, 'no transaction run');
});

t.test('healthz: a change left unapplied longer than staleAfterMs makes the proxy unhealthy', async (t) => {
  let now = 1_000_000;
  const h = harness({ staleAfterMs: 60_000 }, { now: () => now });
  h.view.put(svc('a', { clusterIP: '10.96.0.1' }), slice('a', ['10.244.1.10']));
  t.equal(h.proxier.health().ok, true, 'before the first sync: waiting, not stale');
  await h.proxier.sync({ full: true, changes: [] });
  const changes = h.view.put(slice('a', ['10.244.1.11']));
  now += 59_000;
  t.equal(h.proxier.health().ok, true, 'pending, within the limit');
  now += 2_000;
  const hl = h.proxier.health();
  t.equal(hl.ok, false);
  t.match(hl.detail, /1 service\/endpoint change\(s\) pending for 61s/);
  await h.proxier.sync({ full: false, changes });
  t.equal(h.proxier.health().ok, true, 'applied: healthy again');
});

t.test('a failed transaction forces a rebuild, which converges', async (t) => {
  const h = await populated(10);
  h.nft.failNext(1, 'simulated');
  const changes = h.view.put(slice('s2', ['10.244.2.77']));
  await t.rejects(h.proxier.sync({ full: false, changes }), /simulated/);
  t.equal(h.proxier.health().ok, false);
  const failures = await h.registry.getSingleMetricAsString('skiff_sync_proxy_rules_nftables_failures_total');
  t.match(failures, /skiff_sync_proxy_rules_nftables_failures_total 1/);
  // Whatever the runner asks next (it asks for full), the table is rebuilt in one transaction.
  await h.proxier.sync({ full: false, changes: [] });
  const tx = h.nft.runs.at(-1);
  t.ok(opsOf(tx).some((op) => op.verb === 'delete' && op.obj.kind === 'table'), 'rebuild');
  t.equal(h.proxier.health().ok, true);
  t.equal(h.tracer().connect(tcp('10.244.1.9', '10.96.0.3', 80), 'external').dnat?.addr, '10.244.2.77');
  t.equal(h.nft.dump(), await reference(h));
});

t.test('random change sequences always converge to the from-scratch ruleset', async (t) => {
  const h = await populated(15);
  let seed = 12345;
  const rnd = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  for (let step = 0; step < 60; step++) {
    const i = rnd(18);
    const r = rnd(6);
    let changes: Change[];
    if (r === 0) changes = [...h.view.remove('Service', `default/s${i}`)];
    else if (r === 1) changes = h.view.put(slice(`s${i}`, ips(i + step, 1 + rnd(4))));
    else if (r === 2) changes = h.view.put(svc(`s${i}`, { clusterIP: `10.96.0.${i + 1}`, affinity: rnd(2) ? true : 100, type: 'NodePort', ports: [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30000 + i }] }));
    else if (r === 3) changes = h.view.put(svc(`s${i}`, { clusterIP: `10.96.0.${i + 1}`, eTP: 'Local', type: 'NodePort', ports: [{ name: 'http', port: 80, nodePort: 30000 + (i % 4) }] }), slice(`s${i}`, [{ ip: `10.244.${i}.1`, node: rnd(2) ? 'node-a' : 'node-b' }]));
    else if (r === 4) changes = [...h.view.remove('EndpointSlice', `default/s${i}-abc`)];
    else changes = h.view.put(svc(`s${i}`, { clusterIP: `10.96.0.${i + 1}` }), slice(`s${i}`, ips(i, 3)));
    if (rnd(10) === 0) h.nft.failNext();
    try {
      await h.proxier.sync({ full: false, changes });
    } catch {
      // The runner retries with a full sync (possibly more than once when failures are queued).
      for (let k = 0; k < 3; k++) {
        const ok = await h.proxier.sync({ full: true, changes: [] }).then(() => true, () => false);
        if (ok) break;
      }
    }
  }
  await h.proxier.sync({ full: false, changes: [] }); // deletes what went stale last
  t.equal(h.nft.dump(), await reference(h));
});

t.test('a slot released and taken by another service port in one sync: its endpoint-map elements are rewritten', async (t) => {
  // Two service names whose ports hash to the same endpoint-map slot.
  const probe = new EndpointSlots();
  const seen = new Map<number, string>();
  let pair: [string, string] | undefined;
  for (let i = 0; !pair; i++) {
    const id = `4/default/n${i}/tcp/http/cluster`;
    const slot = probe.get(id);
    probe.release(id);
    const other = seen.get(slot);
    if (other !== undefined) pair = [other, `n${i}`];
    else seen.set(slot, `n${i}`);
  }
  const [a, b] = pair;
  for (const order of ['remove first', 'add first'] as const) {
    const h = harness();
    h.view.put(svc(a, { clusterIP: '10.96.0.1' }), slice(a, ['10.244.1.1', '10.244.1.2', '10.244.1.3']));
    await h.proxier.sync({ full: true, changes: [] });
    const rm = () => [...h.view.remove('Service', `default/${a}`), ...h.view.remove('EndpointSlice', `default/${a}-abc`)];
    const add = () => h.view.put(svc(b, { clusterIP: '10.96.0.2' }), slice(b, ['10.244.2.1', '10.244.2.2']));
    const changes = order === 'remove first' ? [...rm(), ...add()] : [...add(), ...rm()];
    await h.proxier.sync({ full: false, changes });
    const tr = h.tracer();
    const got = [0, 1, 2, 3].map((k) => tr.connect(tcp('10.244.9.9', '10.96.0.2', 80, 41000 + k), 'external').dnat?.addr);
    t.same(got, ['10.244.2.1', '10.244.2.2', '10.244.2.1', '10.244.2.2'], `${order}: ${b} rotates over its own endpoints`);
    t.equal(tr.connect(tcp('10.244.9.9', '10.96.0.1', 80), 'external').dnat, undefined, `${order}: ${a} is gone`);
    await h.proxier.sync({ full: false, changes: [] });
    t.notMatch(h.nft.dump(), /10\.244\.1\.\d/, `${order}: none of ${a}'s endpoints remain`);
  }
});

t.test('two services claiming one NodePort: the first by key wins, deterministically', async (t) => {
  const h = harness();
  const np = (name: string, ip: string) => svc(name, { clusterIP: ip, type: 'NodePort', ports: [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30100 }] });
  h.view.put(np('b', '10.96.0.2'), slice('b', ['10.244.2.2']));
  await h.proxier.sync({ full: true, changes: [] });
  t.equal(h.tracer().connect(tcp('203.0.113.1', NODE_IP, 30100), 'external').dnat?.addr, '10.244.2.2');
  const changes = h.view.put(np('a', '10.96.0.1'), slice('a', ['10.244.1.1']));
  await h.proxier.sync({ full: false, changes });
  t.equal(h.tracer().connect(tcp('203.0.113.1', NODE_IP, 30100), 'external').dnat?.addr, '10.244.1.1', 'a < b');
  t.ok(logLines.some((l) => l.includes('claim the same address and port')));
  await h.proxier.sync({ full: false, changes: h.view.remove('Service', 'default/a') });
  t.equal(h.tracer().connect(tcp('203.0.113.1', NODE_IP, 30100), 'external').dnat?.addr, '10.244.2.2', 'b takes over');
});

t.test('service shards: a change writes only its shard (and the main table); a contested key lives once, in the winner\'s shard, and moves with it', async (t) => {
  const h = harness();
  // a and b hash to different shards (asserted): the NodePort both claim must move tables.
  t.not(shardOf('default/a'), shardOf('default/b'));
  const np = (name: string, ip: string) => svc(name, { clusterIP: ip, type: 'NodePort', ports: [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30100 }] });
  h.view.put(np('b', '10.96.0.2'), slice('b', ['10.244.2.2']), svc('c', { clusterIP: '10.96.0.3' }), slice('c', ['10.244.3.3']));
  await h.proxier.sync({ full: true, changes: [] });
  t.same(h.nft.runs.at(-1)!.map((tx) => tx.table).sort(), PROXY_TABLES.map(proxyTableName).sort(), 'a rebuild writes every table');
  const nodePortIn = () => PROXY_TABLES.filter((x) => /tcp \. 30100 .*: goto/.test(h.nft.dumpTable('ip', proxyTableName(x)))).map(proxyTableName);
  t.same(nodePortIn(), [proxyTableName(shardOf('default/b'))], "in b's shard");

  let changes = h.view.put(np('a', '10.96.0.1'), slice('a', ['10.244.1.1']));
  await h.proxier.sync({ full: false, changes });
  t.same(nodePortIn(), [proxyTableName(shardOf('default/a'))], "a wins: moved to a's shard, and only there");
  t.equal(h.tracer().connect(tcp('203.0.113.1', NODE_IP, 30100), 'external').dnat?.addr, '10.244.1.1');

  // One endpoint of c: c's shard and the main table (hairpin), nothing else.
  changes = h.view.put(slice('c', ['10.244.3.4']));
  await h.proxier.sync({ full: false, changes });
  const touched = h.nft.runs.at(-1)!.map((tx) => tx.table);
  t.ok(touched.every((x) => x === PROXY_TABLE || x === proxyTableName(shardOf('default/c'))), touched.join(' '));
  t.ok(touched.includes(proxyTableName(shardOf('default/c'))));

  await h.proxier.sync({ full: false, changes: h.view.remove('Service', 'default/a') });
  t.same(nodePortIn(), [proxyTableName(shardOf('default/b'))], "a gone: back in b's shard");
  t.equal(h.tracer().connect(tcp('203.0.113.1', NODE_IP, 30100), 'external').dnat?.addr, '10.244.2.2');
  t.equal(h.tracer().connect(tcp('10.244.9.9', '10.96.0.3', 80), 'external').dnat?.addr, '10.244.3.4');
  await h.proxier.sync({ full: false, changes: [] });
  t.equal(h.nft.dump(), await reference(h), 'equals a from-scratch sync');
});

t.test('names with nft syntax cannot inject: the object is skipped with a reason, others work', async (t) => {
  const h = harness();
  h.view.put(
    svc('good', { clusterIP: '10.96.0.20' }),
    slice('good', ['10.244.1.5']),
    svc('x"; flush ruleset; #', { clusterIP: '10.96.0.22' }),
    svc('ok-name', { ns: 'bad ns', clusterIP: '10.96.0.23' }),
    svc('port-name', { clusterIP: '10.96.0.24', ports: [{ name: 'a} drop; {', port: 80 }] }),
    svc('garbage-ip', { clusterIP: '10.96.0.25; flush ruleset' }),
  );
  await h.proxier.sync({ full: true, changes: [] });
  const text = h.nft.history.map((tx) => tx.toText()).join('');
  t.notMatch(text, /flush ruleset|drop; \{|bad ns/);
  t.equal(h.tracer().connect(tcp('10.244.1.9', '10.96.0.20', 80), 'external').dnat?.addr, '10.244.1.5');
  for (const re of [/invalid name/, /invalid namespace/, /ports\[0\]\.name: invalid value/, /clusterIPs: invalid IP/]) {
    t.ok(logLines.some((l) => re.test(l) && l.includes('skipping invalid object')), `logged ${re}`);
  }
});

t.test('stale UDP conntrack entries of removed endpoints are deleted after the sync', async (t) => {
  const h = harness();
  h.view.put(
    svc('dns', { clusterIP: '10.96.0.10', type: 'NodePort', externalIPs: ['198.51.100.10'], ports: [{ name: 'dns', protocol: 'UDP', port: 53, targetPort: 53, nodePort: 30053 }] }),
    slice('dns', ['10.244.1.5', '10.244.2.5'], { ports: [{ name: 'dns', port: 53, protocol: 'UDP' }] }),
  );
  await h.proxier.sync({ full: true, changes: [] });
  t.same(h.conntrack, [{ family: 4, proto: 'udp', origDst: '10.96.0.10', origDstPort: 53 }], 'a service gaining endpoints clears entries made while it had none');
  h.conntrack.length = 0;
  const changes = h.view.put(slice('dns', ['10.244.1.5'], { ports: [{ name: 'dns', port: 53, protocol: 'UDP' }] }));
  await h.proxier.sync({ full: false, changes });
  t.same(h.conntrack, [
    { family: 4, proto: 'udp', origDst: '10.96.0.10', origDstPort: 53, replySrc: '10.244.2.5' },
    { family: 4, proto: 'udp', origDst: '198.51.100.10', origDstPort: 53, replySrc: '10.244.2.5' },
    { family: 4, proto: 'udp', origDstPort: 30053, replySrc: '10.244.2.5' },
  ]);
  h.conntrack.length = 0;
  // TCP endpoints are left alone (their connections end on their own).
  h.view.put(svc('web', { clusterIP: '10.96.0.11' }), slice('web', ['10.244.1.5', '10.244.2.5']));
  await h.proxier.sync({ full: true, changes: [] });
  await h.proxier.sync({ full: false, changes: h.view.put(slice('web', ['10.244.1.5'])) });
  t.same(h.conntrack, []);
});

t.test('metrics are registered and updated', async (t) => {
  const h = await populated(5);
  const text = await h.registry.metrics();
  for (const name of [
    'skiff_sync_proxy_rules_duration_seconds_count{mode="full"} 1',
    'skiff_sync_proxy_rules_last_timestamp_seconds',
    'skiff_proxy_changes_pending 0',
    'skiff_sync_proxy_rules_nftables_failures_total 0',
    'skiff_proxy_services{family="ipv4"} 5',
    'skiff_proxy_endpoints{family="ipv4"} 15',
    'skiff_network_programming_duration_seconds_count 10',
  ]) t.ok(text.includes(name), name);
  h.view.put(slice('s1', ['10.244.1.1']));
  t.match(await h.registry.getSingleMetricAsString('skiff_proxy_changes_pending'), /skiff_proxy_changes_pending 1/);
});

t.test('healthCheckNodePort: 200 with the local endpoint count, 503 without', async (t) => {
  const port = 20000 + Math.floor(Math.random() * 20000);
  const h = harness({ healthCheckBind: '127.0.0.1' });
  t.teardown(() => h.proxier.close());
  const lb = svc('lb', { clusterIP: '10.96.0.14', type: 'LoadBalancer', eTP: 'Local', healthCheckNodePort: port, ports: [{ name: 'http', port: 80, nodePort: 30014 }] });
  h.view.put(lb, slice('lb', [{ ip: '10.244.1.5', node: 'node-a' }, { ip: '10.244.2.5', node: 'node-b' }], { ports: [{ name: 'http', port: 80 }] }));
  await h.proxier.sync({ full: true, changes: [] });
  const get = () =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      request({ host: '127.0.0.1', port, path: '/healthz', agent: false }, (res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
        .on('error', reject)
        .end();
    });
  let r = await get();
  t.equal(r.status, 200);
  t.same(JSON.parse(r.body), { service: { namespace: 'default', name: 'lb' }, localEndpoints: 1, serviceProxyHealthy: true });
  await h.proxier.sync({ full: false, changes: h.view.put(slice('lb', [{ ip: '10.244.2.5', node: 'node-b' }], { ports: [{ name: 'http', port: 80 }] })) });
  r = await get();
  t.equal(r.status, 503);
  t.equal(JSON.parse(r.body).localEndpoints, 0);
  await h.proxier.sync({ full: false, changes: h.view.remove('Service', 'default/lb') });
  t.same(h.proxier.healthCheckPorts(), []);
  await t.rejects(get(), /ECONNREFUSED/);
});
