import t from 'tap';
import { FakeNft } from '../../src/os/nft-fake.js';
import { Tracer, TraceError, explain } from '../../src/os/nft-trace.js';
import { Transaction } from '../../src/os/nft.js';

function ruleset(): FakeNft {
  const nft = new FakeNft();
  const tx = new Transaction('ip', 't');
  tx.add({ kind: 'table' });
  tx.add({ kind: 'chain', name: 'pre', type: 'nat', hook: 'prerouting', priority: 'dstnat' });
  tx.add({ kind: 'chain', name: 'post', type: 'nat', hook: 'postrouting', priority: 'srcnat' });
  tx.add({ kind: 'chain', name: 'fwdc', type: 'filter', hook: 'forward', priority: 0, policy: 'drop' });
  tx.add({ kind: 'chain', name: 'lb' });
  for (const n of [1, 2, 3]) tx.add({ kind: 'chain', name: `ep${n}` });
  tx.add({ kind: 'set', name: 'sticky', type: ['ipv4_addr'], flags: ['dynamic', 'timeout'], timeout: 60 });
  tx.add({ kind: 'set', name: 'allowed', type: ['ipv4_addr', 'inet_service'], flags: ['interval'] });
  tx.add({ kind: 'element', set: 'allowed', key: ['10.1.0.0/16', '8000-8100'] });
  tx.add({ kind: 'rule', chain: 'pre', rule: [{ match: 'ip daddr', value: '10.96.0.1' }, { match: 'th dport', value: 80 }, { jump: 'lb' }] });
  tx.add({ kind: 'rule', chain: 'lb', rule: [{ match: 'ip saddr', value: { set: 'sticky' } }, { goto: 'ep3' }] });
  tx.add({ kind: 'rule', chain: 'lb', rule: [{ numgen: 'inc', vmap: [{ goto: 'ep1' }, { goto: 'ep2' }, { goto: 'ep3' }] }] });
  for (const n of [1, 2]) tx.add({ kind: 'rule', chain: `ep${n}`, rule: [{ match: 'meta l4proto', value: 'tcp' }, { dnat: `10.1.0.${n}`, port: 8080 }] });
  tx.add({ kind: 'rule', chain: 'ep3', rule: [{ update: 'sticky', key: ['ip saddr'] }] });
  tx.add({ kind: 'rule', chain: 'ep3', rule: [{ setMark: 0x4000, how: 'or' }] });
  tx.add({ kind: 'rule', chain: 'ep3', rule: [{ match: 'meta l4proto', value: 'tcp' }, { dnat: '10.1.0.3', port: 8080 }] });
  tx.add({ kind: 'rule', chain: 'post', rule: [{ markMask: 0x4000, value: 0 }, { verdict: 'return' }] });
  tx.add({ kind: 'rule', chain: 'post', rule: [{ masquerade: true }] });
  tx.add({ kind: 'rule', chain: 'fwdc', rule: [{ ctState: ['established', 'related'] }, { verdict: 'accept' }] });
  tx.add({ kind: 'rule', chain: 'fwdc', rule: [{ match: ['ip daddr', 'th dport'], value: { set: 'allowed' } }, { verdict: 'accept' }] });
  tx.add({ kind: 'rule', chain: 'fwdc', rule: [{ match: 'meta l4proto', value: 'udp' }, { reject: 'icmp port-unreachable' }] });
  nft.apply(tx);
  return nft;
}

const pkt = (src: string) => ({ family: 4 as const, src, dst: '10.96.0.1', proto: 'tcp' as const, sport: 40000, dport: 80 });

t.test('numgen inc rotates, dnat rewrites, interval sets match, policy applies', async (t) => {
  let now = 0;
  const tr = new Tracer(ruleset(), { now: () => now });
  const a = tr.connect(pkt('10.2.0.1'), 'external');
  t.equal(a.verdict, 'accept', explain(a));
  t.same(a.dnat, { addr: '10.1.0.1', port: 8080 });
  t.same(a.hooks, ['prerouting', 'forward', 'postrouting']);
  t.equal(a.masquerade, false);
  t.equal(tr.connect(pkt('10.2.0.2'), 'external').dnat?.addr, '10.1.0.2');
  const third = tr.connect(pkt('10.2.0.3'), 'external');
  t.equal(third.dnat?.addr, '10.1.0.3');
  t.equal(third.masquerade, true, 'mark set in ep3 makes postrouting masquerade');
  // 10.2.0.3 is now sticky to ep3 (update @sticky) until the timeout passes.
  t.equal(tr.connect(pkt('10.2.0.3'), 'external').dnat?.addr, '10.1.0.3');
  t.same(tr.dynamicEntries('ip', 't', 'sticky'), ['10.2.0.3']);
  now = 61_000;
  t.equal(tr.connect(pkt('10.2.0.3'), 'external').dnat?.addr, '10.1.0.1', 'expired: balanced again (counter continued at 3 -> ep1)');
  // Not matching the DNAT rule: the forward policy drops unless the interval set allows it.
  t.equal(tr.connect({ ...pkt('10.2.0.1'), dst: '10.1.5.5', dport: 8050 }, 'external').verdict, 'accept');
  t.equal(tr.connect({ ...pkt('10.2.0.1'), dst: '10.1.5.5', dport: 9000 }, 'external').verdict, 'drop');
  const rj = tr.connect({ ...pkt('10.2.0.1'), dst: '10.3.0.1', proto: 'udp' }, 'external');
  t.equal(rj.verdict, 'reject');
  t.equal(rj.reject, 'icmp port-unreachable');
  // Established packets skip nat chains.
  t.equal(tr.connect({ ...pkt('10.2.0.1'), ct: 'established' }, 'external').dnat, undefined);
});

t.test('numgen random is seeded and stays within the entries', async (t) => {
  const mk = () => {
    const nft = new FakeNft();
    const tx = new Transaction('ip', 't');
    tx.add({ kind: 'table' });
    tx.add({ kind: 'chain', name: 'out', type: 'nat', hook: 'output', priority: -100 });
    for (const n of [1, 2]) tx.add({ kind: 'chain', name: `e${n}` }).add({ kind: 'rule', chain: `e${n}`, rule: [{ dnat: `10.0.0.${n}` }] });
    tx.add({ kind: 'rule', chain: 'out', rule: [{ numgen: 'random', vmap: [{ goto: 'e1' }, { goto: 'e2' }] }] });
    nft.apply(tx);
    return new Tracer(nft, { seed: 42 });
  };
  const seq = (tr: Tracer) => Array.from({ length: 20 }, () => tr.connect(pkt('1.1.1.1'), 'local').dnat?.addr);
  const s1 = seq(mk());
  t.same(s1, seq(mk()), 'same seed, same sequence');
  t.ok(s1.includes('10.0.0.1') && s1.includes('10.0.0.2'));
});

t.test('text rules cannot be traced', async (t) => {
  const nft = new FakeNft();
  const tx = new Transaction('ip', 't');
  tx.add({ kind: 'table' });
  tx.add({ kind: 'chain', name: 'in', type: 'filter', hook: 'input', priority: 0 });
  tx.add({ kind: 'rule', chain: 'in', rule: 'tcp dport 22 accept' });
  nft.apply(tx);
  t.throws(() => new Tracer(nft).hook('input', pkt('1.1.1.1')), TraceError);
});
