// NetworkPolicy end to end in a skiff lab (lab "pl", namespaces skl-pl-*): three
// nodes running the real agent (CNI plugin, overlay, proxy, policy), the upstream
// model (namespaces x, y, z labelled ns=<name>; pods a, b, c labelled pod=<name>,
// serving TCP and UDP on 80 and 81 through named container ports) spread over the
// nodes. Every upstream scenario, then seeded random policies, is applied through
// the lab's manifests; the matrix measured from inside the pods (`skiff lab matrix`'s
// code) must equal the evaluator's. Agents pick changes up asynchronously, so a
// scenario's matrix is re-measured (up to a deadline) until it settles, as the
// upstream suite does.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import type { NetworkPolicy } from '../../src/cluster/types.js';
import type { LabObject } from '../../src/lab/config.js';
import { DEFAULT_SETTINGS } from '../../src/lab/config.js';
import { apply, down, remove, up } from '../../src/lab/manager.js';
import { labMatrix } from '../../src/lab/matrix.js';
import { loadState, type LabState } from '../../src/lab/state.js';
import { LAB_PREFIX } from '../../src/lab/topology.js';
import { applyMutation, MODEL_KEYS, MODEL_NAMESPACES, modelNode, nsObj, podObj, randomScenario, UPSTREAM_SCENARIOS, type Scenario } from '../../src/policy/fixtures.js';
import type { ProbeAgent } from '../../src/policy/probe.js';
import { requireRoot } from '../helpers/netns.js';

// POLICY_E2E_LAB: another lab name, so that concurrent runs (other worktrees) do not collide.
const LAB = process.env.POLICY_E2E_LAB ?? 'pl';
const RANDOM = Number(process.env.POLICY_E2E_RANDOM ?? 200);
const SETTLE_MS = 8000;

if (requireRoot(t)) {
  const quiet = () => {};
  const NODES = ['node1', 'node2', 'node3'];
  const namespaces = MODEL_NAMESPACES.map((n) => nsObj(n));
  const pods = MODEL_KEYS.map((key) => {
    const [n, p] = key.split('/') as [string, string];
    const pod = podObj(n, p, { node: modelNode(NODES, key) });
    delete pod.status;
    return pod;
  });
  let s: LabState;
  const agents = new Map<string, ProbeAgent>();
  let installed: NetworkPolicy[] = [];
  let ips = new Map<string, string>();

  t.teardown(async () => {
    for (const a of agents.values()) a.stop();
    await down(LAB, quiet, LAB_PREFIX).catch(() => {});
  });
  process.once('SIGINT', () => void down(LAB, quiet, LAB_PREFIX).finally(() => process.exit(130)));

  const flushConntrack = () => {
    for (const n of s.nodes) spawnSync('ip', ['netns', 'exec', n.ns, 'conntrack', '-F'], { stdio: 'ignore' });
  };

  const install = async (sc: Scenario) => {
    const objs = applyMutation({ namespaces, pods }, sc.mutate);
    const policies = sc.policies(ips);
    const gone = installed.filter((o) => !policies.some((p) => p.metadata.namespace === o.metadata.namespace && p.metadata.name === o.metadata.name));
    if (gone.length) await remove(s, gone as LabObject[], quiet);
    await apply(s, [...objs.namespaces, ...objs.pods, ...policies] as LabObject[], quiet);
    installed = policies;
  };

  /** Measures until kernel = evaluator or the deadline; returns the last matrix. */
  const settle = async () => {
    const until = Date.now() + SETTLE_MS;
    let first = true;
    for (;;) {
      if (!first) await new Promise((r) => setTimeout(r, 300));
      first = false;
      flushConntrack();
      // Early rounds confirm failures briefly (the agents may still be applying);
      // once past the deadline, a failure must survive the long confirmation.
      const last = Date.now() > until;
      const m = await labMatrix(s, { agents, probes: [['TCP', 80], ['TCP', 81], ['UDP', 80], ['UDP', 81]], confirmMs: last ? 2000 : 400 });
      if (m.mismatches.length === 0 || last) return m;
    }
  };

  t.before(async () => {
    await down(LAB, quiet, LAB_PREFIX).catch(() => {});
    s = await up({ ...DEFAULT_SETTINGS, name: LAB, nodes: 3 }, [...namespaces, ...pods] as LabObject[], quiet);
    s = loadState(LAB)!;
    ips = new Map(Object.entries(s.pods).map(([k, p]) => [k, p.ip!]));
  });

  t.test('the lab runs the model: 9 pods on 3 nodes, everything reachable', async (t) => {
    t.equal(Object.keys(s.pods).length, 9);
    t.same(new Set(Object.values(s.pods).map((p) => p.node)), new Set(NODES));
    const m = await settle();
    t.equal(m.mismatches.length, 0, m.text);
    t.ok(m.cells.every((c) => c.kernel), 'no policy: all allowed');
  });

  t.test(`upstream scenarios (${UPSTREAM_SCENARIOS.length}): the kernel matrix equals the evaluator's`, async (t) => {
    for (const sc of UPSTREAM_SCENARIOS) {
      await install(sc);
      const m = await settle();
      t.equal(m.mismatches.length, 0, `${sc.name}: ${m.cells.length} probes`, m.mismatches.length ? { matrix: m.text } : {});
    }
  });

  t.test(`random policies (${RANDOM} seeded cases): the kernel matrix equals the evaluator's`, async (t) => {
    let bad = 0;
    let probes = 0;
    for (let seed = 5001; seed < 5001 + RANDOM; seed++) {
      const sc = randomScenario(seed);
      await install(sc);
      const m = await settle();
      probes += m.cells.length;
      if (m.mismatches.length) {
        bad++;
        t.fail(`seed ${seed}`, { policies: JSON.stringify(sc.policies(ips)), matrix: m.text });
      }
    }
    t.equal(bad, 0, `${RANDOM} random scenarios, ${probes} probes`);
  });
}
