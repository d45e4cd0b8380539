// The real agent process inside a network namespace of its own, on a manifest
// directory: it writes this node's conflist from the Node's pod CIDR with the
// uplink's MTU, answers /readyz, /healthz and /metrics, follows an edit of the
// Node, stops on SIGTERM leaving the file in place, does not rewrite it after a
// restart, and removes it on --uninstall.
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeNetns, nsExec, requireRoot } from '../helpers/netns.js';

if (requireRoot(t)) {
  const MAIN = join(dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');
  const ns = makeNetns('agent');
  // An uplink with a non-default MTU and the default route, so "mtu: 0" has something to find.
  nsExec(ns.name, ['ip', 'link', 'add', 'up0', 'mtu', '1400', 'type', 'veth', 'peer', 'name', 'up1']);
  nsExec(ns.name, ['ip', 'link', 'set', 'up0', 'up']);
  nsExec(ns.name, ['ip', 'link', 'set', 'up1', 'up']);
  nsExec(ns.name, ['ip', 'addr', 'add', '192.168.77.2/24', 'dev', 'up0']);
  nsExec(ns.name, ['ip', 'route', 'add', 'default', 'via', '192.168.77.1']);

  const dir = await mkdtemp(join(tmpdir(), 'skiff-agent-it-'));
  const manifests = join(dir, 'manifests');
  const confDir = join(dir, 'net.d');
  const conflist = join(confDir, '10-skiff.conflist');
  await mkdir(manifests);
  const nodeYaml = (cidr: string) => `apiVersion: v1
kind: Node
metadata:
  name: n1
spec:
  podCIDR: ${cidr}
status:
  addresses:
    - type: InternalIP
      address: 192.168.77.2
`;
  await writeFile(join(manifests, 'node.yaml'), nodeYaml('10.244.5.0/24'));

  // Only the CNI config reconciler: the other modules (overlay, proxy, DNS, policy) have their own tests.
  const flags = [
    '--node', 'n1', '--manifests', manifests, '--cni-conf-dir', confDir, '--ipam-data-dir', join(dir, 'ipam'),
    '--metrics-address', '127.0.0.1:10256', '--overlay.enabled=false', '--proxy.enabled=false', '--dns.enabled=false', '--policy.enabled=false',
    '--sync.period', '2s',
  ];
  const children = new Set<ChildProcess>();
  t.teardown(async () => {
    for (const c of children) c.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });

  function startAgent(extra: string[] = []): { child: ChildProcess; logs: () => string; exited: Promise<number | null> } {
    const child = spawn('ip', ['netns', 'exec', ns.name, process.execPath, MAIN, 'agent', ...flags, ...extra], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, SKIFF_LOG_LEVEL: 'debug' },
    });
    children.add(child);
    let out = '';
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (out += d));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => { children.delete(child); r(code); }));
    return { child, logs: () => out, exited };
  }

  const curl = (path: string): { code: number; body: string } => {
    const out = nsExec(ns.name, ['curl', '-s', '-m', '2', '-w', '\n%{http_code}', `http://127.0.0.1:10256${path}`]);
    const i = out.lastIndexOf('\n');
    return { body: out.slice(0, i), code: Number(out.slice(i + 1)) };
  };
  const until = async (what: string, fn: () => Promise<boolean> | boolean, ms = 20_000): Promise<void> => {
    const end = Date.now() + ms;
    for (;;) {
      try {
        if (await fn()) return;
      } catch {
        /* not yet */
      }
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const readConf = async () => JSON.parse(await readFile(conflist, 'utf8'));

  await t.test('writes the conflist, becomes ready, follows the Node, stops on SIGTERM', async (t) => {
    const a = startAgent();
    await until('/readyz 200', () => curl('/readyz').code === 200).catch((e) => {
      t.comment(a.logs());
      throw e;
    });
    const conf = await readConf();
    t.same(conf.plugins[0].ipam.ranges, [[{ subnet: '10.244.5.0/24' }]]);
    t.equal(conf.plugins[0].mtu, 1400, 'MTU of the uplink (the interface of the default route), no overlay');
    t.equal(conf.plugins[0].type, 'skiff-cni');
    t.equal(curl('/healthz').code, 200);
    const metrics = curl('/metrics');
    t.equal(metrics.code, 200);
    t.match(metrics.body, /skiff_source_synced\{source="manifests"\} 1/);
    t.match(metrics.body, /skiff_reconciler_sync_duration_seconds_count\{reconciler="cniconf",mode="full"\} [1-9]/);
    t.match(metrics.body, /skiff_reconciler_last_sync_timestamp_seconds\{reconciler="cniconf"\} \d/);
    t.match(metrics.body, /process_resident_memory_bytes/);

    const before = await stat(conflist);
    await writeFile(join(manifests, 'node.yaml'), nodeYaml('10.244.6.0/24'));
    await until('the conflist to follow the Node', async () => (await readConf()).plugins[0].ipam.ranges[0][0].subnet === '10.244.6.0/24');
    t.not((await stat(conflist)).ino, before.ino, 'replaced by rename');

    // Periodic resyncs (2 s) of an unchanged Node do not touch the file.
    const settled = await stat(conflist);
    await new Promise((r) => setTimeout(r, 2500));
    t.equal((await stat(conflist)).mtimeMs, settled.mtimeMs, 'no rewrite on resync');

    a.child.kill('SIGTERM');
    t.equal(await a.exited, 0, 'clean exit on SIGTERM');
    t.match(a.logs(), /"msg":"stopped"/);
    await stat(conflist); // left in place
  });

  await t.test('a restarted agent adopts the unchanged conflist; --uninstall removes it', async (t) => {
    const before = await stat(conflist);
    const a = startAgent();
    await until('/readyz 200 after restart', () => curl('/readyz').code === 200).catch((e) => {
      t.comment(a.logs());
      throw e;
    });
    const after = await stat(conflist);
    t.equal(after.ino, before.ino, 'same file');
    t.equal(after.mtimeMs, before.mtimeMs, 'not rewritten');
    t.notMatch(a.logs(), /wrote the CNI config|updated the CNI config/);
    a.child.kill('SIGINT');
    t.equal(await a.exited, 0, 'clean exit on SIGINT');

    const u = spawn('ip', ['netns', 'exec', ns.name, process.execPath, MAIN, 'agent', '--uninstall', '--cni-conf-dir', confDir], { stdio: 'pipe' });
    const code = await new Promise<number | null>((r) => u.on('exit', r));
    t.equal(code, 0, 'uninstall succeeds');
    await t.rejects(stat(conflist), { code: 'ENOENT' }, 'conflist removed');
  });

  await t.test('bad flags exit 2 with a message naming the flag', async (t) => {
    const u = spawn(process.execPath, [MAIN, 'agent', '--node', 'n1', '--manifests', manifests, '--proxy.balancing=rr'], { stdio: 'pipe' });
    let err = '';
    u.stderr!.on('data', (d) => (err += d));
    const code = await new Promise<number | null>((r) => u.on('exit', r));
    t.equal(code, 2);
    t.match(err, /skiff agent: flag --proxy\.balancing: invalid value "rr" \(round-robin, random\)/);
  });
}
