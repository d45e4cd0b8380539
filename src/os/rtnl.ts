// A small rtnetlink codec: netlink headers, the fixed headers of links, addresses,
// routes and neighbours, attributes (nested ones included) and error/ack decoding.
// Pure (no I/O, no Node modules beyond Buffer), so every byte is unit-tested without
// root; src/os/netlink.ts sends what this builds over skiff's native netlink socket.
//
// Why not the `netlink` package on this path: requiring its rtnetlink layer
// (netlink/dist/rt/rt.js) generates its struct codecs at load time and costs ~24 ms of
// CPU per process here, which a CNI plugin pays on every pod start (docs/cni.md).
//
// Layouts (include/uapi/linux/{netlink,rtnetlink,if_link,if_addr,neighbour}.h), all in
// host byte order (little-endian here) unless the attribute says otherwise:
//   nlmsghdr  len u32, type u16, flags u16, seq u32, pid u32                 16 bytes
//   nlattr    len u16, type u16 (NLA_F_NESTED 0x8000, NLA_F_NET_BYTEORDER 0x4000), payload, pad to 4
//   ifinfomsg family u8, pad u8, type u16, index s32, flags u32, change u32   16 bytes
//   ifaddrmsg family u8, prefixlen u8, flags u8, scope u8, index u32          8 bytes
//   rtmsg     family, dst_len, src_len, tos, table, protocol, scope, type u8; flags u32   12 bytes
//   ndmsg     family u8, pad u8, pad u16, ifindex s32, state u16, flags u8, type u8       12 bytes
//   nlmsgerr  error s32 (-errno, 0 = ack), the request's nlmsghdr (plus its payload
//             unless NLM_F_CAPPED), then extended-ack attributes when NLM_F_ACK_TLVS

// ---- constants ---------------------------------------------------------------

export const NLMSG_HDRLEN = 16;
export const NLMSG_NOOP = 1, NLMSG_ERROR = 2, NLMSG_DONE = 3, NLMSG_OVERRUN = 4;

export const NLM_F_REQUEST = 0x01, NLM_F_MULTI = 0x02, NLM_F_ACK = 0x04, NLM_F_ECHO = 0x08;
export const NLM_F_DUMP = 0x300;
export const NLM_F_REPLACE = 0x100, NLM_F_EXCL = 0x200, NLM_F_CREATE = 0x400;
/** In an NLMSG_ERROR: the echoed request was cut to its header / extended-ack attributes follow. */
export const NLM_F_CAPPED = 0x100, NLM_F_ACK_TLVS = 0x200;
export const NLMSGERR_ATTR_MSG = 1, NLMSGERR_ATTR_OFFS = 2;

export const RTM_NEWLINK = 16, RTM_DELLINK = 17, RTM_GETLINK = 18, RTM_SETLINK = 19;
export const RTM_NEWADDR = 20, RTM_DELADDR = 21, RTM_GETADDR = 22;
export const RTM_NEWROUTE = 24, RTM_DELROUTE = 25, RTM_GETROUTE = 26;
export const RTM_NEWNEIGH = 28, RTM_DELNEIGH = 29, RTM_GETNEIGH = 30;

export const NLA_F_NESTED = 0x8000, NLA_F_NET_BYTEORDER = 0x4000;
const NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xffff;

export const AF_UNSPEC = 0, AF_INET = 2, AF_BRIDGE = 7, AF_INET6 = 10;

export const IFF_UP = 0x1, IFF_PROMISC = 0x100;
export const IFLA_ADDRESS = 1, IFLA_BROADCAST = 2, IFLA_IFNAME = 3, IFLA_MTU = 4, IFLA_LINK = 5, IFLA_MASTER = 10;
export const IFLA_PROTINFO = 12, IFLA_LINKINFO = 18, IFLA_NET_NS_FD = 28, IFLA_EXT_MASK = 29, IFLA_LINK_NETNSID = 37;
export const IFLA_INFO_KIND = 1, IFLA_INFO_DATA = 2;
export const VETH_INFO_PEER = 1;
export const IFLA_VXLAN_ID = 1, IFLA_VXLAN_LINK = 3, IFLA_VXLAN_LOCAL = 4, IFLA_VXLAN_LEARNING = 7, IFLA_VXLAN_PORT = 15;
export const IFLA_BRPORT_MODE = 4; // hairpin
/** IFLA_EXT_MASK: leave the (large) statistics out of link replies. */
export const RTEXT_FILTER_SKIP_STATS = 1 << 3;

export const IFA_ADDRESS = 1, IFA_LOCAL = 2, IFA_BROADCAST = 4, IFA_FLAGS = 8;
export const IFA_F_NODAD = 0x02;

export const RTA_DST = 1, RTA_OIF = 4, RTA_GATEWAY = 5, RTA_TABLE = 15;
export const RTN_UNICAST = 1;
export const RT_SCOPE_UNIVERSE = 0, RT_SCOPE_LINK = 253, RT_SCOPE_HOST = 254;
export const RT_TABLE_MAIN = 254;
export const RTPROT_BOOT = 3;
export const RTNH_F_ONLINK = 4;

export const NDA_DST = 1, NDA_LLADDR = 2;
export const NUD_PERMANENT = 0x80;
export const NTF_SELF = 0x02;

// ---- errno -------------------------------------------------------------------

/** Linux errno numbers the rtnetlink paths can return, with strerror's text. */
const ERRNO: Record<number, [string, string]> = {
  1: ['EPERM', 'operation not permitted'],
  2: ['ENOENT', 'no such file or directory'],
  3: ['ESRCH', 'no such process'],
  4: ['EINTR', 'interrupted system call'],
  5: ['EIO', 'input/output error'],
  6: ['ENXIO', 'no such device or address'],
  7: ['E2BIG', 'argument list too long'],
  9: ['EBADF', 'bad file descriptor'],
  11: ['EAGAIN', 'resource temporarily unavailable'],
  12: ['ENOMEM', 'cannot allocate memory'],
  13: ['EACCES', 'permission denied'],
  16: ['EBUSY', 'device or resource busy'],
  17: ['EEXIST', 'file exists'],
  18: ['EXDEV', 'invalid cross-device link'],
  19: ['ENODEV', 'no such device'],
  22: ['EINVAL', 'invalid argument'],
  23: ['ENFILE', 'too many open files in system'],
  24: ['EMFILE', 'too many open files'],
  28: ['ENOSPC', 'no space left on device'],
  34: ['ERANGE', 'numerical result out of range'],
  36: ['ENAMETOOLONG', 'file name too long'],
  38: ['ENOSYS', 'function not implemented'],
  61: ['ENODATA', 'no data available'],
  71: ['EPROTO', 'protocol error'],
  74: ['EBADMSG', 'bad message'],
  75: ['EOVERFLOW', 'value too large for defined data type'],
  90: ['EMSGSIZE', 'message too long'],
  92: ['ENOPROTOOPT', 'protocol not available'],
  93: ['EPROTONOSUPPORT', 'protocol not supported'],
  95: ['EOPNOTSUPP', 'operation not supported'],
  97: ['EAFNOSUPPORT', 'address family not supported by protocol'],
  98: ['EADDRINUSE', 'address already in use'],
  99: ['EADDRNOTAVAIL', 'cannot assign requested address'],
  100: ['ENETDOWN', 'network is down'],
  101: ['ENETUNREACH', 'network is unreachable'],
  105: ['ENOBUFS', 'no buffer space available'],
  110: ['ETIMEDOUT', 'connection timed out'],
  113: ['EHOSTUNREACH', 'no route to host'],
  114: ['EALREADY', 'operation already in progress'],
  115: ['EINPROGRESS', 'operation now in progress'],
};

/** The symbolic name of an errno ("EEXIST"), or "E<n>" for one not in the table. */
export function errnoName(errno: number): string {
  return ERRNO[errno]?.[0] ?? `E${errno}`;
}

export function errnoText(errno: number): string {
  return ERRNO[errno]?.[1] ?? `error ${errno}`;
}

// ---- encoding ----------------------------------------------------------------

const align4 = (n: number): number => (n + 3) & ~3;

/** One attribute: length, type, payload, zero-padded to 4 bytes. A list payload is concatenated (nested attributes). */
export function attr(type: number, payload: Uint8Array | Uint8Array[]): Buffer {
  const parts = Array.isArray(payload) ? payload : [payload];
  let bodyLen = 0;
  for (const p of parts) bodyLen += p.length;
  const len = 4 + bodyLen;
  if (len > 0xffff) throw new RangeError(`netlink attribute ${type & NLA_TYPE_MASK}: ${len} bytes do not fit in an attribute`);
  const out = Buffer.alloc(align4(len));
  out.writeUInt16LE(len, 0);
  out.writeUInt16LE(type, 2);
  let off = 4;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** A nested attribute (NLA_F_NESTED set, as strict kernel parsing requires). */
export const nested = (type: number, children: Uint8Array[]): Buffer => attr(type | NLA_F_NESTED, children);

export const u8 = (v: number): Buffer => Buffer.from([v & 0xff]);
export const u16 = (v: number): Buffer => {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(v);
  return b;
};
export const u32 = (v: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0);
  return b;
};
export const be16 = (v: number): Buffer => {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(v);
  return b;
};
/** NUL-terminated string (interface names, link kinds). */
export const str = (s: string): Buffer => Buffer.from(s + '\0', 'utf8');

/** A whole message: nlmsghdr (length filled in, pid 0 = the kernel fills ours) + body parts. */
export function message(type: number, flags: number, seq: number, parts: Uint8Array[]): Buffer {
  let len = NLMSG_HDRLEN;
  for (const p of parts) len += p.length;
  const out = Buffer.alloc(len);
  out.writeUInt32LE(len, 0);
  out.writeUInt16LE(type, 4);
  out.writeUInt16LE(flags, 6);
  out.writeUInt32LE(seq >>> 0, 8);
  out.writeUInt32LE(0, 12);
  let off = NLMSG_HDRLEN;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

export interface IfInfoMsg {
  family?: number;
  type?: number;
  index?: number;
  flags?: number;
  change?: number;
}

export function ifinfomsg(h: IfInfoMsg = {}): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt8(h.family ?? AF_UNSPEC, 0);
  b.writeUInt16LE(h.type ?? 0, 2);
  b.writeInt32LE(h.index ?? 0, 4);
  b.writeUInt32LE((h.flags ?? 0) >>> 0, 8);
  b.writeUInt32LE((h.change ?? 0) >>> 0, 12);
  return b;
}

export interface IfAddrMsg {
  family: number;
  prefixlen?: number;
  flags?: number;
  scope?: number;
  index?: number;
}

export function ifaddrmsg(h: IfAddrMsg): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt8(h.family, 0);
  b.writeUInt8(h.prefixlen ?? 0, 1);
  b.writeUInt8(h.flags ?? 0, 2);
  b.writeUInt8(h.scope ?? 0, 3);
  b.writeUInt32LE(h.index ?? 0, 4);
  return b;
}

export interface RtMsg {
  family: number;
  dstLen?: number;
  srcLen?: number;
  tos?: number;
  table?: number;
  protocol?: number;
  scope?: number;
  type?: number;
  flags?: number;
}

export function rtmsg(h: RtMsg): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt8(h.family, 0);
  b.writeUInt8(h.dstLen ?? 0, 1);
  b.writeUInt8(h.srcLen ?? 0, 2);
  b.writeUInt8(h.tos ?? 0, 3);
  b.writeUInt8(h.table ?? 0, 4);
  b.writeUInt8(h.protocol ?? 0, 5);
  b.writeUInt8(h.scope ?? 0, 6);
  b.writeUInt8(h.type ?? 0, 7);
  b.writeUInt32LE((h.flags ?? 0) >>> 0, 8);
  return b;
}

export interface NdMsg {
  family: number;
  ifindex?: number;
  state?: number;
  flags?: number;
  type?: number;
}

export function ndmsg(h: NdMsg): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt8(h.family, 0);
  b.writeInt32LE(h.ifindex ?? 0, 4);
  b.writeUInt16LE(h.state ?? 0, 8);
  b.writeUInt8(h.flags ?? 0, 10);
  b.writeUInt8(h.type ?? 0, 11);
  return b;
}

// ---- decoding ----------------------------------------------------------------

export class NetlinkDecodeError extends Error {
  constructor(message: string) {
    super(`malformed netlink data: ${message}`);
    this.name = 'NetlinkDecodeError';
  }
}

export interface NlMsg {
  type: number;
  flags: number;
  seq: number;
  pid: number;
  /** Everything after the 16-byte header, up to nlmsg_len. */
  payload: Buffer;
}

/** Splits a buffer of back-to-back netlink messages (each padded to 4 bytes). */
export function parseMessages(buf: Buffer): NlMsg[] {
  const out: NlMsg[] = [];
  let off = 0;
  while (off + NLMSG_HDRLEN <= buf.length) {
    const len = buf.readUInt32LE(off);
    if (len < NLMSG_HDRLEN || off + len > buf.length) {
      throw new NetlinkDecodeError(`message at offset ${off} claims ${len} bytes, ${buf.length - off} left`);
    }
    out.push({
      type: buf.readUInt16LE(off + 4),
      flags: buf.readUInt16LE(off + 6),
      seq: buf.readUInt32LE(off + 8),
      pid: buf.readUInt32LE(off + 12),
      payload: buf.subarray(off + NLMSG_HDRLEN, off + len),
    });
    off += align4(len);
  }
  if (off < buf.length && buf.length - off >= 4) throw new NetlinkDecodeError(`${buf.length - off} trailing bytes after the last message`);
  return out;
}

/**
 * Attributes as type -> payload (flag bits masked off; the last of a repeated type
 * wins). A truncated attribute is an error, not silently dropped.
 */
export function parseAttrs(buf: Buffer, start = 0): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  let off = start;
  while (off + 4 <= buf.length) {
    const len = buf.readUInt16LE(off);
    const type = buf.readUInt16LE(off + 2) & NLA_TYPE_MASK;
    if (len < 4 || off + len > buf.length) throw new NetlinkDecodeError(`attribute type ${type} at offset ${off} claims ${len} bytes, ${buf.length - off} left`);
    out.set(type, buf.subarray(off + 4, off + len));
    off += align4(len);
  }
  return out;
}

/** A C string attribute (NUL and anything after it dropped). */
export function attrString(b: Buffer | undefined): string | undefined {
  if (!b) return undefined;
  const nul = b.indexOf(0);
  return b.toString('utf8', 0, nul < 0 ? b.length : nul);
}

export function attrU32(b: Buffer | undefined): number | undefined {
  return b && b.length >= 4 ? b.readUInt32LE(0) : undefined;
}

export function attrS32(b: Buffer | undefined): number | undefined {
  return b && b.length >= 4 ? b.readInt32LE(0) : undefined;
}

function need(payload: Buffer, n: number, what: string): void {
  if (payload.length < n) throw new NetlinkDecodeError(`${what} needs ${n} bytes, got ${payload.length}`);
}

export interface LinkMsg {
  family: number;
  type: number;
  index: number;
  flags: number;
  change: number;
  attrs: Map<number, Buffer>;
}

export function decodeLinkMsg(payload: Buffer): LinkMsg {
  need(payload, 16, 'ifinfomsg');
  return {
    family: payload.readUInt8(0),
    type: payload.readUInt16LE(2),
    index: payload.readInt32LE(4),
    flags: payload.readUInt32LE(8),
    change: payload.readUInt32LE(12),
    attrs: parseAttrs(payload, 16),
  };
}

export interface AddrMsg {
  family: number;
  prefixlen: number;
  flags: number;
  scope: number;
  index: number;
  attrs: Map<number, Buffer>;
}

export function decodeAddrMsg(payload: Buffer): AddrMsg {
  need(payload, 8, 'ifaddrmsg');
  return {
    family: payload.readUInt8(0),
    prefixlen: payload.readUInt8(1),
    flags: payload.readUInt8(2),
    scope: payload.readUInt8(3),
    index: payload.readUInt32LE(4),
    attrs: parseAttrs(payload, 8),
  };
}

export interface RouteMsg {
  family: number;
  dstLen: number;
  srcLen: number;
  tos: number;
  table: number;
  protocol: number;
  scope: number;
  type: number;
  flags: number;
  attrs: Map<number, Buffer>;
}

export function decodeRouteMsg(payload: Buffer): RouteMsg {
  need(payload, 12, 'rtmsg');
  return {
    family: payload.readUInt8(0),
    dstLen: payload.readUInt8(1),
    srcLen: payload.readUInt8(2),
    tos: payload.readUInt8(3),
    table: payload.readUInt8(4),
    protocol: payload.readUInt8(5),
    scope: payload.readUInt8(6),
    type: payload.readUInt8(7),
    flags: payload.readUInt32LE(8),
    attrs: parseAttrs(payload, 12),
  };
}

export interface NeighMsg {
  family: number;
  ifindex: number;
  state: number;
  flags: number;
  type: number;
  attrs: Map<number, Buffer>;
}

export function decodeNeighMsg(payload: Buffer): NeighMsg {
  need(payload, 12, 'ndmsg');
  return {
    family: payload.readUInt8(0),
    ifindex: payload.readInt32LE(4),
    state: payload.readUInt16LE(8),
    flags: payload.readUInt8(10),
    type: payload.readUInt8(11),
    attrs: parseAttrs(payload, 12),
  };
}

export interface NlErrorInfo {
  /** Positive errno; 0 for an acknowledgement. */
  errno: number;
  /** The kernel's extended-ack message (NETLINK_EXT_ACK), when it gave one. */
  detail?: string;
  /** Offset of the offending attribute in the request, when the kernel says. */
  offset?: number;
}

/** Decodes the payload of an NLMSG_ERROR (an error, or with errno 0 an ack). */
export function decodeError(payload: Buffer, flags: number): NlErrorInfo {
  need(payload, 4, 'nlmsgerr');
  const errno = -payload.readInt32LE(0);
  const info: NlErrorInfo = { errno };
  if (!(flags & NLM_F_ACK_TLVS) || payload.length < 4 + NLMSG_HDRLEN) return info;
  // The echoed request: its header only when capped, else header and payload.
  const echoed = flags & NLM_F_CAPPED ? NLMSG_HDRLEN : align4(payload.readUInt32LE(4));
  const start = 4 + echoed;
  if (start > payload.length) return info;
  const tlv = parseAttrs(payload, start);
  const msg = attrString(tlv.get(NLMSGERR_ATTR_MSG));
  if (msg) info.detail = msg;
  const offs = attrU32(tlv.get(NLMSGERR_ATTR_OFFS));
  if (offs !== undefined) info.offset = offs;
  return info;
}
