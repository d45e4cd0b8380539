// `skiff policy <subcommand>`: NetworkPolicy tools for people.
//   skiff policy explain --from NS/POD|IP --to NS/POD|IP --port P [--protocol TCP|UDP|SCTP]
//                        [--from-node] [--family 4|6] [--json] (--manifests DIR | --lab NAME)
// Exit status: 0 when the connection was evaluated (allowed or denied), 2 for usage
// errors, 1 for anything else (unreadable manifests, unknown pod).
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { Protocol } from '../cluster/types.js';
import { ConnectionError, PolicyState, type Connection } from './evaluator.js';
import { explain, loadManifestDir, parseEndpoint } from './explain.js';

export interface CliIo {
  stdout: (s: string) => void;
  stderr: (s: string) => void;
}

const processIo: CliIo = {
  stdout: (s) => void process.stdout.write(s),
  stderr: (s) => void process.stderr.write(s),
};

/** Where `skiff lab` keeps each lab's manifests (SKIFF_LAB_ROOT overrides, for tests). */
export function labManifestDir(name: string): string {
  if (!/^[A-Za-z0-9][-A-Za-z0-9_.]*$/.test(name)) throw new UsageError(`--lab: invalid lab name ${JSON.stringify(name)}`);
  return join(process.env.SKIFF_LAB_ROOT || '/run/skiff/lab', name, 'manifests');
}

const USAGE = `usage: skiff policy explain --from NS/POD|IP --to NS/POD|IP --port PORT [--protocol TCP|UDP|SCTP]
                            [--from-node] [--family 4|6] [--json] (--manifests DIR | --lab NAME)

Evaluates one connection against the NetworkPolicies and explains the verdict:
which policies isolate the source (egress) and the destination (ingress), and which
rule allows it or why no rule does. PORT is the destination port after service DNAT.
--from-node: the source is the destination pod's own node (always allowed in).
`;

class UsageError extends Error {}

async function explainCmd(argv: string[], io: CliIo): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      from: { type: 'string' },
      to: { type: 'string' },
      port: { type: 'string' },
      protocol: { type: 'string' },
      family: { type: 'string' },
      'from-node': { type: 'boolean' },
      manifests: { type: 'string' },
      lab: { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    io.stdout(USAGE);
    return 0;
  }
  if (!values.to) throw new UsageError('--to is required');
  if (!values.from && !values['from-node']) throw new UsageError('--from is required (or --from-node)');
  if (!values.port) throw new UsageError('--port is required');
  if (!/^\d+$/.test(values.port) || Number(values.port) < 1 || Number(values.port) > 65535) {
    throw new UsageError(`--port: invalid port ${JSON.stringify(values.port)} (1-65535)`);
  }
  const protocol = (values.protocol ?? 'TCP').toUpperCase();
  if (protocol !== 'TCP' && protocol !== 'UDP' && protocol !== 'SCTP') throw new UsageError(`--protocol: unsupported protocol ${JSON.stringify(values.protocol)} (TCP, UDP, SCTP)`);
  if (values.family !== undefined && values.family !== '4' && values.family !== '6') throw new UsageError(`--family: must be 4 or 6, got ${JSON.stringify(values.family)}`);
  if (!!values.manifests === !!values.lab) throw new UsageError('exactly one of --manifests DIR or --lab NAME is required');
  const dir = values.manifests ?? labManifestDir(values.lab!);
  let to, from;
  try {
    to = parseEndpoint(values.to);
    from = values.from ? parseEndpoint(values.from) : undefined;
  } catch (e) {
    throw new UsageError(`--from/--to: ${(e as Error).message}`);
  }

  const state = PolicyState.from(await loadManifestDir(dir));
  if (!from) {
    // The node's address: the destination pod's hostIP.
    const pod = 'pod' in to ? state.pod(to.pod) : state.podByIp(to.ip);
    if (!pod?.hostIP) throw new Error('--from-node without --from needs a destination pod with status.hostIP');
    from = { ip: pod.hostIP };
  }
  const conn: Connection = { from, to, protocol: protocol as Protocol, port: Number(values.port) };
  if (values['from-node']) conn.fromNode = true;
  if (values.family) conn.family = Number(values.family) as 4 | 6;
  const { verdict, text } = explain(state, conn);
  io.stdout(values.json ? JSON.stringify({ connection: conn, ...verdict }, null, 2) + '\n' : text);
  return 0;
}

export async function run(argv: string[], io: CliIo = processIo): Promise<number> {
  const [sub, ...rest] = argv;
  if (!sub || sub === '-h' || sub === '--help' || sub === 'help') {
    io.stdout(USAGE);
    return sub ? 0 : 2;
  }
  try {
    if (sub === 'explain') return await explainCmd(rest, io);
    throw new UsageError(`unknown subcommand ${JSON.stringify(sub)}`);
  } catch (e) {
    const err = e as Error & { code?: string };
    if (e instanceof UsageError || err.code?.startsWith('ERR_PARSE_ARGS')) {
      io.stderr(`skiff policy: ${err.message}\n${USAGE}`);
      return 2;
    }
    io.stderr(`skiff policy: ${e instanceof ConnectionError ? 'connection: ' : ''}${err.message}\n`);
    return 1;
  }
}
