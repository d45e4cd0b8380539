// The NetworkPolicy compiler's output, applied to the fake nftables of three nodes
// and walked by the packet tracer, agrees with the evaluator: on every upstream
// scenario (full 9×9 matrices over TCP/UDP 80/81, plus external addresses) and on
// a seeded generator of random policies, applied both in full and incrementally.
import t from 'tap';
import type { Protocol } from '../../src/cluster/types.js';
import { compile, fullTransaction, planUpdate, appliedFrom, cidrElements, portElements, POLICY_TABLE } from '../../src/policy/compiler.js';
import { evaluate, PolicyState, type Connection } from '../../src/policy/evaluator.js';
import {
  applyMutation,
  DEFAULT_PROBES,
  MODEL_KEYS,
  UPSTREAM_SCENARIOS,
  egr,
  ing,
  np,
  randomScenario,
  sel,
  syntheticModel,
  type Scenario,
} from '../../src/policy/fixtures.js';
import { SimCluster, explainAll } from '../../src/policy/testing.js';

const NODES = ['node-1', 'node-2', 'node-3'];
const base = syntheticModel(NODES);
const IPS = new Map(base.pods.map((p) => [`${p.metadata.namespace}/${p.metadata.name}`, p.status!.podIP!]));
const NODE_OF = new Map(base.pods.map((p) => [`${p.metadata.namespace}/${p.metadata.name}`, p.spec.nodeName!]));
const EXTERNAL = ['192.0.2.7', '10.244.9.9'];

function stateOf(s: Scenario, prev?: PolicyState): PolicyState {
  const objs = applyMutation(base, s.mutate);
  return PolicyState.from({ ...objs, policies: s.policies(IPS) }, prev ? { prev } : {});
}

/** Compares kernel (tracer) and evaluator over the matrix plus external ends; returns mismatches. */
function compare(sim: SimCluster, state: PolicyState, probes: [Protocol, number][] = DEFAULT_PROBES): { checked: number; mismatches: string[] } {
  const mismatches: string[] = [];
  let checked = 0;
  for (const [protocol, port] of probes) {
    for (const from of MODEL_KEYS) {
      for (const to of MODEL_KEYS) {
        if (from === to) continue; // a pod's traffic to its own address never leaves it
        const want = evaluate(state, { from: { pod: from }, to: { pod: to }, protocol, port }, { reasons: false }).allowed;
        const got = sim.connect({ src: IPS.get(from)!, srcNode: NODE_OF.get(from)!, dst: IPS.get(to)!, dstNode: NODE_OF.get(to)!, protocol, port });
        checked++;
        if (want !== got.allowed) mismatches.push(`${from} -> ${to} ${protocol}/${port}: evaluator ${want}, kernel ${got.allowed}\n${explainAll(got.traces)}`);
      }
      for (const ext of EXTERNAL) {
        for (const [a, b, conn] of [
          [from, ext, { from: { pod: from }, to: { ip: ext }, protocol, port }],
          [ext, from, { from: { ip: ext }, to: { pod: from }, protocol, port }],
        ] as [string, string, Connection][]) {
          const want = evaluate(state, conn, { reasons: false }).allowed;
          const got = sim.connect({
            src: IPS.get(a) ?? a,
            ...(NODE_OF.has(a) ? { srcNode: NODE_OF.get(a)! } : {}),
            dst: IPS.get(b) ?? b,
            ...(NODE_OF.has(b) ? { dstNode: NODE_OF.get(b)! } : {}),
            protocol,
            port,
          });
          checked++;
          if (want !== got.allowed) mismatches.push(`${a} -> ${b} ${protocol}/${port}: evaluator ${want}, kernel ${got.allowed}\n${explainAll(got.traces)}`);
        }
      }
    }
  }
  return { checked, mismatches };
}

t.test('interval helpers merge overlaps into disjoint elements', async (t) => {
  t.same(cidrElements(['10.0.0.0/24', '10.0.0.128/25', '10.0.1.0/24', '10.0.3.7/32']).elements, ['10.0.0.0-10.0.1.255', '10.0.3.7']);
  t.same(portElements([{ protocol: 'TCP', port: 80, endPort: 85 }, { protocol: 'TCP', port: 84, endPort: 90 }, { protocol: 'UDP' }, { protocol: 'TCP', port: 443 }]), [
    ['tcp', '80-90'],
    ['tcp', '443'],
    ['udp', '0-65535'],
  ]);
});

t.test('upstream scenarios: kernel (tracer over fake nft) equals the evaluator', async (t) => {
  let total = 0;
  const sim = new SimCluster(base.podCIDRs);
  for (const s of UPSTREAM_SCENARIOS) {
    const state = stateOf(s);
    // Fresh cluster (full transactions) and the long-lived one (incremental updates).
    const fresh = new SimCluster(base.podCIDRs);
    fresh.apply(state, 'full');
    sim.apply(state);
    for (const [label, c] of [['full', fresh], ['incremental', sim]] as const) {
      const r = compare(c, state, s.probes);
      total += r.checked;
      t.same(r.mismatches.slice(0, 3), [], `${s.name} (${label}): ${r.checked} connections`);
    }
  }
  t.ok(UPSTREAM_SCENARIOS.length >= 30, `${UPSTREAM_SCENARIOS.length} scenarios`);
  t.ok(total > 30 * 2 * 4 * 72, `${total} connections compared`);
});

t.test('random policies (seeded): kernel equals the evaluator', async (t) => {
  const seeds = Number(process.env.POLICY_RANDOM_CASES ?? 250);
  const sim = new SimCluster(base.podCIDRs);
  let total = 0;
  let allowed = 0;
  let denied = 0;
  const bad: string[] = [];
  let prev: PolicyState | undefined;
  const policyObjs = new Map<number, ReturnType<Scenario['policies']>>();
  for (let seed = 1; seed <= seeds; seed++) {
    const s = randomScenario(seed);
    const state = stateOf(s);
    // The simulated kernel is programmed from a state derived incrementally from the
    // previous one (as the reconciler does, with some policy objects carried over),
    // the verdicts come from a fresh state.
    const objs = applyMutation(base, s.mutate);
    const pols = [...(policyObjs.get(seed - 1) ?? []).filter((_, i) => i % 2 === 0), ...s.policies(IPS)];
    policyObjs.set(seed, pols);
    const incState = PolicyState.from({ ...objs, policies: pols }, prev ? { prev } : {});
    const freshState = PolicyState.from({ ...objs, policies: pols });
    prev = incState;
    sim.apply(incState, seed % 10 === 0 ? 'full' : 'incremental');
    const r0 = compare(sim, freshState);
    if (r0.mismatches.length) bad.push(`seed ${seed} (incremental state): ${r0.mismatches[0]}`);
    sim.apply(state, seed % 10 === 0 ? 'full' : 'incremental');
    const r = compare(sim, state);
    total += r.checked;
    if (r.mismatches.length) bad.push(`seed ${seed}: ${JSON.stringify(s.policies(IPS))}\n${r.mismatches[0]}`);
    for (const from of MODEL_KEYS.slice(0, 3)) for (const to of MODEL_KEYS) if (from !== to) evaluate(state, { from: { pod: from }, to: { pod: to }, port: 80 }).allowed ? allowed++ : denied++;
  }
  t.same(bad.slice(0, 2), [], `${seeds} random scenarios, ${total} connections`);
  t.ok(allowed > 0 && denied > 0, `the generator produces both verdicts (${allowed} allowed, ${denied} denied probes)`);
});

t.test('established and related packets are accepted whatever the policy', async (t) => {
  const sim = new SimCluster(base.podCIDRs);
  const state = stateOf({ name: 'deny all', policies: () => [np('x', 'deny-all', { policyTypes: ['Ingress', 'Egress'] })] });
  sim.apply(state);
  const c = { src: IPS.get('y/a')!, srcNode: NODE_OF.get('y/a')!, dst: IPS.get('x/b')!, dstNode: NODE_OF.get('x/b')!, protocol: 'TCP' as const, port: 80 };
  t.equal(sim.connect(c).allowed, false, 'a new connection is denied');
  t.equal(sim.connect({ ...c, ct: 'established' }).allowed, true, 'an established one goes on (docs/policy.md: tightening does not cut)');
  t.equal(sim.connect({ ...c, ct: 'invalid' }).allowed, false, 'invalid packets to an isolated pod are dropped');
});

t.test('new-pod guard: unknown addresses of the node pod CIDR are dropped while policies exist', async (t) => {
  const sim = new SimCluster(base.podCIDRs);
  const newPod = '10.244.1.200';
  const target = { dst: IPS.get('y/b')!, dstNode: NODE_OF.get('y/b')!, protocol: 'TCP' as const, port: 80 };
  sim.apply(stateOf({ name: 'none', policies: () => [] }));
  t.equal(sim.connect({ src: newPod, srcNode: 'node-1', ...target }).allowed, true, 'no policies: a new pod is not delayed');
  const withPolicy = stateOf({ name: 'one', policies: () => [np('z', 'deny', { ingress: [] })] });
  sim.apply(withPolicy);
  const out = sim.connect({ src: newPod, srcNode: 'node-1', ...target });
  t.equal(out.allowed, false, 'policies exist: the unknown pod address is cut off');
  t.match(explainAll(out.traces), /pod not programmed yet/);
  t.equal(sim.connect({ src: IPS.get('y/a')!, srcNode: NODE_OF.get('y/a')!, dst: newPod, dstNode: 'node-1', protocol: 'TCP', port: 80 }).allowed, false, 'and nothing reaches it');
  t.equal(sim.connect({ src: '10.244.2.200', srcNode: 'node-2', ...target }).allowed, false, 'same on another node');
  // Once the pod is in the state (the agent saw it), it is programmed in the same transaction.
  const objs = applyMutation(base, undefined);
  const p = structuredClone(objs.pods[0]!);
  p.metadata.name = 'new';
  p.metadata.namespace = 'z';
  p.spec.nodeName = 'node-1';
  p.status = { phase: 'Running', podIP: newPod, podIPs: [{ ip: newPod }] };
  const st = PolicyState.from({ ...objs, pods: [...objs.pods, p], policies: [np('z', 'deny', { ingress: [] })] });
  sim.apply(st);
  t.equal(sim.connect({ src: newPod, srcNode: 'node-1', ...target }).allowed, true, 'programmed: its egress is allowed (not isolated)');
  t.equal(sim.connect({ src: IPS.get('y/a')!, srcNode: NODE_OF.get('y/a')!, dst: newPod, dstNode: 'node-1', protocol: 'TCP', port: 80 }).allowed, false, 'and its ingress is denied by z/deny from the start');
});

t.test('egress to the node itself goes through the input hook', async (t) => {
  const sim = new SimCluster(base.podCIDRs);
  const nodeIp = '192.168.50.1';
  const xa = { src: IPS.get('x/a')!, node: NODE_OF.get('x/a')!, nodeIp, protocol: 'TCP' as const, port: 10250 };
  sim.apply(stateOf({ name: 'deny egress', policies: () => [np('x', 'deny-egress', { podSelector: sel({ pod: 'a' }), policyTypes: ['Egress'] })] }));
  t.equal(sim.toNode(xa).verdict, 'drop');
  sim.apply(stateOf({ name: 'allow to node', policies: () => [np('x', 'eg', { podSelector: sel({ pod: 'a' }), policyTypes: ['Egress'], egress: [egr([{ ipBlock: { cidr: `${nodeIp}/32` } }])] })] }));
  t.equal(sim.toNode(xa).verdict, 'accept');
});

t.test('partial updates: a pod label change touches only the affected sets', async (t) => {
  const sim = new SimCluster(base.podCIDRs);
  const policies = () => [
    np('x', 'from-b', { podSelector: sel({ pod: 'a' }), ingress: [ing([{ podSelector: sel({ role: 'client' }) }])] }),
    np('y', 'from-ns', { ingress: [ing([{ namespaceSelector: sel({ ns: 'z' }) }])] }),
  ];
  sim.apply(stateOf({ name: 'before', policies }));
  const after = stateOf({ name: 'after', policies, mutate: { podLabels: { 'x/b': { pod: 'b', role: 'client' } } } });
  const n = sim.nodes.get(NODE_OF.get('x/a')!)!;
  const model = compile(after, { nodeName: n.name, podCIDRs: n.podCIDRs });
  const plan = planUpdate(n.applied!, model)!;
  t.ok(plan, 'no rebuild needed');
  t.match(plan.stats, { rebuild: false, chainsAdded: 0, chainsFlushed: 0, setsAdded: 0, setsDeleted: 0, elementsAdded: 1, elementsDeleted: 0 });
  t.equal(plan.tx.size, 1, 'one element added');
  t.match(plan.tx.toText(), /^add element inet skiff-policy p4-[A-Z0-9]+-x\.from-b\.in0\.0 \{ 10\.244\.\d+\.\d+ \}\n$/);
  sim.apply(after);
  t.same(compare(sim, after).mismatches, []);
  // A namespace label change: only z's pods leave y's peer set.
  const nsChange = stateOf({ name: 'ns', policies, mutate: { namespaceLabels: { z: { ns: 'zz' } }, podLabels: { 'x/b': { pod: 'b', role: 'client' } } } });
  const n2 = sim.nodes.get(NODE_OF.get('y/a')!)!;
  const plan2 = planUpdate(n2.applied!, compile(nsChange, { nodeName: n2.name, podCIDRs: n2.podCIDRs }))!;
  t.equal(plan2.stats.elementsDeleted, 3, "z's three pods removed from y/from-ns's set");
  t.equal(plan2.stats.elementsAdded, 0);
  t.equal(plan2.stats.chainsAdded, 0);
});

t.test('policy deletion removes chains and sets (after one deferred sync) and the table stays consistent', async (t) => {
  const sim = new SimCluster(base.podCIDRs);
  sim.apply(stateOf({ name: 'a', policies: () => [np('x', 'p1', { ingress: [ing([{ podSelector: sel({ pod: 'b' }) }], [{ port: 80 }])] })] }));
  const n = sim.nodes.get('node-1')!;
  const chainsBefore = [...n.nft.table('inet', POLICY_TABLE)!.chains.keys()].filter((c) => c.startsWith('i-'));
  t.ok(chainsBefore.length > 0);
  const empty = stateOf({ name: 'none', policies: () => [] });
  sim.apply(empty);
  sim.apply(empty);
  const chainsAfter = [...n.nft.table('inet', POLICY_TABLE)!.chains.keys()].filter((c) => c.startsWith('i-'));
  t.same(chainsAfter, [], 'policy chains deleted');
  const sets = [...n.nft.table('inet', POLICY_TABLE)!.sets.keys()].filter((s) => s.startsWith('p4') || s.startsWith('pt'));
  t.same(sets, [], 'peer and port sets deleted');
  t.same(compare(sim, empty).mismatches, []);
});

t.test('full transaction adopts whatever table a previous agent left', async (t) => {
  const sim = new SimCluster(base.podCIDRs);
  const s1 = stateOf(UPSTREAM_SCENARIOS[3]!);
  sim.apply(s1);
  const n = sim.nodes.get('node-2')!;
  // A restarted agent knows nothing and applies in full over the old table.
  const s2 = stateOf(UPSTREAM_SCENARIOS[10]!);
  const m = compile(s2, { nodeName: n.name, podCIDRs: n.podCIDRs });
  n.nft.apply(fullTransaction(m));
  n.applied = appliedFrom(m);
  for (const other of sim.nodes.values()) if (other !== n) other.applied = undefined;
  sim.apply(s2, 'full');
  t.same(compare(sim, s2).mismatches, []);
});

t.test('the rendered ruleset reads as documented', async (t) => {
  const state = stateOf({ name: 'doc', policies: () => [np('x', 'web', { podSelector: sel({ pod: 'a' }), ingress: [ing([{ namespaceSelector: sel({ ns: 'y' }) }], [{ port: 80 }, { protocol: 'UDP', port: 81, endPort: 85 }])] })] });
  const text = fullTransaction(compile(state, { nodeName: NODE_OF.get('x/a')!, podCIDRs: ['10.244.1.0/24'] })).toText();
  t.match(text, /add chain inet skiff-policy forward \{ type filter hook forward priority 0 ; policy accept ;/);
  t.match(text, /add rule inet skiff-policy forward ct state established,related accept/);
  t.match(text, /add rule inet skiff-policy forward ip saddr vmap @egress4/);
  t.match(text, /add rule inet skiff-policy forward ip daddr vmap @ingress4/);
  t.match(text, /meta l4proto \. th dport @pt-/);
  t.match(text, /add element inet skiff-policy pt-[^ ]+ \{ tcp \. 80, udp \. 81-85 \}/);
  t.match(text, /counter drop comment "ingress denied: x\/web"/);
  t.notMatch(text, /add element inet skiff-policy egress4 /, 'x/a is not isolated for egress');
});
