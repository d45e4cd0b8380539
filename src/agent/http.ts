// /metrics, /healthz and /readyz. The verdicts are pure functions of a status
// snapshot (unit-tested without a server); the server only serializes them.
//
// /healthz answers "is the agent stuck?": 503 when a started reconciler has not
// succeeded for more than staleFactor x its sync period, or reports itself unwell.
// A reconciler waiting for its source counts as healthy: restarting an agent that
// cannot reach the API server does not help (kube-proxy behaves the same way).
// /readyz answers "has the node's data plane been programmed?": every source has
// synced and every reconciler has applied its state once.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import type { Logger } from '../util/log.js';
import { parseHostPort } from './config.js';
import type { RunnerStatus } from './runner.js';

export interface ReconcilerHealth extends RunnerStatus {
  health?: { ok: boolean; detail?: string };
}

export interface AgentStatus {
  /** Clock time of the snapshot (ms, same clock as the runner statuses). */
  now: number;
  sources: { name: string; synced: boolean }[];
  reconcilers: ReconcilerHealth[];
}

export interface Verdict {
  ok: boolean;
  problems: string[];
}

export function healthOf(s: AgentStatus, staleFactor: number): Verdict {
  const problems: string[] = [];
  for (const r of s.reconcilers) {
    if (r.health && !r.health.ok) problems.push(`${r.name}: unhealthy${r.health.detail ? `: ${r.health.detail}` : ''}`);
    if (!r.started) continue;
    const since = r.lastSuccess ?? r.startedAt;
    if (since === undefined) continue;
    const age = s.now - since;
    const limit = staleFactor * r.periodMs;
    if (age > limit) {
      const what = r.lastSuccess === undefined ? 'no successful sync since start' : 'last successful sync';
      problems.push(
        `${r.name}: ${what} ${(age / 1000).toFixed(1)}s ago (limit ${(limit / 1000).toFixed(1)}s)` +
          (r.consecutiveFailures ? `; ${r.consecutiveFailures} consecutive failures, last: ${r.lastError ?? 'unknown'}` : ''),
      );
    }
  }
  return { ok: problems.length === 0, problems };
}

export function readinessOf(s: AgentStatus): Verdict {
  const problems: string[] = [];
  for (const src of s.sources) if (!src.synced) problems.push(`source ${src.name}: not synced`);
  for (const r of s.reconcilers) {
    if (!r.hasSynced) problems.push(`reconciler ${r.name}: not applied yet${r.lastError ? ` (last error: ${r.lastError})` : ''}`);
  }
  return { ok: problems.length === 0, problems };
}

export interface HttpServerOptions {
  address: string;
  registry: Registry;
  status: () => AgentStatus;
  staleFactor: number;
  log?: Logger;
}

export interface AgentHttpServer {
  server: Server;
  /** The bound address (port resolved when 0 was asked for). */
  host: string;
  port: number;
  close(): Promise<void>;
}

function send(res: ServerResponse, code: number, type: string, body: string): void {
  res.writeHead(code, { 'content-type': type, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
  res.end(body);
}

function verdictBody(v: Verdict, s: AgentStatus): string {
  return (
    JSON.stringify({
      status: v.ok ? 'ok' : 'fail',
      problems: v.problems,
      sources: s.sources,
      reconcilers: s.reconcilers.map((r) => ({
        name: r.name,
        applied: r.hasSynced,
        syncs: r.syncs,
        consecutiveFailures: r.consecutiveFailures,
        ...(r.lastSuccess !== undefined ? { lastSuccessAgeSeconds: (s.now - r.lastSuccess) / 1000 } : {}),
        ...(r.lastError ? { lastError: r.lastError } : {}),
      })),
    }) + '\n'
  );
}

export async function startHttpServer(o: HttpServerOptions): Promise<AgentHttpServer> {
  const hp = parseHostPort(o.address);
  if (!hp) throw new Error(`metricsAddress: invalid value ${JSON.stringify(o.address)} (host:port)`);
  const [host, port] = hp;

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, 'text/plain', 'method not allowed\n');
    switch (path) {
      case '/metrics': {
        const text = await o.registry.metrics();
        return send(res, 200, o.registry.contentType, text);
      }
      case '/healthz': {
        const s = o.status();
        const v = healthOf(s, o.staleFactor);
        return send(res, v.ok ? 200 : 503, 'application/json', verdictBody(v, s));
      }
      case '/readyz': {
        const s = o.status();
        const v = readinessOf(s);
        return send(res, v.ok ? 200 : 503, 'application/json', verdictBody(v, s));
      }
      default:
        return send(res, 404, 'text/plain', 'not found: try /metrics, /healthz, /readyz\n');
    }
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((e: unknown) => {
      o.log?.error('http handler failed', { url: req.url, error: String(e) });
      if (!res.headersSent) send(res, 500, 'text/plain', `internal error: ${String(e)}\n`);
      else res.destroy();
    });
  });
  // Probes must never keep the process alive at shutdown.
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) =>
      reject(new Error(`metricsAddress: cannot listen on ${o.address}: ${e.code ?? e.message}`)),
    );
    server.listen(port, host === '' ? undefined : host, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  o.log?.info('serving /metrics, /healthz, /readyz', { address: `${addr.address}:${addr.port}` });
  return {
    server,
    host: addr.address,
    port: addr.port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
