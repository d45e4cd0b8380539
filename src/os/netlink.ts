// rtnetlink through the `netlink` package: links (bridge, veth, vxlan), addresses,
// routes, neighbours and FDB entries. A Netlink object is bound to the namespace in
// which its socket was created (see netns.ts), whatever the process does later.
//
// The package leaves IFLA_LINKINFO as raw bytes, so link kinds are encoded here.
// Writes are idempotent where the kernel allows it (REPLACE); "exists" and
// "not found" surface as NetlinkError codes EEXIST / ENOENT / ENODEV / ESRCH.
// Deep, lazy requires: the package's index also loads nl80211, WireGuard and generic
// netlink, which the CNI plugin would pay for at every start; and a plain require
// (not an import) keeps the bundled plugin from loading netlink for VERSION.
import { createRequire } from 'node:module';
import type { RtNetlinkSocket } from 'netlink/dist/rt/rt.js';
type RtModule = typeof import('netlink/dist/rt/rt.js');
type RtStructs = typeof import('netlink/dist/rt/structs.js');
type Constants = typeof import('netlink/dist/constants.js');
const requireNetlink = createRequire(import.meta.url);
const { createRtNetlink } = requireNetlink('netlink/dist/rt/rt.js') as RtModule;
const rt = requireNetlink('netlink/dist/rt/structs.js') as RtStructs;
const { FlagsNew } = requireNetlink('netlink/dist/constants.js') as Constants;
import { inNetns } from './netns.js';
import { bytesToIp, bytesToMac, familyOf, ipToBytes, macToBytes, parseCidr } from '../util/ip.js';

export class NetlinkError extends Error {
  constructor(readonly code: string, readonly op: string) {
    super(`${op}: ${code}`);
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

const AF_INET = 2, AF_INET6 = 10, AF_BRIDGE = 7;
const IFLA_ADDRESS = 1, IFLA_IFNAME = 3, IFLA_MTU = 4, IFLA_NET_NS_FD = 28;
const IFLA_INFO_KIND = 1, IFLA_INFO_DATA = 2;
const VETH_INFO_PEER = 1;
const IFLA_VXLAN_ID = 1, IFLA_VXLAN_LINK = 3, IFLA_VXLAN_LOCAL = 4, IFLA_VXLAN_LEARNING = 7, IFLA_VXLAN_PORT = 15;
const IFLA_BRPORT_MODE = 4; // hairpin
const IFLA_PROTINFO = 12;
const RTM_SETLINK = 19;
const RTM_NEWNEIGH = 28, RTM_DELNEIGH = 29;
const NDA_DST = 1, NDA_LLADDR = 2;
const NLA_F_NESTED = 0x8000;
const NUD_PERMANENT = 0x80;
const NTF_SELF = 0x02;
const RTNH_F_ONLINK = 4;
const CREATE_REPLACE = FlagsNew.CREATE | FlagsNew.REPLACE;
const CREATE_EXCL = FlagsNew.CREATE | FlagsNew.EXCL;

/** One netlink attribute: length, type, payload, padded to 4 bytes. */
function attr(type: number, payload: Buffer | Buffer[]): Buffer {
  const body = Array.isArray(payload) ? Buffer.concat(payload) : payload;
  const len = 4 + body.length;
  const out = Buffer.alloc((len + 3) & ~3);
  out.writeUInt16LE(len, 0);
  out.writeUInt16LE(type, 2);
  body.copy(out, 4);
  return out;
}
const u8 = (v: number) => Buffer.from([v]);
const u32 = (v: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(v); return b; };
const be16 = (v: number) => { const b = Buffer.alloc(2); b.writeUInt16BE(v); return b; };
const str = (s: string) => Buffer.from(s + '\0');
/** struct ifinfomsg, all zero (family AF_UNSPEC). */
const ifinfomsg = () => Buffer.alloc(16);

/** Parses a run of attributes into type -> payload. */
function parseAttrs(buf: Buffer): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  let off = 0;
  while (off + 4 <= buf.length) {
    const len = buf.readUInt16LE(off);
    const type = buf.readUInt16LE(off + 2) & ~NLA_F_NESTED;
    if (len < 4) break;
    out.set(type, buf.subarray(off + 4, off + len));
    off += (len + 3) & ~3;
  }
  return out;
}

function errCode(e: unknown): string {
  const m = /Request rejected: (\w+)/.exec(String((e as Error)?.message ?? e));
  return m ? m[1]! : String((e as Error)?.message ?? e);
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

export class Netlink {
  private constructor(private readonly sock: RtNetlinkSocket) {}

  /** A socket in the current namespace, or in the namespace at `netnsPath`. */
  static open(netnsPath?: string): Netlink {
    return new Netlink(inNetns(netnsPath, () => createRtNetlink()));
  }

  close(): void {
    this.sock.socket.socket.close();
  }

  private async req<T>(op: string, p: Promise<T>): Promise<T> {
    try {
      return await p;
    } catch (e) {
      throw new NetlinkError(errCode(e), op);
    }
  }

  // ---- links ---------------------------------------------------------------

  async links(): Promise<Link[]> {
    const msgs = await this.req('list links', this.sock.getLinks());
    return msgs.map((m) => toLink(m.data, m.attrs as Record<string, unknown>));
  }

  async linkByName(name: string): Promise<Link | undefined> {
    try {
      const msgs = await this.sock.getLink({}, { ifname: name });
      return msgs[0] ? toLink(msgs[0].data, msgs[0].attrs as Record<string, unknown>) : undefined;
    } catch (e) {
      const code = errCode(e);
      if (code === 'ENODEV' || code === 'ENOENT') return undefined;
      throw new NetlinkError(code, `get link ${name}`);
    }
  }

  async linkByIndex(index: number): Promise<Link | undefined> {
    try {
      const msgs = await this.sock.getLink({ index });
      return msgs[0] ? toLink(msgs[0].data, msgs[0].attrs as Record<string, unknown>) : undefined;
    } catch (e) {
      const code = errCode(e);
      if (code === 'ENODEV' || code === 'ENOENT') return undefined;
      throw new NetlinkError(code, `get link #${index}`);
    }
  }

  private async newLink(op: string, name: string, info: Buffer, extra: { mtu?: number; mac?: string } = {}): Promise<void> {
    await this.req(
      op,
      this.sock.newLink({}, {
        ifname: name,
        ...(extra.mtu ? { mtu: extra.mtu } : {}),
        ...(extra.mac ? { address: macToBytes(extra.mac) } : {}),
        linkinfo: info,
      }, { flags: CREATE_EXCL }),
    );
  }

  /** Creates a bridge; EEXIST when a link of that name exists. */
  async createBridge(name: string, opts: { mtu?: number } = {}): Promise<void> {
    await this.newLink(`create bridge ${name}`, name, attr(IFLA_INFO_KIND, str('bridge')), opts);
  }

  /** Creates a veth pair; the peer goes straight into the namespace of peerNetnsFd. */
  async createVeth(v: VethSpec): Promise<void> {
    const peerAttrs: Buffer[] = [ifinfomsg(), attr(IFLA_IFNAME, str(v.peerName))];
    if (v.peerNetnsFd !== undefined) peerAttrs.push(attr(IFLA_NET_NS_FD, u32(v.peerNetnsFd)));
    if (v.mtu) peerAttrs.push(attr(IFLA_MTU, u32(v.mtu)));
    if (v.peerMac) peerAttrs.push(attr(IFLA_ADDRESS, macToBytes(v.peerMac)));
    const info = Buffer.concat([
      attr(IFLA_INFO_KIND, str('veth')),
      attr(IFLA_INFO_DATA | NLA_F_NESTED, attr(VETH_INFO_PEER | NLA_F_NESTED, peerAttrs)),
    ]);
    await this.newLink(`create veth ${v.name}`, v.name, info, { ...(v.mtu ? { mtu: v.mtu } : {}), ...(v.mac ? { mac: v.mac } : {}) });
  }

  async createVxlan(x: VxlanSpec): Promise<void> {
    const data: Buffer[] = [attr(IFLA_VXLAN_ID, u32(x.vni)), attr(IFLA_VXLAN_PORT, be16(x.port)), attr(IFLA_VXLAN_LEARNING, u8(x.learning ? 1 : 0))];
    if (x.local) data.push(attr(IFLA_VXLAN_LOCAL, ipToBytes(x.local)));
    if (x.link) data.push(attr(IFLA_VXLAN_LINK, u32(x.link)));
    const info = Buffer.concat([attr(IFLA_INFO_KIND, str('vxlan')), attr(IFLA_INFO_DATA | NLA_F_NESTED, data)]);
    await this.newLink(`create vxlan ${x.name}`, x.name, info, { ...(x.mtu ? { mtu: x.mtu } : {}), ...(x.mac ? { mac: x.mac } : {}) });
  }

  async setUp(index: number, up = true): Promise<void> {
    await this.req(`set link #${index} ${up ? 'up' : 'down'}`, this.sock.setLink({ index, change: { up: true }, flags: up ? { up: true } : {} }));
  }

  async setPromisc(index: number, on: boolean): Promise<void> {
    await this.req(`set link #${index} promisc`, this.sock.setLink({ index, change: { promisc: true }, flags: on ? { promisc: true } : {} }));
  }

  async setMtu(index: number, mtu: number): Promise<void> {
    await this.req(`set link #${index} mtu ${mtu}`, this.sock.setLink({ index }, { mtu }));
  }

  async setMac(index: number, mac: string): Promise<void> {
    await this.req(`set link #${index} address ${mac}`, this.sock.setLink({ index }, { address: macToBytes(mac) }));
  }

  async setMaster(index: number, master: number): Promise<void> {
    await this.req(`set link #${index} master #${master}`, this.sock.setLink({ index }, { master }));
  }

  /** Bridge port hairpin mode (IFLA_BRPORT_MODE through IFLA_PROTINFO on AF_BRIDGE). */
  async setHairpin(index: number, on: boolean): Promise<void> {
    // The kernel reads a non-nested IFLA_PROTINFO as a port state, so the nested
    // flag is required; the package does not set it, hence a hand-built message.
    const hdr = Buffer.alloc(16);
    hdr.writeUInt8(AF_BRIDGE, 0);
    hdr.writeInt32LE(index, 4);
    const msg = Buffer.concat([hdr, attr(IFLA_PROTINFO | NLA_F_NESTED, attr(IFLA_BRPORT_MODE, u8(on ? 1 : 0)))]);
    await this.req(`set link #${index} hairpin`, this.sock.request(RTM_SETLINK as never, [msg]));
  }

  /** Deletes a link; false when it was already gone. */
  async deleteLink(index: number): Promise<boolean> {
    try {
      await this.sock.delLink({ index });
      return true;
    } catch (e) {
      const code = errCode(e);
      if (code === 'ENODEV' || code === 'ENOENT') return false;
      throw new NetlinkError(code, `delete link #${index}`);
    }
  }

  // ---- addresses -----------------------------------------------------------

  async addresses(index?: number): Promise<{ index: number; cidr: string; family: 4 | 6; scope: number }[]> {
    const msgs = await this.req('list addresses', this.sock.getAddresses());
    return msgs
      .filter((m) => index === undefined || m.data.index === index)
      .map((m) => {
        const raw = m.attrs.local ?? m.attrs.address!;
        return { index: m.data.index!, cidr: `${bytesToIp(raw)}/${m.data.prefixlen}`, family: raw.length === 4 ? 4 : 6, scope: m.data.scope ?? 0 };
      });
  }

  /** Adds (or keeps) an address on a link. */
  async addAddress(index: number, cidr: string, opts: { nodad?: boolean } = {}): Promise<void> {
    const c = parseCidr(cidr);
    const bytes = ipToBytes(c.ip);
    const attrs: Record<string, unknown> = { local: bytes, address: bytes };
    if (c.family === 4 && c.prefix < 31) {
      const b = Buffer.from(bytes);
      for (let i = 0; i < 4; i++) {
        const bits = Math.max(0, Math.min(8, c.prefix - i * 8));
        b[i] = b[i]! | (~(0xff << (8 - bits)) & 0xff);
      }
      attrs.broadcast = b;
    }
    await this.req(
      `add address ${cidr} to #${index}`,
      this.sock.newAddress(
        { family: c.family === 4 ? AF_INET : AF_INET6, prefixlen: c.prefix, index, ...(opts.nodad ? { flags: { nodad: true } } : {}) },
        attrs,
        { flags: CREATE_REPLACE },
      ),
    );
  }

  async deleteAddress(index: number, cidr: string): Promise<boolean> {
    const c = parseCidr(cidr);
    try {
      await this.sock.delAddress({ family: c.family === 4 ? AF_INET : AF_INET6, prefixlen: c.prefix, index }, { local: ipToBytes(c.ip) });
      return true;
    } catch (e) {
      const code = errCode(e);
      if (code === 'EADDRNOTAVAIL' || code === 'ENODEV') return false;
      throw new NetlinkError(code, `delete address ${cidr}`);
    }
  }

  // ---- routes --------------------------------------------------------------

  async routes(family: 4 | 6 = 4, table = 254): Promise<Route[]> {
    const msgs = await this.req('list routes', this.sock.getRoutes({ family: family === 4 ? AF_INET : AF_INET6 }));
    return msgs
      .filter((m) => {
        const type = m.data.type as unknown;
        return (m.attrs.table ?? m.data.table) === table && (type === 'UNICAST' || type === 1);
      })
      .map((m) => {
        const fam = m.data.family === AF_INET ? 4 : 6;
        const dst = m.attrs.dst ? `${bytesToIp(m.attrs.dst)}/${m.data.dstLen}` : 'default';
        const flags = m.data.flags as unknown as { __unknown?: number } | undefined;
        return {
          dst,
          family: fam,
          ...(m.attrs.gateway ? { gw: bytesToIp(m.attrs.gateway) } : {}),
          ...(m.attrs.oif !== undefined ? { oif: m.attrs.oif } : {}),
          ...(flags?.__unknown && flags.__unknown & RTNH_F_ONLINK ? { onlink: true } : {}),
          ...(protoNumber(m.data.protocol) !== undefined ? { proto: protoNumber(m.data.protocol)! } : {}),
          table,
        } satisfies Route;
      });
  }

  /** Adds or replaces a route. */
  async replaceRoute(r: Omit<Route, 'family'> & { family?: 4 | 6 }): Promise<void> {
    const { data, attrs } = routeMsg(r);
    await this.req(`replace route ${r.dst}${r.gw ? ' via ' + r.gw : ''}`, this.sock.newRoute(data, attrs, { flags: CREATE_REPLACE }));
  }

  async deleteRoute(r: Omit<Route, 'family'> & { family?: 4 | 6 }): Promise<boolean> {
    const { data, attrs } = routeMsg(r);
    try {
      await this.sock.delRoute(data, attrs);
      return true;
    } catch (e) {
      const code = errCode(e);
      if (code === 'ESRCH' || code === 'ENOENT' || code === 'ENODEV') return false;
      throw new NetlinkError(code, `delete route ${r.dst}`);
    }
  }

  // ---- neighbours and FDB ----------------------------------------------------

  /** A permanent neighbour entry ip -> mac on a link (replace). */
  async replaceNeighbor(index: number, ip: string, mac: string): Promise<void> {
    const fam = familyOf(ip) === 4 ? AF_INET : AF_INET6;
    const msg = ndmsg(fam, index, NUD_PERMANENT, 0, [attr(NDA_DST, ipToBytes(ip)), attr(NDA_LLADDR, macToBytes(mac))]);
    await this.req(`replace neighbour ${ip}`, this.sock.request(RTM_NEWNEIGH as never, [msg], { flags: CREATE_REPLACE }));
  }

  async deleteNeighbor(index: number, ip: string): Promise<boolean> {
    const fam = familyOf(ip) === 4 ? AF_INET : AF_INET6;
    try {
      await this.sock.request(RTM_DELNEIGH as never, [ndmsg(fam, index, 0, 0, [attr(NDA_DST, ipToBytes(ip))])]);
      return true;
    } catch (e) {
      const code = errCode(e);
      if (code === 'ENOENT' || code === 'ESRCH') return false;
      throw new NetlinkError(code, `delete neighbour ${ip}`);
    }
  }

  async neighbors(index?: number, family: 4 | 6 = 4): Promise<{ index: number; ip: string; mac?: string; permanent: boolean }[]> {
    const msgs = await this.req('list neighbours', this.sock.getNeighbors({ family: family === 4 ? AF_INET : AF_INET6 }));
    return msgs
      .filter((m) => index === undefined || m.data.ifindex === index)
      .filter((m) => m.attrs.dst)
      .map((m) => ({
        index: m.data.ifindex!,
        ip: bytesToIp(m.attrs.dst!),
        ...(m.attrs.lladdr ? { mac: bytesToMac(m.attrs.lladdr) } : {}),
        permanent: ((m.data.state as unknown as number) & NUD_PERMANENT) !== 0 || (m.data.state as unknown as { permanent?: boolean })?.permanent === true,
      }));
  }

  /** A permanent FDB entry on a vxlan device: mac -> remote underlay IP. */
  async replaceFdb(index: number, mac: string, dst: string): Promise<void> {
    const msg = ndmsg(AF_BRIDGE, index, NUD_PERMANENT, NTF_SELF, [attr(NDA_LLADDR, macToBytes(mac)), attr(NDA_DST, ipToBytes(dst))]);
    await this.req(`replace fdb ${mac}`, this.sock.request(RTM_NEWNEIGH as never, [msg], { flags: CREATE_REPLACE }));
  }

  async deleteFdb(index: number, mac: string, dst: string): Promise<boolean> {
    try {
      const msg = ndmsg(AF_BRIDGE, index, 0, NTF_SELF, [attr(NDA_LLADDR, macToBytes(mac)), attr(NDA_DST, ipToBytes(dst))]);
      await this.sock.request(RTM_DELNEIGH as never, [msg]);
      return true;
    } catch (e) {
      const code = errCode(e);
      if (code === 'ENOENT' || code === 'ESRCH') return false;
      throw new NetlinkError(code, `delete fdb ${mac}`);
    }
  }

  async fdb(index: number): Promise<{ mac: string; dst?: string; permanent: boolean }[]> {
    const msgs = await this.req('list fdb', this.sock.getNeighbors({ family: AF_BRIDGE }));
    return msgs
      .filter((m) => m.data.ifindex === index && m.attrs.lladdr)
      .map((m) => ({
        mac: bytesToMac(m.attrs.lladdr!),
        ...(m.attrs.dst ? { dst: bytesToIp(m.attrs.dst) } : {}),
        permanent: ((m.data.state as unknown as number) & NUD_PERMANENT) !== 0 || (m.data.state as unknown as { permanent?: boolean })?.permanent === true,
      }));
  }
}

/** rtm_protocol as a number (the package names the well-known values). */
function protoNumber(p: unknown): number | undefined {
  if (typeof p === 'number') return p;
  if (typeof p === 'string') return (rt.RouteProtocol as unknown as Record<string, number>)[p];
  return undefined;
}

/** struct ndmsg + attributes, encoded by hand (state and flags as plain numbers). */
function ndmsg(family: number, ifindex: number, state: number, flags: number, attrs: Buffer[]): Buffer {
  const h = Buffer.alloc(12);
  h.writeUInt8(family, 0);
  h.writeInt32LE(ifindex, 4);
  h.writeUInt16LE(state, 8);
  h.writeUInt8(flags, 10);
  return Buffer.concat([h, ...attrs]);
}

function routeMsg(r: Omit<Route, 'family'> & { family?: 4 | 6 }) {
  const fam = r.family ?? (r.dst === 'default' ? familyOf(r.gw ?? '0.0.0.0') : parseCidr(r.dst).family);
  const dst = r.dst === 'default' ? undefined : parseCidr(r.dst);
  const scope = r.scope === 'link' ? 253 : r.scope === 'host' ? 254 : 0;
  const data = {
    family: fam === 4 ? AF_INET : AF_INET6,
    dstLen: dst ? dst.prefix : 0,
    table: r.table ?? 254,
    protocol: (r.proto ?? 3) as never,
    scope: scope as never,
    type: 1 as never,
    ...(r.onlink ? { flags: { __unknown: RTNH_F_ONLINK } as never } : {}),
  };
  const attrs: Record<string, unknown> = {};
  if (dst) attrs.dst = ipToBytes(dst.ip);
  if (r.gw) attrs.gateway = ipToBytes(r.gw);
  if (r.oif !== undefined) attrs.oif = r.oif;
  return { data, attrs };
}

function toLink(data: { index?: number; flags?: unknown }, attrs: Record<string, unknown>): Link {
  const flags = (data.flags ?? {}) as { up?: boolean; promisc?: boolean };
  const link: Link = {
    index: data.index!,
    name: attrs.ifname as string,
    up: !!flags.up,
    promisc: !!flags.promisc,
  };
  if (attrs.address) link.mac = bytesToMac(attrs.address as Buffer);
  if (attrs.mtu !== undefined) link.mtu = attrs.mtu as number;
  if (attrs.master !== undefined) link.master = attrs.master as number;
  if (attrs.linkNetnsid !== undefined) link.linkNetnsid = attrs.linkNetnsid as number;
  const info = attrs.linkinfo as Buffer | undefined;
  if (info) {
    const a = parseAttrs(info);
    const kind = a.get(IFLA_INFO_KIND);
    if (kind) link.kind = kind.toString('utf8').replace(/\0+$/, '');
    const d = a.get(IFLA_INFO_DATA);
    if (d && link.kind === 'vxlan') {
      const v = parseAttrs(d);
      link.vxlan = {};
      if (v.has(IFLA_VXLAN_ID)) link.vxlan.vni = v.get(IFLA_VXLAN_ID)!.readUInt32LE(0);
      if (v.has(IFLA_VXLAN_PORT)) link.vxlan.port = v.get(IFLA_VXLAN_PORT)!.readUInt16BE(0);
      if (v.has(IFLA_VXLAN_LOCAL)) link.vxlan.local = bytesToIp(v.get(IFLA_VXLAN_LOCAL)!);
      if (v.has(IFLA_VXLAN_LEARNING)) link.vxlan.learning = v.get(IFLA_VXLAN_LEARNING)![0] === 1;
    }
  }
  // IFLA_LINK (veth peer index) is exposed by the package as a raw buffer.
  const peer = attrs.link as Buffer | undefined;
  if (peer && peer.length >= 4) link.peerIndex = peer.readUInt32LE(0);
  return link;
}
