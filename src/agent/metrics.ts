// The agent's Prometheus registry and its own metrics. Other modules register
// theirs on the same registry (AgentContext.registry); names follow kube-proxy's
// conventions where the concept is the same, prefixed skiff_.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { RunnerHooks, SyncOutcome } from './runner.js';

export class AgentMetrics {
  readonly registry: Registry;
  readonly syncDuration: Histogram<'reconciler' | 'mode'>;
  readonly syncFailures: Counter<'reconciler'>;
  readonly syncs: Counter<'reconciler' | 'mode' | 'result'>;
  readonly lastSync: Gauge<'reconciler'>;
  readonly sourceSynced: Gauge<'source'>;

  constructor(opts: { registry?: Registry; processMetrics?: boolean } = {}) {
    this.registry = opts.registry ?? new Registry();
    // Process and Node.js runtime metrics (process_cpu_seconds_total, nodejs_heap_*, ...), unprefixed as usual.
    if (opts.processMetrics ?? true) collectDefaultMetrics({ register: this.registry });
    const registers = [this.registry];
    this.syncDuration = new Histogram({
      name: 'skiff_reconciler_sync_duration_seconds',
      help: 'Duration of reconciler syncs, by mode (full or partial).',
      labelNames: ['reconciler', 'mode'],
      // From 1 ms (a no-op file compare) to ~2 min (a full proxy sync of a huge cluster).
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
      registers,
    });
    this.syncFailures = new Counter({
      name: 'skiff_reconciler_sync_failures_total',
      help: 'Reconciler syncs that failed.',
      labelNames: ['reconciler'],
      registers,
    });
    this.syncs = new Counter({
      name: 'skiff_reconciler_syncs_total',
      help: 'Reconciler syncs, by mode and result.',
      labelNames: ['reconciler', 'mode', 'result'],
      registers,
    });
    this.lastSync = new Gauge({
      name: 'skiff_reconciler_last_sync_timestamp_seconds',
      help: 'Unix time of the last successful sync of each reconciler.',
      labelNames: ['reconciler'],
      registers,
    });
    this.sourceSynced = new Gauge({
      name: 'skiff_source_synced',
      help: '1 once the cluster state source has delivered its initial state, else 0.',
      labelNames: ['source'],
      registers,
    });
  }

  /** Declares a reconciler so its series exist (at zero) before its first sync. */
  addReconciler(name: string): void {
    this.syncFailures.inc({ reconciler: name }, 0);
  }

  /** Runner hooks feeding this reconciler's metrics. */
  hooks(): RunnerHooks {
    return {
      onSync: (o: SyncOutcome) => {
        const mode = o.full ? 'full' : 'partial';
        this.syncDuration.observe({ reconciler: o.reconciler, mode }, o.durationMs / 1000);
        this.syncs.inc({ reconciler: o.reconciler, mode, result: o.ok ? 'success' : 'failure' });
        if (o.ok) this.lastSync.set({ reconciler: o.reconciler }, Date.now() / 1000);
        else this.syncFailures.inc({ reconciler: o.reconciler });
      },
    };
  }

  setSourceSynced(source: string, synced: boolean): void {
    this.sourceSynced.set({ source }, synced ? 1 : 0);
  }
}
