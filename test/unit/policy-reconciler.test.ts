// The policy reconciler over the fake nftables: full then partial syncs, adoption
// after a restart, invalid policies, failures, the new-pod guard, metrics.
import t from 'tap';
import { Registry } from 'prom-client';
import type { AgentContext } from '../../src/agent/reconciler.js';
import type { ClusterObject, Node, Pod } from '../../src/cluster/types.js';
import type { Executor } from '../../src/os/exec.js';
import { FakeNft } from '../../src/os/nft-fake.js';
import { Tracer, explain } from '../../src/os/nft-trace.js';
import { MemoryView } from '../../src/proxy/fixtures.js';
import { POLICY_TABLE } from '../../src/policy/compiler.js';
import { evaluate, PolicyState } from '../../src/policy/evaluator.js';
import { MODEL_KEYS, ing, np, sel, syntheticModel } from '../../src/policy/fixtures.js';
import { PolicyReconciler, dropCounters } from '../../src/policy/reconciler.js';
import { logger, setLogSink } from '../../src/util/log.js';

const lines: string[] = [];
setLogSink((l) => lines.push(l));
const noExec: Executor = async () => ({ code: 0, stdout: '', stderr: '' });
const NODE = 'node-1';
const model = syntheticModel(['node-1', 'node-2', 'node-3']);
const nodeObj: Node = { apiVersion: 'v1', kind: 'Node', metadata: { name: NODE }, spec: { podCIDR: model.podCIDRs.get(NODE)! } };

function setup(o: { nft?: FakeNft; sysctl?: Map<string, string> } = {}) {
  const view = new MemoryView();
  const put = (...objs: ClusterObject[]) => view.put(...(objs as never[]));
  put(nodeObj, ...model.namespaces, ...model.pods);
  const nft = o.nft ?? new FakeNft();
  const registry = new Registry();
  const ctx: AgentContext = { nodeName: NODE, view, registry, log: logger('policy-test'), exec: noExec };
  const sysctl = o.sysctl ?? new Map([['/proc/sys/net/bridge/bridge-nf-call-iptables', '1'], ['/proc/sys/net/bridge/bridge-nf-call-ip6tables', '1']]);
  const rec = new PolicyReconciler(ctx, {}, nft, {
    sysctl: { read: async (p) => sysctl.get(p), write: async (p, v) => void sysctl.set(p, v) },
  });
  return { view, put, nft, rec, registry, sysctl, tracer: () => new Tracer(nft) };
}

const ipOf = (key: string) => model.pods.find((p) => `${p.metadata.namespace}/${p.metadata.name}` === key)!.status!.podIP!;
const local = MODEL_KEYS.filter((k) => model.pods.find((p) => `${p.metadata.namespace}/${p.metadata.name}` === k)!.spec.nodeName === NODE);

/** Ingress to this node's pods from every model pod: the tracer (this node only) against the evaluator. */
function mismatches(h: ReturnType<typeof setup>): string[] {
  const state = PolicyState.fromReader(h.view);
  const tr = h.tracer();
  const out: string[] = [];
  for (const to of local) {
    for (const from of MODEL_KEYS) {
      if (from === to || local.includes(from)) continue;
      const want = evaluate(state, { from: { pod: from }, to: { pod: to }, port: 80 }, { reasons: false }).ingress.allowed;
      const r = tr.hook('forward', { family: 4, src: ipOf(from), dst: ipOf(to), proto: 'tcp', sport: 40000, dport: 80 });
      if ((r.verdict === 'accept') !== want) out.push(`${from} -> ${to}: evaluator ${want}\n${explain(r)}`);
    }
  }
  return out;
}

t.test('first sync is full, a label change is a one-element partial sync', async (t) => {
  const h = setup();
  h.put(np('x', 'from-b', { podSelector: {}, ingress: [ing([{ podSelector: sel({ role: 'client' }) }])] }));
  await h.rec.sync({ full: true, changes: [] });
  t.match(h.rec.lastStats, { rebuild: true });
  t.ok(h.nft.table('inet', POLICY_TABLE), 'table created');
  t.same(mismatches(h), []);
  const xb = structuredClone(model.pods.find((p) => p.metadata.namespace === 'y' && p.metadata.name === 'b')!) as Pod;
  xb.metadata.labels = { pod: 'b', role: 'client' };
  xb.metadata.namespace = 'x';
  xb.metadata.name = 'b';
  const orig = model.pods.find((p) => p.metadata.namespace === 'x' && p.metadata.name === 'b')!;
  h.put({ ...orig, metadata: { ...orig.metadata, labels: { pod: 'b', role: 'client' } } });
  const before = h.nft.history.length;
  await h.rec.sync({ full: false, changes: [] });
  t.match(h.rec.lastStats, { rebuild: false, elementsAdded: 1, elementsDeleted: 0, chainsAdded: 0 });
  t.equal(h.nft.history.length, before + 1, 'one transaction');
  t.equal(h.nft.history.at(-1)!.size, 1, 'of one operation');
  t.same(mismatches(h), []);
  // Nothing changed: nothing sent.
  await h.rec.sync({ full: false, changes: [] });
  t.equal(h.nft.history.length, before + 1, 'an idle sync sends nothing');
});

t.test('a restarted agent adopts the table in one transaction', async (t) => {
  const h = setup();
  h.put(np('x', 'deny', { ingress: [] }), np('y', 'deny', { ingress: [] }));
  await h.rec.sync({ full: true, changes: [] });
  const dump1 = h.nft.dump();
  // The new agent, same kernel, one policy gone while it was down.
  const h2 = setup({ nft: h.nft });
  h2.put(np('x', 'deny', { ingress: [] }));
  await h2.rec.sync({ full: false, changes: [] });
  t.match(h2.rec.lastStats, { rebuild: true }, 'the first sync of a new agent is full');
  t.not(h.nft.dump(), dump1);
  const fresh = setup();
  fresh.put(np('x', 'deny', { ingress: [] }));
  await fresh.rec.sync({ full: true, changes: [] });
  t.equal(h.nft.dump(), fresh.nft.dump(), 'same table as a fresh node');
  t.same(mismatches(h2), []);
});

t.test('invalid policies are rejected with a logged reason; the others are enforced', async (t) => {
  const h = setup();
  lines.length = 0;
  h.put(
    np('x', 'bad', { ingress: [ing([{ ipBlock: { cidr: '10.0.0.0/16', except: ['10.1.0.0/16'] } }])] }),
    np('y', 'good', { ingress: [] }),
  );
  await h.rec.sync({ full: true, changes: [] });
  const warn = lines.map((l) => JSON.parse(l)).filter((l) => l.msg.startsWith('rejected invalid NetworkPolicy'));
  t.equal(warn.length, 1);
  t.equal(warn[0].policy, 'x/bad');
  t.match(warn[0].reasons.join(' '), /except\[0\].*10\.1\.0\.0\/16.*not inside/);
  t.same(mismatches(h), []);
  const metrics = await h.registry.metrics();
  t.match(metrics, /skiff_policy_policies_programmed 1/);
  t.match(metrics, /skiff_policy_policies_invalid 1/);
  await h.rec.sync({ full: false, changes: [] });
  t.equal(lines.filter((l) => l.includes('rejected invalid')).length, 1, 'logged once, not on every sync');
});

t.test('a failed transaction is counted, reported, and the next sync rebuilds', async (t) => {
  const h = setup();
  await h.rec.sync({ full: true, changes: [] });
  h.put(np('x', 'deny', { ingress: [] }));
  h.nft.failNext(1, 'Could not process rule: No buffer space available');
  await t.rejects(h.rec.sync({ full: false, changes: [] }), /No buffer space/);
  t.equal(h.rec.health().ok, false);
  t.match(await h.registry.metrics(), /skiff_sync_policy_rules_failures_total 1/);
  await h.rec.sync({ full: false, changes: [] });
  t.match(h.rec.lastStats, { rebuild: true }, 'rebuilt after the failure');
  t.equal(h.rec.health().ok, true);
  t.same(mismatches(h), []);
});

t.test('new pods are cut off until the sync that programs them', async (t) => {
  const h = setup();
  h.put(np('z', 'only-from-a', { ingress: [ing([{ podSelector: sel({ pod: 'a' }) }])] }));
  await h.rec.sync({ full: true, changes: [] });
  const newIp = '10.244.1.77';
  const tr = h.tracer();
  const pkt = (src: string, dst: string) => ({ family: 4 as const, src, dst, proto: 'tcp' as const, sport: 40000, dport: 80 });
  // The CNI plugin created z/new (no policy allows y/b into z) but the agent has not synced yet.
  t.equal(tr.hook('forward', pkt(ipOf('y/b'), newIp)).verdict, 'drop', 'y/b cannot reach the new pod before its rules exist');
  t.equal(tr.hook('forward', pkt(newIp, ipOf('y/b'))).verdict, 'drop', 'nor can the new pod send');
  const p = structuredClone(model.pods[0]!);
  p.metadata = { name: 'new', namespace: 'z', labels: { pod: 'new' } };
  p.spec.nodeName = NODE;
  p.status = { phase: 'Running', podIP: newIp, podIPs: [{ ip: newIp }] };
  h.put(p);
  await h.rec.sync({ full: false, changes: [] });
  t.match(h.rec.lastStats, { rebuild: false });
  t.equal(tr.hook('forward', pkt(ipOf('y/b'), newIp)).verdict, 'drop', 'programmed: still denied (by z/only-from-a now)');
  t.match(explain(tr.hook('forward', pkt(ipOf('y/b'), newIp))), /ingress denied: z\/only-from-a/);
  t.equal(tr.hook('forward', pkt(ipOf('z/a'), newIp)).verdict, 'accept', 'and what the policy allows (z/a) flows');
  t.equal(tr.hook('forward', pkt(newIp, ipOf('y/b'))).verdict, 'accept', 'its egress is not isolated');
});

t.test('bridge netfilter is switched on when off; metrics are exported', async (t) => {
  const sysctl = new Map([['/proc/sys/net/bridge/bridge-nf-call-iptables', '0'], ['/proc/sys/net/bridge/bridge-nf-call-ip6tables', '1']]);
  const h = setup({ sysctl });
  await h.rec.sync({ full: true, changes: [] });
  t.equal(sysctl.get('/proc/sys/net/bridge/bridge-nf-call-iptables'), '1');
  const m = await h.registry.metrics();
  t.match(m, /skiff_sync_policy_rules_duration_seconds_count\{mode="full"\} 1/);
  t.match(m, /skiff_policy_local_pods_isolated\{direction="ingress"\} 0/);
  t.match(m, /skiff_policy_nft_operations_total\{mode="full"\} \d+/);
});

t.test('dropCounters reads the counted drop rules of an nft -j listing', async (t) => {
  const raw = [
    { rule: { chain: 'i-X', comment: 'ingress denied: x/deny', expr: [{ counter: { packets: 3, bytes: 180 } }, { drop: null }] } },
    { rule: { chain: 'forward', comment: 'pod not programmed yet', expr: [{ match: {} }, { counter: { packets: 2, bytes: 1 } }, { drop: null }] } },
    { rule: { chain: 'forward', comment: 'pod not programmed yet', expr: [{ counter: { packets: 1, bytes: 1 } }, { drop: null }] } },
    { rule: { chain: 'forward', expr: [{ accept: null }] } },
  ];
  t.same([...dropCounters(raw)], [['ingress denied: x/deny', 3], ['pod not programmed yet', 3]]);
});
