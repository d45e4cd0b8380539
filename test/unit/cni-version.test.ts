import t from 'tap';
import {
  SUPPORTED_VERSIONS,
  checkVersion,
  compareVersions,
  isLegacyResultVersion,
  isSupportedVersion,
  parseVersion,
  versionAtLeast,
  versionInfo,
} from '../../src/cni/version.js';
import { CniError } from '../../src/cni/errors.js';

function code(fn: () => unknown): number | undefined {
  try {
    fn();
  } catch (e) {
    return e instanceof CniError ? e.code : -1;
  }
  return undefined;
}

t.test('VERSION output', async (t) => {
  t.same(versionInfo(), { cniVersion: '1.1.0', supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] });
  // a copy: callers cannot mutate the constant
  versionInfo().supportedVersions.push('9.9.9');
  t.equal(SUPPORTED_VERSIONS.length, 5);
});

t.test('comparison', async (t) => {
  t.same(parseVersion('0.1'), [0, 1, 0]);
  t.same(parseVersion('1.1.0'), [1, 1, 0]);
  t.equal(parseVersion('1.x'), undefined);
  t.equal(parseVersion('v1.0.0'), undefined);
  t.ok(compareVersions('0.3.1', '0.4.0') < 0);
  t.ok(compareVersions('1.0.0', '0.4.0') > 0);
  t.ok(compareVersions('0.10.0', '0.9.0') > 0, 'numeric, not lexical');
  t.equal(compareVersions('1.0', '1.0.0'), 0);
  t.ok(versionAtLeast('1.1.0', '1.1.0'));
  t.notOk(versionAtLeast('1.0.0', '1.1.0'));
  t.equal(code(() => compareVersions('abc', '1.0.0')), 6);
  t.ok(isSupportedVersion('0.4.0'));
  t.notOk(isSupportedVersion('0.2.0'));
  t.notOk(isSupportedVersion(1));
  t.ok(isLegacyResultVersion('0.4.0'));
  t.notOk(isLegacyResultVersion('1.0.0'));
});

t.test('unsupported or missing config version -> code 1', async (t) => {
  for (const v of ['0.1.0', '0.2.0', '1.2.0', '2.0.0', 'latest', 1]) {
    let err: CniError | undefined;
    try {
      checkVersion(v, 'ADD');
    } catch (e) {
      err = e as CniError;
    }
    t.equal(err?.code, 1, `version ${String(v)}`);
    t.match(err?.msg, JSON.stringify(v), 'message names the value');
    t.match(err?.details, /1\.1\.0/, 'details list supported versions');
  }
  t.equal(code(() => checkVersion(undefined, 'DEL')), 1);
  t.equal(code(() => checkVersion('', 'DEL')), 1);
});

t.test('commands per version', async (t) => {
  const table: [string, string, boolean][] = [];
  for (const v of SUPPORTED_VERSIONS) {
    table.push([v, 'ADD', true], [v, 'DEL', true]);
    table.push([v, 'CHECK', compareVersions(v, '0.4.0') >= 0]);
    table.push([v, 'GC', v === '1.1.0'], [v, 'STATUS', v === '1.1.0']);
  }
  for (const [v, cmd, ok] of table) {
    const c = code(() => checkVersion(v, cmd as never));
    t.equal(c, ok ? undefined : 1, `${cmd} with ${v}: ${ok ? 'allowed' : 'code 1'}`);
  }
  try {
    checkVersion('1.0.0', 'GC');
  } catch (e) {
    t.equal((e as CniError).msg, 'config version does not allow GC');
    t.match((e as CniError).details, /"1\.0\.0".*1\.1\.0/);
  }
  t.equal(checkVersion('0.3.1', 'ADD'), '0.3.1');
});
