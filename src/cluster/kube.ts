// The Kubernetes API source: list + watch of every kind skiff reads, through
// @kubernetes/client-node (kubeconfig or in-cluster config; HTTP, TLS and auth all
// stay in the client library).
//
// Why not client-node's ListWatch/makeInformer: in 2.0 it gives up for good on any
// watch or list error other than 410 (the caller must notice and restart it), does not
// ask for bookmarks, has no synced signal, and hands typed-model list items (Date
// objects, no kind) next to raw watch objects, which would make every relist look
// like an update. So this file is a small reflector in client-go's shape over
// client-node's Watch and its HTTP layer: list (paginated) -> replace the kind in the
// change tracker (adds, updates and the deletes of objects gone while we were not
// watching) -> watch from the list's resourceVersion with bookmarks -> on 410 Gone
// (HTTP status or ERROR event) relist; on any other failure retry with exponential
// backoff, capped.
import {
  CoreV1Api,
  HttpMethod,
  IsomorphicFetchHttpLibrary,
  KubeConfig,
  PatchStrategy,
  RequestContext,
  setHeaderOptions,
  Watch,
} from '@kubernetes/client-node';
import { logger, type Logger } from '../util/log.js';
import { ChangeTracker } from './tracker.js';
import { keyOf, type Change, type ClusterObject, type ClusterSource, type Kind } from './types.js';
import { API_VERSION, normalize, shareStrings, trim } from './validate.js';

export interface Resource {
  kind: Kind;
  apiVersion: string;
  /** Collection path across all namespaces. */
  path: string;
}

export const RESOURCES: readonly Resource[] = [
  { kind: 'Namespace', apiVersion: API_VERSION.Namespace, path: '/api/v1/namespaces' },
  { kind: 'Node', apiVersion: API_VERSION.Node, path: '/api/v1/nodes' },
  { kind: 'Pod', apiVersion: API_VERSION.Pod, path: '/api/v1/pods' },
  { kind: 'Service', apiVersion: API_VERSION.Service, path: '/api/v1/services' },
  { kind: 'EndpointSlice', apiVersion: API_VERSION.EndpointSlice, path: '/apis/discovery.k8s.io/v1/endpointslices' },
  { kind: 'NetworkPolicy', apiVersion: API_VERSION.NetworkPolicy, path: '/apis/networking.k8s.io/v1/networkpolicies' },
];

export interface BackoffOptions {
  /** First retry delay (default 500 ms); doubles per consecutive failure. */
  initialMs?: number;
  /** Cap (default 30 s). */
  maxMs?: number;
  /** Random extra fraction of the delay, so the agents of a whole cluster do not reconnect in step (default 0.1). */
  jitter?: number;
}

export interface KubeSourceOptions {
  /** Path of a kubeconfig file (--kubeconfig). */
  kubeconfig?: string;
  /** Use the pod's service account (in-cluster config). */
  inCluster?: boolean;
  /** An already loaded config (tests, embedding); wins over the two above. */
  kubeConfig?: KubeConfig;
  log?: Logger;
  /** This node's name (logged; the agent patches its own Node). */
  nodeName?: string;
  backoff?: BackoffOptions;
  /** Sleep used between retries (tests inject one); must resolve early when the signal aborts. */
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
  /** Page size of lists (default 500). */
  pageSize?: number;
  /** Server-side watch timeout range in seconds (default 300-600, as client-go). */
  watchTimeoutSeconds?: [number, number];
  /** Close a watch that carried no data for this long (half-open connections; default 120 s). */
  watchIdleTimeoutMs?: number;
  /** Timeout of one list page request (default 60 s). */
  listTimeoutMs?: number;
  /** A watch that ends sooner than this with no events counts as a failure (default 1000 ms). */
  minWatchMs?: number;
}

/** An API error carrying the HTTP status (or the Status object's code). */
export class KubeApiError extends Error {
  constructor(
    message: string,
    readonly statusCode: number,
    readonly reason?: string,
  ) {
    super(message);
    this.name = 'KubeApiError';
  }
}

interface Status {
  kind?: string;
  code?: number;
  reason?: string;
  message?: string;
}

const isGone = (err: unknown): boolean => {
  const e = err as { statusCode?: number; code?: number; reason?: string } | null | undefined;
  return !!e && (e.statusCode === 410 || e.code === 410 || e.reason === 'Expired' || e.reason === 'Gone');
};

const defaultSleep = (ms: number, signal: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });

/** Loads the client config from the flags; errors name the flag. */
export function loadKubeConfig(opts: { kubeconfig?: string; inCluster?: boolean }): KubeConfig {
  const kc = new KubeConfig();
  if (opts.kubeconfig) {
    try {
      kc.loadFromFile(opts.kubeconfig);
    } catch (err) {
      throw new Error(`--kubeconfig ${opts.kubeconfig}: ${(err as Error).message}`);
    }
    if (!kc.getCurrentCluster()) throw new Error(`--kubeconfig ${opts.kubeconfig}: no current cluster (is current-context set?)`);
  } else if (opts.inCluster) {
    if (!process.env.KUBERNETES_SERVICE_HOST || !process.env.KUBERNETES_SERVICE_PORT) {
      throw new Error('in-cluster config: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set (not running in a pod? use --kubeconfig)');
    }
    kc.loadFromCluster();
  } else {
    throw new Error('kubernetes source: give --kubeconfig FILE or run in-cluster');
  }
  return kc;
}

export class KubeSource implements ClusterSource {
  readonly name = 'kubernetes';
  private readonly kc: KubeConfig;
  private readonly log: Logger;
  private readonly opts: KubeSourceOptions;
  private readonly tracker = new ChangeTracker();
  private readonly listeners: ((changes: Change[]) => void)[] = [];
  private readonly reflectors: Reflector[];
  private readonly abort = new AbortController();
  private loops: Promise<void>[] = [];
  private pending: Change[] = [];
  private flushQueued = false;
  private synced = false;
  private resolveSynced!: () => void;
  private readonly syncedPromise = new Promise<void>((r) => (this.resolveSynced = r));
  private started = false;

  constructor(opts: KubeSourceOptions) {
    this.opts = opts;
    this.kc = opts.kubeConfig ?? loadKubeConfig(opts);
    this.log = opts.log ?? logger('cluster.kube');
    this.reflectors = RESOURCES.map((r) => new Reflector(this, r));
  }

  onChange(listener: (changes: Change[]) => void): void {
    this.listeners.push(listener);
  }

  hasSynced(): boolean {
    return this.synced;
  }

  whenSynced(): Promise<void> {
    return this.syncedPromise;
  }

  /** Starts every reflector; returns at once (wait with whenSynced()). */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    this.log.info('watching the Kubernetes API', { server: this.kc.getCurrentCluster()?.server, node: this.opts.nodeName });
    this.loops = this.reflectors.map((r) => r.run());
  }

  async stop(): Promise<void> {
    this.abort.abort();
    for (const r of this.reflectors) r.cancel();
    await Promise.all(this.loops);
    this.flush();
  }

  /** Merge-patches the Node's metadata.annotations (RBAC: patch on nodes). */
  async annotateNode(name: string, annotations: Record<string, string>): Promise<void> {
    const api = this.kc.makeApiClient(CoreV1Api);
    try {
      await api.patchNode(
        { name, body: { metadata: { annotations } }, fieldManager: 'skiff' },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      );
    } catch (err) {
      const e = err as { code?: number; body?: unknown; message?: string };
      const detail = typeof e.body === 'string' ? safeStatus(e.body)?.message : undefined;
      throw new KubeApiError(`annotateNode ${name}: ${detail ?? e.message ?? String(err)}`, e.code ?? 0);
    }
  }

  // --- used by the reflectors ---------------------------------------------------

  /** @internal */ get config(): KubeConfig {
    return this.kc;
  }
  /** @internal */ get options(): KubeSourceOptions {
    return this.opts;
  }
  /** @internal */ get logger(): Logger {
    return this.log;
  }
  /** @internal */ get signal(): AbortSignal {
    return this.abort.signal;
  }
  /** @internal */ get changeTracker(): ChangeTracker {
    return this.tracker;
  }

  /** Queues changes; everything queued in one tick goes to the listeners as one batch. @internal */
  enqueue(changes: readonly (Change | undefined)[]): void {
    for (const c of changes) if (c) this.pending.push(c);
    if (this.pending.length === 0 || this.flushQueued) return;
    this.flushQueued = true;
    queueMicrotask(() => this.flush());
  }

  private flush(): void {
    this.flushQueued = false;
    if (this.pending.length === 0) return;
    const batch = this.pending;
    this.pending = [];
    for (const l of this.listeners) {
      try {
        l(batch);
      } catch (err) {
        this.log.error('change listener threw', { error: err instanceof Error ? (err.stack ?? err.message) : String(err) });
      }
    }
  }

  /** @internal */ kindSynced(): void {
    if (this.synced || !this.reflectors.every((r) => r.synced)) return;
    // Deliver the initial lists before the synced signal.
    this.flush();
    this.synced = true;
    this.log.info('initial lists delivered', Object.fromEntries(this.reflectors.map((r) => [r.res.kind, this.tracker.size(r.res.kind)])));
    this.resolveSynced();
  }
}

function safeStatus(text: string): Status | undefined {
  try {
    const s = JSON.parse(text) as Status;
    return typeof s === 'object' && s !== null ? s : undefined;
  } catch {
    return undefined;
  }
}

interface WatchOutcome {
  expired: boolean;
  error?: unknown;
  events: number;
}

/** List + watch of one resource, until the source stops. */
class Reflector {
  synced = false;
  private rv = '';
  private failures = 0;
  private controller?: AbortController;
  private readonly http = new IsomorphicFetchHttpLibrary();
  private readonly watch: Watch;
  private readonly log: Logger;

  constructor(
    private readonly src: KubeSource,
    readonly res: Resource,
  ) {
    this.watch = new Watch(src.config);
    // client-node's idle timeout (30 s) is a private field; quiet kinds would reconnect twice a minute.
    (this.watch as unknown as { requestTimeoutMs: number }).requestTimeoutMs = src.options.watchIdleTimeoutMs ?? 120_000;
    this.log = src.logger.child(res.kind);
  }

  cancel(): void {
    this.controller?.abort();
  }

  private get stopped(): boolean {
    return this.src.signal.aborted;
  }

  private backoffMs(): number {
    const b = this.src.options.backoff ?? {};
    const initial = b.initialMs ?? 500;
    const max = b.maxMs ?? 30_000;
    const base = Math.min(max, initial * 2 ** Math.min(this.failures, 30));
    return Math.round(base * (1 + Math.random() * (b.jitter ?? 0.1)));
  }

  private async pause(): Promise<void> {
    const ms = this.backoffMs();
    this.failures++;
    this.log.debug('retrying after backoff', { ms, failures: this.failures });
    await (this.src.options.sleep ?? defaultSleep)(ms, this.src.signal);
  }

  async run(): Promise<void> {
    while (!this.stopped) {
      if (!this.rv) {
        try {
          await this.relist();
        } catch (err) {
          if (this.stopped) break;
          this.log.warn('list failed', { resource: this.res.path, error: describeError(err), failures: this.failures + 1 });
          await this.pause();
          continue;
        }
      }
      if (this.stopped) break;
      const started = Date.now();
      const out = await this.watchOnce();
      if (this.stopped) break;
      const lasted = Date.now() - started;
      // A watch that carried events, or that the server simply ended after a while
      // (timeoutSeconds), went fine. One that died at once is a failure to back off from.
      const productive = out.events > 0 || (out.error === undefined && lasted >= (this.src.options.minWatchMs ?? 1000));
      if (productive) this.failures = 0;
      if (out.expired) {
        this.log.info('watch expired (410 Gone); relisting', { resource: this.res.path, resourceVersion: this.rv });
        this.rv = '';
        if (productive || this.failures === 0) {
          this.failures++; // relist at once the first time; back off if it keeps expiring
          continue;
        }
        await this.pause();
      } else if (out.error !== undefined) {
        this.log.warn('watch failed', { resource: this.res.path, error: describeError(out.error), failures: this.failures + 1 });
        await this.pause();
      } else if (!productive) {
        await this.pause();
      }
    }
  }

  /** Lists every page, then makes the tracker's kind equal to the list (deletes included). */
  private async relist(): Promise<void> {
    const items: ClusterObject[] = [];
    let cont: string | undefined;
    let rv = '';
    do {
      const q = new URLSearchParams({ limit: String(this.src.options.pageSize ?? 500) });
      if (cont) q.set('continue', cont);
      const page = (await this.get(`${this.res.path}?${q}`)) as {
        metadata?: { resourceVersion?: string; continue?: string };
        items?: unknown[] | null;
      };
      if (!rv) rv = page.metadata?.resourceVersion ?? '';
      for (const it of page.items ?? []) items.push(this.toObject(it));
      cont = page.metadata?.continue || undefined;
    } while (cont);
    if (!rv) throw new Error(`list ${this.res.path}: the response has no metadata.resourceVersion`);
    const changes = this.src.changeTracker.replaceAll(this.res.kind, items);
    this.log.debug('listed', { items: items.length, changes: changes.length, resourceVersion: rv });
    this.rv = rv;
    this.src.enqueue(changes);
    if (!this.synced) {
      this.synced = true;
      this.src.kindSynced();
    }
  }

  /** One GET through client-node's HTTP stack (auth, TLS, proxy from the kubeconfig), raw JSON back. */
  private async get(pathAndQuery: string): Promise<unknown> {
    const cluster = this.src.config.getCurrentCluster();
    if (!cluster) throw new Error('kubeconfig: no current cluster');
    const ctx = new RequestContext(cluster.server.replace(/\/+$/, '') + pathAndQuery, HttpMethod.GET);
    ctx.setHeaderParam('Accept', 'application/json');
    await this.src.config.applySecurityAuthentication(ctx);
    const ctl = new AbortController();
    this.controller = ctl;
    const timer = setTimeout(() => ctl.abort(new Error('list timed out')), this.src.options.listTimeoutMs ?? 60_000);
    ctx.setSignal(ctl.signal);
    try {
      const resp = await this.http.send(ctx).toPromise();
      const text = await resp.body.text();
      if (resp.httpStatusCode !== 200) {
        const st = safeStatus(text);
        throw new KubeApiError(
          `GET ${pathAndQuery}: ${resp.httpStatusCode} ${st?.message ?? text.slice(0, 200)}`,
          st?.code ?? resp.httpStatusCode,
          st?.reason,
        );
      }
      return JSON.parse(text);
    } finally {
      clearTimeout(timer);
      if (this.controller === ctl) this.controller = undefined;
    }
  }

  /** Watches from this.rv until the stream ends; records events into the tracker. */
  private watchOnce(): Promise<WatchOutcome> {
    const out: WatchOutcome = { expired: false, events: 0 };
    const [lo, hi] = this.src.options.watchTimeoutSeconds ?? [300, 600];
    const query = {
      resourceVersion: this.rv,
      allowWatchBookmarks: true,
      timeoutSeconds: Math.round(lo + Math.random() * (hi - lo)),
    };
    return new Promise<WatchOutcome>((resolve) => {
      let ended = false;
      let ctl: AbortController | undefined;
      // stop() must not wait for a connect that hangs (client-node's timer for it is the idle timeout).
      const onStop = () => {
        ctl?.abort();
        done(null);
      };
      const done = (err: unknown) => {
        if (ended) return;
        ended = true;
        this.src.signal.removeEventListener('abort', onStop);
        if (this.controller === ctl) this.controller = undefined;
        if (err && isGone(err)) out.expired = true;
        else if (err && !this.stopped && out.error === undefined && (err as Error).name !== 'TimeoutError' && (err as Error).name !== 'AbortError') {
          out.error = err;
        }
        resolve(out);
      };
      const onEvent = (type: string, obj: unknown) => {
        if (ended) return;
        try {
          this.onEvent(type, obj, out);
        } catch (err) {
          // client-node swallows callback exceptions; make them visible and restart cleanly.
          out.error = err;
          this.log.error('watch event handling failed', { type, error: describeError(err) });
        }
        if ((out.expired || out.error !== undefined) && ctl) ctl.abort();
      };
      this.src.signal.addEventListener('abort', onStop, { once: true });
      this.watch.watch(this.res.path, query, onEvent, done).then(
        (c) => {
          ctl = c;
          if (ended) {
            c.abort(); // ended by stop() before the stream was even open
            return;
          }
          this.controller = c;
          if (this.stopped || out.expired || out.error !== undefined) c.abort();
        },
        (err) => done(err),
      );
    });
  }

  private onEvent(type: string, raw: unknown, out: WatchOutcome): void {
    const meta = (raw as { metadata?: { resourceVersion?: string } } | null)?.metadata;
    switch (type) {
      case 'ADDED':
      case 'MODIFIED': {
        out.events++;
        const o = this.toObject(raw);
        this.src.enqueue([this.src.changeTracker.upsert(o)]);
        break;
      }
      case 'DELETED': {
        out.events++;
        const o = this.toObject(raw);
        this.src.enqueue([this.src.changeTracker.remove(this.res.kind, keyOf(o))]);
        break;
      }
      case 'BOOKMARK':
        out.events++;
        break;
      case 'ERROR': {
        const st = (raw ?? {}) as Status;
        if (isGone(st)) out.expired = true;
        else out.error = new KubeApiError(`watch ${this.res.path}: ${st.code ?? '?'} ${st.reason ?? ''} ${st.message ?? ''}`.trim(), st.code ?? 0, st.reason);
        return; // an ERROR's object is a Status: it carries no resourceVersion of ours
      }
      default:
        this.log.warn('unknown watch event type ignored', { type });
        return;
    }
    if (meta?.resourceVersion) this.rv = meta.resourceVersion;
  }

  /** List items carry no kind/apiVersion on the wire; watch objects do. Make both whole. */
  private toObject(raw: unknown): ClusterObject {
    if (typeof raw !== 'object' || raw === null) throw new Error(`${this.res.kind}: expected an object, got ${JSON.stringify(raw)}`);
    const r = raw as Record<string, unknown>;
    const meta = r.metadata as { name?: unknown } | undefined;
    if (!meta || typeof meta.name !== 'string') throw new Error(`${this.res.kind}: object without metadata.name`);
    // Trimmed to the fields skiff reads: a whole API object is several times larger.
    return shareStrings(trim(normalize({ ...r, kind: this.res.kind, apiVersion: (r.apiVersion as string) ?? this.res.apiVersion } as unknown as ClusterObject)));
  }
}

function describeError(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { statusCode?: number; code?: unknown }).statusCode ?? (err as { code?: unknown }).code;
    const cause = (err as { cause?: unknown }).cause;
    return `${err.message}${code !== undefined ? ` (${code})` : ''}${cause instanceof Error ? `: ${cause.message}` : ''}`;
  }
  return String(err);
}
