// Memory per cluster object (issue 6: "at most 1 KB per service+pod on top of the empty
// server, measured at 100,000 objects"): the manifest source alone, the source plus the
// ClusterView every consumer reads, and the whole `skiff dns` server (source, view, DNS
// zone), each a fresh process measured after GC minus the same process with no objects.
// See bench/memory.ts for the mix and for what heap and RSS include.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { round, type Benchmark, type Row } from './lib.js';
import { perObject } from './memory.js';

const bench: Benchmark = {
  id: 'cluster',
  title: 'Cluster state: memory per object (manifest source, view, DNS server)',
  async run({ quick }) {
    const objects = quick ? 10_000 : 100_000;
    const dir = mkdtempSync(join(tmpdir(), 'skt-mem-bench-'));
    try {
      const p = perObject(dir, objects);
      const rows: Row[] = [
        { metric: `DNS server (source + view + zone), per object (V8 heap + external), ${objects} Services+Pods`, value: round(p.heap.dns, 0), unit: 'bytes', target: '<= 1024', pass: p.heap.dns <= 1024 },
        { metric: 'DNS server, per object (RSS)', value: round(p.rss.dns, 0), unit: 'bytes', target: '<= 1024', pass: p.rss.dns <= 1024 },
        { metric: 'source + view, per object (V8 heap + external)', value: round(p.heap.view, 0), unit: 'bytes' },
        { metric: 'source + view, per object (RSS)', value: round(p.rss.view, 0), unit: 'bytes' },
        { metric: 'manifest source alone, per object (V8 heap + external)', value: round(p.heap.source, 0), unit: 'bytes' },
        { metric: 'of which the DNS zone, per object (V8 heap + external)', value: round(p.heap.dns - p.heap.view, 0), unit: 'bytes' },
      ];
      return {
        id: 'cluster',
        title: this.title,
        command: 'node dist/bench/run.js cluster',
        rows,
        notes: [`${objects / 2} Services (one in ten headless, with an EndpointSlice of two endpoints) and ${objects / 2} Pods in 100 namespaces, from a manifest directory; each figure is a fresh process after gc() minus the same process with no objects`],
      };
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
};

export default bench;
