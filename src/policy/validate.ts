// NetworkPolicy validation: the checks the API server makes (networking/validation:
// ValidateNetworkPolicySpec, ValidateNetworkPolicyPort/Peer, ValidateIPBlock) plus the
// structural checks a manifest directory needs (objects there never went through the
// API server). Every problem names its field path and value, e.g.
//   spec.ingress[0].from[1].ipBlock.except[0]: "10.1.0.0/16" is not inside cidr "10.0.0.0/16"
// An invalid policy is skipped as a whole by the evaluator (and the compiler), with
// these reasons, and never disturbs the other policies.
import { isIPv4, isIPv6 } from 'node:net';
import { ipToBytes, bytesToIp, type Family } from '../util/ip.js';
import { validateSelector } from './selector.js';

export const PROTOCOLS = ['TCP', 'UDP', 'SCTP'] as const;
export const POLICY_TYPES = ['Ingress', 'Egress'] as const;

const q = (v: unknown): string => JSON.stringify(v);
const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

// ---------------------------------------------------------------------------------
// CIDRs

/** A parsed CIDR: network bytes with host bits cleared. */
export interface IpNet {
  family: Family;
  /** Network-order bytes of the network address (4 or 16). */
  bytes: Uint8Array;
  prefix: number;
  /** Canonical text ("10.0.0.0/8", "fd00::/64"). */
  text: string;
}

export interface ParsedCidr {
  net: IpNet;
  /** The text had bits set after the prefix ("10.0.0.1/8"): accepted, masked. */
  hostBits: boolean;
}

/** Parses an IP address (no zone) into family and bytes, or undefined. */
export function parseIp(s: string): { family: Family; bytes: Uint8Array } | undefined {
  if (typeof s !== 'string') return undefined;
  if (isIPv4(s)) return { family: 4, bytes: ipToBytes(s) };
  if (isIPv6(s) && !s.includes('%')) return { family: 6, bytes: ipToBytes(s) };
  return undefined;
}

/**
 * Parses "addr/prefix". Returns the problem as a string when invalid. Host bits are
 * accepted and cleared (see docs/policy.md: the API server accepted them for years and
 * every implementation, like Go's net.ParseCIDR, uses the masked network).
 */
export function parseCidr(s: unknown): ParsedCidr | string {
  if (typeof s !== 'string' || s === '') return 'must be a CIDR such as "10.0.0.0/8" or "fd00::/64"';
  const m = /^([^/]+)\/(\d{1,3})$/.exec(s);
  if (!m) return 'is not a valid CIDR (expected address/prefix-length)';
  const ip = parseIp(m[1]!);
  if (!ip) return `is not a valid CIDR: ${q(m[1])} is not an IP address`;
  if (m[2]!.length > 1 && m[2]!.startsWith('0')) return 'is not a valid CIDR: the prefix length has a leading zero';
  const prefix = Number(m[2]);
  const max = ip.family === 4 ? 32 : 128;
  if (prefix > max) return `is not a valid CIDR: prefix length ${prefix} is out of range for IPv${ip.family} (0-${max})`;
  const bytes = Uint8Array.from(ip.bytes);
  let hostBits = false;
  for (let i = 0; i < bytes.length; i++) {
    const keep = Math.max(0, Math.min(8, prefix - i * 8));
    const mask = (0xff << (8 - keep)) & 0xff;
    if ((bytes[i]! & ~mask & 0xff) !== 0) hostBits = true;
    bytes[i] = bytes[i]! & mask;
  }
  return { net: { family: ip.family, bytes, prefix, text: `${bytesToIp(bytes)}/${prefix}` }, hostBits };
}

/** True when the address (bytes of the same family) is inside the network. */
export function netContains(net: IpNet, family: Family, bytes: Uint8Array): boolean {
  if (family !== net.family) return false;
  let bits = net.prefix;
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if ((bytes[i]! & mask) !== net.bytes[i]) return false;
  }
  return true;
}

/** True when `inner` is a strict subset of `outer` (same family, longer prefix, inside). */
export function netStrictlyInside(inner: IpNet, outer: IpNet): boolean {
  return inner.family === outer.family && inner.prefix > outer.prefix && netContains(outer, inner.family, inner.bytes);
}

// ---------------------------------------------------------------------------------
// Ports

/** Why a named port is not an IANA_SVC_NAME, or undefined. */
export function portNameProblem(name: string): string | undefined {
  if (name.length === 0) return 'must not be empty';
  if (name.length > 15) return 'must be no more than 15 characters';
  if (!/^[-a-z0-9]+$/.test(name)) return 'must contain only lowercase alphanumerics and "-"';
  if (!/[a-z]/.test(name)) return 'must contain at least one letter (a numeric port must be given as a number, not a string)';
  if (name.includes('--')) return 'must not contain consecutive "-"';
  if (name.startsWith('-') || name.endsWith('-')) return 'must not begin or end with "-"';
  return undefined;
}

const validPortNumber = (n: unknown): n is number => typeof n === 'number' && Number.isInteger(n) && n >= 1 && n <= 65535;

function validatePort(port: unknown, path: string, errors: string[]): void {
  if (!isRecord(port)) {
    errors.push(`${path}: must be an object {protocol, port, endPort}, got ${q(port)}`);
    return;
  }
  if (port.protocol !== undefined && port.protocol !== null && !(PROTOCOLS as readonly unknown[]).includes(port.protocol)) {
    errors.push(`${path}.protocol: unsupported protocol ${q(port.protocol)} (TCP, UDP, SCTP)`);
  }
  const p = port.port;
  const end = port.endPort;
  const hasEnd = end !== undefined && end !== null;
  if (hasEnd && !validPortNumber(end)) errors.push(`${path}.endPort: ${q(end)} is not a valid port number (an integer 1-65535)`);
  if (p === undefined || p === null) {
    if (hasEnd) errors.push(`${path}.endPort: ${q(end)} may not be specified without port`);
    return;
  }
  if (typeof p === 'number') {
    if (!validPortNumber(p)) errors.push(`${path}.port: ${q(p)} is not a valid port number (an integer 1-65535)`);
    else if (hasEnd && validPortNumber(end) && end < p) errors.push(`${path}.endPort: ${end} must be greater than or equal to port ${p}`);
  } else if (typeof p === 'string') {
    const prob = portNameProblem(p);
    if (prob) errors.push(`${path}.port: ${q(p)} is not a valid port name: ${prob}`);
    if (hasEnd) errors.push(`${path}.endPort: ${q(end)} may not be specified when port is a named port (${q(p)})`);
  } else {
    errors.push(`${path}.port: must be a port number or name, got ${q(p)}`);
  }
}

// ---------------------------------------------------------------------------------
// Peers

function validateIpBlock(b: unknown, path: string, errors: string[], warnings: string[]): void {
  if (!isRecord(b)) {
    errors.push(`${path}: must be an object {cidr, except}, got ${q(b)}`);
    return;
  }
  const parsed = parseCidr(b.cidr);
  if (typeof parsed === 'string') {
    errors.push(b.cidr === undefined || b.cidr === '' ? `${path}.cidr: required` : `${path}.cidr: ${q(b.cidr)} ${parsed}`);
  } else if (parsed.hostBits) {
    warnings.push(`${path}.cidr: ${q(b.cidr)} has host bits set; it is treated as ${q(parsed.net.text)}`);
  }
  if (b.except === undefined || b.except === null) return;
  if (!Array.isArray(b.except)) {
    errors.push(`${path}.except: must be a list of CIDRs, got ${q(b.except)}`);
    return;
  }
  b.except.forEach((e: unknown, i) => {
    const ep = `${path}.except[${i}]`;
    const pe = parseCidr(e);
    if (typeof pe === 'string') {
      errors.push(`${ep}: ${q(e)} ${pe}`);
      return;
    }
    if (pe.hostBits) warnings.push(`${ep}: ${q(e)} has host bits set; it is treated as ${q(pe.net.text)}`);
    if (typeof parsed === 'string') return;
    if (pe.net.family !== parsed.net.family) {
      errors.push(`${ep}: ${q(e)} is IPv${pe.net.family} but cidr ${q(b.cidr)} is IPv${parsed.net.family}`);
    } else if (!netContains(parsed.net, pe.net.family, pe.net.bytes) || pe.net.prefix < parsed.net.prefix) {
      errors.push(`${ep}: ${q(e)} is not inside cidr ${q(b.cidr)}`);
    } else if (pe.net.prefix === parsed.net.prefix) {
      errors.push(`${ep}: ${q(e)} is not strictly inside cidr ${q(b.cidr)} (an except must be a strict subset of its cidr)`);
    }
  });
}

function validatePeer(peer: unknown, path: string, errors: string[], warnings: string[]): void {
  if (!isRecord(peer)) {
    errors.push(`${path}: must be an object {podSelector, namespaceSelector, ipBlock}, got ${q(peer)}`);
    return;
  }
  let n = 0;
  for (const f of Object.keys(peer)) {
    if (f !== 'podSelector' && f !== 'namespaceSelector' && f !== 'ipBlock') errors.push(`${path}: unknown field ${q(f)} (podSelector, namespaceSelector, ipBlock)`);
  }
  if (peer.podSelector !== undefined && peer.podSelector !== null) {
    n++;
    errors.push(...validateSelector(peer.podSelector, `${path}.podSelector`));
  }
  if (peer.namespaceSelector !== undefined && peer.namespaceSelector !== null) {
    n++;
    errors.push(...validateSelector(peer.namespaceSelector, `${path}.namespaceSelector`));
  }
  const hasIpBlock = peer.ipBlock !== undefined && peer.ipBlock !== null;
  if (hasIpBlock) {
    n++;
    validateIpBlock(peer.ipBlock, `${path}.ipBlock`, errors, warnings);
  }
  if (n === 0) errors.push(`${path}: must specify a peer (podSelector, namespaceSelector or ipBlock)`);
  else if (n > 1 && hasIpBlock) errors.push(`${path}: may not specify both ipBlock and another peer`);
}

function validateRules(rules: unknown, dir: 'ingress' | 'egress', errors: string[], warnings: string[]): void {
  if (rules === undefined || rules === null) return;
  const path = `spec.${dir}`;
  if (!Array.isArray(rules)) {
    errors.push(`${path}: must be a list of rules, got ${q(rules)}`);
    return;
  }
  const peersField = dir === 'ingress' ? 'from' : 'to';
  rules.forEach((rule: unknown, i) => {
    const rp = `${path}[${i}]`;
    if (!isRecord(rule)) {
      errors.push(`${rp}: must be an object {${peersField}, ports}, got ${q(rule)}`);
      return;
    }
    for (const f of Object.keys(rule)) {
      if (f !== peersField && f !== 'ports') errors.push(`${rp}: unknown field ${q(f)} (${peersField}, ports)`);
    }
    const ports = rule.ports;
    if (ports !== undefined && ports !== null) {
      if (!Array.isArray(ports)) errors.push(`${rp}.ports: must be a list, got ${q(ports)}`);
      else ports.forEach((p: unknown, j) => validatePort(p, `${rp}.ports[${j}]`, errors));
    }
    const peers = rule[peersField];
    if (peers !== undefined && peers !== null) {
      if (!Array.isArray(peers)) errors.push(`${rp}.${peersField}: must be a list, got ${q(peers)}`);
      else peers.forEach((p: unknown, j) => validatePeer(p, `${rp}.${peersField}[${j}]`, errors, warnings));
    }
  });
}

export interface PolicyCheck {
  /** The policy is invalid and must be skipped whole. */
  errors: string[];
  /** Accepted, but worth telling the user (host bits, rules ignored by policyTypes). */
  warnings: string[];
}

/** Validates a NetworkPolicy object; errors and warnings name the field path and value. */
export function checkPolicy(p: unknown): PolicyCheck {
  const errors: string[] = [];
  const warnings: string[] = [];
  if (!isRecord(p)) return { errors: [`policy: must be an object, got ${q(p)}`], warnings };
  const meta = p.metadata;
  if (!isRecord(meta) || typeof meta.name !== 'string' || meta.name === '') errors.push('metadata.name: required');
  else if (meta.namespace !== undefined && typeof meta.namespace !== 'string') errors.push(`metadata.namespace: must be a string, got ${q(meta.namespace)}`);
  const spec = p.spec;
  if (!isRecord(spec)) {
    errors.push(spec === undefined ? 'spec: required' : `spec: must be an object, got ${q(spec)}`);
    return { errors, warnings };
  }
  // podSelector is a non-pointer in the Go type: absent decodes as {} (every pod).
  errors.push(...validateSelector(spec.podSelector, 'spec.podSelector'));
  validateRules(spec.ingress, 'ingress', errors, warnings);
  validateRules(spec.egress, 'egress', errors, warnings);

  const types = spec.policyTypes;
  if (types !== undefined && types !== null) {
    if (!Array.isArray(types)) errors.push(`spec.policyTypes: must be a list (Ingress, Egress), got ${q(types)}`);
    else if (types.length > 2) errors.push(`spec.policyTypes: may not specify more than two policyTypes, got ${q(types)}`);
    else {
      types.forEach((t: unknown, i) => {
        if (!(POLICY_TYPES as readonly unknown[]).includes(t)) errors.push(`spec.policyTypes[${i}]: unsupported policy type ${q(t)} (Ingress, Egress)`);
      });
      if (types.length > 0 && errors.length === 0) {
        if (!types.includes('Ingress') && Array.isArray(spec.ingress) && spec.ingress.length > 0) {
          warnings.push('spec.ingress: ignored: policyTypes does not include "Ingress"');
        }
        if (!types.includes('Egress') && Array.isArray(spec.egress) && spec.egress.length > 0) {
          warnings.push('spec.egress: ignored: policyTypes does not include "Egress"');
        }
      }
    }
  }
  return { errors, warnings };
}

/** The reasons a policy is invalid (empty when it is valid). */
export function validatePolicy(p: unknown): string[] {
  return checkPolicy(p).errors;
}
