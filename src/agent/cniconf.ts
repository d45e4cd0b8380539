// The first reconciler: this node's CNI network configuration. Container runtimes
// read the first conflist in lexical order from the CNI config dir, so until this
// file exists no pod can start on the node; it appears once the Node has a pod CIDR.
//
// Compute (pure: buildConflist, podCIDRsOf, podMtu) then apply (writeFileAtomic):
// the file is written as canonical JSON, only when its bytes differ from what is on
// disk, through tmp + fsync + rename so a runtime never reads half a file. A
// restarted agent therefore leaves an unchanged file alone.
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Node } from '../cluster/types.js';
import { Netlink } from '../os/netlink.js';
import { canonical } from '../util/canonical.js';
import { networkOf, parseCidr } from '../util/ip.js';
import type { AgentConfig } from './config.js';
import type { AgentContext, Reconciler, SyncRequest } from './reconciler.js';

/** What VXLAN adds to a packet (outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14). */
export const VXLAN_OVERHEAD = 50;
export const CNI_VERSION = '1.1.0';
export const NETWORK_NAME = 'skiff';
export const BRIDGE_NAME = 'skiff0';

export interface ConflistInput {
  podCIDRs: string[];
  mtu: number;
  dataDir: string;
  overlay?: { vni: number; port: number; device?: string; underlayInterface?: string };
}

/** The conflist object (see src/cni/config.ts for how skiff-cni reads each field). */
export function buildConflist(i: ConflistInput): Record<string, unknown> {
  const plugin: Record<string, unknown> = {
    type: 'skiff-cni',
    bridge: BRIDGE_NAME,
    isGateway: true,
    isDefaultGateway: true,
    // The agent masquerades traffic leaving the cluster network; per-pod masquerade would double it.
    ipMasq: false,
    mtu: i.mtu,
    hairpinMode: true,
    ipam: {
      type: 'host-local',
      // One range set per CIDR: one address per family for a dual-stack node.
      ranges: i.podCIDRs.map((subnet) => [{ subnet }]),
      dataDir: i.dataDir,
    },
  };
  if (i.overlay) {
    const o: Record<string, unknown> = { vni: i.overlay.vni, port: i.overlay.port };
    if (i.overlay.device) o.device = i.overlay.device;
    if (i.overlay.underlayInterface) o.underlayInterface = i.overlay.underlayInterface;
    plugin.overlay = o;
  }
  return { cniVersion: CNI_VERSION, name: NETWORK_NAME, plugins: [plugin] };
}

/** The file's bytes: canonical JSON (stable key order), so equal configs are equal bytes. */
export function renderConflist(i: ConflistInput): string {
  return canonical(buildConflist(i)) + '\n';
}

/**
 * The node's pod CIDRs (spec.podCIDRs, else spec.podCIDR), checked. Throws naming
 * the field when one is malformed (a broken Node object; retrying will not fix it).
 */
export function podCIDRsOf(node: Node): string[] {
  const list = node.spec?.podCIDRs?.length ? node.spec.podCIDRs : node.spec?.podCIDR ? [node.spec.podCIDR] : [];
  const field = node.spec?.podCIDRs?.length ? 'spec.podCIDRs' : 'spec.podCIDR';
  const seen = new Set<number>();
  return list.map((cidr, i) => {
    const path = field === 'spec.podCIDRs' ? `${field}[${i}]` : field;
    let c;
    try {
      c = parseCidr(cidr);
    } catch {
      throw new Error(`Node ${node.metadata.name}: ${path}: invalid value ${JSON.stringify(cidr)} (a CIDR)`);
    }
    if (networkOf(c) !== c.ip) throw new Error(`Node ${node.metadata.name}: ${path}: invalid value ${JSON.stringify(cidr)} (host bits set)`);
    if (seen.has(c.family)) throw new Error(`Node ${node.metadata.name}: ${path}: invalid value ${JSON.stringify(cidr)} (a second IPv${c.family} CIDR)`);
    seen.add(c.family);
    return `${c.ip}/${c.prefix}`;
  });
}

/** Pod MTU: the configured one, else the uplink's minus the VXLAN overhead when the overlay is on. */
export function podMtu(configured: number, uplinkMtu: number | undefined, overlay: boolean): number {
  if (configured > 0) return configured;
  if (uplinkMtu === undefined) throw new Error('mtu: 0 (auto) but the uplink MTU is unknown');
  return overlay ? uplinkMtu - VXLAN_OVERHEAD : uplinkMtu;
}

/** Writes `data` to `path` atomically: a temp file in the same dir, fsync, rename, fsync of the dir. */
export async function writeFileAtomic(path: string, data: string, mode = 0o644): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true });
  // A leading dot and a non-.conf suffix: runtimes scanning the dir never pick the temp file up.
  const tmp = join(dir, `.${basename(path)}.${process.pid}.tmp`);
  const fh = await open(tmp, 'w', mode);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
  const d = await open(dir, 'r');
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}

export interface Uplink {
  name: string;
  mtu: number;
}

/**
 * The uplink: the configured underlay interface, else the interface of the default
 * route (IPv4, then IPv6), else the one holding one of the node's InternalIPs.
 */
export async function findUplink(opts: { netnsPath?: string; underlayInterface?: string; nodeIPs: string[] }): Promise<Uplink> {
  const nl = Netlink.open(opts.netnsPath);
  try {
    if (opts.underlayInterface) {
      const l = await nl.linkByName(opts.underlayInterface);
      if (!l) throw new Error(`overlay.underlayInterface: interface ${JSON.stringify(opts.underlayInterface)} does not exist`);
      return { name: l.name, mtu: l.mtu ?? 1500 };
    }
    for (const fam of [4, 6] as const) {
      const def = (await nl.routes(fam)).find((r) => r.dst === 'default' && r.oif !== undefined);
      const l = def ? await nl.linkByIndex(def.oif!) : undefined;
      if (l) return { name: l.name, mtu: l.mtu ?? 1500 };
    }
    if (opts.nodeIPs.length) {
      const addrs = await nl.addresses();
      const hit = addrs.find((a) => opts.nodeIPs.includes(parseCidr(a.cidr).ip));
      const l = hit ? await nl.linkByIndex(hit.index) : undefined;
      if (l) return { name: l.name, mtu: l.mtu ?? 1500 };
    }
    throw new Error(
      `mtu: cannot find the uplink: no default route and no interface holding the node's InternalIP (${opts.nodeIPs.join(', ') || 'none'}); set mtu or overlay.underlayInterface`,
    );
  } finally {
    nl.close();
  }
}

export interface CniConfOptions {
  nodeName: string;
  confDir: string;
  confName: string;
  dataDir: string;
  /** 0 = auto from the uplink. */
  mtu: number;
  overlay?: { vni: number; port: number; device?: string; underlayInterface?: string };
  netnsPath?: string;
  /** Replaceable in unit tests (no netlink). */
  uplink?: (nodeIPs: string[]) => Promise<Uplink>;
}

export function cniConfOptions(ctx: Pick<AgentContext, 'nodeName' | 'netnsPath'>, c: AgentConfig): CniConfOptions {
  const o: CniConfOptions = {
    nodeName: ctx.nodeName,
    confDir: c.cniConfDir,
    confName: c.cniConfName,
    dataDir: c.ipamDataDir,
    mtu: c.mtu,
  };
  if (c.overlay.enabled) {
    o.overlay = { vni: c.overlay.vni, port: c.overlay.port };
    if (c.overlay.device) o.overlay.device = c.overlay.device;
    if (c.overlay.underlayInterface) o.overlay.underlayInterface = c.overlay.underlayInterface;
  }
  if (ctx.netnsPath) o.netnsPath = ctx.netnsPath;
  return o;
}

export class CniConfReconciler implements Reconciler {
  readonly name = 'cniconf';
  readonly kinds = ['Node'] as const;
  private applied = false;
  private waiting: string | undefined;
  /** Number of times the file was (re)written, for tests and logs. */
  writes = 0;

  constructor(
    private readonly ctx: Pick<AgentContext, 'view' | 'log'>,
    private readonly o: CniConfOptions,
  ) {}

  get path(): string {
    return join(this.o.confDir, this.o.confName);
  }

  hasSynced(): boolean {
    return this.applied;
  }

  private wait(reason: string): void {
    // Log once per reason, not on every periodic resync.
    if (this.waiting !== reason) this.ctx.log.info('waiting before writing the CNI config', { node: this.o.nodeName, reason });
    this.waiting = reason;
  }

  async sync(req: SyncRequest): Promise<void> {
    if (!req.full && this.applied && !req.changes.some((c) => c.kind === 'Node' && c.key === this.o.nodeName)) return;
    const node = this.ctx.view.get('Node', this.o.nodeName);
    // Without our Node (or its pod CIDR) there is nothing to write. An existing file
    // is left alone: pods already running keep their network.
    if (!node) return this.wait(`Node ${this.o.nodeName} not found`);
    let podCIDRs: string[];
    try {
      podCIDRs = podCIDRsOf(node);
    } catch (e) {
      return this.wait((e as Error).message);
    }
    if (podCIDRs.length === 0) return this.wait(`Node ${this.o.nodeName} has no spec.podCIDR yet`);

    let uplinkMtu: number | undefined;
    if (this.o.mtu === 0) {
      const nodeIPs = (node.status?.addresses ?? []).filter((a) => a.type === 'InternalIP').map((a) => a.address);
      const up = await (this.o.uplink ?? ((ips) => findUplink({ ...this.uplinkOpts(), nodeIPs: ips })))(nodeIPs);
      uplinkMtu = up.mtu;
    }
    const mtu = podMtu(this.o.mtu, uplinkMtu, this.o.overlay !== undefined);
    if (mtu < 68) throw new Error(`mtu: derived pod MTU ${mtu} is below 68 (uplink MTU ${uplinkMtu}); set mtu explicitly`);

    const input: ConflistInput = { podCIDRs, mtu, dataDir: this.o.dataDir };
    if (this.o.overlay) input.overlay = this.o.overlay;
    const text = renderConflist(input);
    const current = await readFile(this.path, 'utf8').catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return undefined;
      throw e;
    });
    if (current !== text) {
      await writeFileAtomic(this.path, text);
      this.writes++;
      this.ctx.log.info(current === undefined ? 'wrote the CNI config' : 'updated the CNI config', { path: this.path, podCIDRs, mtu });
    }
    this.waiting = undefined;
    this.applied = true;
  }

  private uplinkOpts(): { netnsPath?: string; underlayInterface?: string } {
    const o: { netnsPath?: string; underlayInterface?: string } = {};
    if (this.o.netnsPath) o.netnsPath = this.o.netnsPath;
    if (this.o.overlay?.underlayInterface) o.underlayInterface = this.o.overlay.underlayInterface;
    return o;
  }

  async cleanup(): Promise<void> {
    await rm(this.path, { force: true });
    this.applied = false;
    this.ctx.log.info('removed the CNI config', { path: this.path });
  }

  health(): { ok: boolean; detail?: string } {
    // Waiting for a pod CIDR is a normal state (the controller has not assigned one yet), not ill health.
    return this.waiting ? { ok: true, detail: this.waiting } : { ok: true };
  }
}

export function createCniConfReconciler(ctx: AgentContext, c: AgentConfig): Reconciler {
  return new CniConfReconciler(ctx, cniConfOptions(ctx, c));
}
