// The proxy plugged into the real agent, driving a node namespace it does not live
// in (--netns): the agent loads the proxy plugin, programs `ip skiff-proxy` inside
// that namespace, opens the healthCheckNodePort server inside it (not in the agent's
// own namespace), reports the proxy in /healthz (503 while nft fails, 200 again after
// the full retry) and /metrics, and a restarted agent adopts the table it finds.
import t from 'tap';
import { execFile } from 'node:child_process';
import { connect } from 'node:net';
import { promisify } from 'node:util';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { Agent } from '../../src/agent/agent.js';
import { defaultConfig, type AgentConfig } from '../../src/agent/config.js';
import { realExec, type Executor } from '../../src/os/exec.js';
import { slice, svc } from '../../src/proxy/fixtures.js';
import type { Proxier } from '../../src/proxy/proxier.js';
import { PROXY_TABLES, proxyTableName, shardOf } from '../../src/proxy/ruleset.js';
import { makeNetns, nsExec, requireRoot } from '../helpers/netns.js';

const HC_PORT = 32417;
const execFileP = promisify(execFile);

async function waitFor<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, ms = 10_000): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** HTTP GET from inside a namespace: "STATUS BODY". Asynchronous: the server answering is in this process. */
async function nsGet(ns: string, url: string): Promise<string> {
  const code = `fetch(${JSON.stringify(url)}).then(async r=>console.log(r.status+' '+await r.text()),e=>console.log('ERR '+(e.cause?.code??e.message)))`;
  const { stdout } = await execFileP('ip', ['netns', 'exec', ns, process.execPath, '-e', code], { timeout: 10_000 });
  return stdout.trim();
}

function refusedHere(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.on('connect', () => (s.destroy(), resolve(false)));
    s.on('error', () => resolve(true));
  });
}

if (requireRoot(t)) {
  const ns = makeNetns('pxagent');
  nsExec(ns.name, ['ip', 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth1']);
  nsExec(ns.name, ['ip', 'addr', 'add', '192.168.60.1/24', 'dev', 'eth0']);
  nsExec(ns.name, ['ip', 'link', 'set', 'eth0', 'up']);
  nsExec(ns.name, ['ip', 'link', 'set', 'eth1', 'up']);
  const dir = await mkdtemp(join(tmpdir(), 'skt-px-agent-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));

  const lb = svc('lb', { clusterIP: '10.96.0.20', type: 'LoadBalancer', eTP: 'Local', healthCheckNodePort: HC_PORT, ports: [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30417 }] });
  const writeSlice = (node: string) => writeFile(join(dir, '20-slices.yaml'), stringify(slice('lb', [{ ip: '10.244.1.5', node }])));
  await writeFile(join(dir, '10-services.yaml'), stringify(lb));
  await writeSlice('n1');

  // nft fails while `broken` is set (the proxy's transactions), to see /healthz follow.
  let broken = false;
  const exec: Executor = (cmd, args, o) => (broken && args.includes('nft') && args.includes('-f') ? Promise.resolve({ code: 1, stdout: '', stderr: 'Error: injected' }) : realExec(cmd, args, o));

  const config: AgentConfig = { ...defaultConfig(), nodeName: 'n1', manifests: dir, netns: ns.path, metricsAddress: '127.0.0.1:0', cniConfDir: join(dir, 'net.d'), ipamDataDir: join(dir, 'ipam') };
  config.proxy = { ...config.proxy, minSyncInterval: 100 };
  // The nft binary, so failures can be injected at the exec seam (the default netlink
  // runner's failures are covered by test/integration/nftnl.test.ts).
  config.nftables = 'nft';
  config.sync = { ...config.sync, backoffInitial: 200, backoffMax: 500 };
  const agents: Agent[] = [];
  const start = async () => {
    const a = new Agent(config, { only: ['proxy'], exec, preconditions: false });
    agents.push(a);
    await a.start();
    await a.whenSynced();
    const p = a.reconcilers.find((r) => r.name === 'proxy') as Proxier | undefined;
    if (!p) throw new Error('the proxy reconciler was not registered');
    await waitFor('the first proxy sync', () => p.hasSynced());
    return { a, p };
  };
  const stopAll = async () => {
    for (const a of agents.splice(0)) {
      await a.stop();
      await (a.reconcilers.find((r) => r.name === 'proxy') as Proxier | undefined)?.close();
    }
  };
  t.teardown(stopAll);
  const http = async (a: Agent, path: string) => {
    const r = await fetch(`http://127.0.0.1:${a.httpPort}${path}`);
    return { status: r.status, body: await r.text() };
  };

  let { a, p } = await start();

  t.test('the proxy programs the node namespace, not the agent\'s', async (t) => {
    const out = nsExec(ns.name, ['nft', 'list', 'table', 'ip', proxyTableName(shardOf('default/lb'))]);
    t.match(out, /10\.96\.0\.20 \. tcp \. 80 comment "default\/lb:http" : goto service-/);
    t.match(out, /fib daddr type local/, 'NodePorts on every local address');
  });

  t.test('healthCheckNodePort is served inside the node namespace only', async (t) => {
    t.match(await nsGet(ns.name, `http://192.168.60.1:${HC_PORT}/healthz`), /^200 .*"localEndpoints":1/);
    t.ok(await refusedHere(HC_PORT), 'nothing listens on the port in the agent\'s own namespace');
    await writeSlice('n2');
    const r = await waitFor('503 once the endpoint is on another node', async () => {
      const x = await nsGet(ns.name, `http://127.0.0.1:${HC_PORT}/`);
      return x.startsWith('503') ? x : undefined;
    });
    t.match(r, /"localEndpoints":0/);
    await writeSlice('n1');
    await waitFor('200 again', async () => (await nsGet(ns.name, `http://127.0.0.1:${HC_PORT}/`)).startsWith("200 ") || undefined);
  });

  t.test('/healthz reflects the proxy: 503 while its nft transactions fail, 200 after the retry', async (t) => {
    t.equal((await http(a, '/healthz')).status, 200);
    broken = true;
    await writeSlice('n2');
    const bad = await waitFor('/healthz 503', async () => {
      const r = await http(a, '/healthz');
      return r.status === 503 ? r : undefined;
    });
    t.match(bad.body, /proxy: unhealthy: last proxy sync failed: .*injected/);
    broken = false;
    await waitFor('/healthz 200', async () => ((await http(a, '/healthz')).status === 200 ? true : undefined));
    t.match(await nsGet(ns.name, `http://127.0.0.1:${HC_PORT}/`), /^503 /, 'the change made while nft failed is applied');
    await writeSlice('n1');
    await waitFor('200 again', async () => (await nsGet(ns.name, `http://127.0.0.1:${HC_PORT}/`)).startsWith("200 ") || undefined);
  });

  t.test('metrics: kube-proxy\'s names under skiff_', async (t) => {
    const m = (await http(a, '/metrics')).body;
    for (const name of [
      'skiff_sync_proxy_rules_duration_seconds_count{mode="full"}',
      'skiff_sync_proxy_rules_duration_seconds_count{mode="partial"}',
      'skiff_network_programming_duration_seconds_count',
      'skiff_sync_proxy_rules_last_timestamp_seconds',
      'skiff_proxy_changes_pending 0',
      'skiff_proxy_changes_total{kind="EndpointSlice"}',
      'skiff_sync_proxy_rules_nftables_failures_total',
      'skiff_proxy_services{family="ipv4"} 1',
      'skiff_proxy_endpoints{family="ipv4"} 1',
    ]) t.ok(m.includes(name), name);
    t.match(m, /skiff_sync_proxy_rules_nftables_failures_total [1-9]/, 'the injected failures were counted');
  });

  t.test('a restarted agent adopts the table it finds', async (t) => {
    await stopAll();
    t.match(nsExec(ns.name, ['nft', 'list', 'table', 'ip', proxyTableName(shardOf('default/lb'))]), /10\.96\.0\.20/, 'rules stay while the agent is down');
    ({ a, p } = await start());
    t.equal(p.health().ok, true);
    t.equal((await http(a, '/healthz')).status, 200);
    const tables = nsExec(ns.name, ['nft', 'list', 'tables']).trim().split('\n').filter((l) => l.includes('skiff-proxy'));
    t.same(tables.sort(), PROXY_TABLES.map((x) => `table ip ${proxyTableName(x)}`).sort(), 'the main table and the shards, not a second copy');
    t.match(await nsGet(ns.name, `http://127.0.0.1:${HC_PORT}/`), /^200 /);
  });
}
