import t from 'tap';
import { requestedIps, requestedIpsWithSource, requestedMac, requestedMacWithSource, normaliseMac } from '../../src/cni/args.js';
import { cniError } from '../helpers/cni-error.js';

const noEnv = { args: {} as Record<string, string> };

const err = cniError;

t.test('IPs: each source alone, prefixes stripped', async (t) => {
  t.same(requestedIpsWithSource({ runtimeConfig: { ips: ['10.1.2.3/24', '2001:DB8::5/64'] } }, noEnv), {
    ips: ['10.1.2.3', '2001:db8::5'],
    source: 'runtimeConfig',
  });
  t.same(requestedIpsWithSource({ args: { cni: { ips: ['10.1.2.4'] } } }, noEnv), { ips: ['10.1.2.4'], source: 'args' });
  t.same(requestedIpsWithSource({}, { args: { IP: '10.1.2.5/24, fd00::5' } }), {
    ips: ['10.1.2.5', 'fd00::5'],
    source: 'CNI_ARGS',
  });
  t.same(requestedIps({}, noEnv), []);
  t.same(requestedIps({ runtimeConfig: { ips: [] }, args: { cni: {} } }, { args: { IP: '' } }), []);
  t.same(requestedIps({ runtimeConfig: { ips: ['10.0.0.1', '10.0.0.1/24'] } }, noEnv), ['10.0.0.1'], 'deduplicated');
});

t.test('IPs: precedence runtimeConfig > args.cni > CNI_ARGS', async (t) => {
  const env = { args: { IP: '10.0.0.3' } };
  const all = { runtimeConfig: { ips: ['10.0.0.1'] }, args: { cni: { ips: ['10.0.0.2'] } } };
  t.same(requestedIpsWithSource(all, env), { ips: ['10.0.0.1'], source: 'runtimeConfig' });
  t.same(requestedIpsWithSource({ args: all.args }, env), { ips: ['10.0.0.2'], source: 'args' });
  t.same(requestedIpsWithSource({ runtimeConfig: { ips: [] }, args: { cni: { ips: [] } } }, env), { ips: ['10.0.0.3'], source: 'CNI_ARGS' });
  // a lower-precedence source is not even validated when a higher one wins
  t.same(requestedIps({ runtimeConfig: { ips: ['10.0.0.1'] } }, { args: { IP: 'garbage' } }), ['10.0.0.1']);
});

t.test('IPs: errors name the source and value', async (t) => {
  let e = err(() => requestedIps({ runtimeConfig: { ips: ['10.0.0.1', 'nope'] } }, noEnv));
  t.equal(e.code, 7);
  t.match(e.msg, /^runtimeConfig\.ips\[1\]: invalid value "nope"/);
  e = err(() => requestedIps({ runtimeConfig: { ips: '10.0.0.1' } }, noEnv));
  t.match(e.msg, /^runtimeConfig\.ips: invalid value "10\.0\.0\.1" \(a list/);
  e = err(() => requestedIps({ args: { cni: { ips: [42] } } }, noEnv));
  t.match(e.msg, /^args\.cni\.ips\[0\]: invalid value 42/);
  e = err(() => requestedIps({}, { args: { IP: '10.0.0.300' } }));
  t.match(e.msg, /^CNI_ARGS IP: invalid value "10\.0\.0\.300"/);
  e = err(() => requestedIps({}, { args: { IP: '10.0.0.1,10.0.0.2/33' } }));
  t.match(e.msg, /^CNI_ARGS IP\[1\]: invalid value "10\.0\.0\.2\/33"/);
});

t.test('MAC: sources, precedence, validation', async (t) => {
  const env = { args: { MAC: '0a:00:00:00:00:03' } };
  t.same(requestedMacWithSource({ runtimeConfig: { mac: '0A:00:00:00:00:01' }, args: { cni: { mac: '0a:00:00:00:00:02' } } }, env), {
    mac: '0a:00:00:00:00:01',
    source: 'runtimeConfig',
  });
  t.same(requestedMacWithSource({ args: { cni: { mac: '0a:00:00:00:00:02' } } }, env), { mac: '0a:00:00:00:00:02', source: 'args' });
  t.same(requestedMacWithSource({}, env), { mac: '0a:00:00:00:00:03', source: 'CNI_ARGS' });
  t.equal(requestedMac({}, noEnv), undefined);
  t.equal(requestedMac({ args: { cni: 'not-an-object' } }, env), '0a:00:00:00:00:03');

  let e = err(() => requestedMac({ runtimeConfig: { mac: 'zz:00:00:00:00:01' } }, noEnv));
  t.equal(e.code, 7);
  t.match(e.msg, /^runtimeConfig\.mac: invalid value "zz:00:00:00:00:01"/);
  e = err(() => requestedMac({ args: { cni: { mac: '01:00:5e:00:00:01' } } }, noEnv));
  t.match(e.msg, /^args\.cni\.mac: invalid value "01:00:5e:00:00:01" \(a unicast MAC/);
  e = err(() => requestedMac({}, { args: { MAC: '0a:00:00:00:00' } }));
  t.match(e.msg, /^CNI_ARGS MAC: invalid value "0a:00:00:00:00"/);
  t.equal(err(() => normaliseMac('ff:ff:ff:ff:ff:ff', 'x')).code, 7, 'broadcast rejected');
});
