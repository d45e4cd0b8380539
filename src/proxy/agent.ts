// Plugs the service proxy into the agent: imported by the agent's loadPlugins() when
// it exists, registers the "proxy" reconciler (disabled by proxy.enabled=false) on
// its own runner timing (proxy.minSyncInterval, proxy.syncPeriod).
//
// nft runs in the node's namespace: the agent's own, or --netns (nsenter). NodePorts
// answer on every local address of the node except loopback (`fib daddr type local`),
// so a node whose addresses change needs no resync. The healthCheckNodePort servers
// listen inside the node's namespace too (see healthcheck.ts).
import { registerReconciler } from '../agent/agent.js';
import type { AgentConfig } from '../agent/config.js';
import type { AgentContext } from '../agent/reconciler.js';
import { nftRunner } from '../os/nftnl.js';
import { Proxier } from './proxier.js';

export function createProxyReconciler(ctx: AgentContext, c: AgentConfig): Proxier | undefined {
  if (!c.proxy.enabled) return undefined;
  const nft = nftRunner(c.nftables, ctx.exec, ctx.netnsPath ? { netnsPath: ctx.netnsPath, timeoutMs: 120_000 } : { timeoutMs: 120_000 });
  return new Proxier(
    ctx,
    {
      clusterCIDR: c.clusterCIDR,
      balancing: c.proxy.balancing,
      nodeIPs: [],
      // A change not applied within two sync periods makes /healthz fail (kube-proxy's healthz timeout).
      staleAfterMs: 2 * c.proxy.syncPeriod,
    },
    nft,
  );
}

registerReconciler('proxy', createProxyReconciler, {
  timing: (c) => ({ minInterval: c.proxy.minSyncInterval, period: c.proxy.syncPeriod, backoffInitial: c.sync.backoffInitial, backoffMax: c.sync.backoffMax }),
});
