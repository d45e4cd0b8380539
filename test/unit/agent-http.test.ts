import t from 'tap';
import { request } from 'node:http';
import { Agent, checkPreconditions, parseNftVersion, registerReconciler, registeredReconcilers } from '../../src/agent/agent.js';
import { defaultConfig, type AgentConfig } from '../../src/agent/config.js';
import { healthOf, readinessOf, startHttpServer, type AgentStatus } from '../../src/agent/http.js';
import { AgentMetrics } from '../../src/agent/metrics.js';
import type { Reconciler, SyncRequest } from '../../src/agent/reconciler.js';
import type { Clock } from '../../src/agent/runner.js';
import type { Change, ClusterReader, ClusterSource, Kind, KindMap, Node } from '../../src/cluster/types.js';
import { setLogSink } from '../../src/util/log.js';

setLogSink(() => {});

function get(port: number, path: string): Promise<{ code: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ code: res.statusCode ?? 0, type: String(res.headers['content-type']), body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Real time plus an offset the test can jump (to make syncs look stale). */
class ManualClock implements Clock {
  t = 0;
  now(): number {
    return Date.now() + this.t;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    return setTimeout(fn, ms);
  }
  clearTimeout(h: unknown): void {
    clearTimeout(h as NodeJS.Timeout);
  }
}

/** A source + view in one, driven by the test. */
class FakeSource implements ClusterSource {
  readonly name = 'fake';
  synced = false;
  started = false;
  stopped = false;
  nodes = new Map<string, Node>();
  private resolveSynced!: () => void;
  private readonly syncedP = new Promise<void>((r) => (this.resolveSynced = r));
  private listeners: ((c: Change[]) => void)[] = [];
  async start(): Promise<void> {
    this.started = true;
  }
  async stop(): Promise<void> {
    this.stopped = true;
  }
  hasSynced(): boolean {
    return this.synced;
  }
  whenSynced(): Promise<void> {
    return this.syncedP;
  }
  markSynced(): void {
    this.synced = true;
    this.resolveSynced();
  }
  onChange(l: (c: Change[]) => void): () => void {
    this.listeners.push(l);
    return () => (this.listeners = this.listeners.filter((x) => x !== l));
  }
  /** The same object seen as the view (the agent needs both). */
  get view(): ClusterReader {
    return { list: (k) => this.list(k), get: (k, key) => this.get(k, key), hasSynced: () => this.synced, onChange: (l) => this.onChange((c) => l(c)) };
  }
  emit(c: Change[]): void {
    for (const l of this.listeners) l(c);
  }
  list<K extends Kind>(kind: K): KindMap[K][] {
    return (kind === 'Node' ? [...this.nodes.values()] : []) as KindMap[K][];
  }
  get<K extends Kind>(kind: K, key: string): KindMap[K] | undefined {
    return (kind === 'Node' ? this.nodes.get(key) : undefined) as KindMap[K] | undefined;
  }
}

/** A reconciler the test controls: fails on demand, counts syncs, reports health. */
class Probe implements Reconciler {
  kinds: readonly Kind[] = ['Service'];
  syncs: SyncRequest[] = [];
  fail = false;
  healthy = true;
  cleaned = false;
  private ok = false;
  constructor(readonly name: string) {}
  hasSynced(): boolean {
    return this.ok;
  }
  async sync(req: SyncRequest): Promise<void> {
    this.syncs.push(req);
    if (this.fail) throw new Error(`${this.name} is broken`);
    this.ok = true;
  }
  async cleanup(): Promise<void> {
    this.cleaned = true;
  }
  health(): { ok: boolean; detail?: string } {
    return this.healthy ? { ok: true } : { ok: false, detail: 'kernel says no' };
  }
}

const probes = new Map<string, Probe>();
registerReconciler('probe-a', () => {
  const p = new Probe('probe-a');
  probes.set(p.name, p);
  return p;
});
registerReconciler('probe-off', () => undefined);

function config(over: Partial<AgentConfig> = {}): AgentConfig {
  return { ...defaultConfig(), nodeName: 'n1', manifests: '/unused', metricsAddress: '127.0.0.1:0', sync: { minInterval: 0, period: 10_000, backoffInitial: 50, backoffMax: 100 }, ...over };
}

t.test('health and readiness verdicts are pure functions of the status', async (t) => {
  const base = { name: 'r', started: true, startedAt: 0, consecutiveFailures: 0, syncs: 1, hasSynced: true, periodMs: 1000 };
  const s = (over: object, now = 1500): AgentStatus => ({ now, sources: [{ name: 'm', synced: true }], reconcilers: [{ ...base, lastSuccess: 1000, ...over }] });
  t.ok(healthOf(s({}), 2).ok);
  t.ok(healthOf(s({}, 3000), 2).ok, 'exactly 2x the period is still fine');
  t.match(healthOf(s({ consecutiveFailures: 4, lastError: 'nope' }, 3001), 2).problems, [/r: last successful sync 2\.0s ago \(limit 2\.0s\); 4 consecutive failures, last: nope/]);
  t.match(healthOf(s({ lastSuccess: undefined, hasSynced: false }, 2001), 2).problems, [/no successful sync since start/]);
  t.ok(healthOf(s({ started: false, startedAt: undefined, lastSuccess: undefined }, 99999), 2).ok, 'waiting for the source is not unhealthy');
  t.match(healthOf(s({ health: { ok: false, detail: 'x' } }), 2).problems, ['r: unhealthy: x']);
  t.ok(readinessOf(s({})).ok);
  t.same(readinessOf({ now: 0, sources: [{ name: 'm', synced: false }], reconcilers: [{ ...base, hasSynced: false }] }).problems, ['source m: not synced', 'reconciler r: not applied yet']);
});

t.test('the agent over HTTP: readyz transitions, healthz goes stale, metrics carry skiff_ series', async (t) => {
  const clock = new ManualClock();
  const src = new FakeSource();
  const agent = new Agent(config(), { source: src, view: src.view, clock, plugins: false, preconditions: false, only: ['probe-a', 'probe-off'] });
  t.teardown(() => agent.stop());
  await agent.start();
  t.ok(src.started);
  const port = agent.httpPort!;
  t.ok(port > 0);
  t.same(agent.reconcilers.map((r) => r.name), ['probe-a'], 'a factory returning undefined disables its reconciler');

  let r = await get(port, '/readyz');
  t.equal(r.code, 503);
  t.equal(r.type, 'application/json');
  t.same(JSON.parse(r.body).problems, ['source fake: not synced', 'reconciler probe-a: not applied yet']);
  t.equal((await get(port, '/healthz')).code, 200, 'healthy while waiting for the source');
  t.match((await get(port, '/metrics')).body, /skiff_source_synced\{source="fake"\} 0/);

  const probe = probes.get('probe-a')!;
  probe.fail = true;
  src.markSynced();
  await agent.whenSynced();
  await new Promise((res) => setTimeout(res, 20));
  t.equal(probe.syncs[0]?.full, true, 'first sync is full, after the source synced');
  r = await get(port, '/readyz');
  t.equal(r.code, 503);
  t.match(JSON.parse(r.body).problems, [/reconciler probe-a: not applied yet \(last error: probe-a is broken\)/]);

  probe.fail = false;
  await new Promise((res) => setTimeout(res, 150)); // the retry (backoff 50 ms, real timers)
  r = await get(port, '/readyz');
  t.equal(r.code, 200, r.body);
  t.equal(JSON.parse(r.body).status, 'ok');
  t.equal((await get(port, '/healthz')).code, 200);

  // Changes are routed by kind.
  const before = probe.syncs.length;
  src.emit([{ type: 'add', kind: 'Node', key: 'x', obj: { apiVersion: 'v1', kind: 'Node', metadata: { name: 'x' }, spec: {} } }]);
  src.emit([{ type: 'add', kind: 'Service', key: 'ns/s', obj: { apiVersion: 'v1', kind: 'Service', metadata: { name: 's', namespace: 'ns' }, spec: {} } }]);
  await new Promise((res) => setTimeout(res, 20));
  t.same(probe.syncs.slice(before).map((s) => s.changes.map((c) => c.key)), [['ns/s']], 'only the Service change reached the Service reconciler');

  // Stale: no success for more than 2x the period (10 s).
  clock.t += 20_001;
  r = await get(port, '/healthz');
  t.equal(r.code, 503);
  // The clock is real time plus an offset: the last success lies 20.001 s plus however long
  // the steps above took (tens of ms, more on a loaded machine) in the past.
  t.match(JSON.parse(r.body).problems, [/probe-a: last successful sync 20\.\ds ago \(limit 20\.0s\)/]);
  clock.t -= 20_001;
  probe.healthy = false;
  r = await get(port, '/healthz');
  t.equal(r.code, 503);
  t.match(JSON.parse(r.body).problems, ['probe-a: unhealthy: kernel says no']);
  probe.healthy = true;

  const m = (await get(port, '/metrics')).body;
  t.match(m, /skiff_source_synced\{source="fake"\} 1/);
  t.match(m, /skiff_reconciler_sync_failures_total\{reconciler="probe-a"\} 1/);
  t.match(m, /skiff_reconciler_sync_duration_seconds_bucket\{le="[^"]+",reconciler="probe-a",mode="full"\}/);
  t.match(m, /skiff_reconciler_sync_duration_seconds_count\{reconciler="probe-a",mode="partial"\} 1/);
  t.match(m, /skiff_reconciler_last_sync_timestamp_seconds\{reconciler="probe-a"\} \d+/);
  t.match(m, /process_cpu_seconds_total/);
  t.equal((await get(port, '/nope')).code, 404);

  await agent.stop();
  t.ok(src.stopped);
  await t.rejects(get(port, '/healthz'), 'server closed');
  const n = probe.syncs.length;
  src.emit([{ type: 'add', kind: 'Service', key: 'ns/t', obj: { apiVersion: 'v1', kind: 'Service', metadata: { name: 't', namespace: 'ns' }, spec: {} } }]);
  await new Promise((res) => setTimeout(res, 20));
  t.equal(probe.syncs.length, n, 'no sync after stop');
  t.notOk(probe.cleaned, 'stop does not clean up');
});

t.test('uninstall runs every cleanup without a source', async (t) => {
  const agent = new Agent(config(), { plugins: false, only: ['probe-a'] });
  const { failed } = await agent.uninstall();
  t.same(failed, []);
  t.ok(probes.get('probe-a')!.cleaned);
});

t.test('registration: names are unique; cniconf is built in', async (t) => {
  t.ok(registeredReconcilers().some((r) => r.name === 'cniconf'));
  t.throws(() => registerReconciler('cniconf', () => undefined), /already registered/);
});

/** Prometheus metric and label naming rules (the subset promtool's lint checks). */
function lintMetrics(text: string): string[] {
  const problems: string[] = [];
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (m) types.set(m[1]!, m[2]!);
  }
  for (const [name, type] of types) {
    if (!/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(name)) problems.push(`${name}: invalid name`);
    if (name !== name.toLowerCase()) problems.push(`${name}: not snake_case`);
    if (type === 'counter' && !name.endsWith('_total')) problems.push(`${name}: counter without _total`);
    if (type !== 'counter' && name.endsWith('_total')) problems.push(`${name}: non-counter with _total`);
    if (/_(milliseconds|millis|ms|bytes_total_bytes)$/.test(name)) problems.push(`${name}: use base units`);
    if (name.startsWith('skiff_') && type === 'histogram' && !/_(seconds|bytes|ratio)$/.test(name)) problems.push(`${name}: histogram without a unit`);
    if (!text.includes(`# HELP ${name} `)) problems.push(`${name}: no help`);
  }
  for (const line of text.split('\n')) {
    const lm = /^[^#{\s]+\{([^}]*)\}/.exec(line);
    if (!lm) continue;
    for (const pair of lm[1]!.split(/,(?=[a-zA-Z_])/)) {
      const label = pair.split('=')[0]!;
      if (!/^[a-zA-Z_][a-zA-Z0-9_]*$/.test(label) || label.startsWith('__')) problems.push(`label ${label}: invalid`);
    }
  }
  return problems;
}

t.test('metric names pass the Prometheus naming lint', async (t) => {
  const metrics = new AgentMetrics();
  metrics.addReconciler('x');
  metrics.hooks().onSync!({ reconciler: 'x', full: true, ok: true, durationMs: 3, at: 0 });
  metrics.hooks().onSync!({ reconciler: 'x', full: false, ok: false, durationMs: 3, at: 0 });
  metrics.setSourceSynced('m', true);
  const text = await metrics.registry.metrics();
  // prom-client's own nodejs_active_*_total are gauges named like counters; skiff cannot rename them.
  t.same(lintMetrics(text).filter((p) => !p.startsWith('nodejs_active_')), []);
  t.same(lintMetrics(text).filter((p) => p.startsWith('skiff_')), []);
  t.same(lintMetrics('# HELP foo_count x\n# TYPE foo_count counter\n# TYPE BadName gauge\n'), [
    'foo_count: counter without _total',
    'BadName: not snake_case',
    'BadName: no help',
  ], 'the lint catches bad names');
  for (const n of ['skiff_reconciler_sync_duration_seconds', 'skiff_reconciler_sync_failures_total', 'skiff_reconciler_last_sync_timestamp_seconds', 'skiff_source_synced']) {
    t.match(text, new RegExp(`# TYPE ${n} `), n);
  }
});

t.test('the HTTP server reports a busy address naming the field', async (t) => {
  const a = await startHttpServer({ address: '127.0.0.1:0', registry: new AgentMetrics({ processMetrics: false }).registry, status: () => ({ now: 0, sources: [], reconcilers: [] }), staleFactor: 2 });
  t.teardown(() => a.close());
  await t.rejects(
    startHttpServer({ address: `127.0.0.1:${a.port}`, registry: new AgentMetrics({ processMetrics: false }).registry, status: () => ({ now: 0, sources: [], reconcilers: [] }), staleFactor: 2 }),
    /metricsAddress: cannot listen on 127\.0\.0\.1:\d+: EADDRINUSE/,
  );
});

t.test('preconditions: messages and fixes', async (t) => {
  t.same(parseNftVersion('nftables v1.0.6 (Lester Gooch #5)'), [1, 0, 6]);
  const c = defaultConfig();
  const files: Record<string, string> = { '/proc/sys/net/ipv4/ip_forward': '0\n' };
  const res = await checkPreconditions(c, {
    exec: async () => ({ code: 0, stdout: 'nftables v0.9.3 (Topsy)\n', stderr: '' }),
    readFile: (p) => files[p],
  });
  t.same(res.filter((p) => !p.ok).map((p) => p.check), ['nft', 'ip_forward', 'br_netfilter']);
  t.match(res[0]!.message, /nft is too old: nftables v0\.9\.3/);
  t.match(res[1]!.fix, /sysctl -w net.ipv4.ip_forward=1/);
  t.match(res[2]!.fix, /modprobe br_netfilter/);
  files['/proc/sys/net/ipv4/ip_forward'] = '1\n';
  files['/proc/sys/net/bridge/bridge-nf-call-iptables'] = '1\n';
  const ok = await checkPreconditions(c, { exec: async () => ({ code: 0, stdout: 'nftables v1.0.9\n', stderr: '' }), readFile: (p) => files[p] });
  t.ok(ok.every((p) => p.ok));
  const missing = await checkPreconditions(c, { exec: async () => ({ code: 127, stdout: '', stderr: 'not found' }), readFile: (p) => files[p] });
  t.match(missing[0]!.message, /the nft command is missing/);
});
