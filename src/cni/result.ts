// CNI results. One internal model (the 1.1.0 shape) parsed from any supported
// version and printed in exactly the shape of a target version:
//   0.3.0, 0.3.1, 0.4.0  ips[] carry "version" ("4"/"6"); interfaces {name, mac, sandbox}; routes {dst, gw}
//   1.0.0                no ips[].version; same interface and route fields
//   1.1.0                adds interfaces[].mtu/socketPath/pciID and routes[].mtu/advmss/priority/table/scope
// Output follows libcni's JSON: empty interfaces/ips/routes are omitted, `dns`
// is always present (possibly {}), optional fields are omitted when unset.
import { isIP } from '../util/ip.js';
import { CniError, ErrorCode, decodeFailure, invalidField, missingField } from './errors.js';
import { isLegacyResultVersion, isSupportedVersion, SUPPORTED_VERSIONS, compareVersions } from './version.js';

export interface CniInterface {
  name: string;
  mac?: string;
  /** 1.1.0 */
  mtu?: number;
  sandbox?: string;
  /** 1.1.0 */
  socketPath?: string;
  /** 1.1.0 */
  pciID?: string;
}

export interface CniIPConfig {
  /** Address with prefix, e.g. 10.1.2.3/24. */
  address: string;
  gateway?: string;
  /** Index into interfaces. */
  interface?: number;
}

export interface CniRoute {
  dst: string;
  gw?: string;
  /** 1.1.0 */
  mtu?: number;
  /** 1.1.0 */
  advmss?: number;
  /** 1.1.0 */
  priority?: number;
  /** 1.1.0 */
  table?: number;
  /** 1.1.0 */
  scope?: number;
}

export interface CniDns {
  nameservers?: string[];
  domain?: string;
  search?: string[];
  options?: string[];
}

export interface CniResult {
  /** The version this result was parsed from (or is meant for). */
  cniVersion: string;
  interfaces: CniInterface[];
  ips: CniIPConfig[];
  routes: CniRoute[];
  dns: CniDns;
}

/**
 * A result as callers may build it (fields optional). Everything that prints or
 * merges accepts this; parseResult always returns the complete CniResult.
 */
export interface Result {
  cniVersion: string;
  interfaces?: CniInterface[];
  ips: CniIPConfig[];
  routes?: CniRoute[];
  dns?: CniDns;
}

export function emptyResult(cniVersion = '1.1.0'): CniResult {
  return { cniVersion, interfaces: [], ips: [], routes: [], dns: {} };
}

// ---- small validators (dependency-free on purpose: this runs per pod) ----

export function isCidr(s: unknown): s is string {
  if (typeof s !== 'string') return false;
  const slash = s.indexOf('/');
  if (slash < 0) return false;
  const fam = isIP(s.slice(0, slash));
  if (fam === 0) return false;
  const p = s.slice(slash + 1);
  if (!/^\d{1,3}$/.test(p)) return false;
  return Number(p) <= (fam === 4 ? 32 : 128);
}

export function ipFamily(addressOrCidr: string): 4 | 6 {
  const ip = addressOrCidr.split('/')[0]!;
  return isIP(ip) === 6 ? 6 : 4;
}

const MAC_RE = /^[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}$/;
export function isMac(s: unknown): s is string {
  return typeof s === 'string' && MAC_RE.test(s);
}

// ---- parsing ----

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function optString(obj: Record<string, unknown>, key: string, path: string): string | undefined {
  const v = obj[key];
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string') throw invalidField(`${path}.${key}`, v, 'a string');
  return v;
}

function optInt(obj: Record<string, unknown>, key: string, path: string, min: number, max: number): number | undefined {
  const v = obj[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw invalidField(`${path}.${key}`, v, `an integer from ${min} to ${max}`);
  }
  return v;
}

function optStringList(obj: Record<string, unknown>, key: string, path: string): string[] | undefined {
  const v = obj[key];
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw invalidField(`${path}.${key}`, v, 'a list of strings');
  return v.length > 0 ? [...(v as string[])] : undefined;
}

/** Parses a `dns` object (shared with the network config's `dns`). */
export function parseDns(v: unknown, path = 'dns'): CniDns {
  if (v === undefined || v === null) return {};
  if (!isObject(v)) throw invalidField(path, v, 'an object');
  const dns: CniDns = {};
  const nameservers = optStringList(v, 'nameservers', path);
  if (nameservers) {
    nameservers.forEach((ns, i) => {
      if (isIP(ns) === 0) throw invalidField(`${path}.nameservers[${i}]`, ns, 'an IPv4 or IPv6 address');
    });
    dns.nameservers = nameservers;
  }
  const domain = optString(v, 'domain', path);
  if (domain !== undefined) dns.domain = domain;
  const search = optStringList(v, 'search', path);
  if (search) dns.search = search;
  const options = optStringList(v, 'options', path);
  if (options) dns.options = options;
  return dns;
}

const U32 = 0xffffffff;

/**
 * Parses a result in any supported version. `json` may be a string/Buffer
 * (decode errors are code 6) or an already-decoded value. The result's own
 * `cniVersion` wins; `fallbackVersion` is used when it has none (libcni does the
 * same for delegated plugins). Shape errors are code 7 and name the field path,
 * prefixed with `what` (e.g. "prevResult").
 */
export function parseResult(json: unknown, fallbackVersion?: string, what = 'result'): CniResult {
  let v = json;
  if (typeof v === 'string' || Buffer.isBuffer(v)) {
    try {
      v = JSON.parse(v.toString());
    } catch (e) {
      throw decodeFailure(what, e);
    }
  }
  if (!isObject(v)) throw invalidField(what, v, 'a JSON object');
  // An empty cniVersion is no version (libcni's fixupResultVersion: "not present or empty").
  const version = v.cniVersion === '' ? fallbackVersion : (v.cniVersion ?? fallbackVersion);
  if (version === undefined || version === '') throw missingField(`${what}.cniVersion`, 'the result\'s CNI version');
  if (!isSupportedVersion(version)) {
    throw new CniError(
      ErrorCode.IncompatibleVersion,
      `${what}.cniVersion: incompatible CNI version ${JSON.stringify(version)}`,
      `supported versions: ${SUPPORTED_VERSIONS.join(', ')}`,
    );
  }
  const legacy = isLegacyResultVersion(version);
  const result = emptyResult(version);

  const ifaces = v.interfaces;
  if (ifaces !== undefined && ifaces !== null) {
    if (!Array.isArray(ifaces)) throw invalidField(`${what}.interfaces`, ifaces, 'a list');
    ifaces.forEach((raw, i) => {
      const p = `${what}.interfaces[${i}]`;
      if (!isObject(raw)) throw invalidField(p, raw, 'an object');
      if (typeof raw.name !== 'string' || raw.name === '') throw invalidField(`${p}.name`, raw.name, 'a non-empty string');
      const iface: CniInterface = { name: raw.name };
      const mac = optString(raw, 'mac', p);
      if (mac !== undefined) iface.mac = mac;
      const mtu = optInt(raw, 'mtu', p, 0, U32);
      if (mtu) iface.mtu = mtu;
      const sandbox = optString(raw, 'sandbox', p);
      if (sandbox !== undefined) iface.sandbox = sandbox;
      const socketPath = optString(raw, 'socketPath', p);
      if (socketPath !== undefined) iface.socketPath = socketPath;
      const pciID = optString(raw, 'pciID', p);
      if (pciID !== undefined) iface.pciID = pciID;
      result.interfaces.push(iface);
    });
  }

  const ips = v.ips;
  if (ips !== undefined && ips !== null) {
    if (!Array.isArray(ips)) throw invalidField(`${what}.ips`, ips, 'a list');
    ips.forEach((raw, i) => {
      const p = `${what}.ips[${i}]`;
      if (!isObject(raw)) throw invalidField(p, raw, 'an object');
      if (!isCidr(raw.address)) throw invalidField(`${p}.address`, raw.address, 'an IP address with prefix length, e.g. 10.1.2.3/24');
      const ip: CniIPConfig = { address: raw.address };
      const fam = ipFamily(raw.address);
      if (legacy && raw.version !== undefined) {
        if (raw.version !== '4' && raw.version !== '6') throw invalidField(`${p}.version`, raw.version, '"4" or "6"');
        if (raw.version !== String(fam)) {
          throw invalidField(`${p}.version`, raw.version, `"${fam}", the family of ${raw.address}`);
        }
      }
      const gw = optString(raw, 'gateway', p);
      if (gw !== undefined) {
        if (isIP(gw) !== fam) throw invalidField(`${p}.gateway`, gw, `an IPv${fam} address (the family of ${raw.address})`);
        ip.gateway = gw;
      }
      if (raw.interface !== undefined && raw.interface !== null) {
        const idx = raw.interface;
        if (typeof idx !== 'number' || !Number.isInteger(idx) || idx < 0 || idx >= result.interfaces.length) {
          throw invalidField(
            `${p}.interface`,
            idx,
            result.interfaces.length > 0
              ? `an index into interfaces, 0 to ${result.interfaces.length - 1}`
              : 'no index: the result has no interfaces',
          );
        }
        ip.interface = idx;
      }
      result.ips.push(ip);
    });
  }

  const routes = v.routes;
  if (routes !== undefined && routes !== null) {
    if (!Array.isArray(routes)) throw invalidField(`${what}.routes`, routes, 'a list');
    routes.forEach((raw, i) => {
      const p = `${what}.routes[${i}]`;
      if (!isObject(raw)) throw invalidField(p, raw, 'an object');
      if (!isCidr(raw.dst)) throw invalidField(`${p}.dst`, raw.dst, 'a destination in CIDR form, e.g. 0.0.0.0/0');
      const route: CniRoute = { dst: raw.dst };
      const gw = optString(raw, 'gw', p);
      if (gw !== undefined) {
        if (isIP(gw) === 0) throw invalidField(`${p}.gw`, gw, 'an IP address');
        route.gw = gw;
      }
      const mtu = optInt(raw, 'mtu', p, 0, U32);
      if (mtu) route.mtu = mtu;
      const advmss = optInt(raw, 'advmss', p, 0, U32);
      if (advmss) route.advmss = advmss;
      const priority = optInt(raw, 'priority', p, 0, U32);
      if (priority) route.priority = priority;
      const table = optInt(raw, 'table', p, 0, U32);
      if (table !== undefined) route.table = table;
      const scope = optInt(raw, 'scope', p, 0, 255);
      if (scope !== undefined) route.scope = scope;
      result.routes.push(route);
    });
  }

  result.dns = parseDns(v.dns, `${what}.dns`);
  return result;
}

// ---- formatting ----

/**
 * The result as the target version prints it. Fields the target version lacks
 * are dropped (1.1.0-only interface and route fields for older targets);
 * `ips[].version` is added for targets before 1.0.0.
 */
export function formatResult(result: Result, targetVersion: string): Record<string, unknown> {
  if (!isSupportedVersion(targetVersion)) {
    throw new CniError(
      ErrorCode.IncompatibleVersion,
      `cannot convert result to CNI version ${JSON.stringify(targetVersion)}`,
      `supported versions: ${SUPPORTED_VERSIONS.join(', ')}`,
    );
  }
  const legacy = isLegacyResultVersion(targetVersion);
  const v11 = compareVersions(targetVersion, '1.1.0') >= 0;
  const out: Record<string, unknown> = { cniVersion: targetVersion };
  const interfaces = result.interfaces ?? [];
  const ips = result.ips ?? [];
  const routes = result.routes ?? [];
  const rdns = result.dns ?? {};

  if (interfaces.length > 0) {
    out.interfaces = interfaces.map((i) => {
      const o: Record<string, unknown> = { name: i.name };
      if (i.mac) o.mac = i.mac;
      if (v11 && i.mtu) o.mtu = i.mtu;
      if (i.sandbox) o.sandbox = i.sandbox;
      if (v11 && i.socketPath) o.socketPath = i.socketPath;
      if (v11 && i.pciID) o.pciID = i.pciID;
      return o;
    });
  }
  if (ips.length > 0) {
    out.ips = ips.map((ip) => {
      const o: Record<string, unknown> = {};
      if (legacy) o.version = String(ipFamily(ip.address));
      o.address = ip.address;
      if (ip.gateway) o.gateway = ip.gateway;
      if (ip.interface !== undefined) o.interface = ip.interface;
      return o;
    });
  }
  if (routes.length > 0) {
    out.routes = routes.map((r) => {
      const o: Record<string, unknown> = { dst: r.dst };
      if (r.gw) o.gw = r.gw;
      if (v11) {
        if (r.mtu) o.mtu = r.mtu;
        if (r.advmss) o.advmss = r.advmss;
        if (r.priority) o.priority = r.priority;
        if (r.table !== undefined) o.table = r.table;
        if (r.scope !== undefined) o.scope = r.scope;
      }
      return o;
    });
  }
  const dns: Record<string, unknown> = {};
  if (rdns.nameservers?.length) dns.nameservers = [...rdns.nameservers];
  if (rdns.domain) dns.domain = rdns.domain;
  if (rdns.search?.length) dns.search = [...rdns.search];
  if (rdns.options?.length) dns.options = [...rdns.options];
  out.dns = dns;
  return out;
}

/** formatResult as the exact text to print on stdout. */
export function stringifyResult(result: Result, targetVersion: string): string {
  return JSON.stringify(formatResult(result, targetVersion));
}

// ---- merging (chained plugins, IPAM output) ----

export interface ResultAddition {
  /** Our interfaces, appended after the previous ones. */
  interfaces?: CniInterface[];
  /** Our IPs; `interface` indexes into `interfaces` above (not the merged list). */
  ips?: CniIPConfig[];
  routes?: CniRoute[];
  /** Replaces prev.dns when it has any content. */
  dns?: CniDns;
}

/**
 * Amends a previous result (a chained plugin's output): appends our
 * interfaces, IPs (their `interface` indices shifted past the previous
 * interfaces) and routes. The previous result is not modified.
 */
export function amendResult(prev: Result, add: ResultAddition): CniResult {
  const prevIfaces = prev.interfaces ?? [];
  const base = prevIfaces.length;
  const ours = add.interfaces ?? [];
  const out: CniResult = {
    cniVersion: prev.cniVersion,
    interfaces: [...prevIfaces.map((i) => ({ ...i })), ...ours.map((i) => ({ ...i }))],
    ips: (prev.ips ?? []).map((ip) => ({ ...ip })),
    routes: [...(prev.routes ?? []).map((r) => ({ ...r })), ...(add.routes ?? []).map((r) => ({ ...r }))],
    dns: { ...(prev.dns ?? {}) },
  };
  for (const ip of add.ips ?? []) {
    const copy: CniIPConfig = { ...ip };
    if (ip.interface !== undefined) {
      if (!Number.isInteger(ip.interface) || ip.interface < 0 || ip.interface >= ours.length) {
        throw new CniError(
          ErrorCode.PluginSpecific,
          `amendResult: ip ${ip.address} points at interface ${ip.interface}, but only ${ours.length} interface(s) are added`,
        );
      }
      copy.interface = ip.interface + base;
    }
    out.ips.push(copy);
  }
  const dns = add.dns;
  if (dns && (dns.nameservers?.length || dns.domain || dns.search?.length || dns.options?.length)) out.dns = { ...dns };
  return out;
}

/**
 * Points every IP of an IPAM result at one interface (IPAM plugins don't know
 * interfaces; the main plugin fills the index in). Returns a copy.
 */
export function assignInterface(ipam: Result, index: number): CniIPConfig[] {
  return (ipam.ips ?? []).map((ip) => ({ ...ip, interface: index }));
}
