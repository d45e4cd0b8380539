// A fast reachability prober for real-kernel matrices: one long-lived Node process
// per pod network namespace that (optionally) serves TCP and UDP on the model's ports
// and answers probe requests on stdin with many probes in parallel and short
// timeouts. A probe that fails is re-tried with a longer timeout before it counts as
// denied, so a loaded machine does not turn a slow "allowed" into "denied" (an
// "allowed" can never be a false positive: it needs an answer from the server).
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { Protocol } from '../cluster/types.js';

/** The agent: argv[1] = JSON list of ports to serve (may be empty); argv[3] = "6": also serve on IPv6. */
export const PROBE_AGENT_CODE = `
const net = require('node:net'), dgram = require('node:dgram'), rl = require('node:readline');
const serve = JSON.parse(process.argv[1] || '[]');
const name = process.argv[2] || 'pod';
const v6 = process.argv[3] === '6';
let pending = 0;
for (const port of serve) {
  net.createServer((s) => { s.on('error', () => {}); s.end(name); }).listen(port, '0.0.0.0', ready);
  const u = dgram.createSocket('udp4');
  u.on('message', (m, r) => u.send(name, r.port, r.address));
  u.bind(port, '0.0.0.0', ready);
  pending += 2;
  if (!v6) continue;
  net.createServer((s) => { s.on('error', () => {}); s.end(name); }).listen({ port, host: '::', ipv6Only: true }, ready);
  const u6 = dgram.createSocket({ type: 'udp6', ipv6Only: true });
  u6.on('message', (m, r) => u6.send(name, r.port, r.address));
  u6.bind(port, '::', ready);
  pending += 2;
}
function ready() { if (--pending === 0) console.log(JSON.stringify({ ready: true })); }
if (serve.length === 0) console.log(JSON.stringify({ ready: true }));
function tcp(host, port, timeout) {
  return new Promise((res) => {
    const s = net.connect({ host, port });
    const to = setTimeout(() => { s.destroy(); res(false); }, timeout);
    let d = '';
    s.on('data', (x) => (d += x));
    s.on('end', () => { clearTimeout(to); res(d.length > 0); });
    s.on('error', () => { clearTimeout(to); res(false); });
  });
}
function udp(host, port, timeout) {
  return new Promise((res) => {
    const s = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
    const done = (v) => { clearTimeout(to); try { s.close(); } catch {} res(v); };
    const to = setTimeout(() => done(false), timeout);
    s.on('message', () => done(true));
    s.on('error', () => done(false));
    s.send('probe', port, host, (e) => { if (e) done(false); });
  });
}
rl.createInterface({ input: process.stdin }).on('line', async (line) => {
  const req = JSON.parse(line);
  const results = await Promise.all(req.targets.map((t) => (t.proto === 'UDP' ? udp : tcp)(t.host, t.port, req.timeout)));
  console.log(JSON.stringify({ id: req.id, results }));
});
`;

export interface ProbeTarget {
  host: string;
  port: number;
  proto: Protocol;
}

export class ProbeAgent {
  private readonly proc: ChildProcess;
  private nextId = 1;
  private readonly waiting = new Map<number, (r: boolean[]) => void>();
  readonly ready: Promise<void>;

  /**
   * Starts the agent in a network namespace. `launch` gives the argv that runs a
   * command there (default: `ip netns exec NS`). `ipv6`: also serve on `::` (the
   * namespace must have IPv6 enabled); probes to IPv6 hosts work either way.
   */
  constructor(
    readonly netns: string,
    o: { serve?: readonly number[]; name?: string; launch?: (cmd: string[]) => string[]; ipv6?: boolean } = {},
  ) {
    const cmd = [process.execPath, '-e', PROBE_AGENT_CODE, JSON.stringify(o.serve ?? []), o.name ?? netns, ...(o.ipv6 ? ['6'] : [])];
    const argv = o.launch ? o.launch(cmd) : ['ip', 'netns', 'exec', netns, ...cmd];
    this.proc = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'inherit'] });
    const lines = createInterface({ input: this.proc.stdout! });
    let resolveReady!: () => void;
    let rejectReady!: (e: Error) => void;
    this.ready = new Promise((res, rej) => {
      resolveReady = res;
      rejectReady = rej;
    });
    this.proc.once('exit', (c) => {
      rejectReady(new Error(`probe agent in ${netns} exited ${c}`));
      for (const w of this.waiting.values()) w([]);
    });
    lines.on('line', (l) => {
      let m: { ready?: boolean; id?: number; results?: boolean[] };
      try {
        m = JSON.parse(l);
      } catch {
        return;
      }
      if (m.ready) resolveReady();
      else if (m.id !== undefined) {
        const w = this.waiting.get(m.id);
        this.waiting.delete(m.id);
        w?.(m.results ?? []);
      }
    });
  }

  private once(targets: readonly ProbeTarget[], timeout: number): Promise<boolean[]> {
    if (targets.length === 0) return Promise.resolve([]);
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.waiting.set(id, resolve);
      this.proc.stdin!.write(JSON.stringify({ id, targets, timeout }) + '\n');
    });
  }

  /** Probes all targets in parallel; failures are confirmed with a second, longer try. */
  async probe(targets: readonly ProbeTarget[], timeoutMs = 300, confirmMs = 1500): Promise<boolean[]> {
    const first = await this.once(targets, timeoutMs);
    const retry = targets.map((t, i) => ({ t, i })).filter((x) => !first[x.i]);
    if (retry.length === 0 || confirmMs <= 0) return first;
    const second = await this.once(
      retry.map((x) => x.t),
      confirmMs,
    );
    retry.forEach((x, j) => (first[x.i] = second[j] ?? false));
    return first;
  }

  stop(): void {
    this.proc.kill('SIGKILL');
  }
}

/** A 9×9-style matrix: rows sources, columns destinations, per (protocol, port). */
export interface MatrixCell {
  from: string;
  to: string;
  protocol: Protocol;
  port: number;
  kernel: boolean;
  expected: boolean;
}

/**
 * Measures every (from, to, probe) with one agent request per source, all sources
 * in parallel. A denied probe costs one short timeout; a probe that failed where
 * the evaluator expects success is re-tried with confirmMs before it counts. `expected` comes from the caller (the evaluator). Self pairs are
 * skipped: a pod's traffic to its own address never leaves the pod.
 */
export async function measureMatrix(o: {
  keys: readonly string[];
  agents: ReadonlyMap<string, ProbeAgent>;
  ips: ReadonlyMap<string, string>;
  probes: readonly [Protocol, number][];
  expected: (from: string, to: string, protocol: Protocol, port: number) => boolean;
  /** Whether `to` serves (protocol, port); unserved cells are not probed (default: all served). */
  serves?: (to: string, protocol: Protocol, port: number) => boolean;
  timeoutMs?: number;
  confirmMs?: number;
}): Promise<MatrixCell[]> {
  const cells: MatrixCell[] = [];
  await Promise.all(
    o.keys.map(async (from) => {
      const mine: Omit<MatrixCell, 'kernel'>[] = [];
      for (const [protocol, port] of o.probes) {
        for (const to of o.keys) if (to !== from && (!o.serves || o.serves(to, protocol, port))) mine.push({ from, to, protocol, port, expected: o.expected(from, to, protocol, port) });
      }
      const agent = o.agents.get(from)!;
      const target = (c: Omit<MatrixCell, 'kernel'>) => ({ host: o.ips.get(c.to)!, port: c.port, proto: c.protocol });
      // One quick round; then only the probes that failed where the evaluator expects
      // success are confirmed with a long timeout (a success is never a flake).
      const got = await agent.probe(mine.map(target), o.timeoutMs ?? 300, 0);
      const doubt = mine.map((c, i) => ({ c, i })).filter((x) => !got[x.i] && x.c.expected);
      if (doubt.length) {
        const again = await agent.probe(doubt.map((x) => target(x.c)), o.confirmMs ?? 2000, 0);
        doubt.forEach((x, j) => (got[x.i] = again[j] ?? false));
      }
      mine.forEach((c, i) => cells.push({ ...c, kernel: got[i] ?? false }));
    }),
  );
  return cells;
}

/** Prints a matrix per probe like the upstream truth tables: "." allowed, "X" denied, "!" where kernel and evaluator differ (kernel shown below). */
export function renderMatrix(keys: readonly string[], cells: readonly MatrixCell[]): string {
  const by = new Map(cells.map((c) => [`${c.protocol}/${c.port} ${c.from}>${c.to}`, c]));
  const probes = [...new Set(cells.map((c) => `${c.protocol}/${c.port}`))];
  const out: string[] = [];
  // Wide names: columns are numbered and the rows say which number is which pod.
  const wide = keys.some((k) => k.length > 4);
  const w = wide ? Math.max(3, String(keys.length).length + 1) : 5;
  const rowW = Math.max(6, ...keys.map((k, i) => (wide ? `${i + 1} ${k}` : k).length + 2));
  for (const p of probes) {
    out.push(`${p}   (rows: from, columns: to; . allowed, X denied, ! kernel differs from the evaluator, - not probed)`);
    out.push(`${''.padEnd(rowW)}${keys.map((k, i) => (wide ? String(i + 1) : k).padEnd(w)).join('')}`);
    keys.forEach((f, i) => {
      out.push(
        `${(wide ? `${i + 1} ${f}` : f).padEnd(rowW)}${keys
          .map((d) => {
            const c = by.get(`${p} ${f}>${d}`);
            return (c ? (c.kernel !== c.expected ? '!' : c.kernel ? '.' : 'X') : '-').padEnd(w);
          })
          .join('')}`,
      );
    });
  }
  const bad = cells.filter((c) => c.kernel !== c.expected);
  out.push(bad.length === 0 ? `kernel equals the evaluator on all ${cells.length} probes` : `${bad.length} of ${cells.length} probes differ:`);
  for (const c of bad) out.push(`  ${c.from} -> ${c.to} ${c.protocol}/${c.port}: kernel ${c.kernel ? 'allowed' : 'denied'}, evaluator ${c.expected ? 'allowed' : 'denied'}`);
  return out.join('\n');
}
