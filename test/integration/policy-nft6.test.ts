// NetworkPolicy over IPv6 in the real kernel: the upstream model's nine pods on three
// "node" namespaces (as policy-nft.test.ts), but dual-stack (10.244.k.i and
// fd00:10:244:k::i) with z/c IPv6-only, one PolicyReconciler per node programming
// real nftables (`inet skiff-policy`: ip6 dispatch maps and ip6 sets). For every
// scenario (IPv6 ipBlocks with except, pod/namespace selectors across namespaces,
// numeric and named ports in both directions, endPort, TCP and UDP, a label change)
// and for seeded random policies whose ipBlocks are mapped to IPv6, the matrices
// measured over IPv6 (9 pods) and over IPv4 (the 8 dual-stack pods) must equal the
// evaluator's. Neighbour caches are flushed before each measurement, so neighbour
// discovery (ICMPv6, which the policy chains see, unlike ARP) happens under the
// policy being tested. Everything lives in $SKIFF_NETNS_PREFIX namespaces removed at exit.
import t from 'tap';
import type { ClusterObject, NetworkPolicy, NetworkPolicyPeer, Protocol } from '../../src/cluster/types.js';
import type { AgentContext } from '../../src/agent/reconciler.js';
import { Registry } from 'prom-client';
import { realExec } from '../../src/os/exec.js';
import { Nft } from '../../src/os/nft.js';
import { MemoryView } from '../../src/proxy/fixtures.js';
import { evaluate, PolicyState } from '../../src/policy/evaluator.js';
import { applyMutation, DEFAULT_PROBES, MODEL_KEYS, egr, ing, np, nsNamed, randomScenario, sel, syntheticModel, type Scenario } from '../../src/policy/fixtures.js';
import { ProbeAgent, measureMatrix, renderMatrix } from '../../src/policy/probe.js';
import { PolicyReconciler } from '../../src/policy/reconciler.js';
import { logger } from '../../src/util/log.js';
import { makeNetns, nsExec, requireRoot } from '../helpers/netns.js';

const RANDOM = Number(process.env.POLICY_KERNEL_RANDOM6 ?? 40);

/** 10.244.K.I -> fd00:10:244:K::I (same digits), prefix /32 -> /128, /24 -> /64, /16 -> /48. */
function v6Of(v4: string): string {
  const [addr, len] = v4.split('/') as [string, string | undefined];
  const [a, b, c, d] = addr.split('.');
  const ip = d === '0' ? (c === '0' ? `fd00:${a}:${b}::` : `fd00:${a}:${b}:${c}::`) : `fd00:${a}:${b}:${c}::${d}`;
  if (len === undefined) return ip;
  const map: Record<string, string> = { '32': '128', '24': '64', '16': '48' };
  if (!map[len]) throw new Error(`v6Of: no mapping for /${len}`);
  return `${ip}/${map[len]}`;
}

/** The same policies with every ipBlock (cidr and except) mapped to IPv6. */
function toV6(ps: NetworkPolicy[]): NetworkPolicy[] {
  const out = structuredClone(ps);
  const fix = (peers: NetworkPolicyPeer[] | undefined) => {
    for (const pe of peers ?? []) if (pe.ipBlock) pe.ipBlock = { cidr: v6Of(pe.ipBlock.cidr), ...(pe.ipBlock.except ? { except: pe.ipBlock.except.map(v6Of) } : {}) };
  };
  for (const p of out) {
    for (const r of p.spec.ingress ?? []) fix(r.from);
    for (const r of p.spec.egress ?? []) fix(r.to);
  }
  return out;
}

if (requireRoot(t)) {
  const NODES = ['node-1', 'node-2', 'node-3'];
  const model = syntheticModel(NODES);
  const V6ONLY = 'z/c';
  const IPS4 = new Map(model.pods.map((p) => [`${p.metadata.namespace}/${p.metadata.name}`, p.status!.podIP!]));
  const IPS6 = new Map([...IPS4].map(([k, ip]) => [k, v6Of(ip)]));
  for (const p of model.pods) {
    const key = `${p.metadata.namespace}/${p.metadata.name}`;
    const ips = key === V6ONLY ? [IPS6.get(key)!] : [IPS4.get(key)!, IPS6.get(key)!];
    p.status = { phase: 'Running', podIP: ips[0]!, podIPs: ips.map((ip) => ({ ip })) };
  }
  // Scenarios write their ipBlocks around every pod's IPv4-style address (mapped to IPv6).
  const IPS4ALL = new Map(IPS4);
  IPS4.delete(V6ONLY);
  const KEYS4 = MODEL_KEYS.filter((k) => k !== V6ONLY);
  const sh = (ns: string, ...cmd: string[]) => nsExec(ns, cmd);
  const agents = new Map<string, ProbeAgent>();
  t.teardown(() => {
    for (const a of agents.values()) a.stop();
  });

  // ---- topology: switch + 3 nodes (bridge br0 for their pods, routed uplinks), dual-stack
  const sw = makeNetns('p6-sw');
  sh(sw.name, 'ip', 'link', 'add', 'sw0', 'type', 'bridge');
  sh(sw.name, 'ip', 'link', 'set', 'sw0', 'up');
  const nodeNs = new Map<string, string>();
  NODES.forEach((n, k) => {
    const ns = makeNetns(`p6-n${k + 1}`).name;
    nodeNs.set(n, ns);
    sh(ns, 'sysctl', '-qw', 'net.ipv4.ip_forward=1');
    sh(ns, 'sysctl', '-qw', 'net.ipv6.conf.all.forwarding=1');
    // Off at first: the reconciler must switch both on (bridged same-node traffic).
    sh(ns, 'sysctl', '-qw', 'net.bridge.bridge-nf-call-iptables=0');
    sh(ns, 'sysctl', '-qw', 'net.bridge.bridge-nf-call-ip6tables=0');
    sh(ns, 'ip', 'link', 'add', 'br0', 'type', 'bridge');
    sh(ns, 'ip', 'addr', 'add', `10.244.${k + 1}.1/24`, 'dev', 'br0');
    sh(ns, 'ip', 'addr', 'add', `fd00:10:244:${k + 1}::1/64`, 'dev', 'br0', 'nodad');
    sh(ns, 'ip', 'link', 'set', 'br0', 'up');
    sh(ns, 'ip', 'link', 'add', 'uplink', 'type', 'veth', 'peer', 'name', `n${k + 1}`, 'netns', sw.name);
    sh(ns, 'ip', 'addr', 'add', `192.168.60.${k + 1}/24`, 'dev', 'uplink');
    sh(ns, 'ip', 'addr', 'add', `fd00:192:168:60::${k + 1}/64`, 'dev', 'uplink', 'nodad');
    sh(ns, 'ip', 'link', 'set', 'uplink', 'up');
    sh(sw.name, 'ip', 'link', 'set', `n${k + 1}`, 'master', 'sw0');
    sh(sw.name, 'ip', 'link', 'set', `n${k + 1}`, 'up');
  });
  NODES.forEach((n, k) => {
    NODES.forEach((_, j) => {
      if (j === k) return;
      sh(nodeNs.get(n)!, 'ip', 'route', 'add', `10.244.${j + 1}.0/24`, 'via', `192.168.60.${j + 1}`);
      sh(nodeNs.get(n)!, 'ip', '-6', 'route', 'add', `fd00:10:244:${j + 1}::/64`, 'via', `fd00:192:168:60::${j + 1}`);
    });
  });
  const podNs = new Map<string, string>();
  model.pods.forEach((p, i) => {
    const key = `${p.metadata.namespace}/${p.metadata.name}`;
    const ns = makeNetns(`p6-${p.metadata.namespace}${p.metadata.name}`).name;
    const nodeN = nodeNs.get(p.spec.nodeName!)!;
    const k = NODES.indexOf(p.spec.nodeName!) + 1;
    sh(nodeN, 'ip', 'link', 'add', `v${i}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
    sh(nodeN, 'ip', 'link', 'set', `v${i}`, 'master', 'br0');
    sh(nodeN, 'ip', 'link', 'set', `v${i}`, 'up');
    if (IPS4.has(key)) sh(ns, 'ip', 'addr', 'add', `${IPS4.get(key)}/24`, 'dev', 'eth0');
    sh(ns, 'ip', 'addr', 'add', `${IPS6.get(key)}/64`, 'dev', 'eth0', 'nodad');
    sh(ns, 'ip', 'link', 'set', 'eth0', 'up');
    if (IPS4.has(key)) sh(ns, 'ip', 'route', 'add', 'default', 'via', `10.244.${k}.1`);
    sh(ns, 'ip', '-6', 'route', 'add', 'default', 'via', `fd00:10:244:${k}::1`);
    podNs.set(key, ns);
  });

  // ---- the reconcilers
  const view = new MemoryView();
  const put = (...objs: ClusterObject[]) => view.put(...(objs as never[]));
  put(...NODES.map((n, k) => ({ apiVersion: 'v1' as const, kind: 'Node' as const, metadata: { name: n }, spec: { podCIDR: `10.244.${k + 1}.0/24`, podCIDRs: [`10.244.${k + 1}.0/24`, `fd00:10:244:${k + 1}::/64`] } })));
  const recs = new Map(
    NODES.map((node) => {
      const ns = nodeNs.get(node)!;
      const ctx: AgentContext = { nodeName: node, view, registry: new Registry(), log: logger(`policy6-it-${node}`), exec: realExec };
      const rec = new PolicyReconciler(ctx, {}, new Nft(realExec, { netns: ns }), {
        sysctl: {
          read: async (p) => {
            const r = await realExec('cat', [p], { netns: ns });
            return r.code === 0 ? r.stdout.trim() : undefined;
          },
          write: async (p, v) => {
            const r = await realExec('sh', ['-c', `echo ${v} > ${p}`], { netns: ns });
            if (r.code !== 0) throw new Error(r.stderr);
          },
        },
      });
      return [node, rec] as const;
    }),
  );
  const syncAll = (full = false) => Promise.all([...recs.values()].map((r) => r.sync({ full, changes: [] })));
  const flush = () =>
    Promise.all([
      ...[...nodeNs.values()].map((ns) => realExec('conntrack', ['-F'], { netns: ns })),
      // Neighbour discovery must happen under the policy being measured.
      ...[...podNs.values(), ...nodeNs.values()].map((ns) => realExec('ip', ['-6', 'neigh', 'flush', 'all'], { netns: ns })),
    ]);

  let installed: NetworkPolicy[] = [];
  const install = async (s: Scenario, v6blocks = true): Promise<PolicyState> => {
    const objs = applyMutation(model, s.mutate);
    put(...objs.namespaces, ...objs.pods);
    const raw = s.policies(IPS4ALL);
    const policies = v6blocks ? toV6(raw) : raw;
    for (const old of installed) if (!policies.some((p) => p.metadata.namespace === old.metadata.namespace && p.metadata.name === old.metadata.name)) view.remove('NetworkPolicy' as never, `${old.metadata.namespace}/${old.metadata.name}`);
    if (policies.length) put(...policies);
    installed = policies;
    await syncAll();
    await flush();
    return PolicyState.fromReader(view);
  };

  const matrices = async (state: PolicyState, probes: readonly [Protocol, number][] = DEFAULT_PROBES) => {
    const expected = (family: 4 | 6) => (from: string, to: string, protocol: Protocol, port: number) => evaluate(state, { from: { pod: from }, to: { pod: to }, protocol, port, family }, { reasons: false }).allowed;
    const v6 = await measureMatrix({ keys: MODEL_KEYS, agents, ips: IPS6, probes, expected: expected(6) });
    const v4 = await measureMatrix({ keys: KEYS4, agents, ips: IPS4, probes, expected: expected(4) });
    return { v6, v4 };
  };

  /** Hand-written IPv6 scenarios (ipBlocks are written in IPv4 and mapped by toV6, except where noted). */
  const SCENARIOS: (Scenario & { v4blocks?: boolean })[] = [
    { name: 'no policies', policies: () => [] },
    { name: 'default deny ingress + egress in x', policies: () => [np('x', 'deny-all', { policyTypes: ['Ingress', 'Egress'] })] },
    {
      name: 'ingress from y/b (pod AND namespace selector) on TCP 80 and named port serve-81-udp',
      policies: () => [np('x', 'from-y-b', { podSelector: sel({ pod: 'a' }), ingress: [ing([{ namespaceSelector: nsNamed('y'), podSelector: sel({ pod: 'b' }) }], [{ port: 80 }, { protocol: 'UDP', port: 'serve-81-udp' }])] })],
    },
    {
      name: 'same, after a label change (y/c becomes pod=b)',
      mutate: { podLabels: { 'y/c': { pod: 'b' } } },
      policies: () => [np('x', 'from-y-b', { podSelector: sel({ pod: 'a' }), ingress: [ing([{ namespaceSelector: nsNamed('y'), podSelector: sel({ pod: 'b' }) }], [{ port: 80 }, { protocol: 'UDP', port: 'serve-81-udp' }])] })],
    },
    {
      name: 'ingress ipBlock fd00:10:244::/48 except node-2 /64 and one node-3 /128 (TCP), plus pods of z on UDP 80-81',
      policies: (ips) => [
        np('y', 'block-except', {
          ingress: [
            ing([{ ipBlock: { cidr: '10.244.0.0/16', except: ['10.244.2.0/24', `${ips.get('z/b')}/32`] } }], [{ protocol: 'TCP' }]),
            ing([{ namespaceSelector: sel({ ns: 'z' }) }], [{ protocol: 'UDP', port: 80, endPort: 81 }]),
          ],
        }),
      ],
    },
    {
      name: 'an IPv4 ipBlock does not match IPv6 traffic (ingress of z from 10.244.0.0/16)',
      v4blocks: true,
      policies: () => [np('z', 'v4-only-block', { ingress: [ing([{ ipBlock: { cidr: '10.244.0.0/16' } }])] })],
    },
    {
      name: 'egress: x/a to x/b by /128, to namespace z on named ports serve-80-udp and serve-81-tcp',
      policies: (ips) => [
        np('x', 'egress-mix', {
          podSelector: sel({ pod: 'a' }),
          policyTypes: ['Egress'],
          egress: [egr([{ ipBlock: { cidr: `${ips.get('x/b')}/32` } }]), egr([{ namespaceSelector: nsNamed('z') }], [{ protocol: 'UDP', port: 'serve-80-udp' }, { port: 'serve-81-tcp' }])],
        }),
      ],
    },
    {
      name: 'egress of y to ipBlock /48 except z/c, numeric + named port both resolving to 80, ingress of z only from y',
      policies: (ips) => [
        np('y', 'egress-block', { policyTypes: ['Egress'], egress: [egr([{ ipBlock: { cidr: '10.244.0.0/16', except: [`${ips.get('z/c')}/32`] } }, { podSelector: sel({ pod: 'a' }) }], [{ port: 80 }, { port: 'serve-80-tcp' }, { protocol: 'UDP', port: 81 }])] }),
        np('z', 'from-y', { ingress: [ing([{ namespaceSelector: { matchExpressions: [{ key: 'ns', operator: 'In', values: ['y'] }] } }])] }),
      ],
    },
  ];

  t.before(async () => {
    for (const [key, ns] of podNs) agents.set(key, new ProbeAgent(ns, { serve: [80, 81], name: key, ipv6: true }));
    await Promise.all([...agents.values()].map((a) => a.ready));
    put(...model.namespaces, ...model.pods);
    await syncAll(true);
  });

  t.test('both bridge netfilter sysctls are on; the table holds IPv6 dispatch maps', async (t) => {
    for (const ns of nodeNs.values()) {
      t.equal(sh(ns, 'cat', '/proc/sys/net/bridge/bridge-nf-call-iptables').trim(), '1');
      t.equal(sh(ns, 'cat', '/proc/sys/net/bridge/bridge-nf-call-ip6tables').trim(), '1');
    }
    const listing = sh(nodeNs.get('node-1')!, 'nft', 'list', 'table', 'inet', 'skiff-policy');
    t.match(listing, /map ingress6 \{\s*type ipv6_addr : verdict/, 'ingress6 map');
    t.match(listing, /ip6 saddr vmap @egress6/, 'egress6 dispatch');
  });

  t.test(`IPv6 scenarios: kernel matrices (IPv6 and IPv4) equal the evaluator's (${SCENARIOS.length} scenarios)`, async (t) => {
    let probes = 0;
    let denied = 0;
    for (const s of SCENARIOS) {
      const state = await install(s, !s.v4blocks);
      const { v6, v4 } = await matrices(state, s.probes);
      for (const [fam, cells, keys] of [['IPv6', v6, MODEL_KEYS], ['IPv4', v4, KEYS4]] as const) {
        probes += cells.length;
        denied += cells.filter((c) => !c.kernel).length;
        const bad = cells.filter((c) => c.kernel !== c.expected);
        t.equal(bad.length, 0, `${s.name} (${fam}): ${cells.length} probes`, bad.length ? { diagnostic: true, matrix: renderMatrix(keys, cells) } : {});
      }
    }
    t.ok(denied > 0 && denied < probes, `${probes} probes, ${denied} denied`);
  });

  t.test(`random policies with IPv6 ipBlocks (seeded, ${RANDOM} cases): kernel matrices equal the evaluator's`, async (t) => {
    let mism = 0;
    let probes = 0;
    for (let seed = 6001; seed < 6001 + RANDOM; seed++) {
      const s = randomScenario(seed);
      const state = await install(s);
      const { v6, v4 } = await matrices(state);
      for (const [fam, cells, keys] of [['IPv6', v6, MODEL_KEYS], ['IPv4', v4, KEYS4]] as const) {
        probes += cells.length;
        const bad = cells.filter((c) => c.kernel !== c.expected);
        if (bad.length) {
          mism++;
          t.fail(`seed ${seed} (${fam}): ${bad.length} mismatches`, { policies: JSON.stringify(installed), matrix: renderMatrix(keys, cells) });
        }
      }
    }
    t.equal(mism, 0, `${RANDOM} random scenarios, ${probes} probes`);
  });
}
