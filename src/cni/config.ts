// The network configuration on stdin: the spec's standard fields, the skiff
// bridge plugin's options and the GC attachment list. Malformed JSON is code 6,
// a bad cniVersion code 1, a skiff option skiff cannot honour code 2, any other
// invalid value code 7 — each message names the field and the value.
// Unknown top-level fields are allowed (CNI convention: plugins may ignore them).
import { CniError, ErrorCode, decodeFailure, invalidField, missingField, unsupportedField } from './errors.js';
import { IFNAME_EXPECTED, ifnameProblem, isValidContainerId } from './env.js';
import { checkVersion, type CniCommand, type SupportedVersion } from './version.js';
import { parseDns, parseResult, type CniDns, type CniResult } from './result.js';

export interface OverlayConf {
  /** VXLAN network identifier, 1..16777215 (default 1, as flannel). */
  vni: number;
  /** UDP port, 1..65535 (default 8472, as flannel). */
  port: number;
  underlayInterface?: string;
  device?: string;
}

export interface IpamConf {
  type: string;
  [key: string]: unknown;
}

export interface Attachment {
  containerID: string;
  ifname: string;
}

export interface NetConf {
  cniVersion: SupportedVersion;
  name: string;
  type: string;
  args?: Record<string, unknown>;
  runtimeConfig?: Record<string, unknown>;
  /** Parsed prevResult (in the config's version), if any. */
  prevResult?: CniResult;
  capabilities?: Record<string, boolean>;
  dns?: CniDns;
  ipam?: IpamConf;

  // skiff bridge options (defaults filled in)
  bridge: string;
  isGateway: boolean;
  isDefaultGateway: boolean;
  forceAddress: boolean;
  ipMasq: boolean;
  mtu?: number;
  hairpinMode: boolean;
  promiscMode: boolean;
  overlay?: OverlayConf;

  /** GC only: the attachments the runtime still considers valid. */
  validAttachments?: Attachment[];

  /** The decoded JSON object, unchanged (for delegation and unknown fields). */
  raw: Record<string, unknown>;
}

export const DEFAULT_BRIDGE = 'cni0';
export const DEFAULT_VNI = 1;
export const DEFAULT_VXLAN_PORT = 8472;

const NETWORK_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function optBool(obj: Record<string, unknown>, key: string, path = key): boolean | undefined {
  const v = obj[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw invalidField(path, v, 'true or false');
  return v;
}

function optObject(obj: Record<string, unknown>, key: string, path = key): Record<string, unknown> | undefined {
  const v = obj[key];
  if (v === undefined || v === null) return undefined;
  if (!isObject(v)) throw invalidField(path, v, 'an object');
  return v;
}

function intInRange(v: unknown, path: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw invalidField(path, v, `an integer from ${min} to ${max}`);
  }
  return v;
}

function ifnameField(v: unknown, path: string): string {
  if (typeof v !== 'string') throw invalidField(path, v, IFNAME_EXPECTED);
  const problem = ifnameProblem(v);
  if (problem) throw invalidField(path, v, `${problem}; ${IFNAME_EXPECTED}`);
  return v;
}

/** A plugin type names an executable: non-empty, no path separators. */
function pluginType(v: unknown, path: string): string {
  if (typeof v !== 'string' || v === '' || /[/\\]/.test(v) || v === '.' || v === '..') {
    throw invalidField(path, v, 'a plugin executable name: non-empty, no "/" or "\\"');
  }
  return v;
}

function parseOverlay(v: Record<string, unknown>): OverlayConf {
  const overlay: OverlayConf = {
    vni: v.vni === undefined ? DEFAULT_VNI : intInRange(v.vni, 'overlay.vni', 1, 16777215),
    port: v.port === undefined ? DEFAULT_VXLAN_PORT : intInRange(v.port, 'overlay.port', 1, 65535),
  };
  if (v.underlayInterface !== undefined) overlay.underlayInterface = ifnameField(v.underlayInterface, 'overlay.underlayInterface');
  if (v.device !== undefined) overlay.device = ifnameField(v.device, 'overlay.device');
  return overlay;
}

function parseAttachments(v: unknown, path: string): Attachment[] {
  if (!Array.isArray(v)) throw invalidField(path, v, 'a list of {containerID, ifname}');
  return v.map((a, i) => {
    const p = `${path}[${i}]`;
    if (!isObject(a)) throw invalidField(p, a, 'an object {containerID, ifname}');
    if (!isValidContainerId(a.containerID)) {
      throw invalidField(`${p}.containerID`, a.containerID, 'a container ID: a letter or digit, then letters, digits, "_", "." or "-"');
    }
    return { containerID: a.containerID, ifname: ifnameField(a.ifname, `${p}.ifname`) };
  });
}

/**
 * Parses and validates the network configuration for a command (not VERSION,
 * whose stdin carries only a cniVersion).
 */
export function parseNetConf(stdin: string | Buffer, command: CniCommand): NetConf {
  let decoded: unknown;
  try {
    decoded = JSON.parse(stdin.toString());
  } catch (e) {
    throw decodeFailure('network configuration', e);
  }
  if (!isObject(decoded)) {
    throw new CniError(
      ErrorCode.DecodingFailure,
      'network configuration: cannot decode JSON',
      `expected a JSON object, got ${Array.isArray(decoded) ? 'a list' : JSON.stringify(decoded)}`,
    );
  }
  const raw = decoded;

  const cniVersion = checkVersion(raw.cniVersion, command);

  if (raw.name === undefined) throw missingField('name', 'the network name');
  if (typeof raw.name !== 'string' || !NETWORK_NAME_RE.test(raw.name)) {
    throw invalidField('name', raw.name, 'a network name: a letter or digit, then letters, digits, "_", "." or "-"');
  }
  if (raw.type === undefined) throw missingField('type', 'the plugin type');
  const type = pluginType(raw.type, 'type');

  const conf: NetConf = {
    cniVersion,
    name: raw.name,
    type,
    bridge: DEFAULT_BRIDGE,
    isGateway: false,
    isDefaultGateway: false,
    forceAddress: false,
    ipMasq: false,
    hairpinMode: false,
    promiscMode: false,
    raw,
  };

  const args = optObject(raw, 'args');
  if (args) conf.args = args;
  const runtimeConfig = optObject(raw, 'runtimeConfig');
  if (runtimeConfig) conf.runtimeConfig = runtimeConfig;

  const caps = optObject(raw, 'capabilities');
  if (caps) {
    for (const [k, v] of Object.entries(caps)) {
      if (typeof v !== 'boolean') throw invalidField(`capabilities.${k}`, v, 'true or false');
    }
    conf.capabilities = caps as Record<string, boolean>;
  }

  if (raw.dns !== undefined && raw.dns !== null) conf.dns = parseDns(raw.dns, 'dns');

  if (raw.prevResult !== undefined && raw.prevResult !== null) {
    // A prevResult is in the config's version (libcni parses it that way).
    conf.prevResult = parseResult(raw.prevResult, cniVersion, 'prevResult');
  } else if (command === 'CHECK') {
    throw missingField('prevResult', 'CHECK needs the result of the preceding ADD');
  }

  const ipam = optObject(raw, 'ipam');
  if (ipam) {
    if (ipam.type === undefined) throw missingField('ipam.type', 'the IPAM plugin type');
    pluginType(ipam.type, 'ipam.type');
    conf.ipam = ipam as IpamConf;
  }

  // ---- bridge options ----
  if (raw.bridge !== undefined) conf.bridge = ifnameField(raw.bridge, 'bridge');
  conf.isDefaultGateway = optBool(raw, 'isDefaultGateway') ?? false;
  // isDefaultGateway implies isGateway (as the reference bridge plugin).
  conf.isGateway = (optBool(raw, 'isGateway') ?? false) || conf.isDefaultGateway;
  conf.forceAddress = optBool(raw, 'forceAddress') ?? false;
  conf.ipMasq = optBool(raw, 'ipMasq') ?? false;
  conf.hairpinMode = optBool(raw, 'hairpinMode') ?? false;
  conf.promiscMode = optBool(raw, 'promiscMode') ?? false;
  if (conf.hairpinMode && conf.promiscMode) {
    throw new CniError(
      ErrorCode.InvalidNetworkConfig,
      'hairpinMode: invalid value true together with promiscMode: true (choose one: both make the bridge send a pod its own traffic back)',
    );
  }
  if (raw.mtu !== undefined && raw.mtu !== null) {
    conf.mtu = intInRange(raw.mtu, 'mtu', 68, 65535);
  }

  // Options of the reference bridge plugin that skiff does not implement:
  // accepted only at their "off" values, otherwise code 2 (unsupported field).
  if (raw.vlan !== undefined && raw.vlan !== null) {
    intInRange(raw.vlan, 'vlan', 0, 4094);
    if (raw.vlan !== 0) throw unsupportedField('vlan', raw.vlan, 'skiff does not tag pod ports with VLANs');
  }
  if (raw.vlanTrunk !== undefined && raw.vlanTrunk !== null) {
    if (!Array.isArray(raw.vlanTrunk)) throw invalidField('vlanTrunk', raw.vlanTrunk, 'a list');
    if (raw.vlanTrunk.length > 0) throw unsupportedField('vlanTrunk', raw.vlanTrunk, 'skiff does not trunk VLANs');
  }
  const macspoofchk = optBool(raw, 'macspoofchk');
  if (macspoofchk) throw unsupportedField('macspoofchk', true, 'skiff does not implement MAC spoof checking');

  const overlay = optObject(raw, 'overlay');
  if (overlay) conf.overlay = parseOverlay(overlay);

  // ---- GC ----
  if (command === 'GC') {
    // SPEC 1.1.0 names the key cni.dev/valid-attachments; an earlier draft and
    // some libcni releases sent cni.dev/attachments.
    const key = raw['cni.dev/valid-attachments'] !== undefined ? 'cni.dev/valid-attachments' : 'cni.dev/attachments';
    const list = raw[key];
    if (list === undefined || list === null) {
      // Never treat "absent" as "nothing is valid": that would release every IP on the node.
      throw missingField('cni.dev/valid-attachments', 'GC needs the list of valid attachments');
    }
    conf.validAttachments = parseAttachments(list, key);
  }
  return conf;
}

/** The cniVersion of a VERSION request's stdin, if any (VERSION must work with empty stdin). */
export function versionRequest(stdin: string | Buffer): string | undefined {
  const text = stdin.toString().trim();
  if (text === '') return undefined;
  try {
    const v: unknown = JSON.parse(text);
    if (isObject(v) && typeof v.cniVersion === 'string') return v.cniVersion;
  } catch {
    /* VERSION ignores an undecodable stdin */
  }
  return undefined;
}
