import t, { type Test } from 'tap';
import { FakeNft } from '../../src/os/nft-fake.js';
import { Transaction } from '../../src/os/nft.js';

function base(): Transaction {
  const tx = new Transaction('ip', 't');
  tx.add({ kind: 'table' });
  tx.add({ kind: 'chain', name: 'pre', type: 'nat', hook: 'prerouting', priority: 'dstnat' });
  tx.add({ kind: 'chain', name: 'fwdc', type: 'filter', hook: 'forward', priority: 0 });
  tx.add({ kind: 'chain', name: 'a' });
  tx.add({ kind: 'map', name: 'vm', type: ['ipv4_addr', 'inet_proto', 'inet_service'], value: 'verdict' });
  tx.add({ kind: 'set', name: 's', type: ['ipv4_addr'] });
  tx.add({ kind: 'rule', chain: 'pre', rule: [{ vmap: { set: 'vm' }, key: ['ip daddr', 'meta l4proto', 'th dport'] }] });
  tx.add({ kind: 'element', set: 'vm', key: ['10.96.0.1', 'tcp', 80], value: { goto: 'a' } });
  return tx;
}

function expectFail(t: Test, nft: FakeNft, build: (tx: Transaction) => void, re: RegExp): void {
  const before = nft.dump();
  const tx = new Transaction('ip', 't');
  tx.declare({ kind: 'map', name: 'vm', type: ['ipv4_addr', 'inet_proto', 'inet_service'], value: 'verdict' });
  tx.declare({ kind: 'set', name: 's', type: ['ipv4_addr'] });
  build(tx);
  t.throws(() => nft.apply(tx), re);
  t.equal(nft.dump(), before, 'model unchanged after a failed transaction');
}

t.test('applies a valid transaction and dumps canonical text', async (t) => {
  const nft = new FakeNft();
  nft.apply(base());
  t.match(nft.dump(), /map vm \{\n\t\ttype ipv4_addr \. inet_proto \. inet_service : verdict\n\t\telements = \{\n\t\t\t10\.96\.0\.1 \. tcp \. 80 : goto a,/);
  t.match(nft.dump(), /chain pre \{\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t\tip daddr \. meta l4proto \. th dport vmap @vm\n/);
});

t.test('rejects dangling and invalid references, atomically', async (t) => {
  const nft = new FakeNft();
  nft.apply(base());
  expectFail(t, nft, (tx) => tx.add({ kind: 'rule', chain: 'a', rule: [{ jump: 'nochain' }] }), /No such file or directory: chain nochain/);
  expectFail(t, nft, (tx) => tx.add({ kind: 'rule', chain: 'a', rule: [{ numgen: 'inc', vmap: [{ goto: 'a' }, { goto: 'nope' }] }] }), /chain nope/);
  expectFail(t, nft, (tx) => tx.add({ kind: 'rule', chain: 'a', rule: [{ match: 'ip saddr', value: { set: 'nope' } }, { verdict: 'accept' }] }), /set nope/);
  expectFail(t, nft, (tx) => tx.add({ kind: 'rule', chain: 'a', rule: [{ vmap: { set: 'vm' }, key: ['ip daddr'] }] }), /datatype mismatch/);
  expectFail(t, nft, (tx) => tx.add({ kind: 'rule', chain: 'a', rule: [{ jump: 'pre' }] }), /cannot jump to base chain/);
  expectFail(t, nft, (tx) => tx.add({ kind: 'rule', chain: 'a', rule: [{ match: 'ip6 saddr', value: '::1' }, { verdict: 'drop' }] }), /conflicting protocols/);
  expectFail(t, nft, (tx) => tx.add({ kind: 'element', set: 'vm', key: ['10.96.0.2', 'tcp', 80], value: { goto: 'ghost' } }), /chain ghost/);
  // The chain is referenced by a map element: deleting it fails, even after its rules are gone.
  expectFail(t, nft, (tx) => tx.delete({ kind: 'chain', name: 'a' }), /Device or resource busy/);
  expectFail(t, nft, (tx) => tx.delete({ kind: 'set', name: 's' }).add({ kind: 'rule', chain: 'a', rule: [{ match: 'ip saddr', value: { set: 's' } }, { verdict: 'accept' }] }), /set s/);
  // The first operation succeeds, the second fails: nothing of the transaction stays.
  expectFail(t, nft, (tx) => tx.add({ kind: 'chain', name: 'new' }).add({ kind: 'rule', chain: 'nope', rule: [{ verdict: 'accept' }] }), /chain nope/);
  // A rule order problem nft also has: a jump to a chain added later in the same transaction.
  expectFail(t, nft, (tx) => tx.add({ kind: 'rule', chain: 'a', rule: [{ jump: 'later' }] }).add({ kind: 'chain', name: 'later' }), /chain later/);
  t.notMatch(nft.dump(), /chain new/);
});

t.test('element semantics match the kernel', async (t) => {
  const nft = new FakeNft();
  nft.apply(base());
  // Same key, same value: a no-op. Same key, another value: File exists.
  const same = new Transaction('ip', 't').declare({ kind: 'map', name: 'vm', type: ['ipv4_addr', 'inet_proto', 'inet_service'], value: 'verdict' });
  same.add({ kind: 'element', set: 'vm', key: ['10.96.0.1', 'tcp', 80], value: { goto: 'a' } });
  t.doesNotThrow(() => nft.apply(same));
  expectFail(t, nft, (tx) => tx.add({ kind: 'element', set: 'vm', key: ['10.96.0.1', 'tcp', 80], value: { verdict: 'drop' } }), /File exists/);
  expectFail(t, nft, (tx) => tx.create({ kind: 'element', set: 'vm', key: ['10.96.0.1', 'tcp', 80], value: { goto: 'a' } }), /File exists/);
  expectFail(t, nft, (tx) => tx.delete({ kind: 'element', set: 'vm', key: ['10.96.0.9', 'tcp', 80] }), /No such file/);
  expectFail(t, nft, (tx) => tx.add({ kind: 'element', set: 's', key: ['10.0.0.0/8'] }), /flags interval/);
  expectFail(t, nft, (tx) => tx.add({ kind: 'element', set: 's', key: ['10.0.0.1'], timeout: 5 }), /without flags timeout/);
  // Deleting the element, then the chain it pointed at, in one transaction works.
  const ok = new Transaction('ip', 't').declare({ kind: 'map', name: 'vm', type: ['ipv4_addr', 'inet_proto', 'inet_service'], value: 'verdict' });
  ok.delete({ kind: 'element', set: 'vm', key: ['10.96.0.1', 'tcp', 80] });
  ok.delete({ kind: 'chain', name: 'a' });
  t.doesNotThrow(() => nft.apply(ok));
  t.notMatch(nft.dump(), /chain a /);
});

t.test('nat statements reachable from a filter chain are refused', async (t) => {
  const nft = new FakeNft();
  nft.apply(base());
  const tx = new Transaction('ip', 't');
  tx.add({ kind: 'chain', name: 'dn' });
  tx.add({ kind: 'rule', chain: 'dn', rule: [{ dnat: '10.0.0.1', port: 80 }] });
  tx.add({ kind: 'rule', chain: 'fwdc', rule: [{ jump: 'dn' }] });
  t.throws(() => nft.apply(tx), /Operation not supported/);
  const tx2 = new Transaction('ip', 't');
  tx2.add({ kind: 'chain', name: 'dn' });
  tx2.add({ kind: 'rule', chain: 'dn', rule: [{ dnat: '10.0.0.1', port: 80 }] });
  tx2.add({ kind: 'rule', chain: 'a', rule: [{ jump: 'dn' }] });
  t.doesNotThrow(() => nft.apply(tx2), 'reachable from the nat chain only');
});

t.test('flush and delete; replacing a whole table atomically', async (t) => {
  const nft = new FakeNft();
  nft.apply(base());
  const tx = new Transaction('ip', 't');
  tx.add({ kind: 'table' });
  tx.delete({ kind: 'table' });
  tx.add({ kind: 'table' });
  tx.add({ kind: 'chain', name: 'only' });
  nft.apply(tx);
  t.equal(nft.dump(), 'table ip t {\n\n\tchain only {\n\t}\n}\n');
  t.throws(() => nft.apply(new Transaction('ip', 'zz').delete({ kind: 'table' })), /No such file/);
  nft.failNext(1, 'boom');
  t.throws(() => nft.apply(new Transaction('ip', 't').add({ kind: 'chain', name: 'x' })), /boom/);
  t.notMatch(nft.dump(), /chain x/);
});

t.test('text rules are accepted with their references checked', async (t) => {
  const nft = new FakeNft();
  nft.apply(base());
  const tx = new Transaction('ip', 't');
  tx.add({ kind: 'rule', chain: 'a', rule: 'ip saddr @s counter jump a2' });
  t.throws(() => nft.apply(tx), /chain a2/);
  const tx2 = new Transaction('ip', 't');
  tx2.add({ kind: 'chain', name: 'a2' });
  tx2.add({ kind: 'rule', chain: 'a', rule: 'ip saddr @s counter jump a2' });
  nft.apply(tx2);
  t.throws(() => nft.apply(new Transaction('ip', 't').delete({ kind: 'chain', name: 'a2' })), /busy/);
});
