// skiff-cni first in a conflist, followed by Debian's reference plugins (tuning,
// bandwidth, portmap from containernetworking-plugins), run the way libcni runs a list:
// each plugin gets the list's name and cniVersion, the previous plugin's result as
// prevResult and the runtimeConfig its capabilities ask for; CHECK and DEL get the
// list's final result, DEL in reverse order. The later plugins read skiff's result for
// real work (tuning finds the pod interface by name and sandbox, bandwidth the host veth
// as the pod interface's peer, portmap the pod address through ips[].interface), so a
// wrong result fails them. Everything lives in skt-* namespaces removed at exit.
import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeNetns, nsExec, requireRoot } from '../helpers/netns.js';
import { CNI_PATH, runPlugin, type PluginResult } from '../helpers/cni.js';
import { hostVethName } from '../../src/bridge/bridge.js';

const DEBIAN = ['tuning', 'bandwidth', 'portmap'];
const missing = DEBIAN.filter((p) => !existsSync(`/usr/lib/cni/${p}`));
const noIptables = !['/usr/sbin/iptables', '/sbin/iptables'].some((p) => existsSync(p));

/** The executable for a plugin type, found in CNI_PATH as libcni does. */
function pluginPath(type: string): string {
  for (const dir of CNI_PATH.split(':')) if (existsSync(join(dir, type))) return join(dir, type);
  throw new Error(`${type} is not in ${CNI_PATH}`);
}

interface ConfList {
  cniVersion: string;
  name: string;
  plugins: Record<string, unknown>[];
}

/** A plugin's configuration as libcni builds it from the list (buildOneConfig + injectRuntimeConfig). */
function pluginConf(list: ConfList, p: Record<string, unknown>, prevResult: unknown, runtime: Record<string, unknown>): Record<string, unknown> {
  const c: Record<string, unknown> = { ...p, name: list.name, cniVersion: list.cniVersion };
  const caps = (p.capabilities ?? {}) as Record<string, boolean>;
  const rc = Object.fromEntries(Object.entries(runtime).filter(([k]) => caps[k]));
  if (Object.keys(rc).length) c.runtimeConfig = rc;
  if (prevResult !== undefined) c.prevResult = prevResult;
  return c;
}

/** A one-line TCP client in a namespace: connects, prints what it reads. */
function tcpRead(ns: string, ip: string, port: number): Promise<string> {
  const code = `const s=require('node:net').connect(${port},'${ip}');let b='';s.setTimeout(3000,()=>{console.log('timeout');process.exit(1)});s.on('data',d=>b+=d);s.on('end',()=>{console.log(b);process.exit(0)});s.on('error',e=>{console.log(e.code);process.exit(1)})`;
  return new Promise((resolve) => {
    const p = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', code], { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.on('close', () => resolve(out.trim()));
  });
}

if (requireRoot(t)) {
  const node = makeNetns('node');
  const dataDir = mkdtempSync(join(tmpdir(), 'skt-ipam-'));
  const tuningDir = mkdtempSync(join(tmpdir(), 'skt-tuning-'));
  t.teardown(() => {
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(tuningDir, { recursive: true, force: true });
  });
  const reservations = () => readdirSync(join(dataDir, 'chainnet')).filter((f) => /^[\d.]+$|:/.test(f));
  const link = (ns: string, dev: string) => JSON.parse(nsExec(ns, ['ip', '-j', 'link', 'show', 'dev', dev]))[0];
  const TUNED_MAC = '0a:58:0a:64:00:42';

  const list = (cniVersion: string): ConfList => ({
    cniVersion,
    name: 'chainnet',
    plugins: [
      {
        type: 'skiff-cni',
        bridge: 'cnichain',
        isGateway: true,
        isDefaultGateway: true,
        hairpinMode: true,
        // Dual-stack: two ips[] for the later plugins to read (portmap forwards to both).
        ipam: { type: 'host-local', ranges: [[{ subnet: '10.100.0.0/24' }], [{ subnet: 'fd00:100::/64' }]], dataDir },
      },
      { type: 'tuning', mac: TUNED_MAC, mtu: 1300, sysctl: { 'net.ipv4.conf.eth0.accept_redirects': '0' }, dataDir: tuningDir },
      { type: 'bandwidth', capabilities: { bandwidth: true } },
      { type: 'portmap', capabilities: { portMappings: true }, snat: true },
    ],
  });
  const runtime = {
    bandwidth: { ingressRate: 8_000_000, ingressBurst: 800_000, egressRate: 8_000_000, egressBurst: 800_000 },
    portMappings: [{ hostPort: 8080, containerPort: 80, protocol: 'tcp' }],
  };

  for (const v of ['0.4.0', '1.0.0']) {
    t.test(`${v}: skiff-cni then tuning, bandwidth, portmap; CHECK; DEL in reverse`, { skip: (missing.length > 0 && `not installed: ${missing.join(', ')} (containernetworking-plugins)`) || (noIptables && 'portmap needs iptables') }, async (t) => {
      const l = list(v);
      const pod = makeNetns('pod');
      const cid = `chain${v.replace(/\./g, '')}`;
      const run = (command: string, p: Record<string, unknown>, prev: unknown): Promise<PluginResult> =>
        runPlugin(
          { command, containerId: cid, netns: pod.path, ifname: 'eth0', nodeNs: node.name, args: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p', plugin: pluginPath(p.type as string) },
          pluginConf(l, p, prev, runtime),
        );
      const [skiff, tuning, bandwidth, portmap] = l.plugins as [Record<string, unknown>, Record<string, unknown>, Record<string, unknown>, Record<string, unknown>];

      // ADD, in list order.
      const r0 = await run('ADD', skiff, undefined);
      t.equal(r0.code, 0, `skiff-cni ADD: ${r0.stdout}`);
      const s = r0.json;
      t.equal(s.cniVersion, v);
      t.same(s.interfaces.map((i: { name: string }) => i.name), ['cnichain', hostVethName(cid, 'eth0'), 'eth0']);
      t.same(s.ips.map((i: { address: string; interface: number }) => [i.address.replace(/\d+\/|[\da-f]+\//, 'X/'), i.interface]), [['10.100.0.X/24', 2], ['fd00:100::X/64', 2]], 'an IPv4 and an IPv6 address on eth0');
      const podIp: string = s.ips[0].address.split('/')[0];
      const podIp6: string = s.ips[1].address.split('/')[0];
      const skiffMac: string = s.interfaces[2].mac;
      const redirectsBefore = nsExec(pod.name, ['cat', '/proc/sys/net/ipv4/conf/eth0/accept_redirects']).trim();

      const r1 = await run('ADD', tuning, s);
      t.equal(r1.code, 0, `tuning ADD accepts skiff's result: ${r1.stdout}${r1.stderr}`);
      t.equal(r1.json.cniVersion, v);
      t.equal(r1.json.interfaces[2].mac, TUNED_MAC, 'tuning recorded the MAC it set on skiff\'s pod interface');
      t.same(r1.json.interfaces.slice(0, 2), s.interfaces.slice(0, 2), 'skiff\'s bridge and host veth unchanged');
      t.same(r1.json.ips, s.ips, 'skiff\'s addresses unchanged');
      t.same(r1.json.routes, s.routes, 'skiff\'s routes unchanged');
      if (v === '0.4.0') t.same(r1.json.ips.map((i: { version: string }) => i.version), ['4', '6'], '0.4.0: ips[].version kept');
      t.equal(link(pod.name, 'eth0').address, TUNED_MAC, 'the pod interface has tuning\'s MAC');
      t.equal(link(pod.name, 'eth0').mtu, 1300, 'and tuning\'s MTU');
      t.equal(redirectsBefore, '1', 'accept_redirects was 1 before tuning');
      t.equal(nsExec(pod.name, ['cat', '/proc/sys/net/ipv4/conf/eth0/accept_redirects']).trim(), '0', 'tuning set the sysctl in the pod');

      const r2 = await run('ADD', bandwidth, r1.json);
      t.equal(r2.code, 0, `bandwidth ADD found skiff's host veth as the pod interface's peer: ${r2.stdout}${r2.stderr}`);
      t.same(r2.json.interfaces.slice(0, 3), r1.json.interfaces, 'the interfaces so far are kept');
      t.same(r2.json.ips, r1.json.ips);
      const hostVeth = hostVethName(cid, 'eth0');
      t.match(nsExec(node.name, ['tc', 'qdisc', 'show', 'dev', hostVeth]), /qdisc tbf/, 'a token bucket on skiff\'s host veth (traffic to the pod)');
      const ifbs = JSON.parse(nsExec(node.name, ['ip', '-j', 'link', 'show', 'type', 'ifb'])).map((x: { ifname: string }) => x.ifname);
      t.equal(ifbs.length, 1, 'an ifb device for traffic from the pod');
      t.match(nsExec(node.name, ['tc', 'filter', 'show', 'dev', hostVeth, 'ingress']), new RegExp(`mirred .*${ifbs[0]}`), 'the host veth\'s ingress is redirected to it');

      const r3 = await run('ADD', portmap, r2.json);
      t.equal(r3.code, 0, `portmap ADD: ${r3.stdout}${r3.stderr}`);
      const nat = nsExec(node.name, ['iptables-save', '-t', 'nat']);
      t.match(nat, new RegExp(`--to-destination ${podIp.replace(/\./g, '\\.')}:80`), 'portmap DNATs to the IPv4 address skiff gave eth0 (found through ips[].interface)');
      t.match(nsExec(node.name, ['ip6tables-save', '-t', 'nat']), new RegExp(`--to-destination \\[${podIp6}\\]:80`), 'and to its IPv6 address');

      // The list's result: still skiff's interfaces and addresses, in the list's version.
      const final = r3.json;
      t.equal(final.cniVersion, v);
      t.same(final.interfaces.slice(0, 2), s.interfaces.slice(0, 2));
      t.same({ ...final.interfaces[2], mac: skiffMac }, s.interfaces[2], 'skiff\'s pod interface, with tuning\'s MAC');
      t.same(final.ips, s.ips, 'skiff\'s addresses, ips[].interface still pointing at eth0');
      t.equal(final.interfaces[final.ips[0].interface].name, 'eth0');
      t.equal(final.interfaces[final.ips[0].interface].sandbox, pod.path);

      // The attachment works end to end: the gateway, and a host port forwarded into the pod.
      t.match(nsExec(pod.name, ['ping', '-c', '1', '-W', '2', '10.100.0.1']), /1 received/, 'the pod reaches its gateway after tuning changed its MAC');
      const server = spawn('ip', ['netns', 'exec', pod.name, process.execPath, '-e', `require('node:net').createServer((s)=>s.end('${cid}')).listen(80,'0.0.0.0',()=>console.log('ready'))`], { stdio: ['ignore', 'pipe', 'ignore'] });
      t.teardown(() => server.kill());
      const ready = await new Promise<boolean>((resolve) => {
        setTimeout(() => resolve(false), 10_000);
        server.stdout.on('data', (d) => String(d).includes('ready') && resolve(true));
      });
      t.ok(ready, 'a TCP server listens on port 80 in the pod');
      t.equal(await tcpRead(node.name, '10.100.0.1', 8080), cid, 'node:8080 reaches the pod\'s port 80 through portmap');
      server.kill();

      // CHECK, in list order, each with the list's result. Not portmap's: Debian's 1.1.1
      // looks its IPv4 rules up in the ip6tables chain (or an IPv6 chain that an IPv4-only
      // container lacks, containernetworking/plugins#819) and fails for every container.
      for (const p of l.plugins.filter((p) => p.type !== 'portmap')) {
        const c = await run('CHECK', p, final);
        t.equal(c.code, 0, `${p.type} CHECK: ${c.stdout}${c.stderr}`);
      }

      // DEL in reverse order, each with the list's result.
      const d3 = await run('DEL', portmap, final);
      t.equal(d3.code, 0, `portmap DEL: ${d3.stdout}`);
      t.notMatch(nsExec(node.name, ['iptables-save', '-t', 'nat']), new RegExp(`${podIp.replace(/\./g, '\\.')}:80`), 'the DNAT is gone');
      t.notMatch(nsExec(node.name, ['ip6tables-save', '-t', 'nat']), new RegExp(`\\[${podIp6}\\]:80`), 'the IPv6 DNAT too');
      const d2 = await run('DEL', bandwidth, final);
      t.equal(d2.code, 0, `bandwidth DEL: ${d2.stdout}`);
      t.same(JSON.parse(nsExec(node.name, ['ip', '-j', 'link', 'show', 'type', 'ifb'])), [], 'the ifb device is gone');
      const d1 = await run('DEL', tuning, final);
      t.equal(d1.code, 0, `tuning DEL: ${d1.stdout}`);
      t.equal(link(pod.name, 'eth0').address, skiffMac, 'tuning restored the MAC skiff reported');
      t.same(readdirSync(tuningDir), [], 'tuning removed its saved state');
      const d0 = await run('DEL', skiff, final);
      t.equal(d0.code, 0, `skiff-cni DEL: ${d0.stdout}`);
      t.same(reservations(), [], 'skiff released the address');
      t.throws(() => link(node.name, hostVeth), 'the host veth is gone');
      t.throws(() => link(pod.name, 'eth0'), 'the pod interface is gone');
    });
  }
}
