// CNI spec versions: which ones skiff speaks, how they compare, and which
// commands each one has.
import { CniError, ErrorCode, incompatibleVersion } from './errors.js';

export const SUPPORTED_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;
export type SupportedVersion = (typeof SUPPORTED_VERSIONS)[number];
export const CURRENT_VERSION: SupportedVersion = '1.1.0';

export type CniCommand = 'ADD' | 'DEL' | 'CHECK' | 'GC' | 'STATUS' | 'VERSION';
export const COMMANDS: readonly CniCommand[] = ['ADD', 'DEL', 'CHECK', 'GC', 'STATUS', 'VERSION'];

/** The first spec version in which a command exists. */
export const COMMAND_SINCE: Readonly<Record<CniCommand, string>> = {
  ADD: '0.1.0',
  DEL: '0.1.0',
  VERSION: '0.2.0',
  CHECK: '0.4.0',
  GC: '1.1.0',
  STATUS: '1.1.0',
};

export interface VersionInfo {
  cniVersion: string;
  supportedVersions: string[];
}

/** The VERSION command's output. */
export function versionInfo(): VersionInfo {
  return { cniVersion: CURRENT_VERSION, supportedVersions: [...SUPPORTED_VERSIONS] };
}

const VERSION_RE = /^(\d+)(?:\.(\d+))?(?:\.(\d+))?$/;

/** Parses "X", "X.Y" or "X.Y.Z" (missing parts are 0, as libcni does). Undefined if not a version. */
export function parseVersion(v: string): [number, number, number] | undefined {
  const m = VERSION_RE.exec(v);
  if (!m) return undefined;
  return [Number(m[1]), Number(m[2] ?? 0), Number(m[3] ?? 0)];
}

/** Compares two versions: negative if a < b, 0 if equal, positive if a > b. Throws code 6 on a non-version. */
export function compareVersions(a: string, b: string): number {
  const pa = parseVersion(a);
  const pb = parseVersion(b);
  if (!pa) throw new CniError(ErrorCode.DecodingFailure, `cniVersion: invalid value ${JSON.stringify(a)} (a version like "1.0.0")`);
  if (!pb) throw new CniError(ErrorCode.DecodingFailure, `cniVersion: invalid value ${JSON.stringify(b)} (a version like "1.0.0")`);
  for (let i = 0; i < 3; i++) {
    const d = pa[i]! - pb[i]!;
    if (d !== 0) return d;
  }
  return 0;
}

export function versionAtLeast(v: string, min: string): boolean {
  return compareVersions(v, min) >= 0;
}

export function isSupportedVersion(v: unknown): v is SupportedVersion {
  return typeof v === 'string' && (SUPPORTED_VERSIONS as readonly string[]).includes(v);
}

/** True for versions whose results carry `ips[].version` (0.3.x, 0.4.0). */
export function isLegacyResultVersion(v: string): boolean {
  return compareVersions(v, '1.0.0') < 0;
}

/**
 * Checks a config's cniVersion for a command. Throws CniError code 1 when the
 * version is not one skiff supports, or when the command does not exist in it.
 *
 * Why code 1 (incompatible version) and not 2 (unsupported field) for e.g. GC
 * with a 1.0.0 config: the config is fine and no field is unsupported; what is
 * wrong is that the protocol version the runtime chose has no such command. That
 * is a version incompatibility, and it is what libcni's skel returns ("config
 * version does not allow CHECK", ErrIncompatibleCNIVersion), so runtimes built
 * on libcni see the same code from skiff as from the reference plugins.
 */
export function checkVersion(cniVersion: unknown, command: CniCommand): SupportedVersion {
  if (cniVersion === undefined || cniVersion === '') {
    throw incompatibleVersion(
      'cniVersion: required field is missing',
      `supported versions: ${SUPPORTED_VERSIONS.join(', ')}`,
    );
  }
  if (typeof cniVersion !== 'string' || !isSupportedVersion(cniVersion)) {
    throw incompatibleVersion(
      `cniVersion: incompatible CNI version ${JSON.stringify(cniVersion)}`,
      `supported versions: ${SUPPORTED_VERSIONS.join(', ')}`,
    );
  }
  const since = COMMAND_SINCE[command];
  if (compareVersions(cniVersion, since) < 0) {
    throw incompatibleVersion(
      `config version does not allow ${command}`,
      `cniVersion ${JSON.stringify(cniVersion)}: ${command} exists from CNI ${since}`,
    );
  }
  return cniVersion;
}
