// nftables over netlink, without the nft binary: `NftNetlink` applies the same
// `Transaction`s as `Nft` (nft.ts) by encoding every operation as nf_tables netlink
// messages inside one nfnetlink batch (NFNL_MSG_BATCH_BEGIN ... BATCH_END), which the
// kernel applies atomically, exactly like `nft -f`. Nothing is read back first: tables,
// chains and sets are addressed by name (sets added in the same batch also by
// NFTA_SET_ID; jump/goto targets by NFTA_VERDICT_CHAIN), so the cost of a transaction
// depends on its size, not on the size of the table (nft 1.0.6 loads the whole table
// into its cache first; docs/nftnl.md).
//
// The encodings are the ones nft 1.0.6 produces for the same text (checked with
// `nft --debug=netlink,mnl`; test/integration/nftnl.test.ts compares `nft -j list
// ruleset` after applying each transaction both ways):
//   - registers: nft's 32-bit register allocation, converted to the 128-bit names
//     NFT_REG_1..4 where aligned (NFT_REG32_00 + n otherwise); a concatenation puts
//     each component in consecutive 32-bit registers, lengths rounded up to 4 bytes;
//   - payload fields (addresses, ports) are big-endian; meta mark, ct mark, ct state,
//     fib results and numgen values are host order; ct state matches are bitwise +
//     cmp neq 0 (`!=` is a plain cmp neq);
//   - prefixes on byte boundaries load only the prefix bytes; others load, mask, compare;
//     a range is cmp gte + cmp lte (`!=`: range neq); a one-element anonymous set is a cmp;
//   - in inet tables an ip/ip6 field is preceded by `meta nfproto` (once per rule and
//     family), as nft's dependency logic does;
//   - interval sets get start and end (flag INTERVAL_END, end = last + 1) elements, or
//     one element with NFTA_SET_ELEM_KEY_END for concatenations (NFT_SET_CONCAT);
//   - comments are nft's udata TLVs (type, length, NUL-terminated text); sets carry the
//     key (and data) byte order udata nft uses to print elements.
import { isIPv6 } from 'node:net';
import { endianness } from 'node:os';
import * as util from 'node:util';
import { closeSync } from 'node:fs';
import { ipToBytes, parseV4 } from '../util/ip.js';
import { native } from './native.js';
import { inNetns } from './netns.js';
import type { Executor } from './exec.js';
import {
  canonLiteral,
  Nft,
  NftError,
  renderKey,
  SELECTOR_TYPES,
  Transaction,
  priorityValue,
  type ChainObj,
  type ElementObj,
  type Expr,
  type KeyType,
  type Literal,
  type MapObj,
  type NftRunner,
  type Op,
  type RuleObj,
  type Selector,
  type SetObj,
  type TableFamily,
  type TableObj,
  type VerdictExpr,
} from './nft.js';

// ---------------------------------------------------------------------------------
// Constants (include/uapi/linux/netfilter/nf_tables.h, nfnetlink.h, netfilter.h)

const NETLINK_NETFILTER = 12;
const NFNL_SUBSYS_NFTABLES = 10;
const NFNL_MSG_BATCH_BEGIN = 0x10;
const NFNL_MSG_BATCH_END = 0x11;
const NLMSG_ERROR = 2;
const NLMSG_OVERRUN = 4;
const NLM_F_REQUEST = 0x1;
const NLM_F_ACK = 0x4;
const NLM_F_EXCL = 0x200;
const NLM_F_CREATE = 0x400;
const NLM_F_APPEND = 0x800;
const NLA_F_NESTED = 0x8000;
const NLMSGERR_ATTR_MSG = 1;
const NLMSGERR_ATTR_OFFS = 2;

const MSG = { NEWTABLE: 0, DELTABLE: 2, NEWCHAIN: 3, DELCHAIN: 5, NEWRULE: 6, DELRULE: 8, NEWSET: 9, DELSET: 11, NEWSETELEM: 12, DELSETELEM: 14, GETGEN: 16 } as const;

const FAMILY: Record<TableFamily, number> = { inet: 1, ip: 2, arp: 3, netdev: 5, bridge: 7, ip6: 10 };
const NFPROTO_IPV4 = 2;
const NFPROTO_IPV6 = 10;
const HOOKS: Record<string, number> = { prerouting: 0, input: 1, forward: 2, output: 3, postrouting: 4, ingress: 0 };

// Attributes.
const TABLE = { NAME: 1, FLAGS: 2, USERDATA: 6 };
const CHAIN = { TABLE: 1, NAME: 3, HOOK: 4, POLICY: 5, TYPE: 7, USERDATA: 12 };
const HOOK = { HOOKNUM: 1, PRIORITY: 2, DEV: 3 };
const RULE = { TABLE: 1, CHAIN: 2, HANDLE: 3, EXPRESSIONS: 4, USERDATA: 7 };
const SET = { TABLE: 1, NAME: 2, FLAGS: 3, KEY_TYPE: 4, KEY_LEN: 5, DATA_TYPE: 6, DATA_LEN: 7, DESC: 9, ID: 10, TIMEOUT: 11, USERDATA: 13 };
const SET_DESC = { SIZE: 1, CONCAT: 2 };
const SET_FIELD_LEN = 1;
const ELEMS = { TABLE: 1, SET: 2, ELEMENTS: 3, SET_ID: 4 };
const ELEM = { KEY: 1, DATA: 2, FLAGS: 3, TIMEOUT: 4, USERDATA: 6, KEY_END: 10 };
const LIST_ELEM = 1;
const EXPR = { NAME: 1, DATA: 2 };
const DATA = { VALUE: 1, VERDICT: 2 };
const VERDICT = { CODE: 1, CHAIN: 2 };

const SETF = { ANONYMOUS: 0x1, CONSTANT: 0x2, INTERVAL: 0x4, MAP: 0x8, TIMEOUT: 0x10, EVAL: 0x20, CONCAT: 0x80 };
const ELEM_INTERVAL_END = 1;
const NFT_DATA_VERDICT = 0xffffff00;

const V = { DROP: 0, ACCEPT: 1, CONTINUE: -1, JUMP: -3, GOTO: -4, RETURN: -5 };
const CMP = { EQ: 0, NEQ: 1, LT: 2, LTE: 3, GT: 4, GTE: 5 };
const PAYLOAD_BASE = { NETWORK: 1, TRANSPORT: 2 };
const META = { MARK: 3, IIFNAME: 6, OIFNAME: 7, NFPROTO: 15, L4PROTO: 16 };
const CT = { STATE: 0, MARK: 3 };
const CT_STATE_BITS: Record<string, number> = { invalid: 1, established: 2, related: 4, new: 8, untracked: 64 };

/** nft's data type ids (src/datatype.h) and their key byte order (BYTEORDER_HOST_ENDIAN 1, BIG_ENDIAN 2). */
const DTYPE: Record<KeyType, { id: number; len: number; order: number }> = {
  ipv4_addr: { id: 7, len: 4, order: 2 },
  ipv6_addr: { id: 8, len: 16, order: 2 },
  inet_proto: { id: 12, len: 1, order: 2 },
  inet_service: { id: 13, len: 2, order: 2 },
  mark: { id: 19, len: 4, order: 1 },
  ifname: { id: 41, len: 16, order: 1 },
  /** A numgen value: nft's plain integer type, host order. */
  numgen: { id: 4, len: 4, order: 1 },
};
const TYPE_INTEGER = 4;
const TYPE_BITS = 6;

const UDATA_SET = { KEYBYTEORDER: 0, DATABYTEORDER: 1, KEY_TYPEOF: 3, DATA_TYPEOF: 4, DATA_INTERVAL: 6, COMMENT: 7 };

// The typeof description nft keeps in a set's udata, for the one shape skiff declares
// with typeof: `typeof numgen inc mod 2 : ip daddr . tcp dport` (and ip6, udp, sctp).
// Read from `nft --debug=mnl add map ...` (nft 1.0.6): a nest of the expression's type
// (TYPEOF_EXPR, nft's enum expr_types) and its own udata (TYPEOF_DATA); a concatenation
// nests one such pair per component. Payload udata is (protocol description, field).
const TYPEOF = { EXPR: 0, DATA: 1 };
const EXPR_TYPE = { PAYLOAD: 7, CONCAT: 13, NUMGEN: 23 };
const PROTO_DESC = { ip: 12, ip6: 13, tcp: 8, udp: 6, sctp: 10 };
const FIELD = { ipDaddr: 12, ip6Daddr: 9, dport: 2 };
const udNest = (type: number, items: [number, Buffer][]) => [type, udata(items)] as [number, Buffer];
const udPayload = (index: number, desc: number, field: number) =>
  udNest(index, [
    [TYPEOF.EXPR, udU32(EXPR_TYPE.PAYLOAD)],
    udNest(TYPEOF.DATA, [
      [0, udU32(desc)],
      [1, udU32(field)],
    ]),
  ]);
/** KEY_TYPEOF and DATA_TYPEOF udata of a map keyed by `numgen`. */
function numgenTypeof(m: MapObj): [number, Buffer][] {
  const v6 = Array.isArray(m.value) && m.value[0] === 'ipv6_addr';
  return [
    udNest(UDATA_SET.KEY_TYPEOF, [
      [TYPEOF.EXPR, udU32(EXPR_TYPE.NUMGEN)],
      udNest(TYPEOF.DATA, [
        [0, udU32(0)], // inc
        [1, udU32(2)], // mod 2 (only the type matters)
        [2, udU32(0)], // offset
      ]),
    ]),
    udNest(UDATA_SET.DATA_TYPEOF, [
      [TYPEOF.EXPR, udU32(EXPR_TYPE.CONCAT)],
      udNest(TYPEOF.DATA, [udPayload(0, v6 ? PROTO_DESC.ip6 : PROTO_DESC.ip, v6 ? FIELD.ip6Daddr : FIELD.ipDaddr), udPayload(1, PROTO_DESC[m.portProto ?? 'tcp'], FIELD.dport)]),
    ]),
  ];
}

const LE = endianness() === 'LE';

// ---------------------------------------------------------------------------------
// A growable netlink message writer

class Writer {
  buf: Buffer;
  off = 0;
  constructor(size = 1 << 16) {
    this.buf = Buffer.allocUnsafe(size);
  }
  private ensure(n: number): void {
    if (this.off + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.off + n) size *= 2;
    const b = Buffer.allocUnsafe(size);
    this.buf.copy(b, 0, 0, this.off);
    this.buf = b;
  }
  /** Starts a message; returns its offset for end(). */
  begin(type: number, flags: number, seq: number, family: number, resId = 0): number {
    this.ensure(20);
    const at = this.off;
    const b = this.buf;
    b.writeUInt32LE(0, at); // patched by end(); netlink headers are host order (x86/arm64: LE)
    b.writeUInt16LE(type, at + 4);
    b.writeUInt16LE(flags | NLM_F_REQUEST, at + 6);
    b.writeUInt32LE(seq >>> 0, at + 8);
    b.writeUInt32LE(0, at + 12);
    b[at + 16] = family;
    b[at + 17] = 0;
    b.writeUInt16BE(resId, at + 18);
    this.off += 20;
    return at;
  }
  end(at: number): void {
    this.buf.writeUInt32LE(this.off - at, at);
  }
  private hdr(type: number, len: number): void {
    this.ensure(4 + len + 3);
    this.buf.writeUInt16LE(4 + len, this.off);
    this.buf.writeUInt16LE(type, this.off + 2);
    this.off += 4;
  }
  private pad(): void {
    while (this.off & 3) this.buf[this.off++] = 0;
  }
  str(type: number, s: string): void {
    // Names are SAFE_NAME (ASCII) and comments are cleaned to printable ASCII: latin1 is exact and fastest.
    const n = s.length;
    this.hdr(type, n + 1);
    this.buf.write(s, this.off, n, 'latin1');
    this.off += n;
    this.buf[this.off++] = 0;
    this.pad();
  }
  bytes(type: number, data: Uint8Array): void {
    this.hdr(type, data.length);
    this.buf.set(data, this.off);
    this.off += data.length;
    this.pad();
  }
  u32(type: number, v: number): void {
    this.hdr(type, 4);
    this.buf.writeUInt32BE(v >>> 0, this.off);
    this.off += 4;
  }
  i32(type: number, v: number): void {
    this.hdr(type, 4);
    this.buf.writeInt32BE(v, this.off);
    this.off += 4;
  }
  u64(type: number, v: number): void {
    this.hdr(type, 8);
    this.buf.writeBigUInt64BE(BigInt(v), this.off);
    this.off += 8;
  }
  u8(type: number, v: number): void {
    this.hdr(type, 1);
    this.buf[this.off++] = v;
    this.pad();
  }
  nest(type: number): number {
    this.ensure(4);
    const at = this.off;
    this.buf.writeUInt16LE(type | NLA_F_NESTED, at + 2);
    this.off += 4;
    return at;
  }
  close(at: number): void {
    const len = this.off - at;
    if (len > 0xffff) throw new NftError(`netlink attribute too long (${len} bytes)`);
    this.buf.writeUInt16LE(len, at);
  }
  /** NFTA_*_DATA: a nested NFTA_DATA_VALUE. */
  value(type: number, data: Uint8Array): void {
    const n = this.nest(type);
    this.bytes(DATA.VALUE, data);
    this.close(n);
  }
  verdict(type: number, v: VerdictExpr): void {
    const n = this.nest(type);
    const d = this.nest(DATA.VERDICT);
    if ('jump' in v) {
      this.i32(VERDICT.CODE, V.JUMP);
      this.str(VERDICT.CHAIN, v.jump);
    } else if ('goto' in v) {
      this.i32(VERDICT.CODE, V.GOTO);
      this.str(VERDICT.CHAIN, v.goto);
    } else {
      this.i32(VERDICT.CODE, { accept: V.ACCEPT, drop: V.DROP, return: V.RETURN, continue: V.CONTINUE }[v.verdict]);
    }
    this.close(d);
    this.close(n);
  }
  /**
   * NFTA_*_DATA holding the plain literals `vals` of `types` (a concatenation: each
   * component padded to 4 bytes; a single one unpadded), written straight into the
   * buffer. Returns false, having written nothing, when a literal is not a plain value
   * of its type (a prefix, a range, an odd form): the caller takes the general path.
   */
  plainValue(type: number, types: readonly KeyType[], vals: readonly Literal[]): boolean {
    const one = types.length === 1;
    let len = 0;
    for (const t of types) len += one ? PLAIN_LEN[t] ?? 0 : round4(PLAIN_LEN[t] ?? 0);
    if (len === 0) return false;
    this.ensure(8 + len + 3);
    const start = this.off;
    const b = this.buf;
    let o = start + 8;
    for (let i = 0; i < types.length; i++) {
      const n = writePlain(b, o, types[i]!, vals[i]);
      if (n < 0) return false;
      const padded = one ? n : round4(n);
      b.fill(0, o + n, o + padded);
      o += padded;
    }
    b.writeUInt16LE(type | NLA_F_NESTED, start + 2);
    b.writeUInt16LE(4 + len, start + 4);
    b.writeUInt16LE(DATA.VALUE, start + 6);
    this.off = o;
    this.pad();
    // As close() does: the nest's length includes the inner attribute's padding.
    b.writeUInt16LE(this.off - start, start);
    return true;
  }
  take(): Buffer {
    return this.buf.subarray(0, this.off);
  }
}

/** Byte length of a plain literal of each type (plainValue). */
const PLAIN_LEN: Partial<Record<KeyType, number>> = { ipv4_addr: 4, inet_service: 2, inet_proto: 1, mark: 4, numgen: 4 };
const PLAIN_PROTO: Record<string, number> = { icmp: 1, tcp: 6, udp: 17, icmpv6: 58, sctp: 132, udplite: 136 };

/** Writes one plain literal at b[o]; returns its length, or -1 when it is not plain. */
function writePlain(b: Buffer, o: number, t: KeyType, v: Literal | undefined): number {
  switch (t) {
    case 'ipv4_addr':
      return typeof v === 'string' && parseV4(v, b, o) ? 4 : -1;
    case 'inet_service':
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 65535) return -1;
      b[o] = v >> 8;
      b[o + 1] = v & 0xff;
      return 2;
    case 'inet_proto': {
      const n = typeof v === 'string' ? PLAIN_PROTO[v] : typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 255 ? v : undefined;
      if (n === undefined) return -1;
      b[o] = n;
      return 1;
    }
    case 'mark':
    case 'numgen':
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffffffff) return -1;
      if (LE) b.writeUInt32LE(v, o);
      else b.writeUInt32BE(v, o);
      return 4;
    default:
      return -1;
  }
}

/** nft's udata: TLVs of u8 type, u8 length, value; strings NUL-terminated. */
function udata(items: [number, Buffer][]): Buffer {
  const parts: Buffer[] = [];
  for (const [t, v] of items) parts.push(Buffer.from([t, v.length]), v);
  return Buffer.concat(parts);
}
const udStr = (s: string) => Buffer.from(`${s}\0`, 'utf8');
const udU32 = (n: number) => {
  const b = Buffer.alloc(4);
  if (LE) b.writeUInt32LE(n);
  else b.writeUInt32BE(n);
  return b;
};
/** A comment exactly as nft stores it (quoteComment's cleaning, without the quotes). */
function commentText(s: string): string {
  return String(s)
    .replace(/[^\x20-\x7e]/g, ' ')
    .replace(/["\\]/g, '')
    .slice(0, 128);
}
const commentUd = (type: number, c: string) => udata([[type, udStr(commentText(c))]]);

function hostU32(n: number): Buffer {
  const b = Buffer.alloc(4);
  if (LE) b.writeUInt32LE(n >>> 0);
  else b.writeUInt32BE(n >>> 0);
  return b;
}

// ---------------------------------------------------------------------------------
// Literals to bytes

const round4 = (n: number) => (n + 3) & ~3;

interface Span {
  lo: Buffer;
  /** Inclusive upper bound; equal to lo for a single value. */
  hi: Buffer;
  single: boolean;
}

function numBytes(n: number, len: number): Buffer {
  const b = Buffer.alloc(len);
  b.writeUIntBE(n, 0, len);
  return b;
}

/** One literal of `type` as the inclusive span of values it denotes (prefixes and ranges too). */
function literalSpan(type: KeyType, v: Literal): Span {
  // Fast paths for the common literals (already validated when the op entered the Transaction).
  if (type === 'ipv4_addr' && typeof v === 'string') {
    const b = parse4(v);
    if (b) return { lo: b, hi: b, single: true };
  } else if (type === 'inet_service' && typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 65535) {
    const b = numBytes(v, 2);
    return { lo: b, hi: b, single: true };
  }
  const c = canonLiteral(type, v);
  switch (type) {
    case 'ipv4_addr':
    case 'ipv6_addr': {
      const slash = c.indexOf('/');
      if (slash > 0) {
        const lo = Buffer.from(ipToBytes(c.slice(0, slash)));
        const len = Number(c.slice(slash + 1));
        const hi = Buffer.from(lo);
        for (let i = 0; i < hi.length; i++) {
          const bits = Math.max(0, Math.min(8, len - i * 8));
          hi[i] = hi[i]! | (0xff >> bits);
        }
        return { lo, hi, single: len === lo.length * 8 };
      }
      const dash = c.indexOf('-');
      if (dash > 0) return { lo: Buffer.from(ipToBytes(c.slice(0, dash))), hi: Buffer.from(ipToBytes(c.slice(dash + 1))), single: false };
      const b = Buffer.from(ipToBytes(c));
      return { lo: b, hi: b, single: true };
    }
    case 'inet_service': {
      const [a, z] = c.split('-') as [string, string | undefined];
      const lo = numBytes(Number(a), 2);
      return z === undefined ? { lo, hi: lo, single: true } : { lo, hi: numBytes(Number(z), 2), single: false };
    }
    case 'inet_proto': {
      const n = /^\d+$/.test(c) ? Number(c) : { icmp: 1, tcp: 6, udp: 17, icmpv6: 58, sctp: 132, udplite: 136 }[c]!;
      const b = Buffer.from([n]);
      return { lo: b, hi: b, single: true };
    }
    case 'mark':
    case 'numgen': {
      const b = hostU32(Number(c));
      return { lo: b, hi: b, single: true };
    }
    case 'ifname': {
      const name = c.slice(1, -1);
      const b = Buffer.alloc(16);
      if (name.endsWith('*')) {
        b.write(name.slice(0, -1), 'latin1');
        const hi = Buffer.from(b);
        hi.fill(0xff, name.length - 1);
        return { lo: b, hi, single: false };
      }
      b.write(name, 'latin1');
      return { lo: b, hi: b, single: true };
    }
  }
}

/** A plain dotted quad as 4 bytes, or undefined for anything else (prefixes, ranges, odd forms). */
function parse4(s: string): Buffer | undefined {
  const b = Buffer.allocUnsafe(4);
  return parseV4(s, b, 0) ? b : undefined;
}

/** big-endian byte string + 1; undefined on overflow. */
function plusOne(b: Buffer): Buffer | undefined {
  const r = Buffer.from(b);
  for (let i = r.length - 1; i >= 0; i--) {
    if (r[i] !== 0xff) {
      r[i]!++;
      return r;
    }
    r[i] = 0;
  }
  return undefined;
}

/** A concatenation's key: each component padded to 4 bytes. A single component is not padded. */
function concatKey(parts: Buffer[]): Buffer {
  if (parts.length === 1) return parts[0]!;
  const out = Buffer.alloc(parts.reduce((n, p) => n + round4(p.length), 0));
  let o = 0;
  for (const p of parts) {
    p.copy(out, o);
    o += round4(p.length);
  }
  return out;
}

function keyTypeId(types: readonly KeyType[]): number {
  let id = 0;
  for (const t of types) id = (id << TYPE_BITS) | DTYPE[t].id;
  return id >>> 0;
}
function keyLen(types: readonly KeyType[]): number {
  return types.length === 1 ? DTYPE[types[0]!].len : types.reduce((n, t) => n + round4(DTYPE[t].len), 0);
}
function keyOrder(types: readonly KeyType[]): number {
  return types.length === 1 ? DTYPE[types[0]!].order : 0;
}

// ---------------------------------------------------------------------------------
// The encoder

/** What each message of the batch came from, to name the op a kernel error is about. */
interface MsgInfo {
  seq: number;
  start: number;
  /** Index into the op list (for element messages: the first element's op). */
  op: number;
  /** Element messages: each element's offset in the message and its op index. */
  elems?: { off: number; op: number }[];
}

interface FlatOp {
  tx: Transaction;
  op: Op;
}

class Encoder {
  readonly w = new Writer(1 << 20);
  readonly msgs: MsgInfo[] = [];
  private setId = 0;
  /** Sets added in this batch: "family table name" -> NFTA_SET_ID. */
  private readonly setIds = new Map<string, number>();
  private tx!: Transaction;
  private fam = 0;
  private opIndex = 0;

  constructor(
    private seq: number,
    readonly ops: FlatOp[],
  ) {}

  nextSeq(): number {
    return this.seq++;
  }

  private begin(type: number, flags: number): number {
    const seq = this.nextSeq();
    const at = this.w.begin((NFNL_SUBSYS_NFTABLES << 8) | type, flags, seq, this.fam);
    this.msgs.push({ seq, start: at, op: this.opIndex });
    return at;
  }

  encode(): Buffer {
    const w = this.w;
    const b = w.begin(NFNL_MSG_BATCH_BEGIN, 0, this.nextSeq(), 0, NFNL_SUBSYS_NFTABLES);
    w.end(b);
    for (let i = 0; i < this.ops.length; ) {
      const { tx, op } = this.ops[i]!;
      this.tx = tx;
      this.fam = FAMILY[tx.family];
      this.opIndex = i;
      if (op.obj.kind === 'element') {
        // Consecutive element ops of one verb on one set share messages.
        let j = i + 1;
        while (j < this.ops.length && this.ops[j]!.tx === tx && this.ops[j]!.op.verb === op.verb && this.ops[j]!.op.obj.kind === 'element' && (this.ops[j]!.op.obj as ElementObj).set === op.obj.set) j++;
        this.elements(op.verb, (op.obj as ElementObj).set, i, j);
        i = j;
        continue;
      }
      this.op(op);
      i++;
    }
    const e = w.begin(NFNL_MSG_BATCH_END, 0, this.nextSeq(), 0, NFNL_SUBSYS_NFTABLES);
    w.end(e);
    return w.take();
  }

  private flagsFor(verb: Op['verb']): number {
    return verb === 'create' ? NLM_F_CREATE | NLM_F_EXCL : NLM_F_CREATE;
  }

  private op(op: Op): void {
    const w = this.w;
    const table = this.tx.table;
    const o = op.obj;
    switch (o.kind) {
      case 'table': {
        if (op.verb === 'add' || op.verb === 'create') {
          const m = this.begin(MSG.NEWTABLE, this.flagsFor(op.verb));
          w.str(TABLE.NAME, table);
          w.u32(TABLE.FLAGS, 0);
          const c = (o as TableObj).comment;
          if (c !== undefined) w.bytes(TABLE.USERDATA, commentUd(0, c));
          w.end(m);
        } else if (op.verb === 'delete') {
          const m = this.begin(MSG.DELTABLE, 0);
          w.str(TABLE.NAME, table);
          w.end(m);
        } else {
          // `flush table`: every rule of every chain (sets keep their elements, as with nft).
          const m = this.begin(MSG.DELRULE, 0);
          w.str(RULE.TABLE, table);
          w.end(m);
        }
        return;
      }
      case 'chain': {
        if (op.verb === 'add' || op.verb === 'create') {
          const c = o as ChainObj;
          const m = this.begin(MSG.NEWCHAIN, this.flagsFor(op.verb));
          w.str(CHAIN.TABLE, table);
          w.str(CHAIN.NAME, c.name);
          if (c.hook) {
            w.str(CHAIN.TYPE, c.type!);
            w.u32(CHAIN.POLICY, c.policy === 'drop' ? V.DROP : V.ACCEPT);
            const h = w.nest(CHAIN.HOOK);
            w.u32(HOOK.HOOKNUM, HOOKS[c.hook]!);
            w.i32(HOOK.PRIORITY, priorityValue(c.priority!));
            if (c.device) w.str(HOOK.DEV, c.device);
            w.close(h);
          }
          if (c.comment !== undefined) w.bytes(CHAIN.USERDATA, commentUd(0, c.comment));
          w.end(m);
        } else {
          const m = this.begin(op.verb === 'delete' ? MSG.DELCHAIN : MSG.DELRULE, 0);
          w.str(CHAIN.TABLE, table);
          w.str(op.verb === 'delete' ? CHAIN.NAME : RULE.CHAIN, o.name);
          w.end(m);
        }
        return;
      }
      case 'set':
      case 'map': {
        if (op.verb === 'add' || op.verb === 'create') this.newSet(o as SetObj | MapObj, this.flagsFor(op.verb));
        else if (op.verb === 'delete') {
          const m = this.begin(MSG.DELSET, 0);
          w.str(SET.TABLE, table);
          w.str(SET.NAME, o.name);
          w.end(m);
        } else {
          const m = this.begin(MSG.DELSETELEM, 0);
          w.str(ELEMS.TABLE, table);
          w.str(ELEMS.SET, o.name);
          w.end(m);
        }
        return;
      }
      case 'rule': {
        if (op.verb === 'delete') {
          const m = this.begin(MSG.DELRULE, 0);
          w.str(RULE.TABLE, table);
          w.str(RULE.CHAIN, o.chain);
          w.u64(RULE.HANDLE, (o as { handle: number }).handle);
          w.end(m);
          return;
        }
        this.rule(o as RuleObj, op.verb === 'insert' ? NLM_F_CREATE : NLM_F_CREATE | NLM_F_APPEND);
        return;
      }
    }
  }

  private setKey(name: string): string {
    return `${this.fam} ${this.tx.table} ${name}`;
  }

  private newSet(s: SetObj | MapObj, flags: number): void {
    const w = this.w;
    const interval = s.flags?.includes('interval') ?? false;
    let f = 0;
    if (s.kind === 'map') f |= SETF.MAP;
    if (interval) f |= SETF.INTERVAL;
    if (s.flags?.includes('constant')) f |= SETF.CONSTANT;
    if (s.flags?.includes('timeout') || s.timeout !== undefined) f |= SETF.TIMEOUT;
    if (s.flags?.includes('dynamic')) f |= SETF.EVAL;
    if (interval && s.type.length > 1) f |= SETF.CONCAT;
    const id = ++this.setId;
    this.setIds.set(this.setKey(s.name), id);
    const m = this.begin(MSG.NEWSET, flags);
    w.str(SET.TABLE, this.tx.table);
    w.str(SET.NAME, s.name);
    w.u32(SET.FLAGS, f);
    w.u32(SET.KEY_TYPE, keyTypeId(s.type));
    w.u32(SET.KEY_LEN, keyLen(s.type));
    const ud: [number, Buffer][] = [[UDATA_SET.KEYBYTEORDER, udU32(keyOrder(s.type))]];
    if (s.kind === 'map') {
      if (s.value === 'verdict') {
        w.u32(SET.DATA_TYPE, NFT_DATA_VERDICT);
        w.u32(SET.DATA_LEN, 0);
        ud.push([UDATA_SET.DATABYTEORDER, udU32(0)]);
      } else {
        w.u32(SET.DATA_TYPE, keyTypeId(s.value));
        w.u32(SET.DATA_LEN, keyLen(s.value));
        ud.push([UDATA_SET.DATABYTEORDER, udU32(keyOrder(s.value))]);
        if (s.type.length === 1 && s.type[0] === 'numgen') ud.push(...numgenTypeof(s));
      }
      ud.push([UDATA_SET.DATA_INTERVAL, udU32(0)]);
    }
    w.u32(SET.ID, id);
    if (s.timeout !== undefined) w.u64(SET.TIMEOUT, s.timeout * 1000);
    if (s.size !== undefined || (interval && s.type.length > 1)) {
      const d = w.nest(SET.DESC);
      if (s.size !== undefined) w.u32(SET_DESC.SIZE, s.size);
      if (interval && s.type.length > 1) {
        const c = w.nest(SET_DESC.CONCAT);
        for (const t of s.type) {
          const e = w.nest(LIST_ELEM);
          w.u32(SET_FIELD_LEN, DTYPE[t].len);
          w.close(e);
        }
        w.close(c);
      }
      w.close(d);
    }
    if (s.comment !== undefined) ud.push([UDATA_SET.COMMENT, udStr(commentText(s.comment))]);
    w.bytes(SET.USERDATA, udata(ud));
    w.end(m);
  }

  /** Element messages for ops [from, to) (one verb, one set), split below the 64 KiB attribute limit. */
  private elements(verb: Op['verb'], setName: string, from: number, to: number): void {
    const w = this.w;
    const decl = this.tx.declared(setName)!;
    const interval = decl.flags?.includes('interval') ?? false;
    const id = this.setIds.get(this.setKey(setName));
    const type = verb === 'delete' ? MSG.DELSETELEM : MSG.NEWSETELEM;
    const flags = verb === 'delete' ? 0 : this.flagsFor(verb);
    let m = -1;
    let list = -1;
    let info: MsgInfo | undefined;
    const open = (i: number) => {
      this.opIndex = i;
      m = this.begin(type, flags);
      info = this.msgs[this.msgs.length - 1]!;
      info.elems = [];
      w.str(ELEMS.TABLE, this.tx.table);
      w.str(ELEMS.SET, setName);
      if (id !== undefined) w.u32(ELEMS.SET_ID, id);
      list = w.nest(ELEMS.ELEMENTS);
    };
    const close = () => {
      w.close(list);
      w.end(m);
      m = -1;
    };
    for (let i = from; i < to; i++) {
      if (m < 0) open(i);
      else if (w.off - list > 60000) {
        close();
        open(i);
      }
      const op = this.ops[i]!.op;
      const e = op.obj as ElementObj;
      info!.elems!.push({ off: w.off - info!.start, op: i });
      try {
        this.element(decl, interval, e, verb === 'delete');
      } catch (err) {
        throw new NftError(`${describe(this.ops[i]!)}: ${(err as Error).message}`);
      }
    }
    if (m >= 0) close();
  }

  private element(decl: SetObj | MapObj, interval: boolean, e: ElementObj, del: boolean): void {
    const w = this.w;
    if (!interval && e.timeout === undefined && this.plainElement(decl, e, del)) return;
    const spans = decl.type.map((t, i) => literalSpan(t, e.key[i]!));
    const one = (key: Buffer, endFlag: boolean, keyEnd?: Buffer, withData = true) => {
      const n = w.nest(LIST_ELEM);
      w.value(ELEM.KEY, key);
      if (keyEnd) w.value(ELEM.KEY_END, keyEnd);
      if (endFlag) w.u32(ELEM.FLAGS, ELEM_INTERVAL_END);
      if (!del && withData) {
        if (e.timeout !== undefined) w.u64(ELEM.TIMEOUT, e.timeout * 1000);
        if (e.value !== undefined) {
          if (Array.isArray(e.value)) {
            const vt = (decl as MapObj).value as KeyType[];
            w.value(ELEM.DATA, concatKey(vt.map((t, i) => literalSpan(t, (e.value as Literal[])[i]!).lo)));
          } else w.verdict(ELEM.DATA, e.value as VerdictExpr);
        }
        if (e.comment !== undefined) w.bytes(ELEM.USERDATA, commentUd(0, e.comment));
      }
      w.close(n);
    };
    if (!interval) {
      for (const s of spans) if (!s.single) throw new Error('a prefix or range needs a set with flag interval');
      one(concatKey(spans.map((s) => s.lo)), false);
      return;
    }
    if (decl.type.length > 1) {
      one(
        concatKey(spans.map((s) => s.lo)),
        false,
        concatKey(spans.map((s) => s.hi)),
      );
      return;
    }
    const s = spans[0]!;
    one(s.lo, false);
    const end = plusOne(s.hi);
    if (end) one(end, true, undefined, false);
  }

  /** The common element, written without intermediate buffers: plain key, plain data or a verdict. False (nothing written) otherwise. */
  private plainElement(decl: SetObj | MapObj, e: ElementObj, del: boolean): boolean {
    const w = this.w;
    const start = w.off;
    const n = w.nest(LIST_ELEM);
    let ok = w.plainValue(ELEM.KEY, decl.type, e.key);
    if (ok && !del && e.value !== undefined) {
      if (Array.isArray(e.value)) ok = w.plainValue(ELEM.DATA, (decl as MapObj).value as KeyType[], e.value as Literal[]);
      else w.verdict(ELEM.DATA, e.value as VerdictExpr);
    }
    if (!ok) {
      w.off = start;
      return false;
    }
    if (!del && e.comment !== undefined) w.bytes(ELEM.USERDATA, commentUd(0, e.comment));
    w.close(n);
    return true;
  }

  // ---- rules

  private rule(r: RuleObj, flags: number): void {
    if (typeof r.rule === 'string') throw new NftError(`${describe(this.ops[this.opIndex]!)}: raw-text rules cannot be sent over netlink`);
    const w = this.w;
    const ctx: RuleCtx = { nfproto: 0, l4: -1 };
    const exprs = r.rule;
    // Anonymous sets (literal sets, numgen vmaps) are messages of their own, before the rule (nft's order).
    const anonIds: (number | undefined)[] = exprs.map((e) => this.anonSetFor(e));
    const m = this.begin(MSG.NEWRULE, flags);
    w.str(RULE.TABLE, this.tx.table);
    w.str(RULE.CHAIN, r.chain);
    const list = w.nest(RULE.EXPRESSIONS);
    exprs.forEach((e, i) => this.expr(e, ctx, anonIds[i]));
    w.close(list);
    if (r.comment !== undefined) w.bytes(RULE.USERDATA, commentUd(0, r.comment));
    w.end(m);
  }

  /** Creates the anonymous set an expression needs (literal set, numgen vmap); returns its id. */
  private anonSetFor(e: Expr): number | undefined {
    const w = this.w;
    if ('match' in e && Array.isArray(e.value) && e.value.length > 1) {
      const t = SELECTOR_TYPES[(typeof e.match === 'string' ? e.match : e.match[0]!) as Selector];
      const spans = (e.value as Literal[]).map((v) => literalSpan(t, v));
      const interval = spans.some((s) => !s.single);
      const id = ++this.setId;
      // Elements: plain keys, or (interval) sorted start/end pairs led by a zero end element.
      const els: { key: Buffer; end: boolean }[] = [];
      if (interval) {
        spans.sort((a, b) => Buffer.compare(a.lo, b.lo));
        if (spans[0]!.lo.some((x) => x !== 0)) els.push({ key: Buffer.alloc(spans[0]!.lo.length), end: true });
        for (const s of spans) {
          els.push({ key: s.lo, end: false });
          const end = plusOne(s.hi);
          if (end) els.push({ key: end, end: true });
        }
      } else for (const s of spans) els.push({ key: s.lo, end: false });
      const m = this.begin(MSG.NEWSET, NLM_F_CREATE);
      w.str(SET.TABLE, this.tx.table);
      w.str(SET.NAME, '__set%d');
      w.u32(SET.FLAGS, SETF.ANONYMOUS | SETF.CONSTANT | (interval ? SETF.INTERVAL : 0));
      w.u32(SET.KEY_TYPE, DTYPE[t].id);
      w.u32(SET.KEY_LEN, DTYPE[t].len);
      w.u32(SET.ID, id);
      const d = w.nest(SET.DESC);
      w.u32(SET_DESC.SIZE, els.length);
      w.close(d);
      w.bytes(SET.USERDATA, udata([[UDATA_SET.KEYBYTEORDER, udU32(DTYPE[t].order)]]));
      w.end(m);
      const em = this.begin(MSG.NEWSETELEM, NLM_F_CREATE);
      w.str(ELEMS.TABLE, this.tx.table);
      w.str(ELEMS.SET, '__set%d');
      w.u32(ELEMS.SET_ID, id);
      const l = w.nest(ELEMS.ELEMENTS);
      for (const el of els) {
        const n = w.nest(LIST_ELEM);
        w.value(ELEM.KEY, el.key);
        if (el.end) w.u32(ELEM.FLAGS, ELEM_INTERVAL_END);
        w.close(n);
      }
      w.close(l);
      w.end(em);
      return id;
    }
    if ('numgen' in e) {
      const id = ++this.setId;
      const m = this.begin(MSG.NEWSET, NLM_F_CREATE);
      w.str(SET.TABLE, this.tx.table);
      w.str(SET.NAME, '__map%d');
      w.u32(SET.FLAGS, SETF.ANONYMOUS | SETF.CONSTANT | SETF.MAP);
      w.u32(SET.KEY_TYPE, TYPE_INTEGER);
      w.u32(SET.KEY_LEN, 4);
      w.u32(SET.DATA_TYPE, NFT_DATA_VERDICT);
      w.u32(SET.DATA_LEN, 0);
      w.u32(SET.ID, id);
      const d = w.nest(SET.DESC);
      w.u32(SET_DESC.SIZE, e.vmap.length);
      w.close(d);
      w.bytes(SET.USERDATA, udata([[UDATA_SET.KEYBYTEORDER, udU32(1)], [UDATA_SET.DATABYTEORDER, udU32(0)], [UDATA_SET.DATA_INTERVAL, udU32(0)]]));
      w.end(m);
      const em = this.begin(MSG.NEWSETELEM, NLM_F_CREATE);
      w.str(ELEMS.TABLE, this.tx.table);
      w.str(ELEMS.SET, '__map%d');
      w.u32(ELEMS.SET_ID, id);
      const l = w.nest(ELEMS.ELEMENTS);
      e.vmap.forEach((v, i) => {
        const n = w.nest(LIST_ELEM);
        w.value(ELEM.KEY, hostU32(i));
        w.verdict(ELEM.DATA, v);
        w.close(n);
      });
      w.close(l);
      w.end(em);
      return id;
    }
    return undefined;
  }

  private ex(name: string, body: () => void): void {
    const w = this.w;
    const n = w.nest(LIST_ELEM);
    w.str(EXPR.NAME, name);
    const d = w.nest(EXPR.DATA);
    body();
    w.close(d);
    w.close(n);
  }

  private cmp(reg: number, op: number, data: Uint8Array): void {
    this.ex('cmp', () => {
      this.w.u32(1, reg);
      this.w.u32(2, op);
      this.w.value(3, data);
    });
  }
  private bitwise(reg: number, len: number, mask: Uint8Array, xor: Uint8Array): void {
    this.ex('bitwise', () => {
      this.w.u32(1, reg);
      this.w.u32(2, reg);
      this.w.u32(3, len);
      this.w.value(4, mask);
      this.w.value(5, xor);
    });
  }
  private payload(reg: number, base: number, offset: number, len: number): void {
    this.ex('payload', () => {
      this.w.u32(1, reg);
      this.w.u32(2, base);
      this.w.u32(3, offset);
      this.w.u32(4, len);
    });
  }
  private meta(reg: number, key: number): void {
    this.ex('meta', () => {
      this.w.u32(2, key);
      this.w.u32(1, reg);
    });
  }
  private immediate(reg: number, data: Uint8Array): void {
    this.ex('immediate', () => {
      this.w.u32(1, reg);
      this.w.value(2, data);
    });
  }
  private lookup(reg: number, set: string, id: number | undefined, opts: { inv?: boolean; dreg?: number }): void {
    this.ex('lookup', () => {
      this.w.str(1, set);
      this.w.u32(2, reg);
      if (opts.dreg !== undefined) this.w.u32(3, opts.dreg);
      if (id !== undefined) this.w.u32(4, id);
      if (opts.inv) this.w.u32(5, 1);
    });
  }

  /** `meta nfproto` before an ip/ip6 field in an inet table, once per rule and family (nft's dependency). */
  private dep(ctx: RuleCtx, proto: number): void {
    if (this.tx.family !== 'inet' || ctx.nfproto === proto) return;
    this.meta(1, META.NFPROTO);
    this.cmp(1, CMP.EQ, Buffer.from([proto]));
    ctx.nfproto = proto;
  }

  /** Loads one selector into 32-bit register slot `slot` (1-based, nft's numbering); `len` overrides the load length. */
  private load(sel: Selector, slot: number, len?: number): void {
    const reg = nftReg(slot);
    switch (sel) {
      case 'ip saddr':
        return this.payload(reg, PAYLOAD_BASE.NETWORK, 12, len ?? 4);
      case 'ip daddr':
        return this.payload(reg, PAYLOAD_BASE.NETWORK, 16, len ?? 4);
      case 'ip6 saddr':
        return this.payload(reg, PAYLOAD_BASE.NETWORK, 8, len ?? 16);
      case 'ip6 daddr':
        return this.payload(reg, PAYLOAD_BASE.NETWORK, 24, len ?? 16);
      case 'th sport':
        return this.payload(reg, PAYLOAD_BASE.TRANSPORT, 0, 2);
      case 'th dport':
        return this.payload(reg, PAYLOAD_BASE.TRANSPORT, 2, 2);
      case 'meta l4proto':
        return this.meta(reg, META.L4PROTO);
      case 'meta mark':
        return this.meta(reg, META.MARK);
      case 'iifname':
        return this.meta(reg, META.IIFNAME);
      case 'oifname':
        return this.meta(reg, META.OIFNAME);
      case 'ct mark':
        return this.ex('ct', () => {
          this.w.u32(2, CT.MARK);
          this.w.u32(1, reg);
        });
    }
  }

  /** Dependencies, then each key component in consecutive 32-bit registers from slot 1; returns the first register. */
  private loadKey(sels: readonly Selector[], ctx: RuleCtx): number {
    for (const s of sels) {
      if (s.startsWith('ip ')) this.dep(ctx, NFPROTO_IPV4);
      else if (s.startsWith('ip6 ')) this.dep(ctx, NFPROTO_IPV6);
    }
    let slot = 1;
    for (const s of sels) {
      this.load(s, slot);
      slot += round4(DTYPE[SELECTOR_TYPES[s]].len) / 4;
    }
    return nftReg(1);
  }

  private setIdOf(name: string): number | undefined {
    return this.setIds.get(this.setKey(name));
  }

  private expr(e: Expr, ctx: RuleCtx, anonId: number | undefined): void {
    const w = this.w;
    if ('match' in e) {
      const sels = typeof e.match === 'string' ? [e.match] : [...e.match];
      const neq = e.op === '!=';
      const v = e.value;
      if (typeof v === 'object' && v !== null && !Array.isArray(v)) {
        const set = (v as { set: string }).set;
        const reg = this.loadKey(sels, ctx);
        this.lookup(reg, set, this.setIdOf(set), { inv: neq });
        return;
      }
      const sel = sels[0]!;
      const t = SELECTOR_TYPES[sel];
      if (Array.isArray(v) && v.length > 1) {
        const reg = this.loadKey(sels, ctx);
        this.lookup(reg, '__set%d', anonId, { inv: neq });
        return;
      }
      const lit = (Array.isArray(v) ? v[0] : v) as Literal;
      const span = literalSpan(t, lit);
      if (sel === 'meta l4proto') ctx.l4 = !neq ? span.lo[0]! : -1;
      const c = canonLiteral(t, lit);
      const prefix = (t === 'ipv4_addr' || t === 'ipv6_addr') && c.includes('/') ? Number(c.slice(c.indexOf('/') + 1)) : undefined;
      if (prefix !== undefined && !span.single) {
        if (sel.startsWith('ip ')) this.dep(ctx, NFPROTO_IPV4);
        else this.dep(ctx, NFPROTO_IPV6);
        if (prefix % 8 === 0 && prefix > 0) {
          this.load(sel, 1, prefix / 8);
          this.cmp(nftReg(1), neq ? CMP.NEQ : CMP.EQ, span.lo.subarray(0, prefix / 8));
        } else {
          this.load(sel, 1);
          const mask = Buffer.alloc(span.lo.length);
          for (let i = 0; i < mask.length; i++) mask[i] = (0xff00 >> Math.max(0, Math.min(8, prefix - i * 8))) & 0xff;
          this.bitwise(nftReg(1), mask.length, mask, Buffer.alloc(mask.length));
          this.cmp(nftReg(1), neq ? CMP.NEQ : CMP.EQ, span.lo);
        }
        return;
      }
      this.loadKey([sel], ctx);
      if (t === 'ifname' && !span.single) {
        // "veth*": compare the bytes before the asterisk only.
        const name = c.slice(1, -2);
        this.cmp(nftReg(1), neq ? CMP.NEQ : CMP.EQ, Buffer.from(name, 'latin1'));
        return;
      }
      if (!span.single) {
        if (neq)
          this.ex('range', () => {
            w.u32(1, nftReg(1));
            w.u32(2, 1);
            w.value(3, span.lo);
            w.value(4, span.hi);
          });
        else {
          this.cmp(nftReg(1), CMP.GTE, span.lo);
          this.cmp(nftReg(1), CMP.LTE, span.hi);
        }
        return;
      }
      this.cmp(nftReg(1), neq ? CMP.NEQ : CMP.EQ, span.lo);
      return;
    }
    if ('fib' in e) {
      this.ex('fib', () => {
        w.u32(1, nftReg(1));
        w.u32(2, 3); // NFT_FIB_RESULT_ADDRTYPE
        w.u32(3, e.fib === 'saddr' ? 1 : 2); // NFTA_FIB_F_SADDR / DADDR
      });
      this.cmp(nftReg(1), e.op === '!=' ? CMP.NEQ : CMP.EQ, hostU32(2)); // RTN_LOCAL
      return;
    }
    if ('ctState' in e) {
      const bits = e.ctState.reduce((n, s) => n | CT_STATE_BITS[s]!, 0);
      this.ex('ct', () => {
        w.u32(2, CT.STATE);
        w.u32(1, nftReg(1));
      });
      if (e.op === '!=') this.cmp(nftReg(1), CMP.NEQ, hostU32(bits));
      else {
        this.bitwise(nftReg(1), 4, hostU32(bits), hostU32(0));
        this.cmp(nftReg(1), CMP.NEQ, hostU32(0));
      }
      return;
    }
    if ('markMask' in e) {
      this.meta(nftReg(1), META.MARK);
      this.bitwise(nftReg(1), 4, hostU32(e.markMask), hostU32(0));
      this.cmp(nftReg(1), e.op === '!=' ? CMP.NEQ : CMP.EQ, hostU32(e.value));
      return;
    }
    if ('counter' in e) {
      this.ex('counter', () => {
        w.u64(1, 0);
        w.u64(2, 0);
      });
      return;
    }
    if ('setMark' in e) {
      const how = e.how ?? 'set';
      if (how === 'set') this.immediate(nftReg(1), hostU32(e.setMark));
      else {
        this.meta(nftReg(1), META.MARK);
        const mask = how === 'or' ? ~e.setMark >>> 0 : 0xffffffff;
        this.bitwise(nftReg(1), 4, hostU32(mask), hostU32(e.setMark));
      }
      this.ex('meta', () => {
        w.u32(2, META.MARK);
        w.u32(3, nftReg(1));
      });
      return;
    }
    if ('update' in e) {
      const reg = this.loadKey(e.key, ctx);
      this.ex('dynset', () => {
        w.str(1, e.update);
        const id = this.setIdOf(e.update);
        if (id !== undefined) w.u32(2, id);
        w.u32(3, 1); // NFT_DYNSET_OP_UPDATE
        w.u32(4, reg);
      });
      return;
    }
    if ('dnat' in e) {
      const v6 = isIPv6(e.dnat);
      this.immediate(1, (v6 ? undefined : parse4(e.dnat)) ?? Buffer.from(ipToBytes(e.dnat)));
      if (e.port !== undefined) this.immediate(2, numBytes(e.port, 2));
      this.ex('nat', () => {
        w.u32(1, 1); // NFT_NAT_DNAT
        w.u32(2, v6 ? NFPROTO_IPV6 : NFPROTO_IPV4);
        w.u32(3, 1);
        if (e.port !== undefined) {
          w.u32(5, 2);
          w.u32(7, 2); // NF_NAT_RANGE_PROTO_SPECIFIED
        }
      });
      return;
    }
    if ('masquerade' in e) {
      this.ex('masq', () => {
        if (e.fullyRandom) w.u32(1, 0x10); // NF_NAT_RANGE_PROTO_RANDOM_FULLY
      });
      return;
    }
    if ('reject' in e) {
      const fam = this.tx.family;
      let type: number;
      let code: number | undefined;
      switch (e.reject) {
        case 'default':
          if (fam === 'inet' || fam === 'bridge' || fam === 'netdev') [type, code] = [2, 1];
          else [type, code] = [0, fam === 'ip6' ? 4 : 3];
          break;
        case 'tcp reset':
          if (ctx.l4 !== 6) {
            this.meta(nftReg(1), META.L4PROTO);
            this.cmp(nftReg(1), CMP.EQ, Buffer.from([6]));
            ctx.l4 = 6;
          }
          type = 1;
          break;
        case 'icmpx port-unreachable':
          [type, code] = [2, 1];
          break;
        default: {
          const v6 = e.reject.startsWith('icmpv6');
          this.dep(ctx, v6 ? NFPROTO_IPV6 : NFPROTO_IPV4);
          type = 0;
          code = e.reject.endsWith('port-unreachable') ? (v6 ? 4 : 3) : v6 ? 1 : 13;
        }
      }
      this.ex('reject', () => {
        w.u32(1, type);
        if (code !== undefined) w.u8(2, code);
      });
      return;
    }
    if ('dnatNumgen' in e) {
      // [ numgen reg 1 = inc mod N ] [ lookup reg 1 set M dreg 1 ] [ nat dnat ip addr_min reg 1 proto_min reg 9 ]
      // The map's data is address . port: the port follows the address in the next
      // 32-bit register (NFT_REG32_01 = 9 after an IPv4 address, NFT_REG_2 after IPv6).
      const decl = this.tx.declared(e.map);
      const v6 = decl?.kind === 'map' && Array.isArray(decl.value) ? decl.value[0] === 'ipv6_addr' : this.tx.family === 'ip6' || !!e.ip6;
      this.numgen(e.dnatNumgen, e.mod, e.offset ?? 0);
      this.lookup(nftReg(1), e.map, this.setIdOf(e.map), { dreg: nftReg(1) });
      this.ex('nat', () => {
        w.u32(1, 1); // NFT_NAT_DNAT
        w.u32(2, v6 ? NFPROTO_IPV6 : NFPROTO_IPV4);
        w.u32(3, nftReg(1));
        w.u32(5, v6 ? 2 : 9);
        w.u32(7, 2); // NF_NAT_RANGE_PROTO_SPECIFIED
      });
      return;
    }
    if ('numgenMatch' in e) {
      this.numgen(e.numgenMatch, e.mod);
      this.cmp(nftReg(1), CMP.EQ, hostU32(e.value));
      return;
    }
    if ('numgen' in e) {
      this.numgen(e.numgen, e.vmap.length);
      this.lookup(nftReg(1), '__map%d', anonId, { dreg: 0 });
      return;
    }
    if ('vmap' in e) {
      const reg = this.loadKey(e.key, ctx);
      this.lookup(reg, e.vmap.set, this.setIdOf(e.vmap.set), { dreg: 0 });
      return;
    }
    // A verdict.
    this.ex('immediate', () => {
      w.u32(1, 0);
      w.verdict(2, e);
    });
  }

  private numgen(mode: 'inc' | 'random', mod: number, offset = 0): void {
    this.ex('numgen', () => {
      this.w.u32(1, nftReg(1));
      this.w.u32(2, mod);
      this.w.u32(3, mode === 'inc' ? 0 : 1);
      this.w.u32(4, offset);
    });
  }
}

interface RuleCtx {
  /** The NFPROTO_* a `meta nfproto` dependency already established in this rule (inet). */
  nfproto: number;
  /** The l4 protocol a `meta l4proto` match established, or -1. */
  l4: number;
}

/** nft's register naming: 32-bit slot n (1-based) as NFT_REG_1..4 when 16-byte aligned, else NFT_REG32_00 + n - 1. */
function nftReg(slot: number): number {
  const r = slot - 1;
  return r % 4 === 0 ? 1 + r / 4 : 8 + r;
}

/** An op as nft text names it, for error messages. */
function describe(f: FlatOp): string {
  const { tx, op } = f;
  const o = op.obj;
  const tbl = `${tx.family} ${tx.table}`;
  switch (o.kind) {
    case 'table':
      return `${op.verb} table ${tbl}`;
    case 'chain':
    case 'set':
    case 'map':
      return `${op.verb} ${o.kind} ${tbl} ${o.name}`;
    case 'rule':
      if (op.verb === 'delete') return `delete rule ${tbl} ${o.chain} handle ${(o as { handle: number }).handle}`;
      return `${op.verb} rule ${tbl} ${o.chain}${(o as RuleObj).comment !== undefined ? ` (comment ${JSON.stringify((o as RuleObj).comment)})` : ''}`;
    case 'element': {
      const d = tx.declared(o.set);
      let key: string;
      try {
        key = d ? renderKey(d.type, o.key) : o.key.join(' . ');
      } catch {
        key = o.key.join(' . ');
      }
      return `${op.verb} element ${tbl} ${o.set} { ${key} }`;
    }
  }
}

// ---------------------------------------------------------------------------------
// The runner

export interface NftNetlinkOptions {
  /** Apply inside the network namespace at this path (the socket is opened there). */
  netnsPath?: string;
  /** Or inside this named namespace (/run/netns/NAME). */
  netns?: string;
}

export class NftNetlink implements NftRunner {
  private fd: number | undefined;
  private seq = (Date.now() & 0x3fffffff) >>> 0;
  private busy: Promise<void> = Promise.resolve();

  constructor(private readonly opts: NftNetlinkOptions = {}) {
    if (opts.netns !== undefined && !/^[A-Za-z0-9_.-]+$/.test(opts.netns)) throw new NftError(`invalid netns name ${JSON.stringify(opts.netns)}`);
  }

  private get nsPath(): string | undefined {
    return this.opts.netnsPath ?? (this.opts.netns !== undefined ? `/run/netns/${this.opts.netns}` : undefined);
  }

  private socket(): number {
    this.fd ??= inNetns(this.nsPath, () => native().nlOpen(NETLINK_NETFILTER));
    return this.fd;
  }

  /** Closes the netlink socket (a later run opens a new one). */
  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }

  /** The batch as bytes, without sending it (tests, debugging). */
  encode(tx: Transaction | readonly Transaction[]): { batch: Buffer; msgs: MsgInfo[]; ops: FlatOp[] } | undefined {
    const list = tx instanceof Transaction ? [tx] : tx;
    for (const t of list) if (t.error) throw new NftError(`nft transaction for ${t.family} ${t.table} not run: ${t.error.message}`);
    const ops: FlatOp[] = [];
    for (const t of list) for (const op of t.ops) ops.push({ tx: t, op });
    if (ops.length === 0) return undefined;
    const enc = new Encoder(this.seq, ops);
    const batch = enc.encode();
    this.seq = (enc.nextSeq() + 1) & 0x7fffffff;
    return { batch, msgs: enc.msgs, ops };
  }

  /** Applies atomically: all or nothing (one nfnetlink batch). */
  async run(tx: Transaction | readonly Transaction[]): Promise<void> {
    const enc = this.encode(tx);
    if (!enc) return;
    const markerSeq = this.seq++;
    const mw = new Writer(32);
    mw.end(mw.begin((NFNL_SUBSYS_NFTABLES << 8) | MSG.GETGEN, 0, markerSeq, 0));
    let reply: Buffer;
    // One batch at a time per socket: the replies of two batches must not interleave.
    const prev = this.busy;
    let release!: () => void;
    this.busy = new Promise<void>((r) => (release = r));
    await prev;
    try {
      // On a thread-pool thread: a full sync keeps the kernel busy for seconds.
      reply = await native().nlBatchAsync(this.socket(), enc.batch, mw.take());
    } catch (e) {
      this.close();
      throw new NftError(`nf_tables netlink batch of ${enc.msgs.length} messages not applied: ${(e as Error).message}`);
    } finally {
      release();
    }
    const errors = parseErrors(reply, markerSeq);
    if (errors.overrun && errors.list.length === 0) throw new NftError('nf_tables netlink: replies were lost (receive queue overrun); the outcome of the batch is unknown');
    if (errors.list.length === 0) return;
    // The first error in batch order names the op.
    const bySeq = new Map(enc.msgs.map((m) => [m.seq, m]));
    errors.list.sort((a, b) => a.seq - b.seq);
    const first = errors.list.find((x) => bySeq.has(x.seq)) ?? errors.list[0]!;
    const info = bySeq.get(first.seq);
    let opIdx = info?.op;
    if (info?.elems && first.offs !== undefined) {
      for (const el of info.elems) if (el.off <= first.offs) opIdx = el.op;
    }
    const what = opIdx !== undefined ? describe(enc.ops[opIdx]!) : `batch control message (seq ${first.seq})`;
    const errText = errnoText(first.errno);
    const more = errors.list.length > 1 ? `; ${errors.list.length - 1} more message(s) failed` : '';
    throw new NftError(`nf_tables netlink: ${what}: ${errText}${first.msg ? `: ${first.msg}` : ''}${more}; nothing was applied`);
  }
}

/** "No such file or directory (ENOENT)" for a negative errno. */
function errnoText(err: number): string {
  const u = util as unknown as { getSystemErrorMessage?: (e: number) => string; getSystemErrorName: (e: number) => string };
  let name = `errno ${-err}`;
  try {
    name = u.getSystemErrorName(err);
  } catch {
    // unknown errno
  }
  const msg = u.getSystemErrorMessage?.(err);
  return msg ? `${msg.charAt(0).toUpperCase()}${msg.slice(1)} (${name})` : name;
}

interface KernelError {
  seq: number;
  errno: number;
  offs?: number;
  msg?: string;
}

/** NLMSG_ERROR messages with a non-zero error (acks are ignored); extended-ack offset and text when present. */
function parseErrors(buf: Buffer, markerSeq: number): { list: KernelError[]; overrun: boolean } {
  const list: KernelError[] = [];
  let overrun = false;
  let o = 0;
  while (o + 16 <= buf.length) {
    const len = buf.readUInt32LE(o);
    const type = buf.readUInt16LE(o + 4);
    const flags = buf.readUInt16LE(o + 6);
    const seq = buf.readUInt32LE(o + 8);
    if (len < 16) break;
    if (type === NLMSG_OVERRUN) overrun = true;
    else if (type === NLMSG_ERROR && seq !== markerSeq && o + 20 <= buf.length) {
      const errno = buf.readInt32LE(o + 16);
      if (errno !== 0) {
        const e: KernelError = { seq, errno };
        // struct nlmsgerr: error, then the request's header (NLM_F_CAPPED: no payload), then TLVs (NLM_F_ACK_TLVS).
        const capped = (flags & 0x100) !== 0;
        const reqLen = buf.readUInt32LE(o + 20);
        let a = o + 20 + (capped ? 16 : (reqLen + 3) & ~3);
        if (flags & 0x200) {
          while (a + 4 <= o + len) {
            const alen = buf.readUInt16LE(a);
            const atype = buf.readUInt16LE(a + 2) & 0x3fff;
            if (alen < 4) break;
            if (atype === NLMSGERR_ATTR_OFFS) e.offs = buf.readUInt32LE(a + 4);
            if (atype === NLMSGERR_ATTR_MSG) e.msg = buf.toString('utf8', a + 4, a + alen).replace(/\0+$/, '');
            a += (alen + 3) & ~3;
          }
        }
        list.push(e);
      }
    }
    o += (len + 3) & ~3;
  }
  return { list, overrun };
}

export const __test = { Writer, literalSpan, keyTypeId, nftReg, NLM_F_ACK };

/**
 * The nftables runner a reconciler uses: NftNetlink (default; no process, no cache) or
 * the nft binary (`nftables: nft`, e.g. to compare, or where nft's own checks are wanted).
 */
export function nftRunner(kind: 'netlink' | 'nft', exec: Executor, opts: { netnsPath?: string; timeoutMs?: number } = {}): NftRunner {
  if (kind === 'nft') return new Nft(exec, { ...(opts.netnsPath ? { netnsPath: opts.netnsPath } : {}), ...(opts.timeoutMs ? { timeoutMs: opts.timeoutMs } : {}) });
  return new NftNetlink(opts.netnsPath ? { netnsPath: opts.netnsPath } : {});
}
