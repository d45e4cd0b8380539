// CoreDNS-compatible metrics at near-zero cost per query: the hot path increments
// slots of typed arrays; prom-client reads them through custom collectors only when
// /metrics is scraped (no label lookups or Map hashing per query).
import type { Registry } from 'prom-client';
import type { DnsNativeConstants } from './fastpath.js';
import { TYPE } from './wire.js';

const TYPE_NAMES = ['A', 'AAAA', 'NS', 'PTR', 'SRV', 'CNAME', 'SOA', 'TXT', 'MX', 'ANY', 'other'] as const;
const TYPE_INDEX = new Uint8Array(65536).fill(TYPE_NAMES.length - 1);
TYPE_INDEX[TYPE.A] = 0; TYPE_INDEX[TYPE.AAAA] = 1; TYPE_INDEX[TYPE.NS] = 2; TYPE_INDEX[TYPE.PTR] = 3;
TYPE_INDEX[TYPE.SRV] = 4; TYPE_INDEX[TYPE.CNAME] = 5; TYPE_INDEX[TYPE.SOA] = 6; TYPE_INDEX[TYPE.TXT] = 7;
TYPE_INDEX[TYPE.MX] = 8; TYPE_INDEX[TYPE.ANY] = 9;
const NT = TYPE_NAMES.length;

const RCODE_NAMES: Record<number, string> = {
  0: 'NOERROR', 1: 'FORMERR', 2: 'SERVFAIL', 3: 'NXDOMAIN', 4: 'NOTIMP', 5: 'REFUSED', 16: 'BADVERS',
};
const NR = 24;

/** CoreDNS's buckets: ExponentialBuckets(0.00025, 2, 16). */
const BUCKETS = Array.from({ length: 16 }, (_, i) => 0.00025 * 2 ** i);
const NB = BUCKETS.length;

/** The metrics' index of a query type (the fast path stores it with each cached answer). */
export function typeIndex(qtype: number): number {
  return TYPE_INDEX[qtype & 0xffff]!;
}

export const ZONE_CLUSTER = 0;
export const ZONE_OTHER = 1;

interface MetricValue { labels: Record<string, string | number>; value: number; metricName?: string }

export class DnsMetrics {
  private readonly requests: Float64Array;
  private readonly responses: Float64Array;
  private readonly buckets: Float64Array;
  private readonly sums: Float64Array;
  private readonly counts: Float64Array;
  private readonly cacheHitsArr = new Float64Array(2); // success, denial
  private cacheMissesN = 0;
  private readonly forwards = new Map<string, number>();
  private fastHits = 0;
  /** Policy-aware DNS: names answered NXDOMAIN because the policies hide them from the client. */
  policyHidden = 0;
  private fastMisses = 0;
  private fastDrops = 0;
  private fastEntries = 0;
  /** The fast path's response latency (kernel arrival to answer sent): counts per bucket (non-cumulative), bounds in seconds. */
  private fastLat = new Float64Array(0);
  private fastLatBounds: number[] = [];
  private fastLatSum = 0;
  /** Called before every read (the server folds in the native fast path's counters). */
  sync: (() => void) | null = null;

  /** zones: the label of each zone index (e.g. ["cluster.local.", "."]). */
  constructor(private readonly server: string, private readonly zones: string[], registry?: Registry) {
    const nz = zones.length;
    this.requests = new Float64Array(nz * 4 * NT);
    this.responses = new Float64Array(nz * NR);
    this.buckets = new Float64Array(nz * NT * NB);
    this.sums = new Float64Array(nz * NT);
    this.counts = new Float64Array(nz * NT);
    if (registry) this.register(registry);
  }

  request(zone: number, tcp: boolean, v6: boolean, qtype: number): void {
    this.requests[((zone * 2 + (tcp ? 1 : 0)) * 2 + (v6 ? 1 : 0)) * NT + TYPE_INDEX[qtype & 0xffff]!]!++;
  }

  response(zone: number, rcode: number, qtype: number, seconds: number): void {
    this.responses[zone * NR + (rcode < NR ? rcode : NR - 1)]!++;
    const i = zone * NT + TYPE_INDEX[qtype & 0xffff]!;
    this.sums[i]! += seconds;
    this.counts[i]!++;
    // Non-cumulative here; made cumulative when collected.
    let b = 0;
    while (b < NB && seconds > BUCKETS[b]!) b++;
    if (b < NB) this.buckets[i * NB + b]!++;
  }

  cacheHit(negative: boolean): void {
    this.cacheHitsArr[negative ? 1 : 0]!++;
  }

  cacheMiss(): void {
    this.cacheMissesN++;
  }

  forward(to: string): void {
    this.forwards.set(to, (this.forwards.get(to) ?? 0) + 1);
  }

  /**
   * Folds in counter deltas of the native fast path (answers from its cache: cluster
   * zone, UDP). Its latency is the batch's handling time shared by the batch's answers.
   */
  absorbNative(d: Float64Array, c: DnsNativeConstants): void {
    for (let f = 0; f < 2; f++)
      for (let t = 0; t < NT; t++)
        for (let r = 0; r < NR; r++) {
          const v = d[c.HITS + (f * c.NT + t) * c.NR + r]!;
          if (!v) continue;
          this.requests[(ZONE_CLUSTER * 2 * 2 + f) * NT + t]! += v;
          this.responses[ZONE_CLUSTER * NR + r]! += v;
          this.counts[ZONE_CLUSTER * NT + t]! += v;
          this.fastHits += v;
        }
    for (let t = 0; t < NT; t++) {
      this.sums[ZONE_CLUSTER * NT + t]! += d[c.SUMS + t]!;
      for (let b = 0; b < NB; b++) this.buckets[(ZONE_CLUSTER * NT + t) * NB + b]! += d[c.BUCKETS + t * c.NB + b]!;
    }
    if (c.NL !== undefined) {
      if (this.fastLat.length !== c.NL + 1) {
        this.fastLat = new Float64Array(c.NL + 1);
        this.fastLatBounds = Array.from({ length: c.NL }, (_, i) => (c.LAT_BASE_NS * 2 ** (i / 4)) / 1e9);
      }
      for (let b = 0; b <= c.NL; b++) this.fastLat[b]! += d[c.LAT + b]!;
      this.fastLatSum += d[c.LATSUM]!;
    }
    this.fastMisses += d[c.MISSES]!;
    this.fastDrops += d[c.DROPS]!;
    this.fastEntries = d[c.ENTRIES]!;
  }

  /** The fast path's own counters (tests, the benchmark). */
  fastPath(): { hits: number; misses: number; drops: number; entries: number } {
    this.sync?.();
    return { hits: this.fastHits, misses: this.fastMisses, drops: this.fastDrops, entries: this.fastEntries };
  }

  /**
   * The fast path's response latency since start: bucket upper bounds (seconds) with
   * cumulative counts, the count and the sum. quantile(q) interpolates within a bucket.
   */
  fastLatency(): { bounds: number[]; cumulative: number[]; count: number; sum: number; quantile(q: number): number } {
    this.sync?.();
    const cumulative: number[] = [];
    let cum = 0;
    for (let b = 0; b < this.fastLatBounds.length; b++) cumulative.push((cum += this.fastLat[b]!));
    const count = cum + (this.fastLat[this.fastLatBounds.length] ?? 0);
    return { bounds: this.fastLatBounds, cumulative, count, sum: this.fastLatSum, quantile: (q) => histogramQuantile(q, this.fastLatBounds, cumulative, count) };
  }

  /** Totals (tests). */
  totals(): { requests: number; responses: Record<string, number>; cacheHits: number; cacheMisses: number; forwards: number } {
    this.sync?.();
    const responses: Record<string, number> = {};
    for (let z = 0; z < this.zones.length; z++) {
      for (let r = 0; r < NR; r++) {
        const v = this.responses[z * NR + r]!;
        if (v) responses[RCODE_NAMES[r] ?? String(r)] = (responses[RCODE_NAMES[r] ?? String(r)] ?? 0) + v;
      }
    }
    return {
      requests: this.requests.reduce((a, b) => a + b, 0),
      responses,
      cacheHits: this.cacheHitsArr[0]! + this.cacheHitsArr[1]!,
      cacheMisses: this.cacheMissesN,
      forwards: [...this.forwards.values()].reduce((a, b) => a + b, 0),
    };
  }

  private registered: { registry: Registry; names: string[] } | null = null;

  /** Removes this server's metrics from the registry (a server that failed to start, or stopped for good). */
  unregister(): void {
    const r = this.registered;
    this.registered = null;
    if (r) for (const n of r.names) r.registry.removeSingleMetric(n);
  }

  private register(registry: Registry): void {
    const server = this.server;
    this.registered = { registry, names: [] };
    const add = (name: string, help: string, type: 'counter' | 'histogram', values: () => MetricValue[]) => {
      this.registered!.names.push(name);
      const metric = {
        name, help, type, aggregator: 'sum',
        get: async () => {
          this.sync?.();
          return { name, help, type, aggregator: 'sum', values: values() };
        },
        reset: () => {},
      };
      registry.registerMetric(metric as unknown as Parameters<Registry['registerMetric']>[0]);
    };
    add('coredns_dns_requests_total', 'Counter of DNS requests made per zone, protocol and family.', 'counter', () => {
      const out: MetricValue[] = [];
      for (let z = 0; z < this.zones.length; z++)
        for (let p = 0; p < 2; p++)
          for (let f = 0; f < 2; f++)
            for (let t = 0; t < NT; t++) {
              const v = this.requests[((z * 2 + p) * 2 + f) * NT + t]!;
              if (v) out.push({ labels: { server, zone: this.zones[z]!, proto: p ? 'tcp' : 'udp', family: f ? '2' : '1', type: TYPE_NAMES[t]! }, value: v });
            }
      return out;
    });
    add('coredns_dns_responses_total', 'Counter of response status codes.', 'counter', () => {
      const out: MetricValue[] = [];
      for (let z = 0; z < this.zones.length; z++)
        for (let r = 0; r < NR; r++) {
          const v = this.responses[z * NR + r]!;
          if (v) out.push({ labels: { server, zone: this.zones[z]!, rcode: RCODE_NAMES[r] ?? String(r) }, value: v });
        }
      return out;
    });
    add('coredns_dns_request_duration_seconds', 'Histogram of the time (in seconds) each request took per zone.', 'histogram', () => {
      const out: MetricValue[] = [];
      const name = 'coredns_dns_request_duration_seconds';
      for (let z = 0; z < this.zones.length; z++)
        for (let t = 0; t < NT; t++) {
          const i = z * NT + t;
          const count = this.counts[i]!;
          if (!count) continue;
          const labels = { server, zone: this.zones[z]!, type: TYPE_NAMES[t]! };
          let cum = 0;
          for (let b = 0; b < NB; b++) {
            cum += this.buckets[i * NB + b]!;
            out.push({ metricName: `${name}_bucket`, labels: { ...labels, le: BUCKETS[b]! }, value: cum });
          }
          out.push({ metricName: `${name}_bucket`, labels: { ...labels, le: '+Inf' }, value: count });
          out.push({ metricName: `${name}_sum`, labels, value: this.sums[i]! });
          out.push({ metricName: `${name}_count`, labels, value: count });
        }
      return out;
    });
    add('coredns_cache_hits_total', 'The count of cache hits.', 'counter', () => [
      { labels: { server, type: 'success' }, value: this.cacheHitsArr[0]! },
      { labels: { server, type: 'denial' }, value: this.cacheHitsArr[1]! },
    ]);
    add('coredns_cache_misses_total', 'The count of cache misses.', 'counter', () => [{ labels: { server }, value: this.cacheMissesN }]);
    add('skiff_dns_fastpath_answers_total', 'Answers sent by the native UDP fast path from its answer cache.', 'counter', () =>
      [{ labels: { server }, value: this.fastHits }]);
    add('skiff_dns_fastpath_response_seconds', 'Time from a query\'s arrival in the kernel to its answer being sent, for the answers of the native UDP fast path (socket queueing included).', 'histogram', () => {
      const name = 'skiff_dns_fastpath_response_seconds';
      const h = this.fastLatency();
      if (!h.count) return [];
      const labels = { server };
      const out: MetricValue[] = h.bounds.map((le, i) => ({ metricName: `${name}_bucket`, labels: { ...labels, le: Number(le.toPrecision(4)) }, value: h.cumulative[i]! }));
      out.push({ metricName: `${name}_bucket`, labels: { ...labels, le: '+Inf' }, value: h.count });
      out.push({ metricName: `${name}_sum`, labels, value: h.sum });
      out.push({ metricName: `${name}_count`, labels, value: h.count });
      return out;
    });
    add('skiff_dns_fastpath_dropped_total', 'Queries the fast path dropped (handoff queue full or oversized datagram).', 'counter', () =>
      [{ labels: { server }, value: this.fastDrops }]);
    add('skiff_dns_policy_hidden_total', 'Names answered NXDOMAIN because the NetworkPolicies hide their Service from the client (policy-aware DNS).', 'counter', () =>
      [{ labels: { server }, value: this.policyHidden }]);
    add('coredns_forward_requests_total', 'Counter of requests made per upstream.', 'counter', () =>
      [...this.forwards].map(([to, value]) => ({ labels: { to }, value })));
  }
}

/**
 * The q-quantile of a histogram (Prometheus' histogram_quantile): linear within the
 * bucket that holds it; the last finite bound when it lies above all of them.
 */
export function histogramQuantile(q: number, bounds: readonly number[], cumulative: readonly number[], count: number): number {
  if (count <= 0 || bounds.length === 0) return NaN;
  const rank = q * count;
  for (let i = 0; i < bounds.length; i++) {
    if (cumulative[i]! >= rank) {
      const lo = i === 0 ? 0 : bounds[i - 1]!;
      const below = i === 0 ? 0 : cumulative[i - 1]!;
      const inBucket = cumulative[i]! - below;
      return inBucket > 0 ? lo + ((bounds[i]! - lo) * (rank - below)) / inBucket : bounds[i]!;
    }
  }
  return bounds[bounds.length - 1]!;
}
