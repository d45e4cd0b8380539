// skiff-cni entry point: parse, dispatch, print. Results and errors go to stdout in
// the configuration's CNI version; logs go to stderr (or SKIFF_CNI_LOG, a file).
// Bundled into dist/skiff-cni-main.cjs (run by the loader dist/skiff-cni.cjs): keep
// imports to what the plugin needs.
import { appendFileSync, readFileSync, writeSync } from 'node:fs';
import { CniError } from './errors.js';
import { parseEnv } from './env.js';
import { parseNetConf } from './config.js';
import { checkVersion, versionInfo, SUPPORTED_VERSIONS } from './version.js';
import { formatResult } from './result.js';
// The commands (netlink, IPAM, nftables) load only when a command needs them:
// VERSION, and errors in the environment or the config, stay at Node's start-up cost.
type Commands = typeof import('./commands.js');
const loadCommands = (): Promise<Commands> => import('./commands.js');

function log(fields: Record<string, unknown>): void {
  const file = process.env.SKIFF_CNI_LOG;
  if (!file && !process.env.SKIFF_CNI_DEBUG) return;
  const line = JSON.stringify({ ts: new Date().toISOString(), component: 'skiff-cni', ...fields }) + '\n';
  try {
    if (file) appendFileSync(file, line);
    else if (process.env.SKIFF_CNI_DEBUG) writeSync(2, line);
  } catch {
    /* logging must never fail the operation */
  }
}

/**
 * Writes the result or error to stdout directly: touching process.stdout loads
 * Node's stream machinery, ~2 ms of CPU at every start (docs/cni.md). The runtime
 * reads a pipe; a short write or EAGAIN (a non-blocking pipe) is retried.
 */
function out(text: string): void {
  const buf = Buffer.from(text, 'utf8');
  let off = 0;
  while (off < buf.length) {
    try {
      off += writeSync(1, buf, off);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EPIPE') return; // the runtime stopped reading: nobody to tell
      if (code !== 'EAGAIN') throw e;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
    }
  }
}

/** What dist/skiff-cni.cjs did with the V8 code cache (none/used/rejected/off). */
const codeCacheState = (): string | undefined => (globalThis as { __skiffCniCodeCache?: string }).__skiffCniCodeCache;

function readStdin(): string {
  try {
    return readFileSync(0, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EAGAIN' || code === 'EOF') return '';
    throw new CniError(5, `stdin: ${(e as Error).message}`);
  }
}

/** The version to print an error in: the config's when it is usable, else the newest. */
function errorVersion(stdin: string): string {
  try {
    const v = (JSON.parse(stdin) as { cniVersion?: unknown }).cniVersion;
    if (typeof v === 'string' && (SUPPORTED_VERSIONS as readonly string[]).includes(v)) return v;
  } catch {
    /* fall through */
  }
  return SUPPORTED_VERSIONS[SUPPORTED_VERSIONS.length - 1]!;
}

export async function main(env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const started = Date.now();
  let stdin = '';
  let command = env.CNI_COMMAND ?? '';
  try {
    if (command === 'VERSION') {
      out(JSON.stringify(versionInfo()) + '\n');
      return 0;
    }
    const cniEnv = parseEnv(env);
    command = cniEnv.command;
    stdin = readStdin();
    const conf = parseNetConf(stdin, cniEnv.command);
    checkVersion(conf.cniVersion, cniEnv.command);
    const ctx = { env: cniEnv, conf, raw: stdin, processEnv: env };
    const { cmdAdd, cmdCheck, cmdDel, cmdGc, cmdStatus } = await loadCommands();
    switch (cniEnv.command) {
      case 'ADD': {
        const result = await cmdAdd(ctx);
        out(JSON.stringify(formatResult(result, conf.cniVersion)) + '\n');
        break;
      }
      case 'DEL':
        await cmdDel(ctx);
        break;
      case 'CHECK':
        await cmdCheck(ctx);
        break;
      case 'GC':
        await cmdGc(ctx);
        break;
      case 'STATUS':
        await cmdStatus(ctx);
        break;
    }
    log({ level: 'info', command, container: env.CNI_CONTAINERID, ifname: env.CNI_IFNAME, ms: Date.now() - started, codeCache: codeCacheState() });
    return 0;
  } catch (e) {
    const err = e instanceof CniError ? e : (await loadCommands()).toCniError(e);
    log({ level: 'error', command, container: env.CNI_CONTAINERID, code: err.code, msg: err.msg, ms: Date.now() - started });
    out(JSON.stringify(err.toJSON(errorVersion(stdin))) + '\n');
    return 1;
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (e) => {
    out(JSON.stringify({ cniVersion: '1.1.0', code: 999, msg: String((e as Error)?.message ?? e) }) + '\n');
    process.exitCode = 1;
  },
);
