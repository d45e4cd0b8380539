// The lab's wiring, all of it inside network namespaces the lab creates (nothing in
// the root namespace):
//
//   <prefix><lab>-sw    the switch: bridge br0 (172.31.0.254/24, the nodes' default gateway)
//   <prefix><lab>-nK    node K: eth0 (veth, MTU 1500) <-> port pK on br0; 172.31.0.K/24;
//                       lo up; ip_forward on (inside the node namespace only)
//
// Namespace names are derived, so `destroyLab` can sweep every `<prefix><lab>-*`
// namespace even after a crash lost the state file.
import { execFileSync } from 'node:child_process';
import { familyOf, ipToBytes, bytesToIp, parseCidr, networkOf } from '../util/ip.js';

export const LAB_PREFIX = 'skl-';
export const SWITCH_BRIDGE = 'br0';
export const UNDERLAY_IF = 'eth0';
export const DEFAULT_UNDERLAY = '172.31.0.0/24';

/** Lab names become namespace-name infixes: no "-", so one lab's sweep never matches another's. */
export function checkLabName(name: string): string {
  if (!/^[a-z0-9]{1,16}$/.test(name)) throw new Error(`lab name: invalid value ${JSON.stringify(name)} (1-16 lowercase letters or digits, no "-")`);
  return name;
}

export interface NodeWiring {
  /** Node name ("node1"). */
  name: string;
  index: number;
  ns: string;
  nsPath: string;
  underlayIp: string;
  underlayPrefix: number;
  underlayIf: string;
  switchPort: string;
}

export interface Topology {
  lab: string;
  prefix: string;
  switchNs: string;
  gateway: string;
  underlayCidr: string;
  mtu: number;
  nodes: NodeWiring[];
}

export const nsPathOf = (ns: string) => `/var/run/netns/${ns}`;
export const switchNsName = (prefix: string, lab: string) => `${prefix}${lab}-sw`;
export const nodeNsName = (prefix: string, lab: string, index: number) => `${prefix}${lab}-n${index}`;

function ip(args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Runs a command inside a namespace (ip netns exec). */
export function nsRun(ns: string, cmd: string[]): string {
  return execFileSync('ip', ['netns', 'exec', ns, ...cmd], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

export function listNetns(): string[] {
  return ip(['netns', 'list'])
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0]!)
    .filter(Boolean);
}

/** The K-th host address of the underlay CIDR (K >= 1). */
export function underlayAddress(cidr: string, k: number): string {
  const c = parseCidr(cidr);
  if (c.family !== 4) throw new Error(`underlay CIDR: invalid value ${JSON.stringify(cidr)} (IPv4 only)`);
  const size = 2 ** (32 - c.prefix);
  if (k < 1 || k >= size - 2) throw new Error(`underlay CIDR ${cidr}: no room for node ${k} (the last address is the switch)`);
  const b = ipToBytes(networkOf(c));
  const n = (b.readUInt32BE(0) + k) >>> 0;
  const out = Buffer.alloc(4);
  out.writeUInt32BE(n);
  return bytesToIp(out);
}

/** The switch's own address: the last usable one of the underlay CIDR. */
export function switchAddress(cidr: string): string {
  const c = parseCidr(cidr);
  const b = ipToBytes(networkOf(c));
  const out = Buffer.alloc(4);
  out.writeUInt32BE((b.readUInt32BE(0) + 2 ** (32 - c.prefix) - 2) >>> 0);
  return bytesToIp(out);
}

export interface TopologyOptions {
  lab: string;
  prefix?: string;
  underlayCidr?: string;
  mtu?: number;
}

/** Creates the switch namespace (idempotent: an existing one is kept). */
export function createSwitch(o: TopologyOptions): Topology {
  const prefix = o.prefix ?? LAB_PREFIX;
  const lab = checkLabName(o.lab);
  const underlayCidr = o.underlayCidr ?? DEFAULT_UNDERLAY;
  if (familyOf(parseCidr(underlayCidr).ip) !== 4) throw new Error(`underlayCIDR: invalid value ${JSON.stringify(underlayCidr)} (IPv4)`);
  const mtu = o.mtu ?? 1500;
  const sw = switchNsName(prefix, lab);
  const gateway = switchAddress(underlayCidr);
  if (!listNetns().includes(sw)) {
    ip(['netns', 'add', sw]);
    try {
      ip(['-n', sw, 'link', 'set', 'lo', 'up']);
      ip(['-n', sw, 'link', 'add', SWITCH_BRIDGE, 'mtu', String(mtu), 'type', 'bridge']);
      ip(['-n', sw, 'addr', 'add', `${gateway}/${parseCidr(underlayCidr).prefix}`, 'dev', SWITCH_BRIDGE]);
      ip(['-n', sw, 'link', 'set', SWITCH_BRIDGE, 'up']);
    } catch (e) {
      deleteNetns(sw);
      throw e;
    }
  }
  return { lab, prefix, switchNs: sw, gateway, underlayCidr, mtu, nodes: [] };
}

/** Adds node K: its namespace and underlay link into the switch. Idempotent per K. */
export function addNode(topo: Topology, index: number, name = `node${index}`): NodeWiring {
  const ns = nodeNsName(topo.prefix, topo.lab, index);
  const port = `p${index}`;
  const prefixLen = parseCidr(topo.underlayCidr).prefix;
  const addr = underlayAddress(topo.underlayCidr, index);
  const wiring: NodeWiring = { name, index, ns, nsPath: nsPathOf(ns), underlayIp: addr, underlayPrefix: prefixLen, underlayIf: UNDERLAY_IF, switchPort: port };
  if (!listNetns().includes(ns)) {
    ip(['netns', 'add', ns]);
    try {
      ip(['-n', ns, 'link', 'set', 'lo', 'up']);
      // Created in the switch namespace with its peer placed straight into the node's.
      ip(['-n', topo.switchNs, 'link', 'add', port, 'mtu', String(topo.mtu), 'type', 'veth', 'peer', 'name', UNDERLAY_IF, 'mtu', String(topo.mtu), 'netns', ns]);
      ip(['-n', topo.switchNs, 'link', 'set', port, 'master', SWITCH_BRIDGE, 'up']);
      ip(['-n', ns, 'addr', 'add', `${addr}/${prefixLen}`, 'dev', UNDERLAY_IF]);
      ip(['-n', ns, 'link', 'set', UNDERLAY_IF, 'up']);
      ip(['-n', ns, 'route', 'add', 'default', 'via', topo.gateway, 'dev', UNDERLAY_IF]);
      // `ip netns exec` runs sysctl inside the node namespace: never the root's.
      nsRun(ns, ['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    } catch (e) {
      deleteNetns(ns);
      throw e;
    }
  }
  topo.nodes = topo.nodes.filter((n) => n.index !== index).concat(wiring).sort((a, b) => a.index - b.index);
  return wiring;
}

export function deleteNetns(ns: string): void {
  try {
    execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
  } catch {
    /* already gone */
  }
}

/** Removes node K's namespace (its veth pair and switch port vanish with it). */
export function removeNode(topo: Topology, index: number): void {
  deleteNetns(nodeNsName(topo.prefix, topo.lab, index));
  topo.nodes = topo.nodes.filter((n) => n.index !== index);
}

/** Every namespace of the lab (switch, nodes, pods), by name. */
export function labNamespaces(prefix: string, lab: string): string[] {
  const p = `${prefix}${checkLabName(lab)}-`;
  return listNetns().filter((n) => n.startsWith(p));
}

/** Removes every `<prefix><lab>-*` namespace. Returns what was removed. */
export function destroyNamespaces(prefix: string, lab: string): string[] {
  const all = labNamespaces(prefix, lab);
  for (const ns of all) deleteNetns(ns);
  return all;
}

/** Labs that exist (by their switch namespace). */
export function existingLabs(prefix = LAB_PREFIX): string[] {
  return listNetns()
    .map((n) => new RegExp(`^${prefix.replace(/[-]/g, '\\-')}([a-z0-9]+)-sw$`).exec(n)?.[1])
    .filter((x): x is string => !!x)
    .sort();
}
