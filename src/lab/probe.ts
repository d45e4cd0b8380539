// One connection attempt from inside a pod's network namespace, in this process: the
// socket is created inside the namespace (socketIn / openIcmpSocket enter it
// synchronously with setns and come back), so a probe costs a socket and a round trip,
// not a process. `lab probe` runs one; `lab up`'s check and `lab matrix` run many
// concurrently (each probe has its own socket; nothing is shared).
//
//   TCP   connect, then read what the server writes (the built-in servers write
//         "<namespace>/<name>\n" and close) until a newline, the close, or the timeout
//   UDP   a connected socket sends a datagram every 250 ms until one is answered;
//         ICMP port unreachable surfaces as ECONNREFUSED ("refused")
//   ICMP  echo requests through a raw socket (the `raw-socket` package) every 250 ms;
//         an ICMP destination unreachable about our echo is "unreachable"
import { createSocket as createUdp } from 'node:dgram';
import { Socket } from 'node:net';
import { randomInt } from 'node:crypto';
import { closeSync } from 'node:fs';
import { socketIn } from '../os/netns.js';
import { echoRequest, openIcmpSocket, parseEchoReply, type RawSocket } from '../overlay/probe.js';

export type ProbeProtocol = 'TCP' | 'UDP' | 'ICMP';
export type ProbeVerdict = 'ok' | 'refused' | 'timed out' | 'unreachable' | 'error';

export interface ProbeOutcome {
  result: ProbeVerdict;
  /** What the target answered (first line), for result "ok". */
  answer?: string;
  /** Milliseconds from the first packet to the verdict. */
  ms: number;
  /** The errno code or message behind "error" (and "unreachable"). */
  error?: string;
}

export interface ProbeSpec {
  /** The source namespace, e.g. /var/run/netns/skl-lab-p-0123456789. */
  netnsPath: string;
  ip: string;
  protocol: ProbeProtocol;
  /** Required for TCP and UDP. */
  port?: number;
  timeoutMs: number;
  /** What UDP sends (default "probe\n"). */
  payload?: string;
}

const RESEND_MS = 250;
const UNREACHABLE = new Set(['EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN', 'ENETDOWN', 'EADDRNOTAVAIL']);

/** The verdict an errno code means. */
export function verdictOf(code: string | undefined): ProbeVerdict {
  if (code === 'ECONNREFUSED') return 'refused';
  if (code === 'ETIMEDOUT') return 'timed out';
  if (code && UNREACHABLE.has(code)) return 'unreachable';
  return 'error';
}

/** The first line of what a server sent (without the newline). */
export function firstLine(s: string): string {
  const i = s.indexOf('\n');
  return (i >= 0 ? s.slice(0, i) : s).replace(/\r$/, '');
}

/** Runs one probe. Never throws for network outcomes; throws only when the source namespace cannot be entered. */
export function probe(spec: ProbeSpec): Promise<ProbeOutcome> {
  if (spec.protocol !== 'ICMP' && (spec.port === undefined || !Number.isInteger(spec.port) || spec.port < 1 || spec.port > 65535)) {
    throw new Error(`probe ${spec.protocol}: port: invalid value ${JSON.stringify(spec.port)} (an integer from 1 to 65535)`);
  }
  if (spec.protocol === 'TCP') return probeTcp(spec);
  if (spec.protocol === 'UDP') return probeUdp(spec);
  return probeIcmp(spec);
}

function elapsed(t0: bigint): number {
  return Math.round(Number(process.hrtime.bigint() - t0) / 1e4) / 100;
}

/** Hands a raw fd to Node.js; closes it when that fails, so nothing leaks. */
function adopt<T>(fd: number, wrap: () => T): T {
  try {
    return wrap();
  } catch (e) {
    closeSync(fd);
    throw e;
  }
}

function probeTcp(spec: ProbeSpec): Promise<ProbeOutcome> {
  const fd = socketIn(spec.netnsPath, 'tcp');
  const sock = adopt(fd, () => new Socket({ fd, readable: true, writable: true }));
  const t0 = process.hrtime.bigint();
  return new Promise((resolve) => {
    let connected = false;
    let buf = '';
    let settled = false;
    const done = (o: Omit<ProbeOutcome, 'ms'>) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      resolve({ ...o, ms: elapsed(t0) });
    };
    const timer = setTimeout(() => (connected ? done({ result: 'ok', answer: firstLine(buf) }) : done({ result: 'timed out' })), spec.timeoutMs);
    sock.setEncoding('utf8');
    sock.on('connect', () => {
      connected = true;
    });
    sock.on('data', (d: string) => {
      buf += d;
      if (buf.includes('\n')) done({ result: 'ok', answer: firstLine(buf) });
    });
    sock.on('end', () => done({ result: 'ok', answer: firstLine(buf) }));
    sock.on('close', () => {
      if (connected) done({ result: 'ok', answer: firstLine(buf) });
    });
    sock.on('error', (e: NodeJS.ErrnoException) => {
      // A reset after the handshake still proves the path and the listener.
      if (connected) return done({ result: 'ok', answer: firstLine(buf) });
      const result = verdictOf(e.code);
      done({ result, ...(result === 'error' || result === 'unreachable' ? { error: e.code ?? e.message } : {}) });
    });
    sock.connect(spec.port!, spec.ip);
  });
}

function probeUdp(spec: ProbeSpec): Promise<ProbeOutcome> {
  const fd = socketIn(spec.netnsPath, 'udp');
  const sock = createUdp('udp4');
  adopt(fd, () => {
    try {
      sock.bind({ fd });
    } catch (e) {
      sock.close();
      throw e;
    }
  });
  const t0 = process.hrtime.bigint();
  const payload = Buffer.from(spec.payload ?? 'probe\n');
  return new Promise((resolve) => {
    let settled = false;
    let resend: NodeJS.Timeout | undefined;
    const done = (o: Omit<ProbeOutcome, 'ms'>) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearInterval(resend);
      try {
        sock.close();
      } catch {
        /* already closed */
      }
      resolve({ ...o, ms: elapsed(t0) });
    };
    const timer = setTimeout(() => done({ result: 'timed out' }), spec.timeoutMs);
    sock.on('error', (e: NodeJS.ErrnoException) => {
      const result = verdictOf(e.code);
      done({ result, ...(result === 'error' || result === 'unreachable' ? { error: e.code ?? e.message } : {}) });
    });
    sock.on('message', (m) => done({ result: 'ok', answer: firstLine(m.toString('utf8')) }));
    sock.connect(spec.port!, spec.ip, (err?: Error) => {
      if (err) return sock.emit('error', err);
      const send = () => {
        if (!settled) sock.send(payload, (e) => e && sock.emit('error', e));
      };
      send();
      resend = setInterval(send, RESEND_MS);
    });
  });
}

/** ICMP destination unreachable (type 3) carrying our echo (by identifier): its code. */
export function parseUnreachable(pkt: Buffer, id: number): number | undefined {
  if (pkt.length < 20 || pkt[0]! >> 4 !== 4) return undefined;
  const ihl = (pkt[0]! & 0x0f) * 4;
  if (pkt[9] !== 1 || pkt.length < ihl + 8 || pkt[ihl] !== 3) return undefined;
  const inner = pkt.subarray(ihl + 8);
  if (inner.length < 20 || inner[0]! >> 4 !== 4 || inner[9] !== 1) return undefined;
  const iihl = (inner[0]! & 0x0f) * 4;
  if (inner.length < iihl + 8 || inner[iihl] !== 8 || inner.readUInt16BE(iihl + 4) !== id) return undefined;
  return pkt[ihl + 1];
}

function probeIcmp(spec: ProbeSpec): Promise<ProbeOutcome> {
  const sock: RawSocket = openIcmpSocket(spec.netnsPath);
  const id = randomInt(1, 0xffff);
  const t0 = process.hrtime.bigint();
  return new Promise((resolve) => {
    let settled = false;
    let seq = 0;
    const done = (o: Omit<ProbeOutcome, 'ms'>) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearInterval(resend);
      sock.close();
      resolve({ ...o, ms: elapsed(t0) });
    };
    const timer = setTimeout(() => done({ result: 'timed out' }), spec.timeoutMs);
    sock.on('message', (buf, source) => {
      const r = parseEchoReply(buf);
      if (r && r.id === id && source === spec.ip) return done({ result: 'ok', answer: `echo reply from ${source}` });
      const code = parseUnreachable(buf, id);
      if (code !== undefined) done({ result: 'unreachable', error: `ICMP destination unreachable (code ${code}) from ${source}` });
    });
    sock.on('error', (e) => done({ result: 'error', error: e.message }));
    const send = () => {
      if (settled) return;
      const pkt = echoRequest(id, ++seq, Buffer.from('skiff-lab-probe'));
      sock.send(pkt, 0, pkt.length, spec.ip, (err) => {
        if (err) done({ result: /unreachable/i.test(err.message) ? 'unreachable' : 'error', error: err.message });
      });
    };
    const resend = setInterval(send, RESEND_MS);
    send();
  });
}
