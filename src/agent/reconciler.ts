// The seam between the agent and everything it drives (CNI config, overlay, proxy,
// policy): a reconciler turns the cluster state into kernel state. The agent's
// bounded-frequency runner calls sync(); a reconciler never runs before its sources
// have synced, and after a failed sync the next one is full.
import type { Registry } from 'prom-client';
import type { Change, ClusterReader, Kind } from '../cluster/types.js';
import type { Executor } from '../os/exec.js';
import type { Logger } from '../util/log.js';

export interface SyncRequest {
  /** true: recompute and re-apply everything (first sync, after a failure, periodic). */
  full: boolean;
  /** Changes since the previous sync (of the kinds this reconciler watches); empty when full. */
  changes: readonly Change[];
}

export interface Reconciler {
  readonly name: string;
  /** Kinds whose changes make this reconciler run. */
  readonly kinds: readonly Kind[];
  sync(req: SyncRequest): Promise<void>;
  /** true once it has applied its state at least once. */
  hasSynced(): boolean;
  /** Removes everything it owns (`skiff agent --uninstall`). Shutdown does NOT call it. */
  cleanup?(): Promise<void>;
  /** Releases what the reconciler holds open (sockets, servers, timers) at agent shutdown; kernel state stays. */
  stop?(): Promise<void>;
  /** Health detail for /healthz (optional). */
  health?(): { ok: boolean; detail?: string };
}

/** What the agent hands to each reconciler's factory. */
export interface AgentContext {
  nodeName: string;
  view: ClusterReader;
  registry: Registry;
  log: Logger;
  exec: Executor;
  /** The agent's network namespace path when it runs inside one (the lab); undefined = own ns. */
  netnsPath?: string;
  /** Patches a Node's annotations through the source, when the source can (overlay: VTEP MAC, underlay IP). */
  annotateNode?: (node: string, annotations: Record<string, string>) => Promise<void>;
}
