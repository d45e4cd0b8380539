// host-local IPAM served in-process by skiff-cni: configuration, strategy, store.
import { accessSync, constants, mkdirSync } from 'node:fs';
import { Allocator, type Allocation, type Attachment } from './allocator.js';
import { parseIpamConfig, type IpamConfig } from './config.js';
import { IpamError } from './errors.js';
import { DiskStore, type Reservation, type Store } from './store.js';

export { parseIpamConfig, IpamError, Allocator, DiskStore };
export type { IpamConfig, Allocation, Attachment, Reservation, Store };
export { MemoryStore } from './store.js';

export class HostLocal {
  readonly allocator: Allocator;

  constructor(
    readonly config: IpamConfig,
    readonly network: string,
    store: Store = new DiskStore(config.dir),
  ) {
    this.allocator = new Allocator(config, store);
  }

  allocate(containerId: string, ifname: string, requested: readonly string[] = []): Allocation {
    return this.allocator.allocate(containerId, ifname, requested);
  }
  release(containerId: string, ifname: string): string[] {
    return this.allocator.release(containerId, ifname);
  }
  releaseIps(ips: readonly string[]): void {
    this.allocator.releaseIps(ips);
  }
  /** Addresses held by the attachment. */
  check(containerId: string, ifname: string): string[] {
    return this.allocator.held(containerId, ifname);
  }
  gc(valid: readonly Attachment[]): Reservation[] {
    return this.allocator.gc(valid);
  }
  status(): { ok: true } | { ok: false; reason: string } {
    try {
      mkdirSync(this.config.dir, { recursive: true });
      accessSync(this.config.dir, constants.W_OK);
    } catch (e) {
      return { ok: false, reason: `data directory ${this.config.dir} is not writable: ${(e as Error).message}` };
    }
    try {
      return this.allocator.status();
    } catch (e) {
      return { ok: false, reason: (e as Error).message };
    }
  }
}
