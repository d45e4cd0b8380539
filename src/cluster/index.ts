// src/cluster: typed cluster state, its two sources and the view reconcilers read.
//   const source = createSource({ manifests: dir } | { kubeconfig: file } | { inCluster: true });
//   const view = new ClusterView(source);
//   await source.start(); await source.whenSynced();
import type { Logger } from '../util/log.js';
import type { KubeSourceOptions } from './kube.js';
import { LazyKubeSource } from './lazy-kube.js';
import { ManifestSource } from './manifests.js';
import type { ClusterSource } from './types.js';

export * from './types.js';
export { ChangeTracker, contentOf } from './tracker.js';
export { ClusterView } from './view.js';
export { ManifestSource, parseManifest, parseOverlay, ANNOTATIONS_DIR, MANIFEST_EXTENSIONS } from './manifests.js';
export type { ManifestProblem, ManifestObject, ParsedManifest, ManifestSourceOptions } from './manifests.js';
// kube.js itself is imported only by LazyKubeSource.start() (client-node is slow to load).
export { LazyKubeSource } from './lazy-kube.js';
export type { KubeSourceOptions, BackoffOptions, Resource } from './kube.js';
export { checkObject, normalize, isKind, ValidationError, API_VERSION, NAMESPACED } from './validate.js';

export interface SourceOptions {
  /** --manifests DIR */
  manifests?: string;
  /** --kubeconfig FILE */
  kubeconfig?: string;
  /** in-cluster service-account config */
  inCluster?: boolean;
  log?: Logger;
  /** This node's name (the Kubernetes source logs it). */
  nodeName?: string;
  /** Extra options for the Kubernetes source (backoff, timeouts). */
  kube?: Omit<KubeSourceOptions, 'kubeconfig' | 'inCluster' | 'log' | 'nodeName'>;
}

/** Builds the one source the flags ask for; exactly one of --manifests, --kubeconfig, in-cluster. */
export function createSource(opts: SourceOptions): ClusterSource {
  const chosen = [opts.manifests ? '--manifests' : '', opts.kubeconfig ? '--kubeconfig' : '', opts.inCluster ? 'in-cluster' : ''].filter(Boolean);
  if (chosen.length !== 1) {
    throw new Error(
      chosen.length === 0
        ? 'cluster source: give exactly one of --manifests DIR, --kubeconfig FILE or in-cluster config; none was given'
        : `cluster source: give exactly one of --manifests DIR, --kubeconfig FILE or in-cluster config; got ${chosen.join(' and ')}`,
    );
  }
  if (opts.manifests) return new ManifestSource({ dir: opts.manifests, ...(opts.log ? { log: opts.log } : {}) });
  return new LazyKubeSource({
    ...opts.kube,
    ...(opts.kubeconfig ? { kubeconfig: opts.kubeconfig } : { inCluster: true }),
    ...(opts.log ? { log: opts.log } : {}),
    ...(opts.nodeName ? { nodeName: opts.nodeName } : {}),
  });
}
