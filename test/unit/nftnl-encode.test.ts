// NftNetlink's encoder without a kernel: the batch framing, message splitting below the
// 64 KiB attribute limit, and the refusals that happen before anything is sent. What
// the kernel makes of the messages is proven in test/integration/nftnl.test.ts.
import t from 'tap';
import { NftError, Transaction } from '../../src/os/nft.js';
import { NftNetlink } from '../../src/os/nftnl.js';

interface Msg {
  len: number;
  type: number;
  flags: number;
  seq: number;
  family: number;
  resId: number;
}

function messages(buf: Buffer): Msg[] {
  const out: Msg[] = [];
  for (let o = 0; o < buf.length; ) {
    const len = buf.readUInt32LE(o);
    out.push({ len, type: buf.readUInt16LE(o + 4), flags: buf.readUInt16LE(o + 6), seq: buf.readUInt32LE(o + 8), family: buf[o + 16]!, resId: buf.readUInt16BE(o + 18) });
    if (len < 20 || len % 4 !== 0) throw new Error(`message at ${o}: bad length ${len}`);
    o += len;
  }
  return out;
}

const nl = new NftNetlink();

t.test('one batch: BATCH_BEGIN, the ops in order, BATCH_END; sequence numbers increase', async (t) => {
  const tx = new Transaction('inet', 'tbl');
  tx.add({ kind: 'table', comment: 'x' });
  tx.add({ kind: 'chain', name: 'c', type: 'filter', hook: 'input', priority: 0 });
  tx.add({ kind: 'set', name: 's', type: ['ipv4_addr'] });
  tx.add({ kind: 'element', set: 's', key: ['10.0.0.1'] });
  tx.add({ kind: 'rule', chain: 'c', rule: [{ match: 'th dport', value: [80, 443] }, { verdict: 'accept' }] });
  tx.insert({ kind: 'rule', chain: 'c', rule: [{ verdict: 'drop' }] });
  const enc = nl.encode(tx)!;
  const m = messages(enc.batch);
  t.same(
    m.map((x) => x.type),
    [0x10, 0xa00, 0xa03, 0xa09, 0xa0c, 0xa09, 0xa0c, 0xa06, 0xa06, 0x11],
    'begin, table, chain, set, element, anonymous set + its element, rule, rule, end',
  );
  t.equal(m[0]!.resId, 10, 'batch begin names NFNL_SUBSYS_NFTABLES');
  t.equal(m.at(-1)!.resId, 10);
  t.ok(m.slice(1, -1).every((x) => x.family === 1), 'inet family in nfgenmsg');
  t.ok(m.every((x, i) => i === 0 || x.seq === m[i - 1]!.seq + 1), 'consecutive sequence numbers');
  t.equal(m[7]!.flags & 0xc00, 0xc00, 'add rule: CREATE|APPEND');
  t.equal(m[8]!.flags & 0xc00, 0x400, 'insert rule: CREATE only (prepends)');
  t.equal(enc.msgs.length, 8, 'every op message is mapped back to its op');
  t.equal(enc.msgs[4]!.op, 4, 'the anonymous set belongs to the rule that uses it');
});

t.test('elements of one set share messages, split below the 64 KiB attribute limit', async (t) => {
  const tx = new Transaction('ip', 'tbl');
  tx.add({ kind: 'map', name: 'm', type: ['ipv4_addr', 'inet_proto', 'inet_service'], value: 'verdict' });
  for (let i = 0; i < 5000; i++) tx.add({ kind: 'element', set: 'm', key: [`10.1.${i >> 8}.${i & 255}`, 'tcp', 80], value: { goto: `chain-${i}` }, comment: `svc ${i}` });
  const enc = nl.encode(tx)!;
  const m = messages(enc.batch);
  const elems = m.filter((x) => x.type === 0xa0c);
  t.ok(elems.length >= 5 && elems.length < 20, `${elems.length} element messages for 5,000 elements`);
  t.ok(elems.every((x) => x.len < 65535), 'each under 64 KiB');
  const mapped = enc.msgs.flatMap((x) => x.elems ?? []);
  t.equal(mapped.length, 5000, 'every element is mapped back to its op (for error reports)');
});

t.test('refusals before sending', async (t) => {
  const raw = new Transaction('ip', 'tbl');
  raw.add({ kind: 'rule', chain: 'c', rule: 'ip saddr 1.2.3.4 accept' });
  t.throws(() => nl.encode(raw), NftError, 'raw-text rules cannot be encoded');
  t.throws(() => nl.encode(raw), /add rule ip tbl c: raw-text rules/);
  const plain = new Transaction('ip', 'tbl');
  plain.add({ kind: 'set', name: 's', type: ['ipv4_addr'] });
  plain.add({ kind: 'element', set: 's', key: ['10.0.0.0/8'] });
  t.throws(() => nl.encode(plain), /add element ip tbl s \{ 10\.0\.0\.0\/8 \}: a prefix or range needs a set with flag interval/);
  const bad = new Transaction('ip', 'tbl');
  bad.add({ kind: 'chain', name: 'bad name' });
  t.throws(() => nl.encode(bad), /not run: chain name/, 'a transaction with a build error is refused');
  t.equal(nl.encode(new Transaction('ip', 'tbl')), undefined, 'an empty transaction sends nothing');
  t.throws(() => new NftNetlink({ netns: '../x' }), NftError, 'a netns name with a path is refused');
});
