// The synthetic services of the proxy benchmarks (bench/proxy.bench.ts, bench/nftnl.bench.ts):
// service i has one TCP port, a ClusterIP in 10.96.0.0/12 and ENDPOINTS endpoints in
// 10.128.0.0/9, all distinct, spread over NODES nodes (as the EndpointSlice controller
// fills nodeName): 1 in NODES is on the benchmark's node, `node-a`.
import { slice, svc } from '../src/proxy/fixtures.js';

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
