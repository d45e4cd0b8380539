// Per-service health check servers for externalTrafficPolicy: Local services: an
// external load balancer probes healthCheckNodePort on every node and sends traffic
// only to nodes answering 200, i.e. nodes with a local endpoint (503 otherwise).
// The body follows kube-proxy's: {"service":{"namespace","name"},"localEndpoints":N,
// "serviceProxyHealthy":bool}.
import { createServer, type Server } from 'node:http';
import { inNetns } from '../os/netns.js';
import type { Logger } from '../util/log.js';

export interface HealthTarget {
  namespace: string;
  name: string;
  localEndpoints: number;
}

export class HealthCheckServers {
  private readonly servers = new Map<number, { server: Server; target: HealthTarget }>();
  /** Reported in every answer; the proxier sets it from its own health. */
  proxyHealthy = true;

  constructor(
    /**
     * netnsPath: open the listening sockets inside this network namespace (the agent
     * drives a node namespace it does not live in). They then listen on every address
     * there (dual-stack wildcard, IPv4 only if IPv6 is off): a bind with a host name
     * would resolve it asynchronously, after we have left the namespace.
     */
    private readonly opts: { bind: string; log?: Logger; netnsPath?: string },
  ) {}

  /** Opens, updates and closes servers so exactly `desired` (port -> target) are served. */
  async sync(desired: ReadonlyMap<number, HealthTarget>): Promise<void> {
    for (const [port, s] of [...this.servers]) {
      if (desired.has(port)) continue;
      this.servers.delete(port);
      await new Promise<void>((r) => {
        s.server.close(() => r());
        s.server.closeAllConnections();
      });
    }
    for (const [port, target] of desired) {
      const cur = this.servers.get(port);
      if (cur) {
        cur.target = target;
        continue;
      }
      const entry = { server: createServer(), target };
      entry.server.on('request', (_req, res) => {
        const t = entry.target;
        const body = JSON.stringify({ service: { namespace: t.namespace, name: t.name }, localEndpoints: t.localEndpoints, serviceProxyHealthy: this.proxyHealthy });
        res.writeHead(t.localEndpoints > 0 ? 200 : 503, { 'Content-Type': 'application/json', 'X-Content-Type-Options': 'nosniff' });
        res.end(body);
      });
      try {
        await new Promise<void>((resolve, reject) => {
          entry.server.once('error', reject);
          const done = () => {
            entry.server.off('error', reject);
            resolve();
          };
          // Without a host, listen() creates and binds the socket synchronously.
          if (this.opts.netnsPath) inNetns(this.opts.netnsPath, () => entry.server.listen(port, done));
          else entry.server.listen(port, this.opts.bind, done);
        });
        this.servers.set(port, entry);
      } catch (e) {
        // Another process may hold the port; the service still works, only LB probing does not.
        this.opts.log?.warn('health check server failed to listen', { port, service: `${target.namespace}/${target.name}`, error: (e as Error).message });
      }
    }
  }

  ports(): number[] {
    return [...this.servers.keys()].sort((a, b) => a - b);
  }

  async close(): Promise<void> {
    await this.sync(new Map());
  }
}
