// skiff-cni entry point: parse, dispatch, print. Results and errors go to stdout in
// the configuration's CNI version; logs go to stderr (or SKIFF_CNI_LOG, a file).
// Bundled into dist/skiff-cni.mjs: keep imports to what the plugin needs.
import { appendFileSync, readFileSync } from 'node:fs';
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
  const line = JSON.stringify({ ts: new Date().toISOString(), component: 'skiff-cni', ...fields }) + '\n';
  const file = process.env.SKIFF_CNI_LOG;
  try {
    if (file) appendFileSync(file, line);
    else if (process.env.SKIFF_CNI_DEBUG) process.stderr.write(line);
  } catch {
    /* logging must never fail the operation */
  }
}

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
      process.stdout.write(JSON.stringify(versionInfo()) + '\n');
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
        process.stdout.write(JSON.stringify(formatResult(result, conf.cniVersion)) + '\n');
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
    log({ level: 'info', command, container: env.CNI_CONTAINERID, ifname: env.CNI_IFNAME, ms: Date.now() - started });
    return 0;
  } catch (e) {
    const err = e instanceof CniError ? e : (await loadCommands()).toCniError(e);
    log({ level: 'error', command, container: env.CNI_CONTAINERID, code: err.code, msg: err.msg, ms: Date.now() - started });
    process.stdout.write(JSON.stringify(err.toJSON(errorVersion(stdin))) + '\n');
    return 1;
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (e) => {
    process.stdout.write(JSON.stringify({ cniVersion: '1.1.0', code: 999, msg: String((e as Error)?.message ?? e) }) + '\n');
    process.exitCode = 1;
  },
);
