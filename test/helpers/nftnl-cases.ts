// Hand-written transactions that use every Expr variant and every op of src/os/nft.ts:
// the equivalence test (test/integration/nftnl.test.ts) applies them with Nft (text)
// and NftNetlink (netlink) and compares the listings.
import { Transaction, type Expr } from '../../src/os/nft.js';

export const ALL_TABLE = 'sknl-all';

/** Every Expr variant in an ip table, with sets/maps of every flag, elements of every kind. */
export function everyExprIp(): Transaction {
  const tx = new Transaction('ip', ALL_TABLE);
  tx.add({ kind: 'table', comment: 'every expression' });
  tx.add({ kind: 'chain', name: 'pre', type: 'nat', hook: 'prerouting', priority: 'dstnat', comment: 'base nat chain' });
  tx.add({ kind: 'chain', name: 'post', type: 'nat', hook: 'postrouting', priority: 'srcnat' });
  tx.add({ kind: 'chain', name: 'out', type: 'nat', hook: 'output', priority: -100 });
  tx.create({ kind: 'chain', name: 'filter-fwd', type: 'filter', hook: 'forward', priority: 'filter - 10', policy: 'drop' });
  tx.add({ kind: 'chain', name: 'filter-in', type: 'filter', hook: 'input', priority: 0, policy: 'accept' });
  for (const c of ['svc-a', 'svc-b', 'svc-c', 'ep-1', 'ep-2', 'ep-3', 'set-mark', 'rejects', 'spare']) tx.add({ kind: 'chain', name: c });
  tx.add({ kind: 'chain', name: 'commented', comment: 'a regular chain' });
  // Sets and maps: every key type, concatenations, every flag, timeout, size, comments.
  tx.add({ kind: 'set', name: 'addrs', type: ['ipv4_addr'], comment: 'plain set' });
  tx.add({ kind: 'set', name: 'nets', type: ['ipv4_addr'], flags: ['interval'], comment: 'interval set' });
  tx.add({ kind: 'set', name: 'ports', type: ['inet_service'], flags: ['interval'] });
  tx.add({ kind: 'set', name: 'protoports', type: ['inet_proto', 'inet_service'], flags: ['interval'] });
  tx.add({ kind: 'set', name: 'pairs', type: ['ipv4_addr', 'inet_service'], size: 1000 });
  tx.add({ kind: 'set', name: 'affinity', type: ['ipv4_addr'], flags: ['dynamic', 'timeout'], timeout: 10800 });
  tx.add({ kind: 'set', name: 'timed', type: ['ipv4_addr'], flags: ['timeout'], timeout: 60 });
  tx.add({ kind: 'set', name: 'consts', type: ['inet_proto'], flags: ['constant'] });
  tx.add({ kind: 'set', name: 'ifs', type: ['ifname'] });
  tx.add({ kind: 'set', name: 'marks', type: ['mark'] });
  tx.add({ kind: 'map', name: 'svc', type: ['ipv4_addr', 'inet_proto', 'inet_service'], value: 'verdict', comment: 'verdict map' });
  tx.add({ kind: 'map', name: 'np', type: ['inet_proto', 'inet_service'], value: 'verdict' });
  tx.add({ kind: 'map', name: 'dmap', type: ['ipv4_addr'], value: ['mark'], flags: ['timeout'] });
  tx.add({ kind: 'map', name: 'imap', type: ['ipv4_addr'], value: 'verdict', flags: ['interval'] });
  // Elements.
  tx.add({ kind: 'element', set: 'addrs', key: ['10.0.0.1'], comment: 'one' });
  tx.add({ kind: 'element', set: 'addrs', key: ['10.0.0.2'] });
  tx.add({ kind: 'element', set: 'nets', key: ['10.0.0.0/8'] });
  tx.add({ kind: 'element', set: 'nets', key: ['192.168.1.10-192.168.1.20'], comment: 'a range' });
  tx.add({ kind: 'element', set: 'nets', key: ['172.16.5.4'] });
  tx.add({ kind: 'element', set: 'ports', key: [80] });
  tx.add({ kind: 'element', set: 'ports', key: ['8000-8080'] });
  tx.add({ kind: 'element', set: 'protoports', key: ['tcp', '1000-2000'] });
  tx.add({ kind: 'element', set: 'protoports', key: ['udp', 53] });
  tx.add({ kind: 'element', set: 'pairs', key: ['10.1.2.3', 443] });
  tx.add({ kind: 'element', set: 'affinity', key: ['10.9.9.9'], timeout: 3600 });
  tx.add({ kind: 'element', set: 'timed', key: ['10.9.9.8'] });
  tx.add({ kind: 'element', set: 'consts', key: ['tcp'] });
  tx.add({ kind: 'element', set: 'consts', key: [17] });
  tx.add({ kind: 'element', set: 'ifs', key: ['eth0'] });
  tx.add({ kind: 'element', set: 'marks', key: [0x4000] });
  tx.add({ kind: 'element', set: 'svc', key: ['10.96.0.1', 'tcp', 443], value: { goto: 'svc-a' }, comment: 'kubernetes' });
  tx.add({ kind: 'element', set: 'svc', key: ['10.96.0.10', 'udp', 53], value: { jump: 'svc-b' } });
  tx.add({ kind: 'element', set: 'svc', key: ['10.96.0.11', 'sctp', 3868], value: { verdict: 'drop' } });
  tx.add({ kind: 'element', set: 'svc', key: ['10.96.0.12', 'tcp', 80], value: { verdict: 'accept' } });
  tx.add({ kind: 'element', set: 'np', key: ['tcp', 30080], value: { goto: 'svc-c' } });
  tx.add({ kind: 'element', set: 'dmap', key: ['10.0.0.7'], value: [0x10], timeout: 120 });
  tx.add({ kind: 'element', set: 'imap', key: ['10.200.0.0/16'], value: { verdict: 'return' } });
  const r = (chain: string, rule: Expr[], comment?: string) => tx.add({ kind: 'rule', chain, rule, ...(comment !== undefined ? { comment } : {}) });
  // Matches on every selector, ==/!=, prefixes, ranges, anonymous sets, named sets.
  r('filter-fwd', [{ match: 'ip saddr', value: '10.0.0.1' }, { counter: true }, { verdict: 'accept' }], 'exact address');
  r('filter-fwd', [{ match: 'ip daddr', op: '!=', value: '10.0.0.0/8' }, { verdict: 'continue' }]);
  r('filter-fwd', [{ match: 'ip saddr', value: '10.1.0.0/23' }, { verdict: 'return' }]);
  r('filter-fwd', [{ match: 'ip saddr', value: '10.1.2.3-10.1.2.9' }, { verdict: 'accept' }]);
  r('filter-fwd', [{ match: 'ip daddr', op: '!=', value: '10.1.2.3-10.1.2.9' }, { verdict: 'accept' }]);
  r('filter-fwd', [{ match: 'meta l4proto', value: 'tcp' }, { match: 'th dport', value: [80, 443] }, { verdict: 'accept' }]);
  r('filter-fwd', [{ match: 'meta l4proto', op: '!=', value: ['tcp', 'udp'] }, { verdict: 'drop' }]);
  r('filter-fwd', [{ match: 'th sport', value: '1000-2000' }, { match: 'th dport', op: '!=', value: 22 }, { verdict: 'accept' }]);
  r('filter-fwd', [{ match: 'th dport', value: [22, '8000-8080'] }, { verdict: 'accept' }]);
  r('filter-fwd', [{ match: 'ip saddr', value: ['10.0.0.1', '10.2.0.0/16'] }, { verdict: 'accept' }]);
  r('filter-fwd', [{ match: 'ip saddr', value: { set: 'addrs' } }, { verdict: 'accept' }]);
  r('filter-fwd', [{ match: 'ip daddr', op: '!=', value: { set: 'nets' } }, { verdict: 'drop' }]);
  r('filter-fwd', [{ match: ['meta l4proto', 'th dport'], value: { set: 'protoports' } }, { verdict: 'accept' }]);
  r('filter-fwd', [{ match: ['ip daddr', 'th dport'], value: { set: 'pairs' } }, { verdict: 'accept' }]);
  r('filter-fwd', [{ match: 'meta mark', value: 0x4000 }, { match: 'ct mark', op: '!=', value: 0x10 }, { verdict: 'accept' }]);
  r('filter-fwd', [{ match: 'meta mark', value: { set: 'marks' } }, { verdict: 'accept' }]);
  r('filter-fwd', [{ match: 'iifname', value: 'eth0' }, { match: 'oifname', op: '!=', value: 'veth*' }, { verdict: 'accept' }]);
  r('filter-fwd', [{ match: 'iifname', value: { set: 'ifs' } }, { verdict: 'accept' }]);
  r('filter-fwd', [{ match: 'meta l4proto', value: { set: 'consts' } }, { verdict: 'accept' }]);
  r('filter-fwd', [{ ctState: ['established', 'related'] }, { verdict: 'accept' }]);
  r('filter-fwd', [{ ctState: ['invalid'] }, { verdict: 'drop' }]);
  r('filter-fwd', [{ ctState: ['new'], op: '!=' }, { verdict: 'accept' }]);
  r('filter-fwd', [{ ctState: ['untracked'] }, { jump: 'spare' }]);
  r('filter-fwd', [{ fib: 'daddr', type: 'local' }, { goto: 'rejects' }]);
  r('filter-fwd', [{ fib: 'saddr', type: 'local', op: '!=' }, { verdict: 'continue' }]);
  r('filter-fwd', [{ markMask: 0x4000, value: 0x4000 }, { verdict: 'accept' }]);
  r('filter-fwd', [{ markMask: 0xff00, op: '!=', value: 0 }, { verdict: 'drop' }]);
  r('filter-fwd', [{ vmap: { set: 'imap' }, key: ['ip saddr'] }]);
  r('set-mark', [{ setMark: 0x4000 }]);
  r('set-mark', [{ setMark: 0x4000, how: 'or' }, { counter: true }]);
  r('set-mark', [{ setMark: 0x4000, how: 'xor' }, { verdict: 'return' }]);
  r('set-mark', [{ update: 'affinity', key: ['ip saddr'] }]);
  r('set-mark', [{ match: 'ip saddr', value: { set: 'affinity' } }, { goto: 'ep-1' }]);
  r('rejects', [{ match: 'meta l4proto', value: 'tcp' }, { reject: 'tcp reset' }]);
  r('rejects', [{ match: 'meta l4proto', value: 'udp' }, { reject: 'icmp port-unreachable' }]);
  r('rejects', [{ match: 'th dport', value: 1 }, { reject: 'icmp admin-prohibited' }]);
  r('rejects', [{ reject: 'default' }]);
  r('pre', [{ match: ['ip daddr', 'meta l4proto', 'th dport'], op: '==', value: { set: 'svc' } }, { counter: true }]);
  r('pre', [{ vmap: { set: 'svc' }, key: ['ip daddr', 'meta l4proto', 'th dport'] }], 'services');
  r('pre', [{ fib: 'daddr', type: 'local' }, { vmap: { set: 'np' }, key: ['meta l4proto', 'th dport'] }]);
  r('out', [{ jump: 'set-mark' }]);
  r('out', [{ vmap: { set: 'svc' }, key: ['ip daddr', 'meta l4proto', 'th dport'] }]);
  r('svc-a', [{ numgen: 'inc', vmap: [{ goto: 'ep-1' }, { goto: 'ep-2' }, { goto: 'ep-3' }] }]);
  r('svc-b', [{ numgen: 'random', vmap: [{ jump: 'ep-1' }, { verdict: 'drop' }] }]);
  r('svc-c', [{ numgenMatch: 'inc', mod: 3, value: 0 }, { goto: 'ep-1' }]);
  r('svc-c', [{ numgenMatch: 'random', mod: 2, value: 1 }, { goto: 'ep-2' }]);
  r('svc-c', [{ goto: 'ep-3' }]);
  r('ep-1', [{ match: 'ip saddr', value: '10.244.1.5' }, { setMark: 0x4000, how: 'or' }]);
  r('ep-1', [{ match: 'meta l4proto', value: 'tcp' }, { dnat: '10.244.1.5', port: 8080 }]);
  r('ep-2', [{ dnat: '10.244.2.5' }]);
  r('ep-3', [{ match: 'meta l4proto', value: 'udp' }, { dnat: '10.244.3.5', port: 53 }]);
  r('post', [{ markMask: 0x4000, value: 0x4000 }, { setMark: 0x4000, how: 'xor' }, { masquerade: true }]);
  r('post', [{ match: 'oifname', value: 'eth1' }, { masquerade: true, fullyRandom: true }]);
  tx.insert({ kind: 'rule', chain: 'filter-fwd', rule: [{ match: 'ip saddr', value: '127.0.0.1' }, { verdict: 'accept' }], comment: 'inserted first' });
  r('filter-in', [{ verdict: 'accept' }]);
  return tx;
}

/** Family-dependent encodings: an inet table (dependencies, icmpx, dnat ip/ip6) and an ip6 table. */
export function everyExprInet(): Transaction {
  const tx = new Transaction('inet', ALL_TABLE);
  tx.add({ kind: 'table' });
  tx.add({ kind: 'chain', name: 'pre', type: 'nat', hook: 'prerouting', priority: -100 });
  tx.add({ kind: 'chain', name: 'filter-fwd', type: 'filter', hook: 'forward', priority: 0, policy: 'accept' });
  tx.add({ kind: 'chain', name: 'ep' });
  tx.add({ kind: 'set', name: 'v6', type: ['ipv6_addr'], flags: ['interval'] });
  tx.add({ kind: 'element', set: 'v6', key: ['fd00::/64'] });
  tx.add({ kind: 'element', set: 'v6', key: ['fd01::1'] });
  tx.add({ kind: 'map', name: 'svc6', type: ['ipv6_addr', 'inet_proto', 'inet_service'], value: 'verdict' });
  tx.add({ kind: 'element', set: 'svc6', key: ['fd00:96::1', 'tcp', 80], value: { goto: 'ep' } });
  const r = (chain: string, rule: Expr[]) => tx.add({ kind: 'rule', chain, rule });
  r('filter-fwd', [{ match: 'ip saddr', value: '10.0.0.0/8' }, { verdict: 'accept' }]);
  r('filter-fwd', [{ match: 'ip6 saddr', value: 'fd00::/64' }, { match: 'ip6 daddr', op: '!=', value: 'fd00::1' }, { verdict: 'accept' }]);
  r('filter-fwd', [{ match: 'ip6 daddr', value: { set: 'v6' } }, { verdict: 'drop' }]);
  r('filter-fwd', [{ match: 'ip6 daddr', value: ['fd00::1', 'fd00::2'] }, { verdict: 'drop' }]);
  r('filter-fwd', [{ match: 'meta l4proto', value: 'tcp' }, { reject: 'tcp reset' }]);
  r('filter-fwd', [{ reject: 'icmpx port-unreachable' }]);
  r('filter-fwd', [{ match: 'ip saddr', value: '10.0.0.1' }, { reject: 'icmp port-unreachable' }]);
  r('filter-fwd', [{ match: 'ip6 saddr', value: 'fd00::1' }, { reject: 'icmpv6 port-unreachable' }]);
  r('filter-fwd', [{ match: 'ip6 saddr', value: 'fd00::2' }, { reject: 'icmpv6 admin-prohibited' }]);
  r('filter-fwd', [{ reject: 'default' }]);
  r('pre', [{ vmap: { set: 'svc6' }, key: ['ip6 daddr', 'meta l4proto', 'th dport'] }]);
  r('ep', [{ match: 'meta l4proto', value: 'tcp' }, { dnat: 'fd00:244::5', port: 8080 }]);
  r('ep', [{ match: 'ip daddr', value: '10.96.0.1' }, { match: 'meta l4proto', value: 'tcp' }, { dnat: '10.244.1.5', port: 80 }]);
  r('ep', [{ dnat: 'fd00:244::6' }]);
  return tx;
}

export function everyExprIp6(): Transaction {
  const tx = new Transaction('ip6', ALL_TABLE);
  tx.add({ kind: 'table', comment: 'v6' });
  tx.add({ kind: 'chain', name: 'post', type: 'nat', hook: 'postrouting', priority: 100 });
  tx.add({ kind: 'chain', name: 'filter-in', type: 'filter', hook: 'input', priority: 0 });
  tx.add({ kind: 'set', name: 'aff', type: ['ipv6_addr'], flags: ['dynamic', 'timeout'], timeout: 30 });
  tx.add({ kind: 'rule', chain: 'filter-in', rule: [{ update: 'aff', key: ['ip6 saddr'] }, { match: 'ip6 saddr', value: 'fd00::/56' }, { reject: 'default' }] });
  tx.add({ kind: 'rule', chain: 'filter-in', rule: [{ reject: 'icmpv6 admin-prohibited' }] });
  tx.add({ kind: 'rule', chain: 'post', rule: [{ match: 'ip6 saddr', op: '!=', value: 'fd00:244::/56' }, { masquerade: true }] });
  return tx;
}
