// The reconciler's incremental path (state carried over from the previous sync, chains
// of unaffected pods reused from the compile cache, only the difference sent) ends in
// exactly the table a full recompute produces, over many seeded random changes: pod
// label changes, pod additions and deletions, namespace label changes, and now and
// then a policy added or deleted.
import t from 'tap';
import { Registry } from 'prom-client';
import type { AgentContext } from '../../src/agent/reconciler.js';
import type { ClusterObject, Namespace, NetworkPolicy, Pod } from '../../src/cluster/types.js';
import { FakeNft } from '../../src/os/nft-fake.js';
import { MemoryView } from '../../src/proxy/fixtures.js';
import { compile, fullTransaction, POLICY_TABLE } from '../../src/policy/compiler.js';
import { PolicyState } from '../../src/policy/evaluator.js';
import { ing, np, podObj, sel, syntheticCluster } from '../../src/policy/fixtures.js';
import { PolicyReconciler } from '../../src/policy/reconciler.js';
import { logger, setLogSink } from '../../src/util/log.js';

setLogSink(() => {});

/** mulberry32: a small seeded generator. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const NODE = 'node-0';

t.test('incremental syncs end in the same table as a full recompute (seeded random changes)', async (t) => {
  const steps = Number(process.env.POLICY_INCREMENTAL_STEPS ?? 150);
  const c = syntheticCluster({ pods: 240, policies: 150, perNode: 80, namespaces: 12 });
  const view = new MemoryView();
  const put = (...o: ClusterObject[]) => view.put(...(o as never[]));
  const del = (kind: string, key: string) => (view as unknown as { remove(k: string, key: string): unknown }).remove(kind, key);
  const nodeObj: ClusterObject = { apiVersion: 'v1', kind: 'Node', metadata: { name: NODE }, spec: { podCIDR: c.podCIDRs.get(NODE)! } } as ClusterObject;
  put(nodeObj, ...c.namespaces, ...c.pods, ...c.policies);
  const nft = new FakeNft();
  const ctx: AgentContext = { nodeName: NODE, view, registry: new Registry(), log: logger('policy-incremental'), exec: async () => ({ code: 0, stdout: '', stderr: '' }) } as unknown as AgentContext;
  const rec = new PolicyReconciler(ctx, { ensureBridgeNetfilter: false }, nft);
  await rec.sync({ full: true, changes: [] });

  const rand = rng(20261123);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const pods = () => view.list('Pod' as never) as unknown as Pod[];
  const tiers = ['web', 'db', 'cache'];
  let nextPod = 1000;
  let nextIp = 200;
  let nextPolicy = 1000;
  const kinds = { label: 0, add: 0, delete: 0, namespace: 0, policy: 0 };
  const bad: string[] = [];
  let hits = 0;
  let partialOps = 0;
  for (let step = 0; step < steps && bad.length === 0; step++) {
    const r = rand();
    let what: string;
    if (r < 0.5) {
      const p = structuredClone(pick(pods()));
      const labels: Record<string, string> = { ...p.metadata.labels };
      const k = rand();
      if (k < 0.45) labels.app = `app-${Math.floor(rand() * 20)}`;
      else if (k < 0.8) labels.tier = pick(tiers);
      else if (k < 0.9) delete labels.tier;
      else labels.extra = 'x';
      p.metadata.labels = labels;
      put(p);
      kinds.label++;
      what = `label ${p.metadata.namespace}/${p.metadata.name} ${JSON.stringify(labels)}`;
    } else if (r < 0.65) {
      const i = nextPod++;
      const node = pick(['node-0', 'node-0', 'node-1', 'node-2']);
      const n = Number(node.slice(5));
      const ip = `10.100.${n}.${nextIp++ % 250 + 2}`;
      if (pods().some((p) => p.status?.podIP === ip)) continue;
      const p = podObj(`ns-${Math.floor(rand() * 12)}`, `new-${i}`, { node, ips: [ip], labels: { app: `app-${Math.floor(rand() * 20)}`, tier: pick(tiers) } });
      p.spec.containers[0]!.ports = [{ name: 'http', containerPort: 8080 + Math.floor(rand() * 3), protocol: 'TCP' }];
      put(p);
      kinds.add++;
      what = `add ${p.metadata.namespace}/${p.metadata.name} on ${node}`;
    } else if (r < 0.8) {
      const p = pick(pods());
      del('Pod', `${p.metadata.namespace}/${p.metadata.name}`);
      kinds.delete++;
      what = `delete ${p.metadata.namespace}/${p.metadata.name}`;
    } else if (r < 0.95) {
      const ns = structuredClone(pick(view.list('Namespace' as never) as unknown as Namespace[]));
      ns.metadata.labels = { ...ns.metadata.labels, team: `team-${Math.floor(rand() * 5)}`, env: pick(['prod', 'dev']) };
      put(ns);
      kinds.namespace++;
      what = `namespace ${ns.metadata.name} ${JSON.stringify(ns.metadata.labels)}`;
    } else {
      const pols = view.list('NetworkPolicy' as never) as unknown as NetworkPolicy[];
      if (rand() < 0.5 && pols.length) {
        const p = pick(pols);
        del('NetworkPolicy', `${p.metadata.namespace}/${p.metadata.name}`);
        what = `delete policy ${p.metadata.namespace}/${p.metadata.name}`;
      } else {
        const k = nextPolicy++;
        put(np(`ns-${k % 12}`, `pol-${k}`, { podSelector: sel({ tier: pick(tiers) }), ingress: [ing([{ namespaceSelector: sel({ env: 'prod' }), podSelector: sel({ app: `app-${k % 20}` }) }], [{ port: 'http' }])] }));
        what = `add policy ns-${k % 12}/pol-${k}`;
      }
      kinds.policy++;
    }

    await rec.sync({ full: false, changes: [] });
    const stats = rec.lastStats as { rebuild: boolean; ops: number };
    if (stats.rebuild) bad.push(`step ${step} (${what}): rebuilt instead of a partial sync`);
    partialOps += stats.ops;
    hits += rec.lastCompile.hits;
    // Objects that went stale are deleted by the next sync: after it the kernel must
    // hold exactly the fresh table.
    await rec.sync({ full: false, changes: [] });
    const idle = rec.lastStats as { elementsAdded?: number; chainsAdded?: number };
    if (idle.elementsAdded || idle.chainsAdded) bad.push(`step ${step} (${what}): the sync after it still added ${JSON.stringify(idle)}`);

    const fresh = new FakeNft();
    fresh.apply(fullTransaction(compile(PolicyState.fromReader(view), { nodeName: NODE, podCIDRs: [c.podCIDRs.get(NODE)!] })));
    const got = nft.dumpTable('inet', POLICY_TABLE);
    const want = fresh.dumpTable('inet', POLICY_TABLE);
    if (got !== want) {
      const g = got.split('\n');
      const w = want.split('\n');
      const i = g.findIndex((l, j) => l !== w[j]);
      bad.push(`step ${step} (${what}): the incremental table differs from a full recompute at line ${i}:\n  incremental: ${g[i]}\n  full:        ${w[i]}`);
    }
  }
  t.same(bad.slice(0, 3), [], `${steps} random changes (${JSON.stringify(kinds)}), ${partialOps} nft operations in all`);
  t.ok(kinds.label > 0 && kinds.add > 0 && kinds.delete > 0 && kinds.namespace > 0, 'every kind of change was drawn');
  t.ok(hits > steps, `the compile cache was used (${hits} chains reused)`);
});
