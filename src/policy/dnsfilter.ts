// Policy-aware DNS (opt-in: policy.policyAwareDns): the hook the cluster DNS server
// calls before answering a Service name, so that tenants cannot enumerate each
// other's services. Contract (docs/policy.md, "Policy-aware DNS"):
//
//   const filter = new DnsPolicyFilter(view);          // once, with the agent's view
//   const d = filter.check(clientIp, { namespace, name });
//   if (!d.allow) answer NXDOMAIN (same as for a name that does not exist)
//
// A name is answered when ANY of these holds:
//   - the client is not a pod of the cluster (a node, an unknown address);
//   - the Service is in the client's own namespace;
//   - the Service has type ExternalName (it fronts no pods);
//   - some ready endpoint of the Service, on some port of its EndpointSlices, is
//     reachable from the client under the NetworkPolicies (the evaluator's verdict,
//     egress of the client AND ingress of the endpoint pod; an endpoint that is not
//     a pod is judged by the client's egress alone).
// Otherwise (including a cross-namespace Service with no ready endpoint or no
// ports) the answer is NXDOMAIN. The verdicts follow the cluster state: the policy
// state is rebuilt lazily after any change of the view, and decisions are cached
// per (client, service) until then, so allowing a client flips the answer as soon
// as the view has the new policy. sameForEveryone() tells the DNS server when an answer
// may be shared between clients (its native cache); onReset fires on every reset.
import type { ClusterReader, EndpointSlice, Protocol, Service } from '../cluster/types.js';
import { evaluate, PolicyState } from './evaluator.js';

export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';

export interface DnsEndpoint {
  ip: string;
  ports: { port: number; protocol: Protocol }[];
}

export interface DnsDecision {
  allow: boolean;
  reason: string;
}

/** The decision for one client and one service's endpoints (pure). */
export function mayResolve(state: PolicyState, clientIp: string, service: { namespace: string; name: string; externalName?: boolean }, endpoints: readonly DnsEndpoint[]): DnsDecision {
  const client = state.podByIp(clientIp);
  if (!client) return { allow: true, reason: `${clientIp} is not a pod: answered` };
  if (client.namespace === service.namespace) return { allow: true, reason: `${client.key} asks for a service of its own namespace` };
  if (service.externalName) return { allow: true, reason: 'ExternalName service: no pods behind it' };
  for (const ep of endpoints) {
    for (const p of ep.ports) {
      const v = evaluate(state, { from: { pod: client.key }, to: { ip: ep.ip }, protocol: p.protocol, port: p.port }, { reasons: false });
      if (v.allowed) return { allow: true, reason: `${client.key} may reach ${ep.ip} ${p.protocol}/${p.port}` };
    }
  }
  const n = endpoints.length;
  return {
    allow: false,
    reason: n === 0 ? `${service.namespace}/${service.name} has no ready endpoint with a port: hidden from other namespaces` : `no endpoint of ${service.namespace}/${service.name} (${n}) is reachable from ${client.key}`,
  };
}

/** Ready endpoints (ready !== false) with the slice's ports, from the Service's EndpointSlices. */
export function endpointsOf(slices: readonly EndpointSlice[]): DnsEndpoint[] {
  const out: DnsEndpoint[] = [];
  for (const s of slices) {
    if (s.addressType === 'FQDN') continue;
    const ports = (s.ports ?? []).filter((p) => typeof p.port === 'number').map((p) => ({ port: p.port as number, protocol: (p.protocol ?? 'TCP') as Protocol }));
    for (const e of s.endpoints ?? []) {
      if (e.conditions?.ready === false) continue;
      for (const ip of e.addresses) out.push({ ip, ports });
    }
  }
  return out;
}

export class DnsPolicyFilter {
  private state: PolicyState | undefined;
  private readonly cache = new Map<string, DnsDecision>();
  private readonly everyone = new Map<string, boolean>();
  /** Namespaces holding an egress-isolated pod (per state). */
  private egressIsolated: Set<string> | undefined;
  private readonly unsubscribe: () => void;
  /** Called after every reset (the DNS server empties caches that hold answers judged "same for everyone"). */
  onReset: (() => void) | null = null;

  constructor(private readonly view: ClusterReader) {
    this.unsubscribe = view.onChange((changes) => {
      if (changes.some((c) => c.kind !== 'Node')) {
        this.state = undefined;
        this.cache.clear();
        this.everyone.clear();
        this.egressIsolated = undefined;
        this.onReset?.();
      }
    });
  }

  check(clientIp: string, service: { namespace: string; name: string }): DnsDecision {
    const key = `${clientIp} ${service.namespace}/${service.name}`;
    const hit = this.cache.get(key);
    if (hit) return hit;
    this.state ??= PolicyState.fromReader(this.view);
    const svc = this.view.get('Service', `${service.namespace}/${service.name}`) as Service | undefined;
    const slices = this.view.list('EndpointSlice').filter((s) => s.metadata.namespace === service.namespace && s.metadata.labels?.[SERVICE_NAME_LABEL] === service.name);
    const d = mayResolve(this.state, clientIp, { ...service, externalName: svc?.spec.type === 'ExternalName' }, endpointsOf(slices));
    if (this.cache.size > 50_000) this.cache.clear();
    this.cache.set(key, d);
    return d;
  }

  /**
   * Whether every client gets the Service's names answered (so an answer may be shared
   * between clients until the next change). A sufficient condition: no pod outside the
   * Service's namespace is isolated for egress, and some ready endpoint with a port is
   * not a pod isolated for ingress. ExternalName and endpoint-less Services: false.
   */
  sameForEveryone(service: { namespace: string; name: string }): boolean {
    const key = `${service.namespace}/${service.name}`;
    const hit = this.everyone.get(key);
    if (hit !== undefined) return hit;
    const state = (this.state ??= PolicyState.fromReader(this.view));
    if (!this.egressIsolated) {
      this.egressIsolated = new Set();
      for (const p of state.pods.values()) if (state.isolating(p.key, 'egress').length) this.egressIsolated.add(p.namespace);
    }
    let v = false;
    const svc = this.view.get('Service', key) as Service | undefined;
    if (svc && svc.spec.type !== 'ExternalName' && [...this.egressIsolated].every((ns) => ns === service.namespace)) {
      const slices = this.view.list('EndpointSlice').filter((s) => s.metadata.namespace === service.namespace && s.metadata.labels?.[SERVICE_NAME_LABEL] === service.name);
      v = endpointsOf(slices).some((ep) => {
        if (ep.ports.length === 0) return false;
        const pod = state.podByIp(ep.ip);
        return !pod || state.isolating(pod.key, 'ingress').length === 0;
      });
    }
    if (this.everyone.size > 50_000) this.everyone.clear();
    this.everyone.set(key, v);
    return v;
  }

  close(): void {
    this.unsubscribe();
  }
}
