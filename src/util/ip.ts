// Small, dependency-free IP helpers for the hot, start-up-sensitive paths (the
// CNI plugin). The plugin deliberately does not load ip-num: measured on this
// machine, `require('ip-num')` adds ~33 ms to a ~45 ms Node start, and a runtime
// execs the plugin for every pod. Long-running code (agent, lab) may use ip-num.
//
// Nor node:net: loading it costs ~5 ms of CPU at start-up, and its isIPv6 compiles a
// large regular expression on first use (~6 ms in a profile of the plugin's ADD).
// `parseIp` is a hand-written parser that accepts exactly what node:net's isIP does
// (the unit tests compare the two on a generated corpus).
export type Family = 4 | 6;

const HEXTET = /^[0-9a-fA-F]{1,4}$/;
const ZONE = /^[0-9a-zA-Z\-.:]+$/;

/**
 * A dotted quad into out[at..at+3]: four decimal parts 0-255 without leading zeros
 * (what node:net's isIPv4 accepts). A character loop: the proxy parses every
 * endpoint address of a 100,000-endpoint sync, and split + regex per part was a
 * visible share of it.
 */
export function parseV4(s: string, out: Uint8Array, at: number): boolean {
  let part = 0;
  let val = 0;
  let digits = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || part === 3) return false;
      out[at + part++] = val;
      val = 0;
      digits = 0;
      continue;
    }
    if (c < 48 || c > 57 || (digits > 0 && val === 0)) return false;
    val = val * 10 + (c - 48);
    if (val > 255) return false;
    digits++;
  }
  if (digits === 0 || part !== 3) return false;
  out[at + 3] = val;
  return true;
}

/** Hextets of one side of "::" into out (2 bytes each); the last may be a dotted quad. Returns the byte count or -1. */
function parseHextets(s: string, out: Uint8Array, allowV4Tail: boolean): number {
  if (s === '') return 0;
  const groups = s.split(':');
  let n = 0;
  for (let i = 0; i < groups.length; i++) {
    const g = groups[i]!;
    if (allowV4Tail && i === groups.length - 1 && g.includes('.')) {
      if (n + 4 > 16 || !parseV4(g, out, n)) return -1;
      n += 4;
    } else {
      if (!HEXTET.test(g) || n + 2 > 16) return -1;
      const v = parseInt(g, 16);
      out[n] = v >> 8;
      out[n + 1] = v & 0xff;
      n += 2;
    }
  }
  return n;
}

/** Network-order bytes of an IPv4 (4) or IPv6 (16, zone ignored) address; undefined when invalid. */
export function parseIp(ip: string): Uint8Array | undefined {
  if (typeof ip !== 'string') return undefined;
  if (!ip.includes(':')) {
    const b = new Uint8Array(4);
    return parseV4(ip, b, 0) ? b : undefined;
  }
  let s = ip;
  const pct = s.indexOf('%');
  if (pct >= 0) {
    if (!ZONE.test(s.slice(pct + 1))) return undefined;
    s = s.slice(0, pct);
  }
  const out = new Uint8Array(16);
  const dbl = s.indexOf('::');
  if (dbl < 0) return parseHextets(s, out, true) === 16 ? out : undefined;
  if (s.indexOf('::', dbl + 1) >= 0) return undefined;
  const head = s.slice(0, dbl);
  const tail = s.slice(dbl + 2);
  const h = parseHextets(head, out, false);
  if (h < 0) return undefined;
  const t = new Uint8Array(16);
  const tn = parseHextets(tail, t, true);
  // "::" stands for at least one zero hextet.
  if (tn < 0 || h + tn > 14) return undefined;
  out.set(t.subarray(0, tn), 16 - tn);
  return out;
}

export function isIPv4(ip: string): boolean {
  return typeof ip === 'string' && !ip.includes(':') && parseV4(ip, SCRATCH, 0);
}

/** isIPv4's scratch bytes (it allocates nothing: the proxy validates every address of a sync). */
const SCRATCH = new Uint8Array(4);

export function isIPv6(ip: string): boolean {
  return typeof ip === 'string' && ip.includes(':') && parseIp(ip) !== undefined;
}

/** 4, 6, or 0 when not an address (node:net's isIP). */
export function isIP(ip: string): 0 | 4 | 6 {
  const b = parseIp(ip);
  return b ? (b.length === 4 ? 4 : 6) : 0;
}

export function familyOf(ip: string): Family {
  const b = parseIp(ip);
  if (!b) throw new Error(`invalid IP address ${JSON.stringify(ip)}`);
  return b.length === 4 ? 4 : 6;
}

/** Network-order bytes of an IPv4 or IPv6 address. */
export function ipToBytes(ip: string): Buffer {
  const b = parseIp(ip);
  if (!b) throw new Error(`invalid IP address ${JSON.stringify(ip)}`);
  return Buffer.from(b.buffer, b.byteOffset, b.length);
}

/** Canonical text form of address bytes (4 or 16 bytes). */
export function bytesToIp(b: Uint8Array): string {
  if (b.length === 4) return Array.from(b).join('.');
  const words: number[] = [];
  for (let i = 0; i < 16; i += 2) words.push((b[i]! << 8) | b[i + 1]!);
  // RFC 5952: compress the longest run (>= 2) of zero words.
  let best = -1, bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (words[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) { best = i; bestLen = j - i; }
    i = j;
  }
  const hex = words.map((w) => w.toString(16));
  if (best < 0) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`;
}

export interface Cidr {
  ip: string;
  prefix: number;
  family: Family;
}

/** Parses "addr/prefix" (host bits allowed: an interface address). */
export function parseCidr(s: string): Cidr {
  const m = /^([^/]+)\/(\d{1,3})$/.exec(s);
  if (!m) throw new Error(`invalid CIDR ${JSON.stringify(s)}`);
  const family = familyOf(m[1]!);
  const prefix = Number(m[2]);
  if (prefix > (family === 4 ? 32 : 128)) throw new Error(`invalid CIDR ${JSON.stringify(s)}: prefix too long`);
  return { ip: bytesToIp(ipToBytes(m[1]!)), prefix, family };
}

/** The network address of a CIDR, as text. */
export function networkOf(c: Cidr): string {
  const b = ipToBytes(c.ip);
  for (let i = 0; i < b.length; i++) {
    const bits = Math.max(0, Math.min(8, c.prefix - i * 8));
    b[i] = b[i]! & (0xff << (8 - bits)) & 0xff;
  }
  return bytesToIp(b);
}

export function containsIp(c: Cidr, ip: string): boolean {
  if (familyOf(ip) !== c.family) return false;
  return networkOf({ ...c, ip }) === networkOf(c);
}

export function macToBytes(mac: string): Buffer {
  if (!/^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$/.test(mac)) throw new Error(`invalid MAC address ${JSON.stringify(mac)}`);
  return Buffer.from(mac.split(':').map((x) => parseInt(x, 16)));
}

export function bytesToMac(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(':');
}

/** An address as an unsigned integer (for range arithmetic). */
export function ipToBigInt(ip: string): bigint {
  let n = 0n;
  for (const byte of ipToBytes(ip)) n = (n << 8n) | BigInt(byte);
  return n;
}

export function bigIntToIp(n: bigint, family: Family): string {
  const len = family === 4 ? 4 : 16;
  const b = Buffer.alloc(len);
  for (let i = len - 1; i >= 0; i--) {
    b[i] = Number(n & 0xffn);
    n >>= 8n;
  }
  return bytesToIp(b);
}

/** The last address of a CIDR (the broadcast address for IPv4). */
export function lastOf(c: Cidr): string {
  const bits = c.family === 4 ? 32 : 128;
  const hostMask = (1n << BigInt(bits - c.prefix)) - 1n;
  return bigIntToIp(ipToBigInt(networkOf(c)) | hostMask, c.family);
}
