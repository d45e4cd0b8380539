// The NetworkPolicy reconciler: Namespaces + Pods + NetworkPolicies (+ this Node's
// pod CIDRs) -> this node's `inet skiff-policy` table.
//
// Every sync recomputes the model (compiler.ts: pure) from the current view and
// applies only the difference against the in-memory picture of what was applied
// (planUpdate): a pod label change becomes a few element adds/deletes in the peer
// sets that name it, a new pod its `known` element plus its dispatch-map entries,
// all in ONE atomic nft transaction. The kernel is never listed to diff.
//
// The first sync (start, restart) and the sync after any failure apply the whole
// table in one transaction that replaces whatever a previous agent left (`add table;
// delete table; add table; ...`): established connections keep flowing (conntrack
// is untouched and `ct state established,related accept` comes first), new ones
// are judged by the fresh rules, and there is no instant without rules.
//
// Invalid policies are skipped (they isolate nothing, exactly as the evaluator
// treats them) and logged once per distinct reason; the others are enforced.
import { readFile, writeFile } from 'node:fs/promises';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { AgentContext, Reconciler, SyncRequest } from '../agent/reconciler.js';
import type { Kind, Node } from '../cluster/types.js';
import { Nft, Transaction, type NftRunner } from '../os/nft.js';
import { appliedFrom, compile, CompileCache, fullTransaction, planUpdate, POLICY_TABLE, type AppliedState, type DenyAction, type PlanStats, type PolicyModel } from './compiler.js';
import { PolicyState } from './evaluator.js';

export interface PolicyReconcilerConfig {
  denyAction?: DenyAction;
  /**
   * Make sure bridged same-node pod traffic reaches the inet forward hook
   * (net.bridge.bridge-nf-call-iptables / ip6tables = 1 in the agent's network
   * namespace). Default true. The sysctls are per network namespace.
   */
  ensureBridgeNetfilter?: boolean;
}

export interface PolicyReconcilerDeps {
  now?: () => number;
  /** Reads/writes a sysctl file (tests inject a fake). */
  sysctl?: { read(path: string): Promise<string | undefined>; write(path: string, value: string): Promise<void> };
}

function metric<T>(registry: Registry, name: string, make: () => T): T {
  return (registry.getSingleMetric(name) as T | undefined) ?? make();
}

const BRIDGE_SYSCTLS = ['/proc/sys/net/bridge/bridge-nf-call-iptables', '/proc/sys/net/bridge/bridge-nf-call-ip6tables'];

const realSysctl = {
  read: async (p: string) => {
    try {
      return (await readFile(p, 'utf8')).trim();
    } catch {
      return undefined;
    }
  },
  write: (p: string, v: string) => writeFile(p, v),
};

function podCIDRsOf(n: Node | undefined): string[] {
  if (!n) return [];
  return n.spec?.podCIDRs?.length ? [...n.spec.podCIDRs] : n.spec?.podCIDR ? [n.spec.podCIDR] : [];
}

export class PolicyReconciler implements Reconciler {
  readonly name = 'policy';
  readonly kinds: readonly Kind[] = ['Namespace', 'Pod', 'NetworkPolicy', 'Node'];

  private applied: AppliedState | undefined;
  private state: PolicyState | undefined;
  /** Chains of unchanged (pod, direction)s are reused from the previous compile. */
  private compileCache = new CompileCache();
  private synced = false;
  private lastError: string | undefined;
  private readonly invalidLogged = new Map<string, string>();
  private readonly now: () => number;
  private readonly sysctl: NonNullable<PolicyReconcilerDeps['sysctl']>;
  private bridgeChecked = false;
  /** The last model applied (tests, `skiff lab matrix` debugging). */
  model: PolicyModel | undefined;
  /** Stats of the last sync (tests and the benchmark). */
  lastStats: PlanStats | { rebuild: true; ops: number } | undefined;
  /** Chains reused from the compile cache (hits) and built (misses) by the last sync. */
  lastCompile = { hits: 0, misses: 0 };

  private readonly mDuration: Histogram<'mode'>;
  private readonly mFailures: Counter;
  private readonly mPolicies: Gauge;
  private readonly mInvalid: Gauge;
  private readonly mIsolated: Gauge<'direction'>;
  private readonly mOps: Counter<'mode'>;
  private readonly mDropped: Gauge<'rule'>;

  constructor(
    private readonly ctx: AgentContext,
    private readonly cfg: PolicyReconcilerConfig,
    private readonly nft: NftRunner,
    deps: PolicyReconcilerDeps = {},
  ) {
    this.now = deps.now ?? (() => performance.now());
    this.sysctl = deps.sysctl ?? realSysctl;
    const r = ctx.registry;
    const registers = [r];
    this.mDuration = metric(r, 'skiff_sync_policy_rules_duration_seconds', () => new Histogram({ name: 'skiff_sync_policy_rules_duration_seconds', help: 'NetworkPolicy rule sync duration (compile + apply), by mode (full or partial).', labelNames: ['mode'], buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers }));
    this.mFailures = metric(r, 'skiff_sync_policy_rules_failures_total', () => new Counter({ name: 'skiff_sync_policy_rules_failures_total', help: 'NetworkPolicy nftables transactions that failed.', registers }));
    this.mPolicies = metric(r, 'skiff_policy_policies_programmed', () => new Gauge({ name: 'skiff_policy_policies_programmed', help: 'Valid NetworkPolicies in the cluster as of the last successful sync.', registers }));
    this.mInvalid = metric(r, 'skiff_policy_policies_invalid', () => new Gauge({ name: 'skiff_policy_policies_invalid', help: 'NetworkPolicies rejected as invalid (logged with their reasons).', registers }));
    this.mIsolated = metric(r, 'skiff_policy_local_pods_isolated', () => new Gauge({ name: 'skiff_policy_local_pods_isolated', help: "This node's pods isolated by some policy, by direction.", labelNames: ['direction'], registers }));
    this.mOps = metric(r, 'skiff_policy_nft_operations_total', () => new Counter({ name: 'skiff_policy_nft_operations_total', help: 'nftables operations applied by the policy reconciler, by mode.', labelNames: ['mode'], registers }));
    const nftRunner = nft;
    this.mDropped = metric(r, 'skiff_policy_dropped_packets', () => {
      // Read at scrape time from the rule counters of the deny rules (one per chain,
      // commented with the direction and the isolating policies).
      return new Gauge({
        name: 'skiff_policy_dropped_packets',
        help: 'Packets dropped by NetworkPolicy on this node, per deny rule (comment: direction and isolating policies; "pod not programmed yet" for the new-pod guard).',
        labelNames: ['rule'],
        registers,
        async collect() {
          if (!(nftRunner instanceof Nft)) return;
          try {
            const l = await nftRunner.list(POLICY_TABLE, 'inet');
            this.reset();
            for (const [rule, packets] of dropCounters(l?.raw ?? [])) this.set({ rule }, packets);
          } catch {
            // A scrape never fails because nft did.
          }
        },
      });
    });
  }

  hasSynced(): boolean {
    return this.synced;
  }

  health(): { ok: boolean; detail?: string } {
    return this.lastError === undefined ? { ok: true } : { ok: false, detail: `last policy sync failed: ${this.lastError}` };
  }

  /** Deletes the policy table (`skiff agent --uninstall`). */
  async cleanup(): Promise<void> {
    const tx = new Transaction('inet', POLICY_TABLE);
    tx.add({ kind: 'table' });
    tx.delete({ kind: 'table' });
    await this.nft.run(tx);
    this.applied = undefined;
  }

  private async ensureBridge(): Promise<void> {
    if (this.bridgeChecked || this.cfg.ensureBridgeNetfilter === false) return;
    for (const p of BRIDGE_SYSCTLS) {
      const v = await this.sysctl.read(p);
      if (v === undefined) {
        this.ctx.log.warn('bridge netfilter is not available (br_netfilter not loaded): same-node pod traffic is not filtered', { sysctl: p });
        continue;
      }
      if (v !== '1') {
        await this.sysctl.write(p, '1');
        this.ctx.log.info('enabled bridge netfilter for same-node pod traffic', { sysctl: p });
      }
    }
    this.bridgeChecked = true;
  }

  private logInvalid(model: PolicyModel): void {
    const seen = new Set<string>();
    for (const bad of model.invalid) {
      seen.add(bad.key);
      const why = bad.reasons.join('; ');
      if (this.invalidLogged.get(bad.key) === why) continue;
      this.invalidLogged.set(bad.key, why);
      this.ctx.log.warn('rejected invalid NetworkPolicy; it is not enforced (other policies are)', { policy: bad.key, reasons: bad.reasons });
    }
    for (const k of [...this.invalidLogged.keys()]) if (!seen.has(k)) this.invalidLogged.delete(k);
  }

  async sync(req: SyncRequest): Promise<void> {
    const t0 = this.now();
    const full = req.full || this.applied === undefined;
    try {
      await this.ensureBridge();
      // Peer memberships carry over from the previous state: only changed pods are re-tested.
      const incremental = this.state !== undefined && !full;
      const state = PolicyState.fromReader(this.ctx.view, incremental ? { prev: this.state, immutable: true } : {});
      if (!incremental) this.compileCache = new CompileCache();
      this.state = state;
      const node = this.ctx.view.get('Node', this.ctx.nodeName) as Node | undefined;
      const model = compile(state, { nodeName: this.ctx.nodeName, podCIDRs: podCIDRsOf(node), ...(this.cfg.denyAction ? { denyAction: this.cfg.denyAction } : {}), cache: this.compileCache });
      this.lastCompile = { hits: this.compileCache.hits, misses: this.compileCache.misses };
      this.logInvalid(model);
      const plan = !full && this.applied ? planUpdate(this.applied, model) : undefined;
      if (plan) {
        if (plan.tx.size > 0) await this.nft.run(plan.tx);
        this.applied = plan.commit();
        this.lastStats = plan.stats;
        this.mOps.inc({ mode: 'partial' }, plan.tx.size);
      } else {
        const tx = fullTransaction(model);
        await this.nft.run(tx);
        this.applied = appliedFrom(model);
        this.lastStats = { rebuild: true, ops: tx.size };
        this.mOps.inc({ mode: 'full' }, tx.size);
      }
      this.model = model;
      this.mPolicies.set(model.policyCount);
      this.mInvalid.set(model.invalid.length);
      let ing = 0;
      let eg = 0;
      for (const p of model.localPods.values()) {
        if (p.ingress) ing++;
        if (p.egress) eg++;
      }
      this.mIsolated.set({ direction: 'ingress' }, ing);
      this.mIsolated.set({ direction: 'egress' }, eg);
      this.lastError = undefined;
      this.synced = true;
    } catch (e) {
      // Whatever the kernel holds now, the next sync replaces it whole.
      this.applied = undefined;
      this.mFailures.inc();
      this.lastError = (e as Error).message;
      this.ctx.log.error('policy sync failed; the next sync rebuilds the table', { error: this.lastError });
      throw e;
    } finally {
      this.mDuration.observe({ mode: full ? 'full' : 'partial' }, (this.now() - t0) / 1000);
    }
  }
}

/** Packet counts of the table's counted drop rules, keyed by their comment. */
export function dropCounters(raw: readonly Record<string, unknown>[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const item of raw) {
    const rule = item.rule as { comment?: string; expr?: Record<string, unknown>[] } | undefined;
    if (!rule?.expr) continue;
    const counter = rule.expr.find((e) => 'counter' in e)?.counter as { packets?: number } | undefined;
    const drops = rule.expr.some((e) => 'drop' in e || 'reject' in e);
    if (!counter || !drops) continue;
    const key = rule.comment ?? 'uncommented';
    out.set(key, (out.get(key) ?? 0) + (counter.packets ?? 0));
  }
  return out;
}
