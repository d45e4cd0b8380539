// The rtnetlink codec (src/os/rtnl.ts) and the message builders of src/os/netlink.ts,
// without root: byte layouts, attribute alignment, round trips, error decoding, and
// real kernel replies captured once (test/fixtures/rtnl-kernel.ts).
import t from 'tap';
import * as R from '../../src/os/rtnl.js';
import { routeBody, toLink } from '../../src/os/netlink.js';
import { KERNEL } from '../fixtures/rtnl-kernel.js';

t.test('attributes: length excludes padding, payload is zero-padded to 4 bytes', async (t) => {
  const a = R.attr(R.IFLA_IFNAME, R.str('eth0'));
  t.equal(a.length, 12, '4 header + 5 payload, padded to 12');
  t.equal(a.readUInt16LE(0), 9, 'nla_len counts header and payload, not padding');
  t.equal(a.readUInt16LE(2), R.IFLA_IFNAME);
  t.same([...a.subarray(4)], [0x65, 0x74, 0x68, 0x30, 0, 0, 0, 0], '"eth0" NUL, then padding zeros');
  for (let n = 0; n <= 8; n++) {
    const b = R.attr(1, Buffer.alloc(n, 0xff));
    t.equal(b.length % 4, 0, `payload ${n}: aligned`);
    t.equal(b.readUInt16LE(0), 4 + n, `payload ${n}: length`);
    t.ok(b.subarray(4 + n).every((x) => x === 0), `payload ${n}: padding is zero`);
  }
  const n = R.nested(R.IFLA_LINKINFO, [R.attr(R.IFLA_INFO_KIND, R.str('veth'))]);
  t.equal(n.readUInt16LE(2), R.IFLA_LINKINFO | R.NLA_F_NESTED, 'nested flag set');
  t.equal(n.readUInt16LE(0), 4 + 12);
  t.throws(() => R.attr(1, Buffer.alloc(70000)), /do not fit/);
});

t.test('integers: host order, except be16 (ports)', async (t) => {
  t.same([...R.u32(0x01020304)], [4, 3, 2, 1]);
  t.same([...R.u16(0x0102)], [2, 1]);
  t.same([...R.be16(8472)], [0x21, 0x18]);
  t.same([...R.u8(0x1ff)], [0xff]);
  t.same([...R.u32(-1)], [0xff, 0xff, 0xff, 0xff], 'negative wraps to u32');
});

t.test('message header: total length, type, flags, seq; pid 0 for the kernel to fill', async (t) => {
  const m = R.message(R.RTM_NEWLINK, R.NLM_F_REQUEST | R.NLM_F_ACK | R.NLM_F_CREATE | R.NLM_F_EXCL, 7, [R.ifinfomsg(), R.attr(R.IFLA_IFNAME, R.str('br0'))]);
  t.equal(m.length, 16 + 16 + 8);
  t.equal(m.readUInt32LE(0), m.length);
  t.equal(m.readUInt16LE(4), R.RTM_NEWLINK);
  t.equal(m.readUInt16LE(6), 0x605);
  t.equal(m.readUInt32LE(8), 7);
  t.equal(m.readUInt32LE(12), 0);
  const [back] = R.parseMessages(m);
  t.equal(back!.type, R.RTM_NEWLINK);
  t.equal(back!.seq, 7);
  const link = R.decodeLinkMsg(back!.payload);
  t.equal(R.attrString(link.attrs.get(R.IFLA_IFNAME)), 'br0');
});

t.test('fixed headers round-trip', async (t) => {
  const li = R.decodeLinkMsg(Buffer.concat([R.ifinfomsg({ family: R.AF_BRIDGE, type: 1, index: 42, flags: R.IFF_UP | R.IFF_PROMISC, change: 0xffffffff }), R.attr(R.IFLA_MTU, R.u32(9000))]));
  t.same({ ...li, attrs: undefined }, { family: R.AF_BRIDGE, type: 1, index: 42, flags: 0x101, change: 0xffffffff, attrs: undefined });
  t.equal(R.attrU32(li.attrs.get(R.IFLA_MTU)), 9000);

  const ad = R.decodeAddrMsg(R.ifaddrmsg({ family: R.AF_INET6, prefixlen: 64, flags: R.IFA_F_NODAD, scope: 253, index: 7 }));
  t.same({ ...ad, attrs: undefined }, { family: R.AF_INET6, prefixlen: 64, flags: R.IFA_F_NODAD, scope: 253, index: 7, attrs: undefined });

  const rt = R.decodeRouteMsg(R.rtmsg({ family: R.AF_INET, dstLen: 24, srcLen: 0, tos: 0, table: 254, protocol: 3, scope: 253, type: 1, flags: R.RTNH_F_ONLINK }));
  t.same({ ...rt, attrs: undefined }, { family: 2, dstLen: 24, srcLen: 0, tos: 0, table: 254, protocol: 3, scope: 253, type: 1, flags: 4, attrs: undefined });

  const nd = R.decodeNeighMsg(R.ndmsg({ family: R.AF_BRIDGE, ifindex: 9, state: R.NUD_PERMANENT, flags: R.NTF_SELF, type: 0 }));
  t.same({ ...nd, attrs: undefined }, { family: 7, ifindex: 9, state: 0x80, flags: 2, type: 0, attrs: undefined });

  t.throws(() => R.decodeLinkMsg(Buffer.alloc(15)), /ifinfomsg needs 16 bytes/);
  t.throws(() => R.decodeRouteMsg(Buffer.alloc(11)), /rtmsg needs 12 bytes/);
});

t.test('veth request: the peer (name, netns fd, MTU, MAC) nests inside IFLA_INFO_DATA', async (t) => {
  // What Netlink.createVeth sends, decoded back level by level.
  const peer = [R.ifinfomsg(), R.attr(R.IFLA_IFNAME, R.str('eth0')), R.attr(R.IFLA_NET_NS_FD, R.u32(17)), R.attr(R.IFLA_MTU, R.u32(1450))];
  const body = Buffer.concat([
    R.ifinfomsg(),
    R.attr(R.IFLA_IFNAME, R.str('veth0123456789a')),
    R.nested(R.IFLA_LINKINFO, [R.attr(R.IFLA_INFO_KIND, R.str('veth')), R.nested(R.IFLA_INFO_DATA, [R.nested(R.VETH_INFO_PEER, peer)])]),
  ]);
  const top = R.decodeLinkMsg(body);
  t.equal(R.attrString(top.attrs.get(R.IFLA_IFNAME)), 'veth0123456789a', '15-byte name + NUL, padded');
  const info = R.parseAttrs(top.attrs.get(R.IFLA_LINKINFO)!);
  t.equal(R.attrString(info.get(R.IFLA_INFO_KIND)), 'veth');
  const data = R.parseAttrs(info.get(R.IFLA_INFO_DATA)!);
  const p = R.decodeLinkMsg(data.get(R.VETH_INFO_PEER)!);
  t.equal(R.attrString(p.attrs.get(R.IFLA_IFNAME)), 'eth0');
  t.equal(R.attrU32(p.attrs.get(R.IFLA_NET_NS_FD)), 17);
  t.equal(R.attrU32(p.attrs.get(R.IFLA_MTU)), 1450);
});

t.test('routes: default, onlink, tables above 255 via RTA_TABLE', async (t) => {
  const def = routeBody({ dst: 'default', gw: '10.0.0.1', oif: 3 });
  const d = R.decodeRouteMsg(Buffer.concat(def));
  t.equal(d.family, R.AF_INET);
  t.equal(d.dstLen, 0);
  t.equal(d.table, 254);
  t.equal(d.protocol, R.RTPROT_BOOT);
  t.equal(d.type, R.RTN_UNICAST);
  t.notOk(d.attrs.has(R.RTA_DST), 'no RTA_DST for a default route');
  t.same([...d.attrs.get(R.RTA_GATEWAY)!], [10, 0, 0, 1]);
  t.equal(R.attrU32(d.attrs.get(R.RTA_OIF)), 3);

  const v6 = R.decodeRouteMsg(Buffer.concat(routeBody({ dst: 'fd00:1::/64', gw: 'fd00::1', onlink: true, proto: 186, table: 1000, scope: 'link' })));
  t.equal(v6.family, R.AF_INET6);
  t.equal(v6.dstLen, 64);
  t.equal(v6.table, 0, 'rtm_table 0 (RT_TABLE_UNSPEC) when the table does not fit');
  t.equal(R.attrU32(v6.attrs.get(R.RTA_TABLE)), 1000);
  t.equal(v6.flags, R.RTNH_F_ONLINK);
  t.equal(v6.protocol, 186);
  t.equal(v6.scope, R.RT_SCOPE_LINK);
  t.equal(v6.attrs.get(R.RTA_DST)!.length, 16);
  t.equal(routeBody({ dst: 'default', gw: 'fd00::1' }).length, 2, 'family of a default route from its gateway');
  t.equal(R.decodeRouteMsg(routeBody({ dst: 'default', gw: 'fd00::1' })[0]!).family, R.AF_INET6);
});

t.test('parseMessages: back-to-back padded messages; truncation is an error', async (t) => {
  const a = R.message(R.RTM_NEWADDR, R.NLM_F_MULTI, 1, [R.ifaddrmsg({ family: R.AF_INET, index: 1 }), R.attr(3 /* IFA_LABEL */, R.str('lo'))]);
  const b = R.message(R.NLMSG_DONE, R.NLM_F_MULTI, 1, [R.u32(0)]);
  const msgs = R.parseMessages(Buffer.concat([a, b]));
  t.equal(msgs.length, 2);
  t.equal(msgs[1]!.type, R.NLMSG_DONE);
  t.throws(() => R.parseMessages(Buffer.concat([a, b]).subarray(0, a.length + 10)), /malformed netlink data/);
  const lying = Buffer.from(a);
  lying.writeUInt32LE(1000, 0);
  t.throws(() => R.parseMessages(lying), /claims 1000 bytes/);
  lying.writeUInt32LE(8, 0);
  t.throws(() => R.parseMessages(lying), /claims 8 bytes/);
  t.same(R.parseMessages(Buffer.alloc(0)), []);
});

t.test('parseAttrs: flag bits masked, truncated attribute is an error, last duplicate wins', async (t) => {
  const buf = Buffer.concat([R.attr(1 | R.NLA_F_NESTED, R.u32(1)), R.attr(2 | R.NLA_F_NET_BYTEORDER, R.be16(80)), R.attr(1, R.u32(2))]);
  const m = R.parseAttrs(buf);
  t.same([...m.keys()].sort(), [1, 2]);
  t.equal(R.attrU32(m.get(1)), 2);
  t.equal(m.get(2)!.readUInt16BE(0), 80);
  const bad = Buffer.from(buf);
  bad.writeUInt16LE(200, 0);
  t.throws(() => R.parseAttrs(bad), /attribute type 1 at offset 0 claims 200 bytes/);
  bad.writeUInt16LE(2, 0);
  t.throws(() => R.parseAttrs(bad), /claims 2 bytes/);
  t.equal(R.attrString(Buffer.from('br0\0\0\0')), 'br0');
  t.equal(R.attrString(Buffer.from('nonul')), 'nonul');
  t.equal(R.attrU32(Buffer.alloc(2)), undefined, 'short payload is not a u32');
});

t.test('errors: errno names, acks, capped and uncapped echoes, extended-ack messages', async (t) => {
  t.equal(R.errnoName(17), 'EEXIST');
  t.equal(R.errnoName(19), 'ENODEV');
  t.equal(R.errnoName(99), 'EADDRNOTAVAIL');
  t.equal(R.errnoName(4095), 'E4095');
  t.equal(R.errnoText(1), 'operation not permitted');

  const hdr = R.message(R.RTM_NEWLINK, 0, 5, [R.ifinfomsg()]);
  const err = (errno: number, flags: number, echo: Buffer, tlvs: Buffer[]) => {
    const e = Buffer.alloc(4);
    e.writeInt32LE(-errno);
    return R.message(R.NLMSG_ERROR, flags, 5, [e, echo, ...tlvs]);
  };
  // Capped: only the request's header is echoed.
  const capped = R.parseMessages(err(22, R.NLM_F_CAPPED | R.NLM_F_ACK_TLVS, hdr.subarray(0, 16), [R.attr(R.NLMSGERR_ATTR_MSG, R.str('Unknown device type')), R.attr(R.NLMSGERR_ATTR_OFFS, R.u32(36))]))[0]!;
  t.same(R.decodeError(capped.payload, capped.flags), { errno: 22, detail: 'Unknown device type', offset: 36 });
  // Uncapped: the whole request is echoed before the TLVs.
  const full = R.parseMessages(err(95, R.NLM_F_ACK_TLVS, hdr, [R.attr(R.NLMSGERR_ATTR_MSG, R.str('not supported'))]))[0]!;
  t.same(R.decodeError(full.payload, full.flags), { errno: 95, detail: 'not supported' });
  // No TLVs flag: no detail even if bytes follow.
  const plain = R.parseMessages(err(17, 0, hdr, []))[0]!;
  t.same(R.decodeError(plain.payload, plain.flags), { errno: 17 });
  const ack = R.parseMessages(err(0, R.NLM_F_CAPPED, hdr.subarray(0, 16), []))[0]!;
  t.equal(R.decodeError(ack.payload, ack.flags).errno, 0);
  t.throws(() => R.decodeError(Buffer.alloc(2), 0), /nlmsgerr needs 4 bytes/);
});

t.test('real kernel replies decode', async (t) => {
  const [m] = R.parseMessages(KERNEL.vxlan);
  t.equal(m!.type, R.RTM_NEWLINK);
  const link = toLink(R.decodeLinkMsg(m!.payload));
  t.equal(link.name, 'sktvx');
  t.equal(link.kind, 'vxlan');
  t.equal(link.mtu, 1450);
  t.same(link.vxlan, { vni: 42, port: 8472, local: '10.0.0.7', learning: false });
  t.equal(link.up, false);
  t.match(link.mac, /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);

  const [ex] = R.parseMessages(KERNEL.eexist);
  t.equal(ex!.type, R.NLMSG_ERROR);
  t.same(R.decodeError(ex!.payload, ex!.flags), { errno: 17 });

  const [range] = R.parseMessages(KERNEL.erange);
  t.ok(range!.flags & R.NLM_F_CAPPED, 'NETLINK_CAP_ACK is on');
  const info = R.decodeError(range!.payload, range!.flags);
  t.equal(R.errnoName(info.errno), 'ERANGE');
  t.equal(info.detail, 'VXLAN ID must be lower than 16777216', "the kernel's own explanation");
  t.type(info.offset, 'number');

  const [ack] = R.parseMessages(KERNEL.ack);
  t.equal(R.decodeError(ack!.payload, ack!.flags).errno, 0);

  const dump = R.parseMessages(KERNEL.addrs);
  t.same(dump.map((x) => x.type), [R.RTM_NEWADDR, R.RTM_NEWADDR, R.NLMSG_DONE]);
  const addrs = dump.filter((x) => x.type === R.RTM_NEWADDR).map((x) => R.decodeAddrMsg(x.payload));
  t.same(addrs.map((a) => [a.family, a.prefixlen, a.index]), [[R.AF_INET, 8, 1], [R.AF_INET6, 128, 1]]);
  t.same([...addrs[0]!.attrs.get(R.IFA_LOCAL)!], [127, 0, 0, 1]);
});
