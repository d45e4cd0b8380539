import t from 'tap';
import { parseNetConf, versionRequest } from '../../src/cni/config.js';
import { cniError } from '../helpers/cni-error.js';

const base = { cniVersion: '1.0.0', name: 'skiff', type: 'skiff-cni' };
const conf = (extra: Record<string, unknown> = {}, cmd = 'ADD') => parseNetConf(JSON.stringify({ ...base, ...extra }), cmd as never);

const err = cniError;

t.test('defaults and standard fields', async (t) => {
  const c = conf({ ipam: { type: 'host-local', subnet: '10.244.1.0/24' }, unknownField: { x: 1 } });
  t.equal(c.cniVersion, '1.0.0');
  t.equal(c.name, 'skiff');
  t.equal(c.type, 'skiff-cni');
  t.equal(c.bridge, 'cni0');
  t.same(
    [c.isGateway, c.isDefaultGateway, c.forceAddress, c.ipMasq, c.hairpinMode, c.promiscMode],
    [false, false, false, false, false, false],
  );
  t.equal(c.mtu, undefined);
  t.same(c.ipam, { type: 'host-local', subnet: '10.244.1.0/24' }, 'ipam kept raw');
  t.same(c.raw.unknownField, { x: 1 }, 'unknown fields allowed and kept');
  t.equal(c.prevResult, undefined);
  t.equal(c.validAttachments, undefined);

  const full = conf({
    bridge: 'br-pods',
    isGateway: true,
    ipMasq: true,
    mtu: 1450,
    hairpinMode: true,
    forceAddress: true,
    args: { cni: { ips: ['10.0.0.1'] } },
    runtimeConfig: { mac: '0a:00:00:00:00:01' },
    capabilities: { ips: true, mac: true },
    dns: { nameservers: ['10.96.0.10'], search: ['svc.cluster.local'] },
    overlay: { vni: 42, port: 4789, underlayInterface: 'eth0', device: 'skiff.42' },
    vlan: 0,
    macspoofchk: false,
  });
  t.equal(full.bridge, 'br-pods');
  t.equal(full.mtu, 1450);
  t.ok(full.isGateway && full.ipMasq && full.hairpinMode && full.forceAddress);
  t.same(full.args, { cni: { ips: ['10.0.0.1'] } });
  t.same(full.runtimeConfig, { mac: '0a:00:00:00:00:01' });
  t.same(full.capabilities, { ips: true, mac: true });
  t.same(full.dns, { nameservers: ['10.96.0.10'], search: ['svc.cluster.local'] });
  t.same(full.overlay, { vni: 42, port: 4789, underlayInterface: 'eth0', device: 'skiff.42' });
  t.same(conf({ overlay: {} }).overlay, { vni: 1, port: 8472 }, 'overlay defaults as flannel');
});

t.test('isDefaultGateway implies isGateway', async (t) => {
  const c = conf({ isDefaultGateway: true });
  t.ok(c.isDefaultGateway);
  t.ok(c.isGateway);
  t.ok(conf({ isDefaultGateway: true, isGateway: false }).isGateway);
});

t.test('decode failures are code 6', async (t) => {
  for (const bad of ['', '{', 'nope', '{"cniVersion": "1.0.0",}']) {
    const e = err(() => parseNetConf(bad, 'ADD'));
    t.equal(e.code, 6, JSON.stringify(bad));
    t.match(e.msg, /network configuration/);
  }
  t.equal(err(() => parseNetConf('[1,2]', 'ADD')).code, 6);
  t.equal(err(() => parseNetConf('"str"', 'ADD')).code, 6);
  t.equal(parseNetConf(Buffer.from(JSON.stringify(base)), 'ADD').name, 'skiff', 'accepts a Buffer');
});

t.test('version errors are code 1, including commands the version lacks', async (t) => {
  t.equal(err(() => conf({ cniVersion: '0.2.0' })).code, 1);
  t.equal(err(() => conf({ cniVersion: undefined })).code, 1);
  t.equal(err(() => conf({ cniVersion: '0.3.1' }, 'CHECK')).code, 1);
  t.equal(err(() => conf({ cniVersion: '1.0.0', 'cni.dev/valid-attachments': [] }, 'GC')).code, 1);
  t.equal(err(() => conf({ cniVersion: '1.0.0' }, 'STATUS')).code, 1);
  t.doesNotThrow(() => conf({ cniVersion: '1.1.0' }, 'STATUS'));
});

t.test('invalid values are code 7 naming field and value', async (t) => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ name: undefined }, /^name: required field is missing/],
    [{ name: '-bad' }, /^name: invalid value "-bad"/],
    [{ name: 'a b' }, /^name: invalid value "a b"/],
    [{ name: 5 }, /^name: invalid value 5/],
    [{ type: undefined }, /^type: required field is missing/],
    [{ type: '../bin/x' }, /^type: invalid value "\.\.\/bin\/x"/],
    [{ mtu: 'abc' }, /^mtu: invalid value "abc" \(an integer from 68 to 65535\)$/],
    [{ mtu: 67 }, /^mtu: invalid value 67 \(an integer from 68 to 65535\)$/],
    [{ mtu: 65536 }, /^mtu: invalid value 65536/],
    [{ mtu: 1500.5 }, /^mtu: invalid value 1500\.5/],
    [{ bridge: 'x'.repeat(16) }, /^bridge: invalid value "x{16}" \(longer than 15 bytes/],
    [{ bridge: 'a/b' }, /^bridge: invalid value "a\/b"/],
    [{ bridge: 7 }, /^bridge: invalid value 7/],
    [{ isGateway: 'yes' }, /^isGateway: invalid value "yes" \(true or false\)/],
    [{ isDefaultGateway: 1 }, /^isDefaultGateway: invalid value 1/],
    [{ forceAddress: 'true' }, /^forceAddress: invalid value "true"/],
    [{ ipMasq: 'no' }, /^ipMasq: invalid value "no"/],
    [{ hairpinMode: 0 }, /^hairpinMode: invalid value 0/],
    [{ promiscMode: null, hairpinMode: true, bridge: 'cni0' }, /^$/], // placeholder replaced below
    [{ hairpinMode: true, promiscMode: true }, /^hairpinMode: invalid value true together with promiscMode: true/],
    [{ args: [] }, /^args: invalid value \[\] \(an object\)/],
    [{ runtimeConfig: 'x' }, /^runtimeConfig: invalid value "x"/],
    [{ capabilities: { ips: 'yes' } }, /^capabilities\.ips: invalid value "yes"/],
    [{ dns: { nameservers: ['not-an-ip'] } }, /^dns\.nameservers\[0\]: invalid value "not-an-ip"/],
    [{ dns: { search: 'a' } }, /^dns\.search: invalid value "a"/],
    [{ ipam: 'host-local' }, /^ipam: invalid value "host-local" \(an object\)/],
    [{ ipam: {} }, /^ipam\.type: required field is missing/],
    [{ ipam: { type: 'a/b' } }, /^ipam\.type: invalid value "a\/b"/],
    [{ overlay: { vni: 0 } }, /^overlay\.vni: invalid value 0 \(an integer from 1 to 16777215\)/],
    [{ overlay: { vni: 16777216 } }, /^overlay\.vni: invalid value 16777216/],
    [{ overlay: { vni: '1' } }, /^overlay\.vni: invalid value "1"/],
    [{ overlay: { port: 0 } }, /^overlay\.port: invalid value 0 \(an integer from 1 to 65535\)/],
    [{ overlay: { port: 70000 } }, /^overlay\.port: invalid value 70000/],
    [{ overlay: { underlayInterface: '' } }, /^overlay\.underlayInterface: invalid value ""/],
    [{ overlay: { device: 'x'.repeat(16) } }, /^overlay\.device: invalid value/],
    [{ overlay: 5 }, /^overlay: invalid value 5/],
    [{ vlan: 'x' }, /^vlan: invalid value "x" \(an integer from 0 to 4094\)/],
    [{ vlan: 5000 }, /^vlan: invalid value 5000/],
    [{ macspoofchk: 'on' }, /^macspoofchk: invalid value "on"/],
    [{ prevResult: { cniVersion: '1.0.0', ips: [{ address: '10.0.0.5' }] } }, /^prevResult\.ips\[0\]\.address: invalid value "10\.0\.0\.5"/],
  ];
  for (const [extra, re] of cases) {
    if (re.source === '^$') continue;
    const e = err(() => conf(extra));
    t.equal(e.code, 7, JSON.stringify(extra));
    t.match(e.msg, re, JSON.stringify(extra));
  }
});

t.test('unsupported bridge options are code 2 naming field and value', async (t) => {
  let e = err(() => conf({ vlan: 100 }));
  t.equal(e.code, 2);
  t.match(e.msg, /^vlan: unsupported field \(value 100\)/);
  e = err(() => conf({ macspoofchk: true }));
  t.equal(e.code, 2);
  t.match(e.msg, /^macspoofchk: unsupported field \(value true\)/);
  e = err(() => conf({ vlanTrunk: [{ id: 101 }] }));
  t.equal(e.code, 2);
  t.match(e.msg, /^vlanTrunk: unsupported field \(value \[\{"id":101\}\]\)/);
  t.doesNotThrow(() => conf({ vlanTrunk: [] }));
});

t.test('prevResult: parsed in the config version, required for CHECK', async (t) => {
  const prev = {
    cniVersion: '0.4.0',
    interfaces: [{ name: 'eth0', mac: '0a:00:00:00:00:01', sandbox: '/var/run/netns/x' }],
    ips: [{ version: '4', address: '10.0.0.5/24', gateway: '10.0.0.1', interface: 0 }],
    routes: [{ dst: '0.0.0.0/0' }],
    dns: {},
  };
  const c = conf({ cniVersion: '0.4.0', prevResult: prev }, 'CHECK');
  t.same(c.prevResult, {
    cniVersion: '0.4.0',
    interfaces: [{ name: 'eth0', mac: '0a:00:00:00:00:01', sandbox: '/var/run/netns/x' }],
    ips: [{ address: '10.0.0.5/24', gateway: '10.0.0.1', interface: 0 }],
    routes: [{ dst: '0.0.0.0/0' }],
    dns: {},
  });
  const e = err(() => conf({ cniVersion: '1.0.0' }, 'CHECK'));
  t.equal(e.code, 7);
  t.match(e.msg, /^prevResult: required field is missing/);
  t.doesNotThrow(() => conf({}, 'DEL'), 'DEL without prevResult is fine');
});

t.test('GC attachments', async (t) => {
  const gc = (extra: Record<string, unknown>) => conf({ cniVersion: '1.1.0', ...extra }, 'GC');
  const list = [
    { containerID: 'c1', ifname: 'eth0' },
    { containerID: 'c2', ifname: 'net1' },
  ];
  t.same(gc({ 'cni.dev/valid-attachments': list }).validAttachments, list);
  t.same(gc({ 'cni.dev/attachments': list }).validAttachments, list, 'older key accepted');
  t.same(gc({ 'cni.dev/valid-attachments': [], 'cni.dev/attachments': list }).validAttachments, [], 'the spec key wins');
  let e = err(() => gc({}));
  t.equal(e.code, 7);
  t.match(e.msg, /^cni\.dev\/valid-attachments: required field is missing/);
  e = err(() => gc({ 'cni.dev/valid-attachments': [{ containerID: '', ifname: 'eth0' }] }));
  t.match(e.msg, /^cni\.dev\/valid-attachments\[0\]\.containerID: invalid value ""/);
  e = err(() => gc({ 'cni.dev/valid-attachments': [{ containerID: 'c1', ifname: 'a/b' }] }));
  t.match(e.msg, /^cni\.dev\/valid-attachments\[0\]\.ifname: invalid value "a\/b"/);
  e = err(() => gc({ 'cni.dev/valid-attachments': {} }));
  t.match(e.msg, /^cni\.dev\/valid-attachments: invalid value \{\}/);
  t.equal(conf({ 'cni.dev/valid-attachments': list }).validAttachments, undefined, 'only parsed for GC');
});

t.test('versionRequest', async (t) => {
  t.equal(versionRequest(''), undefined);
  t.equal(versionRequest('{"cniVersion":"0.4.0"}'), '0.4.0');
  t.equal(versionRequest('junk'), undefined);
});
