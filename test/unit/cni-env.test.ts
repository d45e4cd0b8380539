import t from 'tap';
import { parseEnv, parseCniArgs, splitCniPath, ifnameProblem, REQUIRED_ENV } from '../../src/cni/env.js';
import { cniError } from '../helpers/cni-error.js';

const full = {
  CNI_COMMAND: 'ADD',
  CNI_CONTAINERID: 'abc123',
  CNI_NETNS: '/var/run/netns/x',
  CNI_IFNAME: 'eth0',
  CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0',
  CNI_PATH: '/opt/cni/bin:/usr/lib/cni',
};

const err = cniError;

t.test('a full ADD environment', async (t) => {
  const env = parseEnv(full);
  t.same(env, {
    command: 'ADD',
    containerId: 'abc123',
    netns: '/var/run/netns/x',
    ifname: 'eth0',
    args: { IgnoreUnknown: '1', K8S_POD_NAMESPACE: 'default', K8S_POD_NAME: 'web-0' },
    ignoreUnknown: true,
    path: ['/opt/cni/bin', '/usr/lib/cni'],
  });
});

t.test('CNI_COMMAND', async (t) => {
  for (const c of ['ADD', 'DEL', 'CHECK', 'GC', 'STATUS', 'VERSION']) {
    t.equal(parseEnv({ ...full, CNI_COMMAND: c }).command, c);
  }
  const e = err(() => parseEnv({ ...full, CNI_COMMAND: 'add' }));
  t.equal(e.code, 4);
  t.match(e.msg, /CNI_COMMAND: invalid value "add"/);
  const m = err(() => parseEnv({}));
  t.equal(m.code, 4);
  t.match(m.msg, /CNI_COMMAND: required environment variable is missing/);
  t.equal(err(() => parseEnv({ CNI_COMMAND: 'GET' })).code, 4);
});

t.test('required variables per command, exactly as the spec', async (t) => {
  t.same(REQUIRED_ENV.DEL, ['CNI_COMMAND', 'CNI_CONTAINERID', 'CNI_IFNAME']);
  const cases: [string, string[]][] = [
    ['ADD', ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME']],
    ['CHECK', ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME']],
    ['DEL', ['CNI_CONTAINERID', 'CNI_IFNAME']],
    ['GC', ['CNI_PATH']],
    ['STATUS', []],
    ['VERSION', []],
  ];
  const all = ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME', 'CNI_PATH'];
  for (const [cmd, required] of cases) {
    for (const v of all) {
      for (const absent of [undefined, '']) {
        const env: Record<string, string | undefined> = { ...full, CNI_COMMAND: cmd, [v]: absent };
        if (required.includes(v)) {
          const e = err(() => parseEnv(env));
          t.equal(e.code, 4, `${cmd} without ${v}`);
          t.match(e.msg, new RegExp(`^${v}: required environment variable is missing \\(needed by ${cmd}\\)`));
        } else {
          t.doesNotThrow(() => parseEnv(env), `${cmd} without ${v} is fine`);
        }
      }
    }
    // only CNI_COMMAND (+ required ones) suffices
    const minimal: Record<string, string> = { CNI_COMMAND: cmd };
    for (const v of required) minimal[v] = (full as Record<string, string>)[v]!;
    t.doesNotThrow(() => parseEnv(minimal), `${cmd} with only its required variables`);
  }
  const del = parseEnv({ CNI_COMMAND: 'DEL', CNI_CONTAINERID: 'c1', CNI_IFNAME: 'eth0', CNI_NETNS: '' });
  t.equal(del.netns, undefined, 'DEL: empty netns is absent');
  const gc = parseEnv({ CNI_COMMAND: 'GC', CNI_PATH: '/a::/b:' });
  t.same(gc.path, ['/a', '/b']);
  t.equal(gc.containerId, '');
});

t.test('CNI_CONTAINERID format', async (t) => {
  for (const ok of ['a', '0', 'a1_b.c-d', 'ABC', 'x'.repeat(200)]) {
    t.equal(parseEnv({ ...full, CNI_CONTAINERID: ok }).containerId, ok);
  }
  for (const bad of ['_a', '-a', '.a', 'a b', 'a/b', 'ä', 'a:b']) {
    const e = err(() => parseEnv({ ...full, CNI_CONTAINERID: bad }));
    t.equal(e.code, 4, bad);
    t.match(e.msg, `CNI_CONTAINERID: invalid value ${JSON.stringify(bad)}`);
  }
});

t.test('CNI_IFNAME: a valid Linux interface name', async (t) => {
  for (const ok of ['eth0', 'a', 'x'.repeat(15), 'net1.100', 'é'.repeat(7)]) {
    t.equal(parseEnv({ ...full, CNI_IFNAME: ok }).ifname, ok, ok);
  }
  for (const bad of ['x'.repeat(16), 'é'.repeat(8), '.', '..', 'a/b', 'a b', 'a\tb', 'a:b']) {
    const e = err(() => parseEnv({ ...full, CNI_IFNAME: bad }));
    t.equal(e.code, 4, JSON.stringify(bad));
    t.match(e.msg, `CNI_IFNAME: invalid value ${JSON.stringify(bad)}`);
  }
  t.equal(ifnameProblem('x'.repeat(16)), 'longer than 15 bytes');
  t.equal(ifnameProblem(''), 'must not be empty');
});

t.test('CNI_ARGS', async (t) => {
  t.same(parseCniArgs(''), { args: {}, ignoreUnknown: false });
  t.same(parseCniArgs('IP=10.0.0.5;MAC=0a:00:00:00:00:01;').args, { IP: '10.0.0.5', MAC: '0a:00:00:00:00:01' });
  t.same(parseCniArgs('IgnoreUnknown=true;FOO=a=b').args, { IgnoreUnknown: 'true', FOO: 'a=b' });
  t.equal(parseCniArgs('IgnoreUnknown=TRUE;X=1').ignoreUnknown, true);
  t.equal(parseCniArgs('IgnoreUnknown=0;IP=1.2.3.4').ignoreUnknown, false);

  const unknown = err(() => parseCniArgs('FOO=bar;K8S_POD_NAME=x'));
  t.equal(unknown.code, 4);
  t.match(unknown.msg, /^CNI_ARGS: invalid value "FOO=bar;K8S_POD_NAME=x"/);
  t.match(unknown.msg, /unknown argument "FOO"/);
  t.match(unknown.msg, /IgnoreUnknown/);

  const pair = err(() => parseCniArgs('IP=1.2.3.4;garbage'));
  t.equal(pair.code, 4);
  t.match(pair.msg, /invalid pair "garbage"/);
  t.equal(err(() => parseCniArgs('=x')).code, 4);
  t.match(err(() => parseCniArgs('IP=1;IP=2')).msg, /duplicate key "IP"/);
  t.match(err(() => parseCniArgs('IgnoreUnknown=maybe')).msg, /IgnoreUnknown=maybe/);

  // through parseEnv, for ADD
  const e = err(() => parseEnv({ ...full, CNI_ARGS: 'NOPE=1' }));
  t.equal(e.code, 4);
  t.match(e.msg, /CNI_ARGS/);
  // custom known list
  t.same(parseEnv({ ...full, CNI_ARGS: 'X=1' }, ['X']).args, { X: '1' });
  t.same(splitCniPath(undefined), []);
});
