// The overlay's nftables table `inet skiff-overlay`: accept forwarded pod traffic and
// masquerade pod traffic that leaves the cluster CIDR. The whole table is rebuilt in
// one `nft -f -` transaction (add + delete + define: atomic, works whether or not the
// table exists); no other table is ever named.
//
// Caveat (nftables semantics): an accept verdict ends evaluation of this table's base
// chain only; the packet still traverses every other base chain on the same hook, and
// a drop there is final. So this table guarantees skiff itself never drops pod
// traffic and documents (with counters) what it forwards, but a host firewall whose
// own forward chain drops pod traffic must allow it there. See docs/lab.md.
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
