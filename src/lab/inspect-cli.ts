// `skiff lab get ...` and `skiff lab probe ...`, plus the lab-level probe functions
// other lab commands reuse (`up`'s reachability check; `matrix`):
//   labViewOf(state)                         the objects the agents see, with node state
//   probeFromPod(state, view, from, target)  one probe from inside a pod's namespace
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { alive } from './agents.js';
import { asList, DEFAULT_PROBE_TIMEOUT_MS, findPod, formatGet, formatProbe, InspectUsageError, itemsOf, labView, parseInspectArgs, resolveTarget, resourceOf, type InspectArgs, type LabView, type ProbeReport } from './inspect.js';
import { podKey } from './controller.js';
import { probe, type ProbeProtocol } from './probe.js';
import { parseResolvConf, resolveInPod } from './dnsquery.js';
import { isIPv4 } from 'node:net';
import { labsOnDisk, loadState, manifestsDir, type LabState } from './state.js';
import { existingLabs, LAB_PREFIX, listNetns, nsPathOf } from './topology.js';

/** The annotations each agent published for its Node (manifests/.annotations/<node>.json). */
function nodeAnnotations(lab: string): Record<string, Record<string, string>> {
  const dir = join(manifestsDir(lab), '.annotations');
  const out: Record<string, Record<string, string>> = {};
  if (!existsSync(dir)) return out;
  for (const f of readdirSync(dir)) {
    if (!f.endsWith('.json')) continue;
    try {
      const j = JSON.parse(readFileSync(join(dir, f), 'utf8')) as { node?: string; annotations?: Record<string, string> };
      if (j.node && j.annotations) out[j.node] = j.annotations;
    } catch {
      /* being rewritten: skip */
    }
  }
  return out;
}

/** The lab's objects as its agents see them, nodes with their agent's state. */
export function labViewOf(s: LabState): LabView {
  const present = new Set(listNetns());
  const agents = Object.fromEntries(s.nodes.map((n) => [n.name, alive(s.agents[n.name]) && present.has(n.ns) ? ('running' as const) : ('stopped' as const)]));
  return labView({ objects: s.objects, nodes: s.nodes, clusterIPs: s.clusterIPs, pods: s.pods, clusterDomain: s.settings.clusterDomain }, agents, nodeAnnotations(s.name));
}

export interface ProbeOptions {
  protocol?: ProbeProtocol;
  port?: number;
  timeoutMs?: number;
  /** Resolve a service name through the cluster DNS from inside the source pod (its resolv.conf), not the lab's state. */
  dns?: boolean;
}

/**
 * One probe from pod `from` (NS/POD) to `target` (NS/POD, a service name, an IP), run
 * inside the source pod's network namespace. Throws InspectUsageError for a source or
 * target that does not resolve; network failures are verdicts in the report.
 */
export async function probeFromPod(s: LabState, view: LabView, from: string, target: string, o: ProbeOptions = {}): Promise<ProbeReport> {
  const src = findPod(view, from);
  const key = podKey(src);
  const rt = s.pods[key];
  if (!rt?.ip) throw new InspectUsageError(`pod ${key} has no IP yet`);
  const protocol = o.protocol ?? 'TCP';
  const timeoutMs = o.timeoutMs ?? DEFAULT_PROBE_TIMEOUT_MS;
  const netnsPath = nsPathOf(rt.netns);
  let name = target;
  let dnsName: string | undefined;
  if (o.dns && !target.includes('/') && !isIPv4(target)) {
    const rcPath = `/etc/netns/${rt.netns}/resolv.conf`;
    const rc = parseResolvConf(readFileSync(rcPath, 'utf8'));
    const found = await resolveInPod(netnsPath, rc, target, timeoutMs);
    if ('failures' in found) throw new Error(`DNS: ${JSON.stringify(target)} does not resolve from pod ${key} through ${rc.nameservers[0]} (${found.failures.join('; ')})`);
    name = found.addresses[0]!;
    dnsName = found.fqdn;
  }
  const resolved = resolveTarget(view, { fromNamespace: src.metadata.namespace ?? 'default', target: name, protocol, ...(o.port !== undefined ? { port: o.port } : {}), domain: s.settings.clusterDomain });
  const t = dnsName ? { ...resolved, name: dnsName } : resolved;
  const r = await probe({ netnsPath, ip: t.ip, protocol, ...(t.port !== undefined ? { port: t.port } : {}), timeoutMs });
  return { from: key, to: t.name, ip: t.ip, protocol, port: t.port ?? null, result: r.result, answer: r.result === 'ok' ? (r.answer ?? '') : null, ms: r.ms, ...(r.error ? { error: r.error } : {}) };
}

export interface CheckLine {
  fromNode: string;
  toNode?: string;
  report: ProbeReport;
  /** What the NetworkPolicy evaluator expects: false = the policies deny this connection. */
  expected: boolean;
}

/** A line passes when the kernel did what the policies say: answered when allowed, no answer when denied. */
export const checkPassed = (l: CheckLine): boolean => (l.report.result === 'ok') === l.expected;

/**
 * The check `lab up` ends with: for every ordered pair of nodes, one pod on the first
 * (a pod without ports — a client — when there is one) probes one pod on the second (a
 * pod with a declared port when there is one) by ICMP echo and, when it has a port, on
 * that port (printing what the server answered); then every ClusterIP service with ports
 * is probed by name from a pod of its namespace. All probes run concurrently.
 */
export async function reachabilityCheck(s: LabState, view: LabView, o: { services?: boolean; timeoutMs?: number } = {}): Promise<CheckLine[]> {
  const timeoutMs = o.timeoutMs ?? DEFAULT_PROBE_TIMEOUT_MS;
  const running = view.pods.filter((p) => p.status?.podIP && !p.metadata.deletionTimestamp && p.spec.nodeName);
  const ports = (p: (typeof running)[number]) => p.spec.containers.flatMap((c) => c.ports ?? []);
  const nsOf = (p: (typeof running)[number]) => p.metadata.namespace ?? 'default';
  // The lab's own policies decide what the check expects (a demo that isolates a
  // namespace must not read as a broken network): pairs are taken within one
  // namespace where possible, and every probe is judged against the evaluator.
  const { PolicyState, evaluate } = await import('../policy/evaluator.js');
  const { loadManifestDir } = await import('../policy/explain.js');
  const policy = PolicyState.from(await loadManifestDir(manifestsDir(s.name)));
  const expect = (from: string, to: string, protocol: 'TCP' | 'UDP' | 'ICMP', port: number | undefined): boolean => {
    if (!policy.pod(from) || !policy.pod(to)) return true;
    // A rule with ports never matches ICMP, a rule without ports matches every port:
    // ICMP is expected through exactly when TCP to an unlisted port (1) would be.
    if (protocol === 'ICMP') return evaluate(policy, { from: { pod: from }, to: { pod: to }, protocol: 'TCP', port: 1 }, { reasons: false }).allowed;
    return evaluate(policy, { from: { pod: from }, to: { pod: to }, protocol, port: port ?? 0 }, { reasons: false }).allowed;
  };
  const byNode = new Map<string, typeof running>();
  for (const p of running) byNode.set(p.spec.nodeName!, [...(byNode.get(p.spec.nodeName!) ?? []), p]);
  const nodes = [...byNode.keys()].sort();
  const jobs: Promise<CheckLine>[] = [];
  const run = (fromNode: string, toNode: string | undefined, from: string, target: string, o: ProbeOptions, expected: boolean) =>
    jobs.push(probeFromPod(s, view, from, target, { ...o, timeoutMs }).then((report) => ({ fromNode, ...(toNode ? { toNode } : {}), report, expected })));
  for (const a of nodes) {
    const here = byNode.get(a)!;
    const src = here.find((p) => ports(p).length === 0) ?? here[0]!;
    for (const b of nodes) {
      if (a === b) continue;
      const there = byNode.get(b)!;
      const dst =
        there.find((p) => nsOf(p) === nsOf(src) && ports(p).length > 0) ?? there.find((p) => nsOf(p) === nsOf(src)) ?? there.find((p) => ports(p).length > 0) ?? there[0]!;
      const from = podKey(src);
      const to = podKey(dst);
      run(a, b, from, to, { protocol: 'ICMP' }, expect(from, to, 'ICMP', undefined));
      const port = ports(dst)[0];
      if (port) {
        const protocol = (port.protocol ?? 'TCP') === 'UDP' ? 'UDP' : 'TCP';
        run(a, b, from, to, { protocol, port: port.containerPort }, expect(from, to, protocol, port.containerPort));
      }
    }
  }
  for (const svc of o.services === false ? [] : view.services) {
    const sp = svc.spec.ports?.[0];
    if (!sp || !svc.spec.clusterIP || svc.spec.clusterIP === 'None' || (sp.protocol ?? 'TCP') === 'SCTP') continue;
    const ns = svc.metadata.namespace ?? 'default';
    const src = running.filter((p) => nsOf(p) === ns).find((p) => ports(p).length === 0) ?? running.find((p) => nsOf(p) === ns);
    if (!src) continue;
    // A service without ready endpoints is expected to refuse (the proxy rejects);
    // one with endpoints to answer. The agents' proxies may still be catching up with
    // the objects `up` just wrote, so a probe that disagrees is retried for a while.
    const slices = view.endpointSlices.filter((e) => e.metadata.namespace === svc.metadata.namespace && e.metadata.labels?.['kubernetes.io/service-name'] === svc.metadata.name);
    const ready = slices.some((e) => (e.endpoints ?? []).some((ep) => ep.conditions?.ready !== false));
    const opts: ProbeOptions = { protocol: (sp.protocol ?? 'TCP') as 'TCP' | 'UDP', port: sp.port, timeoutMs };
    const from = podKey(src);
    jobs.push(
      (async () => {
        const deadline = Date.now() + 5000;
        for (;;) {
          const report = await probeFromPod(s, view, from, svc.metadata.name, opts);
          if ((report.result === 'ok') === ready || Date.now() >= deadline) return { fromNode: src.spec.nodeName!, report, expected: ready };
          await new Promise((r) => setTimeout(r, 250));
        }
      })(),
    );
  }
  return Promise.all(jobs);
}

/** The check's lines; a failed probe says FAILED and its verdict. */
export function formatCheck(lines: readonly CheckLine[]): string {
  if (!lines.length) return '';
  const out = ['cross-node reachability (probes from inside the pods: ICMP echo, the servers\' answers, services by name)'];
  for (const l of lines) {
    const r = l.report;
    const where = l.toNode ? `${l.fromNode} -> ${l.toNode}` : `${l.fromNode} -> service`;
    const dest = `${r.to} ${r.protocol}${r.port !== null ? `/${r.port}` : ''}${r.to !== r.ip ? ` (${r.ip})` : ''}`;
    const verdict = !l.expected
      ? r.result === 'ok'
        ? l.toNode
          ? `FAILED: answered, but the NetworkPolicies deny it`
          : `FAILED: answered, but the service has no ready endpoints`
        : l.toNode
          ? `denied by NetworkPolicy, as expected (${r.result})`
          : `no ready endpoints: ${r.result}, as expected`
      : r.result === 'ok'
        ? `ok${r.protocol !== 'ICMP' && r.answer ? ` "${r.answer}"` : ''}`
        : `FAILED: ${r.result}${r.error ? ` (${r.error})` : ''}`;
    out.push(`  ${where.padEnd(18)} ${r.from} -> ${dest}: ${verdict} ${r.ms.toFixed(1)} ms`);
  }
  return out.join('\n') + '\n';
}

/** True when some node's agent has programmed the service proxy (its `skiff-proxy` nftables table exists). */
export function serviceProxyActive(s: LabState): boolean {
  return s.nodes.some((n) => {
    try {
      return /\btable \w+ skiff-proxy\b/.test(execFileSync('ip', ['netns', 'exec', n.ns, 'nft', 'list', 'tables'], { encoding: 'utf8', timeout: 5000, stdio: ['ignore', 'pipe', 'ignore'] }));
    } catch {
      return false;
    }
  });
}

function whichLab(name: string | undefined): string {
  if (name) return name;
  const labs = [...new Set([...labsOnDisk(), ...existingLabs(LAB_PREFIX)])];
  if (labs.length === 1) return labs[0]!;
  if (labs.length === 0) throw new InspectUsageError('no lab is running (start one with skiff lab up)');
  throw new InspectUsageError(`several labs exist (${labs.join(', ')}): pick one with --name`);
}

function stateOf(a: InspectArgs): LabState {
  const name = whichLab(a.name);
  const s = loadState(name);
  if (!s) throw new Error(`lab ${JSON.stringify(name)} does not exist (no state file); start it with skiff lab up --name ${name}`);
  return s;
}

/** `skiff lab get|probe ...`. Exit codes: 0 done (probe: answered), 1 failed (probe: no connection), 2 usage. */
export async function runInspect(argv: string[], usage: string): Promise<number> {
  const cmd = argv[0] ?? '';
  let a: InspectArgs;
  try {
    a = parseInspectArgs(argv);
  } catch (e) {
    process.stderr.write(`skiff lab ${cmd}: ${(e as Error).message}\n${usage}`);
    return 2;
  }
  try {
    const s = stateOf(a);
    const view = labViewOf(s);
    if (a.cmd === 'get') {
      const res = resourceOf(a.rest[0]!);
      if (a.output === 'json') process.stdout.write(JSON.stringify(asList(itemsOf(view, res, a.namespace)), null, 2) + '\n');
      else process.stdout.write(formatGet(view, res, { ...(a.namespace ? { namespace: a.namespace } : {}), wide: a.output === 'wide' }));
      return 0;
    }
    const r = await probeFromPod(s, view, a.rest[0]!, a.rest[1]!, { ...(a.protocol ? { protocol: a.protocol } : {}), ...(a.port !== undefined ? { port: a.port } : {}), ...(a.timeoutMs ? { timeoutMs: a.timeoutMs } : {}), ...(a.dns ? { dns: true } : {}) });
    process.stdout.write(a.json ? JSON.stringify(r) + '\n' : formatProbe(r));
    return r.result === 'ok' ? 0 : 1;
  } catch (e) {
    process.stderr.write(`skiff lab ${cmd}: ${(e as Error).message}\n`);
    return e instanceof InspectUsageError ? 2 : 1;
  }
}
