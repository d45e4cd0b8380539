// The service proxy: (1) rule syncs against the real kernel in a private namespace
// (skt-px*): full sync and its kernel-apply share for 1,000 / 10,000 / 30,000 Services ×
// 10 endpoints, then one changed Service and one changed endpoint at 10,000 and
// 30,000 (end to end: the change enters the view, the proxier computes, nft
// applies); heap and RSS at 30,000. (2) The data path in a 2-node lab (`pxb`):
// iperf3 and new TCP connections per second through a ClusterIP against the same pod
// directly, interleaved in one run.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { Change } from '../src/cluster/types.js';
import { realExec } from '../src/os/exec.js';
import { nftRunner } from '../src/os/nftnl.js';
import { NetnsSandbox } from '../src/os/sandbox.js';
import { MemoryView } from '../src/proxy/fixtures.js';
import { ENDPOINTS, NODES, TimedNft, benchProxier, clusterIP, mkSlice, mkSvc } from './proxy-services.js';
import { Proxier } from '../src/proxy/proxier.js';
import { ROOT } from '../src/lab/agents.js';
import { loadState } from '../src/lab/state.js';
import { median, round, type Benchmark, type Row } from './lib.js';

/** The runner the sync figures use: the agent's default (netlink), or SKIFF_BENCH_NFT=nft. */
const RUNNER: 'netlink' | 'nft' = process.env.SKIFF_BENCH_NFT === 'nft' ? 'nft' : 'netlink';
const APPLY = RUNNER === 'nft' ? 'nft -f' : 'netlink batch';


function gc(): void {
  setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as () => void)();
}

/** Times each runner call (the kernel-apply share of a sync: a netlink batch, or `nft -f -`). */
const SETTLE_MS = 2000;

async function syncBench(quick: boolean, rows: Row[], notes: string[]): Promise<void> {
  const sandbox = new NetnsSandbox('skt-');
  try {
    const sizes = quick ? [1000, 10000] : [1000, 10000, 30000];
    const reps = quick ? 3 : 5;
    for (const n of sizes) {
      const view = new MemoryView();
      gc();
      const heap0 = process.memoryUsage().heapUsed;
      for (let i = 0; i < n; i++) view.put(mkSvc(i), mkSlice(i));
      // The first full sync of a fresh proxier into an empty namespace (what an agent does
      // at start), repeated with a new proxier and namespace each time: median.
      const fullReps = n <= 10000 ? 3 : 1;
      const fulls: number[] = [];
      const fullNfts: number[] = [];
      let ns!: ReturnType<NetnsSandbox['create']>;
      let nft!: TimedNft;
      let proxier!: Proxier;
      let t0 = 0;
      for (let r = 0; r < fullReps; r++) {
        if (proxier) {
          await proxier.close();
          sandbox.remove(ns.name);
        }
        ns = sandbox.create('pxbench');
        nft = new TimedNft(nftRunner(RUNNER, realExec, { netnsPath: `/run/netns/${ns.name}`, timeoutMs: 600_000 }));
        proxier = benchProxier(view, nft, 'proxy-bench');
        t0 = performance.now();
        await proxier.sync({ full: true, changes: [] });
        fulls.push(performance.now() - t0);
        fullNfts.push(nft.last);
      }
      const full = median(fulls);
      const fullNft = median(fullNfts);
      // A second full sync with everything already in place (the periodic resync).
      t0 = performance.now();
      await proxier.sync({ full: true, changes: [] });
      const resync = performance.now() - t0;
      const label = n.toLocaleString('en-US');
      const fullWhat = fullReps > 1 ? ` (median of ${fullReps} fresh proxiers: ${fulls.map((x) => (x / 1000).toFixed(2)).join(', ')} s)` : '';
      rows.push({ metric: `full sync, ${label} services × ${ENDPOINTS} endpoints${fullWhat}`, value: round(full / 1000, 2), unit: 's', ...(n === 10000 ? { target: '<= 2 s', pass: full <= 2000 } : {}) });
      rows.push({ metric: `  of which ${APPLY} (${label})`, value: round(fullNft / 1000, 2), unit: 's' });
      rows.push({ metric: `  periodic full resync, nothing changed (${label})`, value: round(resync, 1), unit: 'ms' });

      if (n >= 10000) {
        const svcTimes: number[] = [];
        const svcNft: number[] = [];
        const epTimes: number[] = [];
        const epNft: number[] = [];
        const nreps = n >= 30000 ? Math.min(reps, 3) : reps;
        // Changes are measured on a settled node: the kernel finishes a big install in
        // workers after the commit (hash tables growing, the old generation freed), which
        // on 2 vCPUs competes with whatever comes next for a second or two.
        await new Promise((r) => setTimeout(r, SETTLE_MS));
        for (let r = 0; r < nreps; r++) {
          // One changed Service: a new port number (its chain and map element are rewritten).
          const i = 17 + r * 101;
          t0 = performance.now();
          let changes: Change[] = view.put(mkSvc(i, 81 + r));
          await proxier.sync({ full: false, changes });
          svcTimes.push(performance.now() - t0);
          svcNft.push(nft.last);
          // One changed endpoint: the first address of a slice replaced.
          t0 = performance.now();
          changes = view.put(mkSlice(i + 50, r + 1));
          await proxier.sync({ full: false, changes });
          epTimes.push(performance.now() - t0);
          epNft.push(nft.last);
          // The stale chain is deleted in the next transaction (not timed: it is off the change's path).
          await proxier.sync({ full: false, changes: [] });
        }
        const ms = median(svcTimes);
        rows.push({ metric: `one changed service at ${label}, end to end (median of ${nreps})`, value: round(ms, 1), unit: 'ms', anchor: { name: 'kube-proxy nftables, add one service at 10,000 (kubernetes#126013)', value: 141 }, ...(n === 10000 ? { target: '<= 20 ms', pass: ms <= 20 } : {}) });
        rows.push({ metric: `  of which ${APPLY} (${label})`, value: round(median(svcNft), 1), unit: 'ms' });
        const me = median(epTimes);
        rows.push({ metric: `one changed endpoint at ${label}, end to end (median of ${nreps})`, value: round(me, 1), unit: 'ms', ...(n === 10000 ? { target: '<= 20 ms', pass: me <= 20 } : {}) });
        rows.push({ metric: `  of which ${APPLY} (${label})`, value: round(median(epNft), 1), unit: 'ms' });
      }
      if (n === sizes.at(-1)) {
        gc();
        const m = process.memoryUsage();
        rows.push({ metric: `proxy heap at ${label} services (view + proxier, after GC)`, value: round((m.heapUsed - heap0) / 2 ** 20, 0), unit: 'MiB' });
        rows.push({ metric: `process RSS at ${label} services`, value: round(m.rss / 2 ** 20, 0), unit: 'MiB' });
      }
      await proxier.close();
      sandbox.remove(ns.name);
    }
    notes.push(`Sync figures: real nft ${nftVersion()} in a private network namespace, rules applied by ${RUNNER === 'nft' ? 'the nft binary (nft -f -)' : 'NftNetlink (one nf_tables netlink batch per sync, the agent\'s default; SKIFF_BENCH_NFT=nft for the nft binary)'}; each service has one TCP port and ${ENDPOINTS} endpoints (distinct IPs, with nodeNames spread over ${NODES} nodes: 1 in ${NODES} is on the benchmark's node); round-robin balancing. "End to end" = the change enters the proxier's view -> model -> diff -> one transaction applied; changes are measured ${SETTLE_MS / 1000} s after the full syncs (the kernel's post-commit work of a big install otherwise lands in them).`);
  } finally {
    sandbox.removeAll();
  }
}

function nftVersion(): string {
  try {
    return execFileSync('nft', ['--version'], { encoding: 'utf8' }).trim();
  } catch {
    return 'nft';
  }
}

// ---------------------------------------------------------------------------------
// Data path in the lab

const LAB = 'pxb';
const SKIFF = join(ROOT, 'bin', 'skiff');
const LAB_YAML = `kind: Lab
name: ${LAB}
nodes: 2
underlayCIDR: 172.31.78.0/24
---
apiVersion: v1
kind: Pod
metadata: {name: iperf, labels: {app: iperf}}
spec:
  nodeName: node2
  containers: [{name: iperf, command: [iperf3, -s, -p, "5201"], ports: [{containerPort: 5201}]}]
---
apiVersion: v1
kind: Service
metadata: {name: iperf}
spec:
  selector: {app: iperf}
  ports: [{port: 5201, targetPort: 5201}]
---
apiVersion: v1
kind: Pod
metadata: {name: echo, labels: {app: echo}}
spec:
  nodeName: node2
  # 8080 for direct connections, 8081 behind the Service: see CONN_CLIENT.
  containers: [{name: echo, ports: [{containerPort: 8080}, {containerPort: 8081}]}]
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports: [{port: 80, targetPort: 8081}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  nodeName: node1
  containers: [{name: client}]
`;

/**
 * Sequential new TCP connections for `secs` seconds (connect, read the answer, close); prints the count.
 * Direct runs go to the echo pod's port 8080 and ClusterIP runs to its port 8081. On one
 * server port, the interleaved runs met each other's TIME_WAIT sockets (the server closes
 * first): the client picks ports per destination, and its TCP timestamps and initial
 * sequence numbers are keyed by the address it connects to (the pod, or the ClusterIP),
 * so a SYN through the ClusterIP on a port a direct run had just used could look old to
 * the pod's TIME_WAIT socket and wait for a retransmit (rounds of 44 conn/s were seen).
 */
const CONN_CLIENT = `
const net = require('node:net');
const [host, port, secs] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3])];
(async () => {
  const until = Date.now() + secs * 1000;
  let n = 0, fail = 0;
  while (Date.now() < until) {
    const ok = await new Promise((res) => {
      const s = net.connect({ host, port });
      s.on('data', () => {});
      s.on('end', () => res(true));
      s.on('error', () => res(false));
    });
    ok ? n++ : fail++;
  }
  console.log(JSON.stringify({ perSec: n / secs, fail }));
})();`;

function inNs(ns: string, argv: string[]): string {
  return execFileSync('ip', ['netns', 'exec', ns, ...argv], { encoding: 'utf8', timeout: 120_000 });
}

async function dataPathBench(quick: boolean, rows: Row[], notes: string[]): Promise<void> {
  if (spawnSync('sh', ['-c', 'command -v iperf3']).status !== 0) {
    notes.push('Data path skipped: iperf3 is not installed.');
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'skt-px-bench-'));
  const down = () => spawnSync(SKIFF, ['lab', 'down', '--name', LAB], { stdio: 'ignore' });
  const onSignal = (sig: NodeJS.Signals) => {
    down();
    process.kill(process.pid, sig);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    if (loadState(LAB)) down();
    writeFileSync(join(dir, 'lab.yaml'), LAB_YAML);
    const up = spawnSync(SKIFF, ['lab', 'up', '-f', join(dir, 'lab.yaml'), '--name', LAB], { encoding: 'utf8', timeout: 120_000 });
    if (up.status !== 0) throw new Error(`skiff lab up failed: ${up.stderr}`);
    const s = loadState(LAB)!;
    const client = s.pods['default/client']!.netns;
    const iperfIP = s.pods['default/iperf']!.ip!;
    const echoIP = s.pods['default/echo']!.ip!;
    const iperfVIP = s.clusterIPs['default/iperf']!;
    const echoVIP = s.clusterIPs['default/echo']!;
    await new Promise((r) => setTimeout(r, 1000));
    const rounds = quick ? 1 : 5;
    const secs = quick ? 2 : 5;
    const gbps = { direct: [] as number[], service: [] as number[] };
    const cps = { direct: [] as number[], service: [] as number[] };
    for (let r = 0; r < rounds; r++) {
      for (const [kind, ip] of [['direct', iperfIP], ['service', iperfVIP]] as const) {
        const j = JSON.parse(inNs(client, ['iperf3', '-c', ip, '-p', '5201', '-t', String(secs), '-J'])) as { end: { sum_received: { bits_per_second: number } } };
        gbps[kind].push(j.end.sum_received.bits_per_second / 1e9);
      }
      for (const [kind, ip, port] of [['direct', echoIP, '8080'], ['service', echoVIP, '80']] as const) {
        const j = JSON.parse(inNs(client, [process.execPath, '-e', CONN_CLIENT, ip, port, String(secs)])) as { perSec: number; fail: number };
        if (j.fail) notes.push(`${j.fail} failed connections (${kind}, round ${r + 1})`);
        cps[kind].push(j.perSec);
      }
    }
    const gd = median(gbps.direct);
    const gs = median(gbps.service);
    rows.push({ metric: 'iperf3 TCP across nodes, directly to the pod IP', value: round(gd, 2), unit: 'Gbit/s' });
    rows.push({ metric: 'iperf3 TCP across nodes, through the ClusterIP', value: round(gs, 2), unit: 'Gbit/s', anchor: { name: 'direct', value: round(gd, 2) } });
    rows.push({ metric: 'ClusterIP / direct throughput', value: round(gs / gd, 3), unit: 'ratio', target: '>= 0.95', pass: gs / gd >= 0.95 });
    const cd = median(cps.direct);
    const cs = median(cps.service);
    rows.push({ metric: 'new TCP connections/s across nodes, directly to the pod IP (sequential)', value: round(cd, 0), unit: 'conn/s' });
    rows.push({ metric: 'new TCP connections/s across nodes, through the ClusterIP (sequential)', value: round(cs, 0), unit: 'conn/s', anchor: { name: 'direct', value: round(cd, 0) } });
    rows.push({ metric: 'ClusterIP / direct connection rate', value: round(cs / cd, 3), unit: 'ratio' });
    notes.push(`Data path: lab "${LAB}" (2 nodes, VXLAN overlay), client pod on node1, server pods on node2; direct and ClusterIP runs interleaved, ${rounds} round(s) of ${secs} s each, medians. Gbit/s: ${gbps.direct.map((x) => x.toFixed(2)).join(' ')} (direct) vs ${gbps.service.map((x) => x.toFixed(2)).join(' ')} (service); conn/s: ${cps.direct.map((x) => x.toFixed(0)).join(' ')} vs ${cps.service.map((x) => x.toFixed(0)).join(' ')}.`);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    down();
    rmSync(dir, { recursive: true, force: true });
  }
}

const bench: Benchmark = {
  id: 'proxy',
  title: 'Service proxy: rule sync at 1,000-30,000 services, and the data path through a ClusterIP',
  async run({ quick }) {
    if (process.getuid?.() !== 0) throw new Error('the proxy benchmark needs root (network namespaces)');
    const rows: Row[] = [];
    const notes: string[] = [];
    const only = process.env.SKIFF_BENCH_PROXY_PART;
    if (only !== 'datapath') await syncBench(quick, rows, notes);
    if (only !== 'sync') await dataPathBench(quick, rows, notes);
    return { id: 'proxy', title: this.title, command: 'sudo node dist/bench/run.js proxy', rows, notes };
  },
};

export default bench;
