// Small, dependency-free IP helpers for the hot, start-up-sensitive paths (the
// CNI plugin). The plugin deliberately does not load ip-num: measured on this
// machine, `require('ip-num')` adds ~33 ms to a ~45 ms Node start, and a runtime
// execs the plugin for every pod. Long-running code (agent, lab) may use ip-num.
import { isIPv4, isIPv6 } from 'node:net';

export type Family = 4 | 6;

export function familyOf(ip: string): Family {
  if (isIPv4(ip)) return 4;
  if (isIPv6(ip)) return 6;
  throw new Error(`invalid IP address ${JSON.stringify(ip)}`);
}

/** Network-order bytes of an IPv4 or IPv6 address. */
export function ipToBytes(ip: string): Buffer {
  if (isIPv4(ip)) return Buffer.from(ip.split('.').map(Number));
  if (!isIPv6(ip)) throw new Error(`invalid IP address ${JSON.stringify(ip)}`);
  let s = ip.split('%')[0]!;
  // An embedded dotted quad becomes two hextets.
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (dotted) {
    const b = dotted[1]!.split('.').map(Number);
    s = s.slice(0, -dotted[1]!.length) + `${((b[0]! << 8) | b[1]!).toString(16)}:${((b[2]! << 8) | b[3]!).toString(16)}`;
  }
  const [head, tail] = s.includes('::') ? s.split('::') as [string, string] : [s, undefined];
  const h = head ? head.split(':') : [];
  const t = tail !== undefined && tail !== '' ? tail.split(':') : [];
  const fill = tail !== undefined ? 8 - h.length - t.length : 0;
  const parts = [...h, ...Array(fill).fill('0'), ...t];
  const out = Buffer.alloc(16);
  parts.forEach((p, i) => out.writeUInt16BE(parseInt(p, 16), i * 2));
  return out;
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
