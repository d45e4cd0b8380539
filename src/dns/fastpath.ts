// The UDP fast path (src/dns/native/skiff_dns.c, built to build/skiff_dns.node): one
// UDP socket per address family and one native thread per CPU of the process's
// affinity mask reading it, each looping recvmmsg -> answer cache -> sendmmsg. Questions the cache cannot answer
// reach JavaScript through onMiss; the server answers them with reply(), and answers
// that depend only on the query's bytes (the cluster zone's) are stored with put().
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inNetns } from '../os/netns.js';

export interface DnsNativeConstants {
  NT: number; NR: number; NB: number; HITS: number; SUMS: number; BUCKETS: number;
  MISSES: number; DROPS: number; ENTRIES: number; BYTES: number; LEN: number; PKT: number;
  /** Response latency histogram: NL buckets (upper bound LAT_BASE_NS * 2^(i/4) ns) and one above, at LAT; the sum (s) at LATSUM. */
  NL: number; LAT: number; LATSUM: number; LAT_BASE_NS: number;
}

type Handle = object;

export interface DnsNative {
  /** A UDP socket; SO_REUSEPORT unless `reuseport` is false. */
  bindUdp(host: string, port: number, v6only: boolean, reuseport?: boolean): number;
  bindTcp(host: string, port: number, v6only: boolean): number;
  localPort(fd: number): number;
  closeFd(fd: number): void;
  cpuCount(): number;
  start(fds: number[], v6: number[], maxUdp: number, maxEntries: number, maxBytes: number,
    onMiss: (worker: number, pkt: Buffer, addr: Buffer) => void): Handle;
  send(h: Handle, worker: number, addr: Buffer, data: Buffer): boolean;
  put(h: Handle, query: Buffer, response: Buffer, typeIndex: number, rcode: number): boolean;
  clear(h: Handle): void;
  stats(h: Handle): Float64Array;
  stop(h: Handle): void;
  constants: DnsNativeConstants;
}

let cached: DnsNative | null | undefined;

/** The addon, or null when it is not built (the server then falls back to node:dgram). */
export function dnsNative(): DnsNative | null {
  if (cached !== undefined) return cached;
  const req = createRequire(import.meta.url);
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const candidate = join(dir, 'build', 'skiff_dns.node');
    if (existsSync(candidate)) return (cached = req(candidate) as DnsNative);
    dir = dirname(dir);
  }
  return (cached = null);
}

/** A sockaddr_in/sockaddr_in6 (as the kernel hands it over) -> address string and family. */
export function parseSockaddr(b: Buffer): { address: string; v6: boolean } {
  const family = b.readUInt16LE(0);
  if (family === 2) return { address: `${b[4]}.${b[5]}.${b[6]}.${b[7]}`, v6: false };
  const parts: string[] = [];
  for (let i = 0; i < 8; i++) parts.push(b.readUInt16BE(8 + 2 * i).toString(16));
  // Compress the longest run of zeros (RFC 5952) so the ACL's parser and logs see the usual form.
  let best = -1, bestLen = 0;
  for (let i = 0; i < 8;) {
    if (parts[i] !== '0') { i++; continue; }
    let j = i;
    while (j < 8 && parts[j] === '0') j++;
    if (j - i > bestLen && j - i > 1) { best = i; bestLen = j - i; }
    i = j;
  }
  const s = best < 0 ? parts.join(':')
    : `${parts.slice(0, best).join(':')}::${parts.slice(best + bestLen).join(':')}`;
  return { address: s, v6: true };
}

/** A plain UDP socket (no SO_REUSEPORT) on host:port; a clear EADDRINUSE when the port is taken. */
function bindExclusive(n: DnsNative, host: string, port: number, v6: boolean): number {
  try {
    return n.bindUdp(host, port, v6, false);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EADDRINUSE') {
      const err = new Error(`listen: UDP ${host.includes(':') ? `[${host}]` : host}:${port} is already in use by another socket`) as NodeJS.ErrnoException;
      err.code = 'EADDRINUSE';
      throw err;
    }
    throw e;
  }
}

export interface FastUdpOptions {
  host: string;
  port: number;
  /** Sockets (and threads) per address family; default: the CPUs this process may run on. */
  threads?: number;
  maxUdp: number;
  maxEntries?: number;
  maxBytes?: number;
  netnsPath?: string;
  onMiss: (worker: number, pkt: Buffer, addr: Buffer) => void;
}

export class FastUdp {
  private handle: Handle | null = null;
  readonly port: number;
  readonly threads: number;

  constructor(private readonly n: DnsNative, o: FastUdpOptions) {
    const threads = o.threads ?? n.cpuCount();
    const fds: number[] = [];
    const v6: number[] = [];
    try {
      inNetns(o.netnsPath, () => {
        // `::` listens on both families: one v6-only and one v4 socket per thread.
        const binds: [string, boolean][] = o.host === '::' ? [['::', true], ['0.0.0.0', false]] : [[o.host, o.host.includes(':')]];
        let port = o.port;
        for (const [host, isV6] of binds) {
          // One socket per family, read by every thread. Not one SO_REUSEPORT socket per
          // thread: a reuseport port is open to any other reuseport socket of the same
          // user. dig sets SO_REUSEPORT on its client socket and binds port 0, so now and
          // then the kernel gave dig the server's own port; dig's connected socket then
          // received its own query and printed it as the answer (NOERROR, no records: the
          // dns-dig CI flake, docs/dns.md). Another server could also join silently and
          // take a share of the queries. A plain socket is the port's only owner.
          const fd = bindExclusive(n, host, port, isV6);
          if (port === 0) port = n.localPort(fd);
          for (let i = 0; i < threads; i++) {
            fds.push(fd);
            v6.push(isV6 ? 1 : 0);
          }
        }
      });
    } catch (e) {
      for (const fd of new Set(fds)) n.closeFd(fd);
      throw e;
    }
    this.port = n.localPort(fds[0]!);
    this.threads = threads;
    try {
      this.handle = n.start(fds, v6, o.maxUdp, o.maxEntries ?? 65536, o.maxBytes ?? 16 * 1024 * 1024, o.onMiss);
    } catch (e) {
      for (const fd of new Set(fds)) n.closeFd(fd);
      throw e;
    }
  }

  send(worker: number, addr: Buffer, data: Buffer): void {
    if (this.handle) this.n.send(this.handle, worker, addr, data);
  }

  put(query: Buffer, response: Buffer, typeIndex: number, rcode: number): boolean {
    return this.handle ? this.n.put(this.handle, query, response, typeIndex, rcode) : false;
  }

  clear(): void {
    if (this.handle) this.n.clear(this.handle);
  }

  /** Counter deltas since the previous call (see the addon's layout), or null when stopped. */
  stats(): Float64Array | null {
    return this.handle ? this.n.stats(this.handle) : null;
  }

  get constants(): DnsNativeConstants {
    return this.n.constants;
  }

  stop(): void {
    const h = this.handle;
    this.handle = null;
    if (h) this.n.stop(h);
  }
}
