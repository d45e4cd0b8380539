import t from 'tap';
import type { Change, Node } from '../../src/cluster/types.js';
import type { Reconciler, SyncRequest } from '../../src/agent/reconciler.js';
import { BoundedFrequencyRunner, backoffDelay, type Clock, type RunnerTiming, type SyncOutcome } from '../../src/agent/runner.js';

/** A deterministic clock: timers fire only when the test advances time. */
class FakeClock implements Clock {
  t = 0;
  private seq = 0;
  private timers = new Map<number, { at: number; fn: () => void }>();
  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = ++this.seq;
    this.timers.set(id, { at: this.t + ms, fn });
    return id;
  }
  clearTimeout(h: unknown): void {
    this.timers.delete(h as number);
  }
  pending(): number {
    return this.timers.size;
  }
  /** Moves time forward, firing due timers in order and letting async work settle after each. */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (;;) {
      await settle();
      let next: [number, { at: number; fn: () => void }] | undefined;
      for (const e of this.timers) if (e[1].at <= end && (!next || e[1].at < next[1].at)) next = e;
      if (!next) break;
      this.timers.delete(next[0]);
      this.t = next[1].at;
      next[1].fn();
    }
    this.t = end;
    await settle();
  }
}

async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
}

interface Call {
  at: number;
  full: boolean;
  keys: string[];
  types: string[];
}

class FakeReconciler implements Reconciler {
  readonly name = 'fake';
  readonly kinds = ['Node'] as const;
  calls: Call[] = [];
  failNext = 0;
  /** Simulated sync duration (advances the fake clock). */
  takes = 0;
  /** When set, sync waits for this promise (a sync in flight). */
  gate: Promise<void> | undefined;
  private synced = false;
  constructor(private readonly clock: FakeClock) {}
  hasSynced(): boolean {
    return this.synced;
  }
  async sync(req: SyncRequest): Promise<void> {
    this.calls.push({ at: this.clock.t, full: req.full, keys: req.changes.map((c) => c.key), types: req.changes.map((c) => c.type) });
    if (this.gate) await this.gate;
    this.clock.t += this.takes;
    if (this.failNext > 0) {
      this.failNext--;
      throw new Error('boom');
    }
    this.synced = true;
  }
}

const timing: RunnerTiming = { minInterval: 1000, period: 60_000, backoffInitial: 500, backoffMax: 4000 };

function node(name: string, cidr?: string): Node {
  return { apiVersion: 'v1', kind: 'Node', metadata: { name }, spec: cidr ? { podCIDR: cidr } : {} };
}
const add = (name: string, cidr = '10.0.0.0/24'): Change => ({ type: 'add', kind: 'Node', key: name, obj: node(name, cidr) });
const upd = (name: string, from: string, to: string): Change => ({ type: 'update', kind: 'Node', key: name, old: node(name, from), obj: node(name, to) });
const del = (name: string, cidr = '10.0.0.0/24'): Change => ({ type: 'delete', kind: 'Node', key: name, old: node(name, cidr) });

function setup(tm: RunnerTiming = timing) {
  const clock = new FakeClock();
  const rec = new FakeReconciler(clock);
  const outcomes: SyncOutcome[] = [];
  const runner = new BoundedFrequencyRunner(rec, tm, { clock, hooks: { onSync: (o) => outcomes.push(o) } });
  return { clock, rec, runner, outcomes };
}

t.test('the first sync is full and runs at start; nothing runs before start', async (t) => {
  const { clock, rec, runner } = setup();
  runner.enqueue([add('a')]);
  await clock.advance(5000);
  t.equal(rec.calls.length, 0, 'changes before start are ignored (the first sync is full)');
  runner.start();
  await clock.advance(0);
  t.same(rec.calls, [{ at: 5000, full: true, keys: [], types: [] }]);
  t.ok(runner.status().hasSynced);
  t.equal(runner.status().lastSuccess, 5000);
});

t.test('changes arriving within the min interval are coalesced into one partial sync', async (t) => {
  const { clock, rec, runner } = setup();
  runner.start();
  await clock.advance(0);
  await clock.advance(100);
  runner.enqueue([add('a')]);
  await clock.advance(100);
  runner.enqueue([add('b')]);
  await clock.advance(300);
  t.equal(rec.calls.length, 1, 'no sync before the min interval has passed');
  await clock.advance(500); // t = 1000
  t.same(rec.calls[1], { at: 1000, full: false, keys: ['a', 'b'], types: ['add', 'add'] });
  await clock.advance(10_000);
  t.equal(rec.calls.length, 2, 'no sync without changes until the period');
});

t.test('changes to one object fold: add+delete vanishes, update+update keeps the first old and last new', async (t) => {
  const { clock, rec, runner } = setup();
  runner.start();
  await clock.advance(0);
  runner.enqueue([add('gone'), upd('x', '10.1.0.0/24', '10.2.0.0/24')]);
  runner.enqueue([del('gone'), upd('x', '10.2.0.0/24', '10.3.0.0/24'), upd('same', '10.5.0.0/24', '10.6.0.0/24')]);
  runner.enqueue([upd('same', '10.6.0.0/24', '10.5.0.0/24'), del('y'), add('y', '10.9.0.0/24')]);
  let seen: SyncRequest | undefined;
  rec.sync = async (req) => {
    seen = req;
  };
  await clock.advance(1000);
  t.ok(seen, 'synced');
  t.same(seen!.changes.map((c) => `${c.type}:${c.key}`), ['update:x', 'update:y']);
  const x = seen!.changes[0]!;
  t.equal((x.old as Node).spec.podCIDR, '10.1.0.0/24');
  t.equal((x.obj as Node).spec.podCIDR, '10.3.0.0/24');
});

t.test('min interval holds between sync starts; an idle runner syncs a late change at once', async (t) => {
  const { clock, rec, runner } = setup();
  runner.start();
  await clock.advance(5000);
  runner.enqueue([add('a')]);
  await clock.advance(0);
  t.equal(rec.calls[1]?.at, 5000, 'long after the last sync: immediately');
  await clock.advance(10);
  runner.enqueue([add('b')]);
  await clock.advance(500);
  t.equal(rec.calls.length, 2, 'still within min interval');
  await clock.advance(490); // 6000
  t.equal(rec.calls[2]?.at, 6000);
});

t.test('a change arriving during a sync runs after it, respecting the min interval', async (t) => {
  const { clock, rec, runner } = setup();
  let open!: () => void;
  rec.gate = new Promise((r) => (open = r));
  runner.start();
  await clock.advance(0);
  t.equal(rec.calls.length, 1);
  runner.enqueue([add('a')]);
  await clock.advance(1500);
  t.equal(rec.calls.length, 1, 'never two syncs at once');
  rec.gate = undefined;
  open();
  await clock.advance(0);
  t.equal(rec.calls.length, 2, 'the queued change runs once the sync ends (min interval already passed)');
  t.same(rec.calls[1], { at: 1500, full: false, keys: ['a'], types: ['add'] });
});

t.test('failure: exponential backoff, every retry full, capped, reset on success', async (t) => {
  const { clock, rec, runner, outcomes } = setup();
  rec.failNext = 5;
  runner.start();
  await clock.advance(0);
  runner.enqueue([add('a')]);
  await clock.advance(20_000);
  const at = rec.calls.map((c) => c.at);
  // backoff 500, 1000, 2000, 4000 (cap), 4000 — but never closer than minInterval (1000).
  t.same(at, [0, 1000, 2000, 4000, 8000, 12000]);
  t.ok(rec.calls.every((c) => c.full), 'every sync after a failure is full');
  t.same(outcomes.map((o) => o.ok), [false, false, false, false, false, true]);
  const st = runner.status();
  t.equal(st.consecutiveFailures, 0);
  t.equal(st.lastSuccess, 12000);
  t.same([1, 2, 3, 4, 5, 9].map((n) => backoffDelay(timing, n)), [500, 1000, 2000, 4000, 4000, 4000]);
});

t.test('a failed partial sync makes the next one full and drops no change', async (t) => {
  const { clock, rec, runner } = setup();
  runner.start();
  await clock.advance(0);
  runner.enqueue([add('a')]);
  rec.failNext = 1;
  await clock.advance(1000);
  t.same(rec.calls[1], { at: 1000, full: false, keys: ['a'], types: ['add'] });
  t.equal(runner.status().consecutiveFailures, 1);
  t.match(runner.status().lastError, /boom/);
  runner.enqueue([add('b')]);
  await clock.advance(999);
  t.equal(rec.calls.length, 2, 'changes during backoff wait for the retry');
  await clock.advance(1);
  t.same(rec.calls[2], { at: 2000, full: true, keys: [], types: [] }, 'the retry is full and covers the queued change');
  await clock.advance(10_000);
  t.equal(rec.calls.length, 3);
});

t.test('periodic full resync', async (t) => {
  const { clock, rec, runner } = setup({ ...timing, period: 10_000 });
  runner.start();
  await clock.advance(0);
  await clock.advance(5000);
  runner.enqueue([add('a')]); // partial at 5000
  await clock.advance(0);
  await clock.advance(30_000);
  t.same(rec.calls.map((c) => [c.at, c.full]), [
    [0, true],
    [5000, false],
    [15000, true],
    [25000, true],
    [35000, true],
  ], 'the period counts from the last sync of any kind');
});

t.test('sync duration and outcomes reach the hooks; stop cancels everything', async (t) => {
  const { clock, rec, runner, outcomes } = setup();
  rec.takes = 250;
  runner.start();
  await clock.advance(0);
  t.same(outcomes, [{ reconciler: 'fake', full: true, ok: true, durationMs: 250, at: 250 }]);
  t.equal(runner.status().lastDurationMs, 250);
  runner.enqueue([add('a')]);
  await runner.stop();
  t.equal(clock.pending(), 0, 'no timer left');
  await clock.advance(100_000);
  t.equal(rec.calls.length, 1, 'nothing runs after stop');
});

t.test('invalid timing is rejected', async (t) => {
  const clock = new FakeClock();
  t.throws(() => new BoundedFrequencyRunner(new FakeReconciler(clock), { ...timing, period: 0 }, { clock }), /invalid timing/);
  t.throws(() => new BoundedFrequencyRunner(new FakeReconciler(clock), { ...timing, backoffMax: 1 }, { clock }), /invalid timing/);
});
