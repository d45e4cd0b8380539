// Peer health over the overlay: ICMP echo to every peer's VXLAN-side address (its pod
// CIDR's network address, which the peer holds on its vxlan device) through a raw
// socket from the `raw-socket` package. The socket is created synchronously inside
// the node's namespace (inNetns), so it sends and receives there even when the
// process lives elsewhere (in-process tests); in the lab the agent already runs in
// the node namespace and netnsPath is simply undefined.
//
// Exposes skiff_overlay_peer_up{node} (1/0) and skiff_overlay_peer_rtt_seconds{node};
// logs every up/down transition.
import { createRequire } from 'node:module';
import { randomInt } from 'node:crypto';
import { Gauge, type Registry } from 'prom-client';
import { inNetns } from '../os/netns.js';
import type { Logger } from '../util/log.js';

const require = createRequire(import.meta.url);

/** The part of raw-socket's Socket we use (the package ships no types). */
export interface RawSocket {
  on(ev: 'message', cb: (buf: Buffer, source: string) => void): unknown;
  on(ev: 'error', cb: (err: Error) => void): unknown;
  send(buf: Buffer, offset: number, length: number, address: string, cb: (err: Error | null, bytes: number) => void): unknown;
  close(): unknown;
  pauseRecv(): unknown;
  resumeRecv(): unknown;
}

interface RawSocketModule {
  createSocket(o: { protocol: number; addressFamily?: number }): RawSocket;
  Protocol: { ICMP: number };
  AddressFamily: { IPv4: number };
  createChecksum(...bufs: Buffer[]): number;
  writeChecksum(buf: Buffer, offset: number, sum: number): void;
}

let rawMod: RawSocketModule | undefined;
function raw(): RawSocketModule {
  rawMod ??= require('raw-socket') as RawSocketModule;
  return rawMod;
}

/** A raw ICMPv4 socket created inside `netnsPath` (or the current namespace). */
export function openIcmpSocket(netnsPath?: string): RawSocket {
  const r = raw();
  return inNetns(netnsPath, () => r.createSocket({ protocol: r.Protocol.ICMP, addressFamily: r.AddressFamily.IPv4 }));
}

/** An ICMP echo request (type 8) with identifier, sequence and payload, checksummed. */
export function echoRequest(id: number, seq: number, payload: Buffer = Buffer.alloc(16)): Buffer {
  const b = Buffer.alloc(8 + payload.length);
  b.writeUInt8(8, 0);
  b.writeUInt8(0, 1);
  b.writeUInt16BE(id & 0xffff, 4);
  b.writeUInt16BE(seq & 0xffff, 6);
  payload.copy(b, 8);
  b.writeUInt16BE(icmpChecksum(b), 2);
  return b;
}

export function icmpChecksum(b: Buffer): number {
  let sum = 0;
  for (let i = 0; i + 1 < b.length; i += 2) sum += b.readUInt16BE(i);
  if (b.length % 2) sum += b[b.length - 1]! << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return ~sum & 0xffff;
}

/** Parses an IPv4 packet (raw ICMP sockets deliver the IP header) carrying an ICMP echo reply. */
export function parseEchoReply(pkt: Buffer): { id: number; seq: number } | undefined {
  if (pkt.length < 20 || pkt[0]! >> 4 !== 4) return undefined;
  const ihl = (pkt[0]! & 0x0f) * 4;
  if (pkt.length < ihl + 8 || pkt[9] !== 1) return undefined;
  if (pkt[ihl] !== 0 || pkt[ihl + 1] !== 0) return undefined; // echo reply, code 0
  return { id: pkt.readUInt16BE(ihl + 4), seq: pkt.readUInt16BE(ihl + 6) };
}

export interface PingResult {
  ok: boolean;
  rttSeconds?: number;
  error?: string;
}

/**
 * One ICMP pinger over one raw socket: concurrent echoes matched by (source, id, seq).
 * The socket receives every ICMP packet of its namespace, hence the matching.
 */
export class IcmpPinger {
  private readonly sock: RawSocket;
  private readonly id = randomInt(1, 0xffff);
  private seq = 0;
  private readonly waiting = new Map<string, (src: string) => void>();
  private closed = false;

  constructor(netnsPath?: string, socketFactory: (ns?: string) => RawSocket = openIcmpSocket) {
    this.sock = socketFactory(netnsPath);
    this.sock.on('message', (buf, source) => {
      const r = parseEchoReply(buf);
      if (!r || r.id !== this.id) return;
      this.waiting.get(`${source}/${r.seq}`)?.(source);
    });
    this.sock.on('error', () => {
      /* per-send errors are reported through send's callback */
    });
  }

  ping(target: string, timeoutMs = 1000): Promise<PingResult> {
    if (this.closed) return Promise.resolve({ ok: false, error: 'pinger closed' });
    const seq = (this.seq = (this.seq + 1) & 0xffff);
    const key = `${target}/${seq}`;
    const pkt = echoRequest(this.id, seq, Buffer.from('skiff-overlay-probe'));
    return new Promise((resolve) => {
      const started = process.hrtime.bigint();
      const done = (r: PingResult) => {
        clearTimeout(timer);
        this.waiting.delete(key);
        resolve(r);
      };
      const timer = setTimeout(() => done({ ok: false, error: 'timed out' }), timeoutMs);
      this.waiting.set(key, () => done({ ok: true, rttSeconds: Number(process.hrtime.bigint() - started) / 1e9 }));
      this.sock.send(pkt, 0, pkt.length, target, (err) => {
        if (err) done({ ok: false, error: err.message });
      });
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.sock.close();
  }
}

export interface ProbeTarget {
  node: string;
  ip: string;
}

export interface PeerHealth {
  node: string;
  ip: string;
  up: boolean;
  rttSeconds?: number;
  since: number;
}

function gauge(registry: Registry, name: string, help: string): Gauge<'node'> {
  const existing = registry.getSingleMetric(name);
  if (existing) return existing as Gauge<'node'>;
  return new Gauge({ name, help, labelNames: ['node'], registers: [registry] });
}

export interface ProberOptions {
  netnsPath?: string;
  registry: Registry;
  log: Logger;
  intervalMs?: number;
  timeoutMs?: number;
  /** A peer is down after this many consecutive lost echoes (default 2). */
  downAfter?: number;
  socketFactory?: (ns?: string) => RawSocket;
}

/** Probes the current peers every interval and keeps the gauges current. */
export class OverlayProber {
  private targets: ProbeTarget[] = [];
  private readonly state = new Map<string, PeerHealth & { misses: number }>();
  private pinger: IcmpPinger | undefined;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private readonly up: Gauge<'node'>;
  private readonly rtt: Gauge<'node'>;

  constructor(private readonly o: ProberOptions) {
    this.up = gauge(o.registry, 'skiff_overlay_peer_up', 'Whether the peer node answers ICMP echo over the overlay (1) or not (0).');
    this.rtt = gauge(o.registry, 'skiff_overlay_peer_rtt_seconds', 'Round-trip time of the last ICMP echo to the peer node over the overlay.');
  }

  setTargets(targets: ProbeTarget[]): void {
    this.targets = targets;
    const keep = new Set(targets.map((t) => t.node));
    for (const node of [...this.state.keys()]) {
      if (!keep.has(node)) {
        this.state.delete(node);
        this.up.remove({ node });
        this.rtt.remove({ node });
      }
    }
  }

  health(): PeerHealth[] {
    return [...this.state.values()].map(({ misses: _m, ...h }) => h);
  }

  /** Probes every target once (concurrently). */
  async probeOnce(): Promise<PeerHealth[]> {
    this.pinger ??= new IcmpPinger(this.o.netnsPath, this.o.socketFactory);
    const pinger = this.pinger;
    const timeout = this.o.timeoutMs ?? 1000;
    const downAfter = this.o.downAfter ?? 2;
    await Promise.all(
      this.targets.map(async (t) => {
        const r = await pinger.ping(t.ip, timeout);
        const prev = this.state.get(t.node);
        if (prev && prev.ip !== t.ip) this.state.delete(t.node);
        const cur = this.state.get(t.node);
        const misses = r.ok ? 0 : (cur?.misses ?? 0) + 1;
        // A new peer is down at its first miss; a known-up peer after `downAfter` misses.
        const up = r.ok ? true : cur?.up ? misses < downAfter : false;
        if (!cur || cur.up !== up) {
          const fields = { node: t.node, ip: t.ip, ...(r.rttSeconds !== undefined ? { rttSeconds: r.rttSeconds } : {}), ...(r.error ? { error: r.error } : {}) };
          if (up) this.o.log.info('overlay peer up', fields);
          else this.o.log.warn('overlay peer down', fields);
        }
        const next = { node: t.node, ip: t.ip, up, misses, since: !cur || cur.up !== up ? Date.now() : cur.since, ...(r.ok ? { rttSeconds: r.rttSeconds! } : cur?.rttSeconds !== undefined ? { rttSeconds: cur.rttSeconds } : {}) };
        this.state.set(t.node, next);
        this.up.set({ node: t.node }, up ? 1 : 0);
        if (r.ok) this.rtt.set({ node: t.node }, r.rttSeconds!);
      }),
    );
    return this.health();
  }

  start(): void {
    if (this.timer) return;
    const every = this.o.intervalMs ?? 5000;
    const tick = () => {
      if (this.running) return;
      this.running = this.probeOnce()
        .catch((e: unknown) => this.o.log.error('overlay probe failed', { error: String((e as Error)?.message ?? e) }))
        .then(() => {
          this.running = undefined;
        });
    };
    this.timer = setInterval(tick, every);
    this.timer.unref();
    tick();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
    this.pinger?.close();
    this.pinger = undefined;
  }
}
