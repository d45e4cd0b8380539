// The service proxy reconciler: Services + EndpointSlices -> the node's
// `skiff-proxy` nftables tables. Partial syncs recompute only the services named by
// the changes (an EndpointSlice change names its service through the
// kubernetes.io/service-name label) and apply the difference against the in-memory
// picture of what was applied (state.ts); the kernel is never listed to diff. A
// failed transaction makes the next sync of that family a full rebuild. After each
// successful sync the conntrack entries of removed UDP endpoints are deleted.
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { AgentContext, Reconciler, SyncRequest } from '../agent/reconciler.js';
import type { Change, EndpointSlice, Kind, Service } from '../cluster/types.js';
import { Conntrack, type ConntrackFilter } from '../os/conntrack.js';
import { Transaction, type NftRunner } from '../os/nft.js';
import { HealthCheckServers, type HealthTarget } from './healthcheck.js';
import { balancedEndpoints, selectEndpoints, serviceModel, sliceServiceKey, type EndpointInfo, type IPFamily, type Problem, type ServicePortState } from './model.js';
import { PROXY_TABLES, proxyTableName, serviceFragment, shardStaticObjects, staticObjects, type RulesetConfig } from './ruleset.js';
import { TableState, type PlanStats } from './state.js';

export interface ProxierConfig {
  /** The pod network(s): service traffic from outside them is masqueraded. */
  clusterCIDR: string | string[];
  balancing: 'round-robin' | 'random';
  masqueradeAll?: boolean;
  /** Addresses NodePorts answer on; [] = every local address except loopback. */
  nodeIPs: string[];
  /** IP families to program; default: those of clusterCIDR and nodeIPs, else IPv4. */
  families?: IPFamily[];
  /**
   * Address the healthCheckNodePort servers listen on; false disables them. Default
   * "0.0.0.0"; when the agent drives another network namespace (ctx.netnsPath) the
   * sockets are opened inside it, on every address of that namespace.
   */
  healthCheckBind?: string | false;
  /**
   * /healthz turns unhealthy when a seen change has waited longer than this without
   * being applied (kube-proxy's healthz timeout); 0 or absent: never.
   */
  staleAfterMs?: number;
}

export interface ConntrackCleaner {
  delete(f: ConntrackFilter): Promise<number>;
}

export interface ProxierDeps {
  /** Stale-UDP-entry deletion; default: the conntrack CLI in the agent's namespace; null disables. */
  conntrack?: ConntrackCleaner | null;
  /** Milliseconds (metrics, latency). */
  now?: () => number;
}

const TRIGGER_ANNOTATION = 'endpoints.kubernetes.io/last-change-trigger-time';

function metric<T>(registry: Registry, name: string, make: () => T): T {
  return (registry.getSingleMetric(name) as T | undefined) ?? make();
}

function isLoopback(ip: string): boolean {
  return ip.startsWith('127.') || ip === '::1';
}

export class Proxier implements Reconciler {
  readonly name = 'proxy';
  readonly kinds: readonly Kind[] = ['Service', 'EndpointSlice'];

  private readonly cfg: RulesetConfig;
  readonly families: IPFamily[];
  private readonly states = new Map<IPFamily, TableState>();
  /** EndpointSlices by service key, then slice key. */
  private readonly slices = new Map<string, Map<string, EndpointSlice>>();
  private readonly models = new Map<string, ServicePortState[]>();
  /**
   * The exact objects each service's fragments were last computed from. The view
   * replaces an object on every real change, so identical references mean identical
   * inputs: a periodic full resync skips recomputing those services (the computation
   * is pure), which is most of its cost at 10,000 services.
   */
  private readonly inputs = new Map<string, { svc: Service | undefined; slices: EndpointSlice[] }>();
  private readonly problemLog = new Map<string, string>();
  private readonly pending = new Map<string, number>();
  private readonly unsubscribe: () => void;
  private readonly conntrack: ConntrackCleaner | null;
  private readonly health_: HealthCheckServers | null;
  private readonly now: () => number;
  private readonly staleAfterMs: number;
  private synced = false;
  private readonly lastConflicts = new Map<IPFamily, string>();
  private lastError: string | undefined;
  /** Per service: ports and endpoints programmed by family (for the gauges), and their totals. */
  private readonly counts = new Map<string, Map<IPFamily, { svc: number; eps: number }>>();
  private readonly totals = new Map<IPFamily, { svc: number; eps: number }>();
  /** Services with a healthCheckNodePort. */
  private readonly healthKeys = new Set<string>();
  /** Stats of the last plan per family (tests and debugging). */
  lastStats = new Map<IPFamily, PlanStats>();

  private readonly mDuration: Histogram<'mode'>;
  private readonly mProgramming: Histogram;
  private readonly mLast: Gauge;
  private readonly mPending: Gauge;
  private readonly mChanges: Counter<'kind'>;
  private readonly mFailures: Counter;
  private readonly mServices: Gauge<'family'>;
  private readonly mEndpoints: Gauge<'family'>;

  constructor(
    private readonly ctx: AgentContext,
    cfg: ProxierConfig,
    private readonly nft: NftRunner,
    deps: ProxierDeps = {},
  ) {
    const cidrs = typeof cfg.clusterCIDR === 'string' ? (cfg.clusterCIDR ? [cfg.clusterCIDR] : []) : cfg.clusterCIDR;
    const nodeIPs = cfg.nodeIPs.filter((ip) => !isLoopback(ip));
    this.cfg = { clusterCIDRs: cidrs, balancing: cfg.balancing, masqueradeAll: cfg.masqueradeAll ?? false, nodeIPs };
    const fams = new Set<IPFamily>(cfg.families ?? [...cidrs, ...nodeIPs].map((x) => (x.includes(':') ? 6 : 4)));
    this.families = fams.size ? [...fams].sort() : [4];
    for (const f of this.families) this.states.set(f, new TableState(f, staticObjects(f, this.cfg), shardStaticObjects(f, this.cfg)));
    this.now = deps.now ?? (() => Date.now());
    this.conntrack =
      deps.conntrack === undefined ? new Conntrack(ctx.exec, ctx.netnsPath ? { netnsPath: ctx.netnsPath } : {}) : deps.conntrack;
    const bind = cfg.healthCheckBind ?? '0.0.0.0';
    this.health_ = bind === false ? null : new HealthCheckServers({ bind, log: ctx.log, ...(ctx.netnsPath ? { netnsPath: ctx.netnsPath } : {}) });
    this.staleAfterMs = cfg.staleAfterMs ?? 0;

    const registers = [ctx.registry];
    const r = ctx.registry;
    this.mDuration = metric(r, 'skiff_sync_proxy_rules_duration_seconds', () => new Histogram({ name: 'skiff_sync_proxy_rules_duration_seconds', help: 'Proxy rule sync duration, by mode (full or partial).', labelNames: ['mode'], buckets: [0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60], registers }));
    this.mProgramming = metric(r, 'skiff_network_programming_duration_seconds', () => new Histogram({ name: 'skiff_network_programming_duration_seconds', help: 'Time from a Service/EndpointSlice change (or its trigger-time annotation) to its rules being applied.', buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60], registers }));
    this.mLast = metric(r, 'skiff_sync_proxy_rules_last_timestamp_seconds', () => new Gauge({ name: 'skiff_sync_proxy_rules_last_timestamp_seconds', help: 'Unix time of the last successful proxy rule sync.', registers }));
    this.mPending = metric(r, 'skiff_proxy_changes_pending', () => new Gauge({ name: 'skiff_proxy_changes_pending', help: 'Service and EndpointSlice changes seen but not yet applied.', registers }));
    this.mChanges = metric(r, 'skiff_proxy_changes_total', () => new Counter({ name: 'skiff_proxy_changes_total', help: 'Service and EndpointSlice changes seen, by kind.', labelNames: ['kind'], registers }));
    this.mFailures = metric(r, 'skiff_sync_proxy_rules_nftables_failures_total', () => new Counter({ name: 'skiff_sync_proxy_rules_nftables_failures_total', help: 'nftables transactions of the proxy that failed.', registers }));
    this.mServices = metric(r, 'skiff_proxy_services', () => new Gauge({ name: 'skiff_proxy_services', help: 'Service ports programmed, by IP family.', labelNames: ['family'], registers }));
    this.mEndpoints = metric(r, 'skiff_proxy_endpoints', () => new Gauge({ name: 'skiff_proxy_endpoints', help: 'Endpoints programmed (service port x endpoint), by IP family.', labelNames: ['family'], registers }));

    this.unsubscribe = ctx.view.onChange((changes) => this.observe(changes));
  }

  /** Records when changes were first seen, for programming latency and the pending gauge. */
  private observe(changes: readonly Change[]): void {
    const t = this.now();
    for (const c of changes) {
      if (c.kind !== 'Service' && c.kind !== 'EndpointSlice') continue;
      this.mChanges.inc({ kind: c.kind });
      const id = `${c.kind}/${c.key}`;
      if (this.pending.has(id)) continue;
      let at = t;
      const trig = c.obj?.metadata.annotations?.[TRIGGER_ANNOTATION];
      if (trig) {
        const ms = Date.parse(trig);
        if (Number.isFinite(ms) && ms <= t) at = ms;
      }
      this.pending.set(id, at);
    }
    this.mPending.set(this.pending.size);
  }

  hasSynced(): boolean {
    return this.synced;
  }

  health(): { ok: boolean; detail?: string } {
    if (this.lastError !== undefined) return { ok: false, detail: `last proxy sync failed: ${this.lastError}` };
    if (this.staleAfterMs > 0 && this.synced) {
      let oldest = Infinity;
      for (const at of this.pending.values()) oldest = Math.min(oldest, at);
      const age = this.now() - oldest;
      if (age > this.staleAfterMs) return { ok: false, detail: `${this.pending.size} service/endpoint change(s) pending for ${Math.round(age / 1000)}s` };
    }
    return { ok: true };
  }

  /** Stops listening (health servers, view subscription). Leaves the rules in place. */
  async close(): Promise<void> {
    this.unsubscribe();
    await this.health_?.close();
  }

  /** Deletes the proxy's tables (`skiff agent --uninstall`). */
  async cleanup(): Promise<void> {
    const txs = this.families.flatMap((f) =>
      PROXY_TABLES.map((t) => {
        const tx = new Transaction(f === 4 ? 'ip' : 'ip6', proxyTableName(t));
        tx.add({ kind: 'table' });
        tx.delete({ kind: 'table' });
        return tx;
      }),
    );
    await this.nft.run(txs);
    for (const s of this.states.values()) s.invalidate();
    await this.health_?.close();
  }

  private sliceIndexAdd(s: EndpointSlice): void {
    const svc = sliceServiceKey(s);
    if (!svc) return;
    let m = this.slices.get(svc);
    if (!m) this.slices.set(svc, (m = new Map()));
    m.set(`${s.metadata.namespace}/${s.metadata.name}`, s);
  }

  private sliceIndexRemove(s: EndpointSlice): void {
    const svc = sliceServiceKey(s);
    if (!svc) return;
    const m = this.slices.get(svc);
    m?.delete(`${s.metadata.namespace}/${s.metadata.name}`);
    if (m && m.size === 0) this.slices.delete(svc);
  }

  private logProblems(problems: Problem[], dirty: Set<string>): void {
    const seen = new Set<string>();
    for (const p of problems) {
      const id = `${p.kind}/${p.key}`;
      const prevReasons = this.problemLog.get(id);
      seen.add(id);
      if (prevReasons === p.reason) continue;
      this.problemLog.set(id, p.reason);
      this.ctx.log.warn('skipping invalid object', { kind: p.kind, key: p.key, reason: p.reason });
    }
    // Forget problems of objects that were recomputed and are fine now.
    for (const id of [...this.problemLog.keys()]) {
      const key = id.slice(id.indexOf('/') + 1);
      if (!seen.has(id) && (dirty.has(key) || id.startsWith('EndpointSlice/'))) this.problemLog.delete(id);
    }
  }

  async sync(req: SyncRequest): Promise<void> {
    const t0 = this.now();
    const full = req.full || !this.synced;
    const dirty = new Set<string>();
    if (full) {
      this.slices.clear();
      for (const s of this.ctx.view.list('EndpointSlice')) this.sliceIndexAdd(s);
      for (const s of this.ctx.view.list('Service')) dirty.add(`${s.metadata.namespace ?? ''}/${s.metadata.name}`);
      for (const k of this.models.keys()) dirty.add(k);
    } else {
      for (const c of req.changes) {
        if (c.kind === 'Service') dirty.add(c.key);
        else if (c.kind === 'EndpointSlice') {
          for (const s of [c.old, c.obj] as (EndpointSlice | undefined)[]) {
            const svc = s && sliceServiceKey(s);
            if (svc) dirty.add(svc);
          }
          if (c.old) this.sliceIndexRemove(c.old as EndpointSlice);
          if (c.obj) this.sliceIndexAdd(c.obj as EndpointSlice);
        }
      }
    }

    const problems: Problem[] = [];
    const before = new Map<string, ServicePortState[]>();
    for (const key of [...dirty]) {
      const svc = this.ctx.view.get('Service', key) as Service | undefined;
      const slices = [...(this.slices.get(key)?.values() ?? [])];
      const prev = this.inputs.get(key);
      if (prev && prev.svc === svc && prev.slices.length === slices.length && prev.slices.every((s, i) => s === slices[i])) {
        dirty.delete(key);
        continue;
      }
      if (svc) this.inputs.set(key, { svc, slices });
      else this.inputs.delete(key);
      before.set(key, this.models.get(key) ?? []);
      let model = svc ? serviceModel(svc, slices, this.ctx.nodeName, problems) : [];
      const skipped = model.filter((sp) => !this.states.has(sp.info.family));
      if (skipped.length) {
        problems.push({ kind: 'Service', key, reason: `IPv${skipped[0]!.info.family} is not enabled on this node; those ports are not programmed` });
        model = model.filter((sp) => this.states.has(sp.info.family));
      }
      if (model.length) this.models.set(key, model);
      else this.models.delete(key);
      for (const [f, st] of this.states) st.setService(key, model.length ? serviceFragment(f, this.cfg, model, st.slots) : undefined);
    }
    this.logProblems(problems, dirty);

    let failure: unknown;
    for (const [f, st] of this.states) {
      const plan = st.plan();
      this.lastStats.set(f, plan.stats);
      if (plan.size === 0) {
        plan.commit();
        continue;
      }
      try {
        await this.nft.run(plan.txs);
        plan.commit();
        // Log conflicts when they change, not on every sync.
        const conflicts = st.conflicts();
        const sig = JSON.stringify(conflicts);
        if (sig !== this.lastConflicts.get(f)) {
          this.lastConflicts.set(f, sig);
          for (const c of conflicts) this.ctx.log.warn('services claim the same address and port; the first service wins', { family: f, key: c.key, services: c.services });
        }
      } catch (e) {
        st.invalidate();
        this.mFailures.inc();
        failure ??= e;
        this.ctx.log.error('proxy nftables transaction failed; next sync rebuilds the table', { family: f, error: (e as Error).message, ops: plan.size });
      }
    }

    const t1 = this.now();
    this.mDuration.observe({ mode: full ? 'full' : 'partial' }, (t1 - t0) / 1000);
    if (failure !== undefined) {
      this.lastError = (failure as Error).message;
      if (this.health_) this.health_.proxyHealthy = false;
      throw failure;
    }
    this.lastError = undefined;
    this.synced = true;
    this.mLast.set(Date.now() / 1000);
    this.observeProgramming(full ? undefined : req.changes, t1);
    this.updateGauges(dirty);
    await this.cleanupConntrack(before);
    await this.syncHealthServers();
  }

  private observeProgramming(changes: readonly Change[] | undefined, t: number): void {
    const ids = changes ? changes.map((c) => `${c.kind}/${c.key}`) : [...this.pending.keys()];
    for (const id of ids) {
      const at = this.pending.get(id);
      if (at === undefined) continue;
      this.pending.delete(id);
      if (id.startsWith('EndpointSlice/') || id.startsWith('Service/')) this.mProgramming.observe(Math.max(0, t - at) / 1000);
    }
    this.mPending.set(this.pending.size);
  }

  /**
   * Updates the per-service counts of the services recomputed in this sync and the
   * gauges from running totals: O(changed services), not O(all services), so a
   * partial sync stays independent of the table's size.
   */
  private updateGauges(dirty: Iterable<string>): void {
    for (const key of dirty) {
      const old = this.counts.get(key);
      if (old) for (const [f, c] of old) this.totals.set(f, { svc: this.totals.get(f)!.svc - c.svc, eps: this.totals.get(f)!.eps - c.eps });
      const ports = this.models.get(key);
      if (!ports) {
        this.counts.delete(key);
        this.healthKeys.delete(key);
        continue;
      }
      const cur = new Map<IPFamily, { svc: number; eps: number }>();
      for (const sp of ports) {
        const c = cur.get(sp.info.family) ?? { svc: 0, eps: 0 };
        c.svc++;
        c.eps += balancedEndpoints(sp).length;
        cur.set(sp.info.family, c);
      }
      this.counts.set(key, cur);
      for (const [f, c] of cur) {
        const t = this.totals.get(f) ?? { svc: 0, eps: 0 };
        this.totals.set(f, { svc: t.svc + c.svc, eps: t.eps + c.eps });
      }
      if (ports.some((sp) => sp.info.healthCheckNodePort !== undefined)) this.healthKeys.add(key);
      else this.healthKeys.delete(key);
    }
    for (const f of this.families) {
      this.mServices.set({ family: `ipv${f}` }, this.totals.get(f)?.svc ?? 0);
      this.mEndpoints.set({ family: `ipv${f}` }, this.totals.get(f)?.eps ?? 0);
    }
  }

  /** Deletes conntrack entries that would keep UDP flows pinned to endpoints that are gone. */
  private async cleanupConntrack(before: Map<string, ServicePortState[]>): Promise<void> {
    if (!this.conntrack) return;
    const filters: ConntrackFilter[] = [];
    for (const [key, old] of before) {
      const now = this.models.get(key) ?? [];
      filters.push(...staleUdpFilters(old, now));
    }
    for (const f of filters) {
      try {
        await this.conntrack.delete(f);
      } catch (e) {
        this.ctx.log.warn('conntrack cleanup failed', { filter: f, error: (e as Error).message });
      }
    }
  }

  private async syncHealthServers(): Promise<void> {
    if (!this.health_) return;
    this.health_.proxyHealthy = true;
    const want = new Map<number, HealthTarget>();
    for (const key of this.healthKeys) {
      for (const sp of this.models.get(key) ?? []) {
        const hc = sp.info.healthCheckNodePort;
        if (hc === undefined) continue;
        const local = new Set(selectEndpoints(sp).external.map((e) => e.ip));
        const cur = want.get(hc);
        const n = Math.max(cur?.localEndpoints ?? 0, local.size);
        want.set(hc, { namespace: sp.info.namespace, name: sp.info.name, localEndpoints: n });
      }
    }
    await this.health_.sync(want);
  }

  /** Health check server ports currently open (tests). */
  healthCheckPorts(): number[] {
    return this.health_?.ports() ?? [];
  }
}


/**
 * Conntrack deletions for one service's UDP ports after a change (pure): flows to
 * every service address whose reply source is an endpoint no longer programmed, and
 * flows to the cluster IP of a port that had no endpoints before (they were never
 * DNATed and would otherwise stay stuck).
 */
export function staleUdpFilters(old: readonly ServicePortState[], now: readonly ServicePortState[]): ConntrackFilter[] {
  const out: ConntrackFilter[] = [];
  const nowById = new Map(now.map((sp) => [`${sp.info.family}/${sp.info.id}/${sp.info.protocol}`, sp]));
  const oldById = new Map(old.map((sp) => [`${sp.info.family}/${sp.info.id}/${sp.info.protocol}`, sp]));
  for (const sp of old) {
    if (sp.info.protocol !== 'UDP') continue;
    const cur = nowById.get(`${sp.info.family}/${sp.info.id}/${sp.info.protocol}`);
    const keep = new Set(cur ? balancedEndpoints(cur).map((e) => e.ip) : []);
    const gone = new Set(balancedEndpoints(sp).filter((e) => !keep.has(e.ip)).map((e) => e.ip));
    const family = sp.info.family;
    for (const ip of gone) {
      for (const dst of [sp.info.clusterIP, ...sp.info.externalIPs, ...sp.info.loadBalancerIPs]) out.push({ family, proto: 'udp', origDst: dst, origDstPort: sp.info.port, replySrc: ip });
      if (sp.info.nodePort !== undefined) out.push({ family, proto: 'udp', origDstPort: sp.info.nodePort, replySrc: ip });
    }
  }
  for (const sp of now) {
    if (sp.info.protocol !== 'UDP' || balancedEndpoints(sp).length === 0) continue;
    const prev = oldById.get(`${sp.info.family}/${sp.info.id}/${sp.info.protocol}`);
    if (!prev || balancedEndpoints(prev).length === 0) out.push({ family: sp.info.family, proto: 'udp', origDst: sp.info.clusterIP, origDstPort: sp.info.port });
  }
  return out;
}
