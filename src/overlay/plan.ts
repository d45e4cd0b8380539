// The overlay's desired kernel state, as a pure function of the Node objects, and
// the difference from what the kernel holds. No I/O here: reconciler.ts reads the
// kernel, calls planOverlay, and applies the ops it returns.
//
// Per remote node (flannel's vxlan scheme):
//   neighbour  <remote pod CIDR network address>  -> remote VTEP MAC   (permanent, on the vxlan device)
//   FDB        remote VTEP MAC -> remote underlay IP                  (permanent, self)
//   route      remote pod CIDR via <network address> onlink dev vxlan (rtm_protocol OVERLAY_ROUTE_PROTO)
// and on our own device the address <own pod CIDR network>/32 (/128), so the node
// itself has a source address that remote nodes route back over the overlay and
// peers can probe us at that address.
//
// What skiff owns, and therefore may change or delete:
//   neighbours: permanent entries on the vxlan device (the kernel's own are never permanent);
//   FDB:        permanent entries with a remote destination on the vxlan device;
//   routes:     main-table routes out of the vxlan device carrying OVERLAY_ROUTE_PROTO;
//   addresses:  global-scope addresses on the vxlan device.
// Anything else, even on the same device, is left alone.
import type { Node } from '../cluster/types.js';
import { familyOf, networkOf, parseCidr, type Family } from '../util/ip.js';

/** rtm_protocol for skiff's overlay routes: unassigned in rtnetlink.h / rt_protos, so identifiably ours. */
export const OVERLAY_ROUTE_PROTO = 95;

export const ANNOTATION_VTEP_MAC = 'skiff.io/vtep-mac';
export const ANNOTATION_UNDERLAY_IP = 'skiff.io/underlay-ip';

const MAC_RE = /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/;

export interface Peer {
  node: string;
  vtepMac: string;
  underlayIp: string;
  /** Normalised pod CIDRs (network/prefix), in the Node's order. */
  podCIDRs: string[];
}

export interface SkippedNode {
  node: string;
  reason: string;
}

export interface NeighborEntry {
  ip: string;
  mac: string;
}

export interface FdbEntry {
  mac: string;
  dst: string;
}

export interface RouteEntry {
  dst: string;
  gw: string;
  family: Family;
}

export interface DesiredOverlay {
  /** Addresses for our own vxlan device (CIDR form, /32 or /128). */
  addresses: string[];
  neighbors: NeighborEntry[];
  fdb: FdbEntry[];
  routes: RouteEntry[];
  peers: Peer[];
  skipped: SkippedNode[];
}

/** What the kernel holds, as read by the adapter (unfiltered: the plan decides what is ours). */
export interface CurrentOverlay {
  /** Neighbour entries on the vxlan device (both families). */
  neighbors: { ip: string; mac?: string; permanent: boolean }[];
  /** FDB entries on the vxlan device. */
  fdb: { mac: string; dst?: string; permanent: boolean }[];
  /** Main-table routes (both families). */
  routes: { dst: string; gw?: string; oif?: number; onlink?: boolean; proto?: number; family: Family }[];
  /** Addresses on the vxlan device. */
  addresses: { cidr: string; scope: number }[];
}

export type OverlayOp =
  | { op: 'replaceNeighbor'; ip: string; mac: string }
  | { op: 'deleteNeighbor'; ip: string }
  | { op: 'replaceFdb'; mac: string; dst: string }
  | { op: 'deleteFdb'; mac: string; dst: string }
  | { op: 'replaceRoute'; dst: string; gw: string; family: Family }
  | { op: 'deleteRoute'; dst: string; gw?: string; family: Family }
  | { op: 'addAddress'; cidr: string }
  | { op: 'deleteAddress'; cidr: string };

function normCidr(s: string): string {
  const c = parseCidr(s);
  return `${networkOf(c)}/${c.prefix}`;
}

function podCIDRsOf(n: Node): string[] {
  const list = n.spec?.podCIDRs?.length ? n.spec.podCIDRs : n.spec?.podCIDR ? [n.spec.podCIDR] : [];
  return [...new Set(list.map(normCidr))];
}

function overlaps(a: string, b: string): boolean {
  const x = parseCidr(a);
  const y = parseCidr(b);
  if (x.family !== y.family) return false;
  const p = Math.min(x.prefix, y.prefix);
  return networkOf({ ...x, prefix: p }) === networkOf({ ...y, prefix: p });
}

/** The gateway-side address of a pod CIDR: its network address (flannel's ".0"). */
export function gatewayOf(cidr: string): string {
  return networkOf(parseCidr(cidr));
}

/**
 * Reads one node's overlay data; returns a reason instead when it is incomplete or
 * invalid (such a node gets no entries until its data is complete).
 */
export function peerOf(n: Node): Peer | { reason: string } {
  const a = n.metadata.annotations ?? {};
  const mac = a[ANNOTATION_VTEP_MAC]?.trim().toLowerCase();
  const ip = a[ANNOTATION_UNDERLAY_IP]?.trim();
  if (!mac) return { reason: `annotation ${ANNOTATION_VTEP_MAC} missing` };
  if (!MAC_RE.test(mac) || mac === '00:00:00:00:00:00' || (parseInt(mac.slice(0, 2), 16) & 1) === 1) {
    return { reason: `annotation ${ANNOTATION_VTEP_MAC}: invalid value ${JSON.stringify(a[ANNOTATION_VTEP_MAC])} (a unicast MAC address)` };
  }
  if (!ip) return { reason: `annotation ${ANNOTATION_UNDERLAY_IP} missing` };
  try {
    familyOf(ip);
  } catch {
    return { reason: `annotation ${ANNOTATION_UNDERLAY_IP}: invalid value ${JSON.stringify(ip)} (an IP address)` };
  }
  let podCIDRs: string[];
  try {
    podCIDRs = podCIDRsOf(n);
  } catch (e) {
    return { reason: `spec.podCIDR(s): ${(e as Error).message}` };
  }
  if (podCIDRs.length === 0) return { reason: 'spec.podCIDR not assigned' };
  return { node: n.metadata.name, vtepMac: mac, underlayIp: familyOf(ip) === 4 ? ip : parseCidr(`${ip}/128`).ip, podCIDRs };
}

/** The desired overlay state for node `self` given every Node object. */
export function desiredOverlay(self: string, nodes: readonly Node[], opts: { underlayFamily?: Family } = {}): DesiredOverlay {
  const out: DesiredOverlay = { addresses: [], neighbors: [], fdb: [], routes: [], peers: [], skipped: [] };
  const me = nodes.find((n) => n.metadata.name === self);
  let own: string[] = [];
  let ownUnderlay: string | undefined;
  if (me) {
    try {
      own = podCIDRsOf(me);
    } catch {
      own = [];
    }
    ownUnderlay = me.metadata.annotations?.[ANNOTATION_UNDERLAY_IP]?.trim();
  }
  for (const c of own) {
    const p = parseCidr(c);
    out.addresses.push(`${networkOf(p)}/${p.family === 4 ? 32 : 128}`);
  }

  // Sorted by name so conflicts (two nodes claiming one CIDR or MAC) resolve the same way on every node.
  const others = nodes.filter((n) => n.metadata.name !== self).sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : 1));
  const claimedCidrs: { cidr: string; node: string }[] = own.map((cidr) => ({ cidr, node: self }));
  const claimedMacs = new Map<string, string>();
  for (const n of others) {
    const name = n.metadata.name;
    const p = peerOf(n);
    if ('reason' in p) {
      out.skipped.push({ node: name, reason: p.reason });
      continue;
    }
    if (opts.underlayFamily && familyOf(p.underlayIp) !== opts.underlayFamily) {
      out.skipped.push({ node: name, reason: `underlay IP ${p.underlayIp} is IPv${familyOf(p.underlayIp)}, this node's underlay is IPv${opts.underlayFamily}` });
      continue;
    }
    if (ownUnderlay && p.underlayIp === ownUnderlay) {
      out.skipped.push({ node: name, reason: `underlay IP ${p.underlayIp} is this node's own` });
      continue;
    }
    const macOwner = claimedMacs.get(p.vtepMac);
    if (macOwner) {
      out.skipped.push({ node: name, reason: `VTEP MAC ${p.vtepMac} already used by node ${macOwner}` });
      continue;
    }
    const clash = p.podCIDRs.map((c) => ({ c, with: claimedCidrs.find((x) => overlaps(x.cidr, c)) })).find((x) => x.with);
    if (clash) {
      out.skipped.push({ node: name, reason: `pod CIDR ${clash.c} overlaps ${clash.with!.cidr} of node ${clash.with!.node}` });
      continue;
    }
    claimedMacs.set(p.vtepMac, name);
    for (const cidr of p.podCIDRs) claimedCidrs.push({ cidr, node: name });
    out.peers.push(p);
    out.fdb.push({ mac: p.vtepMac, dst: p.underlayIp });
    for (const cidr of p.podCIDRs) {
      const gw = gatewayOf(cidr);
      out.neighbors.push({ ip: gw, mac: p.vtepMac });
      out.routes.push({ dst: cidr, gw, family: familyOf(gw) });
    }
  }
  return out;
}

/** Filters the kernel state down to the entries skiff owns (see the header). */
export function ownedState(cur: CurrentOverlay, vxlanIndex: number): CurrentOverlay {
  return {
    neighbors: cur.neighbors.filter((n) => n.permanent),
    fdb: cur.fdb.filter((f) => f.permanent && f.dst !== undefined && f.mac !== '00:00:00:00:00:00'),
    routes: cur.routes.filter((r) => r.oif === vxlanIndex && r.proto === OVERLAY_ROUTE_PROTO),
    addresses: cur.addresses.filter((a) => a.scope === 0),
  };
}

/**
 * The ops that turn the owned part of `current` into `desired`. Order matters for a
 * live data plane: stale routes go first (no traffic towards a vanished peer), then
 * stale neighbours and FDB entries; new FDB and neighbour entries are in place
 * before the route that uses them.
 */
export function diffOverlay(desired: DesiredOverlay, current: CurrentOverlay, vxlanIndex: number): OverlayOp[] {
  const owned = ownedState(current, vxlanIndex);
  const ops: OverlayOp[] = [];

  const wantRoutes = new Map(desired.routes.map((r) => [r.dst, r]));
  const haveRoutes = new Map(owned.routes.map((r) => [normCidr(r.dst === 'default' ? (r.family === 4 ? '0.0.0.0/0' : '::/0') : r.dst), r]));
  for (const [dst, r] of haveRoutes) {
    const w = wantRoutes.get(dst);
    // A changed gateway is handled by replace (same key); only routes nobody wants are deleted.
    if (!w) ops.push({ op: 'deleteRoute', dst, ...(r.gw ? { gw: r.gw } : {}), family: r.family });
  }

  const wantNeigh = new Map(desired.neighbors.map((n) => [n.ip, n]));
  for (const n of owned.neighbors) if (!wantNeigh.has(n.ip)) ops.push({ op: 'deleteNeighbor', ip: n.ip });

  const wantFdb = new Map(desired.fdb.map((f) => [f.mac, f]));
  for (const f of owned.fdb) {
    const w = wantFdb.get(f.mac);
    if (!w) ops.push({ op: 'deleteFdb', mac: f.mac, dst: f.dst! });
  }
  // A MAC with several destinations (appended by someone): keep only the wanted one.
  const fdbByMac = new Map<string, string[]>();
  for (const f of owned.fdb) fdbByMac.set(f.mac, [...(fdbByMac.get(f.mac) ?? []), f.dst!]);
  for (const f of desired.fdb) {
    const have = fdbByMac.get(f.mac) ?? [];
    if (have.length === 1 && have[0] === f.dst) continue;
    if (have.length > 1) for (const d of have) if (d !== f.dst) ops.push({ op: 'deleteFdb', mac: f.mac, dst: d });
    if (!(have.length > 1 && have.includes(f.dst))) ops.push({ op: 'replaceFdb', mac: f.mac, dst: f.dst });
  }

  const haveNeigh = new Map(owned.neighbors.map((n) => [n.ip, n]));
  for (const n of desired.neighbors) {
    if (haveNeigh.get(n.ip)?.mac !== n.mac) ops.push({ op: 'replaceNeighbor', ip: n.ip, mac: n.mac });
  }

  for (const r of desired.routes) {
    const h = haveRoutes.get(r.dst);
    if (!h || h.gw !== r.gw || !h.onlink) ops.push({ op: 'replaceRoute', dst: r.dst, gw: r.gw, family: r.family });
  }

  const wantAddr = new Set(desired.addresses);
  const haveAddr = new Set(owned.addresses.map((a) => normAddr(a.cidr)));
  for (const a of haveAddr) if (!wantAddr.has(a)) ops.push({ op: 'deleteAddress', cidr: a });
  for (const a of wantAddr) if (!haveAddr.has(a)) ops.push({ op: 'addAddress', cidr: a });
  return ops;
}

function normAddr(cidr: string): string {
  const c = parseCidr(cidr);
  return `${c.ip}/${c.prefix}`;
}

/** Convenience: desired state and ops in one call. */
export function planOverlay(self: string, nodes: readonly Node[], current: CurrentOverlay, vxlanIndex: number, opts: { underlayFamily?: Family } = {}): { desired: DesiredOverlay; ops: OverlayOp[] } {
  const desired = desiredOverlay(self, nodes, opts);
  return { desired, ops: diffOverlay(desired, current, vxlanIndex) };
}
