// The Kubernetes source, loaded on first start(). @kubernetes/client-node and its
// HTTP stack take seconds to load here; an agent on a manifest directory (the lab,
// every test) and `skiff dns --manifests` must not pay for it.
import type { KubeSource, KubeSourceOptions } from './kube.js';
import type { Change, ClusterSource } from './types.js';

export class LazyKubeSource implements ClusterSource {
  readonly name = 'kubernetes';
  private inner: KubeSource | undefined;
  private loading: Promise<KubeSource> | undefined;
  private readonly listeners: ((changes: Change[]) => void)[] = [];

  constructor(private readonly opts: KubeSourceOptions) {}

  private load(): Promise<KubeSource> {
    this.loading ??= import('./kube.js').then(({ KubeSource }) => {
      const s = new KubeSource(this.opts);
      for (const l of this.listeners) s.onChange(l);
      this.inner = s;
      return s;
    });
    return this.loading;
  }

  async start(): Promise<void> {
    await (await this.load()).start();
  }
  async stop(): Promise<void> {
    if (this.loading) await (await this.loading).stop();
  }
  hasSynced(): boolean {
    return this.inner?.hasSynced() ?? false;
  }
  async whenSynced(): Promise<void> {
    await (await this.load()).whenSynced();
  }
  onChange(listener: (changes: Change[]) => void): void {
    this.listeners.push(listener);
    this.inner?.onChange(listener);
  }
  async annotateNode(name: string, annotations: Record<string, string>): Promise<void> {
    await (await this.load()).annotateNode(name, annotations);
  }
}
