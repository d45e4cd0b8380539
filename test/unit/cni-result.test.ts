// CNI result conversion (src/cni/result.ts) without a kernel: the exact shape printed
// for every supported version, parsing results of any version (prevResult, delegated
// IPAM output) and converting them up and down, amending a prevResult, and every
// error the parser names.
import t from 'tap';
import {
  amendResult,
  assignInterface,
  emptyResult,
  formatResult,
  ipFamily,
  isCidr,
  isMac,
  parseDns,
  parseResult,
  stringifyResult,
  type Result,
} from '../../src/cni/result.js';
import { parseNetConf } from '../../src/cni/config.js';
import { cniError } from '../helpers/cni-error.js';

const VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;
const LEGACY = new Set(['0.3.0', '0.3.1', '0.4.0']);

const err = cniError;

/** A result using every field of the internal (1.1.0) model. */
const full = (): Result => ({
  cniVersion: '1.1.0',
  interfaces: [
    { name: 'cni0', mac: '0a:58:0a:58:00:01', mtu: 1450 },
    { name: 'veth0a1b2c3d4e5', mac: 'aa:bb:cc:dd:ee:01', mtu: 1450 },
    { name: 'eth0', mac: '0a:58:0a:58:00:05', mtu: 1450, sandbox: '/var/run/netns/p1', socketPath: '/run/vhost-user.sock', pciID: '0000:00:1f.6' },
  ],
  ips: [
    { address: '10.88.0.5/24', gateway: '10.88.0.1', interface: 2 },
    { address: 'fd00:88::5/64', gateway: 'fd00:88::1', interface: 2 },
  ],
  routes: [
    { dst: '0.0.0.0/0', gw: '10.88.0.1', mtu: 1400, advmss: 1360, priority: 10, table: 100, scope: 0 },
    { dst: '::/0', gw: 'fd00:88::1' },
    { dst: '192.168.0.0/16' },
  ],
  dns: { nameservers: ['10.96.0.10', 'fd00:96::a'], domain: 'cluster.local', search: ['default.svc.cluster.local', 'svc.cluster.local'], options: ['ndots:5'] },
});

const DNS = { nameservers: ['10.96.0.10', 'fd00:96::a'], domain: 'cluster.local', search: ['default.svc.cluster.local', 'svc.cluster.local'], options: ['ndots:5'] };

/** What formatResult(full(), v) must print, field for field. */
function expected(v: string): Record<string, unknown> {
  const legacy = LEGACY.has(v);
  const v11 = v === '1.1.0';
  return {
    cniVersion: v,
    interfaces: [
      { name: 'cni0', mac: '0a:58:0a:58:00:01', ...(v11 ? { mtu: 1450 } : {}) },
      { name: 'veth0a1b2c3d4e5', mac: 'aa:bb:cc:dd:ee:01', ...(v11 ? { mtu: 1450 } : {}) },
      {
        name: 'eth0',
        mac: '0a:58:0a:58:00:05',
        sandbox: '/var/run/netns/p1',
        ...(v11 ? { mtu: 1450, socketPath: '/run/vhost-user.sock', pciID: '0000:00:1f.6' } : {}),
      },
    ],
    ips: [
      { ...(legacy ? { version: '4' } : {}), address: '10.88.0.5/24', gateway: '10.88.0.1', interface: 2 },
      { ...(legacy ? { version: '6' } : {}), address: 'fd00:88::5/64', gateway: 'fd00:88::1', interface: 2 },
    ],
    routes: [
      { dst: '0.0.0.0/0', gw: '10.88.0.1', ...(v11 ? { mtu: 1400, advmss: 1360, priority: 10, table: 100, scope: 0 } : {}) },
      { dst: '::/0', gw: 'fd00:88::1' },
      { dst: '192.168.0.0/16' },
    ],
    dns: DNS,
  };
}

t.test('formatResult: the exact shape of every supported version', async (t) => {
  for (const v of VERSIONS) {
    const out = formatResult(full(), v);
    t.strictSame(out, expected(v), `${v}: every field, nothing more`);
    const ips = out.ips as Record<string, unknown>[];
    if (LEGACY.has(v)) t.same(ips.map((i) => i.version), ['4', '6'], `${v}: ips[].version from the address family`);
    else t.ok(ips.every((i) => !('version' in i)), `${v}: no ips[].version`);
    t.equal(stringifyResult(full(), v), JSON.stringify(out), `${v}: stringifyResult prints formatResult`);
  }
  // Key order as printed (libcni's order of fields): top level, then an ip.
  t.equal(
    stringifyResult({ cniVersion: '1.0.0', ips: [{ address: '10.0.0.2/24', gateway: '10.0.0.1', interface: 0 }], interfaces: [{ name: 'eth0', sandbox: '/x' }] }, '0.4.0'),
    '{"cniVersion":"0.4.0","interfaces":[{"name":"eth0","sandbox":"/x"}],"ips":[{"version":"4","address":"10.0.0.2/24","gateway":"10.0.0.1","interface":0}],"dns":{}}',
  );
});

t.test('formatResult: empty and unset fields are omitted, dns is always present', async (t) => {
  for (const v of VERSIONS) {
    t.strictSame(formatResult(emptyResult('1.0.0'), v), { cniVersion: v, dns: {} }, `${v}: empty result`);
    // A result as callers build it: only the required fields.
    t.strictSame(formatResult({ cniVersion: v, ips: [{ address: '10.0.0.2/24' }] }, v), {
      cniVersion: v,
      ips: [{ ...(LEGACY.has(v) ? { version: '4' } : {}), address: '10.0.0.2/24' }],
      dns: {},
    }, `${v}: an IPAM-style ip (no gateway, no interface)`);
  }
  // Empty strings, empty lists and zero MTUs are "unset".
  const sparse: Result = {
    cniVersion: '1.1.0',
    interfaces: [{ name: 'eth0', mac: '', mtu: 0, sandbox: '', socketPath: '', pciID: '' }],
    ips: [{ address: '10.0.0.2/24', gateway: '' }],
    routes: [{ dst: '10.1.0.0/16', gw: '', mtu: 0, advmss: 0, priority: 0 }],
    dns: { nameservers: [], domain: '', search: [], options: [] },
  };
  t.strictSame(formatResult(sparse, '1.1.0'), {
    cniVersion: '1.1.0',
    interfaces: [{ name: 'eth0' }],
    ips: [{ address: '10.0.0.2/24' }],
    routes: [{ dst: '10.1.0.0/16' }],
    dns: {},
  });
  // table and scope 0 are meaningful values (libcni keeps them: *int), so they are printed in 1.1.0.
  t.strictSame(formatResult({ cniVersion: '1.1.0', ips: [], routes: [{ dst: '10.1.0.0/16', table: 0, scope: 0 }] }, '1.1.0').routes, [{ dst: '10.1.0.0/16', table: 0, scope: 0 }]);
  t.strictSame(formatResult({ cniVersion: '1.1.0', ips: [], routes: [{ dst: '10.1.0.0/16', table: 0, scope: 0 }] }, '1.0.0').routes, [{ dst: '10.1.0.0/16' }]);
});

t.test('formatResult does not modify its input and copies the dns lists', async (t) => {
  const r = full();
  const before = JSON.parse(JSON.stringify(r));
  const out = formatResult(r, '0.3.1') as { dns: { nameservers: string[] } };
  t.strictSame(r, before, 'input unchanged');
  out.dns.nameservers.push('10.0.0.99');
  t.strictSame(r.dns, before.dns, 'output lists are copies');
});

t.test('formatResult refuses versions it cannot print (code 1)', async (t) => {
  for (const v of ['0.2.0', '0.1.0', '1.2.0', '2.0.0', '1.0', '']) {
    const e = err(() => formatResult(full(), v));
    t.equal(e.code, 1, `${JSON.stringify(v)}: code`);
    t.equal(e.msg, `cannot convert result to CNI version ${JSON.stringify(v)}`);
    t.equal(e.details, 'supported versions: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0');
  }
});

t.test('parseResult reads what formatResult prints, in every version (round trip)', async (t) => {
  for (const v of VERSIONS) {
    const printed = expected(v);
    const parsed = parseResult(JSON.stringify(printed));
    t.equal(parsed.cniVersion, v, `${v}: the result's own version`);
    t.notOk(parsed.ips.some((i) => 'version' in i), `${v}: ips[].version is not part of the model`);
    t.strictSame(formatResult(parsed, v), printed, `${v}: printed again unchanged`);
  }
  // A Buffer (a plugin's stdout) and an already-decoded object parse the same.
  const text = JSON.stringify(expected('0.4.0'));
  t.strictSame(parseResult(Buffer.from(text)), parseResult(text));
  t.strictSame(parseResult(JSON.parse(text)), parseResult(text));
});

t.test('parseResult: the complete model with absent lists filled in', async (t) => {
  t.strictSame(parseResult({ cniVersion: '1.0.0' }), { cniVersion: '1.0.0', interfaces: [], ips: [], routes: [], dns: {} });
  t.strictSame(parseResult({ cniVersion: '0.3.0', interfaces: null, ips: null, routes: null, dns: null }), emptyResult('0.3.0'));
  t.strictSame(emptyResult(), { cniVersion: '1.1.0', interfaces: [], ips: [], routes: [], dns: {} });
  // Zero MTU/advmss/priority are "unset"; table and scope 0 are kept; empty strings are unset.
  t.strictSame(
    parseResult({
      cniVersion: '1.1.0',
      interfaces: [{ name: 'eth0', mac: '', mtu: 0, sandbox: null }],
      routes: [{ dst: '10.0.0.0/8', gw: '', mtu: 0, advmss: 0, priority: 0, table: 0, scope: 0 }],
      dns: { nameservers: [], search: [], options: [], domain: '' },
    }),
    { cniVersion: '1.1.0', interfaces: [{ name: 'eth0' }], ips: [], routes: [{ dst: '10.0.0.0/8', table: 0, scope: 0 }], dns: {} },
  );
});

t.test('an older prevResult converted up, a newer one converted down', async (t) => {
  // What Debian's bridge 0.3.1 prints (libcni field order: version, interface, address, gateway).
  const old = {
    cniVersion: '0.3.1',
    interfaces: [
      { name: 'cni0', mac: '0a:58:0a:58:00:01' },
      { name: 'veth1234', mac: 'aa:bb:cc:dd:ee:02' },
      { name: 'eth0', mac: '0a:58:0a:58:00:07', sandbox: '/var/run/netns/p2' },
    ],
    ips: [{ version: '4', interface: 2, address: '10.88.0.7/24', gateway: '10.88.0.1' }],
    routes: [{ dst: '0.0.0.0/0' }],
    dns: {},
  };
  const parsed = parseResult(old, '1.1.0', 'prevResult');
  t.strictSame(parsed, {
    cniVersion: '0.3.1',
    interfaces: old.interfaces,
    ips: [{ address: '10.88.0.7/24', gateway: '10.88.0.1', interface: 2 }],
    routes: [{ dst: '0.0.0.0/0' }],
    dns: {},
  }, 'the result\'s own version wins over the fallback; ips[].version checked and dropped');
  for (const v of ['1.0.0', '1.1.0']) {
    t.strictSame(formatResult(parsed, v), {
      cniVersion: v,
      interfaces: old.interfaces,
      ips: [{ address: '10.88.0.7/24', gateway: '10.88.0.1', interface: 2 }],
      routes: [{ dst: '0.0.0.0/0' }],
      dns: {},
    }, `up to ${v}: no ips[].version`);
  }
  t.strictSame(formatResult(parsed, '0.3.0'), { ...old, cniVersion: '0.3.0' }, 'sideways to 0.3.0');

  // 1.1.0 down to 0.4.0 / 1.0.0: the 1.1.0-only fields are dropped, ips[].version appears for 0.4.0.
  const newer = parseResult(JSON.stringify(expected('1.1.0')), '0.4.0', 'prevResult');
  t.equal(newer.cniVersion, '1.1.0');
  t.equal(newer.interfaces[2]!.mtu, 1450, 'the model keeps 1.1.0 fields');
  t.equal(newer.routes[0]!.advmss, 1360);
  t.strictSame(formatResult(newer, '0.4.0'), expected('0.4.0'));
  t.strictSame(formatResult(newer, '1.0.0'), expected('1.0.0'));

  // A legacy result may omit ips[].version: it is derived from the address when printed.
  const bare = parseResult({ cniVersion: '0.4.0', ips: [{ address: 'fd00::5/64' }, { address: '10.0.0.5/24' }] });
  t.strictSame(formatResult(bare, '0.4.0').ips, [{ version: '6', address: 'fd00::5/64' }, { version: '4', address: '10.0.0.5/24' }]);
});

t.test('prevResult without a cniVersion is read in the fallback (the config\'s) version', async (t) => {
  const prev = { ips: [{ version: '4', address: '10.0.0.5/24' }] };
  t.equal(parseResult(prev, '0.4.0').cniVersion, '0.4.0');
  t.equal(parseResult({ ...prev, cniVersion: '' }, '0.3.1').cniVersion, '0.3.1', 'an empty cniVersion is absent');
  // In a legacy fallback version, ips[].version is checked against the address...
  const e = err(() => parseResult({ ips: [{ version: '6', address: '10.0.0.5/24' }] }, '0.4.0', 'prevResult'));
  t.equal(e.code, 7);
  t.equal(e.msg, 'prevResult.ips[0].version: invalid value "6" ("4", the family of 10.0.0.5/24)');
  // ...and in 1.x it is not a field at all, so it is ignored, whatever it says.
  t.strictSame(parseResult({ ips: [{ version: '6', address: '10.0.0.5/24' }] }, '1.0.0').ips, [{ address: '10.0.0.5/24' }]);
  t.strictSame(parseResult({ cniVersion: '1.1.0', ips: [{ version: 'x', address: '10.0.0.5/24' }] }).ips, [{ address: '10.0.0.5/24' }]);

  // The same through the network configuration: the prevResult's own version wins,
  // the config's applies when it has none, and ADD prints in the config's version.
  const base = { name: 'n', type: 'skiff-cni' };
  const c1 = parseNetConf(JSON.stringify({ ...base, cniVersion: '1.1.0', prevResult: { cniVersion: '0.3.0', ips: [{ version: '4', address: '10.0.0.5/24' }] } }), 'ADD');
  t.equal(c1.prevResult!.cniVersion, '0.3.0');
  t.strictSame(formatResult(c1.prevResult!, c1.cniVersion), { cniVersion: '1.1.0', ips: [{ address: '10.0.0.5/24' }], dns: {} });
  const c2 = parseNetConf(JSON.stringify({ ...base, cniVersion: '0.4.0', prevResult: { ips: [{ address: '10.0.0.5/24' }] } }), 'ADD');
  t.equal(c2.prevResult!.cniVersion, '0.4.0');
  const e2 = err(() => parseNetConf(JSON.stringify({ ...base, cniVersion: '0.4.0', prevResult: { ips: [{ version: '6', address: '10.0.0.5/24' }] } }), 'ADD'));
  t.equal(e2.code, 7);
  t.match(e2.msg, /^prevResult\.ips\[0\]\.version: invalid value "6"/);
});

t.test('parseResult errors: decoding (6), version (1 or 7)', async (t) => {
  let e = err(() => parseResult('{"cniVersion": '));
  t.equal(e.code, 6);
  t.equal(e.msg, 'result: cannot decode JSON');
  t.ok(e.details, 'details carry the parser\'s reason');
  e = err(() => parseResult(Buffer.from('not json'), undefined, 'ipam plugin static result'));
  t.equal(e.code, 6);
  t.equal(e.msg, 'ipam plugin static result: cannot decode JSON');

  for (const [v, shown] of [[[], '[]'], [null, 'null'], [42, '42'], ['"a string"', '"a string"']] as const) {
    e = err(() => parseResult(v, '1.0.0', 'prevResult'));
    t.equal(e.code, 7, `${shown}: code`);
    t.equal(e.msg, `prevResult: invalid value ${shown} (a JSON object)`);
  }

  e = err(() => parseResult({ ips: [] }));
  t.equal(e.code, 7);
  t.equal(e.msg, "result.cniVersion: required field is missing (the result's CNI version)");
  e = err(() => parseResult({ cniVersion: '', ips: [] }, undefined, 'prevResult'));
  t.equal(e.msg, "prevResult.cniVersion: required field is missing (the result's CNI version)");

  for (const v of ['0.2.0', '0.1.0', '1.2.0', 'abc', 1]) {
    e = err(() => parseResult({ cniVersion: v }, '1.0.0'));
    t.equal(e.code, 1, `${JSON.stringify(v)}: code 1`);
    t.equal(e.msg, `result.cniVersion: incompatible CNI version ${JSON.stringify(v)}`);
    t.equal(e.details, 'supported versions: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0');
  }
  e = err(() => parseResult({}, '0.2.0'));
  t.equal(e.code, 1, 'an unsupported fallback version is refused too');
});

t.test('parseResult errors name the field path and the value (code 7)', async (t) => {
  const v = (extra: Record<string, unknown>, version = '1.1.0') => ({ cniVersion: version, ...extra });
  const twoIfaces = [{ name: 'a' }, { name: 'b' }];
  const INT32 = 'an integer from 0 to 4294967295';
  const CIDR = 'an IP address with prefix length, e.g. 10.1.2.3/24';
  const cases: [string, unknown, string][] = [
    ['interfaces not a list', v({ interfaces: { name: 'eth0' } }), 'prevResult.interfaces: invalid value {"name":"eth0"} (a list)'],
    ['interface not an object', v({ interfaces: ['eth0'] }), 'prevResult.interfaces[0]: invalid value "eth0" (an object)'],
    ['interface without name', v({ interfaces: [{ name: 'a' }, { mac: '0a:00:00:00:00:01' }] }), 'prevResult.interfaces[1].name: invalid value undefined (a non-empty string)'],
    ['interface with empty name', v({ interfaces: [{ name: '' }] }), 'prevResult.interfaces[0].name: invalid value "" (a non-empty string)'],
    ['mac not a string', v({ interfaces: [{ name: 'a', mac: 5 }] }), 'prevResult.interfaces[0].mac: invalid value 5 (a string)'],
    ['sandbox not a string', v({ interfaces: [{ name: 'a', sandbox: true }] }), 'prevResult.interfaces[0].sandbox: invalid value true (a string)'],
    ['socketPath not a string', v({ interfaces: [{ name: 'a', socketPath: 1 }] }), 'prevResult.interfaces[0].socketPath: invalid value 1 (a string)'],
    ['pciID not a string', v({ interfaces: [{ name: 'a', pciID: {} }] }), 'prevResult.interfaces[0].pciID: invalid value {} (a string)'],
    ['negative mtu', v({ interfaces: [{ name: 'a', mtu: -1 }] }), `prevResult.interfaces[0].mtu: invalid value -1 (${INT32})`],
    ['fractional mtu', v({ interfaces: [{ name: 'a', mtu: 1500.5 }] }), `prevResult.interfaces[0].mtu: invalid value 1500.5 (${INT32})`],
    ['string mtu', v({ interfaces: [{ name: 'a', mtu: '1500' }] }), `prevResult.interfaces[0].mtu: invalid value "1500" (${INT32})`],
    ['mtu above 32 bits', v({ interfaces: [{ name: 'a', mtu: 2 ** 32 }] }), `prevResult.interfaces[0].mtu: invalid value 4294967296 (${INT32})`],
    ['ips not a list', v({ ips: 'x' }), 'prevResult.ips: invalid value "x" (a list)'],
    ['ip not an object', v({ ips: [null] }), 'prevResult.ips[0]: invalid value null (an object)'],
    ['address without prefix', v({ ips: [{ address: '10.0.0.5' }] }), `prevResult.ips[0].address: invalid value "10.0.0.5" (${CIDR})`],
    ['IPv4 prefix too long', v({ ips: [{ address: '10.0.0.5/24' }, { address: '10.0.0.6/33' }] }), `prevResult.ips[1].address: invalid value "10.0.0.6/33" (${CIDR})`],
    ['IPv6 prefix too long', v({ ips: [{ address: 'fd00::6/129' }] }), `prevResult.ips[0].address: invalid value "fd00::6/129" (${CIDR})`],
    ['prefix not a number', v({ ips: [{ address: '10.0.0.5/x' }] }), `prevResult.ips[0].address: invalid value "10.0.0.5/x" (${CIDR})`],
    ['address not an IP', v({ ips: [{ address: 'host/24' }] }), `prevResult.ips[0].address: invalid value "host/24" (${CIDR})`],
    ['address missing', v({ ips: [{ gateway: '10.0.0.1' }] }), `prevResult.ips[0].address: invalid value undefined (${CIDR})`],
    ['legacy version not 4/6', v({ ips: [{ version: '5', address: '10.0.0.5/24' }] }, '0.3.0'), 'prevResult.ips[0].version: invalid value "5" ("4" or "6")'],
    ['legacy version a number', v({ ips: [{ version: 4, address: '10.0.0.5/24' }] }, '0.3.1'), 'prevResult.ips[0].version: invalid value 4 ("4" or "6")'],
    ['legacy version of the other family', v({ ips: [{ version: '4', address: 'fd00::5/64' }] }, '0.4.0'), 'prevResult.ips[0].version: invalid value "4" ("6", the family of fd00::5/64)'],
    ['gateway of the other family', v({ ips: [{ address: '10.0.0.5/24', gateway: 'fd00::1' }] }), 'prevResult.ips[0].gateway: invalid value "fd00::1" (an IPv4 address (the family of 10.0.0.5/24))'],
    ['gateway not an IP', v({ ips: [{ address: 'fd00::5/64', gateway: 'router' }] }), 'prevResult.ips[0].gateway: invalid value "router" (an IPv6 address (the family of fd00::5/64))'],
    ['gateway not a string', v({ ips: [{ address: '10.0.0.5/24', gateway: 1 }] }), 'prevResult.ips[0].gateway: invalid value 1 (a string)'],
    ['interface index past the end', v({ interfaces: twoIfaces, ips: [{ address: '10.0.0.5/24', interface: 2 }] }), 'prevResult.ips[0].interface: invalid value 2 (an index into interfaces, 0 to 1)'],
    ['negative interface index', v({ interfaces: twoIfaces, ips: [{ address: '10.0.0.5/24', interface: -1 }] }), 'prevResult.ips[0].interface: invalid value -1 (an index into interfaces, 0 to 1)'],
    ['fractional interface index', v({ interfaces: twoIfaces, ips: [{ address: '10.0.0.5/24', interface: 0.5 }] }), 'prevResult.ips[0].interface: invalid value 0.5 (an index into interfaces, 0 to 1)'],
    ['string interface index', v({ interfaces: twoIfaces, ips: [{ address: '10.0.0.5/24', interface: '1' }] }), 'prevResult.ips[0].interface: invalid value "1" (an index into interfaces, 0 to 1)'],
    ['interface index without interfaces', v({ ips: [{ address: '10.0.0.5/24', interface: 0 }] }), 'prevResult.ips[0].interface: invalid value 0 (no index: the result has no interfaces)'],
    ['routes not a list', v({ routes: {} }), 'prevResult.routes: invalid value {} (a list)'],
    ['route not an object', v({ routes: ['0.0.0.0/0'] }), 'prevResult.routes[0]: invalid value "0.0.0.0/0" (an object)'],
    ['route dst without prefix', v({ routes: [{ dst: '0.0.0.0' }] }), 'prevResult.routes[0].dst: invalid value "0.0.0.0" (a destination in CIDR form, e.g. 0.0.0.0/0)'],
    ['route without dst', v({ routes: [{ gw: '10.0.0.1' }] }), 'prevResult.routes[0].dst: invalid value undefined (a destination in CIDR form, e.g. 0.0.0.0/0)'],
    ['route gw not an IP', v({ routes: [{ dst: '0.0.0.0/0', gw: '10.0.0' }] }), 'prevResult.routes[0].gw: invalid value "10.0.0" (an IP address)'],
    ['route mtu negative', v({ routes: [{ dst: '0.0.0.0/0', mtu: -5 }] }), `prevResult.routes[0].mtu: invalid value -5 (${INT32})`],
    ['route advmss fractional', v({ routes: [{ dst: '0.0.0.0/0', advmss: 1.5 }] }), `prevResult.routes[0].advmss: invalid value 1.5 (${INT32})`],
    ['route priority a string', v({ routes: [{ dst: '0.0.0.0/0', priority: '1' }] }), `prevResult.routes[0].priority: invalid value "1" (${INT32})`],
    ['route table negative', v({ routes: [{ dst: '0.0.0.0/0', table: -1 }] }), `prevResult.routes[0].table: invalid value -1 (${INT32})`],
    ['route scope above 255', v({ routes: [{ dst: '0.0.0.0/0', scope: 256 }] }), 'prevResult.routes[0].scope: invalid value 256 (an integer from 0 to 255)'],
    ['dns not an object', v({ dns: ['10.0.0.10'] }), 'prevResult.dns: invalid value ["10.0.0.10"] (an object)'],
    ['nameservers not a list', v({ dns: { nameservers: '10.0.0.10' } }), 'prevResult.dns.nameservers: invalid value "10.0.0.10" (a list of strings)'],
    ['nameserver not a string', v({ dns: { nameservers: [10] } }), 'prevResult.dns.nameservers: invalid value [10] (a list of strings)'],
    ['nameserver not an IP', v({ dns: { nameservers: ['10.0.0.10', 'dns.example'] } }), 'prevResult.dns.nameservers[1]: invalid value "dns.example" (an IPv4 or IPv6 address)'],
    ['domain not a string', v({ dns: { domain: 5 } }), 'prevResult.dns.domain: invalid value 5 (a string)'],
    ['search with a non-string', v({ dns: { search: ['a', 1] } }), 'prevResult.dns.search: invalid value ["a",1] (a list of strings)'],
    ['options not a list', v({ dns: { options: 'ndots:5' } }), 'prevResult.dns.options: invalid value "ndots:5" (a list of strings)'],
  ];
  for (const [name, input, msg] of cases) {
    const e = err(() => parseResult(input, undefined, 'prevResult'));
    t.equal(e.code, 7, `${name}: code 7`);
    t.equal(e.msg, msg, `${name}: message`);
  }
  // The default prefix is "result".
  t.equal(err(() => parseResult(v({ ips: [{ address: 'x' }] }))).msg, `result.ips[0].address: invalid value "x" (${CIDR})`);
});

t.test('parseDns on its own (the network configuration\'s dns uses it)', async (t) => {
  t.strictSame(parseDns(undefined), {});
  t.strictSame(parseDns(null), {});
  t.strictSame(parseDns({ nameservers: ['10.0.0.10'], domain: 'd', search: ['s'], options: ['o'], other: 1 }), { nameservers: ['10.0.0.10'], domain: 'd', search: ['s'], options: ['o'] });
  const e = err(() => parseDns({ nameservers: ['x'] }));
  t.equal(e.msg, 'dns.nameservers[0]: invalid value "x" (an IPv4 or IPv6 address)', 'default path "dns"');
  t.equal(err(() => parseDns(5, 'conf.dns')).msg, 'conf.dns: invalid value 5 (an object)');
});

t.test('amendResult appends to a prevResult and shifts our interface indices', async (t) => {
  const prev = parseResult({
    cniVersion: '0.4.0',
    interfaces: [{ name: 'dummy0', mac: '0a:00:00:00:00:01' }, { name: 'net1', sandbox: '/var/run/netns/p' }],
    ips: [{ version: '4', address: '192.168.5.2/24', interface: 1 }, { version: '4', address: '192.168.6.2/24' }],
    routes: [{ dst: '192.168.0.0/16', gw: '192.168.5.1' }],
    dns: { nameservers: ['192.168.5.53'] },
  });
  const before = JSON.parse(JSON.stringify(prev));
  const out = amendResult(prev, {
    interfaces: [{ name: 'cni0', mac: '0a:58:0a:58:00:01' }, { name: 'vethx', mac: '0a:58:0a:58:00:02' }, { name: 'eth0', mac: '0a:58:0a:58:00:05', sandbox: '/var/run/netns/p' }],
    ips: [{ address: '10.88.0.5/24', gateway: '10.88.0.1', interface: 2 }, { address: '10.99.0.5/24' }],
    routes: [{ dst: '0.0.0.0/0', gw: '10.88.0.1' }],
    dns: {},
  });
  t.strictSame(out, {
    cniVersion: '0.4.0',
    interfaces: [
      { name: 'dummy0', mac: '0a:00:00:00:00:01' },
      { name: 'net1', sandbox: '/var/run/netns/p' },
      { name: 'cni0', mac: '0a:58:0a:58:00:01' },
      { name: 'vethx', mac: '0a:58:0a:58:00:02' },
      { name: 'eth0', mac: '0a:58:0a:58:00:05', sandbox: '/var/run/netns/p' },
    ],
    ips: [
      { address: '192.168.5.2/24', interface: 1 },
      { address: '192.168.6.2/24' },
      { address: '10.88.0.5/24', gateway: '10.88.0.1', interface: 4 },
      { address: '10.99.0.5/24' },
    ],
    routes: [{ dst: '192.168.0.0/16', gw: '192.168.5.1' }, { dst: '0.0.0.0/0', gw: '10.88.0.1' }],
    dns: { nameservers: ['192.168.5.53'] },
  }, 'previous entries first and unchanged; our ip index 2 becomes 4; an empty dns keeps prev\'s');
  t.strictSame(prev, before, 'prevResult not modified');
  out.interfaces[0]!.name = 'changed';
  out.interfaces.push({ name: 'more' });
  out.ips[0]!.address = '1.1.1.1/32';
  out.routes[0]!.dst = '0.0.0.0/0';
  t.strictSame(prev, before, 'the output\'s interfaces, ips and routes are copies');
  // Printed in prev's version: the indices and ips[].version are consistent.
  t.strictSame((formatResult(amendResult(prev, { interfaces: [{ name: 'eth1' }], ips: [{ address: 'fd00::5/64', interface: 0 }] }), '0.4.0').ips as unknown[])[2], {
    version: '6',
    address: 'fd00::5/64',
    interface: 2,
  });
});

t.test('amendResult: dns is replaced only by a non-empty one; minimal inputs', async (t) => {
  const prev: Result = { cniVersion: '1.0.0', ips: [], dns: { nameservers: ['10.0.0.10'], search: ['a'] } };
  t.strictSame(amendResult(prev, {}).dns, { nameservers: ['10.0.0.10'], search: ['a'] });
  t.strictSame(amendResult(prev, { dns: { nameservers: [], search: [], options: [], domain: '' } }).dns, { nameservers: ['10.0.0.10'], search: ['a'] });
  for (const dns of [{ nameservers: ['10.96.0.10'] }, { domain: 'cluster.local' }, { search: ['svc'] }, { options: ['ndots:5'] }]) {
    t.strictSame(amendResult(prev, { dns }).dns, dns, `replaced by ${JSON.stringify(dns)}`);
  }
  // Nothing before: our indices are unchanged; absent lists become empty ones.
  t.strictSame(amendResult({ cniVersion: '1.1.0', ips: [] }, { interfaces: [{ name: 'eth0' }], ips: [{ address: '10.0.0.5/24', interface: 0 }] }), {
    cniVersion: '1.1.0',
    interfaces: [{ name: 'eth0' }],
    ips: [{ address: '10.0.0.5/24', interface: 0 }],
    routes: [],
    dns: {},
  });
});

t.test('amendResult refuses an ip that points past our interfaces (code 100)', async (t) => {
  const prev: Result = { cniVersion: '1.0.0', interfaces: [{ name: 'a' }, { name: 'b' }], ips: [] };
  for (const idx of [1, -1, 0.5]) {
    const e = err(() => amendResult(prev, { interfaces: [{ name: 'eth0' }], ips: [{ address: '10.0.0.5/24', interface: idx }] }));
    t.equal(e.code, 100, `index ${idx}`);
    t.equal(e.msg, `amendResult: ip 10.0.0.5/24 points at interface ${idx}, but only 1 interface(s) are added`);
  }
  // Indices are ours, not the merged list's: 1 would be valid in the merged list but not here.
  t.equal(err(() => amendResult(prev, { ips: [{ address: '10.0.0.5/24', interface: 0 }] })).msg, 'amendResult: ip 10.0.0.5/24 points at interface 0, but only 0 interface(s) are added');
});

t.test('assignInterface points every IPAM ip at one interface, as copies', async (t) => {
  const ipam: Result = { cniVersion: '1.0.0', ips: [{ address: '10.0.0.5/24', gateway: '10.0.0.1' }, { address: 'fd00::5/64', interface: 7 }] };
  const before = JSON.parse(JSON.stringify(ipam));
  t.strictSame(assignInterface(ipam, 2), [
    { address: '10.0.0.5/24', gateway: '10.0.0.1', interface: 2 },
    { address: 'fd00::5/64', interface: 2 },
  ]);
  t.strictSame(ipam, before, 'input unchanged');
  t.strictSame(assignInterface({ cniVersion: '1.0.0' } as Result, 0), [], 'no ips');
});

t.test('validators: isCidr, ipFamily, isMac', async (t) => {
  for (const s of ['10.0.0.0/8', '0.0.0.0/0', '10.1.2.3/32', '::/0', 'fd00::1/128', '2001:db8::/32']) t.ok(isCidr(s), s);
  for (const s of ['10.0.0.0', '10.0.0.0/', '10.0.0.0/33', '::/129', '10.0.0.0/-1', '10.0.0.0/1234', '10.0.0/8', 'a/8', '/8', 7, undefined]) t.notOk(isCidr(s), String(s));
  t.equal(ipFamily('10.0.0.1'), 4);
  t.equal(ipFamily('10.0.0.1/24'), 4);
  t.equal(ipFamily('fd00::1/64'), 6);
  t.equal(ipFamily('::ffff:10.0.0.1'), 6);
  t.ok(isMac('0a:58:0A:58:00:05'));
  for (const s of ['0a:58:0a:58:00', '0a-58-0a-58-00-05', '0a:58:0a:58:00:055', 'zz:58:0a:58:00:05', 5]) t.notOk(isMac(s), String(s));
});
