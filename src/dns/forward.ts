// Forwarding to upstream resolvers: UDP first, the next upstream on timeout, SERVFAIL
// or REFUSED, and TCP to the same upstream when the answer comes back truncated.
// Replies are matched on source address, port, ID and question (a spoofed or stray
// packet never completes a query).
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { randomInt } from 'node:crypto';
import { isIPv4, isIPv6 } from 'node:net';
import type { Logger } from '../util/log.js';
import { encodeQuery, parseResponse, type ParsedResponse } from './wire.js';

export interface Upstream {
  host: string;
  port: number;
}

/** "1.2.3.4", "1.2.3.4:5353", "[2001:db8::1]:53", "2001:db8::1" -> Upstream. */
export function parseHostPort(s: string, defaultPort = 53, what = 'upstream'): Upstream {
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(s);
  let host: string;
  let port: string | undefined;
  if (v6) {
    host = v6[1]!;
    port = v6[2];
  } else if (isIPv6(s)) {
    host = s;
  } else {
    const i = s.lastIndexOf(':');
    host = i >= 0 ? s.slice(0, i) : s;
    port = i >= 0 ? s.slice(i + 1) : undefined;
  }
  if (!isIPv4(host) && !isIPv6(host)) throw new Error(`${what}: invalid address ${JSON.stringify(s)} (IP[:PORT] or [IPv6]:PORT)`);
  const p = port === undefined ? defaultPort : Number(port);
  if (!Number.isInteger(p) || p < 0 || p > 65535 || (port !== undefined && !/^\d+$/.test(port))) {
    throw new Error(`${what}: invalid port in ${JSON.stringify(s)}`);
  }
  return { host, port: p };
}

/** The nameservers of a resolv.conf (port 53). */
export function resolvConfUpstreams(path = '/etc/resolv.conf'): Upstream[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return [];
  }
  const out: Upstream[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    if (!m) continue;
    const host = m[1]!.split('%')[0]!;
    if (isIPv4(host) || isIPv6(host)) out.push({ host, port: 53 });
  }
  return out;
}

export interface ForwarderOptions {
  upstreams: Upstream[];
  /** Per attempt (default 2000 ms). */
  timeoutMs?: number;
  log?: Logger;
  /** Called for each request sent to an upstream (metrics). */
  onRequest?: (to: string) => void;
}

export interface ForwardResult {
  msg: Buffer;
  parsed: ParsedResponse;
}

interface Pending {
  up: Upstream;
  key: string;
  qtype: number;
  resolve: (r: ForwardResult | null) => void;
  timer: NodeJS.Timeout;
}

export class Forwarder {
  readonly upstreams: Upstream[];
  private readonly timeoutMs: number;
  private readonly pending = new Map<number, Pending>();
  private sock4: dgram.Socket | null = null;
  private sock6: dgram.Socket | null = null;
  private closed = false;
  private readonly tcpSockets = new Set<net.Socket>();

  constructor(private readonly opts: ForwarderOptions) {
    this.upstreams = opts.upstreams;
    this.timeoutMs = opts.timeoutMs ?? 2000;
  }

  /**
   * Resolves a question upstream. Returns the upstream's answer, or null when every
   * upstream failed (timeouts, errors); a SERVFAIL/REFUSED answer is returned only when
   * no upstream did better.
   */
  async query(nameWire: Buffer, qtype: number, qclass: number, dnssecOk: boolean): Promise<ForwardResult | null> {
    let fallback: ForwardResult | null = null;
    for (const up of this.upstreams) {
      if (this.closed) return null;
      let r = await this.udp(up, nameWire, qtype, qclass, dnssecOk);
      if (r && r.parsed.flags & 0x0200) r = (await this.tcp(up, nameWire, qtype, qclass, dnssecOk)) ?? r;
      if (!r) continue;
      if (r.parsed.rcode === 2 || r.parsed.rcode === 5) {
        fallback ??= r;
        continue;
      }
      return r;
    }
    return fallback;
  }

  private socket(v6: boolean): dgram.Socket {
    const cur = v6 ? this.sock6 : this.sock4;
    if (cur) return cur;
    const s = dgram.createSocket(v6 ? 'udp6' : 'udp4');
    s.on('message', (m, rinfo) => this.onReply(m, rinfo));
    s.on('error', (e) => this.opts.log?.warn('forwarder socket error', { error: e.message }));
    s.bind(0);
    s.unref();
    if (v6) this.sock6 = s;
    else this.sock4 = s;
    return s;
  }

  private onReply(m: Buffer, rinfo: dgram.RemoteInfo): void {
    if (m.length < 12) return;
    const p = this.pending.get(m.readUInt16BE(0));
    if (!p || rinfo.port !== p.up.port || !sameIP(rinfo.address, p.up.host)) return;
    const parsed = parseResponse(m);
    if (!parsed || !(parsed.flags & 0x8000) || parsed.qtype !== p.qtype || parsed.qname.toString('latin1').toLowerCase() !== p.key) return;
    this.pending.delete(m.readUInt16BE(0));
    clearTimeout(p.timer);
    p.resolve({ msg: m, parsed });
  }

  private newId(): number {
    for (;;) {
      const id = randomInt(0, 65536);
      if (!this.pending.has(id)) return id;
    }
  }

  private udp(up: Upstream, nameWire: Buffer, qtype: number, qclass: number, dnssecOk: boolean): Promise<ForwardResult | null> {
    return new Promise((resolve) => {
      const id = this.newId();
      const msg = encodeQuery(id, nameWire, qtype, qclass, dnssecOk);
      const timer = setTimeout(() => {
        this.pending.delete(id);
        resolve(null);
      }, this.timeoutMs);
      this.pending.set(id, { up, key: nameWire.toString('latin1').toLowerCase(), qtype, resolve, timer });
      this.opts.onRequest?.(`${fmt(up)}`);
      this.socket(isIPv6(up.host)).send(msg, up.port, up.host, (err) => {
        if (err && this.pending.get(id)?.timer === timer) {
          this.pending.delete(id);
          clearTimeout(timer);
          resolve(null);
        }
      });
    });
  }

  private tcp(up: Upstream, nameWire: Buffer, qtype: number, qclass: number, dnssecOk: boolean): Promise<ForwardResult | null> {
    return new Promise((resolve) => {
      const id = this.newId();
      const q = encodeQuery(id, nameWire, qtype, qclass, dnssecOk);
      const framed = Buffer.alloc(q.length + 2);
      framed.writeUInt16BE(q.length, 0);
      q.copy(framed, 2);
      this.opts.onRequest?.(`${fmt(up)}`);
      const s = net.connect({ host: up.host, port: up.port });
      this.tcpSockets.add(s);
      let buf = Buffer.alloc(0);
      let done = false;
      const finish = (r: ForwardResult | null) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        this.tcpSockets.delete(s);
        s.destroy();
        resolve(r);
      };
      const timer = setTimeout(() => finish(null), this.timeoutMs);
      s.on('connect', () => s.write(framed));
      s.on('data', (d) => {
        buf = Buffer.concat([buf, d]);
        if (buf.length < 2) return;
        const len = buf.readUInt16BE(0);
        if (buf.length < len + 2) return;
        const m = Buffer.from(buf.subarray(2, len + 2));
        const parsed = parseResponse(m);
        if (!parsed || parsed.id !== id || parsed.qtype !== qtype) return finish(null);
        finish({ msg: m, parsed });
      });
      s.on('error', () => finish(null));
      s.on('close', () => finish(null));
    });
  }

  close(): void {
    this.closed = true;
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.resolve(null);
      this.pending.delete(id);
    }
    for (const s of this.tcpSockets) s.destroy();
    this.tcpSockets.clear();
    this.sock4?.close();
    this.sock6?.close();
    this.sock4 = this.sock6 = null;
  }
}

function sameIP(a: string, b: string): boolean {
  if (a === b) return true;
  // A v4 upstream reached over a v6 socket shows up v4-mapped.
  return a.startsWith('::ffff:') && a.slice(7) === b;
}

export function fmt(u: Upstream): string {
  return isIPv6(u.host) ? `[${u.host}]:${u.port}` : `${u.host}:${u.port}`;
}
