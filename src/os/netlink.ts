// rtnetlink: links (bridge, veth, vxlan), addresses, routes, neighbours and FDB
// entries. A Netlink object is bound to the namespace in which its socket was created
// (see netns.ts), whatever the process does later.
//
// Messages are built and decoded by the small codec in rtnl.ts and exchanged over
// skiff's native netlink socket (skiff_native.c: nlOpen/nlRequest), synchronously:
// each request is one sendto and a few recvs of microseconds, and the CNI plugin, a
// process started for every pod, pays nothing at load time. (The `netlink` npm
// package's rtnetlink layer costs ~24 ms of CPU just to require; docs/cni.md.) The
// methods stay async so callers need not care, and so a different transport could
// be swapped in.
//
// Writes are idempotent where the kernel allows it (REPLACE); "exists" and
// "not found" surface as NetlinkError codes EEXIST / ENOENT / ENODEV / ESRCH.
import { closeSync } from 'node:fs';
import { native } from './native.js';
import { inNetns } from './netns.js';
import * as R from './rtnl.js';
import { attr, be16, message, nested, str, u8, u32 } from './rtnl.js';
import { bytesToIp, bytesToMac, familyOf, ipToBytes, macToBytes, parseCidr } from '../util/ip.js';

export class NetlinkError extends Error {
  /** Symbolic errno ("EEXIST"), or a short reason for non-errno failures. */
  readonly code: string;
  constructor(
    code: string,
    readonly op: string,
    /** The kernel's errno (positive), when the kernel refused the request. */
    readonly errno?: number,
    /** The kernel's own explanation (extended ack), when it gave one. */
    readonly detail?: string,
  ) {
    super(`${op}: ${code}${errno ? ` (${R.errnoText(errno)})` : ''}${detail ? `: ${detail}` : ''}`);
    this.code = code;
    this.name = 'NetlinkError';
  }
}

export interface Link {
  index: number;
  name: string;
  kind?: string;
  mac?: string;
  mtu?: number;
  up: boolean;
  master?: number;
  /** veth: the peer's ifindex (in whatever namespace it lives). */
  peerIndex?: number;
  linkNetnsid?: number;
  /** vxlan: VNI, port, local address. */
  vxlan?: { vni?: number; port?: number; local?: string; learning?: boolean };
  promisc: boolean;
}

export interface Route {
  dst: string; // CIDR, or "default"
  gw?: string;
  oif?: number;
  onlink?: boolean;
  scope?: 'universe' | 'link' | 'host';
  table?: number;
  family: 4 | 6;
  proto?: number;
}

export interface Address {
  index: number;
  cidr: string;
  family: 4 | 6;
  scope: number;
}

export interface VethSpec {
  /** Host-side name (in this socket's namespace). */
  name: string;
  /** Pod-side name, created directly in the namespace given by peerNetnsFd. */
  peerName: string;
  peerNetnsFd?: number;
  mtu?: number;
  peerMac?: string;
  mac?: string;
}

export interface VxlanSpec {
  name: string;
  vni: number;
  port: number;
  local?: string;
  /** Underlay device index. */
  link?: number;
  mtu?: number;
  mac?: string;
  learning?: boolean;
}

const NETLINK_ROUTE = 0;
const CREATE_REPLACE = R.NLM_F_CREATE | R.NLM_F_REPLACE;
const CREATE_EXCL = R.NLM_F_CREATE | R.NLM_F_EXCL;
/** Codes that mean "already gone" for the delete/lookup helpers. */
const GONE_LINK = new Set(['ENODEV', 'ENOENT']);
const afOf = (fam: 4 | 6): number => (fam === 4 ? R.AF_INET : R.AF_INET6);
const skipStats = (): Buffer => attr(R.IFLA_EXT_MASK, u32(R.RTEXT_FILTER_SKIP_STATS));

export class Netlink {
  private seq = 0;
  private closed = false;

  private constructor(private readonly fd: number) {}

  /** A socket in the current namespace, or in the namespace at `netnsPath`. */
  static open(netnsPath?: string): Netlink {
    const n = native();
    return new Netlink(inNetns(netnsPath, () => n.nlOpen(NETLINK_ROUTE)));
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeSync(this.fd);
  }

  /**
   * One request/reply exchange. Returns the reply's data messages (none for an
   * ack); an NLMSG_ERROR with a non-zero errno becomes a NetlinkError naming `op`.
   */
  private exchange(op: string, type: number, flags: number, body: Uint8Array[]): R.NlMsg[] {
    if (this.closed) throw new NetlinkError('EBADF', op);
    this.seq = (this.seq % 0x7fffffff) + 1;
    const msg = message(type, flags | R.NLM_F_REQUEST, this.seq, body);
    let raw: Buffer;
    try {
      raw = native().nlRequest(this.fd, msg);
    } catch (e) {
      const err = e as { errno?: number; code?: string; message?: string };
      throw new NetlinkError(err.errno ? R.errnoName(err.errno) : (err.code ?? 'EIO'), op, err.errno, err.message);
    }
    const out: R.NlMsg[] = [];
    for (const m of R.parseMessages(raw)) {
      if (m.type === R.NLMSG_ERROR) {
        const info = R.decodeError(m.payload, m.flags);
        if (info.errno !== 0) throw new NetlinkError(R.errnoName(info.errno), op, info.errno, info.detail);
      } else if (m.type === R.NLMSG_DONE) {
        // A dump that failed half-way reports its error in NLMSG_DONE.
        if (m.payload.length >= 4 && m.payload.readInt32LE(0) < 0) {
          const errno = -m.payload.readInt32LE(0);
          throw new NetlinkError(R.errnoName(errno), op, errno);
        }
      } else if (m.type !== R.NLMSG_NOOP) {
        out.push(m);
      }
    }
    return out;
  }

  /** A change: the kernel acks it or says why not. */
  private change(op: string, type: number, flags: number, body: Uint8Array[]): void {
    this.exchange(op, type, flags | R.NLM_F_ACK, body);
  }

  /** Like change, but false when the kernel says the object is already gone. */
  private remove(op: string, type: number, body: Uint8Array[], gone: ReadonlySet<string>): boolean {
    try {
      this.change(op, type, 0, body);
      return true;
    } catch (e) {
      if (e instanceof NetlinkError && gone.has(e.code)) return false;
      throw e;
    }
  }

  private dump(op: string, type: number, body: Uint8Array[]): R.NlMsg[] {
    return this.exchange(op, type, R.NLM_F_DUMP, body);
  }

  // ---- links ---------------------------------------------------------------

  async links(): Promise<Link[]> {
    return this.dump('list links', R.RTM_GETLINK, [R.ifinfomsg(), skipStats()])
      .filter((m) => m.type === R.RTM_NEWLINK)
      .map((m) => toLink(R.decodeLinkMsg(m.payload)));
  }

  private getLink(op: string, index: number, name?: string): Link | undefined {
    const body: Uint8Array[] = [R.ifinfomsg({ index }), skipStats()];
    if (name !== undefined) body.push(attr(R.IFLA_IFNAME, str(name)));
    try {
      const msgs = this.exchange(op, R.RTM_GETLINK, 0, body);
      const m = msgs.find((x) => x.type === R.RTM_NEWLINK);
      return m ? toLink(R.decodeLinkMsg(m.payload)) : undefined;
    } catch (e) {
      if (e instanceof NetlinkError && GONE_LINK.has(e.code)) return undefined;
      throw e;
    }
  }

  async linkByName(name: string): Promise<Link | undefined> {
    // The kernel refuses names it could never hold (EINVAL/ERANGE): such a link does not exist.
    if (name === '' || Buffer.byteLength(name) > 15) return undefined;
    return this.getLink(`get link ${name}`, 0, name);
  }

  async linkByIndex(index: number): Promise<Link | undefined> {
    return this.getLink(`get link #${index}`, index);
  }

  private newLink(op: string, name: string, info: Uint8Array[], extra: { mtu?: number; mac?: string } = {}): void {
    const body: Uint8Array[] = [R.ifinfomsg(), attr(R.IFLA_IFNAME, str(name))];
    if (extra.mtu) body.push(attr(R.IFLA_MTU, u32(extra.mtu)));
    if (extra.mac) body.push(attr(R.IFLA_ADDRESS, macToBytes(extra.mac)));
    body.push(nested(R.IFLA_LINKINFO, info));
    this.change(op, R.RTM_NEWLINK, CREATE_EXCL, body);
  }

  /** Creates a bridge; EEXIST when a link of that name exists. */
  async createBridge(name: string, opts: { mtu?: number } = {}): Promise<void> {
    this.newLink(`create bridge ${name}`, name, [attr(R.IFLA_INFO_KIND, str('bridge'))], opts);
  }

  /** Creates a veth pair; the peer goes straight into the namespace of peerNetnsFd. */
  async createVeth(v: VethSpec): Promise<void> {
    const peer: Uint8Array[] = [R.ifinfomsg(), attr(R.IFLA_IFNAME, str(v.peerName))];
    if (v.peerNetnsFd !== undefined) peer.push(attr(R.IFLA_NET_NS_FD, u32(v.peerNetnsFd)));
    if (v.mtu) peer.push(attr(R.IFLA_MTU, u32(v.mtu)));
    if (v.peerMac) peer.push(attr(R.IFLA_ADDRESS, macToBytes(v.peerMac)));
    const info = [attr(R.IFLA_INFO_KIND, str('veth')), nested(R.IFLA_INFO_DATA, [nested(R.VETH_INFO_PEER, peer)])];
    this.newLink(`create veth ${v.name}`, v.name, info, { ...(v.mtu ? { mtu: v.mtu } : {}), ...(v.mac ? { mac: v.mac } : {}) });
  }

  async createVxlan(x: VxlanSpec): Promise<void> {
    const data: Uint8Array[] = [attr(R.IFLA_VXLAN_ID, u32(x.vni)), attr(R.IFLA_VXLAN_PORT, be16(x.port)), attr(R.IFLA_VXLAN_LEARNING, u8(x.learning ? 1 : 0))];
    if (x.local) data.push(attr(R.IFLA_VXLAN_LOCAL, ipToBytes(x.local)));
    if (x.link) data.push(attr(R.IFLA_VXLAN_LINK, u32(x.link)));
    const info = [attr(R.IFLA_INFO_KIND, str('vxlan')), nested(R.IFLA_INFO_DATA, data)];
    this.newLink(`create vxlan ${x.name}`, x.name, info, { ...(x.mtu ? { mtu: x.mtu } : {}), ...(x.mac ? { mac: x.mac } : {}) });
  }

  private setLink(op: string, h: R.IfInfoMsg, attrs: Uint8Array[] = []): void {
    this.change(op, R.RTM_SETLINK, 0, [R.ifinfomsg(h), ...attrs]);
  }

  async setUp(index: number, up = true): Promise<void> {
    this.setLink(`set link #${index} ${up ? 'up' : 'down'}`, { index, flags: up ? R.IFF_UP : 0, change: R.IFF_UP });
  }

  async setPromisc(index: number, on: boolean): Promise<void> {
    this.setLink(`set link #${index} promisc ${on ? 'on' : 'off'}`, { index, flags: on ? R.IFF_PROMISC : 0, change: R.IFF_PROMISC });
  }

  async setMtu(index: number, mtu: number): Promise<void> {
    this.setLink(`set link #${index} mtu ${mtu}`, { index }, [attr(R.IFLA_MTU, u32(mtu))]);
  }

  async setMac(index: number, mac: string): Promise<void> {
    this.setLink(`set link #${index} address ${mac}`, { index }, [attr(R.IFLA_ADDRESS, macToBytes(mac))]);
  }

  /** Enslaves a link (to a bridge); `up` also brings it up in the same request. */
  async setMaster(index: number, master: number, opts: { up?: boolean } = {}): Promise<void> {
    const h = opts.up ? { index, flags: R.IFF_UP, change: R.IFF_UP } : { index };
    this.setLink(`set link #${index} master #${master}${opts.up ? ' up' : ''}`, h, [attr(R.IFLA_MASTER, u32(master))]);
  }

  /** Bridge port hairpin mode (IFLA_BRPORT_MODE inside a nested IFLA_PROTINFO, family AF_BRIDGE). */
  async setHairpin(index: number, on: boolean): Promise<void> {
    // The kernel reads a non-nested IFLA_PROTINFO as a bare port state, so NLA_F_NESTED matters.
    this.setLink(`set link #${index} hairpin ${on ? 'on' : 'off'}`, { family: R.AF_BRIDGE, index }, [
      nested(R.IFLA_PROTINFO, [attr(R.IFLA_BRPORT_MODE, u8(on ? 1 : 0))]),
    ]);
  }

  /** Deletes a link; false when it was already gone. */
  async deleteLink(index: number): Promise<boolean> {
    return this.remove(`delete link #${index}`, R.RTM_DELLINK, [R.ifinfomsg({ index })], GONE_LINK);
  }

  // ---- addresses -----------------------------------------------------------

  /** Addresses of one link (the kernel filters by index), or of every link. */
  async addresses(index?: number): Promise<Address[]> {
    const msgs = this.dump('list addresses', R.RTM_GETADDR, [R.ifaddrmsg({ family: R.AF_UNSPEC, index: index ?? 0 })]);
    const out: Address[] = [];
    for (const m of msgs) {
      if (m.type !== R.RTM_NEWADDR) continue;
      const a = R.decodeAddrMsg(m.payload);
      if (index !== undefined && a.index !== index) continue;
      const raw = a.attrs.get(R.IFA_LOCAL) ?? a.attrs.get(R.IFA_ADDRESS);
      if (!raw || (raw.length !== 4 && raw.length !== 16)) continue;
      out.push({ index: a.index, cidr: `${bytesToIp(raw)}/${a.prefixlen}`, family: raw.length === 4 ? 4 : 6, scope: a.scope });
    }
    return out;
  }

  /** Adds (or keeps) an address on a link. */
  async addAddress(index: number, cidr: string, opts: { nodad?: boolean } = {}): Promise<void> {
    const c = parseCidr(cidr);
    const bytes = ipToBytes(c.ip);
    const attrs: Uint8Array[] = [attr(R.IFA_LOCAL, bytes), attr(R.IFA_ADDRESS, bytes)];
    if (c.family === 4 && c.prefix < 31) {
      const b = Buffer.from(bytes);
      for (let i = 0; i < 4; i++) {
        const bits = Math.max(0, Math.min(8, c.prefix - i * 8));
        b[i] = b[i]! | (~(0xff << (8 - bits)) & 0xff);
      }
      attrs.push(attr(R.IFA_BROADCAST, b));
    }
    const h = R.ifaddrmsg({ family: afOf(c.family), prefixlen: c.prefix, index, flags: opts.nodad ? R.IFA_F_NODAD : 0 });
    this.change(`add address ${cidr} to #${index}`, R.RTM_NEWADDR, CREATE_REPLACE, [h, ...attrs]);
  }

  async deleteAddress(index: number, cidr: string): Promise<boolean> {
    const c = parseCidr(cidr);
    const h = R.ifaddrmsg({ family: afOf(c.family), prefixlen: c.prefix, index });
    return this.remove(`delete address ${cidr} from #${index}`, R.RTM_DELADDR, [h, attr(R.IFA_LOCAL, ipToBytes(c.ip))], new Set(['EADDRNOTAVAIL', 'ENODEV']));
  }

  // ---- routes --------------------------------------------------------------

  /** Unicast routes of one table (main by default). */
  async routes(family: 4 | 6 = 4, table = R.RT_TABLE_MAIN): Promise<Route[]> {
    const msgs = this.dump('list routes', R.RTM_GETROUTE, [R.rtmsg({ family: afOf(family) })]);
    const out: Route[] = [];
    for (const m of msgs) {
      if (m.type !== R.RTM_NEWROUTE) continue;
      const r = R.decodeRouteMsg(m.payload);
      const t = R.attrU32(r.attrs.get(R.RTA_TABLE)) ?? r.table;
      if (t !== table || r.type !== R.RTN_UNICAST) continue;
      const dst = r.attrs.get(R.RTA_DST);
      const gw = r.attrs.get(R.RTA_GATEWAY);
      const oif = R.attrU32(r.attrs.get(R.RTA_OIF));
      out.push({
        dst: dst ? `${bytesToIp(dst)}/${r.dstLen}` : 'default',
        family: r.family === R.AF_INET ? 4 : 6,
        ...(gw ? { gw: bytesToIp(gw) } : {}),
        ...(oif !== undefined ? { oif } : {}),
        ...(r.flags & R.RTNH_F_ONLINK ? { onlink: true } : {}),
        proto: r.protocol,
        table,
      });
    }
    return out;
  }

  /** Adds or replaces a route. */
  async replaceRoute(r: Omit<Route, 'family'> & { family?: 4 | 6 }): Promise<void> {
    this.change(`replace route ${r.dst}${r.gw ? ' via ' + r.gw : ''}`, R.RTM_NEWROUTE, CREATE_REPLACE, routeBody(r));
  }

  async deleteRoute(r: Omit<Route, 'family'> & { family?: 4 | 6 }): Promise<boolean> {
    return this.remove(`delete route ${r.dst}${r.gw ? ' via ' + r.gw : ''}`, R.RTM_DELROUTE, routeBody(r), new Set(['ESRCH', 'ENOENT', 'ENODEV']));
  }

  // ---- neighbours and FDB ----------------------------------------------------

  /** A permanent neighbour entry ip -> mac on a link (replace). */
  async replaceNeighbor(index: number, ip: string, mac: string): Promise<void> {
    const h = R.ndmsg({ family: afOf(familyOf(ip)), ifindex: index, state: R.NUD_PERMANENT });
    this.change(`replace neighbour ${ip} on #${index}`, R.RTM_NEWNEIGH, CREATE_REPLACE, [h, attr(R.NDA_DST, ipToBytes(ip)), attr(R.NDA_LLADDR, macToBytes(mac))]);
  }

  async deleteNeighbor(index: number, ip: string): Promise<boolean> {
    const h = R.ndmsg({ family: afOf(familyOf(ip)), ifindex: index });
    return this.remove(`delete neighbour ${ip} on #${index}`, R.RTM_DELNEIGH, [h, attr(R.NDA_DST, ipToBytes(ip))], new Set(['ENOENT', 'ESRCH']));
  }

  async neighbors(index?: number, family: 4 | 6 = 4): Promise<{ index: number; ip: string; mac?: string; permanent: boolean }[]> {
    const msgs = this.dump('list neighbours', R.RTM_GETNEIGH, [R.ndmsg({ family: afOf(family) })]);
    const out: { index: number; ip: string; mac?: string; permanent: boolean }[] = [];
    for (const m of msgs) {
      if (m.type !== R.RTM_NEWNEIGH) continue;
      const n = R.decodeNeighMsg(m.payload);
      if (index !== undefined && n.ifindex !== index) continue;
      const dst = n.attrs.get(R.NDA_DST);
      if (!dst) continue;
      const ll = n.attrs.get(R.NDA_LLADDR);
      out.push({ index: n.ifindex, ip: bytesToIp(dst), ...(ll ? { mac: bytesToMac(ll) } : {}), permanent: (n.state & R.NUD_PERMANENT) !== 0 });
    }
    return out;
  }

  /** A permanent FDB entry on a vxlan device: mac -> remote underlay IP. */
  async replaceFdb(index: number, mac: string, dst: string): Promise<void> {
    const h = R.ndmsg({ family: R.AF_BRIDGE, ifindex: index, state: R.NUD_PERMANENT, flags: R.NTF_SELF });
    this.change(`replace fdb ${mac} dst ${dst} on #${index}`, R.RTM_NEWNEIGH, CREATE_REPLACE, [h, attr(R.NDA_LLADDR, macToBytes(mac)), attr(R.NDA_DST, ipToBytes(dst))]);
  }

  async deleteFdb(index: number, mac: string, dst: string): Promise<boolean> {
    const h = R.ndmsg({ family: R.AF_BRIDGE, ifindex: index, flags: R.NTF_SELF });
    return this.remove(`delete fdb ${mac} dst ${dst} on #${index}`, R.RTM_DELNEIGH, [h, attr(R.NDA_LLADDR, macToBytes(mac)), attr(R.NDA_DST, ipToBytes(dst))], new Set(['ENOENT', 'ESRCH']));
  }

  async fdb(index: number): Promise<{ mac: string; dst?: string; permanent: boolean }[]> {
    const msgs = this.dump('list fdb', R.RTM_GETNEIGH, [R.ndmsg({ family: R.AF_BRIDGE })]);
    const out: { mac: string; dst?: string; permanent: boolean }[] = [];
    for (const m of msgs) {
      if (m.type !== R.RTM_NEWNEIGH) continue;
      const n = R.decodeNeighMsg(m.payload);
      const ll = n.attrs.get(R.NDA_LLADDR);
      if (n.ifindex !== index || !ll) continue;
      const dst = n.attrs.get(R.NDA_DST);
      out.push({ mac: bytesToMac(ll), ...(dst ? { dst: bytesToIp(dst) } : {}), permanent: (n.state & R.NUD_PERMANENT) !== 0 });
    }
    return out;
  }
}

/** rtmsg + attributes of a route (used for both replace and delete). */
export function routeBody(r: Omit<Route, 'family'> & { family?: 4 | 6 }): Buffer[] {
  const fam = r.family ?? (r.dst === 'default' ? familyOf(r.gw ?? '0.0.0.0') : parseCidr(r.dst).family);
  const dst = r.dst === 'default' ? undefined : parseCidr(r.dst);
  const scope = r.scope === 'link' ? R.RT_SCOPE_LINK : r.scope === 'host' ? R.RT_SCOPE_HOST : R.RT_SCOPE_UNIVERSE;
  const table = r.table ?? R.RT_TABLE_MAIN;
  const body = [
    R.rtmsg({
      family: afOf(fam),
      dstLen: dst ? dst.prefix : 0,
      table: table < 256 ? table : 0,
      protocol: r.proto ?? R.RTPROT_BOOT,
      scope,
      type: R.RTN_UNICAST,
      flags: r.onlink ? R.RTNH_F_ONLINK : 0,
    }),
  ];
  if (table >= 256) body.push(attr(R.RTA_TABLE, u32(table)));
  if (dst) body.push(attr(R.RTA_DST, ipToBytes(dst.ip)));
  if (r.gw) body.push(attr(R.RTA_GATEWAY, ipToBytes(r.gw)));
  if (r.oif !== undefined) body.push(attr(R.RTA_OIF, u32(r.oif)));
  return body;
}

/** A decoded RTM_NEWLINK as the Link skiff works with. */
export function toLink(m: R.LinkMsg): Link {
  const a = m.attrs;
  const link: Link = {
    index: m.index,
    name: R.attrString(a.get(R.IFLA_IFNAME)) ?? '',
    up: (m.flags & R.IFF_UP) !== 0,
    promisc: (m.flags & R.IFF_PROMISC) !== 0,
  };
  const mac = a.get(R.IFLA_ADDRESS);
  if (mac) link.mac = bytesToMac(mac);
  const mtu = R.attrU32(a.get(R.IFLA_MTU));
  if (mtu !== undefined) link.mtu = mtu;
  const master = R.attrU32(a.get(R.IFLA_MASTER));
  if (master !== undefined) link.master = master;
  const nsid = R.attrS32(a.get(R.IFLA_LINK_NETNSID));
  if (nsid !== undefined) link.linkNetnsid = nsid;
  const peer = R.attrU32(a.get(R.IFLA_LINK));
  if (peer !== undefined) link.peerIndex = peer;
  const info = a.get(R.IFLA_LINKINFO);
  if (info) {
    const i = R.parseAttrs(info);
    const kind = R.attrString(i.get(R.IFLA_INFO_KIND));
    if (kind) link.kind = kind;
    const d = i.get(R.IFLA_INFO_DATA);
    if (d && kind === 'vxlan') {
      const v = R.parseAttrs(d);
      link.vxlan = {};
      const vni = R.attrU32(v.get(R.IFLA_VXLAN_ID));
      if (vni !== undefined) link.vxlan.vni = vni;
      const port = v.get(R.IFLA_VXLAN_PORT);
      if (port && port.length >= 2) link.vxlan.port = port.readUInt16BE(0);
      const local = v.get(R.IFLA_VXLAN_LOCAL);
      if (local) link.vxlan.local = bytesToIp(local);
      const learning = v.get(R.IFLA_VXLAN_LEARNING);
      if (learning) link.vxlan.learning = learning[0] === 1;
    }
  }
  return link;
}
