// Pod attachment to a Linux bridge: the bridge (created once, safe under racing
// ADDs), a veth pair whose pod end is created directly in the pod's namespace,
// addresses, routes, MTU, hairpin and promiscuous mode. Every step of `attach`
// registers its undo so a failed ADD leaves nothing behind.
import { closeSync } from 'node:fs';
import { Netlink, NetlinkError, type Link } from '../os/netlink.js';
import { openNetns } from '../os/netns.js';
import { containsIp, networkOf, parseCidr } from '../util/ip.js';
import { sha256Hex } from '../util/sha256.js';

export interface BridgeOptions {
  bridge: string;
  isGateway: boolean;
  isDefaultGateway: boolean;
  forceAddress: boolean;
  mtu?: number;
  hairpinMode: boolean;
  promiscMode: boolean;
}

export interface AttachIp {
  /** The pod's address in CIDR form, e.g. 10.244.1.5/24. */
  address: string;
  gateway?: string;
}

export interface AttachRequest {
  containerId: string;
  ifname: string;
  netns: string;
  ips: AttachIp[];
  routes: { dst: string; gw?: string }[];
  mac?: string;
}

export interface Attachment {
  bridge: { name: string; mac: string };
  host: { name: string; mac: string };
  pod: { name: string; mac: string; mtu: number; sandbox: string };
}

export class AttachError extends Error {
  constructor(message: string, readonly cniCode: number) {
    super(message);
    this.name = 'AttachError';
  }
}

/** Host-side veth name: stable per (container, ifname), so DEL and GC find it without the pod namespace. */
export function hostVethName(containerId: string, ifname: string): string {
  return 'veth' + sha256Hex(`${containerId}/${ifname}`).slice(0, 11);
}

export const HOST_VETH_PREFIX = 'veth';
const LOOPBACK_IFINDEX = 1;

type Undo = () => Promise<unknown>;

/** Ensures the bridge exists and is up; tolerates another ADD creating it at the same moment. */
export async function ensureBridge(host: Netlink, o: BridgeOptions): Promise<Link> {
  let br = await host.linkByName(o.bridge);
  if (!br) {
    try {
      await host.createBridge(o.bridge, o.mtu ? { mtu: o.mtu } : {});
    } catch (e) {
      if (!(e instanceof NetlinkError && e.code === 'EEXIST')) throw e;
    }
    br = await host.linkByName(o.bridge);
    if (!br) throw new AttachError(`bridge ${o.bridge} vanished while being created`, 11);
  }
  if (br.kind !== 'bridge') throw new AttachError(`bridge: ${JSON.stringify(o.bridge)} exists and is not a bridge (kind ${br.kind ?? 'device'})`, 7);
  if (!br.up) await host.setUp(br.index);
  if (o.promiscMode && !br.promisc) await host.setPromisc(br.index, true);
  return br;
}

/** Puts the gateway address of every pod subnet on the bridge (isGateway). */
export async function ensureGatewayAddresses(host: Netlink, br: Link, ips: AttachIp[], forceAddress: boolean): Promise<void> {
  const have = await host.addresses(br.index);
  for (const ip of ips) {
    if (!ip.gateway) continue;
    const pod = parseCidr(ip.address);
    const want = `${ip.gateway}/${pod.prefix}`;
    const sameFamily = have.filter((a) => a.family === pod.family && a.scope === 0);
    if (sameFamily.some((a) => a.cidr === want)) continue;
    // Another address in the same subnet on the bridge: replace it only with forceAddress.
    const conflicting = sameFamily.filter((a) => containsIp(parseCidr(a.cidr), pod.ip) || containsIp(pod, parseCidr(a.cidr).ip));
    if (conflicting.length && !forceAddress) {
      throw new AttachError(
        `bridge ${br.name} already has address ${conflicting[0]!.cidr} in subnet ${networkOf(pod)}/${pod.prefix}; set forceAddress to replace it with ${want}`,
        7,
      );
    }
    for (const c of conflicting) await host.deleteAddress(br.index, c.cidr);
    await host.addAddress(br.index, want, { nodad: pod.family === 6 });
  }
}

/**
 * Creates the veth pair and configures both ends. `undo` collects the rollback.
 * The pod namespace must not already hold an interface named req.ifname.
 */
export async function attach(host: Netlink, o: BridgeOptions, req: AttachRequest, undo: Undo[]): Promise<Attachment> {
  const br = await ensureBridge(host, o);
  if (o.isGateway) await ensureGatewayAddresses(host, br, req.ips, o.forceAddress);

  const pod = Netlink.open(req.netns);
  try {
    const hostName = hostVethName(req.containerId, req.ifname);
    const mtu = o.mtu ?? br.mtu ?? 1500;
    const exists = new AttachError(`CNI_IFNAME: interface ${JSON.stringify(req.ifname)} already exists in ${req.netns}`, 4);
    const fd = openNetns(req.netns);
    try {
      const veth = { name: hostName, peerName: req.ifname, peerNetnsFd: fd, mtu, ...(req.mac ? { peerMac: req.mac } : {}) };
      // Create first, look only on EEXIST (the kernel creates both ends or neither):
      // the common path saves two lookups per pod.
      try {
        await host.createVeth(veth);
      } catch (e) {
        if (!(e instanceof NetlinkError && e.code === 'EEXIST')) throw e;
        if (await pod.linkByName(req.ifname)) throw exists;
        // A stale host veth of a previous attempt (same container and ifname) is replaced.
        const stale = await host.linkByName(hostName);
        if (!stale) throw exists;
        await host.deleteLink(stale.index);
        try {
          await host.createVeth(veth);
        } catch (e2) {
          throw e2 instanceof NetlinkError && e2.code === 'EEXIST' ? exists : e2;
        }
      }
    } finally {
      closeSync(fd);
    }
    const hostLink = await host.linkByName(hostName);
    if (!hostLink) throw new AttachError(`veth ${hostName} vanished after creation`, 11);
    undo.push(() => host.deleteLink(hostLink.index));

    // Enslave and bring up in one request; hairpin is a bridge-port setting, so after.
    await host.setMaster(hostLink.index, br.index, { up: true });
    if (o.hairpinMode) await host.setHairpin(hostLink.index, true);

    // lo is ifindex 1 in every network namespace (the kernel registers it first).
    await pod.setUp(LOOPBACK_IFINDEX);
    const podLink = await pod.linkByName(req.ifname);
    if (!podLink) throw new AttachError(`interface ${req.ifname} did not appear in ${req.netns}`, 11);
    for (const ip of req.ips) await pod.addAddress(podLink.index, ip.address, { nodad: parseCidr(ip.address).family === 6 });
    await pod.setUp(podLink.index);

    for (const r of podRoutes(o, req)) await pod.replaceRoute({ ...r, oif: podLink.index });

    // Read the bridge again: unless its MAC was set, it takes the lowest MAC of its ports
    // (00:00:00:00:00:00 with none), so enslaving the veth may have changed it.
    const brNow = (await host.linkByIndex(br.index)) ?? br;
    return {
      bridge: { name: brNow.name, mac: brNow.mac ?? '' },
      host: { name: hostName, mac: hostLink.mac ?? '' },
      pod: { name: req.ifname, mac: podLink.mac ?? '', mtu, sandbox: req.netns },
    };
  } finally {
    pod.close();
  }
}

/** The routes the pod gets: a default route per family via its gateway (isDefaultGateway), plus IPAM's. */
export function podRoutes(o: BridgeOptions, req: Pick<AttachRequest, 'ips' | 'routes'>): { dst: string; gw?: string }[] {
  const out: { dst: string; gw?: string }[] = [];
  const seen = new Set<string>();
  const add = (r: { dst: string; gw?: string }) => {
    const key = `${r.dst}|${r.gw ?? ''}`;
    if (!seen.has(key)) {
      seen.add(key);
      out.push(r);
    }
  };
  if (o.isDefaultGateway) {
    for (const ip of req.ips) {
      if (!ip.gateway) continue;
      add({ dst: parseCidr(ip.address).family === 4 ? '0.0.0.0/0' : '::/0', gw: ip.gateway });
    }
  }
  for (const r of req.routes) {
    const dstFam = parseCidr(r.dst).family;
    // A route without gw goes via the gateway of the same family (host-local convention).
    const gw = r.gw ?? req.ips.find((i) => parseCidr(i.address).family === dstFam)?.gateway;
    if (o.isDefaultGateway && (r.dst === '0.0.0.0/0' || r.dst === '::/0')) continue;
    add(gw ? { dst: r.dst, gw } : { dst: r.dst });
  }
  return out.map((r) => (r.dst === '0.0.0.0/0' || r.dst === '::/0' ? { ...r, dst: 'default' } : r));
}

/** Removes the pod's interface (which removes the host end too), or the host end when the namespace is gone. */
export async function detach(host: Netlink, containerId: string, ifname: string, netns?: string): Promise<void> {
  if (netns) {
    let pod: Netlink | undefined;
    try {
      pod = Netlink.open(netns);
    } catch {
      pod = undefined; // namespace gone: fall through to the host end
    }
    if (pod) {
      try {
        const l = await pod.linkByName(ifname);
        if (l) await pod.deleteLink(l.index);
      } finally {
        pod.close();
      }
    }
  }
  const h = await host.linkByName(hostVethName(containerId, ifname));
  if (h) await host.deleteLink(h.index);
}
