// skiff-cni against the real kernel: a node namespace runs the plugin, pods are
// namespaces of their own. Everything lives in skt-* namespaces removed at exit.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { delNetns, makeNetns, nsExec, requireRoot } from '../helpers/netns.js';
import { bridgeConf, PLUGIN, runPlugin } from '../helpers/cni.js';
import { hostVethName } from '../../src/bridge/bridge.js';

if (requireRoot(t)) {
  const node = makeNetns('node');
  const dataDir = mkdtempSync(join(tmpdir(), 'skt-ipam-'));
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
  const conf = bridgeConf({ dataDir, ipMasq: true });
  const reservations = () => readdirSync(join(dataDir, 'sktnet')).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f));
  const call = (command: string, cid: string, pod: { path: string } | undefined, c: unknown = conf, extra: Record<string, string> = {}) =>
    runPlugin({ command, containerId: cid, ifname: 'eth0', ...(pod ? { netns: pod.path } : {}), nodeNs: node.name, args: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p', ...extra }, c);

  t.test('VERSION lists every supported version', async (t) => {
    const r = await runPlugin({ command: 'VERSION' }, '{"cniVersion":"1.1.0"}');
    t.equal(r.code, 0, r.stdout + r.stderr);
    t.same(r.json.supportedVersions, ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0']);
  });

  t.test('ADD attaches a pod that reaches its gateway; CHECK; DEL is idempotent', async (t) => {
    const pod = makeNetns('pod');
    const add = await call('ADD', 'c1', pod);
    t.equal(add.code, 0, add.stdout + add.stderr);
    const res = add.json;
    t.equal(res.cniVersion, '1.0.0');
    t.equal(res.interfaces.length, 3, 'bridge, host veth, pod veth');
    t.equal(res.interfaces[0].name, 'cni0');
    t.equal(res.interfaces[2].name, 'eth0');
    t.equal(res.interfaces[2].sandbox, pod.path);
    t.match(res.interfaces[2].mac, /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
    t.equal(res.ips[0].interface, 2);
    t.match(res.ips[0].address, /^10\.88\.0\.\d+\/24$/);
    t.equal(res.ips[0].gateway, '10.88.0.1');
    t.notOk('version' in res.ips[0], 'no ips[].version in 1.0.0');
    // Real traffic: the pod pings its gateway on the bridge.
    const ping = nsExec(pod.name, ['ping', '-c', '1', '-W', '2', '10.88.0.1']);
    t.match(ping, /1 received/);
    t.match(nsExec(pod.name, ['ip', '-o', 'link', 'show', 'lo']), /UP/, 'lo is up in the pod');
    t.match(nsExec(node.name, ['ip', '-d', 'link', 'show', res.interfaces[1].name]), /hairpin on/);
    t.match(nsExec(node.name, ['nft', 'list', 'set', 'inet', 'skiff_cni', 'pods4_sktnet']), new RegExp(res.ips[0].address.split('/')[0]));

    const check = await call('CHECK', 'c1', pod, { ...conf, prevResult: res });
    t.equal(check.code, 0, 'CHECK passes: ' + check.stdout);
    t.equal(check.stdout.trim(), '', 'CHECK prints nothing on success');

    nsExec(pod.name, ['ip', 'addr', 'del', res.ips[0].address, 'dev', 'eth0']);
    const bad = await call('CHECK', 'c1', pod, { ...conf, prevResult: res });
    t.not(bad.code, 0, 'CHECK fails once the address is gone');
    t.match(bad.json.msg, /address .* is missing/);

    const del = await call('DEL', 'c1', pod, { ...conf, prevResult: res });
    t.equal(del.code, 0, del.stdout);
    t.same(reservations(), [], 'address released');
    t.throws(() => nsExec(node.name, ['ip', 'link', 'show', res.interfaces[1].name]), 'host veth gone');
    t.notMatch(nsExec(node.name, ['nft', 'list', 'set', 'inet', 'skiff_cni', 'pods4_sktnet']), new RegExp(res.ips[0].address.split('/')[0] + '\\b'));
    const again = await call('DEL', 'c1', pod);
    t.equal(again.code, 0, 'DEL again succeeds');
  });

  t.test('DEL after the namespace is gone still releases the IP and the host veth', async (t) => {
    const pod = makeNetns('pod');
    const add = await call('ADD', 'c-gone', pod);
    t.equal(add.code, 0, add.stdout);
    delNetns(pod.name);
    const del = await call('DEL', 'c-gone', pod);
    t.equal(del.code, 0, del.stdout);
    t.same(reservations(), []);
    t.throws(() => nsExec(node.name, ['ip', 'link', 'show', add.json.interfaces[1].name]));
  });

  t.test('ADD refuses an interface that already exists, and changes nothing', async (t) => {
    const pod = makeNetns('pod');
    t.equal((await call('ADD', 'c-dup1', pod)).code, 0);
    const before = reservations().length;
    const dup = await call('ADD', 'c-dup2', pod);
    t.equal(dup.code, 1);
    t.equal(dup.json.code, 4);
    t.match(dup.json.msg, /eth0.*already exists/);
    t.equal(reservations().length, before, 'no address leaked by the failed ADD');
    await call('DEL', 'c-dup1', pod);
  });

  t.test('a stale host veth of an earlier attempt is replaced', async (t) => {
    const pod = makeNetns('pod');
    const name = hostVethName('c-stale', 'eth0');
    nsExec(node.name, ['ip', 'link', 'add', name, 'type', 'veth', 'peer', 'name', 'sktstale']);
    const add = await call('ADD', 'c-stale', pod);
    t.equal(add.code, 0, add.stdout);
    t.equal(add.json.interfaces[1].name, name);
    t.throws(() => nsExec(node.name, ['ip', 'link', 'show', 'sktstale']), 'the old pair is gone');
    t.match(nsExec(pod.name, ['ip', '-o', 'link', 'show', 'eth0']), /UP/, 'the new peer is in the pod');
    t.match(nsExec(node.name, ['ip', '-o', 'link', 'show', name]), /master cni0/);
    t.equal((await call('DEL', 'c-stale', pod)).code, 0);
  });

  t.test('bad input gets the spec error JSON and changes nothing', async (t) => {
    const pod = makeNetns('pod');
    const cases: [string, unknown, Record<string, string>, number, RegExp][] = [
      ['malformed JSON', '{"cniVersion": ', {}, 6, /./],
      ['unsupported version', { ...conf, cniVersion: '9.9.9' }, {}, 1, /9\.9\.9/],
      ['bad container id', conf, { containerId: '-bad' }, 4, /CNI_CONTAINERID/],
      ['netns not a namespace', conf, { netns: '/etc/hostname' }, 4, /CNI_NETNS/],
      ['netns missing', conf, { netns: '/var/run/netns/skt-does-not-exist' }, 4, /CNI_NETNS/],
      ['host bits set', bridgeConf({ dataDir, subnet: '10.88.0.5/24' }), {}, 7, /host bits/],
      ['/32 subnet', bridgeConf({ dataDir, subnet: '10.88.0.0/32' }), {}, 7, /subnet/],
      ['hairpin with promisc', { ...conf, promiscMode: true }, {}, 7, /hairpinMode|promiscMode/],
      ['unknown ipam type', { ...conf, ipam: { type: 'no-such-ipam' } }, {}, 7, /no-such-ipam/],
    ];
    for (const [name, c, over, code, msg] of cases) {
      const r = await runPlugin(
        { command: 'ADD', containerId: over.containerId ?? 'cbad', netns: over.netns ?? pod.path, ifname: 'eth0', nodeNs: node.name },
        c,
      );
      t.equal(r.code, 1, `${name}: exit code`);
      t.equal(r.json?.code, code, `${name}: error code (${r.stdout.trim()})`);
      t.match(r.json?.msg, msg, `${name}: message names the field`);
    }
    t.same(reservations(), [], 'nothing reserved');
    t.throws(() => nsExec(pod.name, ['ip', 'link', 'show', 'eth0']), 'no interface created');
  });

  t.test('results in every supported version', async (t) => {
    for (const v of ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0']) {
      const pod = makeNetns('pod');
      const c = { ...conf, cniVersion: v };
      const r = await call('ADD', `cv${v.replace(/\./g, '')}`, pod, c);
      t.equal(r.code, 0, `${v}: ${r.stdout}`);
      t.equal(r.json.cniVersion, v);
      if (v.startsWith('0.')) t.equal(r.json.ips[0].version, '4', `${v}: ips[].version`);
      else t.notOk('version' in r.json.ips[0], `${v}: no ips[].version`);
      t.equal((await call('DEL', `cv${v.replace(/\./g, '')}`, pod, c)).code, 0);
      delNetns(pod.name);
    }
  });

  t.test('GC removes every attachment not in the valid list', async (t) => {
    const pods = [makeNetns('pod'), makeNetns('pod'), makeNetns('pod')];
    const results: any[] = [];
    for (const [i, p] of pods.entries()) results.push((await call('ADD', `gc${i}`, p)).json);
    t.equal(reservations().length, 3);
    const gc = await runPlugin(
      { command: 'GC', nodeNs: node.name },
      { ...conf, cniVersion: '1.1.0', 'cni.dev/valid-attachments': [{ containerID: 'gc1', ifname: 'eth0' }] },
    );
    t.equal(gc.code, 0, gc.stdout);
    t.same(reservations(), [results[1].ips[0].address.split('/')[0]], 'only the valid reservation remains');
    t.throws(() => nsExec(node.name, ['ip', 'link', 'show', results[0].interfaces[1].name]), 'stale host veth removed');
    t.match(nsExec(node.name, ['ip', 'link', 'show', results[1].interfaces[1].name]), /UP/, 'valid veth kept');
    const set = nsExec(node.name, ['nft', 'list', 'set', 'inet', 'skiff_cni', 'pods4_sktnet']);
    t.notMatch(set, /gc0\/eth0/);
    t.match(set, /gc1\/eth0/);
    // The older key name works too.
    const gc2 = await runPlugin({ command: 'GC', nodeNs: node.name }, { ...conf, cniVersion: '1.1.0', 'cni.dev/attachments': [] });
    t.equal(gc2.code, 0);
    t.same(reservations(), []);
    for (const p of pods) await call('DEL', 'gcx', p);
  });

  t.test('STATUS is 0 when ADD would work, 50 when the range is exhausted', async (t) => {
    const small = bridgeConf({ name: 'tiny', dataDir, subnet: '10.89.0.0/30', bridge: 'cni1', cniVersion: '1.1.0' });
    const ok = await runPlugin({ command: 'STATUS', nodeNs: node.name }, small);
    t.equal(ok.code, 0, ok.stdout);
    const pod = makeNetns('pod');
    t.equal((await call('ADD', 'tiny1', pod, small)).code, 0, 'the one usable address');
    const st = await runPlugin({ command: 'STATUS', nodeNs: node.name }, small);
    t.equal(st.code, 1);
    t.equal(st.json.code, 50);
    t.match(st.json.msg, /no IP addresses available|exhausted/);
    await call('DEL', 'tiny1', pod, small);
  });

  t.test('32 concurrent ADDs get 32 distinct addresses and one bridge', async (t) => {
    const pods = Array.from({ length: 32 }, () => makeNetns('pc'));
    const fresh = bridgeConf({ name: 'race', dataDir, subnet: '10.90.0.0/24', bridge: 'cnirace' });
    const results = await Promise.all(pods.map((p, i) => call('ADD', `race${i}`, p, fresh)));
    for (const r of results) t.equal(r.code, 0, r.stdout);
    const addrs = new Set(results.map((r) => r.json.ips[0].address));
    t.equal(addrs.size, 32, 'distinct addresses');
    const bridges = nsExec(node.name, ['ip', '-o', 'link', 'show', 'type', 'bridge']).split('\n').filter((l) => l.includes('cnirace'));
    t.equal(bridges.length, 1, 'one bridge');
    await Promise.all(pods.map((p, i) => call('DEL', `race${i}`, p, fresh)));
    for (const p of pods) delNetns(p.name);
  });

  t.test('a plugin killed during ADD leaves no held lock, and GC reclaims its leftovers', async (t) => {
    const killConf = bridgeConf({ name: 'killnet', dataDir, subnet: '10.91.0.0/24', bridge: 'cnikill' });
    // Kill the plugin at increasing delays until one dies mid-flight.
    for (const delay of [5, 15, 30, 45, 60, 80]) {
      const pod = makeNetns('pk');
      const child = execFileSync('sh', ['-c', `
        CNI_COMMAND=ADD CNI_CONTAINERID=killed${delay} CNI_NETNS=${pod.path} CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni \
        ip netns exec ${node.name} ${PLUGIN} >/dev/null 2>&1 <<'EOF' &
${JSON.stringify(killConf)}
EOF
        pid=$!; sleep ${delay / 1000}; pkill -KILL -P $pid 2>/dev/null; kill -KILL $pid 2>/dev/null; wait $pid 2>/dev/null; true`]);
      void child;
      delNetns(pod.name);
    }
    const pod = makeNetns('pk');
    const started = Date.now();
    const r = await call('ADD', 'after-kill', pod, killConf);
    t.equal(r.code, 0, 'the next ADD succeeds: ' + r.stdout);
    t.ok(Date.now() - started < 5000, 'and is not stuck behind a dead lock holder');
    const gc = await runPlugin({ command: 'GC', nodeNs: node.name }, { ...killConf, cniVersion: '1.1.0', 'cni.dev/valid-attachments': [{ containerID: 'after-kill', ifname: 'eth0' }] });
    t.equal(gc.code, 0);
    const left = readdirSync(join(dataDir, 'killnet')).filter((f) => /^\d+\./.test(f));
    t.same(left, [r.json.ips[0].address.split('/')[0]], 'only the live reservation remains');
    await call('DEL', 'after-kill', pod, killConf);
  });

  t.test('delegated IPAM: Debian\'s static plugin from CNI_PATH', { skip: !existsSync('/usr/lib/cni/static') && 'containernetworking-plugins not installed' }, async (t) => {
    const pod = makeNetns('pod');
    const c = { ...conf, name: 'staticnet', bridge: 'cnistatic', ipMasq: false, ipam: { type: 'static', addresses: [{ address: '10.92.0.7/24', gateway: '10.92.0.1' }] } };
    const r = await call('ADD', 'st1', pod, c);
    t.equal(r.code, 0, r.stdout + r.stderr);
    t.equal(r.json.ips[0].address, '10.92.0.7/24');
    t.match(nsExec(pod.name, ['ip', '-o', 'addr', 'show', 'eth0']), /10\.92\.0\.7\/24/);
    t.match(nsExec(pod.name, ['ping', '-c', '1', '-W', '2', '10.92.0.1']), /1 received/);
    t.equal((await call('DEL', 'st1', pod, c)).code, 0);
  });

  t.test('chained: a prevResult from an earlier plugin is amended', async (t) => {
    const pod = makeNetns('pod');
    const prev = { cniVersion: '1.0.0', interfaces: [{ name: 'dummy0', mac: '0a:00:00:00:00:01' }], ips: [], routes: [] };
    const r = await call('ADD', 'chain1', pod, { ...conf, prevResult: prev });
    t.equal(r.code, 0, r.stdout);
    t.equal(r.json.interfaces[0].name, 'dummy0');
    t.equal(r.json.interfaces.length, 4);
    t.equal(r.json.ips[0].interface, 3, 'index shifted past the earlier interfaces');
    await call('DEL', 'chain1', pod);
  });

  t.test('1,000 ADD/DEL cycles leave no reservations, veths or masquerade elements', async (t) => {
    const cycles = Number(process.env.SKIFF_CYCLES ?? 1000);
    const lanes = 4;
    const pods = Array.from({ length: lanes }, () => makeNetns('cy'));
    await Promise.all(
      pods.map(async (p, lane) => {
        for (let i = lane; i < cycles; i += lanes) {
          const a = await call('ADD', `cyc${i}`, p);
          if (a.code !== 0) throw new Error(`ADD ${i}: ${a.stdout}`);
          const d = await call('DEL', `cyc${i}`, p);
          if (d.code !== 0) throw new Error(`DEL ${i}: ${d.stdout}`);
        }
      }),
    );
    t.same(reservations(), [], 'no reservation files');
    const veths = nsExec(node.name, ['ip', '-o', 'link', 'show', 'type', 'veth']).trim();
    t.equal(veths, '', 'no veths');
    const set = nsExec(node.name, ['nft', '-j', 'list', 'set', 'inet', 'skiff_cni', 'pods4_sktnet']);
    t.notMatch(set, /"elem"/, 'no masquerade elements');
  });
}
