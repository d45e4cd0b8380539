// `skiff agent`: flags -> config -> Agent. Exit codes: 0 clean stop, 1 runtime
// failure, 2 usage or configuration error.
import { readFile } from 'node:fs/promises';
import { logger } from '../util/log.js';
import { Agent } from './agent.js';
import { ConfigError, fieldForFlag, flagHelp, isBoolField, loadConfig, type AgentConfig } from './config.js';

export const USAGE = `usage: skiff agent --node NAME (--manifests DIR | --kubeconfig FILE | --in-cluster) [--config FILE] [flags]
       skiff agent --uninstall [--config FILE] [flags]

Runs the skiff node agent: reads the cluster state, programs this node's network
(CNI config, and the overlay, service proxy, DNS and NetworkPolicy modules when
present), and serves /metrics, /healthz and /readyz.

  --config FILE      YAML or JSON config file; flags override it
  --uninstall        remove everything the agent installed on this node, then exit
  -h, --help         this help

Every config field is also a flag (--field=value or --field value; booleans
take --field, --field=true or --field=false; nested fields are dotted):
`;

export interface ParsedArgs {
  help: boolean;
  uninstall: boolean;
  configFile?: string;
  flags: [string, string | boolean][];
}

/** Parses argv; unknown flags and missing values are errors naming the flag. */
export function parseArgs(argv: readonly string[]): ParsedArgs {
  const out: ParsedArgs = { help: false, uninstall: false, flags: [] };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '-h' || arg === '--help') {
      out.help = true;
      continue;
    }
    if (!arg.startsWith('--') || arg === '--') throw new ConfigError(`unexpected argument ${JSON.stringify(arg)} (flags start with --)`);
    const eq = arg.indexOf('=');
    const name = eq >= 0 ? arg.slice(2, eq) : arg.slice(2);
    const inline = eq >= 0 ? arg.slice(eq + 1) : undefined;
    const takeValue = (): string => {
      if (inline !== undefined) return inline;
      const next = argv[i + 1];
      if (next === undefined || (next.startsWith('--') && next.length > 2)) throw new ConfigError(`flag --${name}: needs a value`);
      i++;
      return next;
    };
    if (name === 'uninstall') {
      if (inline !== undefined && inline !== 'true' && inline !== 'false') throw new ConfigError(`flag --uninstall: invalid value ${JSON.stringify(inline)} (true or false)`);
      out.uninstall = inline !== 'false';
      continue;
    }
    if (name === 'config') {
      out.configFile = takeValue();
      continue;
    }
    const f = fieldForFlag(name);
    if (!f) throw new ConfigError(`flag --${name}: unknown flag (see skiff agent --help)`);
    // A boolean flag takes a value only inline (--masquerade=false), so `--in-cluster --node x` reads naturally.
    out.flags.push([name, isBoolField(f) ? (inline ?? true) : takeValue()]);
  }
  return out;
}

export async function configFromArgs(a: ParsedArgs, env: NodeJS.ProcessEnv = process.env): Promise<AgentConfig> {
  let file: { path: string; text: string } | undefined;
  if (a.configFile !== undefined) {
    try {
      file = { path: a.configFile, text: await readFile(a.configFile, 'utf8') };
    } catch (e) {
      throw new ConfigError(`flag --config: cannot read ${JSON.stringify(a.configFile)}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  }
  const input: Parameters<typeof loadConfig>[0] = { flags: a.flags, env };
  if (file) input.file = file;
  // Uninstalling needs neither the cluster nor the node's name.
  if (a.uninstall) {
    input.requireSource = false;
    input.requireNode = false;
  }
  return loadConfig(input);
}

export async function run(argv: string[]): Promise<number> {
  let args: ParsedArgs;
  let config: AgentConfig;
  try {
    args = parseArgs(argv);
    if (args.help) {
      process.stdout.write(USAGE + flagHelp() + '\n');
      return 0;
    }
    config = await configFromArgs(args);
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`skiff agent: ${e.message}\n`);
      return 2;
    }
    throw e;
  }

  const log = logger('agent');
  const agent = new Agent(config, { log });
  if (args.uninstall) {
    const { failed } = await agent.uninstall();
    return failed.length ? 1 : 0;
  }

  let stopping: Promise<void> | undefined;
  const done = new Promise<number>((resolve) => {
    const onSignal = (sig: NodeJS.Signals) => {
      if (stopping) {
        log.warn('second signal: exiting now', { signal: sig });
        resolve(1);
        return;
      }
      log.info('signal received', { signal: sig });
      stopping = agent.stop().then(
        () => resolve(0),
        (e: unknown) => {
          log.error('stop failed', { error: String(e) });
          resolve(1);
        },
      );
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });

  try {
    await agent.start();
  } catch (e) {
    log.error('start failed', { error: e instanceof Error ? e.message : String(e) });
    await agent.stop().catch(() => {});
    return 1;
  }
  const code = await done;
  // Anything still holding the event loop (a watch socket, a timer) must not keep a stopped agent alive.
  setTimeout(() => {
    log.warn('still running 2 s after stop; exiting', { resources: process.getActiveResourcesInfo() });
    process.exit(code);
  }, 2000).unref();
  return code;
}
