// The pure half of `skiff lab get` and `skiff lab probe`: argument parsing (errors name
// the flag and the value), the objects the lab's agents see (buildManifests over the
// state file, so `get` shows exactly what the data plane is programmed from),
// kubectl-like tables, and probe target resolution (a pod, a service name, an IP).
import type { EndpointSlice, Node, Pod, Service } from '../cluster/types.js';
import { isIPv4 } from 'node:net';
import type { LabObject } from './config.js';
import { buildManifests, podKey, serviceKey, type LabNode, type PodRuntime } from './controller.js';
import type { ProbeProtocol } from './probe.js';

export class InspectUsageError extends Error {}

export type Resource = 'nodes' | 'pods' | 'services' | 'endpointslices';
const RESOURCES: Record<string, Resource> = {
  node: 'nodes',
  nodes: 'nodes',
  no: 'nodes',
  pod: 'pods',
  pods: 'pods',
  po: 'pods',
  service: 'services',
  services: 'services',
  svc: 'services',
  endpointslice: 'endpointslices',
  endpointslices: 'endpointslices',
  eps: 'endpointslices',
};

export interface InspectArgs {
  cmd: 'get' | 'probe';
  name?: string;
  namespace?: string;
  output?: 'json' | 'wide';
  json: boolean;
  port?: number;
  protocol?: ProbeProtocol;
  timeoutMs?: number;
  /** probe: resolve a service name through the cluster DNS from inside the pod. */
  dns?: boolean;
  rest: string[];
}

export const DEFAULT_PROBE_TIMEOUT_MS = 2000;

/**
 * Parses `get` and `probe` argv (argv[0] is the subcommand). Accepts `--flag value`,
 * `--flag=value` and kubectl's `-ojson`. Flags that do not belong to the subcommand are errors.
 */
export function parseInspectArgs(argv: readonly string[]): InspectArgs {
  const cmd = argv[0];
  if (cmd !== 'get' && cmd !== 'probe') throw new InspectUsageError(`not an inspection command: ${JSON.stringify(cmd)}`);
  const a: InspectArgs = { cmd, json: false, rest: [] };
  const allowed: Record<'get' | 'probe', string[]> = {
    get: ['--name', '-n', '--namespace', '-o', '--output'],
    probe: ['--name', '--port', '--protocol', '--timeout', '--json', '--dns'],
  };
  for (let i = 1; i < argv.length; i++) {
    let x = argv[i]!;
    let inline: string | undefined;
    if (x === '--') {
      a.rest.push(...argv.slice(i + 1));
      break;
    }
    if (!x.startsWith('-') || x === '-') {
      a.rest.push(x);
      continue;
    }
    const eq = x.indexOf('=');
    if (x.startsWith('--') && eq > 0) [x, inline] = [x.slice(0, eq), x.slice(eq + 1)];
    else if (/^-[no]./.test(x)) [x, inline] = [x.slice(0, 2), x.slice(2).replace(/^=/, '')];
    if (!allowed[cmd].includes(x)) throw new InspectUsageError(`${cmd}: unknown flag ${JSON.stringify(argv[i])} (flags: ${allowed[cmd].join(' ')})`);
    const flag = x;
    const val = (): string => {
      if (inline !== undefined) return inline;
      const v = argv[++i];
      if (v === undefined) throw new InspectUsageError(`flag ${flag}: needs a value`);
      return v;
    };
    const bad = (v: string, want: string) => new InspectUsageError(`flag ${flag}: invalid value ${JSON.stringify(v)} (${want})`);
    switch (flag) {
      case '--json':
      case '--dns':
        if (inline !== undefined) throw bad(inline, 'takes no value');
        if (flag === '--json') a.json = true;
        else a.dns = true;
        break;
      case '--name':
        a.name = val();
        if (!/^[a-z0-9]{1,16}$/.test(a.name)) throw bad(a.name, '1-16 lowercase letters or digits');
        break;
      case '-n':
      case '--namespace': {
        const v = val();
        if (!/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(v)) throw bad(v, 'a namespace name');
        a.namespace = v;
        break;
      }
      case '-o':
      case '--output': {
        const v = val();
        if (v !== 'json' && v !== 'wide') throw bad(v, 'json or wide');
        a.output = v;
        break;
      }
      case '--port': {
        const v = val();
        const n = /^\d+$/.test(v) ? Number(v) : NaN;
        if (!Number.isInteger(n) || n < 1 || n > 65535) throw bad(v, 'an integer from 1 to 65535');
        a.port = n;
        break;
      }
      case '--protocol': {
        const v = val();
        const p = v.toUpperCase();
        if (p !== 'TCP' && p !== 'UDP' && p !== 'ICMP') throw bad(v, 'TCP, UDP or ICMP');
        a.protocol = p;
        break;
      }
      case '--timeout': {
        const v = val();
        const n = /^\d+$/.test(v) ? Number(v) : NaN;
        if (!Number.isInteger(n) || n < 1 || n > 60_000) throw bad(v, 'milliseconds, an integer from 1 to 60000');
        a.timeoutMs = n;
        break;
      }
    }
  }
  if (cmd === 'get') {
    if (a.rest.length !== 1) throw new InspectUsageError(`get: one resource is required (nodes, pods, services or endpointslices), got ${a.rest.length ? a.rest.map((r) => JSON.stringify(r)).join(' ') : 'none'}`);
    if (!RESOURCES[a.rest[0]!]) throw new InspectUsageError(`get: invalid resource ${JSON.stringify(a.rest[0])} (nodes, pods, services or endpointslices)`);
  } else if (a.rest.length !== 2) {
    throw new InspectUsageError(`probe: NS/POD TARGET is required, got ${a.rest.length ? a.rest.map((r) => JSON.stringify(r)).join(' ') : 'nothing'}`);
  }
  return a;
}

export const resourceOf = (word: string): Resource => RESOURCES[word]!;

// ---- the objects ----------------------------------------------------------------------

/** The part of the lab's state `get` and `probe` need. */
export interface InspectSource {
  objects: readonly LabObject[];
  nodes: readonly LabNode[];
  clusterIPs: Readonly<Record<string, string>>;
  pods: Readonly<Record<string, PodRuntime>>;
  clusterDomain: string;
}

export type NodeView = Node & { metadata: Node['metadata']; status: NonNullable<Node['status']> & { conditions: { type: string; status: 'True' | 'False' | 'Unknown'; reason?: string }[] } };

export interface LabView {
  nodes: NodeView[];
  pods: Pod[];
  services: Service[];
  endpointSlices: EndpointSlice[];
}

/**
 * The objects as the agents see them, with what only the lab knows added the
 * Kubernetes way: node annotations the agents published (VTEP MAC, underlay IP) and a
 * Ready condition from the node's agent (running or not).
 */
export function labView(s: InspectSource, agents: Readonly<Record<string, 'running' | 'stopped'>>, annotations: Readonly<Record<string, Record<string, string>>> = {}): LabView {
  const m = buildManifests({ objects: s.objects, nodes: s.nodes, clusterIPs: s.clusterIPs, runtime: s.pods });
  const nodes = m.nodes.map((n) => {
    const running = agents[n.metadata.name] === 'running';
    const ann = annotations[n.metadata.name];
    return {
      ...n,
      metadata: { ...n.metadata, ...(ann && Object.keys(ann).length ? { annotations: { ...ann } } : {}) },
      status: { ...n.status, conditions: [{ type: 'Ready', status: running ? ('True' as const) : ('False' as const), reason: running ? 'SkiffAgentRunning' : 'SkiffAgentStopped' }] },
    };
  });
  const byKey = <T extends { metadata: { namespace?: string; name: string } }>(a: T, b: T) => {
    const x = `${a.metadata.namespace ?? ''}/${a.metadata.name}`;
    const y = `${b.metadata.namespace ?? ''}/${b.metadata.name}`;
    return x < y ? -1 : x > y ? 1 : 0;
  };
  return { nodes, pods: [...m.pods].sort(byKey), services: [...m.services].sort(byKey), endpointSlices: [...m.endpointSlices].sort(byKey) };
}

/** A Kubernetes List of the items, as `kubectl get -o json` prints it. */
export function asList(items: readonly unknown[]): { apiVersion: 'v1'; kind: 'List'; metadata: { resourceVersion: '' }; items: unknown[] } {
  return { apiVersion: 'v1', kind: 'List', metadata: { resourceVersion: '' }, items: [...items] };
}

export function inNamespace<T extends { metadata: { namespace?: string } }>(items: readonly T[], ns: string | undefined): T[] {
  return ns ? items.filter((o) => (o.metadata.namespace ?? 'default') === ns) : [...items];
}

// ---- tables --------------------------------------------------------------------------------

/** kubectl's layout: upper-case headers, columns padded to the widest cell, three spaces apart. */
export function table(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('   ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n') + '\n';
}

const internalIP = (n: Node) => n.status?.addresses?.find((a) => a.type === 'InternalIP')?.address ?? '<none>';

export function nodesTable(nodes: readonly NodeView[], wide = false): string {
  const headers = ['NAME', 'STATUS', 'POD-CIDR', 'UNDERLAY-IP', 'AGENT', ...(wide ? ['VTEP-MAC'] : [])];
  const rows = nodes.map((n) => {
    const ready = n.status.conditions.find((c) => c.type === 'Ready')?.status === 'True';
    return [n.metadata.name, ready ? 'Ready' : 'NotReady', n.spec.podCIDR ?? '<none>', internalIP(n), ready ? 'running' : 'stopped', ...(wide ? [n.metadata.annotations?.['skiff.io/vtep-mac'] ?? '<none>'] : [])];
  });
  return table(headers, rows);
}

const podIsReady = (p: Pod) => p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;

export function podsTable(pods: readonly Pod[], wide = false, showNamespace = true): string {
  const headers = [...(showNamespace ? ['NAMESPACE'] : []), 'NAME', 'READY', 'STATUS', 'IP', 'NODE', ...(wide ? ['PORTS', 'LABELS'] : [])];
  const rows = pods.map((p) => {
    const n = p.spec.containers.length;
    const terminating = !!p.metadata.deletionTimestamp;
    const ports = p.spec.containers.flatMap((c) => (c.ports ?? []).map((cp) => `${cp.containerPort}/${cp.protocol ?? 'TCP'}`));
    const labels = Object.entries(p.metadata.labels ?? {}).map(([k, v]) => `${k}=${v}`);
    return [
      ...(showNamespace ? [p.metadata.namespace ?? 'default'] : []),
      p.metadata.name,
      `${podIsReady(p) ? n : 0}/${n}`,
      terminating ? 'Terminating' : (p.status?.phase ?? 'Pending'),
      p.status?.podIP ?? '<none>',
      p.spec.nodeName ?? '<none>',
      ...(wide ? [ports.join(',') || '<none>', labels.join(',') || '<none>'] : []),
    ];
  });
  return table(headers, rows);
}

/** kubectl's PORT(S) column: `80/TCP`, `80:30080/TCP`. */
export function servicePorts(s: Service): string {
  const ports = (s.spec.ports ?? []).map((p) => `${p.port}${p.nodePort ? `:${p.nodePort}` : ''}/${p.protocol ?? 'TCP'}`);
  return ports.join(',') || '<none>';
}

export function servicesTable(services: readonly Service[], wide = false, showNamespace = true): string {
  const headers = [...(showNamespace ? ['NAMESPACE'] : []), 'NAME', 'TYPE', 'CLUSTER-IP', 'PORT(S)', ...(wide ? ['SELECTOR'] : [])];
  const rows = services.map((s) => [
    ...(showNamespace ? [s.metadata.namespace ?? 'default'] : []),
    s.metadata.name,
    s.spec.type ?? 'ClusterIP',
    s.spec.type === 'ExternalName' ? (s.spec.externalName ?? '<none>') : (s.spec.clusterIP ?? '<none>'),
    servicePorts(s),
    ...(wide ? [Object.entries(s.spec.selector ?? {}).map(([k, v]) => `${k}=${v}`).join(',') || '<none>'] : []),
  ]);
  return table(headers, rows);
}

/** One endpoint: its address and the conditions that hold, e.g. `10.244.1.2(ready,serving)`. */
export function endpointCell(e: EndpointSlice['endpoints'][number], wide = false): string {
  const c = e.conditions ?? {};
  const held = (['ready', 'serving', 'terminating'] as const).filter((k) => c[k] === true);
  const where = wide && e.targetRef?.name ? `=${e.targetRef.name}${e.nodeName ? `@${e.nodeName}` : ''}` : '';
  return `${e.addresses.join('+')}${where}(${held.join(',') || 'not-ready'})`;
}

export function endpointSlicesTable(slices: readonly EndpointSlice[], wide = false, showNamespace = true): string {
  const headers = [...(showNamespace ? ['NAMESPACE'] : []), 'NAME', 'SERVICE', 'ADDRESSTYPE', 'PORTS', 'ENDPOINTS'];
  const rows = slices.map((s) => [
    ...(showNamespace ? [s.metadata.namespace ?? 'default'] : []),
    s.metadata.name,
    s.metadata.labels?.['kubernetes.io/service-name'] ?? '<none>',
    s.addressType,
    (s.ports ?? []).map((p) => `${p.port ?? '*'}/${p.protocol ?? 'TCP'}`).join(',') || '<unset>',
    s.endpoints.map((e) => endpointCell(e, wide)).join(' ') || '<none>',
  ]);
  return table(headers, rows);
}

/** The table for one resource (namespace-scoped ones filtered by `ns`; NAMESPACE shown when not filtered). */
export function formatGet(view: LabView, resource: Resource, o: { namespace?: string; wide?: boolean } = {}): string {
  const wide = o.wide ?? false;
  const all = !o.namespace;
  const empty = (what: string) => (o.namespace ? `No ${what} found in ${o.namespace} namespace.\n` : `No ${what} found.\n`);
  switch (resource) {
    case 'nodes':
      return view.nodes.length ? nodesTable(view.nodes, wide) : 'No nodes found.\n';
    case 'pods': {
      const items = inNamespace(view.pods, o.namespace);
      return items.length ? podsTable(items, wide, all) : empty('pods');
    }
    case 'services': {
      const items = inNamespace(view.services, o.namespace);
      return items.length ? servicesTable(items, wide, all) : empty('services');
    }
    case 'endpointslices': {
      const items = inNamespace(view.endpointSlices, o.namespace);
      return items.length ? endpointSlicesTable(items, wide, all) : empty('endpointslices');
    }
  }
}

/** The items of one resource, for -o json. */
export function itemsOf(view: LabView, resource: Resource, namespace?: string): unknown[] {
  if (resource === 'nodes') return view.nodes;
  if (resource === 'pods') return inNamespace(view.pods, namespace);
  if (resource === 'services') return inNamespace(view.services, namespace);
  return inNamespace(view.endpointSlices, namespace);
}

// ---- probe targets -----------------------------------------------------------------------

export interface ResolvedTarget {
  /** What the target is, for the output: `dev/web-…` (pod), `dev/web` (service), or the IP. */
  name: string;
  kind: 'pod' | 'service' | 'ip';
  ip: string;
  port?: number;
}

const podPorts = (p: Pod) => p.spec.containers.flatMap((c) => (c.ports ?? []).map((cp) => ({ port: cp.containerPort, protocol: cp.protocol ?? 'TCP' })));

/** A pod of the view by `NS/NAME` (or `NAME` in `default`), with a clear error naming what exists. */
export function findPod(view: LabView, ref: string): Pod {
  const key = ref.includes('/') ? ref : `default/${ref}`;
  const p = view.pods.find((x) => podKey(x) === key);
  if (!p) throw new InspectUsageError(`no pod ${key} (pods: ${view.pods.map(podKey).join(', ') || 'none'})`);
  return p;
}

/**
 * Resolves a probe target from `fromNamespace` the way the pod would: `NS/POD`, an IPv4
 * address, or a service name — `svc` (the source's namespace, as the DNS search path
 * does), `svc.ns`, `svc.ns.svc`, `svc.ns.svc.<domain>`. A ClusterIP service resolves to
 * its ClusterIP and the port to its first port of the protocol; a headless one to its
 * first ready endpoint (the port: that endpoint's target port).
 */
export function resolveTarget(view: LabView, o: { fromNamespace: string; target: string; protocol: ProbeProtocol; port?: number; domain: string }): ResolvedTarget {
  const t = o.target.replace(/\.$/, '');
  const needPort = o.protocol !== 'ICMP';
  const withPort = (r: Omit<ResolvedTarget, 'port'>, candidates: { port: number; protocol: string }[], what: string): ResolvedTarget => {
    if (!needPort) return r;
    if (o.port !== undefined) return { ...r, port: o.port };
    const c = candidates.find((x) => x.protocol === o.protocol);
    if (!c) throw new InspectUsageError(`flag --port is required: ${what} has no ${o.protocol} port (ports: ${candidates.map((x) => `${x.port}/${x.protocol}`).join(', ') || 'none'})`);
    return { ...r, port: c.port };
  };
  if (t.includes('/')) {
    const p = findPod(view, t);
    const ip = p.status?.podIP;
    if (!ip) throw new InspectUsageError(`pod ${podKey(p)} has no IP yet`);
    return withPort({ name: podKey(p), kind: 'pod', ip }, podPorts(p), `pod ${podKey(p)}`);
  }
  if (/^\d+\.\d+\.\d+\.\d+$/.test(t)) {
    if (!isIPv4(t)) throw new InspectUsageError(`target: invalid IPv4 address ${JSON.stringify(o.target)}`);
    const pod = view.pods.find((p) => p.status?.podIP === t);
    const svc = view.services.find((s) => s.spec.clusterIP === t);
    const candidates = pod ? podPorts(pod) : svc ? (svc.spec.ports ?? []).map((p) => ({ port: p.port, protocol: p.protocol ?? 'TCP' })) : [];
    return withPort({ name: t, kind: 'ip', ip: t }, candidates, `${t}${pod ? ` (pod ${podKey(pod)})` : svc ? ` (service ${serviceKey(svc)})` : ''}`);
  }
  const labels = t.toLowerCase().split('.');
  let name: string;
  let ns: string;
  const suffix = `svc.${o.domain}`.split('.');
  const tail = labels.slice(2);
  if (labels.length === 1) [name, ns] = [labels[0]!, o.fromNamespace];
  else if (labels.length >= 2 && tail.every((l, i) => l === suffix[i])) [name, ns] = [labels[0]!, labels[1]!];
  else throw new InspectUsageError(`target: invalid value ${JSON.stringify(o.target)} (NS/POD, an IPv4 address, or a service: NAME, NAME.NS, NAME.NS.svc.${o.domain})`);
  const svc = view.services.find((s) => s.metadata.name === name && (s.metadata.namespace ?? 'default') === ns);
  if (!svc) throw new InspectUsageError(`target ${JSON.stringify(o.target)}: no service ${ns}/${name} (services: ${view.services.map(serviceKey).join(', ') || 'none'})`);
  const key = serviceKey(svc);
  if (svc.spec.type === 'ExternalName') throw new InspectUsageError(`target ${JSON.stringify(o.target)}: service ${key} is an ExternalName (${svc.spec.externalName ?? ''}): no address in the cluster`);
  if (svc.spec.clusterIP === 'None') {
    const slices = view.endpointSlices.filter((e) => e.metadata.namespace === ns && e.metadata.labels?.['kubernetes.io/service-name'] === name);
    for (const sl of slices) {
      const ep = sl.endpoints.find((e) => e.conditions?.ready);
      if (ep) return withPort({ name: key, kind: 'service', ip: ep.addresses[0]! }, (sl.ports ?? []).filter((p) => p.port).map((p) => ({ port: p.port!, protocol: p.protocol ?? 'TCP' })), `headless service ${key}`);
    }
    throw new InspectUsageError(`target ${JSON.stringify(o.target)}: headless service ${key} has no ready endpoint`);
  }
  if (!svc.spec.clusterIP) throw new InspectUsageError(`target ${JSON.stringify(o.target)}: service ${key} has no ClusterIP yet`);
  return withPort({ name: key, kind: 'service', ip: svc.spec.clusterIP }, (svc.spec.ports ?? []).map((p) => ({ port: p.port, protocol: p.protocol ?? 'TCP' })), `service ${key}`);
}

export interface ProbeReport {
  from: string;
  to: string;
  ip: string;
  protocol: ProbeProtocol;
  port: number | null;
  result: string;
  answer: string | null;
  ms: number;
  error?: string;
}

/** The one-line human form: `dev/client -> dev/web (10.96.0.2:80/TCP): dev/web-abc (1.9 ms)`. */
export function formatProbe(r: ProbeReport): string {
  const dest = `${r.to}${r.to !== r.ip ? ` (${r.ip}${r.port !== null ? `:${r.port}` : ''}/${r.protocol})` : `${r.port !== null ? `:${r.port}` : ''}/${r.protocol}`}`;
  const verdict = r.result === 'ok' ? (r.answer ? r.answer : '(connected, no answer)') : r.result === 'error' ? `error: ${r.error ?? 'unknown'}` : r.result + (r.error && r.result === 'unreachable' ? ` (${r.error})` : '');
  return `${r.from} -> ${dest}: ${verdict} (${r.ms.toFixed(1)} ms)\n`;
}
