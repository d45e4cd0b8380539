// Per-pod requests for a specific IP or MAC, from the three places CONVENTIONS
// defines: `runtimeConfig` (capabilities "ips" / "mac"), `args.cni` in the
// config, and CNI_ARGS (`IP=`, `MAC=`; deprecated).
//
// Precedence: runtimeConfig > args.cni > CNI_ARGS — the most structured,
// runtime-filled source wins, and the first non-empty one is used whole (no
// union). CONVENTIONS marks CNI_ARGS deprecated in favour of `args`, and the
// reference plugins apply the sources in this order, each overriding the last
// (static IPAM for ips; tuning and bridge for mac). Only the winning source is
// validated: the others are ignored, as optional metadata may be.
// Errors are code 7 and name the source, e.g. `runtimeConfig.ips[1]: invalid value "x" (...)`.
import { isIP } from '../util/ip.js';
import { invalidField } from './errors.js';
import type { CniEnv } from './env.js';
import type { NetConf } from './config.js';

export type RequestSource = 'runtimeConfig' | 'args' | 'CNI_ARGS';

export interface IpRequest {
  /** Bare addresses (any prefix stripped), deduplicated, in the given order. */
  ips: string[];
  source: RequestSource;
}

export interface MacRequest {
  /** Lower-case, colon-separated. */
  mac: string;
  source: RequestSource;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** `args.cni`, if the config has one. */
function cniArgs(conf: Pick<NetConf, 'args'>): Record<string, unknown> | undefined {
  const a = conf.args?.cni;
  return isObject(a) ? a : undefined;
}

const IP_EXPECTED = 'an IPv4 or IPv6 address, optionally with a prefix length such as /24';

/** "10.1.2.3" or "10.1.2.3/24" -> "10.1.2.3"; throws naming `path`. */
function normaliseIp(v: unknown, path: string): string {
  if (typeof v !== 'string') throw invalidField(path, v, IP_EXPECTED);
  const s = v.trim();
  const slash = s.indexOf('/');
  const addr = slash >= 0 ? s.slice(0, slash) : s;
  const fam = isIP(addr);
  if (fam === 0) throw invalidField(path, v, IP_EXPECTED);
  if (slash >= 0) {
    const p = s.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p) || Number(p) > (fam === 4 ? 32 : 128)) throw invalidField(path, v, IP_EXPECTED);
  }
  return addr.toLowerCase();
}

function ipList(v: unknown, path: string): string[] {
  if (!Array.isArray(v)) throw invalidField(path, v, `a list of IP addresses`);
  return dedupe(v.map((x, i) => normaliseIp(x, `${path}[${i}]`)));
}

function dedupe(list: string[]): string[] {
  return [...new Set(list)];
}

function present(v: unknown): boolean {
  if (v === undefined || v === null || v === '') return false;
  if (Array.isArray(v) && v.length === 0) return false;
  return true;
}

/** The IPs requested for this attachment, with where they came from; undefined if none were. */
export function requestedIpsWithSource(conf: Pick<NetConf, 'args' | 'runtimeConfig'>, env: Pick<CniEnv, 'args'>): IpRequest | undefined {
  const rc = conf.runtimeConfig?.ips;
  if (present(rc)) return { ips: ipList(rc, 'runtimeConfig.ips'), source: 'runtimeConfig' };
  const a = cniArgs(conf)?.ips;
  if (present(a)) return { ips: ipList(a, 'args.cni.ips'), source: 'args' };
  const e = env.args.IP;
  if (present(e)) {
    const items = e!.split(',');
    return {
      ips: dedupe(items.map((x, i) => normaliseIp(x, items.length > 1 ? `CNI_ARGS IP[${i}]` : 'CNI_ARGS IP'))),
      source: 'CNI_ARGS',
    };
  }
  return undefined;
}

const MAC_EXPECTED = 'a unicast MAC address like 0a:58:0a:f4:01:05';

/** Validates and normalises a MAC; rejects multicast/broadcast (the kernel refuses them on an interface). */
export function normaliseMac(v: unknown, path: string): string {
  if (typeof v !== 'string') throw invalidField(path, v, MAC_EXPECTED);
  const s = v.trim();
  if (!/^[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}$/.test(s)) throw invalidField(path, v, MAC_EXPECTED);
  if (parseInt(s.slice(0, 2), 16) & 1) throw invalidField(path, v, MAC_EXPECTED);
  return s.toLowerCase();
}

/** The MAC requested for the pod interface, with where it came from; undefined if none was. */
export function requestedMacWithSource(conf: Pick<NetConf, 'args' | 'runtimeConfig'>, env: Pick<CniEnv, 'args'>): MacRequest | undefined {
  const rc = conf.runtimeConfig?.mac;
  if (present(rc)) return { mac: normaliseMac(rc, 'runtimeConfig.mac'), source: 'runtimeConfig' };
  const a = cniArgs(conf)?.mac;
  if (present(a)) return { mac: normaliseMac(a, 'args.cni.mac'), source: 'args' };
  const e = env.args.MAC;
  if (present(e)) return { mac: normaliseMac(e, 'CNI_ARGS MAC'), source: 'CNI_ARGS' };
  return undefined;
}

/** The requested IPs (bare addresses), [] if none. */
export function requestedIps(conf: Pick<NetConf, 'args' | 'runtimeConfig'>, env: Pick<CniEnv, 'args'>): string[] {
  return requestedIpsWithSource(conf, env)?.ips ?? [];
}

/** The requested MAC (lower-case), undefined if none. */
export function requestedMac(conf: Pick<NetConf, 'args' | 'runtimeConfig'>, env: Pick<CniEnv, 'args'>): string | undefined {
  return requestedMacWithSource(conf, env)?.mac;
}
