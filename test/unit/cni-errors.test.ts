import t from 'tap';
import {
  CniError,
  ErrorCode,
  decodeFailure,
  incompatibleVersion,
  invalidEnv,
  invalidField,
  missingField,
  toCniError,
  unsupportedField,
} from '../../src/cni/errors.js';

t.test('codes match the spec', async (t) => {
  t.same(
    [
      ErrorCode.IncompatibleVersion,
      ErrorCode.UnsupportedField,
      ErrorCode.UnknownContainer,
      ErrorCode.InvalidEnvironment,
      ErrorCode.IOFailure,
      ErrorCode.DecodingFailure,
      ErrorCode.InvalidNetworkConfig,
      ErrorCode.TryAgainLater,
      ErrorCode.PluginNotAvailable,
      ErrorCode.PluginNotAvailableLimitedConnectivity,
      ErrorCode.PluginSpecific,
    ],
    [1, 2, 3, 4, 5, 6, 7, 11, 50, 51, 100],
  );
});

t.test('toJSON is the spec error result in the requested version', async (t) => {
  const e = new CniError(7, 'mtu: bad', 'more');
  t.same(e.toJSON('0.4.0'), { cniVersion: '0.4.0', code: 7, msg: 'mtu: bad', details: 'more' });
  t.equal(JSON.stringify(e.toJSON('1.1.0')), '{"cniVersion":"1.1.0","code":7,"msg":"mtu: bad","details":"more"}');
  // no details key when there are none
  t.same(Object.keys(new CniError(4, 'x').toJSON('1.0.0')), ['cniVersion', 'code', 'msg']);
  t.ok(e instanceof Error);
  t.equal(e.message, 'mtu: bad: more');
});

t.test('helpers name the field and the value', async (t) => {
  const f = invalidField('mtu', 'abc', 'an integer from 68 to 65535');
  t.equal(f.code, 7);
  t.equal(f.msg, 'mtu: invalid value "abc" (an integer from 68 to 65535)');
  t.equal(invalidField('mtu', 40, 'an integer from 68 to 65535').msg, 'mtu: invalid value 40 (an integer from 68 to 65535)');
  const m = missingField('name', 'the network name');
  t.equal(m.code, 7);
  t.match(m.msg, /^name: required field is missing/);
  const u = unsupportedField('vlan', 100, 'no VLANs');
  t.equal(u.code, 2);
  t.match(u.msg, /vlan/);
  t.match(u.msg, /100/);
  const env = invalidEnv('CNI_IFNAME', 'a/b', 'no slash');
  t.equal(env.code, 4);
  t.equal(env.msg, 'CNI_IFNAME: invalid value "a/b" (no slash)');
  t.match(invalidEnv('CNI_COMMAND', undefined, 'x').msg, /^CNI_COMMAND: required environment variable is missing/);
  t.equal(incompatibleVersion('v').code, 1);
  const d = decodeFailure('network configuration', new SyntaxError('Unexpected token'));
  t.equal(d.code, 6);
  t.equal(d.details, 'Unexpected token');
});

t.test('toCniError keeps CniErrors, wraps others', async (t) => {
  const c = new CniError(11, 'later');
  t.equal(toCniError(c), c);
  const w = toCniError(new Error('boom'));
  t.equal(w.code, 999);
  t.equal(w.msg, 'boom');
  t.equal(toCniError('str', 5).code, 5);
});
