// The CNI_* environment: which variables each command needs (SPEC 1.1.0,
// section 2) and what a valid value looks like. Errors are code 4 and name the
// variable and its value.
import { COMMANDS, type CniCommand } from './version.js';
import { CniError, ErrorCode, invalidEnv } from './errors.js';

export interface CniEnv {
  command: CniCommand;
  /** CNI_CONTAINERID: validated for ADD, DEL, CHECK (required there); '' for GC, STATUS, VERSION. */
  containerId: string;
  /** Set for ADD, CHECK (required); optional for DEL. */
  netns?: string;
  /** CNI_IFNAME: validated for ADD, DEL, CHECK (required there); '' for GC, STATUS, VERSION. */
  ifname: string;
  /** CNI_ARGS as key/value pairs, in order; `IgnoreUnknown` included if given. */
  args: Record<string, string>;
  /** CNI_ARGS had IgnoreUnknown=1/true. */
  ignoreUnknown: boolean;
  /** CNI_PATH split on ':' (empty entries dropped). Required for GC. */
  path: string[];
}

type Var = 'CNI_COMMAND' | 'CNI_CONTAINERID' | 'CNI_NETNS' | 'CNI_IFNAME' | 'CNI_ARGS' | 'CNI_PATH';

/** Required variables per command, exactly as the spec lists them. */
export const REQUIRED_ENV: Readonly<Record<CniCommand, readonly Var[]>> = {
  ADD: ['CNI_COMMAND', 'CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME'],
  CHECK: ['CNI_COMMAND', 'CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME'],
  DEL: ['CNI_COMMAND', 'CNI_CONTAINERID', 'CNI_IFNAME'],
  GC: ['CNI_COMMAND', 'CNI_PATH'],
  STATUS: ['CNI_COMMAND'],
  VERSION: ['CNI_COMMAND'],
};

/**
 * CNI_ARGS keys skiff understands. Other keys are an error unless
 * IgnoreUnknown is set (the libcni convention; kubelet/containerd/CRI-O/podman
 * all set it).
 */
export const KNOWN_CNI_ARGS: readonly string[] = [
  'IgnoreUnknown',
  'K8S_POD_NAMESPACE',
  'K8S_POD_NAME',
  'K8S_POD_INFRA_CONTAINER_ID',
  'K8S_POD_UID',
  'IP',
  'MAC',
];

const CONTAINER_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/** Why `name` is not a valid Linux interface name, or undefined if it is. */
export function ifnameProblem(name: string): string | undefined {
  if (name === '') return 'must not be empty';
  if (Buffer.byteLength(name, 'utf8') > 15) return 'longer than 15 bytes';
  if (name === '.' || name === '..') return 'must not be "." or ".."';
  if (/[/:\s]/u.test(name)) return 'must not contain "/", ":" or whitespace';
  return undefined;
}

export const IFNAME_EXPECTED = 'a Linux interface name: 1 to 15 bytes, no "/", ":" or whitespace, not "." or ".."';

export function isValidIfname(name: unknown): name is string {
  return typeof name === 'string' && ifnameProblem(name) === undefined;
}

export function isValidContainerId(id: unknown): id is string {
  return typeof id === 'string' && CONTAINER_ID_RE.test(id);
}

/** Parses a CNI_ARGS-style boolean ("1"/"true"/"0"/"false", case-insensitive). */
function parseArgBool(key: string, value: string): boolean {
  const v = value.toLowerCase();
  if (v === '1' || v === 'true') return true;
  if (v === '0' || v === 'false') return false;
  throw invalidEnv('CNI_ARGS', `${key}=${value}`, `${key} must be 1, true, 0 or false`);
}

/**
 * Parses `K=V;K=V`. Empty segments (a trailing ';') are skipped; every other
 * segment needs a non-empty key and an '='. The value is everything after the
 * first '='. Unknown keys fail unless IgnoreUnknown is true.
 */
export function parseCniArgs(
  raw: string | undefined,
  known: readonly string[] = KNOWN_CNI_ARGS,
): { args: Record<string, string>; ignoreUnknown: boolean } {
  const args: Record<string, string> = {};
  if (raw === undefined || raw === '') return { args, ignoreUnknown: false };
  for (const pair of raw.split(';')) {
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    if (eq <= 0) throw invalidEnv('CNI_ARGS', raw, `invalid pair ${JSON.stringify(pair)}: expected KEY=VALUE pairs separated by ";"`);
    const key = pair.slice(0, eq);
    const value = pair.slice(eq + 1);
    if (Object.hasOwn(args, key)) throw invalidEnv('CNI_ARGS', raw, `duplicate key ${JSON.stringify(key)}`);
    args[key] = value;
  }
  const ignoreUnknown = args.IgnoreUnknown !== undefined ? parseArgBool('IgnoreUnknown', args.IgnoreUnknown) : false;
  if (!ignoreUnknown) {
    const unknown = Object.keys(args).filter((k) => !known.includes(k));
    if (unknown.length > 0) {
      throw invalidEnv(
        'CNI_ARGS',
        raw,
        `unknown argument${unknown.length > 1 ? 's' : ''} ${unknown.map((k) => JSON.stringify(k)).join(', ')}; set IgnoreUnknown=1 to allow`,
      );
    }
  }
  return { args, ignoreUnknown };
}

export function splitCniPath(raw: string | undefined): string[] {
  if (!raw) return [];
  return raw.split(':').filter((p) => p !== '');
}

/**
 * Reads and validates the CNI environment for the command in CNI_COMMAND.
 * Throws CniError code 4 naming the variable and its value.
 */
export function parseEnv(env: NodeJS.ProcessEnv, knownArgs: readonly string[] = KNOWN_CNI_ARGS): CniEnv {
  const rawCommand = env.CNI_COMMAND;
  if (rawCommand === undefined || rawCommand === '') {
    throw invalidEnv('CNI_COMMAND', rawCommand, `one of ${COMMANDS.join(', ')}`);
  }
  if (!(COMMANDS as readonly string[]).includes(rawCommand)) {
    throw invalidEnv('CNI_COMMAND', rawCommand, `one of ${COMMANDS.join(', ')}`);
  }
  const command = rawCommand as CniCommand;
  const required = REQUIRED_ENV[command];

  for (const v of required) {
    const value = env[v];
    if (value === undefined || value === '') {
      throw new CniError(
        ErrorCode.InvalidEnvironment,
        `${v}: required environment variable is missing (needed by ${command})`,
      );
    }
  }

  const out: CniEnv = {
    command,
    containerId: '',
    ifname: '',
    args: {},
    ignoreUnknown: false,
    path: splitCniPath(env.CNI_PATH),
  };

  if (command === 'ADD' || command === 'CHECK' || command === 'DEL') {
    const containerId = env.CNI_CONTAINERID!;
    if (!CONTAINER_ID_RE.test(containerId)) {
      throw invalidEnv(
        'CNI_CONTAINERID',
        containerId,
        'must start with a letter or digit, followed by letters, digits, "_", "." or "-"',
      );
    }
    out.containerId = containerId;

    const ifname = env.CNI_IFNAME!;
    const problem = ifnameProblem(ifname);
    if (problem) throw invalidEnv('CNI_IFNAME', ifname, `${problem}; ${IFNAME_EXPECTED}`);
    out.ifname = ifname;

    const netns = env.CNI_NETNS;
    if (netns !== undefined && netns !== '') out.netns = netns;

    const parsed = parseCniArgs(env.CNI_ARGS, knownArgs);
    out.args = parsed.args;
    out.ignoreUnknown = parsed.ignoreUnknown;
  }
  return out;
}
