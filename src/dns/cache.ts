// A cache of upstream answers (positive and negative, RFC 2308), bounded in entries
// and in bytes, least recently used out first. Entries are stored as Templates, so a
// hit is rendered like a zone answer, with the TTLs decremented by the entry's age.
import { TYPE, type ParsedResponse, type Template } from './wire.js';

export interface CacheOptions {
  maxEntries?: number;
  maxBytes?: number;
  /** Cap on positive TTLs (s). */
  maxTtl?: number;
  /** Cap on negative TTLs (s). */
  maxNegTtl?: number;
  now?: () => number;
}

interface Entry {
  t: Template;
  stored: number;
  expires: number;
  bytes: number;
  negative: boolean;
}

export interface CacheHit {
  t: Template;
  /** Whole seconds since the answer was stored. */
  age: number;
  negative: boolean;
}

/** Per-entry overhead estimate (key, object, arrays), so tiny entries count too. */
const ENTRY_OVERHEAD = 200;

export class AnswerCache {
  private readonly map = new Map<string, Entry>();
  private bytesUsed = 0;
  readonly maxEntries: number;
  readonly maxBytes: number;
  readonly maxTtl: number;
  readonly maxNegTtl: number;
  private readonly now: () => number;

  constructor(opts: CacheOptions = {}) {
    this.maxEntries = opts.maxEntries ?? 10000;
    this.maxBytes = opts.maxBytes ?? 8 * 1024 * 1024;
    this.maxTtl = opts.maxTtl ?? 300;
    this.maxNegTtl = opts.maxNegTtl ?? 30;
    this.now = opts.now ?? Date.now;
    for (const [k, v] of Object.entries({ maxEntries: this.maxEntries, maxBytes: this.maxBytes, maxTtl: this.maxTtl, maxNegTtl: this.maxNegTtl })) {
      if (!Number.isInteger(v) || v < 0) throw new Error(`cache ${k}: invalid value ${JSON.stringify(v)} (a non-negative integer)`);
    }
  }

  get size(): number {
    return this.map.size;
  }

  get bytes(): number {
    return this.bytesUsed;
  }

  get(key: string): CacheHit | undefined {
    const e = this.map.get(key);
    if (!e) return undefined;
    const now = this.now();
    if (now >= e.expires) {
      this.remove(key, e);
      return undefined;
    }
    // Most recently used goes last.
    this.map.delete(key);
    this.map.set(key, e);
    return { t: e.t, age: Math.floor((now - e.stored) / 1000), negative: e.negative };
  }

  /**
   * Stores an upstream answer. Only NOERROR and NXDOMAIN are cached; a negative answer
   * needs an SOA in authority (its TTL is min(SOA TTL, SOA minimum)); TTLs are capped.
   * Returns whether it was stored.
   */
  put(key: string, msg: Buffer, r: ParsedResponse): boolean {
    if (r.rcode !== 0 && r.rcode !== 3) return false;
    if (r.flags & 0x0200) return false; // truncated answers are never cached
    const negative = r.rcode === 3 || r.answer.length === 0;
    let ttl: number;
    if (negative) {
      const soa = r.authority.find((x) => x.type === TYPE.SOA);
      if (!soa || soa.rdata.length < 20) return false;
      const minimum = soa.rdata.readUInt32BE(soa.rdata.length - 4);
      ttl = Math.min(soa.ttl, minimum, this.maxNegTtl);
    } else {
      ttl = Math.min(...r.answer.map((x) => x.ttl), this.maxTtl);
    }
    if (ttl <= 0 || this.maxEntries === 0) return false;
    const t = templateFromResponse(msg, r, negative ? this.maxNegTtl : this.maxTtl);
    const bytes = t.buf.length + key.length + ENTRY_OVERHEAD;
    if (bytes > this.maxBytes) return false;
    const now = this.now();
    const old = this.map.get(key);
    if (old) this.remove(key, old);
    this.map.set(key, { t, stored: now, expires: now + ttl * 1000, bytes, negative });
    this.bytesUsed += bytes;
    while (this.map.size > this.maxEntries || this.bytesUsed > this.maxBytes) {
      const first = this.map.keys().next();
      if (first.done) break;
      this.remove(first.value, this.map.get(first.value)!);
    }
    return true;
  }

  clear(): void {
    this.map.clear();
    this.bytesUsed = 0;
  }

  private remove(key: string, e: Entry): void {
    this.map.delete(key);
    this.bytesUsed -= e.bytes;
  }
}

/**
 * An upstream message as a Template: everything from the OPT record on is dropped (the
 * OPT is the client-facing server's to write, and records after it cannot be kept
 * without rewriting pointers), TTLs are capped in place and recorded for decrementing.
 */
export function templateFromResponse(msg: Buffer, r: ParsedResponse, cap: number): Template {
  const all = [...r.answer, ...r.authority, ...r.additional];
  let keep = all.length;
  const optIdx = all.findIndex((x) => x.type === TYPE.OPT);
  if (optIdx >= 0) keep = optIdx;
  const kept = all.slice(0, keep);
  const end = keep === 0 ? r.qEnd : kept[keep - 1]!.end;
  const buf = Buffer.from(msg.subarray(0, end));
  const an = Math.min(r.answer.length, keep);
  const ns = Math.min(r.authority.length, Math.max(keep - an, 0));
  const ar = Math.max(keep - an - ns, 0);
  buf.writeUInt16BE(an, 6);
  buf.writeUInt16BE(ns, 8);
  buf.writeUInt16BE(ar, 10);
  const ttlOffsets: number[] = [];
  const ttls: number[] = [];
  for (const x of kept) {
    const v = Math.min(x.ttl, cap);
    buf.writeUInt32BE(v, x.ttlAt);
    ttlOffsets.push(x.ttlAt);
    ttls.push(v);
  }
  return {
    buf, qEnd: r.qEnd, rrEnds: kept.map((x) => x.end), an, ns, ar,
    rcode: r.rcode, aa: false, ttlOffsets, ttls,
  };
}
