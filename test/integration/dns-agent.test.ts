// The agent's DNS plug-in driving a node namespace through --netns (netnsPath): it
// creates the dummy interface skiff-dns with 169.254.20.10, opens its sockets inside
// that namespace, answers dig over UDP and TCP there, recreates the interface after it
// is deleted, reports readiness/health and CoreDNS metrics, and --uninstall removes
// the interface. Needs root (network namespaces).
import { Registry } from 'prom-client';
import t from 'tap';
import { loadPlugins, registeredReconcilers } from '../../src/agent/agent.js';
import { defaultConfig } from '../../src/agent/config.js';
import { createDnsReconciler, DNS_DEVICE } from '../../src/dns/agent.js';
import { realExec } from '../../src/os/exec.js';
import { logger } from '../../src/util/log.js';
import { FakeReader, fixture } from '../helpers/dns.js';
import { makeNetns, nsExec, requireRoot } from '../helpers/netns.js';

if (requireRoot(t)) {
  t.test('the dns reconciler in a node namespace', async (t) => {
    await loadPlugins();
    t.ok(registeredReconcilers().some((r) => r.name === 'dns'), 'the plug-in registers "dns"');
    const ns = makeNetns('dn-agent');
    const registry = new Registry();
    const reader = new FakeReader(fixture());
    const config = { ...defaultConfig(), nodeName: 'n1' };
    const r = createDnsReconciler({ nodeName: 'n1', view: reader, registry, log: logger('dns-test'), exec: realExec, netnsPath: ns.path }, config)!;
    t.ok(r, 'enabled by default');
    t.teardown(() => r.stop());
    t.notOk(r.hasSynced(), 'not ready before its first sync');
    await r.sync({ full: true, changes: [] });
    t.ok(r.hasSynced(), 'ready once serving with a synced source');
    t.same(r.health(), { ok: true });
    // On skiff-dns, or (kernels without the dummy driver) on lo labelled lo:skiff-dns.
    const addr = nsExec(ns.name, ['ip', '-4', '-o', 'addr', 'show']);
    t.match(addr, /(skiff-dns|lo:skiff-dns)\s+inet 169\.254\.20\.10\/32|inet 169\.254\.20\.10\/32 .*(skiff-dns|lo:skiff-dns)/, 'the node namespace holds 169.254.20.10/32, ours');
    // Asynchronously: the server answers misses on this process's event loop.
    const dig = async (...args: string[]) => (await realExec('dig', ['+short', '+time=2', '+tries=1', '@169.254.20.10', ...args], { netns: ns.name })).stdout.trim();
    t.equal(await dig('web.prod.svc.cluster.local'), '10.96.0.10', 'answers over UDP inside the namespace');
    t.equal(await dig('+tcp', 'web.prod.svc.cluster.local'), '10.96.0.10', 'and over TCP');
    t.equal(await dig('-x', '10.96.0.10'), 'web.prod.svc.cluster.local.', 'PTR in the service CIDR');
    // The interface is deleted behind the agent's back: the next sync restores it.
    if (/skiff-dns\s+inet|^\d+: skiff-dns/m.test(addr)) nsExec(ns.name, ['ip', 'link', 'del', DNS_DEVICE]);
    else nsExec(ns.name, ['ip', 'addr', 'del', '169.254.20.10/32', 'dev', 'lo']);
    await r.sync({ full: true, changes: [] });
    t.equal(await dig('web.prod.svc.cluster.local'), '10.96.0.10', 'answers again after the interface came back');
    const text = await registry.metrics();
    t.match(text, /coredns_dns_requests_total\{[^}]*zone="cluster.local."[^}]*\} \d+/, 'CoreDNS request counter');
    t.match(text, /coredns_dns_responses_total\{[^}]*rcode="NOERROR"\} \d+/, 'CoreDNS responses by rcode');
    await r.cleanup();
    t.notMatch(nsExec(ns.name, ['ip', '-4', '-o', 'addr', 'show']), /169\.254\.20\.10/, 'uninstall removed the address (and skiff-dns)');
    t.notOk(r.hasSynced(), 'not ready once stopped');
  });

  t.test('a bad dns.listen is a clear error', async (t) => {
    const ctx = { nodeName: 'n1', view: new FakeReader([]), registry: new Registry(), log: logger('dns-test'), exec: realExec };
    t.throws(() => createDnsReconciler(ctx, { ...defaultConfig(), dns: { enabled: true, listen: 'dns.local:53' } }), /dns\.listen/);
    t.equal(createDnsReconciler(ctx, { ...defaultConfig(), dns: { enabled: false, listen: '169.254.20.10:53' } }), undefined, 'disabled');
  });
}
