// The node's VXLAN device. Both skiff-cni (so the first pod of a fresh node is
// reachable before the agent's first sync) and the overlay reconciler ensure it;
// creation is idempotent and safe when several ADDs race.
//
// The VTEP MAC is derived from (VNI, underlay IP): locally administered, the same
// after an agent restart or a device re-creation, so peers' FDB entries stay valid.
import { Netlink, NetlinkError, type Link } from '../os/netlink.js';
import { bytesToMac, parseCidr } from '../util/ip.js';
import { sha256 } from '../util/sha256.js';

export interface OverlaySettings {
  vni: number;
  port: number;
  /** Device name; default "skiff.<vni>". */
  device?: string;
  /** Underlay interface; default: the interface of the default route, else the first with a global IPv4 address. */
  underlayInterface?: string;
}

export const VXLAN_OVERHEAD = 50;

export function vxlanName(o: Pick<OverlaySettings, 'vni' | 'device'>): string {
  return o.device ?? `skiff.${o.vni}`;
}

export function vtepMac(vni: number, underlayIp: string): string {
  const h = sha256(`${vni}/${underlayIp}`);
  h[0] = (h[0]! & 0xfe) | 0x02; // unicast, locally administered
  return bytesToMac(h.subarray(0, 6));
}

export interface Underlay {
  link: Link;
  ip: string;
}

/** Finds the underlay interface and its IPv4 address. */
export async function findUnderlay(nl: Netlink, name?: string): Promise<Underlay> {
  let link: Link | undefined;
  if (name) {
    link = await nl.linkByName(name);
    if (!link) throw Object.assign(new Error(`overlay.underlayInterface: interface ${JSON.stringify(name)} does not exist`), { cniCode: 7 });
  } else {
    const def = (await nl.routes(4)).find((r) => r.dst === 'default' && r.oif !== undefined);
    if (def) link = await nl.linkByIndex(def.oif!);
  }
  const addrs = (await nl.addresses()).filter((a) => a.family === 4 && a.scope === 0);
  if (!link) {
    const first = addrs.find((a) => a.index !== undefined);
    if (first) link = await nl.linkByIndex(first.index);
  }
  if (!link) throw Object.assign(new Error('overlay: no underlay interface (no default route and no global IPv4 address)'), { cniCode: 11 });
  const a = addrs.find((x) => x.index === link!.index);
  if (!a) throw Object.assign(new Error(`overlay: underlay interface ${link.name} has no IPv4 address`), { cniCode: 11 });
  return { link, ip: parseCidr(a.cidr).ip };
}

/** Ensures the VXLAN device exists and is up; returns it with its underlay. */
export async function ensureOverlayDevice(nl: Netlink, o: OverlaySettings): Promise<{ vxlan: Link; underlay: Underlay }> {
  const name = vxlanName(o);
  const underlay = await findUnderlay(nl, o.underlayInterface);
  let dev = await nl.linkByName(name);
  if (dev && dev.kind === 'vxlan' && (dev.vxlan?.vni !== o.vni || dev.vxlan?.port !== o.port || (dev.vxlan?.local && dev.vxlan.local !== underlay.ip))) {
    // Settings changed (VNI, port or underlay address): re-create.
    await nl.deleteLink(dev.index);
    dev = undefined;
  }
  if (!dev) {
    try {
      await nl.createVxlan({
        name,
        vni: o.vni,
        port: o.port,
        local: underlay.ip,
        link: underlay.link.index,
        mtu: (underlay.link.mtu ?? 1500) - VXLAN_OVERHEAD,
        mac: vtepMac(o.vni, underlay.ip),
        learning: false,
      });
    } catch (e) {
      if (!(e instanceof NetlinkError && e.code === 'EEXIST')) throw e;
    }
    dev = await nl.linkByName(name);
    if (!dev) throw Object.assign(new Error(`overlay: ${name} vanished while being created`), { cniCode: 11 });
  }
  if (dev.kind !== 'vxlan') throw Object.assign(new Error(`overlay: ${name} exists and is not a vxlan device`), { cniCode: 7 });
  if (!dev.up) await nl.setUp(dev.index);
  return { vxlan: dev, underlay };
}
