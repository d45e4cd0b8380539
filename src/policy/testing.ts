// A simulated cluster for the compiler's tests and the benchmark: one fake nftables
// (nft-fake.ts) per node holding that node's compiled `inet skiff-policy`, and the
// packet tracer (nft-trace.ts) walking a connection's first packet through the
// forward hook of the source's node and then of the destination's node (or through
// the input hook when a pod talks to its own node). No I/O.
import type { Protocol } from '../cluster/types.js';
import { FakeNft } from '../os/nft-fake.js';
import { Tracer, explain, type Packet, type TraceResult } from '../os/nft-trace.js';
import type { CtState, L4Proto } from '../os/nft.js';
import { appliedFrom, compile, CompileCache, fullTransaction, planUpdate, type AppliedState, type CompileOptions, type PlanStats } from './compiler.js';
import type { PolicyState } from './evaluator.js';

export interface SimNode {
  name: string;
  nft: FakeNft;
  tracer: Tracer;
  applied?: AppliedState;
  /** Used by incremental applies (full applies compile without a cache). */
  cache: CompileCache;
  podCIDRs: string[];
}

export class SimCluster {
  readonly nodes = new Map<string, SimNode>();
  lastStats = new Map<string, PlanStats | 'full'>();

  constructor(podCIDRs: ReadonlyMap<string, string | string[]>, private readonly opts: Omit<CompileOptions, 'nodeName' | 'podCIDRs'> = {}) {
    for (const [name, c] of podCIDRs) {
      const nft = new FakeNft();
      this.nodes.set(name, { name, nft, tracer: new Tracer(nft), cache: new CompileCache(), podCIDRs: typeof c === 'string' ? [c] : [...c] });
    }
  }

  /** Programs every node: incrementally (planUpdate) when possible, else in full. */
  apply(state: PolicyState, mode: 'incremental' | 'full' = 'incremental'): void {
    for (const n of this.nodes.values()) {
      const model = compile(state, { ...this.opts, nodeName: n.name, podCIDRs: n.podCIDRs, ...(mode === 'incremental' ? { cache: n.cache } : {}) });
      const plan = mode === 'incremental' && n.applied ? planUpdate(n.applied, model) : undefined;
      if (plan) {
        n.nft.apply(plan.tx);
        n.applied = plan.commit();
        this.lastStats.set(n.name, plan.stats);
      } else {
        n.nft.apply(fullTransaction(model));
        n.applied = appliedFrom(model);
        this.lastStats.set(n.name, 'full');
      }
    }
  }

  private packet(src: string, dst: string, protocol: Protocol, port: number, ct?: CtState): Packet {
    return { family: src.includes(':') ? 6 : 4, src, dst, proto: protocol.toLowerCase() as L4Proto, sport: 40000, dport: port, ...(ct ? { ct } : {}) };
  }

  /**
   * The first packet of a connection from srcIp (on srcNode, or outside the cluster
   * when undefined) to dstIp (on dstNode, or outside): forward hook of each node on
   * the way. Returns every trace; allowed iff all accept.
   */
  connect(c: { src: string; srcNode?: string; dst: string; dstNode?: string; protocol: Protocol; port: number; ct?: CtState }): { allowed: boolean; traces: TraceResult[] } {
    const traces: TraceResult[] = [];
    const pkt = this.packet(c.src, c.dst, c.protocol, c.port, c.ct);
    const hops = [...new Set([c.srcNode, c.dstNode].filter((x): x is string => x !== undefined))];
    for (const h of hops) {
      const node = this.nodes.get(h);
      if (!node) throw new Error(`unknown node ${h}`);
      const r = node.tracer.hook('forward', pkt);
      traces.push(r);
      if (r.verdict !== 'accept') return { allowed: false, traces };
    }
    return { allowed: true, traces };
  }

  /** A pod (srcIp on node) talking to its node's own address: the input hook. */
  toNode(c: { src: string; node: string; nodeIp: string; protocol: Protocol; port: number }): TraceResult {
    return this.nodes.get(c.node)!.tracer.hook('input', this.packet(c.src, c.nodeIp, c.protocol, c.port));
  }
}

export function explainAll(traces: TraceResult[]): string {
  return traces.map(explain).join('\n---\n');
}
