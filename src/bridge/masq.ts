// ipMasq for the bridge plugin, in skiff's own nftables table (never anyone else's):
//
//   table inet skiff_cni
//     set pods4_<net> / pods6_<net>   pod addresses, each element commented "<containerId>/<ifname>"
//     chain masq_<net>                nat postrouting base chain: from a pod of <net> to
//                                     outside its subnets (and not multicast) -> masquerade
//
// ADD adds one element, DEL deletes it, both single atomic `nft -f -` runs; the chain is
// rebuilt (flush + add) in the same transaction, so repeated ADDs never duplicate rules.
// GC reads the elements back and deletes those whose attachment is no longer valid.
import type { Executor } from '../os/exec.js';
import { networkOf, parseCidr } from '../util/ip.js';
import { sha256Hex } from '../util/sha256.js';

export const MASQ_TABLE = 'skiff_cni';

/** nft identifier for a network: safe characters only, with a hash when anything was changed. */
export function netIdent(network: string): string {
  const safe = network.replace(/[^A-Za-z0-9_]/g, '_').slice(0, 32);
  return safe === network ? safe : `${safe}_${sha256Hex(network).slice(0, 8)}`;
}

function attachmentComment(containerId: string, ifname: string): string {
  const c = `${containerId}/${ifname}`;
  // Container ids are [A-Za-z0-9_.-] and ifnames have no quotes (validated by the CNI layer);
  // refuse anything else rather than let it reach nft.
  if (!/^[A-Za-z0-9_.\-/@:]+$/.test(c) || c.length > 128) throw new Error(`masquerade: unusable attachment id ${JSON.stringify(c)}`);
  return c;
}

export class Masquerade {
  constructor(private readonly exec: Executor) {}

  private async nft(script: string): Promise<{ code: number; stderr: string; stdout: string }> {
    return this.exec('nft', ['-f', '-'], { input: script });
  }

  /** Adds a pod's addresses (CIDR form) to its network's masquerade sets. */
  async add(network: string, subnets: string[], podAddrs: string[], containerId: string, ifname: string): Promise<void> {
    const n = netIdent(network);
    const comment = attachmentComment(containerId, ifname);
    const nets = subnets.map((s) => parseCidr(s));
    const lines = [
      `add table inet ${MASQ_TABLE}`,
      `add set inet ${MASQ_TABLE} pods4_${n} { type ipv4_addr; }`,
      `add set inet ${MASQ_TABLE} pods6_${n} { type ipv6_addr; }`,
      `add chain inet ${MASQ_TABLE} masq_${n} { type nat hook postrouting priority srcnat; policy accept; }`,
      `flush chain inet ${MASQ_TABLE} masq_${n}`,
    ];
    const v4 = nets.filter((c) => c.family === 4).map((c) => `${networkOf(c)}/${c.prefix}`);
    const v6 = nets.filter((c) => c.family === 6).map((c) => `${networkOf(c)}/${c.prefix}`);
    if (v4.length) lines.push(`add rule inet ${MASQ_TABLE} masq_${n} ip saddr @pods4_${n} ip daddr != { ${v4.join(', ')} } ip daddr != 224.0.0.0/4 masquerade`);
    if (v6.length) lines.push(`add rule inet ${MASQ_TABLE} masq_${n} ip6 saddr @pods6_${n} ip6 daddr != { ${v6.join(', ')} } ip6 daddr != ff00::/8 masquerade`);
    for (const a of podAddrs) {
      const c = parseCidr(a);
      lines.push(`add element inet ${MASQ_TABLE} pods${c.family}_${n} { ${c.ip} comment "${comment}" }`);
    }
    const r = await this.nft(lines.join('\n') + '\n');
    if (r.code !== 0) throw new Error(`ipMasq: nft failed: ${r.stderr.trim()}`);
  }

  /** Removes a pod's addresses; succeeds when they (or the table) are already gone. */
  async remove(network: string, podAddrs: string[]): Promise<void> {
    const n = netIdent(network);
    for (const a of podAddrs) {
      const c = parseCidr(a);
      const r = await this.nft(`delete element inet ${MASQ_TABLE} pods${c.family}_${n} { ${c.ip} }\n`);
      if (r.code !== 0 && !/No such file or directory|does not exist/i.test(r.stderr)) {
        throw new Error(`ipMasq: nft failed: ${r.stderr.trim()}`);
      }
    }
  }

  /** Every element of the network's sets: address and the attachment it belongs to. */
  async list(network: string): Promise<{ ip: string; family: 4 | 6; attachment?: string }[]> {
    const n = netIdent(network);
    const out: { ip: string; family: 4 | 6; attachment?: string }[] = [];
    for (const fam of [4, 6] as const) {
      const r = await this.exec('nft', ['-j', 'list', 'set', 'inet', MASQ_TABLE, `pods${fam}_${n}`]);
      if (r.code !== 0) continue; // no table or set yet
      const doc = JSON.parse(r.stdout) as { nftables: { set?: { elem?: unknown[] } }[] };
      for (const item of doc.nftables) {
        for (const e of item.set?.elem ?? []) {
          if (typeof e === 'string') out.push({ ip: e, family: fam });
          else {
            const el = (e as { elem?: { val?: string; comment?: string } }).elem;
            if (el?.val) out.push({ ip: el.val, family: fam, ...(el.comment ? { attachment: el.comment } : {}) });
          }
        }
      }
    }
    return out;
  }

  /** Deletes every element whose attachment is not in `valid` ("containerId/ifname"). */
  async gc(network: string, valid: Set<string>): Promise<string[]> {
    const stale = (await this.list(network)).filter((e) => !e.attachment || !valid.has(e.attachment));
    if (stale.length) await this.remove(network, stale.map((e) => `${e.ip}/${e.family === 4 ? 32 : 128}`));
    return stale.map((e) => e.ip);
  }
}
