// NftNetlink (nf_tables netlink, src/os/nftnl.ts) against Nft (the nft binary): every
// transaction is applied with Nft in namespace A and with NftNetlink in namespace B,
// and `nft -j list ruleset` of both must be identical (handles and the time-varying
// "expires" normalized). Transactions: every Expr variant and op (ip, inet, ip6), the
// proxy's golden service shapes (full and incremental syncs), the policy compiler on
// every upstream scenario (full, then incremental updates), a sequence of partial
// transactions, and failing transactions, which must reject with NftError naming the
// op and change nothing.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { Registry } from 'prom-client';
import type { AgentContext } from '../../src/agent/reconciler.js';
import { realExec } from '../../src/os/exec.js';
import { Nft, NftError, Transaction, type NftRunner } from '../../src/os/nft.js';
import { NftNetlink } from '../../src/os/nftnl.js';
import { NetnsSandbox } from '../../src/os/sandbox.js';
import { appliedFrom, compile, fullTransaction, planUpdate, type PolicyModel } from '../../src/policy/compiler.js';
import { PolicyState } from '../../src/policy/evaluator.js';
import { applyMutation, syntheticModel, UPSTREAM_SCENARIOS, type Scenario } from '../../src/policy/fixtures.js';
import { MemoryView, NODE, NODE_IP, slice, svc } from '../../src/proxy/fixtures.js';
import { Proxier } from '../../src/proxy/proxier.js';
import { logger } from '../../src/util/log.js';
import { ALL_TABLE, everyExprInet, everyExprIp, everyExprIp6 } from '../helpers/nftnl-cases.js';
import { requireRoot } from '../helpers/netns.js';
import { cases } from '../helpers/proxy-golden-cases.js';

if (requireRoot(t)) {
  const sandbox = new NetnsSandbox(process.env.SKIFF_NETNS_PREFIX ?? 'sknl-');
  const A = sandbox.create('txt');
  const B = sandbox.create('nl');
  t.teardown(() => {
    nl.close();
    sandbox.removeAll();
  });
  const text = new Nft(realExec, { netns: A.name });
  const nl = new NftNetlink({ netnsPath: B.path });
  const nft = (ns: string, ...args: string[]) => execFileSync('ip', ['netns', 'exec', ns, 'nft', ...args], { encoding: 'utf8' });
  /** The ruleset as JSON, handles and expiry countdowns zeroed (they differ by timing only). */
  const listing = (ns: string) => nft(ns, '-j', 'list', 'ruleset').replace(/"(handle|expires)": \d+/g, '"$1": 0');
  const flushBoth = () => {
    nft(A.name, 'flush', 'ruleset');
    nft(B.name, 'flush', 'ruleset');
  };
  let compared = 0;
  const same = (t: { pass(m: string): void; fail(m: string): void }, what: string) => {
    const a = listing(A.name);
    const b = listing(B.name);
    compared++;
    if (a !== b) {
      // Show the first differing line of the text listings to make a failure readable.
      const la = nft(A.name, 'list', 'ruleset').split('\n');
      const lb = nft(B.name, 'list', 'ruleset').split('\n');
      const i = la.findIndex((l, k) => l !== lb[k]);
      t.fail(`${what}: listings differ at line ${i + 1}: nft: ${JSON.stringify(la[i])} netlink: ${JSON.stringify(lb[i])}`);
    } else t.pass(`${what}: identical listings (${a.length} bytes of JSON)`);
  };
  /** Applies with both; both must succeed (or both fail). */
  const both = async (tx: Transaction | Transaction[]) => {
    let ea: unknown;
    let eb: unknown;
    await text.run(tx).catch((e) => (ea = e));
    await nl.run(tx).catch((e) => (eb = e));
    if (ea || eb) throw new Error(`nft: ${ea ? (ea as Error).message : 'ok'}; netlink: ${eb ? (eb as Error).message : 'ok'}`);
  };
  /** A runner that applies every transaction with both (the proxier under test calls it). */
  const tee: NftRunner = { run: both };

  t.test('every expression and op (ip, inet, ip6 tables)', async (t) => {
    flushBoth();
    await both([everyExprIp(), everyExprInet(), everyExprIp6()]);
    same(t, 'every Expr variant');
    t.match(nft(B.name, 'list', 'table', 'ip', ALL_TABLE), /comment "every expression"/, 'table comment (udata) readable by nft');
    t.match(nft(B.name, 'list', 'table', 'ip', ALL_TABLE), /numgen inc mod 3 vmap \{ 0 : goto ep-1, 1 : goto ep-2, 2 : goto ep-3 \}/, 'numgen vmap decoded by nft');
  });

  t.test('partial transactions, compared after each step', async (t) => {
    const handle = (ns: string, chain: string, comment: string): number => {
      const doc = JSON.parse(nft(ns, '-j', 'list', 'chain', 'ip', ALL_TABLE, chain)) as { nftables: Record<string, { handle?: number; comment?: string }>[] };
      const r = doc.nftables.find((x) => x.rule?.comment === comment);
      if (!r) throw new Error(`no rule with comment ${comment} in ${ns}`);
      return r.rule!.handle!;
    };
    const steps: [string, () => Transaction][] = [
      [
        'flush chain + rewrite',
        () =>
          new Transaction('ip', ALL_TABLE)
            .flush({ kind: 'chain', name: 'svc-a' })
            .add({ kind: 'rule', chain: 'svc-a', rule: [{ numgen: 'random', vmap: [{ goto: 'ep-2' }, { goto: 'ep-3' }] }], comment: 'rewritten' }),
      ],
      ['delete element (plain, interval, concat interval, map)', () => withDecl().delete({ kind: 'element', set: 'addrs', key: ['10.0.0.2'] }).delete({ kind: 'element', set: 'nets', key: ['10.0.0.0/8'] }).delete({ kind: 'element', set: 'protoports', key: ['udp', 53] }).delete({ kind: 'element', set: 'svc', key: ['10.96.0.12', 'tcp', 80] })],
      ['delete chain', () => new Transaction('ip', ALL_TABLE).delete({ kind: 'chain', name: 'commented' })],
      ['add elements with timeout and comment', () => withDecl().add({ kind: 'element', set: 'timed', key: ['10.9.9.7'], timeout: 30 }).add({ kind: 'element', set: 'affinity', key: ['10.9.9.6'], timeout: 90, comment: 'c' }).add({ kind: 'element', set: 'nets', key: ['11.0.0.0/8'] })],
      ['insert rule', () => new Transaction('ip', ALL_TABLE).insert({ kind: 'rule', chain: 'spare', rule: [{ counter: true }, { verdict: 'return' }], comment: 'to-delete' }).insert({ kind: 'rule', chain: 'spare', rule: [{ match: 'th dport', value: [1, 2, 3] }, { verdict: 'accept' }] })],
      ['flush set, delete set, create set', () => new Transaction('ip', ALL_TABLE).flush({ kind: 'set', name: 'marks' }).flush({ kind: 'map', name: 'dmap' }).delete({ kind: 'set', name: 'timed' }).create({ kind: 'set', name: 'fresh', type: ['ipv4_addr', 'inet_service'], comment: 'new' })],
    ];
    for (const [name, mk] of steps) {
      await both(mk());
      same(t, name);
    }
    // Delete a rule by handle: each namespace has its own handle numbers.
    const ha = handle(A.name, 'spare', 'to-delete');
    const hb = handle(B.name, 'spare', 'to-delete');
    await text.run(new Transaction('ip', ALL_TABLE).delete({ kind: 'rule', chain: 'spare', handle: ha }));
    await nl.run(new Transaction('ip', ALL_TABLE).delete({ kind: 'rule', chain: 'spare', handle: hb }));
    same(t, 'delete rule by handle');
    await both(new Transaction('ip', ALL_TABLE).flush({ kind: 'table' }));
    same(t, 'flush table');
    await both([new Transaction('ip', ALL_TABLE).delete({ kind: 'table' }), new Transaction('inet', ALL_TABLE).delete({ kind: 'table' })]);
    same(t, 'delete table');
  });

  t.test('failing transactions reject with NftError naming the op and change nothing', async (t) => {
    flushBoth();
    await both(everyExprIp());
    const before = listing(B.name);
    const bad: [string, () => Transaction, RegExp][] = [
      ['delete of a missing chain', () => new Transaction('ip', ALL_TABLE).add({ kind: 'chain', name: 'ok-chain' }).delete({ kind: 'chain', name: 'absent-chain' }), /delete chain ip sknl-all absent-chain: No such file or directory \(ENOENT\)/],
      ['goto a missing chain', () => new Transaction('ip', ALL_TABLE).add({ kind: 'chain', name: 'ok-chain' }).add({ kind: 'rule', chain: 'spare', rule: [{ goto: 'nowhere' }], comment: 'bad goto' }), /add rule ip sknl-all spare \(comment "bad goto"\): No such file or directory/],
      ['delete of a referenced chain', () => new Transaction('ip', ALL_TABLE).delete({ kind: 'chain', name: 'ep-1' }), /delete chain ip sknl-all ep-1: .*\(EBUSY\)/],
      [
        'create of an existing element among many',
        () => {
          const tx = withDecl();
          for (let i = 0; i < 3000; i++) tx.add({ kind: 'element', set: 'addrs', key: [`10.50.${i >> 8}.${i & 255}`] });
          tx.create({ kind: 'element', set: 'addrs', key: ['10.0.0.1'] });
          return tx;
        },
        /create element ip sknl-all addrs \{ 10\.0\.0\.1 \}: .*\(EEXIST\)/,
      ],
      ['delete of a missing element (in the 2nd message of a set)', () => {
        const tx = withDecl();
        for (let i = 0; i < 3000; i++) tx.add({ kind: 'element', set: 'addrs', key: [`10.60.${i >> 8}.${i & 255}`] });
        for (let i = 0; i < 2000; i++) tx.delete({ kind: 'element', set: 'addrs', key: [`10.60.${i >> 8}.${i & 255}`] });
        tx.delete({ kind: 'element', set: 'addrs', key: ['10.61.0.1'] });
        return tx;
      }, /delete element ip sknl-all addrs \{ 10\.61\.0\.1 \}: No such file or directory/],
      ['a rule in a missing table', () => new Transaction('ip', 'no-such-table').add({ kind: 'rule', chain: 'c', rule: [{ verdict: 'accept' }] }), /add rule ip no-such-table c: No such file or directory/],
    ];
    for (const [name, mk, want] of bad) {
      const err = await nl.run(mk()).then(
        () => undefined,
        (e: unknown) => e,
      );
      t.ok(err instanceof NftError, `${name}: rejects with NftError`);
      t.match((err as Error | undefined)?.message ?? '', want, `${name}: ${(err as Error | undefined)?.message}`);
      t.equal(listing(B.name), before, `${name}: nothing changed`);
      // nft refuses the same transaction.
      await t.rejects(text.run(mk()), NftError, `${name}: nft refuses it too`);
    }
    same(t, 'after the failures');
  });

  t.test('proxy golden service shapes: full sync, then incremental syncs', async (t) => {
    for (const c of cases) {
      flushBoth();
      const view = new MemoryView();
      const ctx: AgentContext = { nodeName: NODE, view, registry: new Registry(), log: logger('nftnl-it'), exec: realExec };
      const proxier = new Proxier(ctx, { clusterCIDR: '10.244.0.0/16', balancing: 'round-robin', nodeIPs: [NODE_IP], healthCheckBind: false, ...c.cfg }, tee, {
        conntrack: { delete: async () => 0 },
      });
      view.put(...c.objs);
      await proxier.sync({ full: true, changes: [] });
      same(t, `${c.name} (full sync)`);
      // An incremental change: a new service with two endpoints, then one endpoint less.
      const v6 = c.family === 'ip6';
      const ch = view.put(svc('extra', { clusterIPs: [v6 ? 'fd00:96::99' : '10.96.0.99'] }), slice('extra', v6 ? ['fd00:244:1::9', 'fd00:244:2::9'] : ['10.244.1.9', '10.244.2.9']));
      await proxier.sync({ full: false, changes: ch });
      same(t, `${c.name} (+ service)`);
      const ch2 = view.put(slice('extra', v6 ? ['fd00:244:1::9'] : ['10.244.1.9']));
      await proxier.sync({ full: false, changes: ch2 });
      same(t, `${c.name} (- endpoint)`);
      const ch3 = view.remove('Service', 'default/extra');
      await proxier.sync({ full: false, changes: ch3 });
      same(t, `${c.name} (- service)`);
    }
  });

  t.test('policy compiler: every upstream scenario, full then incremental', async (t) => {
    const NODES = ['node-1', 'node-2', 'node-3'];
    const base = syntheticModel(NODES);
    const IPS = new Map(base.pods.map((p) => [`${p.metadata.namespace}/${p.metadata.name}`, p.status!.podIP!]));
    const stateOf = (s: Scenario) => PolicyState.from({ ...applyMutation(base, s.mutate), policies: s.policies(IPS) });
    const node = 'node-1';
    const podCIDRs = [base.podCIDRs.get(node)!];
    let prev: ReturnType<typeof appliedFrom> | undefined;
    let full = 0;
    let incremental = 0;
    flushBoth();
    for (const s of UPSTREAM_SCENARIOS) {
      const model: PolicyModel = compile(stateOf(s), { nodeName: node, podCIDRs });
      const plan = prev ? planUpdate(prev, model) : undefined;
      if (plan) {
        await both(plan.tx);
        prev = plan.commit();
        incremental++;
      } else {
        await both(fullTransaction(model));
        prev = appliedFrom(model);
        full++;
      }
      same(t, `${s.name} (${plan ? 'incremental' : 'full'})`);
    }
    // And each scenario in full from scratch.
    for (const s of UPSTREAM_SCENARIOS.slice(0, 12)) {
      flushBoth();
      await both(fullTransaction(compile(stateOf(s), { nodeName: node, podCIDRs })));
      same(t, `${s.name} (fresh)`);
      full++;
    }
    t.ok(incremental > 0 && full > 0, `${full} full and ${incremental} incremental policy transactions compared`);
  });

  t.test('runs are serialized per socket, and the event loop runs while the kernel works', async (t) => {
    flushBoth();
    const big = new Transaction('ip', 'sknl-big');
    big.add({ kind: 'table' });
    for (let i = 0; i < 20000; i++) {
      big.add({ kind: 'chain', name: `c${i}` });
      big.add({ kind: 'rule', chain: `c${i}`, rule: [{ match: 'ip saddr', value: `10.${i >> 8}.${i & 255}.1` }, { counter: true }, { verdict: 'accept' }] });
    }
    // The second transaction needs the first's table: it must not be sent before the first is applied.
    const next = new Transaction('ip', 'sknl-big').add({ kind: 'rule', chain: 'c19999', rule: [{ verdict: 'drop' }] });
    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    const t0 = performance.now();
    await Promise.all([nl.run(big), nl.run(next)]);
    const ms = performance.now() - t0;
    clearInterval(timer);
    t.match(nft(B.name, 'list', 'chain', 'ip', 'sknl-big', 'c19999'), /counter packets 0 bytes 0 accept\n\s+drop/, 'both applied, in order');
    // Encoding runs on the main thread; the kernel's part runs on a thread-pool thread.
    // A synchronous send would allow no tick at all until both runs are done. (A rate
    // threshold, one tick per 50 ms, failed once in CI on a loaded machine: 15 ticks in
    // 1,241 ms, most of them spent encoding.)
    t.ok(ticks >= 3, `${ticks} timer ticks during ${ms.toFixed(0)} ms of netlink work`);
    nft(B.name, 'delete', 'table', 'ip', 'sknl-big');
  });

  t.test('summary', async (t) => {
    t.ok(compared > 100, `${compared} listings compared`);
  });
}

/** A transaction on ALL_TABLE that knows the types of its sets (for element ops). */
function withDecl(): Transaction {
  const tx = new Transaction('ip', ALL_TABLE);
  for (const op of everyExprIp().ops) if ((op.obj.kind === 'set' || op.obj.kind === 'map') && op.verb === 'add') tx.declare(op.obj);
  return tx;
}
