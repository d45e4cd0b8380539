// The synthetic services of the proxy benchmarks (bench/proxy.bench.ts, bench/nftnl.bench.ts):
// service i has one TCP port, a ClusterIP in 10.96.0.0/12 and ENDPOINTS endpoints in
// 10.128.0.0/9, all distinct, spread over NODES nodes (as the EndpointSlice controller
// fills nodeName): 1 in NODES is on the benchmark's node, `node-a`. Also the proxier
// those benchmarks drive, and a runner wrapper that times each batch.
import { Registry } from 'prom-client';
import type { AgentContext } from '../src/agent/reconciler.js';
import { realExec } from '../src/os/exec.js';
import type { NftRunner, Transaction } from '../src/os/nft.js';
import { slice, svc, type MemoryView } from '../src/proxy/fixtures.js';
import { Proxier } from '../src/proxy/proxier.js';
import { logger } from '../src/util/log.js';

export const ENDPOINTS = 10;
/** A cluster with 100,000 endpoints has at least this many nodes. */
export const NODES = 100;
const nodeOf = (n: number) => (n % NODES === 0 ? 'node-a' : `node-${n % NODES}`);

export const clusterIP = (i: number) => `10.${96 + ((i + 1) >> 16)}.${((i + 1) >> 8) & 255}.${(i + 1) & 255}`;
export const epIP = (i: number, k: number) => {
  const n = i * ENDPOINTS + k + 1;
  return `10.${128 + (n >> 16)}.${(n >> 8) & 255}.${n & 255}`;
};
export const mkSvc = (i: number, port = 80) => svc(`s${i}`, { clusterIP: clusterIP(i), ports: [{ name: 'http', protocol: 'TCP', port, targetPort: 8080 }] });
/** Service i's slice; variant > 0 replaces its first endpoint with another address. */
export const mkSlice = (i: number, variant = 0) =>
  slice(`s${i}`, Array.from({ length: ENDPOINTS }, (_, k) => ({ ip: k === 0 && variant ? `10.127.${variant & 255}.${i & 255}` : epIP(i, k), node: nodeOf(i * ENDPOINTS + k) })));

/** An nft runner that records how long its last run took (ms). */
export class TimedNft implements NftRunner {
  last = 0;
  constructor(private readonly inner: NftRunner) {}
  async run(tx: Transaction | readonly Transaction[]): Promise<void> {
    const t0 = performance.now();
    try {
      await this.inner.run(tx);
    } finally {
      this.last = performance.now() - t0;
    }
  }
}

/** The benchmarks' proxier: node-a, cluster CIDR 10.0.0.0/8, round-robin, no health servers, no conntrack cleanup. */
export function benchProxier(view: MemoryView, nft: NftRunner, component: string): Proxier {
  const ctx: AgentContext = { nodeName: 'node-a', view, registry: new Registry(), log: logger(component), exec: realExec };
  return new Proxier(ctx, { clusterCIDR: '10.0.0.0/8', balancing: 'round-robin', nodeIPs: ['192.168.1.10'], healthCheckBind: false }, nft, { conntrack: null });
}
