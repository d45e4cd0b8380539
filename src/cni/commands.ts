// The skiff-cni commands: ADD, DEL, CHECK, GC, STATUS. Self-sufficient (no agent
// needed). ADD keeps a rollback list; DEL is idempotent and always releases the IP.
import { CniError } from './errors.js';
import type { CniEnv } from './env.js';
import type { NetConf } from './config.js';
import { requestedIps, requestedMac } from './args.js';
import { parseResult, type Result } from './result.js';
import { delegateIpam } from './delegate.js';
import { attach, detach, hostVethName, HOST_VETH_PREFIX, type BridgeOptions } from '../bridge/bridge.js';
import { Masquerade } from '../bridge/masq.js';
import { ensureOverlayDevice } from '../overlay/device.js';
import { HostLocal, parseIpamConfig, IpamError } from '../ipam/index.js';
import { Netlink, NetlinkError } from '../os/netlink.js';
import { isNetns, NetnsError } from '../os/netns.js';
import { realExec } from '../os/exec.js';
import { familyOf, parseCidr } from '../util/ip.js';

export interface CommandContext {
  env: CniEnv;
  conf: NetConf;
  /** The network configuration exactly as received (for delegated IPAM). */
  raw: string;
  processEnv: NodeJS.ProcessEnv;
}

function bridgeOptions(conf: NetConf): BridgeOptions {
  return {
    bridge: conf.bridge,
    isGateway: conf.isGateway || conf.isDefaultGateway,
    isDefaultGateway: conf.isDefaultGateway,
    forceAddress: conf.forceAddress,
    hairpinMode: conf.hairpinMode,
    promiscMode: conf.promiscMode,
    ...(conf.mtu ? { mtu: conf.mtu } : {}),
  };
}

const ipamType = (conf: NetConf): string => String((conf.ipam as { type?: unknown } | undefined)?.type ?? '');

function hostLocal(conf: NetConf): HostLocal {
  return new HostLocal(parseIpamConfig(conf.ipam, { networkName: conf.name }), conf.name);
}

/** Maps lower-level failures to the spec's error JSON codes. */
export function toCniError(e: unknown): CniError {
  if (e instanceof CniError) return e;
  if (e instanceof IpamError) return new CniError(e.cniCode, e.message);
  if (e instanceof NetnsError) return new CniError(4, `CNI_NETNS: ${e.message}`);
  if (e instanceof NetlinkError) return new CniError(5, `netlink: ${e.message}`);
  const err = e as { cniCode?: number; message?: string };
  if (typeof err?.cniCode === 'number') return new CniError(err.cniCode, err.message ?? String(e));
  return new CniError(5, err?.message ?? String(e));
}

function requireNetns(env: CniEnv): string {
  const ns = env.netns!;
  if (!isNetns(ns)) {
    // Distinguish "missing" from "not a namespace" for the message.
    try {
      Netlink.open(ns).close();
    } catch (e) {
      if (e instanceof NetnsError) throw new CniError(4, `CNI_NETNS: ${e.message}`);
    }
    throw new CniError(4, `CNI_NETNS: ${JSON.stringify(ns)} is not a network namespace`);
  }
  return ns;
}

export async function cmdAdd(ctx: CommandContext): Promise<Result> {
  const { env, conf } = ctx;
  const netns = requireNetns(env);
  const undo: (() => Promise<unknown> | unknown)[] = [];
  const host = Netlink.open();
  try {
    // 1. Addresses: host-local in-process, anything else delegated to CNI_PATH.
    let ipam: Result;
    if (ipamType(conf) === 'host-local') {
      const hl = hostLocal(conf);
      const alloc = hl.allocate(env.containerId!, env.ifname!, requestedIps(conf, env));
      // Roll back only what this ADD reserved: a retried ADD must not free the
      // addresses a running pod already holds.
      const fresh = alloc.ips.filter((i) => i.fresh).map((i) => parseCidr(i.address).ip);
      undo.push(() => hl.releaseIps(fresh));
      ipam = {
        cniVersion: conf.cniVersion,
        interfaces: [],
        ips: alloc.ips.map((i) => ({ address: i.address, ...(i.gateway ? { gateway: i.gateway } : {}) })),
        routes: alloc.routes,
        ...(alloc.dns ? { dns: alloc.dns } : {}),
      };
    } else if (ipamType(conf)) {
      ipam = delegateIpam('ADD', ctx.raw, ctx.processEnv, env.path) as Result;
      undo.push(() => delegateIpam('DEL', ctx.raw, ctx.processEnv, env.path));
    } else {
      throw new CniError(7, 'ipam: missing (an object with "type", e.g. {"type": "host-local", ...})');
    }
    if (!ipam.ips?.length) throw new CniError(5, `ipam ${ipamType(conf)} returned no IP addresses`);

    // 2. The node's overlay device, so the first pod of a fresh node is reachable before the agent syncs.
    if (conf.overlay) await ensureOverlayDevice(host, conf.overlay);

    // 3. Bridge, veth, addresses, routes.
    const mac = requestedMac(conf, env);
    const att = await attach(
      host,
      bridgeOptions(conf),
      {
        containerId: env.containerId,
        ifname: env.ifname,
        netns,
        ips: ipam.ips.map((i) => ({ address: i.address, ...(i.gateway ? { gateway: i.gateway } : {}) })),
        routes: (ipam.routes ?? []).map((r) => ({ dst: r.dst, ...(r.gw ? { gw: r.gw } : {}) })),
        ...(mac ? { mac } : {}),
      },
      undo as never,
    );

    // 4. Masquerade traffic leaving the pod subnets.
    if (conf.ipMasq) {
      const masq = new Masquerade(realExec);
      const subnets = ipam.ips.map((i) => i.address);
      await masq.add(conf.name, subnets, ipam.ips.map((i) => i.address), env.containerId, env.ifname);
      undo.push(() => masq.remove(conf.name, ipam.ips.map((i) => i.address)));
    }

    // 5. The result: [bridge, host veth, pod veth]; ips point at the pod veth.
    const prev = conf.prevResult ? parseResult(conf.prevResult, conf.cniVersion) : undefined;
    const base = prev?.interfaces?.length ?? 0;
    const result: Result = {
      cniVersion: conf.cniVersion,
      interfaces: [
        ...(prev?.interfaces ?? []),
        { name: att.bridge.name, mac: att.bridge.mac },
        { name: att.host.name, mac: att.host.mac },
        { name: att.pod.name, mac: att.pod.mac, mtu: att.pod.mtu, sandbox: att.pod.sandbox },
      ],
      ips: [...(prev?.ips ?? []), ...ipam.ips.map((i) => ({ ...i, interface: base + 2 }))],
      routes: [...(prev?.routes ?? []), ...(ipam.routes ?? [])],
      ...(conf.dns && Object.keys(conf.dns).length ? { dns: conf.dns } : ipam.dns ? { dns: ipam.dns } : prev?.dns ? { dns: prev.dns } : {}),
    };
    if (bridgeOptions(conf).isDefaultGateway) {
      for (const ip of ipam.ips) {
        if (!ip.gateway) continue;
        const dst = familyOf(ip.gateway) === 4 ? '0.0.0.0/0' : '::/0';
        if (!result.routes!.some((r) => r.dst === dst)) result.routes!.push({ dst, gw: ip.gateway });
      }
    }
    undo.length = 0;
    return result;
  } catch (e) {
    for (const u of undo.reverse()) {
      try {
        await u();
      } catch {
        /* best effort: the original error is what the runtime needs to see */
      }
    }
    throw toCniError(e);
  } finally {
    host.close();
  }
}

export async function cmdDel(ctx: CommandContext): Promise<void> {
  const { env, conf } = ctx;
  // Release addresses first: even when the namespace or links are gone, the IP must come back.
  let released: string[] = [];
  if (ipamType(conf) === 'host-local') {
    // One scan of the reservations under the lock: release returns what it freed.
    released = hostLocal(conf).release(env.containerId, env.ifname);
  } else if (ipamType(conf)) {
    delegateIpam('DEL', ctx.raw, ctx.processEnv, env.path);
  }
  const host = Netlink.open();
  try {
    const netns = env.netns && isNetns(env.netns) ? env.netns : undefined;
    await detach(host, env.containerId, env.ifname, netns);
  } finally {
    host.close();
  }
  if (conf.ipMasq) {
    // Addresses from host-local's records, or from prevResult when IPAM was delegated.
    const prev = conf.prevResult ? parseResult(conf.prevResult, conf.cniVersion) : undefined;
    const addrs = released.length ? released.map((ip) => `${ip}/${familyOf(ip) === 4 ? 32 : 128}`) : (prev?.ips ?? []).map((i) => i.address);
    await new Masquerade(realExec).remove(conf.name, addrs);
  }
}

export async function cmdCheck(ctx: CommandContext): Promise<void> {
  const { env, conf } = ctx;
  if (!conf.prevResult) throw new CniError(7, 'prevResult: required for CHECK');
  const prev = parseResult(conf.prevResult, conf.cniVersion);
  const netns = requireNetns(env);
  const podIfIndex = (prev.interfaces ?? []).findIndex((i) => i.name === env.ifname && i.sandbox);
  if (podIfIndex < 0) throw new CniError(7, `prevResult: no interface ${env.ifname} with a sandbox`);
  const want = prev.interfaces![podIfIndex]!;

  if (ipamType(conf) === 'host-local') {
    const held = new Set(hostLocal(conf).check(env.containerId, env.ifname));
    for (const ip of prev.ips ?? []) {
      const addr = parseCidr(ip.address).ip;
      if (!held.has(addr)) throw new CniError(3, `ipam: ${addr} is not reserved for container ${env.containerId} ${env.ifname}`);
    }
  } else if (ipamType(conf)) {
    delegateIpam('CHECK', ctx.raw, ctx.processEnv, env.path);
  }

  const host = Netlink.open();
  const pod = Netlink.open(netns);
  try {
    const br = await host.linkByName(conf.bridge);
    if (!br || br.kind !== 'bridge') throw new CniError(100, `bridge ${conf.bridge} does not exist`);
    const hv = await host.linkByName(hostVethName(env.containerId, env.ifname));
    if (!hv) throw new CniError(100, `host veth ${hostVethName(env.containerId, env.ifname)} does not exist`);
    if (hv.master !== br.index) throw new CniError(100, `host veth ${hv.name} is not attached to bridge ${conf.bridge}`);
    const link = await pod.linkByName(env.ifname);
    if (!link) throw new CniError(100, `interface ${env.ifname} does not exist in ${netns}`);
    if (want.mac && link.mac?.toLowerCase() !== want.mac.toLowerCase()) {
      throw new CniError(100, `interface ${env.ifname}: MAC ${link.mac} differs from the result's ${want.mac}`);
    }
    if (!link.up) throw new CniError(100, `interface ${env.ifname} is down`);
    const have = new Set((await pod.addresses(link.index)).map((a) => a.cidr));
    for (const ip of prev.ips ?? []) {
      if (ip.interface !== undefined && ip.interface !== podIfIndex) continue;
      const c = parseCidr(ip.address);
      if (!have.has(`${c.ip}/${c.prefix}`)) throw new CniError(100, `interface ${env.ifname}: address ${ip.address} is missing`);
    }
    const routes = [...(await pod.routes(4)), ...(await pod.routes(6))];
    for (const r of prev.routes ?? []) {
      const dst = r.dst === '0.0.0.0/0' || r.dst === '::/0' ? 'default' : `${parseCidr(r.dst).ip}/${parseCidr(r.dst).prefix}`;
      const fam = parseCidr(r.dst).family;
      if (!routes.some((x) => x.family === fam && x.dst === dst && (!r.gw || x.gw === r.gw))) {
        throw new CniError(100, `route ${r.dst}${r.gw ? ' via ' + r.gw : ''} is missing in ${netns}`);
      }
    }
  } finally {
    host.close();
    pod.close();
  }
}

export async function cmdGc(ctx: CommandContext): Promise<void> {
  const { conf } = ctx;
  const valid = conf.validAttachments ?? [];
  const validKeys = new Set(valid.map((a) => `${a.containerID}/${a.ifname}`));
  if (ipamType(conf) === 'host-local') hostLocal(conf).gc(valid);
  // Host veths on this network's bridge that belong to no valid attachment.
  const host = Netlink.open();
  try {
    const br = await host.linkByName(conf.bridge);
    if (br) {
      const keep = new Set(valid.map((a) => hostVethName(a.containerID, a.ifname)));
      for (const l of await host.links()) {
        if (l.master === br.index && l.kind === 'veth' && l.name.startsWith(HOST_VETH_PREFIX) && !keep.has(l.name)) {
          await host.deleteLink(l.index);
        }
      }
    }
  } finally {
    host.close();
  }
  if (conf.ipMasq) await new Masquerade(realExec).gc(conf.name, validKeys);
}

export async function cmdStatus(ctx: CommandContext): Promise<void> {
  const { conf } = ctx;
  if (ipamType(conf) === 'host-local') {
    const s = hostLocal(conf).status();
    if (!s.ok) throw new CniError(50, `not ready: ${s.reason}`);
  }
}

/** Re-exported for tests that need to know whether an error came from the kernel. */
export { NetlinkError };
