// IPv6 neighbour discovery crosses the policy hooks (it is ICMPv6, not ARP): the
// compiled table accepts exactly what conntrack marks untracked ICMPv6 (ND, MLD) for
// isolated pods, and nothing else: ICMPv6 echo and TCP from a deny-all pod are still
// dropped. IPv4-only clusters get no such rule. (The kernel side is proven by
// test/integration/policy-nft6.test.ts.)
import t from 'tap';
import { compile, fullTransaction } from '../../src/policy/compiler.js';
import { PolicyState } from '../../src/policy/evaluator.js';
import { np, nsObj, podObj } from '../../src/policy/fixtures.js';
import { SimCluster } from '../../src/policy/testing.js';

const NODES = new Map([['n1', ['10.1.1.0/24', 'fd00:1:1::/64']]]);
const pods = (v6: boolean) => [
  podObj('x', 'a', { node: 'n1', ips: v6 ? ['10.1.1.10', 'fd00:1:1::10'] : ['10.1.1.10'] }),
  podObj('x', 'b', { node: 'n1', ips: v6 ? ['10.1.1.11', 'fd00:1:1::11'] : ['10.1.1.11'] }),
];
// x is deny-all both ways.
const state = (v6: boolean) => PolicyState.from({ namespaces: [nsObj('x')], pods: pods(v6), policies: [np('x', 'deny-all', { policyTypes: ['Ingress', 'Egress'] })] });

t.test('ND and MLD (untracked ICMPv6) pass an isolated pod; other traffic does not', async (t) => {
  const sim = new SimCluster(NODES);
  sim.apply(state(true));
  const tracer = sim.nodes.get('n1')!.tracer;
  const pkt = (o: Partial<Parameters<typeof tracer.hook>[1]>) => ({ family: 6 as const, src: 'fd00:1:1::10', dst: 'fd00:1:1::11', proto: 'icmpv6' as const, ...o });
  // A neighbour advertisement from a to b (bridged: forward), a solicitation to the gateway (input).
  t.equal(tracer.hook('forward', pkt({ ct: 'untracked' })).verdict, 'accept', 'NA a -> b (forward)');
  t.equal(tracer.hook('input', pkt({ dst: 'ff02::1:ff00:1', ct: 'untracked' })).verdict, 'accept', 'NS a -> gateway (input)');
  t.equal(tracer.hook('forward', pkt({ ct: 'new' })).verdict, 'drop', 'ICMPv6 echo a -> b is still denied');
  t.equal(tracer.hook('forward', pkt({ proto: 'tcp', sport: 40000, dport: 80 })).verdict, 'drop', 'TCP a -> b is denied');
  t.equal(tracer.hook('forward', pkt({ proto: 'udp', sport: 40000, dport: 53, ct: 'untracked' })).verdict, 'drop', 'untracked UDP (e.g. a notrack rule elsewhere) is still judged');
  t.equal(tracer.hook('forward', { family: 4, src: '10.1.1.10', dst: '10.1.1.11', proto: 'tcp', sport: 40000, dport: 80 }).verdict, 'drop', 'IPv4 TCP a -> b is denied');
});

t.test('no ND rule without IPv6 pods', async (t) => {
  const v4 = fullTransaction(compile(state(false), { nodeName: 'n1', podCIDRs: ['10.1.1.0/24'] })).toText();
  t.notMatch(v4, /icmpv6/);
  const v6 = fullTransaction(compile(state(true), { nodeName: 'n1', podCIDRs: NODES.get('n1')! })).toText();
  t.match(v6, /add rule inet skiff-policy forward meta l4proto icmpv6 ct state untracked accept/);
  t.match(v6, /add rule inet skiff-policy input meta l4proto icmpv6 ct state untracked accept/);
});
