// host-local IPAM configuration: parse, fill defaults, then validate with messages
// that name the field and the value (as upstream's range.go does). Pure.
//
//   "ipam": {
//     "type": "host-local",
//     "ranges": [ [ {"subnet": "10.244.1.0/24", "rangeStart": "...", "rangeEnd": "...", "gateway": "..."} ],
//                 [ {"subnet": "fd00:10:244:1::/64"} ] ],
//     "subnet": "...", "rangeStart": "...", "rangeEnd": "...", "gateway": "...",   (the older single-range form)
//     "routes": [ {"dst": "0.0.0.0/0"} ],
//     "dataDir": "/var/lib/cni/networks",
//     "resolvConf": "/etc/resolv.conf"
//   }
//
// One address is allocated from every range set, so dual-stack is one IPv4 set and
// one IPv6 set. A range set may hold several ranges of the same family.
import { bigIntToIp, containsIp, familyOf, ipToBigInt, isIP, lastOf, networkOf, parseCidr, type Cidr, type Family } from '../util/ip.js';
import { IpamError } from './errors.js';

export interface Range {
  subnet: Cidr;
  /** First and last allocatable addresses (inclusive). */
  start: bigint;
  end: bigint;
  gateway?: string;
  /** The configured text, for messages. */
  text: string;
}

export interface RangeSet {
  family: Family;
  ranges: Range[];
}

export interface IpamRoute {
  dst: string;
  gw?: string;
}

export interface IpamConfig {
  rangeSets: RangeSet[];
  routes: IpamRoute[];
  /** The network's own directory: dataDir/<network name>. */
  dir: string;
  resolvConf?: string;
}

export const DEFAULT_DATA_DIR = '/var/lib/cni/networks';

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const show = (v: unknown): string => JSON.stringify(v) ?? String(v);

function invalid(field: string, value: unknown, expected: string): IpamError {
  return new IpamError(`ipam.${field}: invalid value ${show(value)} (${expected})`, 7);
}

function optString(o: Record<string, unknown>, key: string, path: string): string | undefined {
  const v = o[key];
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string') throw invalid(path, v, 'a string');
  return v;
}

function parseAddr(o: Record<string, unknown>, key: string, path: string): string | undefined {
  const v = optString(o, key, path);
  if (v === undefined) return undefined;
  if (!isIP(v)) throw invalid(path, v, 'an IP address');
  return bigIntToIp(ipToBigInt(v), familyOf(v));
}

/** `path` is "" for the older top-level form (fields are then ipam.subnet, ...). */
function parseRange(raw: unknown, path: string): Range {
  const f = (field: string): string => (path ? `${path}.${field}` : field);
  if (!isObject(raw)) throw invalid(path, raw, 'an object with "subnet"');
  const subnetText = optString(raw, 'subnet', f('subnet'));
  if (subnetText === undefined) throw new IpamError(`ipam.${f('subnet')}: missing (a CIDR such as "10.244.1.0/24")`, 7);
  let subnet: Cidr;
  try {
    subnet = parseCidr(subnetText);
  } catch {
    throw invalid(f('subnet'), subnetText, 'a CIDR such as "10.244.1.0/24"');
  }
  if (networkOf(subnet) !== subnet.ip) {
    throw invalid(f('subnet'), subnetText, `host bits set; the network is ${networkOf(subnet)}/${subnet.prefix}`);
  }
  const bits = subnet.family === 4 ? 32 : 128;
  if (subnet.prefix > bits - 2) throw invalid(f('subnet'), subnetText, `too small to allocate from: at most /${bits - 2}`);

  const net = ipToBigInt(subnet.ip);
  const last = ipToBigInt(lastOf(subnet));
  // IPv4 never hands out the network or broadcast address; IPv6 skips the
  // subnet-router anycast address (the network address).
  let start = net + 1n;
  let end = subnet.family === 4 ? last - 1n : last;
  const inSubnet = (field: string, ip: string | undefined): bigint | undefined => {
    if (ip === undefined) return undefined;
    if (!containsIp(subnet, ip)) throw invalid(f(field), ip, `not inside subnet ${subnetText}`);
    return ipToBigInt(ip);
  };
  const rs = inSubnet('rangeStart', parseAddr(raw, 'rangeStart', f('rangeStart')));
  const re = inSubnet('rangeEnd', parseAddr(raw, 'rangeEnd', f('rangeEnd')));
  const gateway = parseAddr(raw, 'gateway', f('gateway')) ?? bigIntToIp(net + 1n, subnet.family);
  inSubnet('gateway', gateway);
  if (rs !== undefined) {
    if (rs < start || rs > end) throw invalid(f('rangeStart'), raw.rangeStart, 'the network or broadcast address cannot be allocated');
    start = rs;
  }
  if (re !== undefined) {
    if (re < start || re > end) throw invalid(f('rangeEnd'), raw.rangeEnd, `must lie between rangeStart ${bigIntToIp(start, subnet.family)} and ${bigIntToIp(end, subnet.family)}`);
    end = re;
  }
  return { subnet, start, end, gateway, text: `${subnetText}` };
}

function overlaps(a: Range, b: Range): boolean {
  if (a.subnet.family !== b.subnet.family) return false;
  return a.start <= b.end && b.start <= a.end;
}

export function parseIpamConfig(raw: unknown, o: { networkName: string }): IpamConfig {
  if (!isObject(raw)) throw new IpamError(`ipam: invalid value ${show(raw)} (an object)`, 7);
  const sets: { raw: unknown; path: string }[] = [];
  // The older single-range form comes first, then `ranges`.
  if (raw.subnet !== undefined) sets.push({ raw: [{ subnet: raw.subnet, rangeStart: raw.rangeStart, rangeEnd: raw.rangeEnd, gateway: raw.gateway }], path: '' });
  if (raw.ranges !== undefined) {
    if (!Array.isArray(raw.ranges) || raw.ranges.length === 0) throw invalid('ranges', raw.ranges, 'a non-empty list of range sets (lists of ranges)');
    raw.ranges.forEach((rs, i) => sets.push({ raw: rs, path: `ranges[${i}]` }));
  }
  if (sets.length === 0) throw new IpamError('ipam.ranges: missing (e.g. [[{"subnet": "10.244.1.0/24"}]]; or ipam.subnet)', 7);

  const rangeSets: RangeSet[] = sets.map(({ raw: rs, path }) => {
    const list = path === '' ? (rs as unknown[]) : rs;
    if (!Array.isArray(list) || list.length === 0) throw invalid(path, list, 'a non-empty list of ranges');
    const ranges = list.map((r, j) => parseRange(r, path === '' ? '' : `${path}[${j}]`));
    const family = ranges[0]!.subnet.family;
    ranges.forEach((r, j) => {
      if (r.subnet.family !== family) throw invalid(`${path}[${j}].subnet`, r.text, `every range in a set must be IPv${family} like the first`);
    });
    return { family, ranges };
  });

  // No two ranges anywhere may overlap: one address would belong to two sets.
  const all = rangeSets.flatMap((s, i) => s.ranges.map((r, j) => ({ r, where: sets[i]!.path === '' ? 'subnet' : `${sets[i]!.path}[${j}]` })));
  for (let a = 0; a < all.length; a++) {
    for (let b = a + 1; b < all.length; b++) {
      if (overlaps(all[a]!.r, all[b]!.r)) {
        throw new IpamError(`ipam.${all[b]!.where}: range ${all[b]!.r.text} overlaps ${all[a]!.where} (${all[a]!.r.text})`, 7);
      }
    }
  }

  const routes: IpamRoute[] = [];
  if (raw.routes !== undefined && raw.routes !== null) {
    if (!Array.isArray(raw.routes)) throw invalid('routes', raw.routes, 'a list of {"dst": CIDR, "gw": IP}');
    raw.routes.forEach((r, i) => {
      if (!isObject(r)) throw invalid(`routes[${i}]`, r, 'an object {"dst": CIDR, "gw": IP}');
      const dst = optString(r, 'dst', `routes[${i}].dst`);
      if (!dst) throw new IpamError(`ipam.routes[${i}].dst: missing (a CIDR)`, 7);
      let c: Cidr;
      try {
        c = parseCidr(dst);
      } catch {
        throw invalid(`routes[${i}].dst`, dst, 'a CIDR such as "0.0.0.0/0"');
      }
      const gw = parseAddr(r, 'gw', `routes[${i}].gw`);
      if (gw && familyOf(gw) !== c.family) throw invalid(`routes[${i}].gw`, gw, `an IPv${c.family} address like dst`);
      routes.push({ dst: `${networkOf(c)}/${c.prefix}`, ...(gw ? { gw } : {}) });
    });
  }

  const dataDir = optString(raw, 'dataDir', 'dataDir') ?? DEFAULT_DATA_DIR;
  if (!dataDir.startsWith('/')) throw invalid('dataDir', dataDir, 'an absolute path');
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(o.networkName)) throw new IpamError(`name: invalid value ${show(o.networkName)} (a network name usable as a directory name)`, 7);
  const resolvConf = optString(raw, 'resolvConf', 'resolvConf');
  return { rangeSets, routes, dir: `${dataDir.replace(/\/+$/, '')}/${o.networkName}`, ...(resolvConf ? { resolvConf } : {}) };
}

/** Every allocatable address of a range set, in order (for tests and small sets). */
export function rangeSetSize(rs: RangeSet): bigint {
  return rs.ranges.reduce((n, r) => n + (r.end - r.start + 1n), 0n);
}

export function rangeSetText(rs: RangeSet): string {
  return rs.ranges.map((r) => `${bigIntToIp(r.start, rs.family)}-${bigIntToIp(r.end, rs.family)}`).join(',');
}
