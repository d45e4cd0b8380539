// Name resolution from inside a pod, the way its resolver would do it: the pod's
// resolv.conf (/etc/netns/<pod netns>/resolv.conf: the cluster DNS, the Kubernetes
// search path, ndots:5), A queries over UDP from a socket created in the pod's
// namespace (so the query takes the pod's path to the cluster DNS).
import { createSocket } from 'node:dgram';
import { randomInt } from 'node:crypto';
import { closeSync } from 'node:fs';
import { socketIn } from '../os/netns.js';
import { CLASS, encodeQuery, nameToWire, parseResponse, RCODE, TYPE } from '../dns/wire.js';

export interface ResolvConf {
  nameservers: string[];
  search: string[];
  ndots: number;
}

export function parseResolvConf(text: string): ResolvConf {
  const out: ResolvConf = { nameservers: [], search: [], ndots: 1 };
  for (const raw of text.split('\n')) {
    const [k, ...v] = raw.replace(/[#;].*$/, '').trim().split(/\s+/);
    if (k === 'nameserver' && v[0]) out.nameservers.push(v[0]);
    else if (k === 'search' || k === 'domain') out.search = v.filter(Boolean);
    else if (k === 'options') for (const o of v) if (/^ndots:\d+$/.test(o)) out.ndots = Math.min(15, Number(o.slice(6)));
  }
  return out;
}

/** The names a glibc/musl stub tries, in order (a trailing dot: only the name itself). */
export function searchCandidates(name: string, rc: Pick<ResolvConf, 'search' | 'ndots'>): string[] {
  if (name.endsWith('.')) return [name.slice(0, -1)];
  const dots = name.split('.').length - 1;
  const searched = rc.search.map((d) => `${name}.${d}`);
  return dots >= rc.ndots ? [name, ...searched] : [...searched, name];
}

/** One A query from inside `netnsPath`: the addresses, [] for NXDOMAIN/no data; throws on timeout or a server failure. */
export function queryA(netnsPath: string, server: string, name: string, timeoutMs: number): Promise<string[]> {
  const fd = socketIn(netnsPath, 'udp');
  const sock = createSocket('udp4');
  try {
    sock.bind({ fd });
  } catch (e) {
    sock.close();
    closeSync(fd);
    throw e;
  }
  const id = randomInt(0, 0xffff);
  const q = encodeQuery(id, nameToWire(name), TYPE.A, CLASS.IN, false);
  return new Promise((resolve, reject) => {
    let resend: NodeJS.Timeout | undefined;
    const finish = (err: Error | undefined, v?: string[]) => {
      clearTimeout(timer);
      clearInterval(resend);
      sock.close();
      if (err) reject(err);
      else resolve(v!);
    };
    const timer = setTimeout(() => finish(new Error(`DNS ${server}: no answer for ${name} within ${timeoutMs} ms`)), timeoutMs);
    sock.on('error', (e) => finish(new Error(`DNS ${server}: ${e.message}`)));
    sock.on('message', (m) => {
      const r = parseResponse(m);
      if (!r || r.id !== id) return;
      if (r.rcode === RCODE.NXDOMAIN || (r.rcode === RCODE.NOERROR && !r.answer.some((a) => a.type === TYPE.A))) return finish(undefined, []);
      if (r.rcode !== RCODE.NOERROR) return finish(new Error(`DNS ${server}: rcode ${r.rcode} for ${name}`));
      finish(undefined, r.answer.filter((a) => a.type === TYPE.A && a.rdata.length === 4).map((a) => [...a.rdata].join('.')));
    });
    sock.connect(53, server, (err?: Error) => {
      if (err) return finish(err);
      const send = () => sock.send(q);
      send();
      resend = setInterval(send, 300);
    });
  });
}

/**
 * Resolves `name` as the pod's resolver would: the first search candidate that has A
 * records. A candidate whose query fails (a name outside the cluster is forwarded
 * upstream, which a lab may not reach) is noted and the next one is tried.
 */
export async function resolveInPod(netnsPath: string, rc: ResolvConf, name: string, timeoutMs: number): Promise<{ fqdn: string; addresses: string[] } | { failures: string[] }> {
  const server = rc.nameservers[0];
  if (!server) throw new Error("the pod's resolv.conf has no nameserver");
  const failures: string[] = [];
  for (const fqdn of searchCandidates(name, rc)) {
    try {
      const a = await queryA(netnsPath, server, fqdn, timeoutMs);
      if (a.length) return { fqdn, addresses: a };
      failures.push(`${fqdn}: no such name`);
    } catch (e) {
      failures.push(`${fqdn}: ${(e as Error).message}`);
    }
  }
  return { failures };
}
