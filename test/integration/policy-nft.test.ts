// NetworkPolicy in the real kernel: three "node" namespaces (a Linux bridge for
// their pods, routing between nodes through a switch namespace), the upstream model's
// nine pods (x, y, z × a, b, c; TCP+UDP on 80 and 81) spread over them, and one
// PolicyReconciler per node programming real nftables. For every upstream scenario
// and a seeded generator of random policies, the measured matrix (8 destinations × 9
// sources × TCP/UDP 80/81) must equal the evaluator's. Then: established connections
// when a policy tightens, new-pod isolation, adoption by a restarted reconciler.
// Everything lives in skt-pl* namespaces removed at exit.
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { Registry } from 'prom-client';
import type { AgentContext } from '../../src/agent/reconciler.js';
import type { ClusterObject, NetworkPolicy, Protocol } from '../../src/cluster/types.js';
import { realExec } from '../../src/os/exec.js';
import { Nft } from '../../src/os/nft.js';
import { MemoryView, slice, svc } from '../../src/proxy/fixtures.js';
import { Proxier } from '../../src/proxy/proxier.js';
import { evaluate, PolicyState } from '../../src/policy/evaluator.js';
import { applyMutation, DEFAULT_PROBES, MODEL_KEYS, UPSTREAM_SCENARIOS, egr, ing, np, nsNamed, randomScenario, sel, syntheticModel, type Scenario } from '../../src/policy/fixtures.js';
import { ProbeAgent, measureMatrix, renderMatrix } from '../../src/policy/probe.js';
import { PolicyReconciler } from '../../src/policy/reconciler.js';
import { logger } from '../../src/util/log.js';
import { makeNetns, nsExec, requireRoot } from '../helpers/netns.js';

const RANDOM = Number(process.env.POLICY_KERNEL_RANDOM ?? 200);

if (requireRoot(t)) {
  const NODES = ['node-1', 'node-2', 'node-3'];
  const model = syntheticModel(NODES);
  const IPS = new Map(model.pods.map((p) => [`${p.metadata.namespace}/${p.metadata.name}`, p.status!.podIP!]));
  const sh = (ns: string, ...cmd: string[]) => nsExec(ns, cmd);
  const procs: ChildProcess[] = [];
  const agents = new Map<string, ProbeAgent>();
  t.teardown(() => {
    for (const a of agents.values()) a.stop();
    for (const p of procs) p.kill('SIGKILL');
  });

  // ---- topology
  const sw = makeNetns('pl-sw');
  sh(sw.name, 'ip', 'link', 'add', 'sw0', 'type', 'bridge');
  sh(sw.name, 'ip', 'link', 'set', 'sw0', 'up');
  const nodeNs = new Map<string, string>();
  NODES.forEach((n, k) => {
    const ns = makeNetns(`pl-n${k + 1}`).name;
    nodeNs.set(n, ns);
    sh(ns, 'sysctl', '-qw', 'net.ipv4.ip_forward=1');
    // Off at first: the reconciler must switch it on (bridged same-node traffic).
    sh(ns, 'sysctl', '-qw', 'net.bridge.bridge-nf-call-iptables=0');
    sh(ns, 'ip', 'link', 'add', 'br0', 'type', 'bridge');
    sh(ns, 'ip', 'addr', 'add', `10.244.${k + 1}.1/24`, 'dev', 'br0');
    sh(ns, 'ip', 'link', 'set', 'br0', 'up');
    sh(ns, 'ip', 'link', 'add', 'uplink', 'type', 'veth', 'peer', 'name', `n${k + 1}`, 'netns', sw.name);
    sh(ns, 'ip', 'addr', 'add', `192.168.60.${k + 1}/24`, 'dev', 'uplink');
    sh(ns, 'ip', 'link', 'set', 'uplink', 'up');
    sh(sw.name, 'ip', 'link', 'set', `n${k + 1}`, 'master', 'sw0');
    sh(sw.name, 'ip', 'link', 'set', `n${k + 1}`, 'up');
  });
  NODES.forEach((n, k) => {
    NODES.forEach((_, j) => {
      if (j !== k) sh(nodeNs.get(n)!, 'ip', 'route', 'add', `10.244.${j + 1}.0/24`, 'via', `192.168.60.${j + 1}`);
    });
  });
  let vethN = 0;
  const attachPod = (tag: string, node: string, ip: string): string => {
    const ns = makeNetns(tag).name;
    const host = `v${vethN++}`;
    const nodeN = nodeNs.get(node)!;
    const k = NODES.indexOf(node) + 1;
    sh(nodeN, 'ip', 'link', 'add', host, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
    sh(nodeN, 'ip', 'link', 'set', host, 'master', 'br0');
    sh(nodeN, 'ip', 'link', 'set', host, 'up');
    sh(ns, 'ip', 'addr', 'add', `${ip}/24`, 'dev', 'eth0');
    sh(ns, 'ip', 'link', 'set', 'eth0', 'up');
    sh(ns, 'ip', 'route', 'add', 'default', 'via', `10.244.${k}.1`);
    return ns;
  };
  const podNs = new Map<string, string>();
  for (const p of model.pods) {
    const key = `${p.metadata.namespace}/${p.metadata.name}`;
    podNs.set(key, attachPod(`pl-${p.metadata.namespace}${p.metadata.name}`, p.spec.nodeName!, p.status!.podIP!));
  }

  // ---- the reconcilers
  const view = new MemoryView();
  const put = (...objs: ClusterObject[]) => view.put(...(objs as never[]));
  put(...NODES.map((n, k) => ({ apiVersion: 'v1' as const, kind: 'Node' as const, metadata: { name: n }, spec: { podCIDR: `10.244.${k + 1}.0/24` } })));
  let installed: NetworkPolicy[] = [];
  const registries = new Map<string, Registry>();
  const mkReconciler = (node: string) => {
    const ns = nodeNs.get(node)!;
    const registry = new Registry();
    registries.set(node, registry);
    const ctx: AgentContext = { nodeName: node, view, registry, log: logger(`policy-it-${node}`), exec: realExec };
    return new PolicyReconciler(ctx, {}, new Nft(realExec, { netns: ns }), {
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
  };
  const recs = new Map(NODES.map((n) => [n, mkReconciler(n)]));
  const syncAll = async (full = false) => {
    await Promise.all([...recs.values()].map((r) => r.sync({ full, changes: [] })));
  };
  const flushConntrack = () => Promise.all(NODES.map((n) => realExec('conntrack', ['-F'], { netns: nodeNs.get(n)! })));

  /** Installs a scenario: labels and policies in the view, then a (partial) sync of every node. */
  const install = async (s: Scenario): Promise<PolicyState> => {
    const objs = applyMutation(model, s.mutate);
    put(...objs.namespaces, ...objs.pods);
    const policies = s.policies(IPS);
    for (const old of installed) if (!policies.some((p) => p.metadata.namespace === old.metadata.namespace && p.metadata.name === old.metadata.name)) view.remove('NetworkPolicy' as never, `${old.metadata.namespace}/${old.metadata.name}`);
    if (policies.length) put(...policies);
    installed = policies;
    await syncAll();
    await flushConntrack();
    return PolicyState.fromReader(view);
  };

  const matrix = async (state: PolicyState, probes: readonly [Protocol, number][] = DEFAULT_PROBES) =>
    measureMatrix({
      keys: MODEL_KEYS,
      agents,
      ips: IPS,
      probes,
      expected: (from, to, protocol, port) => evaluate(state, { from: { pod: from }, to: { pod: to }, protocol, port }, { reasons: false }).allowed,
    });

  t.before(async () => {
    for (const [key, ns] of podNs) agents.set(key, new ProbeAgent(ns, { serve: [80, 81], name: key }));
    await Promise.all([...agents.values()].map((a) => a.ready));
    put(...model.namespaces, ...model.pods);
    await syncAll(true);
  });

  t.test('the reconciler switched on bridge netfilter in every node namespace', async (t) => {
    for (const ns of nodeNs.values()) t.equal(sh(ns, 'cat', '/proc/sys/net/bridge/bridge-nf-call-iptables').trim(), '1');
  });

  t.test(`upstream scenarios: the kernel matrix equals the evaluator's (${UPSTREAM_SCENARIOS.length} scenarios)`, async (t) => {
    let probes = 0;
    let denied = 0;
    for (const s of UPSTREAM_SCENARIOS) {
      const state = await install(s);
      const cells = await matrix(state, s.probes);
      probes += cells.length;
      denied += cells.filter((c) => !c.kernel).length;
      const bad = cells.filter((c) => c.kernel !== c.expected);
      t.equal(bad.length, 0, `${s.name}: ${cells.length} probes`, bad.length ? { diagnostic: true, matrix: renderMatrix(MODEL_KEYS, cells) } : {});
    }
    t.ok(denied > 0 && denied < probes, `${probes} probes, ${denied} denied`);
  });

  t.test(`random policies (seeded, ${RANDOM} cases): the kernel matrix equals the evaluator's`, async (t) => {
    let mism = 0;
    let probes = 0;
    for (let seed = 1001; seed < 1001 + RANDOM; seed++) {
      const s = randomScenario(seed);
      const state = await install(s);
      const cells = await matrix(state);
      probes += cells.length;
      const bad = cells.filter((c) => c.kernel !== c.expected);
      if (bad.length) {
        mism++;
        t.fail(`seed ${seed}: ${bad.length} mismatches`, { policies: JSON.stringify(s.policies(IPS)), matrix: renderMatrix(MODEL_KEYS, cells) });
      }
    }
    t.equal(mism, 0, `${RANDOM} random scenarios, ${probes} probes`);
  });

  t.test('a tightened policy does not cut established connections; new ones are denied', async (t) => {
    await install({ name: 'open', policies: () => [] });
    // A long-lived TCP connection y/a -> x/a:9000 (an echo server).
    const ECHO = `require('node:net').createServer((s) => s.pipe(s)).listen(9000, () => console.log('up'));`;
    const srv = spawn('ip', ['netns', 'exec', podNs.get('x/a')!, process.execPath, '-e', ECHO], { stdio: ['ignore', 'pipe', 'inherit'] });
    procs.push(srv);
    await new Promise((r) => srv.stdout!.once('data', r));
    const CLIENT = `
      const s = require('node:net').connect(9000, process.argv[1]);
      s.on('data', (d) => console.log('echo ' + d));
      s.on('error', (e) => console.log('error ' + e.code));
      require('node:readline').createInterface({ input: process.stdin }).on('line', (l) => s.write(l));`;
    const cli = spawn('ip', ['netns', 'exec', podNs.get('y/a')!, process.execPath, '-e', CLIENT, IPS.get('x/a')!], { stdio: ['pipe', 'pipe', 'inherit'] });
    procs.push(cli);
    const lines: string[] = [];
    cli.stdout!.on('data', (d) => lines.push(...String(d).trim().split('\n')));
    const say = async (w: string) => {
      cli.stdin!.write(w + '\n');
      for (let i = 0; i < 30 && !lines.includes(`echo ${w}`); i++) await new Promise((r) => setTimeout(r, 100));
      return lines.includes(`echo ${w}`);
    };
    t.ok(await say('before'), 'connection established');
    // Tighten: x/a now accepts nothing (without flushing conntrack: this is the point).
    put(np('x', 'deny-a', { podSelector: sel({ pod: 'a' }), ingress: [] }));
    installed = [np('x', 'deny-a', { podSelector: sel({ pod: 'a' }), ingress: [] })];
    await syncAll();
    t.ok(await say('after'), 'the established connection keeps flowing after the policy tightened');
    const fresh = await agents.get('y/a')!.probe([{ host: IPS.get('x/a')!, port: 9000, proto: 'TCP' }], 300, 1000);
    t.same(fresh, [false], 'a new connection is denied');
    cli.kill('SIGKILL');
    srv.kill('SIGKILL');
  });

  t.test('a new pod exchanges no packet before its rules are in place', async (t) => {
    const deny = np('z', 'only-from-a', { ingress: [ing([{ podSelector: sel({ pod: 'a' }) }])] });
    await install({ name: 'z only from a', policies: () => [deny] });
    // The "CNI plugin" attached z/new to node-1; the agent has not seen it yet.
    const ip = '10.244.1.77';
    const ns = attachPod('pl-znew', 'node-1', ip);
    const a = new ProbeAgent(ns, { serve: [80], name: 'z/new' });
    agents.set('z/new', a);
    await a.ready;
    const toNew = () => agents.get('y/b')!.probe([{ host: ip, port: 80, proto: 'TCP' }, { host: ip, port: 80, proto: 'UDP' }], 300, 700);
    const fromNew = () => a.probe([{ host: IPS.get('y/b')!, port: 80, proto: 'TCP' }, { host: IPS.get('x/c')!, port: 81, proto: 'UDP' }], 300, 700);
    t.same(await toNew(), [false, false], 'nothing reaches the unprogrammed pod');
    t.same(await fromNew(), [false, false], 'and it sends nothing');
    const p = structuredClone(model.pods[0]!);
    p.metadata = { name: 'new', namespace: 'z', labels: { pod: 'new' } };
    p.spec.nodeName = 'node-1';
    p.status = { phase: 'Running', podIP: ip, podIPs: [{ ip }] };
    put(p);
    await syncAll();
    t.same(await toNew(), [false, false], 'programmed: y/b is still denied (z/only-from-a)');
    t.same(await agents.get('z/a')!.probe([{ host: ip, port: 80, proto: 'TCP' }]), [true], 'z/a is allowed');
    t.same(await fromNew(), [true, true], 'its egress is open');
    view.remove('Pod' as never, 'z/new');
    a.stop();
    agents.delete('z/new');
    await syncAll();
  });

  t.test("egress to a Service's ClusterIP is judged by the backend pod (policy after DNAT)", async (t) => {
    // The service proxy on every node (real nft, `ip skiff-proxy`): web -> y/b, db -> z/c.
    const proxiers = NODES.map((n, k) => {
      const ctx: AgentContext = { nodeName: n, view, registry: new Registry(), log: logger(`proxy-it-${n}`), exec: realExec };
      return new Proxier(ctx, { clusterCIDR: '10.244.0.0/16', balancing: 'round-robin', nodeIPs: [`192.168.60.${k + 1}`], healthCheckBind: false }, new Nft(realExec, { netns: nodeNs.get(n)! }), { conntrack: null });
    });
    const ports = [{ name: 'http', port: 80, targetPort: 80 }];
    const nodeOf = (key: string) => model.pods.find((p) => `${p.metadata.namespace}/${p.metadata.name}` === key)!.spec.nodeName!;
    put(
      svc('web', { ns: 'y', clusterIP: '10.96.0.10', ports }),
      slice('web', [{ ip: IPS.get('y/b')!, node: nodeOf('y/b') }], { ns: 'y', ports: [{ name: 'http', port: 80 }] }),
      svc('db', { ns: 'z', clusterIP: '10.96.0.11', ports }),
      slice('db', [{ ip: IPS.get('z/c')!, node: nodeOf('z/c') }], { ns: 'z', ports: [{ name: 'http', port: 80 }] }),
    );
    await Promise.all(proxiers.map((p) => p.sync({ full: true, changes: [] })));
    try {
      const probe = () => agents.get('x/a')!.probe([{ host: '10.96.0.10', port: 80, proto: 'TCP' }, { host: '10.96.0.11', port: 80, proto: 'TCP' }], 300, 1000);
      await install({ name: 'open', policies: () => [] });
      t.same(await probe(), [true, true], 'both services reachable without policies');
      // x/a may send only to y/b (by pod selector): the ClusterIP of web is allowed, that of db is not.
      await install({ name: 'egress to y/b', policies: () => [np('x', 'to-y-b', { podSelector: sel({ pod: 'a' }), policyTypes: ['Egress'], egress: [egr([{ namespaceSelector: nsNamed('y'), podSelector: sel({ pod: 'b' }) }])] })] });
      t.same(await probe(), [true, false], 'web (-> y/b) allowed, db (-> z/c) denied');
      // And ingress: z/c accepts only x/a; y/b denies everyone.
      await install({ name: 'ingress', policies: () => [np('z', 'c-from-x-a', { podSelector: sel({ pod: 'c' }), ingress: [ing([{ namespaceSelector: nsNamed('x'), podSelector: sel({ pod: 'a' }) }])] }), np('y', 'deny-b', { podSelector: sel({ pod: 'b' }), ingress: [] })] });
      t.same(await probe(), [false, true], 'web denied by y/deny-b, db allowed by z/c-from-x-a');
    } finally {
      for (const p of proxiers) await p.cleanup().catch(() => {});
      await install({ name: 'open', policies: () => [] });
    }
  });

  t.test('a restarted reconciler adopts the table; the matrix is unchanged', async (t) => {
    const s = UPSTREAM_SCENARIOS.find((x) => x.name.includes('Ingress, Egress specified together'))!;
    const state = await install(s);
    for (const n of NODES) recs.set(n, mkReconciler(n));
    await syncAll();
    for (const r of recs.values()) t.match(r.lastStats, { rebuild: true });
    const listing = await new Nft(realExec, { netns: nodeNs.get('node-1')! }).list('skiff-policy', 'inet');
    t.ok(listing && listing.chains.some((c) => c.hook === 'forward'), 'one table, with its forward chain');
    const cells = await matrix(state);
    t.equal(cells.filter((c) => c.kernel !== c.expected).length, 0, renderMatrix(MODEL_KEYS, cells));
    const metrics = (await Promise.all(NODES.map((n) => registries.get(n)!.metrics()))).join('\n');
    const drops = [...metrics.matchAll(/skiff_policy_dropped_packets\{rule="([^"]+)"\} (\d+)/g)].filter((m) => Number(m[2]) > 0);
    t.ok(drops.length > 0, `drop counters exported: ${drops.map((m) => `${m[1]}=${m[2]}`).join(', ')}`);
  });
}
