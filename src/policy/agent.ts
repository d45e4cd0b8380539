// Plugs NetworkPolicy enforcement into the agent: imported by the agent's
// loadPlugins(), registers the "policy" reconciler (disabled by policy.enabled=false).
// Its runner may sync more often than the others (at most every 250 ms): a new pod
// stays cut off by the new-pod guard until the sync that programs it.
import { defaultTiming, registerReconciler } from '../agent/agent.js';
import type { AgentConfig } from '../agent/config.js';
import type { AgentContext } from '../agent/reconciler.js';
import { nftRunner } from '../os/nftnl.js';
import { PolicyReconciler } from './reconciler.js';

export function createPolicyReconciler(ctx: AgentContext, c: AgentConfig): PolicyReconciler | undefined {
  if (!c.policy.enabled) return undefined;
  const nft = nftRunner(c.nftables, ctx.exec, ctx.netnsPath ? { netnsPath: ctx.netnsPath } : {});
  // The bridge sysctls live in the agent's own namespace; when it drives another one
  // (ctx.netnsPath) it cannot reach them through /proc/sys and leaves them alone.
  return new PolicyReconciler(ctx, { ensureBridgeNetfilter: !ctx.netnsPath }, nft);
}

registerReconciler('policy', createPolicyReconciler, {
  timing: (c) => ({ ...defaultTiming(c), minInterval: Math.min(c.sync.minInterval, 250) }),
});
