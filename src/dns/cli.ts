// `skiff dns`: the cluster DNS server on its own.
//   skiff dns (--manifests DIR | --kubeconfig FILE | --in-cluster) --listen ADDR:PORT
//     [--zone cluster.local] [--upstream ADDR:PORT ...] [--ttl 5] [--allow CIDR ...]
//     [--reverse CIDR ...] [--http ADDR:PORT] [--policy-aware]
import type http from 'node:http';
import { Registry } from 'prom-client';
import { ClusterView, createSource } from '../cluster/index.js';
import { logger } from '../util/log.js';
import { DnsServer, startHttp } from './server.js';

export { DnsServer, healthHandler, startHttp, type DnsServerOptions } from './server.js';

const USAGE = `usage: skiff dns (--manifests DIR | --kubeconfig FILE | --in-cluster) --listen ADDR:PORT
                 [--zone cluster.local] [--upstream ADDR:PORT ...] [--ttl 5]
                 [--allow CIDR ...] [--reverse CIDR ...] [--http ADDR:PORT]
                 [--policy-aware]   (NXDOMAIN for Services the client's pod may not reach)
`;

export interface DnsFlags {
  manifests?: string;
  kubeconfig?: string;
  inCluster: boolean;
  listen: string;
  zone: string;
  upstreams?: string[];
  ttl: number;
  allow?: string[];
  reverse: string[];
  http?: string;
  policyAware: boolean;
}

/** Parses the flags; throws with the flag's name on bad input. */
export function parseFlags(argv: string[]): DnsFlags {
  const f: DnsFlags = { inCluster: false, listen: '', zone: 'cluster.local', ttl: 5, reverse: [], policyAware: false };
  const value = (i: number, name: string): string => {
    const v = argv[i + 1];
    if (v === undefined || v.startsWith('--')) throw new Error(`${name}: missing value`);
    return v;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const [name, inline] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    const take = (): string => {
      if (inline !== undefined) return inline;
      const v = value(i, name);
      i++;
      return v;
    };
    switch (name) {
      case '--manifests': f.manifests = take(); break;
      case '--kubeconfig': f.kubeconfig = take(); break;
      case '--in-cluster': f.inCluster = true; break;
      case '--listen': f.listen = take(); break;
      case '--zone': f.zone = take(); break;
      case '--upstream': (f.upstreams ??= []).push(...take().split(',').filter(Boolean)); break;
      case '--ttl': {
        const v = take();
        const n = Number(v);
        if (!/^\d+$/.test(v) || n > 86400) throw new Error(`--ttl: invalid value ${JSON.stringify(v)} (seconds, 0..86400)`);
        f.ttl = n;
        break;
      }
      case '--allow': (f.allow ??= []).push(...take().split(',').filter(Boolean)); break;
      case '--reverse': f.reverse.push(...take().split(',').filter(Boolean)); break;
      case '--http': f.http = take(); break;
      case '--policy-aware':
        if (inline !== undefined && inline !== 'true' && inline !== 'false') throw new Error(`--policy-aware: invalid value ${JSON.stringify(inline)} (true or false)`);
        f.policyAware = inline !== 'false';
        break;
      default:
        throw new Error(`unknown flag ${JSON.stringify(a)}`);
    }
  }
  if (!f.listen) throw new Error('--listen: required (e.g. --listen 127.0.0.1:53)');
  return f;
}

export async function run(argv: string[]): Promise<number> {
  if (argv.includes('-h') || argv.includes('--help')) {
    process.stdout.write(USAGE);
    return 0;
  }
  let flags: DnsFlags;
  try {
    flags = parseFlags(argv);
  } catch (e) {
    process.stderr.write(`skiff dns: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  const log = logger('dns');
  const source = createSource({
    ...(flags.manifests ? { manifests: flags.manifests } : {}),
    ...(flags.kubeconfig ? { kubeconfig: flags.kubeconfig } : {}),
    ...(flags.inCluster ? { inCluster: true } : {}),
    log,
  });
  const view = new ClusterView(source);
  const registry = new Registry();
  const server = new DnsServer({
    reader: view, listen: flags.listen, zone: flags.zone, ttl: flags.ttl, reverseCidrs: flags.reverse,
    ...(flags.upstreams ? { upstreams: flags.upstreams } : {}),
    ...(flags.allow ? { allow: flags.allow } : {}),
    ...(flags.policyAware ? { policyAware: true } : {}),
    registry, log,
  });
  let httpServer: http.Server | undefined;
  // Listen first: until the source syncs, in-zone negative answers are SERVFAIL, and /ready says so.
  await server.start();
  if (flags.http) httpServer = await startHttp(flags.http, server, registry);
  await source.start();
  await source.whenSynced();
  log.info('cluster source synced; answering', { zone: server.zone.zone, names: server.zone.size });
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  await server.stop();
  await source.stop();
  httpServer?.close();
  return 0;
}
