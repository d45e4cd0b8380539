// Plugs the cluster DNS server into the agent (imported by loadPlugins): the "dns"
// reconciler makes the node-local listen address exist and runs one DnsServer on it.
//
// The address (dns.listen, default 169.254.20.10:53, NodeLocal DNSCache's) is usually
// not on any interface: the reconciler then puts it on a dummy interface it owns,
// `skiff-dns`, in the node's namespace (the agent's own, or --netns). The server's
// sockets are opened inside that namespace too (the fast path binds them there
// synchronously). The server follows the cluster view itself (changes are visible
// within the same tick); the reconciler re-checks the address on every sync, so a
// deleted interface comes back. /readyz passes once the server answers and the source
// has synced; /healthz fails if the server stopped. Metrics carry CoreDNS's names.
import { isIPv4, isIPv6 } from 'node:net';
import { registerReconciler } from '../agent/agent.js';
import type { AgentConfig } from '../agent/config.js';
import type { AgentContext, Reconciler, SyncRequest } from '../agent/reconciler.js';
import { mustExec, type Executor } from '../os/exec.js';
import type { Logger } from '../util/log.js';
import { parseHostPort } from './forward.js';
import { DnsServer, type DnsServerOptions } from './server.js';

export const DNS_DEVICE = 'skiff-dns';
/** The label of the address when it has to live on lo (IPv4 only has labels). */
export const LO_LABEL = 'lo:skiff-dns';

export interface DnsReconcilerOptions {
  listen: string;
  zone: string;
  /** Reverse zones skiff answers authoritatively (service and cluster CIDRs). */
  reverseCidrs: string[];
  /** Clients that may use forwarding besides loopback and the nodes' pod CIDRs. */
  allow: string[];
  netnsPath?: string;
  /** Policy-aware DNS (policy.enabled && policy.policyAwareDns). */
  policyAware?: boolean;
  /** Extra server options (tests: upstreams, threads). */
  server?: Partial<DnsServerOptions>;
}

export class DnsReconciler implements Reconciler {
  readonly name = 'dns';
  /** Nodes: their pod CIDRs feed the forwarding ACL (the server follows them itself); a sync re-checks the address. */
  readonly kinds = ['Node'] as const;
  private server: DnsServer | null = null;
  private started = false;
  private failed: string | undefined;
  private readonly host: string;
  private readonly log: Logger;

  constructor(private readonly ctx: AgentContext, private readonly o: DnsReconcilerOptions) {
    this.host = parseHostPort(o.listen, 53, 'dns.listen').host;
    this.log = ctx.log;
  }

  private ip(args: string[]): [string, string[]] {
    return this.o.netnsPath ? ['nsenter', [`--net=${this.o.netnsPath}`, 'ip', ...args]] : ['ip', args];
  }

  private async run(exec: Executor, args: string[]): Promise<string> {
    const [cmd, argv] = this.ip(args);
    return mustExec(exec, cmd, argv);
  }

  /** Whether the listen address is a wildcard or loopback (nothing to create). */
  private needsDevice(): boolean {
    const h = this.host;
    return !(h === '0.0.0.0' || h === '::' || h.startsWith('127.') || h === '::1');
  }

  /**
   * Puts the listen address on skiff-dns unless some interface already has it. Kernels
   * without the dummy driver (some containers) get it on lo instead, labelled
   * lo:skiff-dns so it is recognisably ours.
   */
  private async ensureAddress(): Promise<void> {
    if (!this.needsDevice()) return;
    const exec = this.ctx.exec;
    const v6 = isIPv6(this.host);
    const addrs = JSON.parse(await this.run(exec, ['-j', v6 ? '-6' : '-4', 'addr', 'show'])) as {
      ifname: string; addr_info?: { local: string; label?: string }[];
    }[];
    const holder = addrs.find((l) => l.addr_info?.some((a) => a.local === this.host));
    if (holder) {
      if (holder.ifname === DNS_DEVICE) await this.run(exec, ['link', 'set', DNS_DEVICE, 'up']);
      return; // ours on lo, or someone else's address: just use it
    }
    const cidr = `${this.host}/${v6 ? 128 : 32}`;
    const links = JSON.parse(await this.run(exec, ['-j', 'link', 'show'])) as { ifname: string }[];
    let device = DNS_DEVICE;
    if (!links.some((l) => l.ifname === DNS_DEVICE)) {
      const [cmd, argv] = this.ip(['link', 'add', DNS_DEVICE, 'type', 'dummy']);
      const r = await exec(cmd, argv);
      if (r.code !== 0) {
        if (!/Unknown device type|not supported/i.test(r.stderr)) throw new Error(`dns: ip link add ${DNS_DEVICE} type dummy: ${r.stderr.trim()}`);
        device = 'lo';
        this.log.info('no dummy interface support: putting the DNS address on lo', { address: this.host, label: LO_LABEL });
      } else {
        this.log.info('created the DNS interface', { device: DNS_DEVICE });
      }
    }
    if (device === 'lo') {
      await this.run(exec, ['addr', 'add', cidr, 'dev', 'lo', ...(v6 ? ['nodad'] : ['label', LO_LABEL])]);
      await this.run(exec, ['link', 'set', 'lo', 'up']);
    } else {
      await this.run(exec, ['addr', 'add', cidr, 'dev', DNS_DEVICE, ...(v6 ? ['nodad'] : [])]);
      await this.run(exec, ['link', 'set', DNS_DEVICE, 'up']);
    }
    this.log.info('added the DNS address', { device, address: this.host });
  }

  async sync(_req: SyncRequest): Promise<void> {
    await this.ensureAddress();
    if (this.server) return;
    const s = new DnsServer({
      reader: this.ctx.view,
      listen: this.o.listen,
      zone: this.o.zone,
      reverseCidrs: this.o.reverseCidrs,
      allow: ['127.0.0.0/8', '::1/128', ...this.o.allow],
      registry: this.ctx.registry,
      log: this.log,
      ...(this.o.policyAware ? { policyAware: true } : {}),
      ...(this.o.netnsPath ? { netnsPath: this.o.netnsPath } : {}),
      ...this.o.server,
    });
    try {
      await s.start();
    } catch (e) {
      this.failed = (e as Error).message;
      await s.stop().catch(() => {});
      s.metrics.unregister();
      throw new Error(`dns: cannot listen on ${this.o.listen}: ${this.failed}`);
    }
    this.failed = undefined;
    this.server = s;
    this.started = true;
  }

  /** The running server (tests). */
  get dnsServer(): DnsServer | null {
    return this.server;
  }

  hasSynced(): boolean {
    return this.started && (this.server?.isReady() ?? false);
  }

  health(): { ok: boolean; detail?: string } {
    if (this.started && !this.server) return { ok: false, detail: 'the DNS server stopped' };
    if (this.failed) return { ok: false, detail: this.failed };
    return { ok: true };
  }

  /** Closes the sockets (agent shutdown). The address stays, like all kernel state. */
  async stop(): Promise<void> {
    const s = this.server;
    this.server = null;
    this.started = false;
    await s?.stop();
  }

  /** `skiff agent --uninstall`: removes skiff-dns (and with it the address), or our address on lo. */
  async cleanup(): Promise<void> {
    await this.stop();
    const [cmd, argv] = this.ip(['link', 'del', DNS_DEVICE]);
    const r = await this.ctx.exec(cmd, argv);
    if (r.code !== 0 && !/Cannot find device|does not exist/.test(r.stderr)) throw new Error(`dns: ip link del ${DNS_DEVICE}: ${r.stderr.trim()}`);
    if (!this.needsDevice()) return;
    const v6 = isIPv6(this.host);
    const lo = JSON.parse(await this.run(this.ctx.exec, ['-j', v6 ? '-6' : '-4', 'addr', 'show', 'dev', 'lo'])) as { addr_info?: { local: string; label?: string }[] }[];
    const mine = lo[0]?.addr_info?.some((a) => a.local === this.host && (v6 || a.label === LO_LABEL));
    if (mine) await this.run(this.ctx.exec, ['addr', 'del', `${this.host}/${v6 ? 128 : 32}`, 'dev', 'lo']);
  }
}

export function createDnsReconciler(ctx: AgentContext, c: AgentConfig): DnsReconciler | undefined {
  if (!c.dns.enabled) return undefined;
  const host = parseHostPort(c.dns.listen, 53, 'dns.listen').host;
  if (!isIPv4(host) && !isIPv6(host)) throw new Error(`dns.listen: invalid address ${JSON.stringify(c.dns.listen)} (an IP address and port)`);
  return new DnsReconciler(ctx, {
    listen: c.dns.listen,
    zone: c.clusterDomain,
    reverseCidrs: [c.serviceCIDR, c.clusterCIDR],
    allow: [c.clusterCIDR],
    // Without enforcement there is nothing for DNS to mirror: the option needs both.
    policyAware: c.policy.enabled && c.policy.policyAwareDns,
    ...(ctx.netnsPath ? { netnsPath: ctx.netnsPath } : {}),
  });
}

registerReconciler('dns', createDnsReconciler);
