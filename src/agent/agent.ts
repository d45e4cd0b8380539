// The node agent: config -> source -> view -> reconcilers, each behind its own
// bounded-frequency runner; the HTTP endpoints report on all of it.
//
// Reconcilers plug in by name: a module calls registerReconciler(name, factory)
// when it is imported. The agent imports the modules in PLUGIN_MODULES that exist,
// so overlay, proxy, DNS and policy join without the agent being edited; only the
// CNI config reconciler is built in.
//
// Shutdown stops the runners and the source and leaves the kernel state (and the
// conflist) in place, so traffic keeps flowing while the agent restarts; a restarted
// agent's first full sync adopts what it finds.
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Change, ClusterReader, ClusterSource } from '../cluster/types.js';
import { realExec, type Executor } from '../os/exec.js';
import { logger, setLogLevel, type Logger } from '../util/log.js';
import { createCniConfReconciler } from './cniconf.js';
import type { AgentConfig } from './config.js';
import { startHttpServer, type AgentHttpServer, type AgentStatus } from './http.js';
import { AgentMetrics } from './metrics.js';
import type { AgentContext, Reconciler } from './reconciler.js';
import { BoundedFrequencyRunner, realClock, type Clock, type RunnerTiming } from './runner.js';

/** Builds a reconciler; undefined when it is disabled by the config. */
export type ReconcilerFactory = (ctx: AgentContext, config: AgentConfig) => Reconciler | undefined;

export interface ReconcilerRegistration {
  name: string;
  factory: ReconcilerFactory;
  /** Runner timing; default: the config's `sync` section. */
  timing?: (config: AgentConfig) => RunnerTiming;
}

const registrations = new Map<string, ReconcilerRegistration>();

/** Registers a reconciler factory (once per name; the agent builds them in registration order). */
export function registerReconciler(name: string, factory: ReconcilerFactory, opts: { timing?: (config: AgentConfig) => RunnerTiming } = {}): void {
  if (registrations.has(name)) throw new Error(`reconciler ${JSON.stringify(name)} is already registered`);
  const r: ReconcilerRegistration = { name, factory };
  if (opts.timing) r.timing = opts.timing;
  registrations.set(name, r);
}

export function registeredReconcilers(): ReconcilerRegistration[] {
  return [...registrations.values()];
}

export function defaultTiming(c: AgentConfig): RunnerTiming {
  return { minInterval: c.sync.minInterval, period: c.sync.period, backoffInitial: c.sync.backoffInitial, backoffMax: c.sync.backoffMax };
}

registerReconciler('cniconf', createCniConfReconciler);

/**
 * Modules that register reconcilers when imported, relative to this file. Each is
 * imported if it exists (so a module plugs in just by being built); a module that
 * exists but fails to load is an error, never silently skipped.
 */
export const PLUGIN_MODULES: readonly string[] = ['../overlay/agent.js', '../proxy/agent.js', '../policy/agent.js', '../dns/agent.js'];

export async function loadPlugins(log?: Logger): Promise<string[]> {
  const loaded: string[] = [];
  for (const spec of PLUGIN_MODULES) {
    const url = new URL(spec, import.meta.url);
    if (!existsSync(fileURLToPath(url))) continue;
    await import(url.href);
    loaded.push(spec);
  }
  log?.debug('plugin modules', { loaded });
  return loaded;
}

// ---- preconditions -----------------------------------------------------------

export interface Precondition {
  ok: boolean;
  check: string;
  message: string;
  fix?: string;
}

/** nft's version from `nft --version` ("nftables v1.0.6 (Lester Gooch #5)"). */
export function parseNftVersion(out: string): [number, number, number] | undefined {
  const m = /v(\d+)\.(\d+)(?:\.(\d+))?/.exec(out);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)] : undefined;
}

/** The oldest nft whose syntax the proxy and policy rulesets use (as kube-proxy's nftables mode). */
export const MIN_NFT: [number, number, number] = [1, 0, 1];

const older = (a: number[], b: number[]) => a[0]! - b[0]! || a[1]! - b[1]! || a[2]! - b[2]!;

/** Checks the host: what the enabled components need. Never changes anything. */
export async function checkPreconditions(
  c: AgentConfig,
  io: { exec: Executor; readFile: (path: string) => string | undefined },
): Promise<Precondition[]> {
  const out: Precondition[] = [];
  if (c.proxy.enabled || c.policy.enabled || c.masquerade) {
    const r = await io.exec('nft', ['--version']).catch(() => undefined);
    const v = r && r.code === 0 ? parseNftVersion(r.stdout) : undefined;
    if (!r || r.code !== 0) {
      out.push({ ok: false, check: 'nft', message: 'the nft command is missing (needed by the service proxy, NetworkPolicy and masquerade)', fix: 'install nftables (apt-get install nftables)' });
    } else if (!v || older(v, MIN_NFT) < 0) {
      out.push({ ok: false, check: 'nft', message: `nft is too old: ${r.stdout.trim()} (need v${MIN_NFT.join('.')} or newer)`, fix: 'upgrade nftables' });
    } else out.push({ ok: true, check: 'nft', message: `nft v${v.join('.')}` });
  }
  const fwd = io.readFile('/proc/sys/net/ipv4/ip_forward')?.trim();
  if (fwd !== '1') {
    out.push({
      ok: false,
      check: 'ip_forward',
      message: `net.ipv4.ip_forward is ${fwd ?? 'unreadable'}: pod traffic will not be routed off the node`,
      fix: 'sysctl -w net.ipv4.ip_forward=1 (and persist it in /etc/sysctl.d)',
    });
  } else out.push({ ok: true, check: 'ip_forward', message: 'net.ipv4.ip_forward = 1' });
  if (c.proxy.enabled) {
    // Replies from a Service backend to a client on the same bridge are bridged, not
    // routed; without br_netfilter they skip conntrack and the DNAT is never undone.
    const brnf = io.readFile('/proc/sys/net/bridge/bridge-nf-call-iptables')?.trim();
    if (brnf === undefined) {
      out.push({ ok: false, check: 'br_netfilter', message: 'the br_netfilter module is not loaded: same-node Service traffic will break', fix: 'modprobe br_netfilter (and list it in /etc/modules-load.d)' });
    } else if (brnf !== '1') {
      out.push({ ok: false, check: 'br_netfilter', message: `net.bridge.bridge-nf-call-iptables is ${brnf}: same-node Service traffic will break`, fix: 'sysctl -w net.bridge.bridge-nf-call-iptables=1' });
    } else out.push({ ok: true, check: 'br_netfilter', message: 'net.bridge.bridge-nf-call-iptables = 1' });
  }
  return out;
}

const readProc = (p: string): string | undefined => {
  try {
    return readFileSync(p, 'utf8');
  } catch {
    return undefined;
  }
};

// ---- the agent -------------------------------------------------------------

export interface AgentDeps {
  source?: ClusterSource;
  view?: ClusterReader;
  clock?: Clock;
  exec?: Executor;
  metrics?: AgentMetrics;
  log?: Logger;
  /** Only these registered reconcilers (default: all). */
  only?: readonly string[];
  /** Import PLUGIN_MODULES before building reconcilers (default true). */
  plugins?: boolean;
  /** Check host preconditions at start (default true). */
  preconditions?: boolean;
}

interface Entry {
  reconciler: Reconciler;
  runner: BoundedFrequencyRunner;
}

export class Agent {
  readonly log: Logger;
  readonly metrics: AgentMetrics;
  private readonly clock: Clock;
  private readonly exec: Executor;
  private source: ClusterSource | undefined;
  private view: ClusterReader | undefined;
  private entries: Entry[] = [];
  private http: AgentHttpServer | undefined;
  private unsubscribe: (() => void) | undefined;
  private stopped = false;
  private synced: Promise<void> | undefined;
  private built = false;

  constructor(
    readonly config: AgentConfig,
    private readonly deps: AgentDeps = {},
  ) {
    setLogLevel(config.logLevel);
    this.log = deps.log ?? logger('agent');
    this.clock = deps.clock ?? realClock;
    this.exec = deps.exec ?? realExec;
    this.metrics = deps.metrics ?? new AgentMetrics();
    if (deps.source) this.source = deps.source;
    if (deps.view) this.view = deps.view;
  }

  /** The HTTP server's bound port (after start), for tests that ask for port 0. */
  get httpPort(): number | undefined {
    return this.http?.port;
  }

  get reconcilers(): readonly Reconciler[] {
    return this.entries.map((e) => e.reconciler);
  }

  private async makeSource(): Promise<ClusterSource> {
    const c = this.config;
    // Loaded on demand: `--uninstall` and tests with an injected source never pay for the Kubernetes client.
    const { createSource } = await import('../cluster/index.js');
    const opts: { manifests?: string; kubeconfig?: string; inCluster?: boolean; log?: Logger; nodeName?: string } = { log: this.log.child('source'), nodeName: c.nodeName };
    if (c.manifests) opts.manifests = c.manifests;
    if (c.kubeconfig) opts.kubeconfig = c.kubeconfig;
    if (c.inCluster) opts.inCluster = true;
    return createSource(opts);
  }

  private async makeView(source: ClusterSource): Promise<ClusterReader> {
    const { ClusterView } = await import('../cluster/index.js');
    return new ClusterView(source);
  }

  private context(view: ClusterReader): AgentContext {
    const ctx: AgentContext = {
      nodeName: this.config.nodeName,
      view,
      registry: this.metrics.registry,
      log: this.log,
      exec: this.exec,
    };
    if (this.config.netns) ctx.netnsPath = this.config.netns;
    const src = this.source;
    if (src?.annotateNode) ctx.annotateNode = (node, annotations) => src.annotateNode!(node, annotations);
    return ctx;
  }

  private async buildReconcilers(view: ClusterReader): Promise<void> {
    if (this.deps.plugins ?? true) await loadPlugins(this.log);
    const ctx = this.context(view);
    for (const reg of registeredReconcilers()) {
      if (this.deps.only && !this.deps.only.includes(reg.name)) continue;
      const r = reg.factory({ ...ctx, log: this.log.child(reg.name) }, this.config);
      if (!r) {
        this.log.info('reconciler disabled', { reconciler: reg.name });
        continue;
      }
      const timing = (reg.timing ?? defaultTiming)(this.config);
      const runner = new BoundedFrequencyRunner(r, timing, { clock: this.clock, hooks: this.metrics.hooks(), log: this.log.child(reg.name) });
      this.metrics.addReconciler(r.name);
      this.entries.push({ reconciler: r, runner });
    }
  }

  /** Routes applied changes to the reconcilers that watch their kinds. */
  private route(changes: readonly Change[]): void {
    for (const { reconciler, runner } of this.entries) {
      const mine = changes.filter((c) => reconciler.kinds.includes(c.kind));
      if (mine.length) runner.enqueue(mine);
    }
  }

  /**
   * Starts the HTTP server and the source; the runners start once the source has
   * synced (see whenSynced). Resolves before that: the agent serves /healthz and
   * /readyz (503) while it waits.
   */
  async start(): Promise<void> {
    const c = this.config;
    this.log.info('starting', {
      node: c.nodeName,
      source: c.manifests ? `manifests:${c.manifests}` : c.kubeconfig ? `kubeconfig:${c.kubeconfig}` : 'in-cluster',
      pid: process.pid,
    });
    if (this.deps.preconditions ?? true) {
      for (const p of await checkPreconditions(c, { exec: this.exec, readFile: readProc })) {
        if (p.ok) this.log.debug('precondition ok', { check: p.check, detail: p.message });
        else this.log.warn(`precondition failed: ${p.message}`, { check: p.check, ...(p.fix ? { fix: p.fix } : {}) });
      }
    }
    // Serve first: probes get answers (readyz 503) while the Kubernetes client and plugin modules load.
    if (c.metricsAddress) {
      this.http = await startHttpServer({
        address: c.metricsAddress,
        registry: this.metrics.registry,
        status: () => this.status(),
        staleFactor: c.healthzStaleFactor,
        log: this.log.child('http'),
      });
    }
    const source = (this.source ??= await this.makeSource());
    const view = (this.view ??= await this.makeView(source));
    await this.buildReconcilers(view);
    this.metrics.setSourceSynced(source.name, false);
    this.unsubscribe = view.onChange((changes) => this.route(changes));
    this.built = true;
    if (this.stopped) return;
    await source.start();
    this.synced = source.whenSynced().then(() => {
      if (this.stopped) return;
      this.metrics.setSourceSynced(source.name, true);
      this.log.info('source synced; starting reconcilers', { source: source.name, reconcilers: this.entries.map((e) => e.reconciler.name) });
      for (const e of this.entries) e.runner.start();
    });
  }

  /** Resolves once the source has synced and the runners have started. */
  async whenSynced(): Promise<void> {
    await this.synced;
  }

  status(): AgentStatus {
    // Until the source and reconcilers exist, report a placeholder so /readyz cannot pass on an empty list.
    const sources =
      this.source && this.built
        ? [{ name: this.source.name, synced: this.source.hasSynced() && (this.view?.hasSynced() ?? true) }]
        : [{ name: 'starting', synced: false }];
    return {
      now: this.clock.now(),
      sources,
      reconcilers: this.entries.map(({ reconciler, runner }) => {
        const s = runner.status();
        const h = reconciler.health?.();
        return h ? { ...s, health: h } : s;
      }),
    };
  }

  /** Graceful stop: no new syncs, wait for the ones in flight, close the source and the server. Kernel state stays. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.log.info('stopping (kernel state is left in place)');
    this.unsubscribe?.();
    await Promise.all(this.entries.map((e) => e.runner.stop()));
    for (const { reconciler } of this.entries) await reconciler.stop?.().catch((e: unknown) => this.log.warn('reconciler stop failed', { reconciler: reconciler.name, error: String(e) }));
    await this.source?.stop().catch((e: unknown) => this.log.warn('source stop failed', { error: String(e) }));
    await this.http?.close();
    this.log.info('stopped');
  }

  /**
   * `skiff agent --uninstall`: removes what every reconciler owns. Needs no source:
   * the reconcilers are built over an empty view.
   */
  async uninstall(): Promise<{ failed: string[] }> {
    if (!this.view) this.view = emptyView();
    if (this.entries.length === 0) await this.buildReconcilers(this.view);
    const failed: string[] = [];
    // Reverse order: later reconcilers may depend on earlier ones (the CNI config goes last).
    for (const { reconciler } of [...this.entries].reverse()) {
      if (!reconciler.cleanup) continue;
      try {
        await reconciler.cleanup();
        this.log.info('cleaned up', { reconciler: reconciler.name });
      } catch (e) {
        failed.push(reconciler.name);
        this.log.error('cleanup failed', { reconciler: reconciler.name, error: e instanceof Error ? e.message : String(e) });
      }
    }
    return { failed };
  }
}

/** A view with nothing in it, already synced (for --uninstall). */
export function emptyView(): ClusterReader {
  return {
    list: () => [],
    get: () => undefined,
    hasSynced: () => true,
    onChange: () => () => {},
  };
}
