// The overlay's nftables table `inet skiff-overlay`: accept forwarded pod traffic and
// masquerade pod traffic that leaves the cluster CIDR. The whole table is rebuilt in
// one `nft -f -` transaction (add + delete + define: atomic, works whether or not the
// table exists); no other table is ever named.
//
// Caveat (nftables semantics): an accept verdict ends evaluation of this table's base
// chain only; the packet still traverses every other base chain on the same hook, and
// a drop there is final. So this table guarantees skiff itself never drops pod
// traffic and documents (with counters) what it forwards, but a host firewall whose
// own forward chain drops pod traffic must allow it there. skiff never edits another
// table: it detects (read-only) forward base chains with a drop policy in other
// tables, and legacy iptables' FORWARD policy, and reports them with the exact rules
// that would let pod traffic through. See docs/overlay.md.
import type { Executor } from '../os/exec.js';
import { networkOf, parseCidr } from '../util/ip.js';

export const OVERLAY_TABLE = 'skiff-overlay';

export interface FirewallSpec {
  /** The cluster's pod CIDRs: traffic between them is never NATed. */
  clusterCIDRs: string[];
  /** Masquerade pod traffic to destinations outside clusterCIDRs. */
  masquerade: boolean;
}

function norm(cidrs: string[], family: 4 | 6): string[] {
  const out = new Set<string>();
  for (const s of cidrs) {
    const c = parseCidr(s); // throws with the value named on bad input
    if (c.family === family) out.add(`${networkOf(c)}/${c.prefix}`);
  }
  return [...out].sort();
}

/** The nft script (pure). CIDRs are validated by parseCidr, so nothing unescaped reaches nft. */
export function overlayRuleset(spec: FirewallSpec): string {
  const v4 = norm(spec.clusterCIDRs, 4);
  const v6 = norm(spec.clusterCIDRs, 6);
  const t = OVERLAY_TABLE;
  const lines: string[] = [
    `add table inet ${t}`,
    `delete table inet ${t}`,
    `table inet ${t} {`,
    `  comment "skiff overlay: forwarding and masquerade for pod traffic; managed by skiff agent"`,
  ];
  if (v4.length) lines.push(`  set cluster4 {`, `    type ipv4_addr; flags interval;`, `    elements = { ${v4.join(', ')} }`, `  }`);
  if (v6.length) lines.push(`  set cluster6 {`, `    type ipv6_addr; flags interval;`, `    elements = { ${v6.join(', ')} }`, `  }`);
  lines.push(`  chain forward {`, `    type filter hook forward priority filter; policy accept;`);
  if (v4.length) lines.push(`    ip saddr @cluster4 counter accept`, `    ip daddr @cluster4 counter accept`);
  if (v6.length) lines.push(`    ip6 saddr @cluster6 counter accept`, `    ip6 daddr @cluster6 counter accept`);
  lines.push(`  }`);
  if (spec.masquerade) {
    lines.push(`  chain postrouting {`, `    type nat hook postrouting priority srcnat; policy accept;`);
    if (v4.length) lines.push(`    ip saddr @cluster4 ip daddr != @cluster4 ip daddr != 224.0.0.0/4 counter masquerade`);
    if (v6.length) lines.push(`    ip6 saddr @cluster6 ip6 daddr != @cluster6 ip6 daddr != ff00::/8 counter masquerade`);
    lines.push(`  }`);
  }
  lines.push(`}`);
  return lines.join('\n') + '\n';
}

/** Where nft runs: the current namespace, or another one by path (nsenter). */
function nftCommand(netnsPath: string | undefined, args: string[]): [string, string[]] {
  return netnsPath ? ['nsenter', [`--net=${netnsPath}`, 'nft', ...args]] : ['nft', args];
}

export class OverlayFirewall {
  private lastApplied: string | undefined;

  constructor(private readonly exec: Executor, private readonly netnsPath?: string) {}

  /** Applies the table when it differs from the last applied one (or when forced). */
  async apply(spec: FirewallSpec, force = false): Promise<boolean> {
    const script = overlayRuleset(spec);
    if (!force && script === this.lastApplied) return false;
    const [cmd, args] = nftCommand(this.netnsPath, ['-f', '-']);
    const r = await this.exec(cmd, args, { input: script });
    if (r.code !== 0) {
      this.lastApplied = undefined;
      throw new Error(`overlay firewall: nft -f - failed (exit ${r.code}): ${r.stderr.trim()}`);
    }
    this.lastApplied = script;
    return true;
  }

  /** Removes the table (uninstall). */
  async remove(): Promise<void> {
    const [cmd, args] = nftCommand(this.netnsPath, ['-f', '-']);
    const r = await this.exec(cmd, args, { input: `add table inet ${OVERLAY_TABLE}\ndelete table inet ${OVERLAY_TABLE}\n` });
    if (r.code !== 0) throw new Error(`overlay firewall: removing table failed: ${r.stderr.trim()}`);
    this.lastApplied = undefined;
  }
}

/** A forward-hook base chain outside skiff's table whose policy drops what no rule accepts. */
export interface ForeignDrop {
  /** nft family (ip, ip6, inet, bridge), or "iptables-legacy". */
  family: string;
  table: string;
  chain: string;
  priority?: number;
}

/** Parses `nft -j list chains` (pure): forward base chains with policy drop, other than skiff's. */
export function foreignForwardDrops(json: string): ForeignDrop[] {
  let doc: { nftables?: { chain?: { family?: string; table?: string; name?: string; hook?: string; policy?: string; prio?: number } }[] };
  try {
    doc = JSON.parse(json);
  } catch {
    return [];
  }
  const out: ForeignDrop[] = [];
  for (const e of doc.nftables ?? []) {
    const c = e.chain;
    if (!c || c.hook !== 'forward' || c.policy !== 'drop') continue;
    if (c.family === 'inet' && c.table === OVERLAY_TABLE) continue;
    out.push({ family: c.family ?? '?', table: c.table ?? '?', chain: c.name ?? '?', ...(typeof c.prio === 'number' ? { priority: c.prio } : {}) });
  }
  return out;
}

/** The rules an administrator can add to their own chain so pod traffic passes it (skiff never adds them). */
export function allowRulesFor(d: ForeignDrop, clusterCIDRs: string[]): string[] {
  const rules: string[] = [];
  for (const cidr of clusterCIDRs) {
    const six = parseCidr(cidr).family === 6;
    if (d.family === 'iptables-legacy') {
      const cmd = six ? 'ip6tables-legacy' : 'iptables-legacy';
      rules.push(`${cmd} -I FORWARD -s ${cidr} -j ACCEPT`, `${cmd} -I FORWARD -d ${cidr} -j ACCEPT`);
      continue;
    }
    if ((d.family === 'ip' && six) || (d.family === 'ip6' && !six)) continue;
    const m = six ? 'ip6' : 'ip';
    rules.push(`nft insert rule ${d.family} ${d.table} ${d.chain} ${m} saddr ${cidr} accept`, `nft insert rule ${d.family} ${d.table} ${d.chain} ${m} daddr ${cidr} accept`);
  }
  return rules;
}

/** Read-only look at the node's other firewalls: nft forward chains with policy drop, and iptables-legacy's FORWARD policy. */
export async function inspectForeignFirewall(exec: Executor, netnsPath?: string): Promise<ForeignDrop[]> {
  const run = (c: string, a: string[]) => exec(c, a).catch((e: unknown) => ({ code: 127, stdout: '', stderr: String(e) }));
  const [cmd, args] = nftCommand(netnsPath, ['-j', 'list', 'chains']);
  const r = await run(cmd, args);
  const out = r.code === 0 ? foreignForwardDrops(r.stdout) : [];
  // Legacy xtables rules are invisible to nft; look only when the legacy filter table is loaded here.
  const names = netnsPath ? await run('nsenter', [`--net=${netnsPath}`, 'cat', '/proc/net/ip_tables_names']) : await run('cat', ['/proc/net/ip_tables_names']);
  if (names.code === 0 && /^filter$/m.test(names.stdout)) {
    const [c2, a2] = netnsPath ? ['nsenter', [`--net=${netnsPath}`, 'iptables-legacy', '-w', '-S', 'FORWARD']] : ['iptables-legacy', ['-w', '-S', 'FORWARD']];
    const l = await run(c2 as string, a2 as string[]);
    if (l.code === 0 && /^-P FORWARD DROP$/m.test(l.stdout)) out.push({ family: 'iptables-legacy', table: 'filter', chain: 'FORWARD' });
  }
  return out;
}
