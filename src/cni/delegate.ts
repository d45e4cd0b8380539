// Delegated IPAM (SPEC 1.1.0, section 4): find the plugin named by `ipam.type`
// in CNI_PATH, run it with the same environment and the complete network
// configuration on stdin, its stderr going to ours, and read its result (any
// supported version) or its error JSON from stdout.
import { accessSync, constants, statSync } from 'node:fs';
import { join } from 'node:path';
import { CniError, ErrorCode, decodeFailure, invalidField, missingField } from './errors.js';
import { parseResult, type CniResult } from './result.js';
import type { CniCommand } from './version.js';

export interface DelegateOptions {
  /** Kill the delegate after this long (default 60 s). */
  timeoutMs?: number;
  /** Where the delegate's stderr goes (default: inherited, as the spec asks). */
  stderr?: 'inherit' | 'pipe' | 'ignore';
}

/** Finds an executable plugin by name in the CNI_PATH directories. Code 7 if absent. */
export function findPlugin(type: string, cniPath: string[], what = 'ipam type'): string {
  if (type === '' || /[/\\]/.test(type) || type === '.' || type === '..') {
    throw invalidField(what === 'ipam type' ? 'ipam.type' : 'type', type, 'a plugin executable name: non-empty, no "/" or "\\"');
  }
  for (const dir of cniPath) {
    const candidate = join(dir, type);
    try {
      if (!statSync(candidate).isFile()) continue;
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      /* not here */
    }
  }
  throw new CniError(
    ErrorCode.InvalidNetworkConfig,
    `unknown ${what} ${JSON.stringify(type)}: not found in CNI_PATH (${cniPath.length > 0 ? cniPath.join(':') : 'empty'})`,
  );
}

function ipamTypeOf(netconfRaw: string): string {
  let conf: unknown;
  try {
    conf = JSON.parse(netconfRaw);
  } catch (e) {
    throw decodeFailure('network configuration', e);
  }
  const ipam = (conf as { ipam?: unknown } | null)?.ipam;
  if (typeof ipam !== 'object' || ipam === null || Array.isArray(ipam)) throw missingField('ipam', 'an object with the IPAM plugin "type"');
  const type = (ipam as { type?: unknown }).type;
  if (type === undefined) throw missingField('ipam.type', 'the IPAM plugin type');
  if (typeof type !== 'string') throw invalidField('ipam.type', type, 'a plugin executable name');
  return type;
}

function configVersionOf(netconfRaw: string): string | undefined {
  try {
    const v = (JSON.parse(netconfRaw) as { cniVersion?: unknown }).cniVersion;
    return typeof v === 'string' ? v : undefined;
  } catch {
    return undefined;
  }
}

/** A delegate's error JSON, or undefined if stdout is not one. */
function parseErrorOutput(stdout: string): CniError | undefined {
  try {
    const v = JSON.parse(stdout) as { code?: unknown; msg?: unknown; details?: unknown };
    if (typeof v !== 'object' || v === null || typeof v.code !== 'number') return undefined;
    return new CniError(
      v.code,
      typeof v.msg === 'string' ? v.msg : '',
      typeof v.details === 'string' ? v.details : undefined,
    );
  } catch {
    return undefined;
  }
}

/**
 * Runs the IPAM plugin named by `ipam.type` for `command`. ADD returns its
 * result (converted to the internal model; the plugin may answer in any
 * supported version); DEL, CHECK, GC and STATUS return nothing. A failing
 * plugin's error (code, msg, details) is thrown as a CniError unchanged.
 */
export function delegateIpam(
  command: CniCommand,
  netconfRaw: string,
  env: NodeJS.ProcessEnv,
  cniPath: string[],
  options: DelegateOptions = {},
): CniResult | void {
  const type = ipamTypeOf(netconfRaw);
  const bin = findPlugin(type, cniPath);
  const childEnv: NodeJS.ProcessEnv = { ...env, CNI_COMMAND: command };
  if (childEnv.CNI_PATH === undefined) childEnv.CNI_PATH = cniPath.join(':');

  // Loaded on first use: the plugin's start-up should not pay for child_process
  // when IPAM is served in-process (the common case).
  const { spawnSync } = process.getBuiltinModule('node:child_process');
  const r = spawnSync(bin, [], {
    input: netconfRaw,
    env: childEnv,
    encoding: 'utf8',
    stdio: ['pipe', 'pipe', options.stderr ?? 'inherit'],
    timeout: options.timeoutMs ?? 60_000,
    maxBuffer: 16 * 1024 * 1024,
  });
  if (r.error) {
    const code = (r.error as NodeJS.ErrnoException).code;
    if (code === 'ETIMEDOUT') {
      throw new CniError(ErrorCode.TryAgainLater, `ipam plugin ${JSON.stringify(type)} timed out on ${command}`, bin);
    }
    throw new CniError(ErrorCode.IOFailure, `ipam plugin ${JSON.stringify(type)}: cannot run ${bin}`, r.error.message);
  }
  const stdout = r.stdout ?? '';
  if (r.status !== 0) {
    const err = parseErrorOutput(stdout);
    if (err) throw err;
    const how = r.signal ? `killed by ${r.signal}` : `exit status ${r.status}`;
    const out = stdout.trim();
    throw new CniError(
      ErrorCode.Internal,
      `ipam plugin ${JSON.stringify(type)} failed on ${command} (${how})`,
      out ? `stdout: ${out.slice(0, 500)}` : typeof r.stderr === 'string' && r.stderr ? r.stderr.trim().slice(0, 500) : undefined,
    );
  }
  if (command !== 'ADD') return;
  if (stdout.trim() === '') {
    throw new CniError(ErrorCode.DecodingFailure, `ipam plugin ${JSON.stringify(type)} returned no result on ADD`);
  }
  return parseResult(stdout, configVersionOf(netconfRaw), `ipam plugin ${type} result`);
}
