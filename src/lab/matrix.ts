// `skiff lab matrix`: the reachability matrix of a running lab as the kernel enforces
// it, measured from inside every pod (a prober per pod network namespace, all probes
// in parallel with short timeouts), next to the evaluator's verdicts for the same
// manifests; every pair where they differ is marked "!" and listed.
import type { Protocol } from '../cluster/types.js';
import { evaluate, PolicyState } from '../policy/evaluator.js';
import { loadManifestDir } from '../policy/explain.js';
import { ProbeAgent, measureMatrix, renderMatrix, type MatrixCell } from '../policy/probe.js';
import type { LabState } from './state.js';
import { manifestsDir } from './state.js';

export interface LabMatrixOptions {
  /** (protocol, port) probes; default: every TCP/UDP containerPort the pods declare (at most 8). */
  probes?: [Protocol, number][];
  /** Only pods of these namespaces (default: all pods with an address). */
  namespaces?: string[];
  /** Reuse probers (the e2e keeps them across scenarios); default: start and stop them. */
  agents?: Map<string, ProbeAgent>;
  timeoutMs?: number;
  /** How long a probe that failed where the evaluator expects success is re-tried (default 2000 ms). */
  confirmMs?: number;
}

export interface LabMatrix {
  keys: string[];
  cells: MatrixCell[];
  mismatches: MatrixCell[];
  text: string;
}

/** Parses "tcp/80,udp/81" into probes. */
export function parseProbes(s: string): [Protocol, number][] {
  return s.split(',').map((x) => {
    const m = /^(tcp|udp|sctp)\/(\d{1,5})$/i.exec(x.trim());
    const port = m ? Number(m[2]) : NaN;
    if (!m || port < 1 || port > 65535) throw new Error(`--ports: invalid probe ${JSON.stringify(x)} (PROTOCOL/PORT, e.g. tcp/80,udp/53)`);
    return [m[1]!.toUpperCase() as Protocol, port];
  });
}

export async function labMatrix(s: LabState, o: LabMatrixOptions = {}): Promise<LabMatrix> {
  const m = await loadManifestDir(manifestsDir(s.name));
  const state = PolicyState.from(m);
  const keys = Object.entries(s.pods)
    .filter(([k, p]) => p.ip && !p.terminating && (!o.namespaces || o.namespaces.includes(k.split('/')[0]!)) && state.pod(k) && !state.pod(k)!.hostNetwork)
    .map(([k]) => k)
    .sort();
  let probes = o.probes;
  if (!probes) {
    const seen = new Map<string, [Protocol, number]>();
    for (const k of keys) for (const np of state.pod(k)!.namedPorts) if (np.protocol !== 'SCTP') seen.set(`${np.protocol}/${np.port}`, [np.protocol, np.port]);
    for (const c of m.pods.flatMap((p) => p.spec.containers.flatMap((x) => x.ports ?? []))) {
      const proto = c.protocol ?? 'TCP';
      if (proto !== 'SCTP') seen.set(`${proto}/${c.containerPort}`, [proto, c.containerPort]);
    }
    probes = [...seen.values()].sort((a, b) => a[1] - b[1] || (a[0] < b[0] ? -1 : 1)).slice(0, 8);
    if (probes.length === 0) probes = [['TCP', 80]];
  }
  const own = !o.agents;
  const agents = o.agents ?? new Map<string, ProbeAgent>();
  try {
    for (const k of keys) if (!agents.has(k)) agents.set(k, new ProbeAgent(s.pods[k]!.netns, { name: k }));
    await Promise.all(keys.map((k) => agents.get(k)!.ready));
    const ips = new Map(keys.map((k) => [k, s.pods[k]!.ip!]));
    // Only pods that declare a containerPort run a server on it (the lab's built-in servers).
    const served = new Set<string>();
    for (const pod of m.pods) {
      const key = `${pod.metadata.namespace || 'default'}/${pod.metadata.name}`;
      for (const c of pod.spec.containers) for (const cp of c.ports ?? []) served.add(`${key} ${cp.protocol ?? 'TCP'}/${cp.containerPort}`);
    }
    const cells = await measureMatrix({
      keys,
      agents,
      ips,
      probes,
      serves: (to, protocol, port) => served.has(`${to} ${protocol}/${port}`),
      expected: (from, to, protocol, port) => evaluate(state, { from: { pod: from }, to: { pod: to }, protocol, port }, { reasons: false }).allowed,
      ...(o.timeoutMs ? { timeoutMs: o.timeoutMs } : {}),
      ...(o.confirmMs ? { confirmMs: o.confirmMs } : {}),
    });
    const mismatches = cells.filter((c) => c.kernel !== c.expected);
    return { keys, cells, mismatches, text: renderMatrix(keys, cells) };
  } finally {
    if (own) for (const a of agents.values()) a.stop();
  }
}
