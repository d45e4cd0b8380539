import t from 'tap';
import {
  ConfigError,
  FIELDS,
  applyConfigObject,
  defaultConfig,
  fieldForFlag,
  flagHelp,
  flagName,
  loadConfig,
  parseDuration,
} from '../../src/agent/config.js';
import { parseArgs } from '../../src/agent/cli.js';

const base: [string, string | boolean][] = [
  ['node', 'node-1'],
  ['manifests', '/tmp/m'],
];

t.test('defaults', async (t) => {
  const c = loadConfig({ flags: base });
  t.equal(c.nodeName, 'node-1');
  t.equal(c.manifests, '/tmp/m');
  t.equal(c.cniConfDir, '/etc/cni/net.d');
  t.equal(c.cniConfName, '10-skiff.conflist');
  t.equal(c.cniBinDir, '/opt/cni/bin');
  t.equal(c.clusterCIDR, '10.244.0.0/16');
  t.equal(c.serviceCIDR, '10.96.0.0/12');
  t.equal(c.clusterDomain, 'cluster.local');
  t.equal(c.mtu, 0);
  t.same(c.overlay, { enabled: true, vni: 1, port: 8472, device: '', underlayInterface: '' });
  t.equal(c.masquerade, true);
  t.same(c.proxy, { enabled: true, balancing: 'round-robin', minSyncInterval: 1000, syncPeriod: 30_000 });
  t.same(c.policy, { enabled: true, policyAwareDns: false });
  t.equal(c.metricsAddress, '127.0.0.1:10256');
  t.equal(c.healthzStaleFactor, 2);
  t.equal(c.logLevel, 'info');
  t.equal(c.ipamDataDir, '/var/lib/cni/networks');
});

t.test('every field has a default of its type and a flag that reaches it', async (t) => {
  const def = defaultConfig() as unknown as Record<string, unknown>;
  for (const f of FIELDS) {
    let v: unknown = def;
    for (const p of f.key.split('.')) v = (v as Record<string, unknown>)[p];
    t.not(v, undefined, `${f.key} has a default`);
    t.equal(fieldForFlag(flagName(f))?.key, f.key, `--${flagName(f)} -> ${f.key}`);
    t.equal(fieldForFlag(f.key)?.key, f.key, `--${f.key} -> ${f.key}`);
  }
  t.match(flagHelp(), /--proxy\.balancing=round-robin\|random/);
  t.match(flagHelp(), /--cni-conf-dir=STRING/);
  t.match(flagHelp(), /--cluster-cidr=STRING/);
  t.match(flagHelp(), /--node=STRING/);
  t.equal(flagName(FIELDS.find((f) => f.key === 'policy.policyAwareDns')!), 'policy.policy-aware-dns');
});

t.test('file overlaid by flags; nested YAML and JSON; durations', async (t) => {
  const yaml = `
nodeName: from-file
kubeconfig: /etc/kubeconfig
mtu: 1400
overlay:
  vni: 42
  port: "4789"
proxy:
  balancing: random
  minSyncInterval: 250ms
  syncPeriod: 1m30s
dns:
  listen: "[::1]:5353"
logLevel: debug
`;
  const c = loadConfig({ file: { path: '/x.yaml', text: yaml }, flags: [['node', 'from-flag'], ['mtu', '1300'], ['proxy.balancing', 'round-robin'], ['overlay.enabled', 'false'], ['in-cluster', true], ['kubeconfig', '']] });
  t.equal(c.nodeName, 'from-flag', 'flag wins');
  t.equal(c.mtu, 1300);
  t.equal(c.overlay.vni, 42, 'file value kept');
  t.equal(c.overlay.port, 4789, 'quoted number accepted');
  t.equal(c.overlay.enabled, false);
  t.equal(c.proxy.balancing, 'round-robin');
  t.equal(c.proxy.minSyncInterval, 250);
  t.equal(c.proxy.syncPeriod, 90_000);
  t.equal(c.dns.listen, '[::1]:5353');
  t.equal(c.logLevel, 'debug');
  t.equal(c.inCluster, true);
  const j = loadConfig({ file: { path: '/x.json', text: '{"nodeName":"j","manifests":"/m","masquerade":false,"sync":{"period":5}}' } });
  t.equal(j.masquerade, false);
  t.equal(j.sync.period, 5000, 'a plain number is seconds');
  t.equal(loadConfig({ flags: [['manifests', '/m']], env: { NODE_NAME: 'from-env' } }).nodeName, 'from-env');
  t.same([parseDuration('1.5s'), parseDuration('2m'), parseDuration('1h'), parseDuration('0s'), parseDuration('5 parsecs'), parseDuration(-1)], [1500, 120_000, 3_600_000, undefined, undefined, undefined]);
});

function err(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  throw new Error('expected a ConfigError');
}

t.test('every bad value names its field and value', async (t) => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ proxy: { balancing: 'rr' } }, /^config: proxy\.balancing: invalid value "rr" \(round-robin, random\)$/],
    [{ mtu: 40 }, /^config: mtu: invalid value 40 \(0 \(auto\) or 68 to 65535\)$/],
    [{ mtu: 70000 }, /^config: mtu: invalid value 70000/],
    [{ mtu: 1.5 }, /^config: mtu: invalid value 1\.5/],
    [{ overlay: { vni: 0 } }, /^config: overlay\.vni: invalid value 0 \(an integer from 1 to 16777215\)$/],
    [{ overlay: { port: 70000 } }, /^config: overlay\.port: invalid value 70000/],
    [{ overlay: { enabled: 'yes' } }, /^config: overlay\.enabled: invalid value "yes" \(true or false\)$/],
    [{ overlay: { device: 'a-very-long-device-name' } }, /^config: overlay\.device: invalid value "a-very-long-device-name" \(an interface name/],
    [{ overlay: 3 }, /^config: overlay: invalid value 3 \(an object\)$/],
    [{ masquerade: 1 }, /^config: masquerade: invalid value 1/],
    [{ clusterCIDR: '10.244.0.0/33' }, /^config: clusterCIDR: invalid value "10\.244\.0\.0\/33" \(a CIDR/],
    [{ clusterCIDR: '10.244.1.0/16' }, /^config: clusterCIDR: invalid value "10\.244\.1\.0\/16" \(a network CIDR \(host bits must be zero: 10\.244\.0\.0\/16\)\)$/],
    [{ serviceCIDR: 'nope' }, /^config: serviceCIDR: invalid value "nope"/],
    [{ clusterDomain: 'Cluster_Local' }, /^config: clusterDomain: invalid value "Cluster_Local" \(a DNS name/],
    [{ cniConfDir: 'relative/dir' }, /^config: cniConfDir: invalid value "relative\/dir" \(an absolute path\)$/],
    [{ cniConfName: '10-skiff.conf' }, /^config: cniConfName: invalid value "10-skiff\.conf" \(a file name ending in \.conflist/],
    [{ cniBinDir: 7 }, /^config: cniBinDir: invalid value 7 \(a string\)$/],
    [{ metricsAddress: 'localhost' }, /^config: metricsAddress: invalid value "localhost" \(host:port/],
    [{ metricsAddress: '127.0.0.1:99999' }, /^config: metricsAddress: invalid value "127\.0\.0\.1:99999"/],
    [{ dns: { listen: '' } }, /^config: dns\.listen: invalid value ""/],
    [{ proxy: { syncPeriod: 'soon' } }, /^config: proxy\.syncPeriod: invalid value "soon" \(a duration/],
    [{ proxy: { minSyncInterval: '0s' } }, /^config: proxy\.minSyncInterval: invalid value "0s"/],
    [{ healthzStaleFactor: 0.5 }, /^config: healthzStaleFactor: invalid value 0\.5 \(a number >= 1\)$/],
    [{ logLevel: 'verbose' }, /^config: logLevel: invalid value "verbose" \(debug, info, warn, error\)$/],
    [{ ipamDataDir: '' }, /^config: ipamDataDir: invalid value "" \(an absolute path\)$/],
    [{ nodeName: 'Node_1' }, /^config: nodeName: invalid value "Node_1"/],
    [{ netns: 'relative' }, /^config: netns: invalid value "relative" \(an absolute path\)$/],
    [{ proxy: { balance: 'random' } }, /^config: unknown field "proxy\.balance"$/],
    [{ bogus: 1 }, /^config: unknown field "bogus"$/],
  ];
  for (const [obj, re] of cases) {
    const e = err(() => applyConfigObject(defaultConfig(), obj));
    t.match(e.message, re, JSON.stringify(obj));
    t.ok(e.field, `field recorded for ${JSON.stringify(obj)}`);
  }
});

t.test('flag errors name the flag; cross-field errors name the field', async (t) => {
  t.match(err(() => loadConfig({ flags: [...base, ['proxy.balancing', 'rr']] })).message, /^flag --proxy\.balancing: invalid value "rr" \(round-robin, random\)$/);
  t.match(err(() => loadConfig({ flags: [...base, ['mtu', 'big']] })).message, /^flag --mtu: invalid value "big"/);
  t.match(err(() => loadConfig({ flags: [...base, ['mtu', true]] })).message, /^flag --mtu: needs a value/);
  t.match(err(() => loadConfig({ flags: [...base, ['no-such-thing', 'x']] })).message, /^flag --no-such-thing: unknown flag$/);
  t.match(err(() => loadConfig({ flags: [['manifests', '/m']] })).message, /^config: nodeName: missing/);
  t.match(err(() => loadConfig({ flags: [['node', 'n']] })).message, /^config: source: missing/);
  t.match(err(() => loadConfig({ flags: [...base, ['kubeconfig', '/k']] })).message, /^config: source: invalid value "manifests \+ kubeconfig" \(exactly one of/);
  t.match(err(() => loadConfig({ flags: [...base, ['proxy.min-sync-interval', '1m'], ['proxy.sync-period', '30s']] })).message, /^config: proxy\.minSyncInterval: invalid value 60000ms \(must not exceed proxy\.syncPeriod 30000ms\)$/);
  t.match(err(() => loadConfig({ flags: [...base, ['service-cidr', '10.244.128.0/17']] })).message, /^config: serviceCIDR: invalid value "10\.244\.128\.0\/17" \(overlaps clusterCIDR 10\.244\.0\.0\/16\)$/);
  t.match(err(() => loadConfig({ file: { path: '/bad.yaml', text: 'a: [1,\n' } })).message, /^config file \/bad\.yaml: cannot parse/);
  t.match(err(() => loadConfig({ file: { path: '/list.yaml', text: '- 1\n- 2\n' } })).message, /^config: expected a mapping/);
  const u = loadConfig({ flags: [], requireSource: false, requireNode: false });
  t.equal(u.nodeName, '', 'uninstall needs neither node nor source');
});

t.test('argv parsing: forms of flags, and errors that name the flag', async (t) => {
  const a = parseArgs(['--node', 'n1', '--manifests=/m', '--in-cluster', '--proxy.balancing=random', '--masquerade=false', '--config', '/c.yaml', '--metrics-address', '127.0.0.1:0']);
  t.same(a.flags, [
    ['node', 'n1'],
    ['manifests', '/m'],
    ['in-cluster', true],
    ['proxy.balancing', 'random'],
    ['masquerade', 'false'],
    ['metrics-address', '127.0.0.1:0'],
  ]);
  t.equal(a.configFile, '/c.yaml');
  t.equal(parseArgs(['--uninstall']).uninstall, true);
  t.equal(parseArgs(['-h']).help, true);
  t.throws(() => parseArgs(['--node']), /^flag --node: needs a value$/);
  t.throws(() => parseArgs(['--node', '--manifests', '/m']), /flag --node: needs a value/);
  t.throws(() => parseArgs(['--frobnicate=1']), /flag --frobnicate: unknown flag/);
  t.throws(() => parseArgs(['stray']), /unexpected argument "stray"/);
});
