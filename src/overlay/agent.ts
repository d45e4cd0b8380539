// Plugs the overlay into the agent: imported by the agent's loadPlugins() when it
// exists, registers the "overlay" reconciler (disabled by overlay.enabled=false).
import { registerReconciler } from '../agent/agent.js';
import type { AgentConfig } from '../agent/config.js';
import type { AgentContext } from '../agent/reconciler.js';
import { OverlayReconciler } from './reconciler.js';

export function createOverlayReconciler(ctx: AgentContext, c: AgentConfig): OverlayReconciler | undefined {
  if (!c.overlay.enabled) return undefined;
  return new OverlayReconciler(
    {
      nodeName: ctx.nodeName,
      nodes: () => ctx.view.list('Node'),
      ...(ctx.annotateNode ? { annotate: ctx.annotateNode } : {}),
      ...(ctx.netnsPath ? { netnsPath: ctx.netnsPath } : {}),
      exec: ctx.exec,
      registry: ctx.registry,
      log: ctx.log,
    },
    {
      vni: c.overlay.vni,
      port: c.overlay.port,
      ...(c.overlay.device ? { device: c.overlay.device } : {}),
      ...(c.overlay.underlayInterface ? { underlayInterface: c.overlay.underlayInterface } : {}),
      clusterCIDRs: [c.clusterCIDR],
      masquerade: c.masquerade,
    },
  );
}

registerReconciler('overlay', createOverlayReconciler);
