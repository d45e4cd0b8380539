// The agent's configuration: defaults, a YAML/JSON file (`--config`) and flags on
// top. One table describes every field (its dotted key, type, default, help), so
// the file keys, the flags, --help and validation cannot drift apart. Pure: the
// caller reads the file. Every error names the field (or flag) and the value.
import { parse as parseYaml } from 'yaml';
import { networkOf, parseCidr } from '../util/ip.js';

export type Balancing = 'round-robin' | 'random';
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

export interface AgentConfig {
  nodeName: string;
  /** Source: exactly one of manifests / kubeconfig / inCluster. */
  manifests: string;
  kubeconfig: string;
  inCluster: boolean;
  /** The agent's network namespace path when it drives one it does not run in (the lab); "" = its own. */
  netns: string;
  cniConfDir: string;
  cniConfName: string;
  cniBinDir: string;
  clusterCIDR: string;
  serviceCIDR: string;
  clusterDomain: string;
  /** Pod MTU; 0 = derive from the uplink (minus the VXLAN overhead when the overlay is on). */
  mtu: number;
  overlay: { enabled: boolean; vni: number; port: number; device: string; underlayInterface: string };
  masquerade: boolean;
  proxy: { enabled: boolean; balancing: Balancing; minSyncInterval: number; syncPeriod: number };
  /** How the proxy and the policy reconciler program nftables: nf_tables netlink directly (default), or the nft binary. */
  nftables: 'netlink' | 'nft';
  dns: { enabled: boolean; listen: string };
  policy: { enabled: boolean; policyAwareDns: boolean };
  /** Runner timing for reconcilers that have none of their own (ms). */
  sync: { minInterval: number; period: number; backoffInitial: number; backoffMax: number };
  /** host:port for /metrics, /healthz, /readyz; "" disables the server. */
  metricsAddress: string;
  /** /healthz fails when a reconciler has not succeeded for this many sync periods. */
  healthzStaleFactor: number;
  logLevel: LogLevel;
  ipamDataDir: string;
}

export class ConfigError extends Error {
  constructor(
    message: string,
    readonly field?: string,
    readonly value?: unknown,
  ) {
    super(message);
    this.name = 'ConfigError';
  }
}

type FieldType =
  | { t: 'string'; check?: (v: string) => string | undefined }
  | { t: 'bool' }
  | { t: 'int'; min: number; max: number; note?: string }
  | { t: 'number'; min: number }
  | { t: 'duration' }
  | { t: 'enum'; values: readonly string[] };

export interface FieldSpec {
  key: string;
  type: FieldType;
  help: string;
  /** Extra flag names (without "--"). */
  aliases?: string[];
}

const ifname = (v: string) =>
  v === '' || (v.length <= 15 && /^[^\s/:]+$/.test(v) && v !== '.' && v !== '..') ? undefined : 'an interface name (1-15 characters, no "/", ":" or spaces)';
const nonEmpty = (v: string) => (v === '' ? 'a non-empty string' : undefined);
const absPath = (v: string) => (v.startsWith('/') ? undefined : 'an absolute path');
const optPath = (v: string) => (v === '' ? undefined : nonEmpty(v));
const confName = (v: string) =>
  /^[A-Za-z0-9][A-Za-z0-9_.-]*\.(conflist)$/.test(v) ? undefined : 'a file name ending in .conflist (letters, digits, "_", ".", "-")';
const dnsName = (v: string) =>
  v.length <= 253 && /^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/.test(v) ? undefined : 'a DNS name (lowercase letters, digits, "-", ".")';

function cidrProblem(v: string): string | undefined {
  try {
    const c = parseCidr(v);
    if (networkOf(c) !== c.ip) return `a network CIDR (host bits must be zero: ${networkOf(c)}/${c.prefix})`;
    return undefined;
  } catch {
    return 'a CIDR such as 10.244.0.0/16';
  }
}

/** host:port (IPv6 in brackets); port 0..65535. Returns [host, port]. */
export function parseHostPort(v: string): [string, number] | undefined {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(v);
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port > 65535) return undefined;
  return [m[1] ?? m[2] ?? '', port];
}
const hostPort = (v: string) => (parseHostPort(v) ? undefined : 'host:port, e.g. 127.0.0.1:10256 or [::1]:10256');
const optHostPort = (v: string) => (v === '' ? undefined : hostPort(v));

export const FIELDS: readonly FieldSpec[] = [
  { key: 'nodeName', type: { t: 'string', check: dnsName }, help: 'this node\'s name (the Node object); env NODE_NAME', aliases: ['node'] },
  { key: 'manifests', type: { t: 'string', check: optPath }, help: 'source: a directory of YAML manifests, watched' },
  { key: 'kubeconfig', type: { t: 'string', check: optPath }, help: 'source: the Kubernetes API through this kubeconfig' },
  { key: 'inCluster', type: { t: 'bool' }, help: 'source: the Kubernetes API with the in-cluster service account' },
  { key: 'netns', type: { t: 'string', check: (v) => (v === '' ? undefined : absPath(v)) }, help: 'network namespace path to configure (default: the agent\'s own)' },
  { key: 'cniConfDir', type: { t: 'string', check: absPath }, help: 'directory the CNI conflist is written to' },
  { key: 'cniConfName', type: { t: 'string', check: confName }, help: 'file name of the conflist' },
  { key: 'cniBinDir', type: { t: 'string', check: absPath }, help: 'directory holding CNI plugin binaries' },
  { key: 'clusterCIDR', type: { t: 'string', check: cidrProblem }, help: 'the cluster\'s pod network' },
  { key: 'serviceCIDR', type: { t: 'string', check: cidrProblem }, help: 'the cluster\'s service network' },
  { key: 'clusterDomain', type: { t: 'string', check: dnsName }, help: 'the cluster DNS zone' },
  { key: 'mtu', type: { t: 'int', min: 0, max: 65535, note: '0 (auto) or 68 to 65535' }, help: 'pod MTU; 0 = uplink MTU (minus 50 with the overlay)' },
  { key: 'overlay.enabled', type: { t: 'bool' }, help: 'VXLAN overlay between nodes' },
  { key: 'overlay.vni', type: { t: 'int', min: 1, max: 16777215 }, help: 'VXLAN network identifier' },
  { key: 'overlay.port', type: { t: 'int', min: 1, max: 65535 }, help: 'VXLAN UDP port' },
  { key: 'overlay.device', type: { t: 'string', check: ifname }, help: 'VXLAN device name (default skiff.<vni>)' },
  { key: 'overlay.underlayInterface', type: { t: 'string', check: ifname }, help: 'underlay interface (default: that of the default route)' },
  { key: 'masquerade', type: { t: 'bool' }, help: 'masquerade pod traffic leaving the cluster network' },
  { key: 'proxy.enabled', type: { t: 'bool' }, help: 'the nftables service proxy' },
  { key: 'proxy.balancing', type: { t: 'enum', values: ['round-robin', 'random'] }, help: 'endpoint selection per new connection' },
  { key: 'proxy.minSyncInterval', type: { t: 'duration' }, help: 'minimum time between proxy syncs' },
  { key: 'proxy.syncPeriod', type: { t: 'duration' }, help: 'full proxy resync period' },
  { key: 'nftables', type: { t: 'enum', values: ['netlink', 'nft'] }, help: 'how rules reach the kernel: nf_tables netlink batches, or the nft binary' },
  { key: 'dns.enabled', type: { t: 'bool' }, help: 'the node-local cluster DNS server' },
  { key: 'dns.listen', type: { t: 'string', check: hostPort }, help: 'DNS listen address' },
  { key: 'policy.enabled', type: { t: 'bool' }, help: 'NetworkPolicy enforcement' },
  { key: 'policy.policyAwareDns', type: { t: 'bool' }, help: 'DNS answers only names the client may reach' },
  { key: 'sync.minInterval', type: { t: 'duration' }, help: 'minimum time between syncs of other reconcilers' },
  { key: 'sync.period', type: { t: 'duration' }, help: 'full resync period of other reconcilers' },
  { key: 'sync.backoffInitial', type: { t: 'duration' }, help: 'first retry delay after a failed sync (doubles)' },
  { key: 'sync.backoffMax', type: { t: 'duration' }, help: 'maximum retry delay' },
  { key: 'metricsAddress', type: { t: 'string', check: optHostPort }, help: 'address of /metrics, /healthz, /readyz ("" = off)' },
  { key: 'healthzStaleFactor', type: { t: 'number', min: 1 }, help: '/healthz fails after this many sync periods without success' },
  { key: 'logLevel', type: { t: 'enum', values: ['debug', 'info', 'warn', 'error'] }, help: 'log threshold' },
  { key: 'ipamDataDir', type: { t: 'string', check: absPath }, help: 'host-local IPAM state directory' },
];

const BY_KEY = new Map(FIELDS.map((f) => [f.key, f]));

export function defaultConfig(): AgentConfig {
  return {
    nodeName: '',
    manifests: '',
    kubeconfig: '',
    inCluster: false,
    netns: '',
    cniConfDir: '/etc/cni/net.d',
    cniConfName: '10-skiff.conflist',
    cniBinDir: '/opt/cni/bin',
    clusterCIDR: '10.244.0.0/16',
    serviceCIDR: '10.96.0.0/12',
    clusterDomain: 'cluster.local',
    mtu: 0,
    overlay: { enabled: true, vni: 1, port: 8472, device: '', underlayInterface: '' },
    masquerade: true,
    proxy: { enabled: true, balancing: 'round-robin', minSyncInterval: 1000, syncPeriod: 30_000 },
    nftables: 'netlink',
    dns: { enabled: true, listen: '169.254.20.10:53' },
    policy: { enabled: true, policyAwareDns: false },
    sync: { minInterval: 1000, period: 60_000, backoffInitial: 1000, backoffMax: 60_000 },
    metricsAddress: '127.0.0.1:10256',
    healthzStaleFactor: 2,
    logLevel: 'info',
    ipamDataDir: '/var/lib/cni/networks',
  };
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** "1.5s", "500ms", "1m30s" -> ms; a plain number means seconds. Undefined when malformed or not positive. */
export function parseDuration(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isFinite(v) && v > 0 ? Math.round(v * 1000) : undefined;
  if (typeof v !== 'string') return undefined;
  const s = v.trim();
  if (/^\d+(\.\d+)?$/.test(s)) return parseDuration(Number(s));
  if (!/^(\d+(\.\d+)?(ms|s|m|h))+$/.test(s)) return undefined;
  let total = 0;
  for (const m of s.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)) total += Number(m[1]) * DURATION_UNITS[m[2]!]!;
  total = Math.round(total);
  return total > 0 ? total : undefined;
}

function expected(f: FieldSpec): string {
  const t = f.type;
  switch (t.t) {
    case 'bool':
      return 'true or false';
    case 'int':
      return t.note ?? `an integer from ${t.min} to ${t.max}`;
    case 'number':
      return `a number >= ${t.min}`;
    case 'duration':
      return 'a duration such as 500ms, 2s, 1m (a plain number is seconds)';
    case 'enum':
      return t.values.join(', ');
    case 'string':
      return 'a string';
  }
}

/**
 * Converts and checks one value. `fromFlag` values arrive as text ("true", "8472");
 * file values must already have the right JSON type (a quoted "8472" in a file is
 * accepted too: YAML users quote numbers by habit).
 */
function coerce(f: FieldSpec, raw: unknown, where: string): unknown {
  const bad = (why = expected(f)) => new ConfigError(`${where}: invalid value ${JSON.stringify(raw)} (${why})`, f.key, raw);
  const t = f.type;
  switch (t.t) {
    case 'bool': {
      if (typeof raw === 'boolean') return raw;
      if (raw === 'true') return true;
      if (raw === 'false') return false;
      throw bad();
    }
    case 'int': {
      const n = typeof raw === 'string' && /^-?\d+$/.test(raw.trim()) ? Number(raw) : raw;
      if (typeof n !== 'number' || !Number.isInteger(n) || n < t.min || n > t.max) throw bad();
      if (f.key === 'mtu' && n !== 0 && n < 68) throw bad();
      return n;
    }
    case 'number': {
      const n = typeof raw === 'string' && raw.trim() !== '' ? Number(raw) : raw;
      if (typeof n !== 'number' || !Number.isFinite(n) || n < t.min) throw bad();
      return n;
    }
    case 'duration': {
      const ms = parseDuration(raw);
      if (ms === undefined) throw bad();
      return ms;
    }
    case 'enum': {
      if (typeof raw !== 'string' || !t.values.includes(raw)) throw bad();
      return raw;
    }
    case 'string': {
      if (typeof raw !== 'string') throw bad();
      const why = t.check?.(raw);
      if (why) throw bad(why);
      return raw;
    }
  }
}

function setPath(cfg: AgentConfig, key: string, value: unknown): void {
  const parts = key.split('.');
  let o = cfg as unknown as Record<string, unknown>;
  for (const p of parts.slice(0, -1)) o = o[p] as Record<string, unknown>;
  o[parts[parts.length - 1]!] = value;
}

export function getPath(cfg: AgentConfig, key: string): unknown {
  let o: unknown = cfg;
  for (const p of key.split('.')) o = (o as Record<string, unknown>)[p];
  return o;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Flattens a nested config object to dotted keys; nested objects only where the schema has a section. */
function flatten(obj: Record<string, unknown>, prefix: string, out: [string, unknown][]): void {
  for (const [k, v] of Object.entries(obj)) {
    const key = prefix ? `${prefix}.${k}` : k;
    const isSection = FIELDS.some((f) => f.key.startsWith(key + '.'));
    if (isSection) {
      if (!isObject(v)) throw new ConfigError(`config: ${key}: invalid value ${JSON.stringify(v)} (an object)`, key, v);
      flatten(v, key, out);
    } else out.push([key, v]);
  }
}

/** Applies a parsed config file (nested object) onto `cfg`. Unknown keys are errors. */
export function applyConfigObject(cfg: AgentConfig, obj: unknown, origin = 'config'): AgentConfig {
  if (obj === null || obj === undefined) return cfg; // an empty file
  if (!isObject(obj)) throw new ConfigError(`${origin}: expected a mapping of fields, got ${JSON.stringify(obj)}`);
  const pairs: [string, unknown][] = [];
  flatten(obj, '', pairs);
  for (const [key, raw] of pairs) {
    const f = BY_KEY.get(key);
    if (!f) throw new ConfigError(`config: unknown field ${JSON.stringify(key)}`, key, raw);
    setPath(cfg, key, coerce(f, raw, `config: ${key}`));
  }
  return cfg;
}

/** Parses the text of a config file (YAML, which includes JSON). */
export function parseConfigText(text: string, path: string): unknown {
  try {
    return parseYaml(text);
  } catch (e) {
    throw new ConfigError(`config file ${path}: cannot parse: ${(e as Error).message.split('\n')[0]}`);
  }
}

const norm = (s: string) => s.replace(/[-_]/g, '').toLowerCase();
const FLAG_INDEX = new Map<string, FieldSpec>();
for (const f of FIELDS) {
  FLAG_INDEX.set(norm(f.key), f);
  for (const a of f.aliases ?? []) FLAG_INDEX.set(norm(a), f);
}

/** The field a flag names: `--cni-conf-dir`, `--cniConfDir`, `--proxy.min-sync-interval`, `--node`, ... */
export function fieldForFlag(flag: string): FieldSpec | undefined {
  return FLAG_INDEX.get(norm(flag.replace(/^--?/, '')));
}

/** The canonical flag spelling of a field: kebab-case per segment (`proxy.min-sync-interval`). */
export function flagName(f: FieldSpec): string {
  return f.key
    .split('.')
    .map((s) => s.replace(/([a-z0-9])([A-Z])/g, '$1-$2').toLowerCase()) // clusterCIDR -> cluster-cidr
    .join('.');
}

export function isBoolField(f: FieldSpec): boolean {
  return f.type.t === 'bool';
}

/** Applies flag values (flag name as given -> text or true) onto `cfg`. */
export function applyFlags(cfg: AgentConfig, flags: readonly [string, string | boolean][]): AgentConfig {
  for (const [flag, raw] of flags) {
    const f = fieldForFlag(flag);
    if (!f) throw new ConfigError(`flag --${flag}: unknown flag`, flag, raw);
    if (raw === true && !isBoolField(f)) throw new ConfigError(`flag --${flag}: needs a value (${expected(f)})`, f.key, raw);
    setPath(cfg, f.key, coerce(f, raw === true ? true : raw, `flag --${flag}`));
  }
  return cfg;
}

/** Cross-field checks, after file and flags are in. */
export function validateConfig(cfg: AgentConfig, opts: { requireSource?: boolean; requireNode?: boolean } = {}): AgentConfig {
  if ((opts.requireNode ?? true) && cfg.nodeName === '') {
    throw new ConfigError('config: nodeName: missing (set --node NAME, nodeName in the config file, or env NODE_NAME)', 'nodeName', '');
  }
  const sources = [cfg.manifests !== '' && 'manifests', cfg.kubeconfig !== '' && 'kubeconfig', cfg.inCluster && 'inCluster'].filter(Boolean);
  if ((opts.requireSource ?? true) && sources.length === 0) {
    throw new ConfigError('config: source: missing (one of --manifests DIR, --kubeconfig FILE, --in-cluster)', 'source');
  }
  if (sources.length > 1) {
    throw new ConfigError(`config: source: invalid value ${JSON.stringify(sources.join(' + '))} (exactly one of manifests, kubeconfig, inCluster)`, 'source', sources);
  }
  if (cfg.proxy.minSyncInterval > cfg.proxy.syncPeriod) {
    throw new ConfigError(
      `config: proxy.minSyncInterval: invalid value ${cfg.proxy.minSyncInterval}ms (must not exceed proxy.syncPeriod ${cfg.proxy.syncPeriod}ms)`,
      'proxy.minSyncInterval',
      cfg.proxy.minSyncInterval,
    );
  }
  if (cfg.sync.minInterval > cfg.sync.period) {
    throw new ConfigError(`config: sync.minInterval: invalid value ${cfg.sync.minInterval}ms (must not exceed sync.period ${cfg.sync.period}ms)`, 'sync.minInterval', cfg.sync.minInterval);
  }
  if (cfg.sync.backoffInitial > cfg.sync.backoffMax) {
    throw new ConfigError(
      `config: sync.backoffInitial: invalid value ${cfg.sync.backoffInitial}ms (must not exceed sync.backoffMax ${cfg.sync.backoffMax}ms)`,
      'sync.backoffInitial',
      cfg.sync.backoffInitial,
    );
  }
  const cl = parseCidr(cfg.clusterCIDR);
  const sv = parseCidr(cfg.serviceCIDR);
  if (cl.family === sv.family && overlaps(cl.ip, cl.prefix, sv.ip, sv.prefix)) {
    throw new ConfigError(`config: serviceCIDR: invalid value ${JSON.stringify(cfg.serviceCIDR)} (overlaps clusterCIDR ${cfg.clusterCIDR})`, 'serviceCIDR', cfg.serviceCIDR);
  }
  return cfg;
}

function overlaps(a: string, ap: number, b: string, bp: number): boolean {
  const p = Math.min(ap, bp);
  return networkOf(parseCidr(`${a}/${p}`)) === networkOf(parseCidr(`${b}/${p}`));
}

/** Defaults <- file <- flags, then cross-field validation. */
export function loadConfig(input: {
  file?: { path: string; text: string };
  flags?: readonly [string, string | boolean][];
  env?: Record<string, string | undefined>;
  requireSource?: boolean;
  requireNode?: boolean;
}): AgentConfig {
  const cfg = defaultConfig();
  if (input.file) applyConfigObject(cfg, parseConfigText(input.file.text, input.file.path));
  if (input.flags) applyFlags(cfg, input.flags);
  if (cfg.nodeName === '' && input.env?.NODE_NAME) applyFlags(cfg, [['node', input.env.NODE_NAME]]);
  const v: { requireSource?: boolean; requireNode?: boolean } = {};
  if (input.requireSource !== undefined) v.requireSource = input.requireSource;
  if (input.requireNode !== undefined) v.requireNode = input.requireNode;
  return validateConfig(cfg, v);
}

/** The flag reference for --help. */
export function flagHelp(): string {
  const def = defaultConfig();
  return FIELDS.map((f) => {
    const d = getPath(def, f.key);
    const shown = f.type.t === 'duration' ? `${d}ms` : JSON.stringify(d);
    const name = `--${f.aliases?.[0] ?? flagName(f)}${isBoolField(f) ? '' : '=' + (f.type.t === 'enum' ? f.type.values.join('|') : f.type.t.toUpperCase())}`;
    return `  ${name.padEnd(44)} ${f.help}${d === '' || d === false ? '' : ` (default ${shown})`}`;
  }).join('\n');
}
