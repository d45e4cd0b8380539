// The DNS server: UDP and TCP (RFC 7766) listeners in front of one handler. The handler
// is synchronous for everything the cluster zone and the cache can answer (the hot
// path: parse, one Map lookup, copy a template, patch); only cache misses of forwarded
// names and ExternalName chases out of the zone go asynchronous.
import dgram from 'node:dgram';
import http from 'node:http';
import net, { isIPv4, isIPv6 } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Registry } from 'prom-client';
import type { Change, ClusterReader, Service } from '../cluster/types.js';
import { inNetns } from '../os/netns.js';
import { ipToBytes } from '../util/ip.js';
import { logger, type Logger } from '../util/log.js';
import { AnswerCache, templateFromResponse, type CacheOptions } from './cache.js';
import { Forwarder, fmt, parseHostPort, resolvConfUpstreams, type ForwardResult, type Upstream } from './forward.js';
import { dnsNative, FastUdp, parseSockaddr } from './fastpath.js';
import { DnsMetrics, typeIndex, ZONE_CLUSTER, ZONE_OTHER } from './metrics.js';
import {
  ACTION, EDNS_SIZE, MsgWriter, nameToWire, parseQuery, parseResponse, PLAIN_UDP_SIZE, Query, RCODE, render, renderError, TYPE,
  type QueryInfo, type RR, type Template,
} from './wire.js';
import { DnsPolicyFilter } from '../policy/dnsfilter.js';
import { ClusterZone, FORWARD, NOT_SYNCED, type ExternalChase, type ZoneOptions } from './zone.js';

export interface DnsServerOptions extends ZoneOptions {
  reader: ClusterReader;
  /** ADDR:PORT ([::]:PORT listens on IPv6 and IPv4). Port 0 picks a free port (tests). */
  listen: string;
  /** ADDR:PORT of upstream resolvers; default: the nameservers of /etc/resolv.conf. */
  upstreams?: string[];
  resolvConf?: string;
  /** CIDRs of clients that may use forwarding (default loopback). */
  allow?: string[];
  /** Also allow every Node's podCIDRs and addresses (default true). */
  allowClusterCidrs?: boolean;
  forwardTimeoutMs?: number;
  cache?: CacheOptions;
  /** Largest UDP answer sent, whatever the client advertises (default 1232: no fragmentation). */
  maxUdpSize?: number;
  tcpIdleTimeoutMs?: number;
  maxTcpConnections?: number;
  /** Unanswered queries per TCP connection before reading pauses. */
  maxTcpPipeline?: number;
  /**
   * The native UDP fast path (recvmmsg/sendmmsg, an answer cache in C, one socket
   * per address family read by one thread per CPU). Default: on when the addon is built.
   */
  fastPath?: boolean;
  /** Fast-path sockets/threads per address family (default: CPUs in the affinity mask). */
  threads?: number;
  /** Entries and bytes of the fast path's answer cache (default 65536 / 16 MiB). */
  fastCacheEntries?: number;
  fastCacheBytes?: number;
  /**
   * Policy-aware DNS (docs/dns.md): a pod asking for a Service of another namespace
   * whose endpoints it may not reach under the NetworkPolicies gets NXDOMAIN, for every
   * name under the Service and for its PTR names. Default off.
   */
  policyAware?: boolean;
  /** Open the sockets inside this network namespace (the agent driving a node via --netns). */
  netnsPath?: string;
  registry?: Registry;
  log?: Logger;
}

interface Acl { bytes: Buffer; prefix: number }

const SERVFAIL = RCODE.SERVFAIL;

function parseAcl(s: string, what: string): Acl {
  const m = /^([^/]+)(?:\/(\d{1,3}))?$/.exec(s.trim());
  if (!m || !(isIPv4(m[1]!) || isIPv6(m[1]!))) throw new Error(`${what}: invalid CIDR ${JSON.stringify(s)}`);
  const bytes = ipToBytes(m[1]!);
  const prefix = m[2] === undefined ? bytes.length * 8 : Number(m[2]);
  if (prefix > bytes.length * 8) throw new Error(`${what}: invalid prefix in ${JSON.stringify(s)}`);
  return { bytes, prefix };
}

function inAcl(ip: Buffer, a: Acl): boolean {
  if (ip.length !== a.bytes.length) return false;
  const full = a.prefix >> 3;
  for (let i = 0; i < full; i++) if (ip[i] !== a.bytes[i]) return false;
  const rest = a.prefix & 7;
  if (!rest) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return (ip[full]! & mask) === (a.bytes[full]! & mask);
}

export class DnsServer {
  readonly zone: ClusterZone;
  readonly metrics: DnsMetrics;
  readonly cache: AnswerCache;
  readonly forwarder: Forwarder;
  private readonly q = new Query();
  private readonly log: Logger;
  private readonly listen: Upstream;
  private readonly maxUdp: number;
  private readonly staticAcl: Acl[];
  private clusterAcl: Acl[] = [];
  private readonly aclCache = new Map<string, boolean>();
  private readonly inflight = new Map<string, Promise<ForwardResult | null>>();
  private udp: dgram.Socket[] = [];
  private tcp: net.Server | null = null;
  private readonly conns = new Set<net.Socket>();
  private unsubscribe: (() => void) | null = null;
  private boundPort = 0;
  private fast: FastUdp | null = null;
  /** Set by handle(): whether its answer depends only on the query's bytes (the fast path may cache it). */
  private cacheable = false;
  private lastRcode = 0;
  /** The policy hook while policyAware is on (made at start: it follows the reader). */
  private policy: DnsPolicyFilter | null = null;

  constructor(private readonly opts: DnsServerOptions) {
    this.log = opts.log ?? logger('dns');
    this.listen = parseHostPort(opts.listen, 53, 'listen');
    this.zone = new ClusterZone(opts.reader, opts);
    this.maxUdp = opts.maxUdpSize ?? EDNS_SIZE;
    this.staticAcl = (opts.allow ?? ['127.0.0.0/8', '::1/128']).map((c) => parseAcl(c, 'allow'));
    const ups = opts.upstreams
      ? opts.upstreams.map((u) => parseHostPort(u, 53, 'upstream'))
      : resolvConfUpstreams(opts.resolvConf);
    this.cache = new AnswerCache(opts.cache);
    this.metrics = new DnsMetrics(`dns://${fmt(this.listen)}`, [`${this.zone.zone}.`, '.'], opts.registry);
    this.forwarder = new Forwarder({
      upstreams: ups, timeoutMs: opts.forwardTimeoutMs, log: this.log,
      onRequest: (to) => this.metrics.forward(to),
    });
    this.updateClusterAcl();
  }

  /** The bound port (after start). */
  get port(): number {
    return this.boundPort;
  }

  /** Ready once the cluster source has synced. */
  isReady(): boolean {
    return this.opts.reader.hasSynced();
  }

  async start(): Promise<void> {
    this.zone.start();
    if (this.opts.policyAware) {
      this.policy = new DnsPolicyFilter(this.opts.reader);
      // Answers judged the same for every client may sit in the native cache: a change
      // of policies, pods or labels can end that, so it empties the cache in the same tick.
      this.policy.onReset = () => this.fast?.clear();
    }
    this.updateClusterAcl();
    this.unsubscribe = this.opts.reader.onChange((ch: readonly Change[]) => {
      if (ch.some((c) => c.kind === 'Node')) this.updateClusterAcl();
    });
    // "Never itself": drop upstreams that are this server (same address and port, or a
    // wildcard listener on the upstream's port with a local upstream address).
    const self = this.listen;
    const wildcard = self.host === '0.0.0.0' || self.host === '::';
    const ups = this.forwarder.upstreams;
    for (let i = ups.length - 1; i >= 0; i--) {
      const u = ups[i]!;
      if (u.port === self.port && self.port !== 0 && (u.host === self.host || (wildcard && isLoopback(u.host)))) {
        this.log.warn('ignoring upstream that is this server', { upstream: fmt(u) });
        ups.splice(i, 1);
      }
    }
    const host = this.listen.host;
    const v6 = isIPv6(host);
    const native = this.opts.fastPath === false ? null : dnsNative();
    if (this.opts.fastPath === true && !native) throw new Error('fastPath: the native addon build/skiff_dns.node is missing; run `node scripts/build.mjs`');
    if (this.opts.netnsPath && !native) throw new Error('netnsPath: needs the native addon build/skiff_dns.node');
    if (native) {
      const fast = new FastUdp(native, {
        host, port: this.listen.port, maxUdp: this.maxUdp, netnsPath: this.opts.netnsPath,
        ...(this.opts.threads ? { threads: this.opts.threads } : {}),
        ...(this.opts.fastCacheEntries !== undefined ? { maxEntries: this.opts.fastCacheEntries } : {}),
        ...(this.opts.fastCacheBytes !== undefined ? { maxBytes: this.opts.fastCacheBytes } : {}),
        onMiss: (w, pkt, addr) => this.onFastMiss(fast, w, pkt, addr),
      });
      this.fast = fast;
      this.boundPort = fast.port;
      // A change to the zone empties the native cache in the same tick: no answer outlives it.
      this.zone.onUpdate = () => fast.clear();
      this.metrics.sync = () => {
        const d = fast.stats();
        if (d) this.metrics.absorbNative(d, fast.constants);
      };
      try {
        await this.listenTcp(host, this.boundPort, native.bindTcp.bind(native));
      } catch (e) {
        this.metrics.sync();
        this.metrics.sync = null;
        fast.stop();
        this.fast = null;
        throw e;
      }
    } else {
      const first = await this.bindUdp(v6 ? 'udp6' : 'udp4', host, this.listen.port, host === '::');
      this.boundPort = first.address().port;
      if (host === '::') await this.bindUdp('udp4', '0.0.0.0', this.boundPort, false);
      await this.listenTcp(host, this.boundPort);
    }
    this.log.info('dns server listening', {
      listen: fmt({ host, port: this.boundPort }), zone: this.zone.zone, upstreams: ups.map(fmt),
      fastPath: this.fast ? `${this.fast.threads} thread(s) per family` : 'off',
    });
  }

  async stop(): Promise<void> {
    this.unsubscribe?.();
    this.zone.stop();
    this.policy?.close();
    this.policy = null;
    this.forwarder.close();
    for (const s of this.udp) s.close();
    this.udp = [];
    if (this.fast) {
      this.metrics.sync?.();
      this.metrics.sync = null;
      this.zone.onUpdate = null;
      this.fast.stop();
      this.fast = null;
    }
    for (const c of this.conns) c.destroy();
    this.conns.clear();
    const t = this.tcp;
    this.tcp = null;
    if (t) await new Promise<void>((r) => t.close(() => r()));
  }

  private bindUdp(type: 'udp4' | 'udp6', host: string, port: number, ipv6Only: boolean): Promise<dgram.Socket> {
    return new Promise((resolve, reject) => {
      const s = dgram.createSocket({ type, ipv6Only });
      const v6 = type === 'udp6';
      s.once('error', reject);
      s.on('message', (msg, rinfo) => this.onUdp(s, msg, rinfo, v6));
      s.bind(port, host, () => {
        s.off('error', reject);
        s.on('error', (e) => this.log.warn('udp socket error', { error: e.message }));
        try {
          s.setRecvBufferSize(4 * 1024 * 1024);
          s.setSendBufferSize(4 * 1024 * 1024);
        } catch {
          /* capped by the kernel: keep its default */
        }
        this.udp.push(s);
        resolve(s);
      });
    });
  }

  private onUdp(s: dgram.Socket, msg: Buffer, rinfo: dgram.RemoteInfo, v6: boolean): void {
    const r = this.handle(msg, rinfo.address, v6, false);
    if (r === null) return;
    if (r instanceof Uint8Array) {
      s.send(r, rinfo.port, rinfo.address);
      return;
    }
    r.then((b) => {
      if (b && this.udp.includes(s)) s.send(b, rinfo.port, rinfo.address);
    });
  }

  /** A miss of the native cache: answered here; answers that depend only on the query are cached there. */
  private onFastMiss(fast: FastUdp, worker: number, pkt: Buffer, addr: Buffer): void {
    const { address, v6 } = parseSockaddr(addr);
    const r = this.handle(pkt, address, v6, false);
    if (r === null) return;
    if (r instanceof Uint8Array) {
      fast.send(worker, addr, r);
      if (this.cacheable) fast.put(pkt, r, typeIndex(this.q.qtype), this.lastRcode);
      return;
    }
    r.then((b) => {
      if (b && this.fast === fast) fast.send(worker, addr, b);
    });
  }

  private listenTcp(host: string, port: number, bindTcp?: (host: string, port: number, v6only: boolean) => number): Promise<void> {
    const idle = this.opts.tcpIdleTimeoutMs ?? 10_000;
    const maxPipe = this.opts.maxTcpPipeline ?? 128;
    const srv = net.createServer({ noDelay: true }, (c) => this.onTcp(c, idle, maxPipe));
    srv.maxConnections = this.opts.maxTcpConnections ?? 1000;
    this.tcp = srv;
    // With the addon, the listening socket is made synchronously (inside the node's
    // namespace when netnsPath is set) and handed to net.Server.
    const fd = bindTcp ? inNetns(this.opts.netnsPath, () => bindTcp(host, port, false)) : -1;
    return new Promise((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(fd >= 0 ? { fd } : { host, port, ipv6Only: false }, () => {
        srv.off('error', reject);
        resolve();
      });
    });
  }

  private onTcp(c: net.Socket, idle: number, maxPipe: number): void {
    this.conns.add(c);
    const addr = c.remoteAddress ?? '';
    const v6 = c.remoteFamily === 'IPv6' && !addr.startsWith('::ffff:');
    let buf: Buffer | null = null;
    let pending = 0;
    c.setTimeout(idle, () => c.destroy());
    c.on('error', () => c.destroy());
    c.on('close', () => this.conns.delete(c));
    const send = (b: Buffer) => {
      if (c.destroyed) return;
      const out = Buffer.allocUnsafe(b.length + 2);
      out.writeUInt16BE(b.length, 0);
      b.copy(out, 2);
      c.write(out);
    };
    c.on('data', (d: Buffer) => {
      buf = buf && buf.length ? Buffer.concat([buf, d]) : d;
      while (buf.length >= 2) {
        const len = buf.readUInt16BE(0);
        if (buf.length < len + 2) break;
        const msg = buf.subarray(2, len + 2);
        buf = buf.subarray(len + 2);
        if (len < 12) {
          // Not even a header: nothing sensible to answer on this stream.
          c.destroy();
          return;
        }
        const r = this.handle(msg, addr, v6, true);
        if (r === null) continue;
        if (r instanceof Uint8Array) {
          send(r);
          continue;
        }
        // Pipelined queries are answered as they complete, possibly out of order (RFC 7766 §6.2.1.1).
        pending++;
        if (pending >= maxPipe) c.pause();
        r.then((b) => {
          pending--;
          if (b) send(b);
          if (pending < maxPipe && c.isPaused()) c.resume();
        });
      }
    });
  }

  /**
   * Answers one message. Returns the response, null (no reply) or, for forwarded cache
   * misses and ExternalName chases, a promise of one. The source address decides
   * whether forwarding is offered.
   */
  handle(msg: Buffer, src: string, v6: boolean, tcp: boolean): Buffer | null | Promise<Buffer | null> {
    const t0 = performance.now();
    const q = this.q;
    this.cacheable = false;
    const act = parseQuery(msg, q);
    if (act !== ACTION.OK) {
      if (act === ACTION.DROP) return null;
      const rcode = act === ACTION.FORMERR ? RCODE.FORMERR : act === ACTION.NOTIMP ? RCODE.NOTIMP
        : act === ACTION.BADVERS ? RCODE.BADVERS : RCODE.REFUSED;
      this.metrics.request(ZONE_OTHER, tcp, v6, q.hasQuestion ? q.qtype : 0);
      return this.done(ZONE_OTHER, rcode, q.qtype, t0, renderError(msg, q, rcode));
    }
    const limit = tcp ? 65535 : q.edns ? Math.max(PLAIN_UDP_SIZE, Math.min(q.udpSize, this.maxUdp)) : PLAIN_UDP_SIZE;
    // Policy-aware DNS: names that belong to a Service depend on the client. They are
    // decided here on every query and never stored in the fast path's shared cache.
    let scoped = false;
    if (this.policy !== null) {
      let h: boolean | null;
      try {
        h = this.policyHides(this.policy, q, src);
      } catch (e) {
        // The evaluator rejected the connection (it should not): fail closed, never crash the handler.
        this.log.warn('policy-aware DNS: cannot decide; hiding the name', { client: src, error: (e as Error).message });
        h = true;
      }
      if (h === true) {
        this.metrics.request(ZONE_CLUSTER, tcp, v6, q.qtype);
        if (!this.opts.reader.hasSynced()) return this.done(ZONE_CLUSTER, SERVFAIL, q.qtype, t0, renderError(msg, q, SERVFAIL));
        this.metrics.policyHidden++;
        return this.done(ZONE_CLUSTER, RCODE.NXDOMAIN, q.qtype, t0, render(this.zone.nxdomain(q), q, limit));
      }
      scoped = h === false;
    }
    const z = this.zone.answer(q);
    if (typeof z === 'object' && 'buf' in z) {
      this.metrics.request(ZONE_CLUSTER, tcp, v6, q.qtype);
      this.cacheable = !tcp && !scoped;
      this.lastRcode = z.rcode;
      return this.done(ZONE_CLUSTER, z.rcode, q.qtype, t0, render(z, q, limit));
    }
    if (z === NOT_SYNCED) {
      this.metrics.request(ZONE_CLUSTER, tcp, v6, q.qtype);
      return this.done(ZONE_CLUSTER, SERVFAIL, q.qtype, t0, renderError(msg, q, SERVFAIL));
    }
    if (z === FORWARD) {
      this.metrics.request(ZONE_OTHER, tcp, v6, q.qtype);
      if (!this.allowed(src)) return this.done(ZONE_OTHER, RCODE.REFUSED, q.qtype, t0, renderError(msg, q, RCODE.REFUSED));
      const key = cacheKey(q.key, q.qtype, q.qclass, q.dnssecOk);
      const hit = this.cache.get(key);
      if (hit) {
        this.metrics.cacheHit(hit.negative);
        return this.done(ZONE_OTHER, hit.t.rcode, q.qtype, t0, render(hit.t, q, limit, hit.age));
      }
      this.metrics.cacheMiss();
      return this.forward(q.snapshot(), key, limit, t0);
    }
    this.metrics.request(ZONE_CLUSTER, tcp, v6, q.qtype);
    return this.chase(q.snapshot(), z as ExternalChase, limit, t0);
  }

  /**
   * Whether the policies hide this name from `src`: true (answer NXDOMAIN), false (a
   * Service's name, answered, but only for this client), null (answered, and the same
   * for every client: not a Service's name, or Services every client may resolve).
   * A PTR name is hidden when any Service it names is hidden from the client.
   */
  private policyHides(pol: DnsPolicyFilter, q: Query, src: string): boolean | null {
    let svc = this.zone.serviceOf(q);
    if (svc !== null) {
      const ip = clientIp(src);
      // An ExternalName pointing at another Service in the zone would hand out that
      // Service's records: the whole chain must be visible to the client.
      let shared = true;
      for (let i = 0; svc !== null && i < 8; i++) {
        if (!pol.check(ip, svc).allow) return true;
        shared &&= pol.sameForEveryone(svc);
        const s: Service | undefined = this.opts.reader.get('Service', `${svc.namespace}/${svc.name}`);
        svc = s?.spec?.type === 'ExternalName' && s.spec.externalName ? this.zone.serviceOfName(s.spec.externalName.toLowerCase().replace(/\.+$/, '')) : null;
      }
      return shared ? null : false;
    }
    const ptr = this.zone.ptrServices(q);
    if (ptr === null) return null;
    const ip = clientIp(src);
    let shared = true;
    for (const s of ptr) {
      if (!pol.check(ip, s).allow) return true;
      shared &&= pol.sameForEveryone(s);
    }
    return shared ? null : false;
  }

  private done(zone: number, rcode: number, qtype: number, t0: number, out: Buffer): Buffer {
    this.metrics.response(zone, rcode, qtype, (performance.now() - t0) / 1000);
    return out;
  }

  /** One upstream request per question at a time; concurrent askers share it. */
  private resolveUpstream(key: string, nameWire: Buffer, qtype: number, qclass: number, dnssecOk: boolean): Promise<ForwardResult | null> {
    let p = this.inflight.get(key);
    if (!p) {
      p = this.forwarder.query(nameWire, qtype, qclass, dnssecOk).then((r) => {
        this.inflight.delete(key);
        if (r) this.cache.put(key, r.msg, r.parsed);
        return r;
      });
      this.inflight.set(key, p);
    }
    return p;
  }

  private async forward(q: QueryInfo, key: string, limit: number, t0: number): Promise<Buffer | null> {
    const r = await this.resolveUpstream(key, q.nameOrig, q.qtype, q.qclass, q.dnssecOk);
    if (!r) return this.done(ZONE_OTHER, SERVFAIL, q.qtype, t0, renderError(headerOf(q), q, SERVFAIL));
    const t = templateFromResponse(r.msg, r.parsed, this.cache.maxTtl);
    return this.done(ZONE_OTHER, t.rcode, q.qtype, t0, render(t, q, limit));
  }

  /** ExternalName -> a name outside the zone: the CNAME chain, then the target's records from upstream. */
  private async chase(q: QueryInfo, z: ExternalChase, limit: number, t0: number): Promise<Buffer | null> {
    let wire: Buffer | null = null;
    try {
      wire = nameToWire(z.target);
    } catch {
      /* an unencodable target: answer the CNAME alone */
    }
    let r: ForwardResult | null = null;
    let age = 0;
    if (wire && this.forwarder.upstreams.length) {
      const key = cacheKey(wire.toString('latin1'), q.qtype, q.qclass, q.dnssecOk);
      const hit = this.cache.get(key);
      if (hit) {
        const parsed = parseResponse(hit.t.buf);
        if (parsed) r = { msg: hit.t.buf, parsed };
        age = hit.age;
      } else {
        r = await this.resolveUpstream(key, wire, q.qtype, q.qclass, q.dnssecOk);
      }
    }
    const qname = Buffer.from(q.nameOrig).toString('latin1').toLowerCase();
    const w = new MsgWriter(wireNameToDotted(qname), q.qtype);
    for (const c of z.cnames) w.add(c);
    let an = z.cnames.length;
    let ns = 0;
    let rcode: number = RCODE.NOERROR;
    if (r && (r.parsed.rcode === RCODE.NOERROR || r.parsed.rcode === RCODE.NXDOMAIN)) {
      rcode = r.parsed.rcode;
      for (const x of r.parsed.answer) {
        w.add({ name: '', type: x.type, ttl: Math.max(0, Math.min(x.ttl, this.cache.maxTtl) - age), raw: x.rdata, cls: x.cls, wireName: x.wireName } as RR);
        an++;
      }
      if (r.parsed.answer.length === 0) {
        for (const x of r.parsed.authority) {
          if (x.type !== TYPE.SOA) continue;
          w.add({ name: '', type: x.type, ttl: Math.max(0, Math.min(x.ttl, this.cache.maxNegTtl) - age), raw: x.rdata, cls: x.cls, wireName: x.wireName } as RR);
          ns++;
        }
      }
    }
    const t: Template = w.finish({ an, ns, ar: 0 }, rcode, true);
    return this.done(ZONE_CLUSTER, rcode, q.qtype, t0, render(t, q, limit));
  }

  /** Whether a client may use forwarding: loopback/--allow CIDRs, plus the cluster's node and pod CIDRs. */
  allowed(src: string): boolean {
    let v = this.aclCache.get(src);
    if (v !== undefined) return v;
    v = false;
    let ip = src.startsWith('::ffff:') && isIPv4(src.slice(7)) ? src.slice(7) : src;
    ip = ip.split('%')[0]!;
    if (isIPv4(ip) || isIPv6(ip)) {
      const b = ipToBytes(ip);
      v = this.staticAcl.some((a) => inAcl(b, a)) || this.clusterAcl.some((a) => inAcl(b, a));
    }
    if (this.aclCache.size > 10000) this.aclCache.clear();
    this.aclCache.set(src, v);
    return v;
  }

  private updateClusterAcl(): void {
    this.aclCache.clear();
    if (this.opts.allowClusterCidrs === false) {
      this.clusterAcl = [];
      return;
    }
    const out: Acl[] = [];
    for (const n of this.opts.reader.list('Node')) {
      const cidrs = n.spec?.podCIDRs?.length ? n.spec.podCIDRs : n.spec?.podCIDR ? [n.spec.podCIDR] : [];
      for (const c of cidrs) {
        try {
          out.push(parseAcl(c, `node ${n.metadata.name} podCIDR`));
        } catch (e) {
          this.log.warn('ignoring invalid node podCIDR', { node: n.metadata.name, error: (e as Error).message });
        }
      }
      for (const a of n.status?.addresses ?? []) {
        if (a.type === 'InternalIP' && (isIPv4(a.address) || isIPv6(a.address))) out.push(parseAcl(a.address, 'node address'));
      }
    }
    this.clusterAcl = out;
  }
}

function cacheKey(key: string, qtype: number, qclass: number, dnssecOk: boolean): string {
  return `${key}|${qtype}|${qclass}|${dnssecOk ? 1 : 0}`;
}

/** The client's address as the cluster knows it (IPv4-mapped IPv6 and zone ids removed). */
function clientIp(src: string): string {
  const ip = src.split('%')[0]!;
  return ip.startsWith('::ffff:') && isIPv4(ip.slice(7)) ? ip.slice(7) : ip;
}

function isLoopback(ip: string): boolean {
  return ip === '::1' || ip.startsWith('127.');
}

/** A 12-byte header carrying q's ID, opcode and flags (for renderError after the packet is gone). */
function headerOf(q: QueryInfo): Buffer {
  const h = Buffer.alloc(12);
  h.writeUInt16BE(q.id, 0);
  h[2] = (q.opcode << 3) | (q.rd ? 1 : 0);
  h[3] = q.cd ? 0x10 : 0;
  return h;
}

/** Lowercase wire name (latin1) -> dotted. */
function wireNameToDotted(w: string): string {
  const parts: string[] = [];
  let p = 0;
  while (p < w.length && w.charCodeAt(p) !== 0) {
    const l = w.charCodeAt(p);
    parts.push(w.slice(p + 1, p + 1 + l));
    p += l + 1;
  }
  return parts.join('.');
}

/**
 * /health (alive) and /ready (the source has synced) for any HTTP server; returns
 * whether it handled the request, so the agent can mount it next to its own routes.
 */
export function healthHandler(server: { isReady(): boolean }): (req: http.IncomingMessage, res: http.ServerResponse) => boolean {
  return (req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (path === '/health') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('OK');
      return true;
    }
    if (path === '/ready') {
      const ok = server.isReady();
      res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' }).end(ok ? 'OK' : 'not synced');
      return true;
    }
    return false;
  };
}

/** A small HTTP server: /health, /ready and (with a registry) /metrics. */
export async function startHttp(addr: string, server: { isReady(): boolean }, registry?: Registry): Promise<http.Server> {
  const { host, port } = parseHostPort(addr, 8080, 'http');
  const health = healthHandler(server);
  const srv = http.createServer((req, res) => {
    if (health(req, res)) return;
    if (registry && (req.url ?? '').split('?')[0] === '/metrics') {
      registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
        (e: Error) => res.writeHead(500).end(e.message),
      );
      return;
    }
    res.writeHead(404).end('not found');
  });
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(port, host, () => resolve());
  });
  return srv;
}
