// The DNS wire format (RFC 1035, RFC 6891), written for the hot path: a query is
// parsed into a reusable Query (header, question, OPT) without allocating beyond the
// lookup key; answers are encoded once into Templates and rendered per query by
// copying the template and patching the ID, flags, the question's original case and
// the OPT record. dns-packet is used only by the tests, as an independent oracle.
import { ipToBytes } from '../util/ip.js';

export const TYPE = {
  A: 1, NS: 2, CNAME: 5, SOA: 6, PTR: 12, MX: 15, TXT: 16, AAAA: 28, SRV: 33, DNAME: 39, OPT: 41,
  IXFR: 251, AXFR: 252, MAILB: 253, MAILA: 254, ANY: 255,
} as const;

export const CLASS = { IN: 1, CH: 3, HS: 4, NONE: 254, ANY: 255 } as const;

export const RCODE = {
  NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5, BADVERS: 16,
} as const;

/** What the parser concluded about a message: answer it, answer with an error rcode, or drop it. */
export const ACTION = { OK: 0, DROP: 1, FORMERR: 2, NOTIMP: 3, BADVERS: 4, REFUSED: 5 } as const;
export type Action = (typeof ACTION)[keyof typeof ACTION];

/** Our advertised EDNS buffer size (the DNS flag day 2020 value) and the plain-DNS limit. */
export const EDNS_SIZE = 1232;
export const PLAIN_UDP_SIZE = 512;
const OPT_RR_LEN = 11;
const MAX_NAME = 255;

/** The parts of a query an answer depends on. */
export interface QueryInfo {
  id: number;
  opcode: number;
  rd: boolean;
  cd: boolean;
  /** The question name in wire form, decompressed, in the client's case: nameSrc[nameOff, nameOff+nameLen). */
  readonly nameSrc: Buffer;
  readonly nameOff: number;
  readonly nameLen: number;
  /** The same as a Buffer of its own (slow paths). */
  readonly nameOrig: Buffer;
  /** The question name in wire form, lowercased, as a latin1 string (slow paths: cache keys). */
  readonly key: string;
  qtype: number;
  qclass: number;
  edns: boolean;
  /** The client's UDP payload size (>= 512), meaningful when edns. */
  udpSize: number;
  dnssecOk: boolean;
  hasQuestion: boolean;
}

/** FNV-1a over bytes, folded to a small integer (a V8 Smi: cheap Map keys). */
export function hashBytes(b: Uint8Array, start: number, end: number): number {
  let h = 0x811c9dc5;
  for (let i = start; i < end; i++) h = Math.imul(h ^ b[i]!, 16777619);
  return h & 0x3fffffff;
}

/** hashBytes over a latin1 string's char codes (the same value as over its bytes). */
export function hashKey(k: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < k.length; i++) h = Math.imul(h ^ k.charCodeAt(i), 16777619);
  return h & 0x3fffffff;
}

/**
 * A reusable parse result. parseQuery fills it in place without allocating: the name
 * stays in the packet (nameSrc/nameOff) and its lowercase form in a shared scratch
 * buffer, hashed for the lookup. Call snapshot() before keeping it beyond the packet.
 */
export class Query implements QueryInfo {
  id = 0;
  opcode = 0;
  rd = false;
  cd = false;
  nameSrc: Buffer = Buffer.alloc(1);
  nameOff = 0;
  nameLen = 1;
  /** Hash of the lowercase wire name (hashBytes). */
  hash = 0;
  qtype = 0;
  qclass = 0;
  edns = false;
  udpSize = PLAIN_UDP_SIZE;
  dnssecOk = false;
  hasQuestion = false;
  /** Offsets of each label within the wire name (for label-boundary checks). */
  readonly labelOffsets = new Uint8Array(128);
  labelCount = 0;
  private keyCache: string | null = null;

  get nameOrig(): Buffer {
    return this.nameSrc.subarray(this.nameOff, this.nameOff + this.nameLen);
  }

  get key(): string {
    return (this.keyCache ??= lowerScratch.toString('latin1', 0, this.nameLen));
  }

  /** The lowercase wire name (a view of shared scratch space: valid until the next parse). */
  get lower(): Buffer {
    return lowerScratch.subarray(0, this.nameLen);
  }

  resetKey(): void {
    this.keyCache = null;
  }

  snapshot(): QueryInfo {
    const nameOrig = Buffer.from(this.nameOrig);
    return {
      id: this.id, opcode: this.opcode, rd: this.rd, cd: this.cd,
      nameSrc: nameOrig, nameOff: 0, nameLen: this.nameLen, nameOrig, key: this.key,
      qtype: this.qtype, qclass: this.qclass,
      edns: this.edns, udpSize: this.udpSize, dnssecOk: this.dnssecOk, hasQuestion: this.hasQuestion,
    };
  }

  /** Whether the lowercase name equals `key` (a lowercase wire name as a latin1 string, see keyOfName). */
  nameEqualsKey(key: string): boolean {
    const n = this.nameLen;
    if (key.length !== n) return false;
    for (let i = 0; i < n; i++) if (lowerScratch[i] !== key.charCodeAt(i)) return false;
    return true;
  }

  /**
   * Whether the lowercase name equals `name` (lowercase dotted, no trailing dot): the
   * same answer as nameEqualsKey(keyOfName(name)) for names whose labels hold no dot.
   */
  nameEqualsName(name: string): boolean {
    if ((name === '' ? 1 : name.length + 2) !== this.nameLen) return false;
    let p = 0, i = 0;
    for (;;) {
      const len = lowerScratch[p++]!;
      if (len === 0) return i >= name.length;
      for (let k = 0; k < len; k++) {
        const c = lowerScratch[p + k]!;
        if (c === 46 || c !== (name.charCodeAt(i + k) & 0xff)) return false;
      }
      p += len;
      i += len;
      if (lowerScratch[p] !== 0) {
        if (name.charCodeAt(i) !== 46) return false;
        i++;
      }
    }
  }

  /** Whether the lowercase name equals `wire` (a lowercase wire name). */
  nameEquals(wire: Buffer): boolean {
    const n = this.nameLen;
    if (wire.length !== n) return false;
    for (let i = 0; i < n; i++) if (lowerScratch[i] !== wire[i]) return false;
    return true;
  }

  /** True when the question name ends with `suffix` (a lowercase wire name) on a label boundary. */
  endsWithName(suffix: Buffer): boolean {
    const at = this.nameLen - suffix.length;
    if (at < 0) return false;
    for (let i = 0; i < suffix.length; i++) if (lowerScratch[at + i] !== suffix[i]) return false;
    if (at === 0) return true;
    for (let i = 0; i < this.labelCount; i++) if (this.labelOffsets[i] === at) return true;
    return false;
  }

  /** Label `i` (0 = leftmost), lowercased, as text (latin1). */
  labelText(i: number): string {
    if (i < 0 || i >= this.labelCount) return '';
    const off = this.labelOffsets[i]!;
    return lowerScratch.toString('latin1', off + 1, off + 1 + lowerScratch[off]!);
  }

  /** Whether label `i` (0 = leftmost) equals the lowercase ASCII `text`. */
  labelIs(i: number, text: string): boolean {
    if (i < 0 || i >= this.labelCount) return false;
    const off = this.labelOffsets[i]!;
    if (lowerScratch[off] !== text.length) return false;
    for (let k = 0; k < text.length; k++) if (lowerScratch[off + 1 + k] !== text.charCodeAt(k)) return false;
    return true;
  }
}

const lowerScratch = Buffer.alloc(MAX_NAME + 1);
const origScratch = Buffer.alloc(MAX_NAME + 1);

/**
 * Reads the question name at 12 into q (lowercased key, original-case bytes).
 * Compression pointers must point strictly backwards (each one before the previous),
 * which bounds the walk and rules out loops. Returns the offset after the name in
 * the message, or -1 when the name is malformed or runs past the end.
 */
function readQName(m: Buffer, len: number, start: number, q: Query): number {
  let p = start;
  let out = 0;
  let end = -1;
  let jumped = false;
  let limit = start; // a pointer must point before this
  let n = 0;
  for (;;) {
    if (p >= len) return -1;
    const l = m[p]!;
    if (l === 0) {
      if (!jumped) end = p + 1;
      lowerScratch[out] = 0;
      origScratch[out] = 0;
      out++;
      break;
    }
    const kind = l & 0xc0;
    if (kind === 0xc0) {
      if (p + 1 >= len) return -1;
      const ptr = ((l & 0x3f) << 8) | m[p + 1]!;
      if (ptr >= limit || ptr < 12) return -1;
      if (!jumped) end = p + 2;
      jumped = true;
      limit = ptr;
      p = ptr;
      continue;
    }
    if (kind !== 0) return -1; // 0x40 / 0x80: extended and reserved label types
    if (p + 1 + l > len) return -1;
    if (out + l + 2 > MAX_NAME) return -1; // label + its length byte + the root byte
    q.labelOffsets[n++] = out;
    lowerScratch[out] = l;
    origScratch[out] = l;
    for (let i = 1; i <= l; i++) {
      const b = m[p + i]!;
      origScratch[out + i] = b;
      lowerScratch[out + i] = b >= 65 && b <= 90 ? b | 0x20 : b;
    }
    out += l + 1;
    p += l + 1;
  }
  q.labelCount = n;
  q.nameLen = out;
  q.hash = hashBytes(lowerScratch, 0, out);
  q.resetKey();
  // Uncompressed (the normal case): the original bytes are in the packet already.
  if (jumped) {
    q.nameSrc = Buffer.from(origScratch.subarray(0, out));
    q.nameOff = 0;
  } else {
    q.nameSrc = m;
    q.nameOff = start;
  }
  return end;
}

/** Skips a (possibly compressed) name; returns the offset after it or -1. */
export function skipName(m: Buffer, len: number, p: number): number {
  let total = 0;
  for (;;) {
    if (p >= len) return -1;
    const l = m[p]!;
    if (l === 0) return p + 1;
    const kind = l & 0xc0;
    if (kind === 0xc0) return p + 2 <= len ? p + 2 : -1;
    if (kind !== 0) return -1;
    total += l + 1;
    if (total + 1 > MAX_NAME) return -1;
    p += l + 1;
  }
}

/**
 * Parses a query into q. Classification (RFC 1035 §4.1.1, RFC 6891 §6.1.3):
 * shorter than a header or a response (QR set) -> DROP (never answer: it avoids
 * reflection loops); opcode other than QUERY -> NOTIMP; QDCOUNT != 1, malformed or
 * truncated question/records, OPT in the question, more than one OPT or an OPT with
 * a non-root owner -> FORMERR; EDNS version != 0 -> BADVERS; classes other than IN
 * and ANY -> NOTIMP; zone transfers -> REFUSED.
 */
export function parseQuery(m: Buffer, q: Query): Action {
  const len = m.length;
  if (len < 12) return ACTION.DROP;
  const f = (m[2]! << 8) | m[3]!;
  if (f & 0x8000) return ACTION.DROP;
  q.id = (m[0]! << 8) | m[1]!;
  q.opcode = (f >> 11) & 0xf;
  q.rd = (f & 0x100) !== 0;
  q.cd = (f & 0x10) !== 0;
  q.edns = false;
  q.dnssecOk = false;
  q.udpSize = PLAIN_UDP_SIZE;
  q.hasQuestion = false;
  const qd = (m[4]! << 8) | m[5]!;
  const an = (m[6]! << 8) | m[7]!;
  const ns = (m[8]! << 8) | m[9]!;
  const ar = (m[10]! << 8) | m[11]!;
  if (qd !== 1) return q.opcode !== 0 ? ACTION.NOTIMP : ACTION.FORMERR;
  const end = readQName(m, len, 12, q);
  if (end < 0 || end + 4 > len) return q.opcode !== 0 ? ACTION.NOTIMP : ACTION.FORMERR;
  q.qtype = (m[end]! << 8) | m[end + 1]!;
  q.qclass = (m[end + 2]! << 8) | m[end + 3]!;
  q.hasQuestion = true;
  if (q.opcode !== 0) return ACTION.NOTIMP;
  let p = end + 4;
  // Queries rarely carry answer/authority records, but they must be walked to reach the OPT.
  for (let i = 0; i < an + ns; i++) {
    p = skipName(m, len, p);
    if (p < 0 || p + 10 > len) return ACTION.FORMERR;
    p += 10 + ((m[p + 8]! << 8) | m[p + 9]!);
    if (p > len) return ACTION.FORMERR;
  }
  let version = 0;
  for (let i = 0; i < ar; i++) {
    const nameAt = p;
    p = skipName(m, len, p);
    if (p < 0 || p + 10 > len) return ACTION.FORMERR;
    const type = (m[p]! << 8) | m[p + 1]!;
    const rdlen = (m[p + 8]! << 8) | m[p + 9]!;
    if (type === TYPE.OPT) {
      if (q.edns || m[nameAt] !== 0) return ACTION.FORMERR;
      q.edns = true;
      const size = (m[p + 2]! << 8) | m[p + 3]!;
      q.udpSize = size < PLAIN_UDP_SIZE ? PLAIN_UDP_SIZE : size;
      version = m[p + 5]!;
      q.dnssecOk = (m[p + 6]! & 0x80) !== 0;
      // Options must tile the RDATA exactly.
      let o = p + 10;
      const oe = o + rdlen;
      if (oe > len) return ACTION.FORMERR;
      while (o < oe) {
        if (o + 4 > oe) return ACTION.FORMERR;
        o += 4 + ((m[o + 2]! << 8) | m[o + 3]!);
      }
      if (o !== oe) return ACTION.FORMERR;
    }
    p += 10 + rdlen;
    if (p > len) return ACTION.FORMERR;
  }
  if (q.edns && version !== 0) return ACTION.BADVERS;
  const t = q.qtype;
  if (t === TYPE.OPT || t === 0) return ACTION.FORMERR;
  if (q.qclass !== CLASS.IN && q.qclass !== CLASS.ANY) return ACTION.NOTIMP;
  if (t === TYPE.AXFR || t === TYPE.IXFR) return ACTION.REFUSED;
  if (t === TYPE.MAILA || t === TYPE.MAILB) return ACTION.NOTIMP;
  return ACTION.OK;
}

// ---------------------------------------------------------------------------
// Templates: encoded answers, rendered per query.

/**
 * A complete response message with the question at offset 12 (in lowercase), encoded
 * once. Compression pointers only point backwards, so any prefix that ends on a record
 * boundary is itself a valid message: truncation cuts at rrEnds.
 */
export interface Template {
  buf: Buffer;
  /** Offset just after the question. */
  qEnd: number;
  /** End offset of each record, in order (answer, authority, additional). */
  rrEnds: number[];
  an: number;
  ns: number;
  ar: number;
  rcode: number;
  aa: boolean;
  /** Offsets and original values of the TTL fields (cached upstream answers decrement them). */
  ttlOffsets?: number[];
  ttls?: number[];
}

/**
 * Renders a template for a query: copies it (cut to `limit` bytes at a record boundary
 * when needed), patches ID, flags, the question in the client's case and type/class,
 * and appends an OPT record when the client sent one. `age` seconds are subtracted
 * from the TTLs of templates that carry ttlOffsets.
 */
export function render(t: Template, q: QueryInfo, limit: number, age = 0): Buffer {
  const opt = q.edns ? OPT_RR_LEN : 0;
  let end = t.buf.length;
  let an = t.an, ns = t.ns, ar = t.ar;
  let tc = false;
  if (end + opt > limit) {
    // Keep the longest prefix of whole records that fits. Dropping only additional
    // records does not set TC (RFC 2181 §9); losing answer or authority records does.
    const ends = t.rrEnds;
    let k = 0;
    while (k < ends.length && ends[k]! + opt <= limit) k++;
    end = k === 0 ? t.qEnd : ends[k - 1]!;
    if (k < t.an + t.ns) tc = true;
    an = Math.min(k, t.an);
    ns = Math.min(Math.max(k - t.an, 0), t.ns);
    ar = Math.max(k - t.an - t.ns, 0);
  }
  const out = Buffer.allocUnsafe(end + opt);
  t.buf.copy(out, 0, 0, end);
  out[0] = q.id >> 8;
  out[1] = q.id & 0xff;
  out[2] = 0x80 | (t.aa ? 0x04 : 0) | (tc ? 0x02 : 0) | (q.rd ? 0x01 : 0);
  out[3] = 0x80 | (q.cd ? 0x10 : 0) | (t.rcode & 0x0f);
  out[6] = an >> 8; out[7] = an & 0xff;
  out[8] = ns >> 8; out[9] = ns & 0xff;
  const arc = ar + (opt ? 1 : 0);
  out[10] = arc >> 8; out[11] = arc & 0xff;
  q.nameSrc.copy(out, 12, q.nameOff, q.nameOff + q.nameLen);
  const qe = t.qEnd;
  out[qe - 4] = q.qtype >> 8; out[qe - 3] = q.qtype & 0xff;
  out[qe - 2] = q.qclass >> 8; out[qe - 1] = q.qclass & 0xff;
  if (t.ttlOffsets && age > 0) {
    const offs = t.ttlOffsets, ttls = t.ttls!;
    for (let i = 0; i < offs.length; i++) {
      const o = offs[i]!;
      if (o + 4 > end) break;
      const v = ttls[i]! - age;
      out.writeUInt32BE(v > 0 ? v : 0, o);
    }
  }
  if (opt) writeOpt(out, end, t.rcode, q.dnssecOk);
  return out;
}

function writeOpt(out: Buffer, at: number, rcode: number, dnssecOk: boolean): void {
  out[at] = 0;
  out[at + 1] = 0; out[at + 2] = TYPE.OPT;
  out[at + 3] = EDNS_SIZE >> 8; out[at + 4] = EDNS_SIZE & 0xff;
  out[at + 5] = (rcode >> 4) & 0xff; // extended rcode (upper 8 bits)
  out[at + 6] = 0; // version
  out[at + 7] = dnssecOk ? 0x80 : 0;
  out[at + 8] = 0;
  out[at + 9] = 0; out[at + 10] = 0;
}

/**
 * An error answer (FORMERR, NOTIMP, REFUSED, SERVFAIL, BADVERS...): the header with
 * the question echoed when it was parsed, and an OPT when the client sent one.
 * `raw` is the query packet, to echo the ID and opcode when q was not filled.
 */
export function renderError(raw: Buffer, q: QueryInfo, rcode: number): Buffer {
  const withQ = q.hasQuestion;
  const qlen = withQ ? q.nameOrig.length + 4 : 0;
  const opt = q.edns || rcode === RCODE.BADVERS ? OPT_RR_LEN : 0;
  const out = Buffer.alloc(12 + qlen + opt);
  out[0] = raw[0]!;
  out[1] = raw[1]!;
  out[2] = 0x80 | (raw[2]! & 0x79); // QR, the opcode and RD echoed
  out[3] = 0x80 | (raw[3]! & 0x10) | (rcode & 0x0f);
  if (withQ) {
    out[5] = 1;
    q.nameOrig.copy(out, 12);
    const p = 12 + q.nameOrig.length;
    out.writeUInt16BE(q.qtype, p);
    out.writeUInt16BE(q.qclass, p + 2);
  }
  if (opt) {
    out[11] = 1;
    writeOpt(out, 12 + qlen, rcode, q.dnssecOk);
  }
  return out;
}

// ---------------------------------------------------------------------------
// Encoding.

/** A resource record in presentation-ish form; names are lowercase dotted, no trailing dot. */
export type RR =
  /** `ip`: the bytes, or the address as text (a string shared with the cluster object costs nothing per record). */
  | { name: string; type: typeof TYPE.A | typeof TYPE.AAAA; ttl: number; ip: Uint8Array | string }
  | { name: string; type: typeof TYPE.CNAME | typeof TYPE.PTR | typeof TYPE.NS; ttl: number; target: string }
  | { name: string; type: typeof TYPE.SRV; ttl: number; priority: number; weight: number; port: number; target: string }
  | { name: string; type: typeof TYPE.TXT; ttl: number; texts: string[] }
  | {
      name: string; type: typeof TYPE.SOA; ttl: number; mname: string; rname: string;
      serial: number; refresh: number; retry: number; expire: number; minimum: number;
    }
  /** Already-encoded records (from an upstream answer), names uncompressed. */
  | { name: string; type: number; ttl: number; raw: Buffer; cls: number; wireName: Buffer };

/** Lowercase dotted name -> wire form. Throws on labels over 63 bytes or names over 255. */
export function nameToWire(name: string): Buffer {
  const n = name.endsWith('.') ? name.slice(0, -1) : name;
  if (n === '') return Buffer.from([0]);
  const labels = n.split('.');
  const parts: number[] = [];
  for (const l of labels) {
    const b = Buffer.from(l, 'latin1');
    if (b.length === 0 || b.length > 63) throw new Error(`invalid DNS name ${JSON.stringify(name)}: bad label length`);
    parts.push(b.length, ...b);
  }
  parts.push(0);
  if (parts.length > MAX_NAME) throw new Error(`invalid DNS name ${JSON.stringify(name)}: longer than 255 bytes`);
  return Buffer.from(parts);
}

/**
 * hashKey(keyOfName(name)) for a lowercase dotted name without a trailing dot, computed
 * without building the key.
 */
export function hashName(name: string): number {
  let h = 0x811c9dc5;
  if (name !== '') {
    let start = 0;
    for (;;) {
      let end = name.indexOf('.', start);
      if (end < 0) end = name.length;
      h = Math.imul(h ^ (end - start), 16777619);
      for (let i = start; i < end; i++) h = Math.imul(h ^ (name.charCodeAt(i) & 0xff), 16777619);
      if (end === name.length) break;
      start = end + 1;
    }
  }
  h = Math.imul(h, 16777619); // the root label's 0 byte
  return h & 0x3fffffff;
}

/** The lookup key (lowercase wire form as latin1) of a dotted name. */
export function keyOfName(name: string): string {
  return nameToWire(name.toLowerCase()).toString('latin1');
}

/** Wire name (uncompressed) -> dotted lowercase (no trailing dot); '' for the root. */
export function wireToName(w: Buffer): string {
  const parts: string[] = [];
  let p = 0;
  while (p < w.length && w[p] !== 0) {
    const l = w[p]!;
    parts.push(w.toString('latin1', p + 1, p + 1 + l).toLowerCase());
    p += l + 1;
  }
  return parts.join('.');
}

/** Builds a Template: question first, then records with name compression. */
export class MsgWriter {
  private buf = Buffer.alloc(512);
  private pos = 12;
  private readonly comp = new Map<string, number>();
  private readonly rrEnds: number[] = [];
  private readonly ttlOffsets: number[] = [];
  private readonly ttls: number[] = [];
  private qEnd = 12;

  /**
   * `registerOnly`, when given, limits which suffixes of the question name later names may
   * point at to that name and its own suffixes: templates shared by every query name of
   * one length (negative answers) must only point at the zone part they have in common.
   */
  constructor(qname: string, qtype: number, qclass: number = CLASS.IN, registerOnly?: string) {
    this.writeName(qname, true, registerOnly);
    this.u16(qtype);
    this.u16(qclass);
    this.qEnd = this.pos;
  }

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const nb = Buffer.alloc(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(nb, 0, 0, this.pos);
    this.buf = nb;
  }

  private u16(v: number): void {
    this.ensure(2);
    this.buf.writeUInt16BE(v, this.pos);
    this.pos += 2;
  }

  private u32(v: number): void {
    this.ensure(4);
    this.buf.writeUInt32BE(v >>> 0, this.pos);
    this.pos += 4;
  }

  private bytes(b: Uint8Array): void {
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }

  /** Writes a lowercase dotted name, pointing at an earlier copy of the longest known suffix. */
  writeName(name: string, compress: boolean, registerOnly?: string): void {
    const labels = name === '' ? [] : name.split('.');
    for (let i = 0; i < labels.length; i++) {
      const suffix = i === 0 ? name : labels.slice(i).join('.');
      if (compress) {
        const at = this.comp.get(suffix);
        if (at !== undefined) {
          this.u16(0xc000 | at);
          return;
        }
      }
      const register = registerOnly === undefined || suffix === registerOnly || registerOnly.endsWith('.' + suffix);
      if (register && this.pos < 0x3fff && !this.comp.has(suffix)) this.comp.set(suffix, this.pos);
      const b = Buffer.from(labels[i]!, 'latin1');
      this.ensure(b.length + 1);
      this.buf[this.pos++] = b.length;
      this.bytes(b);
    }
    this.ensure(1);
    this.buf[this.pos++] = 0;
  }

  add(rr: RR): void {
    if ('raw' in rr) {
      this.bytes(rr.wireName);
    } else {
      this.writeName(rr.name, true);
    }
    this.u16(rr.type);
    this.u16('raw' in rr ? rr.cls : CLASS.IN);
    this.ttlOffsets.push(this.pos);
    this.ttls.push(rr.ttl);
    this.u32(rr.ttl);
    const lenAt = this.pos;
    this.u16(0);
    const start = this.pos;
    if ('raw' in rr) {
      this.bytes(rr.raw);
    } else {
      switch (rr.type) {
        case TYPE.A:
        case TYPE.AAAA:
          this.bytes(typeof rr.ip === 'string' ? ipToBytes(rr.ip) : rr.ip);
          break;
        case TYPE.CNAME:
        case TYPE.PTR:
        case TYPE.NS:
          this.writeName(rr.target, true);
          break;
        case TYPE.SRV:
          this.u16(rr.priority);
          this.u16(rr.weight);
          this.u16(rr.port);
          // RFC 2782: the target is not compressed.
          this.writeName(rr.target, false);
          break;
        case TYPE.TXT:
          for (const s of rr.texts) {
            const b = Buffer.from(s, 'utf8');
            this.ensure(1);
            this.buf[this.pos++] = b.length;
            this.bytes(b);
          }
          break;
        case TYPE.SOA:
          this.writeName(rr.mname, true);
          this.writeName(rr.rname, true);
          this.u32(rr.serial);
          this.u32(rr.refresh);
          this.u32(rr.retry);
          this.u32(rr.expire);
          this.u32(rr.minimum);
          break;
      }
    }
    this.buf.writeUInt16BE(this.pos - start, lenAt);
    this.rrEnds.push(this.pos);
  }

  finish(counts: { an: number; ns: number; ar: number }, rcode: number, aa: boolean, keepTtls = false): Template {
    const buf = Buffer.from(this.buf.subarray(0, this.pos));
    buf.writeUInt16BE(1, 4);
    buf.writeUInt16BE(counts.an, 6);
    buf.writeUInt16BE(counts.ns, 8);
    buf.writeUInt16BE(counts.ar, 10);
    const t: Template = { buf, qEnd: this.qEnd, rrEnds: this.rrEnds, ...counts, rcode, aa };
    if (keepTtls) {
      t.ttlOffsets = this.ttlOffsets;
      t.ttls = this.ttls;
    }
    return t;
  }
}

/** Builds a template from sections of records. */
export function buildTemplate(
  qname: string, qtype: number, rcode: number, aa: boolean,
  answer: readonly RR[], authority: readonly RR[], additional: readonly RR[], keepTtls = false,
): Template {
  const w = new MsgWriter(qname, qtype);
  for (const r of answer) w.add(r);
  for (const r of authority) w.add(r);
  for (const r of additional) w.add(r);
  return w.finish({ an: answer.length, ns: authority.length, ar: additional.length }, rcode, aa, keepTtls);
}

/** A question-only query (for forwarding): RD set, EDNS with our buffer size. */
export function encodeQuery(id: number, nameWire: Buffer, qtype: number, qclass: number, dnssecOk: boolean): Buffer {
  const out = Buffer.alloc(12 + nameWire.length + 4 + OPT_RR_LEN);
  out.writeUInt16BE(id, 0);
  out[2] = 0x01;
  out[5] = 1;
  out[11] = 1;
  nameWire.copy(out, 12);
  let p = 12 + nameWire.length;
  out.writeUInt16BE(qtype, p);
  out.writeUInt16BE(qclass, p + 2);
  writeOpt(out, p + 4, 0, dnssecOk);
  return out;
}

// ---------------------------------------------------------------------------
// Reading whole responses (from upstreams).

export interface ParsedRR {
  /** Uncompressed wire owner name. */
  wireName: Buffer;
  type: number;
  cls: number;
  ttl: number;
  /** Offset of the TTL field in the message. */
  ttlAt: number;
  /** RDATA with embedded names decompressed (for the types that may compress them). */
  rdata: Buffer;
  /** Offset just after the record. */
  end: number;
}

export interface ParsedResponse {
  id: number;
  flags: number;
  rcode: number;
  qname: Buffer;
  qtype: number;
  qclass: number;
  qEnd: number;
  answer: ParsedRR[];
  authority: ParsedRR[];
  additional: ParsedRR[];
}

/** Reads a possibly compressed name anywhere in a message; null when malformed. */
export function readName(m: Buffer, p: number): { wire: Buffer; end: number } | null {
  const len = m.length;
  const parts: number[] = [];
  let end = -1;
  let limit = p;
  let jumped = false;
  for (;;) {
    if (p >= len) return null;
    const l = m[p]!;
    if (l === 0) {
      if (!jumped) end = p + 1;
      parts.push(0);
      break;
    }
    if ((l & 0xc0) === 0xc0) {
      if (p + 1 >= len) return null;
      const ptr = ((l & 0x3f) << 8) | m[p + 1]!;
      if (ptr >= limit) return null;
      if (!jumped) end = p + 2;
      jumped = true;
      limit = ptr;
      p = ptr;
      continue;
    }
    if (l & 0xc0) return null;
    if (p + 1 + l > len || parts.length + l + 2 > MAX_NAME) return null;
    parts.push(l);
    for (let i = 1; i <= l; i++) parts.push(m[p + i]!);
    p += l + 1;
  }
  return { wire: Buffer.from(parts), end };
}

function decompressRdata(m: Buffer, type: number, p: number, rdlen: number): Buffer | null {
  const e = p + rdlen;
  const name = (at: number) => {
    const r = readName(m, at);
    return r && r.end <= e ? r : null;
  };
  switch (type) {
    case TYPE.CNAME: case TYPE.NS: case TYPE.PTR: case TYPE.DNAME: {
      const n = name(p);
      return n && n.end === e ? n.wire : null;
    }
    case TYPE.MX: {
      if (rdlen < 3) return null;
      const n = name(p + 2);
      return n && n.end === e ? Buffer.concat([m.subarray(p, p + 2), n.wire]) : null;
    }
    case TYPE.SRV: {
      if (rdlen < 7) return null;
      const n = name(p + 6);
      return n && n.end === e ? Buffer.concat([m.subarray(p, p + 6), n.wire]) : null;
    }
    case TYPE.SOA: {
      const a = name(p);
      if (!a) return null;
      const b = name(a.end);
      if (!b || b.end + 20 !== e) return null;
      return Buffer.concat([a.wire, b.wire, m.subarray(b.end, e)]);
    }
    default:
      return Buffer.from(m.subarray(p, e));
  }
}

/** Parses a whole response (one question); null when anything is malformed. */
export function parseResponse(m: Buffer): ParsedResponse | null {
  if (m.length < 12) return null;
  const qd = m.readUInt16BE(4);
  if (qd !== 1) return null;
  const q = readName(m, 12);
  if (!q || q.end + 4 > m.length) return null;
  const res: ParsedResponse = {
    id: m.readUInt16BE(0), flags: m.readUInt16BE(2), rcode: m[3]! & 0x0f,
    qname: q.wire, qtype: m.readUInt16BE(q.end), qclass: m.readUInt16BE(q.end + 2), qEnd: q.end + 4,
    answer: [], authority: [], additional: [],
  };
  let p = res.qEnd;
  const sections = [res.answer, res.authority, res.additional];
  const counts = [m.readUInt16BE(6), m.readUInt16BE(8), m.readUInt16BE(10)];
  for (let s = 0; s < 3; s++) {
    for (let i = 0; i < counts[s]!; i++) {
      const n = readName(m, p);
      if (!n || n.end + 10 > m.length) return null;
      p = n.end;
      const type = m.readUInt16BE(p);
      const cls = m.readUInt16BE(p + 2);
      const ttl = m.readUInt32BE(p + 4);
      const rdlen = m.readUInt16BE(p + 8);
      if (p + 10 + rdlen > m.length) return null;
      const rdata = decompressRdata(m, type, p + 10, rdlen);
      if (!rdata) return null;
      sections[s]!.push({ wireName: n.wire, type, cls, ttl, ttlAt: p + 4, rdata, end: p + 10 + rdlen });
      p += 10 + rdlen;
    }
  }
  return res;
}
