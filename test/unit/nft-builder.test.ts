import t from 'tap';
import { Nft, NftError, Transaction, hashedName, quoteComment, sanitizeNamePart } from '../../src/os/nft.js';
import type { ExecResult, Executor } from '../../src/os/exec.js';

t.test('renders a transaction: base chains, maps, structured rules, batched elements', async (t) => {
  const tx = new Transaction('ip', 'skiff-proxy');
  tx.add({ kind: 'table', comment: 'proxy' });
  tx.add({ kind: 'chain', name: 'nat-prerouting', type: 'nat', hook: 'prerouting', priority: 'dstnat' });
  tx.add({ kind: 'chain', name: 'svc-a' });
  tx.add({ kind: 'map', name: 'service-ips', type: ['ipv4_addr', 'inet_proto', 'inet_service'], value: 'verdict' });
  tx.add({ kind: 'set', name: 'aff', type: ['ipv4_addr'], flags: ['timeout', 'dynamic'], timeout: 10800 });
  tx.add({ kind: 'rule', chain: 'nat-prerouting', rule: [{ vmap: { set: 'service-ips' }, key: ['ip daddr', 'meta l4proto', 'th dport'] }] });
  tx.add({ kind: 'rule', chain: 'svc-a', rule: [{ match: 'ip saddr', op: '!=', value: ['10.244.0.0/16'] }, { setMark: 0x4000, how: 'or' }] });
  tx.add({ kind: 'rule', chain: 'svc-a', rule: [{ numgen: 'inc', vmap: [{ goto: 'a' }, { goto: 'b' }] }] });
  tx.add({ kind: 'rule', chain: 'svc-a', rule: [{ update: 'aff', key: ['ip saddr'] }, { match: 'meta l4proto', value: 'tcp' }, { dnat: '10.0.0.1', port: 80 }] });
  tx.add({ kind: 'element', set: 'service-ips', key: ['10.96.0.1', 'tcp', 443], value: { goto: 'svc-a' }, comment: 'default/kubernetes:https' });
  tx.add({ kind: 'element', set: 'service-ips', key: ['10.96.0.10', 'udp', 53], value: { goto: 'svc-a' } });
  tx.delete({ kind: 'element', set: 'service-ips', key: ['10.96.0.9', 'tcp', 80] });
  t.equal(tx.error, undefined);
  t.equal(
    tx.toText(),
    [
      'add table ip skiff-proxy { comment "proxy" ; }',
      'add chain ip skiff-proxy nat-prerouting { type nat hook prerouting priority dstnat ; policy accept ; }',
      'add chain ip skiff-proxy svc-a',
      'add map ip skiff-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; }',
      'add set ip skiff-proxy aff { type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }',
      'add rule ip skiff-proxy nat-prerouting ip daddr . meta l4proto . th dport vmap @service-ips',
      'add rule ip skiff-proxy svc-a ip saddr != { 10.244.0.0/16 } meta mark set meta mark | 0x4000',
      'add rule ip skiff-proxy svc-a numgen inc mod 2 vmap { 0 : goto a, 1 : goto b }',
      'add rule ip skiff-proxy svc-a update @aff { ip saddr } meta l4proto tcp dnat to 10.0.0.1:80',
      'add element ip skiff-proxy service-ips { 10.96.0.1 . tcp . 443 comment "default/kubernetes:https" : goto svc-a, 10.96.0.10 . udp . 53 : goto svc-a }',
      'delete element ip skiff-proxy service-ips { 10.96.0.9 . tcp . 80 }',
      '',
    ].join('\n'),
  );
});

t.test('inet tables render dnat with the address family; IPv6 targets are bracketed', async (t) => {
  const tx = new Transaction('inet', 'x');
  tx.add({ kind: 'chain', name: 'c' });
  tx.add({ kind: 'rule', chain: 'c', rule: [{ dnat: '10.0.0.1', port: 80 }] });
  tx.add({ kind: 'rule', chain: 'c', rule: [{ dnat: 'fd00::0:1', port: 80 }] });
  t.match(tx.toText(), /dnat ip to 10\.0\.0\.1:80\n.*dnat ip6 to \[fd00::1\]:80/);
});

t.test('never throws while building; records the first error and refuses to run', async (t) => {
  const tx = new Transaction('ip', 'skiff-proxy');
  tx.add({ kind: 'chain', name: 'ok' });
  tx.add({ kind: 'chain', name: 'bad; flush ruleset' });
  tx.add({ kind: 'rule', chain: 'ok', rule: [{ match: 'ip daddr', value: '10.0.0.300' }] });
  tx.add({ kind: 'rule', chain: 'ok', rule: [{ match: 'th dport', value: 70000 }] });
  tx.add({ kind: 'rule', chain: 'ok', rule: [{ jump: 'x y' }] });
  tx.add({ kind: 'rule', chain: 'ok', rule: 'accept\nflush ruleset' });
  t.equal(tx.ops.length, 1, 'invalid operations are not recorded');
  t.type(tx.error, NftError);
  t.match(tx.error!.message, /chain name "bad; flush ruleset" is not safe/);
  let ran = false;
  const exec: Executor = async () => {
    ran = true;
    return { code: 0, stdout: '', stderr: '' };
  };
  await t.rejects(new Nft(exec).run(tx), /not run: chain name "bad; flush ruleset"/);
  t.equal(ran, false, 'nft never ran');
  // Elements of sets unknown to the transaction are refused (their literals could not be checked).
  const tx2 = new Transaction('ip', 't');
  tx2.add({ kind: 'element', set: 'nope', key: ['10.0.0.1'] });
  t.match(tx2.error?.message, /type is unknown/);
  const tx3 = new Transaction('ip', 'bad table');
  t.match(tx3.error?.message, /table name/);
});

t.test('comments are stripped of quotes, backslashes and newlines and capped', async (t) => {
  t.equal(quoteComment('a"b\\c\nd'), '"abc d"');
  t.equal(quoteComment('x'.repeat(500)).length, 130);
  const tx = new Transaction('ip', 't');
  tx.add({ kind: 'chain', name: 'c', comment: '"; flush ruleset; "' });
  t.equal(tx.toText(), 'add chain ip t c { comment "; flush ruleset; " ; }\n');
});

t.test('hashed names are safe, bounded, and distinct for identities that sanitize alike', async (t) => {
  const a = hashedName('service', 'ns/a b', 'ns/a b/tcp/http');
  const b = hashedName('service', 'ns/a_b', 'ns/a_b/tcp/http');
  t.match(a, /^service-[A-Z0-9x]{8}-ns\/a_b\/tcp\/http$/i);
  t.not(a, b);
  t.ok(hashedName('endpoint', 'x', 'y'.repeat(400)).length <= 200);
  t.equal(sanitizeNamePart('fd00::1 "x"'), 'fd00__1__x_');
});

t.test('Nft.run pipes the text to nft -f - in the namespace and reports the failing line', async (t) => {
  const calls: { cmd: string; args: string[]; input?: string; netns?: string }[] = [];
  const exec: Executor = async (cmd, args, opts) => {
    calls.push({ cmd, args, input: opts?.input, netns: opts?.netns });
    if (args.includes('-j')) return { code: 0, stdout: JSON.stringify({ nftables: [{ metainfo: {} }, { table: { name: 't' } }, { chain: { name: 'c', type: 'nat', hook: 'prerouting', prio: -100, policy: 'accept' } }, { map: { name: 'm', elem: [1, 2] } }, { rule: { chain: 'c', handle: 4 } }] }), stderr: '' };
    return { code: 1, stdout: '', stderr: '/dev/stdin:2:1-5: Error: Could not process rule: No such file or directory\n' } as ExecResult;
  };
  const nft = new Nft(exec, { netns: 'skt-x' });
  const tx = new Transaction('ip', 't');
  tx.add({ kind: 'table' });
  tx.add({ kind: 'chain', name: 'c' });
  const err = await nft.run(tx).catch((e: unknown) => e as NftError);
  t.type(err, NftError);
  t.equal((err as NftError).line, 2);
  t.match((err as NftError).message, /No such file or directory \(line 2: add chain ip t c\)/);
  t.same(calls[0], { cmd: 'nft', args: ['-f', '-'], input: tx.toText(), netns: 'skt-x' });
  const l = await nft.list('t', 'ip');
  t.same(l?.chains, [{ name: 'c', type: 'nat', hook: 'prerouting', prio: -100, policy: 'accept' }]);
  t.same(l?.sets, [{ name: 'm', map: true, elements: 2 }]);
  t.same(l?.rules, [{ chain: 'c', handle: 4 }]);
  const viaPath = new Nft(exec, { netnsPath: '/var/run/netns/skt-y' });
  await viaPath.list('t', 'ip');
  t.same(calls.at(-1)!.cmd, 'nsenter');
  t.same(calls.at(-1)!.args.slice(0, 2), ['--net=/var/run/netns/skt-y', 'nft']);
});

t.test('named nat priorities only where nft accepts them', async (t) => {
  const tx = new Transaction('ip', 't');
  tx.add({ kind: 'chain', name: 'o', type: 'nat', hook: 'output', priority: 'dstnat' });
  t.match(tx.error?.message, /not valid on hook output \(use a number, e\.g\. -100\)/);
  const ok = new Transaction('ip', 't');
  ok.add({ kind: 'chain', name: 'o', type: 'filter', hook: 'output', priority: 'filter - 10' });
  ok.add({ kind: 'chain', name: 'p', type: 'nat', hook: 'postrouting', priority: 'srcnat' });
  t.equal(ok.error, undefined);
});

t.test('names that nft reads as keywords are refused', async (t) => {
  for (const name of ['fwd', 'counter', 'accept', 'dnat', 'map', 'auto-merge']) {
    const tx = new Transaction('ip', 't');
    tx.add({ kind: 'chain', name });
    t.match(tx.error?.message, /is an nft keyword/, name);
  }
  const ok = new Transaction('ip', 't');
  for (const name of ['input', 'forward', 'output', 'prerouting', 'postrouting', 'filter', 'nat', 'fwd-x', 'Fwd']) ok.add({ kind: 'chain', name });
  t.equal(ok.error, undefined);
  t.equal(new Transaction('ip', 'filter').error, undefined);
  t.match(new Transaction('ip', 'inet').error?.message, /keyword/);
});
