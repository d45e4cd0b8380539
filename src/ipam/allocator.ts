// host-local's strategy over a Store. Pure apart from the store it is given.
//
// - One address from every range set (dual-stack = an IPv4 and an IPv6 set).
// - Allocation continues after the set's last reserved address and wraps, so a
//   pod that is deleted and re-created does not get its old address straight back
//   (stale conntrack entries and caches pointing at it have time to expire).
// - Gateways are never handed out.
// - ADD is all-or-nothing across range sets, and a retried ADD for the same
//   container and interface gets the addresses it already holds.
import { readFileSync } from 'node:fs';
import { bigIntToIp, familyOf, ipToBigInt } from '../util/ip.js';
import { rangeSetSize, rangeSetText, type IpamConfig, type IpamRoute, type Range, type RangeSet } from './config.js';
import { CODE_EXHAUSTED, CODE_REQUESTED_UNAVAILABLE, IpamError } from './errors.js';
import type { Reservation, Store } from './store.js';

export interface AllocatedIp {
  /** Address with the subnet's prefix length, e.g. "10.244.1.5/24". */
  address: string;
  gateway?: string;
  /** false when the owner already held it (a retried ADD): rollback must keep it. */
  fresh: boolean;
}

export interface Allocation {
  ips: AllocatedIp[];
  routes: IpamRoute[];
  dns?: { nameservers?: string[]; domain?: string; search?: string[]; options?: string[] };
}

export interface Attachment {
  containerID: string;
  ifname: string;
}

const owns = (r: Reservation, containerId: string, ifname: string): boolean =>
  r.containerId === containerId && (r.ifname === ifname || r.ifname === '');

function rangeOf(rs: RangeSet, n: bigint): Range | undefined {
  return rs.ranges.find((r) => n >= r.start && n <= r.end);
}

/** The address after n in the set's ranges, wrapping from the last range to the first. */
function nextIn(rs: RangeSet, n: bigint): bigint {
  const i = rs.ranges.findIndex((r) => n >= r.start && n <= r.end);
  if (i < 0) return rs.ranges[0]!.start;
  const r = rs.ranges[i]!;
  if (n < r.end) return n + 1n;
  return rs.ranges[(i + 1) % rs.ranges.length]!.start;
}

export class Allocator {
  constructor(
    readonly config: IpamConfig,
    readonly store: Store,
  ) {}

  private setIndexOf(ip: string): number {
    const fam = familyOf(ip);
    const n = ipToBigInt(ip);
    return this.config.rangeSets.findIndex((rs) => rs.family === fam && rangeOf(rs, n) !== undefined);
  }

  private gateways(rs: RangeSet): Set<bigint> {
    const g = new Set<bigint>();
    for (const r of rs.ranges) if (r.gateway) g.add(ipToBigInt(r.gateway));
    return g;
  }

  private allocated(rs: RangeSet, ip: string): AllocatedIp & { ip: string } {
    const r = rangeOf(rs, ipToBigInt(ip))!;
    return { ip, address: `${ip}/${r.subnet.prefix}`, ...(r.gateway ? { gateway: r.gateway } : {}), fresh: true };
  }

  allocate(containerId: string, ifname: string, requested: readonly string[] = []): Allocation {
    const sets = this.config.rangeSets;
    const wanted = new Map<number, string>();
    for (const ip of requested) {
      const i = this.setIndexOf(ip);
      if (i < 0) throw new IpamError(`requested IP address ${ip} is not in any range set (${sets.map(rangeSetText).join('; ')})`, CODE_REQUESTED_UNAVAILABLE);
      if (wanted.has(i)) throw new IpamError(`requested IP addresses ${wanted.get(i)} and ${ip} fall into the same range set ${rangeSetText(sets[i]!)}: one address per set`, 7);
      wanted.set(i, ip);
    }
    return this.store.withLock(() => {
      const existing = this.store.all();
      const taken = new Set(existing.map((r) => r.ip));
      const done: (AllocatedIp & { ip: string })[] = [];
      try {
        sets.forEach((rs, i) => {
          const mine = existing.find((r) => owns(r, containerId, ifname) && this.setIndexOf(r.ip) === i);
          const want = wanted.get(i);
          if (mine && (!want || mine.ip === want)) {
            done.push({ ...this.allocated(rs, mine.ip), fresh: false });
            return;
          }
          if (want) {
            if (this.gateways(rs).has(ipToBigInt(want))) throw new IpamError(`requested IP address ${want} is the gateway of its range`, CODE_REQUESTED_UNAVAILABLE);
            if (!this.store.reserve(want, containerId, ifname)) {
              const o = this.store.owner(want);
              throw new IpamError(`requested IP address ${want} is not available: reserved by container ${o?.containerId ?? '?'} ${o?.ifname ?? ''}`.trim(), CODE_REQUESTED_UNAVAILABLE);
            }
            taken.add(want);
            done.push(this.allocated(rs, want));
            return;
          }
          const ip = this.next(rs, i, taken, containerId, ifname);
          taken.add(ip);
          done.push(this.allocated(rs, ip));
          this.store.setLastReserved(i, ip);
        });
      } catch (e) {
        for (const d of done) if (d.fresh) this.store.release(d.ip);
        throw e;
      }
      return {
        ips: done.map(({ address, gateway, fresh }) => ({ address, ...(gateway ? { gateway } : {}), fresh })),
        routes: this.config.routes,
        ...(this.config.resolvConf ? { dns: readResolvConf(this.config.resolvConf) } : {}),
      };
    });
  }

  private next(rs: RangeSet, i: number, taken: Set<string>, containerId: string, ifname: string): string {
    const gws = this.gateways(rs);
    const size = rangeSetSize(rs);
    // At most |taken|+|gateways|+1 candidates can be unavailable before a free one
    // appears, so the walk stays short even for an IPv6 /64.
    let budget = BigInt(taken.size + gws.size + 1);
    if (budget > size) budget = size;
    const last = this.store.lastReserved(i);
    let n = last && familyOf(last) === rs.family && rangeOf(rs, ipToBigInt(last)) ? nextIn(rs, ipToBigInt(last)) : rs.ranges[0]!.start;
    for (let step = 0n; step < budget; step++, n = nextIn(rs, n)) {
      if (gws.has(n)) continue;
      const ip = bigIntToIp(n, rs.family);
      if (taken.has(ip)) continue;
      if (this.store.reserve(ip, containerId, ifname)) return ip;
      taken.add(ip);
    }
    throw new IpamError(`no IP addresses available in range set ${rangeSetText(rs)}`, CODE_EXHAUSTED);
  }

  /** Releases every address the owner holds; returns them. */
  release(containerId: string, ifname: string): string[] {
    return this.store.withLock(() => {
      const mine = this.store.all().filter((r) => owns(r, containerId, ifname));
      for (const r of mine) this.store.release(r.ip);
      return mine.map((r) => r.ip);
    });
  }

  /** Releases exactly these addresses (rollback of a failed ADD). */
  releaseIps(ips: readonly string[]): void {
    this.store.withLock(() => {
      for (const ip of ips) this.store.release(ip);
    });
  }

  /** The addresses the owner holds. */
  held(containerId: string, ifname: string): string[] {
    return this.store.withLock(() => this.store.all().filter((r) => owns(r, containerId, ifname)).map((r) => r.ip));
  }

  /** Removes every reservation that belongs to no valid attachment; returns them. */
  gc(valid: readonly Attachment[]): Reservation[] {
    const keep = new Set(valid.map((a) => `${a.containerID}\n${a.ifname}`));
    const keepIds = new Set(valid.map((a) => a.containerID));
    return this.store.withLock(() => {
      const gone = this.store.all().filter((r) => (r.ifname === '' ? !keepIds.has(r.containerId) : !keep.has(`${r.containerId}\n${r.ifname}`)));
      for (const r of gone) this.store.release(r.ip);
      return gone;
    });
  }

  /** Whether an ADD could be served now: every range set needs a free address. */
  status(): { ok: true } | { ok: false; reason: string } {
    return this.store.withLock(() => {
      const reserved = this.store.all();
      for (const [i, rs] of this.config.rangeSets.entries()) {
        const used = reserved.filter((r) => this.setIndexOf(r.ip) === i).length;
        let gws = 0;
        for (const g of this.gateways(rs)) if (rangeOf(rs, g)) gws++;
        if (rangeSetSize(rs) - BigInt(used + gws) <= 0n) return { ok: false as const, reason: `no IP addresses available in range set ${rangeSetText(rs)}` };
      }
      return { ok: true as const };
    });
  }
}

/** The DNS settings of a resolv.conf file (host-local's `resolvConf` option). */
export function readResolvConf(path: string): NonNullable<Allocation['dns']> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new IpamError(`ipam.resolvConf: cannot read ${path}: ${(e as Error).message}`, 5);
  }
  const dns: NonNullable<Allocation['dns']> = {};
  for (const line of text.split('\n')) {
    const [key, ...vals] = line.replace(/[#;].*$/, '').trim().split(/\s+/);
    if (!key || !vals.length) continue;
    if (key === 'nameserver') (dns.nameservers ??= []).push(vals[0]!);
    else if (key === 'domain') dns.domain = vals[0]!;
    else if (key === 'search') dns.search = vals;
    else if (key === 'options') (dns.options ??= []).push(...vals);
  }
  return dns;
}
