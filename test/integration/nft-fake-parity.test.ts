// The fake nftables must accept and refuse what the kernel does: the same
// transactions go to real nft (in a private namespace) and to the fake, and both must
// agree. Also checks that the builder's text is what nft reads back.
import t from 'tap';
import { realExec } from '../../src/os/exec.js';
import { FakeNft } from '../../src/os/nft-fake.js';
import { Nft, Transaction } from '../../src/os/nft.js';
import { makeNetns, nsExec, requireRoot } from '../helpers/netns.js';

const VM = { kind: 'map' as const, name: 'vm', type: ['ipv4_addr', 'inet_proto', 'inet_service'] as const, value: 'verdict' as const };

function base(): Transaction {
  const tx = new Transaction('ip', 'par');
  tx.add({ kind: 'table' });
  tx.delete({ kind: 'table' });
  tx.add({ kind: 'table' });
  tx.add({ kind: 'chain', name: 'pre', type: 'nat', hook: 'prerouting', priority: 'dstnat' });
  tx.add({ kind: 'chain', name: 'fwdc', type: 'filter', hook: 'forward', priority: 'filter - 10' });
  tx.add({ kind: 'chain', name: 'a' });
  tx.add({ kind: 'chain', name: 'dn' });
  tx.add({ ...VM, type: [...VM.type] });
  tx.add({ kind: 'set', name: 's', type: ['ipv4_addr'] });
  tx.add({ kind: 'set', name: 'iv', type: ['ipv4_addr', 'inet_service'], flags: ['interval'] });
  tx.add({ kind: 'set', name: 'dyn', type: ['ipv4_addr'], flags: ['dynamic', 'timeout'], timeout: 60 });
  tx.add({ kind: 'rule', chain: 'dn', rule: [{ update: 'dyn', key: ['ip saddr'] }, { match: 'meta l4proto', value: 'tcp' }, { dnat: '10.0.0.1', port: 80 }] });
  tx.add({ kind: 'rule', chain: 'pre', rule: [{ vmap: { set: 'vm' }, key: ['ip daddr', 'meta l4proto', 'th dport'] }] });
  tx.add({ kind: 'rule', chain: 'pre', rule: [{ numgen: 'inc', vmap: [{ goto: 'a' }, { goto: 'dn' }] }] });
  tx.add({ kind: 'rule', chain: 'fwdc', rule: [{ match: ['ip daddr', 'th dport'], value: { set: 'iv' } }, { ctState: ['established', 'related'] }, { counter: true }, { verdict: 'accept' }] });
  tx.add({ kind: 'rule', chain: 'fwdc', rule: [{ markMask: 0x4000, op: '!=', value: 0 }, { reject: 'icmp port-unreachable' }] });
  tx.add({ kind: 'element', set: 'vm', key: ['10.96.0.1', 'tcp', 80], value: { goto: 'a' }, comment: 'x' });
  tx.add({ kind: 'element', set: 'iv', key: ['10.1.0.0/16', '8000-8100'] });
  return tx;
}

const next = () => new Transaction('ip', 'par').declare({ ...VM, type: [...VM.type] }).declare({ kind: 'set', name: 's', type: ['ipv4_addr'] });

const cases: [string, (tx: Transaction) => void, boolean][] = [
  ['jump to a missing chain', (tx) => tx.add({ kind: 'rule', chain: 'a', rule: [{ jump: 'nochain' }] }), false],
  ['jump to a chain added later', (tx) => tx.add({ kind: 'rule', chain: 'a', rule: [{ jump: 'later' }] }).add({ kind: 'chain', name: 'later' }), false],
  ['jump to a chain added first', (tx) => tx.add({ kind: 'chain', name: 'later' }).add({ kind: 'rule', chain: 'a', rule: [{ jump: 'later' }] }), true],
  ['jump to a base chain', (tx) => tx.add({ kind: 'rule', chain: 'a', rule: [{ jump: 'fwdc' }] }), false],
  ['lookup in a missing set', (tx) => tx.add({ kind: 'rule', chain: 'a', rule: [{ match: 'ip saddr', value: { set: 'none' } }, { verdict: 'accept' }] }), false],
  ['element to a missing chain', (tx) => tx.add({ kind: 'element', set: 'vm', key: ['10.96.0.2', 'tcp', 80], value: { goto: 'ghost' } }), false],
  ['same element, same value', (tx) => tx.add({ kind: 'element', set: 'vm', key: ['10.96.0.1', 'tcp', 80], value: { goto: 'a' } }), true],
  ['same element, other value', (tx) => tx.add({ kind: 'element', set: 'vm', key: ['10.96.0.1', 'tcp', 80], value: { verdict: 'drop' } }), false],
  ['create an existing element', (tx) => tx.create({ kind: 'element', set: 'vm', key: ['10.96.0.1', 'tcp', 80], value: { goto: 'a' } }), false],
  ['delete a missing element', (tx) => tx.delete({ kind: 'element', set: 'vm', key: ['10.96.0.9', 'tcp', 80] }), false],
  ['delete a referenced chain', (tx) => tx.delete({ kind: 'chain', name: 'a' }), false],
  ['delete element then chain', (tx) => tx.delete({ kind: 'element', set: 'vm', key: ['10.96.0.1', 'tcp', 80] }).flush({ kind: 'chain', name: 'pre' }).delete({ kind: 'chain', name: 'a' }), true],
  ['delete a missing chain', (tx) => tx.delete({ kind: 'chain', name: 'nope' }), false],
  ['prefix in a non-interval set', (tx) => tx.add({ kind: 'element', set: 's', key: ['10.0.0.0/8'] }), false],
  ['element timeout without the flag', (tx) => tx.add({ kind: 'element', set: 's', key: ['10.0.0.1'], timeout: 5 }), false],
  ['dnat reachable from a filter chain', (tx) => tx.add({ kind: 'rule', chain: 'fwdc', rule: [{ jump: 'dn' }] }), false],
  ['delete a set in use', (tx) => tx.delete({ kind: 'set', name: 'dyn' }), false],
  ['delete an unused set', (tx) => tx.delete({ kind: 'set', name: 's' }), true],
  ['flush then delete the table', (tx) => tx.flush({ kind: 'table' }).delete({ kind: 'table' }), true],
  ['re-add a base chain with another hook', (tx) => tx.add({ kind: 'chain', name: 'fwdc', type: 'filter', hook: 'input', priority: 0 }), false],
  ['text rule with a valid reference', (tx) => tx.add({ kind: 'rule', chain: 'a', rule: 'ip saddr @s counter accept' }), true],
];

if (requireRoot(t)) {
  const ns = makeNetns('nftpar');
  const real = new Nft(realExec, { netns: ns.name });

  t.test('the base transaction applies in both and reads back as written', async (t) => {
    const fake = new FakeNft();
    fake.apply(base());
    await real.run(base());
    const listed = nsExec(ns.name, ['nft', 'list', 'table', 'ip', 'par']);
    t.match(listed, /numgen inc mod 2 vmap \{ 0 : goto a, 1 : goto dn \}/);
    t.match(listed, /update @dyn \{ ip saddr \} meta l4proto tcp dnat to 10\.0\.0\.1:80/);
    t.match(listed, /10\.1\.0\.0\/16 \. 8000-8100/);
    const l = await real.list('par', 'ip');
    t.same(l!.chains.map((c) => c.name).sort(), [...fake.table('ip', 'par')!.chains.keys()].sort());
  });

  for (const [name, build, ok] of cases) {
    t.test(`${name}: kernel and fake both ${ok ? 'accept' : 'refuse'}`, async (t) => {
      const fake = new FakeNft();
      fake.apply(base());
      await real.run(base());
      const tx = next();
      build(tx);
      t.equal(tx.error, undefined, 'the builder accepts it');
      const realOk = await real.run(tx).then(() => true, (e: Error) => (t.comment(`kernel: ${e.message}`), false));
      let fakeOk = true;
      try {
        fake.apply(tx);
      } catch (e) {
        t.comment(`fake: ${(e as Error).message}`);
        fakeOk = false;
      }
      t.equal(realOk, ok, 'kernel');
      t.equal(fakeOk, ok, 'fake');
    });
  }
}
