// Deleting conntrack entries through the `conntrack` CLI (conntrack-tools). The
// proxy uses it after endpoint changes: a UDP "connection" (say a DNS client's
// fixed source port) stays pinned by its conntrack entry to the endpoint it was
// DNATed to; when that endpoint goes away, packets keep going to it until the entry
// times out — the classic DNS/statsd black hole. Deleting the entry makes the next
// packet a new connection that the ruleset balances again.
//
// Every address and port is validated before it becomes an argument (no shell is
// involved either way). `conntrack -D` exits 1 when nothing matched; that is success.
import { isIPv4, isIPv6 } from 'node:net';
import type { Executor, ExecOptions } from './exec.js';

export interface ConntrackFilter {
  family: 4 | 6;
  proto: 'udp' | 'tcp' | 'sctp';
  /** The original destination (a ClusterIP, external IP, node IP). */
  origDst?: string;
  origDstPort?: number;
  /** The reply source: the endpoint a DNATed flow was sent to. */
  replySrc?: string;
  replySrcPort?: number;
}

export class Conntrack {
  constructor(
    private readonly exec: Executor,
    private readonly opts: { netns?: string; netnsPath?: string; binary?: string } = {},
  ) {}

  /** The conntrack arguments for a filter (exported for tests and logging). */
  static args(f: ConntrackFilter): string[] {
    const ip = (what: string, v: string) => {
      if (f.family === 4 ? !isIPv4(v) : !isIPv6(v)) throw new Error(`conntrack: ${what}: invalid IPv${f.family} address ${JSON.stringify(v)}`);
      return v;
    };
    const port = (what: string, v: number) => {
      if (!Number.isInteger(v) || v < 1 || v > 65535) throw new Error(`conntrack: ${what}: invalid port ${JSON.stringify(v)}`);
      return String(v);
    };
    if (!['udp', 'tcp', 'sctp'].includes(f.proto)) throw new Error(`conntrack: proto: invalid value ${JSON.stringify(f.proto)}`);
    if (f.origDst === undefined && f.replySrc === undefined && f.origDstPort === undefined) {
      throw new Error('conntrack: refusing to delete without a destination or reply-source filter');
    }
    const a = ['-D', '-f', f.family === 4 ? 'ipv4' : 'ipv6', '-p', f.proto];
    if (f.origDst !== undefined) a.push('--orig-dst', ip('origDst', f.origDst));
    if (f.origDstPort !== undefined) a.push('--orig-port-dst', port('origDstPort', f.origDstPort));
    if (f.replySrc !== undefined) a.push('--reply-src', ip('replySrc', f.replySrc));
    if (f.replySrcPort !== undefined) a.push('--reply-port-src', port('replySrcPort', f.replySrcPort));
    return a;
  }

  /** Deletes matching entries; returns how many were deleted. */
  async delete(f: ConntrackFilter): Promise<number> {
    const args = Conntrack.args(f);
    const bin = this.opts.binary ?? 'conntrack';
    const o: ExecOptions = {};
    const r = this.opts.netnsPath
      ? await this.exec('nsenter', [`--net=${this.opts.netnsPath}`, bin, ...args], o)
      : await this.exec(bin, args, this.opts.netns ? { netns: this.opts.netns } : o);
    const m = /(\d+) flow entries have been deleted/.exec(r.stderr + r.stdout);
    if (r.code === 0 || (r.code === 1 && m)) return m ? Number(m[1]) : 0;
    throw new Error(`conntrack ${args.join(' ')}: exit ${r.code}: ${r.stderr.trim()}`);
  }
}
