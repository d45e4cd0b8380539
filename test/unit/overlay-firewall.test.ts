// The read-only host-firewall check: which other tables' forward chains drop by
// policy (from real `nft -j list chains` output, nftables 1.0.6), and the rules an
// administrator would add there (skiff never does).
import t from 'tap';
import { allowRulesFor, foreignForwardDrops } from '../../src/overlay/firewall.js';
import { parseFirewallDrops } from '../../src/lab/manager.js';

const LISTED = JSON.stringify({
  nftables: [
    { metainfo: { version: '1.0.6', release_name: 'Lester Gooch #5', json_schema_version: 1 } },
    { chain: { family: 'inet', table: 'filter', name: 'forward', handle: 1, type: 'filter', hook: 'forward', prio: 0, policy: 'drop' } },
    { chain: { family: 'inet', table: 'filter', name: 'input', handle: 2, type: 'filter', hook: 'input', prio: 0, policy: 'drop' } },
    { chain: { family: 'inet', table: 'skiff-overlay', name: 'forward', handle: 1, type: 'filter', hook: 'forward', prio: 0, policy: 'accept' } },
    { chain: { family: 'ip', table: 'other', name: 'fw', handle: 1, type: 'filter', hook: 'forward', prio: 10, policy: 'accept' } },
    { chain: { family: 'ip', table: 'filter', name: 'FORWARD', handle: 3, type: 'filter', hook: 'forward', prio: 0, policy: 'drop' } },
    { chain: { family: 'inet', table: 'filter', name: 'regular', handle: 4 } },
  ],
});

t.test('only forward base chains with policy drop, never skiff\'s own table', async (t) => {
  t.same(foreignForwardDrops(LISTED), [
    { family: 'inet', table: 'filter', chain: 'forward', priority: 0 },
    { family: 'ip', table: 'filter', chain: 'FORWARD', priority: 0 },
  ]);
  t.same(foreignForwardDrops(JSON.stringify({ nftables: [{ chain: { family: 'inet', table: 'skiff-overlay', name: 'forward', hook: 'forward', policy: 'drop' } }] })), []);
  t.same(foreignForwardDrops('{"nftables": []}'), []);
  t.same(foreignForwardDrops('not json'), [], 'unparseable output reports nothing rather than failing the sync');
});

t.test('the allow rules name the chain and the cluster CIDRs, per family', async (t) => {
  const cidrs = ['10.244.0.0/16', 'fd00:10:244::/56'];
  t.same(allowRulesFor({ family: 'inet', table: 'filter', chain: 'forward' }, cidrs), [
    'nft insert rule inet filter forward ip saddr 10.244.0.0/16 accept',
    'nft insert rule inet filter forward ip daddr 10.244.0.0/16 accept',
    'nft insert rule inet filter forward ip6 saddr fd00:10:244::/56 accept',
    'nft insert rule inet filter forward ip6 daddr fd00:10:244::/56 accept',
  ]);
  t.same(allowRulesFor({ family: 'ip', table: 'filter', chain: 'FORWARD' }, cidrs), [
    'nft insert rule ip filter FORWARD ip saddr 10.244.0.0/16 accept',
    'nft insert rule ip filter FORWARD ip daddr 10.244.0.0/16 accept',
  ]);
  t.same(allowRulesFor({ family: 'iptables-legacy', table: 'filter', chain: 'FORWARD' }, ['10.244.0.0/16']), [
    'iptables-legacy -I FORWARD -s 10.244.0.0/16 -j ACCEPT',
    'iptables-legacy -I FORWARD -d 10.244.0.0/16 -j ACCEPT',
  ]);
});

t.test('lab status reads the agent gauge', async (t) => {
  const text = [
    '# HELP skiff_overlay_foreign_forward_drop x',
    '# TYPE skiff_overlay_foreign_forward_drop gauge',
    'skiff_overlay_foreign_forward_drop{chain="inet hostfw forward"} 1',
    'skiff_overlay_foreign_forward_drop{chain="iptables-legacy filter FORWARD"} 1',
    'skiff_overlay_peer_up{node="node2"} 1',
  ].join('\n');
  t.same(parseFirewallDrops(text), ['inet hostfw forward', 'iptables-legacy filter FORWARD']);
  t.same(parseFirewallDrops(''), []);
});
