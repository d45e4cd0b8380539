// nftables over netlink (NftNetlink, src/os/nftnl.ts) against `nft -f` (Nft) on the
// proxy's big table: 10,000 services × 10 endpoints (the services of
// bench/proxy.bench.ts), built by the proxier in two private namespaces, one per
// runner. Every transaction the proxier plans (TableState.plan(), through
// Proxier.sync) is applied to both namespaces and timed separately, so both runners
// apply the very same transactions to the same table in the same run:
//   - the full sync (NftNetlink: encode + kernel; nft: nft -f);
//   - one changed endpoint (flush + rewrite of the service chain, a new endpoint
//     chain, the element diff) and one changed service (new port); medians;
//   - the kernel's floor: one-op transactions (NftNetlink only) into the same table.
import { execFileSync } from 'node:child_process';
import type { Change } from '../src/cluster/types.js';
import { realExec } from '../src/os/exec.js';
import { Nft, Transaction as Tx, type NftRunner, type Transaction } from '../src/os/nft.js';
import { NftNetlink } from '../src/os/nftnl.js';
import { NetnsSandbox } from '../src/os/sandbox.js';
import { MemoryView } from '../src/proxy/fixtures.js';
import { ENDPOINTS, benchProxier, clusterIP, mkSlice, mkSvc } from './proxy-services.js';
import { Proxier } from '../src/proxy/proxier.js';
import { median, round, type Benchmark, type Row } from './lib.js';


/** Applies each transaction with NftNetlink, then with Nft (when enabled); times both. */
class Dual implements NftRunner {
  nl = 0;
  encode = 0;
  text = 0;
  bytes = 0;
  messages = 0;
  withText = true;
  constructor(
    private readonly netlink: NftNetlink,
    private readonly nft: Nft,
  ) {}
  async run(tx: Transaction | readonly Transaction[]): Promise<void> {
    let t0 = performance.now();
    const enc = this.netlink.encode(tx);
    this.encode = performance.now() - t0;
    this.bytes = enc?.batch.length ?? 0;
    this.messages = enc?.msgs.length ?? 0;
    t0 = performance.now();
    await this.netlink.run(tx);
    this.nl = performance.now() - t0;
    this.text = NaN;
    if (this.withText) {
      t0 = performance.now();
      await this.nft.run(tx);
      this.text = performance.now() - t0;
    }
  }
}

const count = (ns: string, what: string) => {
  const out = execFileSync('ip', ['netns', 'exec', ns, 'nft', 'list', what], { encoding: 'utf8', maxBuffer: 1 << 28 });
  return out.split('\n').filter((l) => /^\s*(chain|set|map) /.test(l)).length;
};

/**
 * The kernel's cost for a flatter table of the same size (a design data point for the
 * proxy, docs/nftnl.md): one chain per service whose 10 rules DNAT straight from the
 * numgen cascade (no endpoint chains), behind the same kind of verdict map.
 */
async function flatShape(sandbox: NetnsSandbox, n: number, reps: number, rows: Row[]): Promise<void> {
  const ns = sandbox.create('bflat');
  const nl = new NftNetlink({ netnsPath: ns.path });
  const cascade = (c: string, i: number, k: number, base: string) =>
    ({ kind: 'rule', chain: c, rule: [...(k < 9 ? [{ numgenMatch: 'inc' as const, mod: 10 - k, value: 0 }] : []), { match: 'meta l4proto' as const, value: 'tcp' }, { dnat: `${base}.${k}`, port: 8080 }] }) as const;
  try {
    const tx = new Tx('ip', 'flat');
    tx.add({ kind: 'table' });
    tx.add({ kind: 'chain', name: 'pre', type: 'nat', hook: 'prerouting', priority: 'dstnat' });
    tx.add({ kind: 'chain', name: 'out', type: 'nat', hook: 'output', priority: -100 });
    tx.add({ kind: 'map', name: 'svc', type: ['ipv4_addr', 'inet_proto', 'inet_service'], value: 'verdict' });
    for (const c of ['pre', 'out']) tx.add({ kind: 'rule', chain: c, rule: [{ vmap: { set: 'svc' }, key: ['ip daddr', 'meta l4proto', 'th dport'] }] });
    for (let i = 0; i < n; i++) {
      tx.add({ kind: 'chain', name: `s${i}` });
      for (let k = 0; k < ENDPOINTS; k++) tx.add(cascade(`s${i}`, i, k, `10.${128 + (i >> 14)}.${(i >> 6) & 255}`));
      tx.add({ kind: 'element', set: 'svc', key: [clusterIP(i), 'tcp', 80], value: { goto: `s${i}` } });
    }
    let t0 = performance.now();
    await nl.run(tx);
    const label = n.toLocaleString('en-US');
    rows.push({ metric: `flat shape (1 chain/service, ${label} services × ${ENDPOINTS} dnat rules): full sync, NftNetlink`, value: round((performance.now() - t0) / 1000, 2), unit: 's' });
    const cases: [string, (i: number) => Transaction][] = [
      ['add rule without jump', (i) => new Tx('ip', 'flat').add({ kind: 'chain', name: `x${i}` }).add({ kind: 'rule', chain: `x${i}`, rule: [{ counter: true }] })],
      [
        'rewrite one service chain (flush + 10 dnat rules)',
        (i) => {
          const t = new Tx('ip', 'flat').flush({ kind: 'chain', name: `s${i * 7}` });
          for (let k = 0; k < ENDPOINTS; k++) t.add(cascade(`s${i * 7}`, i, k, `10.127.${i}`));
          return t;
        },
      ],
    ];
    for (const [name, mk] of cases) {
      const ts: number[] = [];
      for (let i = 0; i < reps; i++) {
        const t = mk(i);
        t0 = performance.now();
        await nl.run(t);
        ts.push(performance.now() - t0);
      }
      rows.push({ metric: `  flat shape: one-op transaction "${name}", NftNetlink (median of ${reps})`, value: round(median(ts), 2), unit: 'ms' });
    }
  } finally {
    nl.close();
    sandbox.remove(ns.name);
  }
}

const bench: Benchmark = {
  id: 'nftnl',
  title: 'nftables over netlink (NftNetlink) vs nft -f, proxy table',
  async run({ quick }) {
    const rows: Row[] = [];
    const notes: string[] = [];
    const n = Number(process.env.NFTNL_BENCH_SERVICES ?? 10000);
    const reps = quick ? 3 : 7;
    const sandbox = new NetnsSandbox(process.env.SKIFF_NETNS_PREFIX ?? 'sknl-');
    try {
      if (process.env.NFTNL_BENCH_PART === 'flat') {
        await flatShape(sandbox, n, reps, rows);
        return { id: 'nftnl', title: this.title, command: 'sudo NFTNL_BENCH_PART=flat node dist/bench/run.js nftnl', rows, notes };
      }
      const nsNl = sandbox.create('bnl');
      const nsTx = sandbox.create('btx');
      const netlink = new NftNetlink({ netnsPath: nsNl.path });
      const dual = new Dual(netlink, new Nft(realExec, { netns: nsTx.name, timeoutMs: 900_000 }));
      const view = new MemoryView();
      const proxier = benchProxier(view, dual, 'nftnl-bench');
      for (let i = 0; i < n; i++) view.put(mkSvc(i), mkSlice(i));
      const label = n.toLocaleString('en-US');
      let t0 = performance.now();
      await proxier.sync({ full: true, changes: [] });
      const e2e = performance.now() - t0 - (Number.isNaN(dual.text) ? 0 : dual.text);
      rows.push({ metric: `full sync ${label} services × ${ENDPOINTS}: NftNetlink run (encode + kernel)`, value: round(dual.nl / 1000, 2), unit: 's', anchor: { name: 'nft -f, same transaction', value: round(dual.text / 1000, 2) }, target: '<= 2 s', pass: dual.nl <= 2000 });
      rows.push({ metric: `  of which encoding (${(dual.bytes / 2 ** 20).toFixed(1)} MiB, ${dual.messages.toLocaleString('en-US')} messages)`, value: round(dual.encode / 1000, 2), unit: 's' });
      rows.push({ metric: `  end to end with NftNetlink (view -> model -> plan -> netlink)`, value: round(e2e / 1000, 2), unit: 's' });
      notes.push(`Table after the full sync: ${count(nsNl.name, 'chains')} chains (netlink namespace), ${count(nsTx.name, 'chains')} (nft namespace).`);

      const runs: Record<'ep' | 'svc' | 'stale', { nl: number[]; text: number[]; e2e: number[] }> = { ep: { nl: [], text: [], e2e: [] }, svc: { nl: [], text: [], e2e: [] }, stale: { nl: [], text: [], e2e: [] } };
      const step = async (kind: keyof typeof runs, changes: Change[]) => {
        dual.nl = dual.text = NaN;
        t0 = performance.now();
        await proxier.sync({ full: false, changes });
        const all = performance.now() - t0;
        if (Number.isNaN(dual.nl)) return; // nothing to apply
        runs[kind].nl.push(dual.nl);
        runs[kind].text.push(dual.text);
        runs[kind].e2e.push(all - dual.text);
      };
      for (let r = 0; r < reps; r++) {
        const i = 17 + r * 101;
        await step('ep', view.put(mkSlice(i + 50, r + 1)));
        await step('svc', view.put(mkSvc(i, 81 + r)));
        await step('stale', []);
      }
      const names = { ep: 'one changed endpoint (flush + rewrite service chain, new endpoint chain, element diff)', svc: 'one changed service (new port)', stale: 'next transaction: delete the stale chains' };
      for (const k of ['ep', 'svc', 'stale'] as const) {
        if (runs[k].nl.length === 0) continue;
        const nl = median(runs[k].nl);
        rows.push({ metric: `${names[k]} at ${label}: NftNetlink (median of ${runs[k].nl.length})`, value: round(nl, 2), unit: 'ms', anchor: { name: 'nft -f, same transactions', value: round(median(runs[k].text), 1) }, ...(k !== 'stale' ? { target: '<= 20 ms', pass: nl <= 20 } : {}) });
        rows.push({ metric: `  end to end with NftNetlink (view -> model -> plan -> netlink)`, value: round(median(runs[k].e2e), 2), unit: 'ms' });
      }
      // The kernel's own cost per transaction at this table size (netlink only; tiny
      // transactions in a scratch chain): a commit without jumps, and one that adds a
      // goto (the kernel then re-validates the table's jump graph).
      // A service chain and its table (the services are spread over the proxy's shard tables).
      const listing = execFileSync('ip', ['netns', 'exec', nsNl.name, 'nft', 'list', 'chains'], { encoding: 'utf8', maxBuffer: 1 << 28 });
      let tbl = '';
      let ep = '';
      for (const line of listing.split('\n')) {
        const t = /^table ip (\S+) \{/.exec(line);
        if (t) tbl = t[1]!;
        const c = /^\s*chain (service-\S+) \{/.exec(line);
        if (c) {
          ep = c[1]!;
          break;
        }
      }
      if (!ep) throw new Error('nftnl bench: no service chain in the proxy tables');
      const micro: [string, (i: number) => Transaction][] = [
        ['add chain', (i) => new Tx('ip', tbl).add({ kind: 'chain', name: `bench-${i}` })],
        ['add rule without jump', (i) => new Tx('ip', tbl).add({ kind: 'rule', chain: `bench-${i}`, rule: [{ counter: true }] })],
        ['add rule with goto', (i) => new Tx('ip', tbl).add({ kind: 'rule', chain: `bench-${i}`, rule: [{ goto: ep }] })],
        ['flush + delete chain', (i) => new Tx('ip', tbl).flush({ kind: 'chain', name: `bench-${i}` }).delete({ kind: 'chain', name: `bench-${i}` })],
      ];
      for (const [name, mk] of micro) {
        const ts: number[] = [];
        for (let i = 0; i < reps; i++) {
          const tx = mk(i);
          t0 = performance.now();
          await netlink.run(tx);
          ts.push(performance.now() - t0);
        }
        rows.push({ metric: `kernel floor at ${label}: one-op transaction "${name}", NftNetlink (median of ${reps})`, value: round(median(ts), 2), unit: 'ms' });
      }
      // Both namespaces must hold the same ruleset after all of it (the scratch chains are gone again).
      const list = (ns: string) => execFileSync('ip', ['netns', 'exec', ns, 'nft', 'list', 'ruleset'], { encoding: 'utf8', maxBuffer: 1 << 28 });
      const same = list(nsNl.name) === list(nsTx.name);
      notes.push(`After the run both namespaces list ${same ? 'identical' : 'DIFFERENT'} rulesets.`);
      notes.push(`nft: ${execFileSync('nft', ['--version'], { encoding: 'utf8' }).trim()}; each service has one TCP port and ${ENDPOINTS} endpoints; round-robin. The nft -f figure of each row is the same transaction applied to the other namespace right after.`);
      netlink.close();
      await proxier.close();
      sandbox.remove(nsNl.name);
      sandbox.remove(nsTx.name);
      await flatShape(sandbox, n, reps, rows);
    } finally {
      sandbox.removeAll();
    }
    return { id: 'nftnl', title: this.title, command: 'sudo node dist/bench/run.js nftnl', rows, notes };
  },
};
export default bench;
