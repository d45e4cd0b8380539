// Generated nftables names are injective: no two different things (numeric vs named
// ports, egress named-port groups, ingress vs egress, port ranges vs single ports,
// TCP/UDP/SCTP, IPv4/IPv6, same-named policies in different namespaces, names with
// odd characters) get the same set or chain name within one compile, full or
// incremental (CompileOptions.checkNames). And on the same tricky cluster the packet
// tracer over the fake nftables agrees with the evaluator for both families.
import t from 'tap';
import type { NetworkPolicy, Pod, Protocol } from '../../src/cluster/types.js';
import { compile, CompileCache } from '../../src/policy/compiler.js';
import { evaluate, PolicyState } from '../../src/policy/evaluator.js';
import { applyMutation, egr, ing, np, nsObj, podObj, randomScenario, sel, syntheticModel, UPSTREAM_SCENARIOS } from '../../src/policy/fixtures.js';
import { SimCluster, explainAll } from '../../src/policy/testing.js';

const NODES = new Map([
  ['n1', ['10.1.1.0/24', 'fd00:1:1::/64']],
  ['n2', ['10.1.2.0/24', 'fd00:1:2::/64']],
]);

/** Pods in x and y, dual-stack, over two nodes; `http` resolves to 80 on some and 8080 on others. */
function pods(relabel?: Record<string, Record<string, string>>): Pod[] {
  const out: Pod[] = [];
  let i = 0;
  for (const ns of ['x', 'y']) {
    for (const name of ['a', 'b', 'c', 'd']) {
      const k = (i % 2) + 1;
      const ports = [
        { name: 'http', containerPort: i % 3 === 0 ? 8080 : 80, protocol: 'TCP' as const },
        ...(i % 2 === 0 ? [{ name: 'dns', containerPort: 53, protocol: 'UDP' as const }] : []),
        ...(i % 4 === 1 ? [{ name: 'sig', containerPort: 9000, protocol: 'SCTP' as const }] : []),
      ];
      const key = `${ns}/${name}`;
      const labels = relabel?.[key] ?? { pod: name, role: i % 2 ? 'client' : 'server' };
      out.push(podObj(ns, name, { node: `n${k}`, ips: [`10.1.${k}.${10 + i}`, `fd00:1:${k}::${10 + i}`], labels, ports: ports as never }));
      i++;
    }
  }
  return out;
}
const KEYS = pods().map((p) => `${p.metadata.namespace}/${p.metadata.name}`);

const POLICIES: NetworkPolicy[] = [
  // Same name in two namespaces; numeric and named ports that resolve to the same number.
  np('x', 'web', {
    policyTypes: ['Ingress', 'Egress'],
    ingress: [ing([{ podSelector: sel({ role: 'client' }) }], [{ port: 80 }, { port: 'http' }])],
    egress: [egr([{ namespaceSelector: sel({ ns: 'y' }) }], [{ port: 80 }, { port: 'http' }]), egr([{ namespaceSelector: sel({ ns: 'y' }) }], [{ protocol: 'UDP', port: 53 }, { protocol: 'UDP', port: 'dns' }])],
  }),
  np('y', 'web', {
    policyTypes: ['Ingress', 'Egress'],
    ingress: [
      ing([{ ipBlock: { cidr: '10.1.0.0/16', except: ['10.1.2.0/24'] } }, { ipBlock: { cidr: 'fd00:1::/32', except: ['fd00:1:1::/64'] } }], [{ protocol: 'TCP', port: 80, endPort: 90 }, { protocol: 'TCP', port: 85 }]),
      ing([{ podSelector: {}, namespaceSelector: {} }], [{ protocol: 'SCTP', port: 'sig' }, { protocol: 'UDP', port: 53 }]),
    ],
    // Egress to the same peers with single ports vs a range, and every protocol.
    egress: [
      egr([{ namespaceSelector: sel({ ns: 'x' }) }], [{ port: 80 }]),
      egr([{ namespaceSelector: sel({ ns: 'x' }) }], [{ port: 80, endPort: 80 }, { protocol: 'SCTP', port: 'sig' }]),
      egr([{ ipBlock: { cidr: 'fd00:1::/32' } }], [{ port: 'http' }]),
      egr([{ ipBlock: { cidr: '10.1.0.0/16' } }], [{ port: 'http' }]),
    ],
  }),
  // Odd characters in the name; egress named ports to every peer (groups without a peer).
  np('x', 'odd|name/with.chars', { podSelector: sel({ pod: 'b' }), policyTypes: ['Egress'], egress: [egr(undefined, [{ port: 'http' }, { protocol: 'UDP', port: 'dns' }])] }),
  np('y', 'odd|name/with.chars', { podSelector: sel({ pod: 'c' }), ingress: [ing([{ podSelector: sel({ pod: 'b' }) }], [{ port: 'http' }])] }),
];

type Relabel = Record<string, Record<string, string>> | undefined;
const RELABELS: Relabel[] = [undefined, { 'y/b': { pod: 'b', role: 'server' } }, { 'x/c': { pod: 'b', role: 'client' } }];

const stateOf = (relabel?: Record<string, Record<string, string>>, prev?: PolicyState) =>
  PolicyState.from({ namespaces: [nsObj('x'), nsObj('y')], pods: pods(relabel), policies: POLICIES }, prev ? { prev, immutable: false } : {});

t.test('every generated name stands for one thing (full and incremental compiles)', async (t) => {
  const caches = new Map([...NODES.keys()].map((n) => [n, new CompileCache()]));
  let prev: PolicyState | undefined;
  let sets = 0;
  for (const relabel of [...RELABELS, undefined]) {
    const state = stateOf(relabel, prev);
    prev = state;
    for (const [node, cidrs] of NODES) {
      const m = compile(state, { nodeName: node, podCIDRs: cidrs, cache: caches.get(node)!, checkNames: true });
      t.same(m.nameConflicts, [], `${node}${relabel ? ` after ${JSON.stringify(relabel)}` : ''}: ${m.sets.size} sets, ${m.chains.size} chains, no name used twice`);
      sets += m.sets.size;
      // Both families are programmed, and every set a rule names exists with the right type.
      t.same(m.families, [4, 6]);
      const wrong: string[] = [];
      for (const c of m.chains.values()) {
        for (const r of c.rules) {
          for (const x of r.rule as { value?: { set?: string }; match?: string }[]) {
            if (!x.value?.set) continue;
            const s = m.sets.get(x.value.set);
            const m0 = Array.isArray(x.match) ? x.match[0] : x.match;
            const want = m0?.startsWith('ip6 ') ? 'ipv6_addr' : m0?.startsWith('ip ') ? 'ipv4_addr' : 'inet_proto';
            if (!s || s.obj.type[0] !== want) wrong.push(`${c.obj.name}: ${x.match} @${x.value.set} (${s ? s.obj.type.join(' . ') : 'missing'})`);
          }
        }
      }
      t.same(wrong, [], 'every set a rule names exists, with the type of what it is matched against');
    }
  }
  t.ok(sets > 40, `${sets} sets checked`);
});

t.test('a numeric port list and an egress named-port group with equal ports get different sets', async (t) => {
  const m = compile(stateOf(), { nodeName: 'n1', podCIDRs: NODES.get('n1')!, checkNames: true });
  // x/web egress rule 0: port 80 to every y pod, and `http` (80 on some y pods only).
  const peerSets = [...m.sets.values()].filter((s) => /x\.web\.eg0\.0$/.test(s.obj.name) && s.obj.type[0] === 'ipv4_addr');
  const sizes = peerSets.map((s) => s.elements.size).sort();
  t.ok(peerSets.length >= 2, `${peerSets.length} IPv4 sets for x/web egress[0] peer 0: ${peerSets.map((s) => s.obj.name).join(', ')}`);
  t.equal(sizes[sizes.length - 1], 4, 'the peer set holds all four y pods');
  t.ok(sizes[0]! < 4, 'the http=80 group holds fewer');
});

t.test('tracer over the fake nftables agrees with the evaluator on the tricky cluster, IPv4 and IPv6', async (t) => {
  const PROBES: [Protocol, number][] = [['TCP', 80], ['TCP', 85], ['TCP', 91], ['TCP', 8080], ['UDP', 53], ['UDP', 80], ['SCTP', 9000]];
  const sim = new SimCluster(NODES);
  let prev: PolicyState | undefined;
  for (const relabel of RELABELS) {
    const state = stateOf(relabel, prev);
    prev = state;
    sim.apply(state);
    const fresh = new SimCluster(NODES);
    fresh.apply(state, 'full');
    const info = new Map([...state.pods.values()].map((p) => [p.key, p]));
    for (const [label, c] of [['incremental', sim], ['full', fresh]] as const) {
      const bad: string[] = [];
      let n = 0;
      let allowed = 0;
      for (const family of [4, 6] as const) {
        for (const from of KEYS) {
          for (const to of KEYS) {
            if (from === to) continue;
            for (const [protocol, port] of PROBES) {
              const want = evaluate(state, { from: { pod: from }, to: { pod: to }, protocol, port, family }, { reasons: false }).allowed;
              const ip = (k: string) => info.get(k)!.ips.find((x) => x.includes(':') === (family === 6))!;
              const got = c.connect({ src: ip(from), srcNode: info.get(from)!.nodeName!, dst: ip(to), dstNode: info.get(to)!.nodeName!, protocol, port });
              n++;
              if (got.allowed) allowed++;
              if (got.allowed !== want) bad.push(`IPv${family} ${from} -> ${to} ${protocol}/${port}: evaluator ${want}, kernel ${got.allowed}\n${explainAll(got.traces)}`);
            }
          }
        }
      }
      t.same(bad.slice(0, 3), [], `${label}${relabel ? ` after ${JSON.stringify(relabel)}` : ''}: ${n} connections, ${allowed} allowed`);
      t.ok(allowed > 0 && allowed < n);
    }
  }
});

t.test('no name conflicts over the upstream scenarios and 300 seeded random ones (incremental compiles)', async (t) => {
  const base = syntheticModel(['node-1', 'node-2', 'node-3']);
  const ips = new Map(base.pods.map((p) => [`${p.metadata.namespace}/${p.metadata.name}`, p.status!.podIP!]));
  const caches = new Map([...base.podCIDRs.keys()].map((n) => [n, new CompileCache()]));
  let prev: PolicyState | undefined;
  const conflicts: string[] = [];
  let compiles = 0;
  for (const s of [...UPSTREAM_SCENARIOS, ...Array.from({ length: 300 }, (_, i) => randomScenario(i + 1))]) {
    const state = PolicyState.from({ ...applyMutation(base, s.mutate), policies: s.policies(ips) }, prev ? { prev } : {});
    prev = state;
    for (const [node, cidr] of base.podCIDRs) {
      const m = compile(state, { nodeName: node, podCIDRs: [cidr], cache: caches.get(node)!, checkNames: true });
      compiles++;
      for (const c of m.nameConflicts ?? []) conflicts.push(`${s.name} on ${node}: ${c.name} = ${c.definitions.join(' | ')}`);
    }
  }
  t.same(conflicts.slice(0, 3), [], `${compiles} compiles`);
});
