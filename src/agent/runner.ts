// A bounded-frequency runner per reconciler, in the spirit of kube-proxy's
// BoundedFrequencyRunner: changes that arrive while a sync is pending or running
// are coalesced into one sync; two syncs never start closer than minInterval; a
// full resync happens at least every period; a failed sync is retried with
// exponential backoff and the retry is always full (the reconciler's in-memory
// picture of what it applied can no longer be trusted).
//
// All timing goes through an injected Clock so unit tests drive it deterministically.
import type { Change } from '../cluster/types.js';
import { canonical } from '../util/canonical.js';
import type { Logger } from '../util/log.js';
import type { Reconciler } from './reconciler.js';

export interface Clock {
  /** Milliseconds (any epoch; only differences matter except for metrics timestamps). */
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const realClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

export interface RunnerTiming {
  /** Minimum time between the starts of two syncs (ms). */
  minInterval: number;
  /** A full resync at least this often (ms). */
  period: number;
  /** First retry delay after a failure (ms); doubles per consecutive failure. */
  backoffInitial: number;
  /** Upper bound of the retry delay (ms). */
  backoffMax: number;
}

export interface SyncOutcome {
  reconciler: string;
  full: boolean;
  ok: boolean;
  durationMs: number;
  /** Clock time at which the sync finished. */
  at: number;
  error?: unknown;
}

export interface RunnerHooks {
  onSync?(o: SyncOutcome): void;
}

export interface RunnerStatus {
  name: string;
  started: boolean;
  /** Clock time the runner started (first sync scheduled), if started. */
  startedAt?: number;
  lastSuccess?: number;
  lastAttempt?: number;
  lastDurationMs?: number;
  consecutiveFailures: number;
  lastError?: string;
  syncs: number;
  /** The reconciler has applied its state at least once. */
  hasSynced: boolean;
  periodMs: number;
}

/** Folds a later change to the same object into an earlier one (previous of the first, current of the last). */
function mergeChange(first: Change, later: Change): Change | undefined {
  const old = first.type === 'add' ? undefined : first.old;
  const obj = later.type === 'delete' ? undefined : later.obj;
  if (!old && !obj) return undefined; // added then deleted: nothing happened
  if (!old) return { type: 'add', kind: later.kind, key: later.key, obj: obj! };
  if (!obj) return { type: 'delete', kind: later.kind, key: later.key, old };
  if (canonical(old) === canonical(obj)) return undefined; // changed and changed back
  return { type: 'update', kind: later.kind, key: later.key, old, obj };
}

export function backoffDelay(timing: RunnerTiming, failures: number): number {
  if (failures <= 0) return 0;
  const d = timing.backoffInitial * 2 ** Math.min(failures - 1, 30);
  return Math.min(d, timing.backoffMax);
}

export class BoundedFrequencyRunner {
  private readonly clock: Clock;
  private pending = new Map<string, Change>();
  private pendingFull = false;
  private timer: unknown;
  private timerAt: number | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;
  private started = false;
  private startedAt: number | undefined;
  private lastRunStart: number | undefined;
  private retryAt: number | undefined;
  private readonly st: { lastSuccess?: number; lastAttempt?: number; lastDurationMs?: number; failures: number; lastError?: string; syncs: number } = {
    failures: 0,
    syncs: 0,
  };

  constructor(
    readonly reconciler: Reconciler,
    readonly timing: RunnerTiming,
    private readonly opts: { clock?: Clock; hooks?: RunnerHooks; log?: Logger } = {},
  ) {
    this.clock = opts.clock ?? realClock;
    if (!(timing.minInterval >= 0 && timing.period > 0 && timing.backoffInitial > 0 && timing.backoffMax >= timing.backoffInitial)) {
      throw new Error(`runner ${reconciler.name}: invalid timing ${JSON.stringify(timing)}`);
    }
  }

  get name(): string {
    return this.reconciler.name;
  }

  /** Schedules the first (full) sync now. */
  start(): void {
    if (this.started || this.stopped) return;
    this.started = true;
    this.startedAt = this.clock.now();
    this.pendingFull = true;
    this.schedule();
  }

  /** Queues changes; they are coalesced per object until the next sync. Ignored before start (the first sync is full). */
  enqueue(changes: readonly Change[]): void {
    if (!this.started || this.stopped || changes.length === 0) return;
    for (const c of changes) {
      const id = `${c.kind}/${c.key}`;
      const prev = this.pending.get(id);
      if (!prev) {
        this.pending.set(id, c);
        continue;
      }
      const merged = mergeChange(prev, c);
      if (merged) this.pending.set(id, merged);
      else this.pending.delete(id);
    }
    this.schedule();
  }

  /** Asks for a full sync (subject to the same rate limits). */
  requestFull(): void {
    if (!this.started || this.stopped) return;
    this.pendingFull = true;
    this.schedule();
  }

  /** Cancels timers and waits for a sync in flight. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.cancelTimer();
    await this.running;
  }

  /** Resolves when no sync is running (tests). */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  status(): RunnerStatus {
    const s: RunnerStatus = {
      name: this.name,
      started: this.started,
      consecutiveFailures: this.st.failures,
      syncs: this.st.syncs,
      hasSynced: this.reconciler.hasSynced(),
      periodMs: this.timing.period,
    };
    if (this.startedAt !== undefined) s.startedAt = this.startedAt;
    if (this.st.lastSuccess !== undefined) s.lastSuccess = this.st.lastSuccess;
    if (this.st.lastAttempt !== undefined) s.lastAttempt = this.st.lastAttempt;
    if (this.st.lastDurationMs !== undefined) s.lastDurationMs = this.st.lastDurationMs;
    if (this.st.lastError !== undefined) s.lastError = this.st.lastError;
    return s;
  }

  /** When the next sync is due (clock time), or undefined when nothing is scheduled. */
  nextRunAt(): number | undefined {
    return this.timerAt;
  }

  private hasWork(): boolean {
    return this.pendingFull || this.pending.size > 0;
  }

  /** Earliest time the pending work may run. */
  private dueAt(): number {
    let due = this.lastRunStart === undefined ? this.clock.now() : this.lastRunStart + this.timing.minInterval;
    // While backing off, new changes do not cut the wait short: the retry is full and includes them.
    if (this.retryAt !== undefined) due = Math.max(due, this.retryAt);
    return due;
  }

  private periodicAt(): number | undefined {
    return this.lastRunStart === undefined ? undefined : this.lastRunStart + this.timing.period;
  }

  private cancelTimer(): void {
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = undefined;
  }

  private schedule(): void {
    if (this.stopped || !this.started || this.running) return; // a running sync reschedules when it ends
    let at = this.periodicAt();
    if (this.hasWork()) {
      const due = this.dueAt();
      at = at === undefined ? due : Math.min(at, due);
    }
    if (at === undefined) return;
    if (this.timerAt !== undefined && this.timerAt <= at) return; // an earlier timer will handle it
    this.cancelTimer();
    const now = this.clock.now();
    this.timerAt = at;
    this.timer = this.clock.setTimeout(() => this.fire(), Math.max(0, at - now));
  }

  private fire(): void {
    this.timer = undefined;
    this.timerAt = undefined;
    if (this.stopped || this.running) return;
    const now = this.clock.now();
    const periodic = this.periodicAt();
    if (periodic !== undefined && now >= periodic) this.pendingFull = true;
    if (this.hasWork() && now >= this.dueAt()) {
      this.running = this.runOnce().finally(() => {
        this.running = undefined;
        this.schedule();
      });
    } else {
      this.schedule();
    }
  }

  private async runOnce(): Promise<void> {
    const full = this.pendingFull;
    const changes = full ? [] : [...this.pending.values()];
    this.pendingFull = false;
    this.pending.clear();
    const start = this.clock.now();
    this.lastRunStart = start;
    this.st.lastAttempt = start;
    let error: unknown;
    let ok = true;
    try {
      await this.reconciler.sync({ full, changes });
    } catch (e) {
      ok = false;
      error = e;
    }
    const end = this.clock.now();
    this.st.syncs++;
    this.st.lastDurationMs = end - start;
    if (ok) {
      this.st.failures = 0;
      this.st.lastSuccess = end;
      delete this.st.lastError;
      this.retryAt = undefined;
    } else {
      this.st.failures++;
      this.st.lastError = error instanceof Error ? error.message : String(error);
      this.pendingFull = true; // what was applied is unknown now: the next sync recomputes everything
      const delay = backoffDelay(this.timing, this.st.failures);
      this.retryAt = end + delay;
      this.opts.log?.warn('sync failed', {
        reconciler: this.name,
        full,
        failures: this.st.failures,
        retryInMs: delay,
        error: this.st.lastError,
      });
    }
    const outcome: SyncOutcome = { reconciler: this.name, full, ok, durationMs: end - start, at: end };
    if (!ok) outcome.error = error;
    try {
      this.opts.hooks?.onSync?.(outcome);
    } catch {
      /* a metrics hook must never break the runner */
    }
  }
}
