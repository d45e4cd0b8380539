// Overlay cost in the lab: iperf3 (Debian) TCP throughput and ping RTT pod-to-pod
// across nodes (VXLAN over the lab's veth underlay) vs within a node (the bridge),
// plus node-to-node over the bare underlay for reference. All three are measured
// interleaved, round by round, in one 2-node lab (namespaces skl-<lab>-*), which is
// always removed (finally + signals). Lab name: $SKIFF_BENCH_LAB, else "bench".
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { down, up } from '../src/lab/manager.js';
import { parseLabFile, resolveSettings } from '../src/lab/config.js';
import type { LabState } from '../src/lab/state.js';
import { median, round, type Benchmark, type Row } from './lib.js';

const LAB = process.env.SKIFF_BENCH_LAB ?? 'bench';

function run(cmd: string, args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')}: ${err.message} ${stderr}`));
      else resolve(stdout);
    });
  });
}

/** iperf3 -c from a namespace; returns the receiver's Gbit/s. */
async function iperf(ns: string, target: string, port: number, seconds: number): Promise<number> {
  let last: Error | undefined;
  for (let i = 0; i < 10; i++) {
    try {
      const out = await run('ip', ['netns', 'exec', ns, 'iperf3', '-c', target, '-p', String(port), '-t', String(seconds), '-J'], (seconds + 20) * 1000);
      const j = JSON.parse(out) as { end?: { sum_received?: { bits_per_second?: number } }; error?: string };
      if (j.error) throw new Error(j.error);
      return j.end!.sum_received!.bits_per_second! / 1e9;
    } catch (e) {
      last = e as Error; // the server may still be starting, or busy with the previous run
      await new Promise((r) => setTimeout(r, 300));
    }
  }
  throw last!;
}

/** Per-echo RTTs (ms) of `ping -c N -i 0.2` from a namespace. */
async function rtts(ns: string, target: string, count: number): Promise<number[]> {
  const out = await run('ip', ['netns', 'exec', ns, 'ping', '-n', '-c', String(count), '-i', '0.2', '-W', '2', target], 60_000);
  return [...out.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]));
}

const bench: Benchmark = {
  id: 'overlay',
  title: 'VXLAN overlay: pod-to-pod throughput and RTT across nodes vs within a node',
  async run({ quick }) {
    if (process.getuid?.() !== 0) throw new Error('the overlay benchmark needs root (network namespaces)');
    const pod = (name: string, node: string, command?: string[]) => ({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, namespace: 'default' },
      spec: { nodeName: node, containers: [{ name: 'c', ...(command ? { command } : {}) }] },
    });
    const file = parseLabFile(
      [
        { kind: 'Lab', name: LAB, nodes: 2 },
        pod('client', 'node1'),
        pod('local', 'node1', ['iperf3', '-s', '-p', '5201']),
        pod('remote', 'node2', ['iperf3', '-s', '-p', '5201']),
      ]
        .map((d) => JSON.stringify(d))
        .join('\n---\n'),
      'overlay bench lab',
    );
    const settings = resolveSettings(file.settings, {});
    const progress = (m: string) => process.stderr.write(`  ${m}\n`);
    const children: ChildProcess[] = [];
    const cleanup = async () => {
      for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
      await down(LAB, () => {});
    };
    const onSignal = () => {
      void cleanup().finally(() => process.exit(130));
    };
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    await down(LAB, () => {}); // a leftover from a crashed run
    try {
      const s: LabState = await up(settings, file.objects, progress);
      const n1 = s.nodes[0]!;
      const n2 = s.nodes[1]!;
      const client = s.pods['default/client']!.netns;
      const local = s.pods['default/local']!.ip!;
      const remote = s.pods['default/remote']!.ip!;
      // Reference: node to node over the bare underlay (no VXLAN), a server in node2's namespace.
      const underlaySrv = spawn('ip', ['netns', 'exec', n2.ns, 'iperf3', '-s', '-p', '5202'], { stdio: 'ignore' });
      children.push(underlaySrv);

      const seconds = quick ? 2 : 3;
      const rounds = quick ? 2 : 9;
      const tp = { within: [] as number[], across: [] as number[], underlay: [] as number[] };
      await rtts(client, remote, 3); // warm-up: neighbour entries, first-packet costs
      for (let i = 0; i < rounds; i++) {
        progress(`round ${i + 1}/${rounds}`);
        tp.within.push(await iperf(client, local, 5201, seconds));
        tp.across.push(await iperf(client, remote, 5201, seconds));
        tp.underlay.push(await iperf(n1.ns, n2.underlayIp, 5202, seconds));
      }
      const pings = quick ? 10 : 50;
      const rtt = { within: [] as number[], across: [] as number[] };
      for (let i = 0; i < 2; i++) {
        rtt.within.push(...(await rtts(client, local, pings / 2)));
        rtt.across.push(...(await rtts(client, remote, pings / 2)));
      }
      const g = (xs: number[]) => round(median(xs), 2);
      const ms = (xs: number[]) => round(median(xs), 3);
      const rows: Row[] = [
        { metric: 'TCP pod-to-pod within a node (bridge), median', value: g(tp.within), unit: 'Gbit/s' },
        { metric: 'TCP pod-to-pod across nodes (VXLAN), median', value: g(tp.across), unit: 'Gbit/s', anchor: { name: 'within a node', value: g(tp.within) } },
        {
          metric: 'TCP across / within a node, median of the per-round ratios',
          value: round(median(tp.across.map((x, i) => x / tp.within[i]!)), 2),
          unit: 'ratio',
        },
        { metric: 'TCP node-to-node over the bare underlay (reference), median', value: g(tp.underlay), unit: 'Gbit/s' },
        { metric: 'TCP across nodes vs the bare underlay', value: round(median(tp.across) / median(tp.underlay), 2), unit: 'ratio' },
        { metric: 'ping RTT pod-to-pod within a node, median', value: ms(rtt.within), unit: 'ms' },
        { metric: 'ping RTT pod-to-pod across nodes, median', value: ms(rtt.across), unit: 'ms', anchor: { name: 'within a node', value: ms(rtt.within) } },
      ];
      return {
        id: 'overlay',
        title: 'VXLAN overlay: pod-to-pod throughput and RTT across nodes vs within a node',
        command: 'node dist/bench/run.js overlay',
        rows,
        notes: [
          `A 2-node lab (\`skiff lab\`, MTU 1500 underlay veths through a bridge, VXLAN MTU 1450, pods MTU 1450); iperf3 3.x (Debian) TCP, one stream, ${seconds} s per run, ${rounds} rounds interleaved within / across / underlay; medians. The per-round ratio compares runs seconds apart, so it resists the machine's load swings better than the ratio of medians.`,
          `RTT: ${pings} echoes each way (ping -i 0.2), interleaved in 2 halves; medians of the individual echoes.`,
          'All traffic stays on one machine (veth + bridge + VXLAN in namespaces), so the figures show the CPU cost of encapsulation on this machine, not a NIC; the machine is shared, so absolute values are noisy — compare the ratios.',
          'Raw per-round Gbit/s: within ' + tp.within.map((x) => x.toFixed(2)).join(', ') + '; across ' + tp.across.map((x) => x.toFixed(2)).join(', ') + '; underlay ' + tp.underlay.map((x) => x.toFixed(2)).join(', ') + '.',
        ],
      };
    } finally {
      process.removeListener('SIGINT', onSignal);
      process.removeListener('SIGTERM', onSignal);
      await cleanup();
    }
  },
};

export default bench;
