// The overlay reconciler: keeps this node's VXLAN device, its published VTEP data,
// the per-peer neighbour/FDB/route entries, forwarding and the `skiff-overlay`
// nftables table in line with the Node objects.
//
// Every sync recomputes the whole desired state from the view (cheap: one entry set
// per node) and diffs it against the kernel's owned entries, so a partial sync and a
// full resync are the same code and a restart adopts whatever it finds.
import { closeSync, openSync, readFileSync, writeSync } from 'node:fs';
import type { Registry } from 'prom-client';
import type { Reconciler, SyncRequest } from '../agent/reconciler.js';
import type { Kind, Node } from '../cluster/types.js';
import { realExec, type Executor } from '../os/exec.js';
import { Netlink } from '../os/netlink.js';
import { inNetns } from '../os/netns.js';
import { familyOf } from '../util/ip.js';
import { logger, type Logger } from '../util/log.js';
import { ensureOverlayDevice, vxlanName, type OverlaySettings } from './device.js';
import { Gauge } from 'prom-client';
import { allowRulesFor, inspectForeignFirewall, OverlayFirewall, type ForeignDrop } from './firewall.js';
import {
  ANNOTATION_UNDERLAY_IP,
  ANNOTATION_VTEP_MAC,
  OVERLAY_ROUTE_PROTO,
  desiredOverlay,
  diffOverlay,
  gatewayOf,
  type CurrentOverlay,
  type DesiredOverlay,
  type OverlayOp,
} from './plan.js';
import { OverlayProber, type PeerHealth } from './probe.js';

export interface OverlayOptions {
  vni?: number;
  port?: number;
  device?: string;
  underlayInterface?: string;
  /** Pod CIDRs of the whole cluster (no NAT between them). Default: every Node's pod CIDRs. */
  clusterCIDRs?: string[];
  /** Masquerade pod traffic leaving the cluster CIDRs (default true). */
  masquerade?: boolean;
  /** Maintain the `skiff-overlay` nftables table (default true). */
  firewall?: boolean;
  /** Turn on IPv4 (and IPv6, when pod CIDRs are IPv6) forwarding in the node's namespace (default true). */
  forwarding?: boolean;
  /** Peer probing interval; 0 disables probing (default 5000 ms). */
  probeIntervalMs?: number;
  probeTimeoutMs?: number;
  /** How often to look (read-only) for other tables' forward chains that drop by policy; 0 disables (default 10000 ms). */
  firewallCheckMs?: number;
}

export interface OverlayDeps {
  nodeName: string;
  /** Reads the current Node objects. */
  nodes: () => Node[];
  /** Publishes this node's annotations (ClusterSource.annotateNode). */
  annotate?: (name: string, annotations: Record<string, string>) => Promise<void>;
  /** Namespace to act in (path); undefined = the process's own. */
  netnsPath?: string;
  /** Netlink socket factory (default: Netlink.open(netnsPath)). */
  netlink?: () => Netlink;
  exec?: Executor;
  registry?: Registry;
  log?: Logger;
}

export interface OverlayStatus {
  device?: { name: string; index: number; mac?: string; mtu?: number };
  underlayIp?: string;
  peers: string[];
  skipped: { node: string; reason: string }[];
  lastOps: number;
}

/** Applies one op with netlink. */
async function applyOp(nl: Netlink, index: number, op: OverlayOp): Promise<void> {
  switch (op.op) {
    case 'replaceNeighbor':
      return nl.replaceNeighbor(index, op.ip, op.mac);
    case 'deleteNeighbor':
      await nl.deleteNeighbor(index, op.ip);
      return;
    case 'replaceFdb':
      return nl.replaceFdb(index, op.mac, op.dst);
    case 'deleteFdb':
      await nl.deleteFdb(index, op.mac, op.dst);
      return;
    case 'replaceRoute':
      return nl.replaceRoute({ dst: op.dst, gw: op.gw, oif: index, onlink: true, family: op.family, proto: OVERLAY_ROUTE_PROTO });
    case 'deleteRoute':
      await nl.deleteRoute({ dst: op.dst, ...(op.gw ? { gw: op.gw } : {}), oif: index, family: op.family, proto: OVERLAY_ROUTE_PROTO });
      return;
    case 'addAddress':
      return nl.addAddress(index, op.cidr, { nodad: true });
    case 'deleteAddress':
      await nl.deleteAddress(index, op.cidr);
      return;
  }
}

/** Reads the kernel state the plan diffs against. */
async function readCurrent(nl: Netlink, index: number): Promise<CurrentOverlay> {
  // One dump at a time: the netlink package cannot interleave multipart dumps on one socket.
  const n4 = await nl.neighbors(index, 4);
  const n6 = await nl.neighbors(index, 6);
  const fdb = await nl.fdb(index);
  const r4 = await nl.routes(4);
  const r6 = await nl.routes(6);
  const addrs = await nl.addresses(index);
  return {
    neighbors: [...n4, ...n6].map((n) => ({ ip: n.ip, ...(n.mac ? { mac: n.mac } : {}), permanent: n.permanent })),
    fdb,
    routes: [...r4, ...r6].map((r) => ({ ...r, family: r.family })),
    addresses: addrs.map((a) => ({ cidr: a.cidr, scope: a.scope })),
  };
}

/** Writes a sysctl inside the namespace: /proc/sys/net resolves against the opener's namespace. */
export function writeNetSysctl(netnsPath: string | undefined, key: string, value: string): void {
  const path = `/proc/sys/${key.replace(/\./g, '/')}`;
  inNetns(netnsPath, () => {
    const fd = openSync(path, 'w');
    try {
      writeSync(fd, value);
    } finally {
      closeSync(fd);
    }
  });
}

export function readNetSysctl(netnsPath: string | undefined, key: string): string {
  const path = `/proc/sys/${key.replace(/\./g, '/')}`;
  return inNetns(netnsPath, () => readFileSync(path, 'utf8').trim());
}

export class OverlayReconciler implements Reconciler {
  readonly name = 'overlay';
  readonly kinds: readonly Kind[] = ['Node'];
  private synced = false;
  private nl: Netlink | undefined;
  private published: string | undefined;
  private readonly settings: OverlaySettings;
  private readonly firewall: OverlayFirewall;
  private readonly prober: OverlayProber | undefined;
  private readonly log: Logger;
  private lastError: string | undefined;
  private status: OverlayStatus = { peers: [], skipped: [], lastOps: 0 };
  private forwardingDone = false;
  private foreign: ForeignDrop[] = [];
  private foreignKey = '';
  private foreignTimer: NodeJS.Timeout | undefined;
  private foreignGauge: Gauge<'chain'> | undefined;
  private lastClusterCIDRs: string[] = [];

  constructor(private readonly deps: OverlayDeps, private readonly opts: OverlayOptions = {}) {
    this.settings = {
      vni: opts.vni ?? 1,
      port: opts.port ?? 8472,
      ...(opts.device ? { device: opts.device } : {}),
      ...(opts.underlayInterface ? { underlayInterface: opts.underlayInterface } : {}),
    };
    this.log = deps.log ?? logger('overlay');
    this.firewall = new OverlayFirewall(deps.exec ?? realExec, deps.netnsPath);
    const interval = opts.probeIntervalMs ?? 5000;
    if (interval > 0 && deps.registry) {
      this.prober = new OverlayProber({
        ...(deps.netnsPath ? { netnsPath: deps.netnsPath } : {}),
        registry: deps.registry,
        log: this.log.child('probe'),
        intervalMs: interval,
        ...(opts.probeTimeoutMs ? { timeoutMs: opts.probeTimeoutMs } : {}),
      });
    }
  }

  private netlink(): Netlink {
    this.nl ??= this.deps.netlink ? this.deps.netlink() : Netlink.open(this.deps.netnsPath);
    return this.nl;
  }

  hasSynced(): boolean {
    return this.synced;
  }

  health(): { ok: boolean; detail?: string } {
    return this.lastError ? { ok: false, detail: this.lastError } : { ok: true };
  }

  overlayStatus(): OverlayStatus {
    return this.status;
  }

  /** Other tables' forward chains (and legacy iptables FORWARD) that drop by policy, as last seen. */
  foreignDrops(): ForeignDrop[] {
    return this.foreign;
  }

  /** Looks at the other firewalls (read-only) and reports changes: a warning with the rules to add, and a gauge. */
  async checkForeignFirewall(): Promise<ForeignDrop[]> {
    const found = await inspectForeignFirewall(this.deps.exec ?? realExec, this.deps.netnsPath);
    const key = JSON.stringify(found);
    if (key !== this.foreignKey) {
      const label = (d: ForeignDrop) => `${d.family} ${d.table} ${d.chain}`;
      if (this.deps.registry) {
        this.foreignGauge ??=
          (this.deps.registry.getSingleMetric('skiff_overlay_foreign_forward_drop') as Gauge<'chain'> | undefined) ??
          new Gauge({ name: 'skiff_overlay_foreign_forward_drop', help: 'A forward base chain outside skiff\'s table (or legacy iptables FORWARD) with policy drop: pod traffic passes only if that chain accepts it.', labelNames: ['chain'], registers: [this.deps.registry] });
        this.foreignGauge.reset();
        for (const d of found) this.foreignGauge.set({ chain: label(d) }, 1);
      }
      for (const d of found) {
        if (this.foreign.some((x) => label(x) === label(d))) continue;
        this.log.warn('a host firewall chain drops forwarded traffic by policy; skiff does not edit it: unless it accepts pod traffic, cross-node and egress pod traffic is dropped there', {
          chain: label(d),
          ...(d.priority !== undefined ? { priority: d.priority } : {}),
          allowWith: allowRulesFor(d, this.lastClusterCIDRs),
        });
      }
      for (const d of this.foreign) if (!found.some((x) => label(x) === label(d))) this.log.info('host firewall chain no longer drops by policy', { chain: label(d) });
      this.foreign = found;
      this.foreignKey = key;
    }
    return found;
  }

  peerHealth(): PeerHealth[] {
    return this.prober?.health() ?? [];
  }

  async sync(req: SyncRequest): Promise<void> {
    try {
      await this.syncInner(req.full || !this.synced);
      this.lastError = undefined;
      this.synced = true;
    } catch (e) {
      this.lastError = (e as Error).message;
      throw e;
    }
  }

  private async syncInner(full: boolean): Promise<void> {
    const nl = this.netlink();
    const { vxlan, underlay } = await ensureOverlayDevice(nl, this.settings);
    const nodes = this.deps.nodes();
    const me = nodes.find((n) => n.metadata.name === this.deps.nodeName);

    // Publish our VTEP: the device's actual MAC (what peers must put in their FDB).
    const want = { [ANNOTATION_VTEP_MAC]: vxlan.mac!, [ANNOTATION_UNDERLAY_IP]: underlay.ip };
    const have = me?.metadata.annotations ?? {};
    const key = `${want[ANNOTATION_VTEP_MAC]}/${want[ANNOTATION_UNDERLAY_IP]}`;
    const differs = have[ANNOTATION_VTEP_MAC] !== want[ANNOTATION_VTEP_MAC] || have[ANNOTATION_UNDERLAY_IP] !== want[ANNOTATION_UNDERLAY_IP];
    if (differs && (this.published !== key || full)) {
      if (this.deps.annotate) {
        await this.deps.annotate(this.deps.nodeName, want);
        this.log.info('published VTEP', { node: this.deps.nodeName, mac: want[ANNOTATION_VTEP_MAC], underlayIp: underlay.ip });
      } else if (this.published !== key) {
        this.log.warn('no way to publish this node\'s VTEP annotations; peers cannot reach it', want);
      }
      this.published = key;
    }

    // The plan uses our own view of the annotation: what we just published.
    const selfView: Node[] = nodes.map((n) =>
      n.metadata.name === this.deps.nodeName ? { ...n, metadata: { ...n.metadata, annotations: { ...n.metadata.annotations, ...want } } } : n,
    );
    const desired = desiredOverlay(this.deps.nodeName, selfView, { underlayFamily: familyOf(underlay.ip) });
    const current = await readCurrent(nl, vxlan.index);
    const ops = diffOverlay(desired, current, vxlan.index);
    const failures: string[] = [];
    for (const op of ops) {
      try {
        await applyOp(nl, vxlan.index, op);
      } catch (e) {
        failures.push(`${op.op} ${JSON.stringify(op)}: ${(e as Error).message}`);
      }
    }
    if (ops.length) this.log.info('overlay entries updated', { ops: ops.length, peers: desired.peers.map((p) => p.node) });
    for (const s of desired.skipped) if (!this.status.skipped.some((x) => x.node === s.node && x.reason === s.reason)) this.log.warn('overlay peer skipped', { ...s });
    this.status = {
      device: { name: vxlan.name, index: vxlan.index, ...(vxlan.mac ? { mac: vxlan.mac } : {}), ...(vxlan.mtu ? { mtu: vxlan.mtu } : {}) },
      underlayIp: underlay.ip,
      peers: desired.peers.map((p) => p.node),
      skipped: desired.skipped,
      lastOps: ops.length,
    };

    if (this.opts.forwarding !== false && (full || !this.forwardingDone)) {
      writeNetSysctl(this.deps.netnsPath, 'net.ipv4.ip_forward', '1');
      if (desired.addresses.some((a) => familyOf(a.split('/')[0]!) === 6)) writeNetSysctl(this.deps.netnsPath, 'net.ipv6.conf.all.forwarding', '1');
      this.forwardingDone = true;
    }

    if (this.opts.firewall !== false) {
      this.lastClusterCIDRs = this.clusterCIDRs(desired, me);
      await this.firewall.apply({ clusterCIDRs: this.lastClusterCIDRs, masquerade: this.opts.masquerade !== false }, full);
      const every = this.opts.firewallCheckMs ?? 10_000;
      if (every > 0) {
        await this.checkForeignFirewall().catch((e: unknown) => this.log.debug('host firewall check failed', { error: String(e) }));
        if (!this.foreignTimer) {
          this.foreignTimer = setInterval(() => void this.checkForeignFirewall().catch(() => {}), every);
          this.foreignTimer.unref();
        }
      }
    }

    this.prober?.setTargets(desired.peers.map((p) => ({ node: p.node, ip: gatewayOf(p.podCIDRs.find((c) => familyOf(c.split('/')[0]!) === 4) ?? p.podCIDRs[0]!) })).filter((t) => familyOf(t.ip) === 4));
    this.prober?.start();

    if (failures.length) throw new Error(`overlay: ${failures.length} of ${ops.length} changes failed: ${failures.join('; ')}`);
  }

  private clusterCIDRs(desired: DesiredOverlay, me: Node | undefined): string[] {
    if (this.opts.clusterCIDRs?.length) return this.opts.clusterCIDRs;
    const own = me?.spec.podCIDRs?.length ? me.spec.podCIDRs : me?.spec.podCIDR ? [me.spec.podCIDR] : [];
    return [...own, ...desired.peers.flatMap((p) => p.podCIDRs)];
  }

  /** Stops probing and closes the socket; kernel state stays (traffic keeps flowing). */
  async stop(): Promise<void> {
    if (this.foreignTimer) clearInterval(this.foreignTimer);
    this.foreignTimer = undefined;
    await this.prober?.stop();
    this.nl?.close();
    this.nl = undefined;
  }

  /** Removes everything the overlay owns: the device (and with it every entry on it), its routes, the table. */
  async cleanup(): Promise<void> {
    if (this.foreignTimer) clearInterval(this.foreignTimer);
    this.foreignTimer = undefined;
    await this.prober?.stop();
    const nl = this.netlink();
    const dev = await nl.linkByName(vxlanName(this.settings));
    if (dev?.kind === 'vxlan') await nl.deleteLink(dev.index);
    await this.firewall.remove();
    this.synced = false;
  }
}
