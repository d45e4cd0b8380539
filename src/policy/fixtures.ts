// The upstream NetworkPolicy e2e model (kubernetes test/e2e/network/netpol,
// cyclonus): namespaces x, y, z labelled ns=<name>, pods a, b, c in each labelled
// pod=<name>, each serving TCP and UDP on 80 and 81 (container ports named
// serve-80-tcp, serve-80-udp, serve-81-tcp, serve-81-udp), spread over nodes. Plus
// the upstream scenarios and a seeded generator of random policies. Pure: shared by
// the compiler's unit tests, the real-kernel integration test, the lab e2e, `skiff
// lab matrix` and the benchmark. The verdicts always come from the evaluator; the
// scenarios only say what to install.
import type { LabelSelector, Namespace, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, Pod, Protocol } from '../cluster/types.js';
import { mulberry32 } from '../util/rng.js';

export const MODEL_NAMESPACES = ['x', 'y', 'z'] as const;
export const MODEL_PODS = ['a', 'b', 'c'] as const;
export const MODEL_PORTS = [80, 81] as const;
export const MODEL_PROTOCOLS: readonly Protocol[] = ['TCP', 'UDP'];
export const SERVE_PORTS = [
  { name: 'serve-80-tcp', containerPort: 80, protocol: 'TCP' as const },
  { name: 'serve-80-udp', containerPort: 80, protocol: 'UDP' as const },
  { name: 'serve-81-tcp', containerPort: 81, protocol: 'TCP' as const },
  { name: 'serve-81-udp', containerPort: 81, protocol: 'UDP' as const },
];
/** "x/a" ... "z/c" in matrix order. */
export const MODEL_KEYS: readonly string[] = MODEL_NAMESPACES.flatMap((n) => MODEL_PODS.map((p) => `${n}/${p}`));

export function nsObj(name: string, labels: Record<string, string> = { ns: name }): Namespace {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels: { ...labels } } };
}

export function podObj(namespace: string, name: string, o: { node: string; ips?: string[]; labels?: Record<string, string>; ports?: typeof SERVE_PORTS }): Pod {
  const p: Pod = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace, labels: { ...(o.labels ?? { pod: name }) } },
    spec: { nodeName: o.node, containers: [{ name: 'c', ports: (o.ports ?? SERVE_PORTS).map((x) => ({ ...x })) }] },
    status: { phase: 'Running' },
  };
  if (o.ips?.length) {
    p.status!.podIP = o.ips[0]!;
    p.status!.podIPs = o.ips.map((ip) => ({ ip }));
  }
  return p;
}

/** The node of model pod i (0..8): round-robin so that every namespace spans every node. */
export function modelNode(nodes: readonly string[], key: string): string {
  return nodes[MODEL_KEYS.indexOf(key) % nodes.length]!;
}

/**
 * The model with synthetic addresses: node k has pod CIDR 10.244.k.0/24 (k from 1),
 * and a pod gets .10+i on its node (i = its index in MODEL_KEYS).
 */
export function syntheticModel(nodes: readonly string[] = ['node-1', 'node-2', 'node-3']): { namespaces: Namespace[]; pods: Pod[]; podCIDRs: Map<string, string> } {
  const podCIDRs = new Map(nodes.map((n, k) => [n, `10.244.${k + 1}.0/24`]));
  const pods = MODEL_KEYS.map((key, i) => {
    const [n, p] = key.split('/') as [string, string];
    const node = modelNode(nodes, key);
    const k = nodes.indexOf(node);
    return podObj(n, p, { node, ips: [`10.244.${k + 1}.${10 + i}`] });
  });
  return { namespaces: MODEL_NAMESPACES.map((n) => nsObj(n)), pods, podCIDRs };
}

export function np(namespace: string, name: string, spec: Partial<NetworkPolicy['spec']>): NetworkPolicy {
  return { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name, namespace }, spec: { podSelector: {}, ...spec } };
}
export const sel = (labels: Record<string, string>): LabelSelector => ({ matchLabels: labels });
export const nsNamed = (name: string): LabelSelector => ({ matchLabels: { 'kubernetes.io/metadata.name': name } });
export const ing = (from?: NetworkPolicyPeer[], ports?: NetworkPolicyPort[]): NetworkPolicyIngressRule => ({ ...(from ? { from } : {}), ...(ports ? { ports } : {}) });
export const egr = (to?: NetworkPolicyPeer[], ports?: NetworkPolicyPort[]): NetworkPolicyEgressRule => ({ ...(to ? { to } : {}), ...(ports ? { ports } : {}) });

/** Cluster state changes a scenario makes besides installing policies. */
export interface ScenarioMutation {
  /** Replace these namespaces' labels ("x" -> labels; ns=<name> is not kept unless given). */
  namespaceLabels?: Record<string, Record<string, string>>;
  /** Replace these pods' labels ("x/a" -> labels). */
  podLabels?: Record<string, Record<string, string>>;
}

export interface Scenario {
  name: string;
  /**
   * Policies to install. Given the model's pod addresses (key -> IPv4) so that
   * ipBlock scenarios can aim at real pods whatever addresses IPAM handed out.
   */
  policies: (ips: ReadonlyMap<string, string>) => NetworkPolicy[];
  mutate?: ScenarioMutation;
  /** Probes (protocol, port); default TCP/80, TCP/81, UDP/80, UDP/81. */
  probes?: [Protocol, number][];
}

const cidr24 = (ip: string) => `${ip.split('.').slice(0, 3).join('.')}.0/24`;
const cidr16 = (ip: string) => `${ip.split('.').slice(0, 2).join('.')}.0.0/16`;

/** Scenarios from the upstream suite (netpol/network_policy.go), in its standard model. */
export const UPSTREAM_SCENARIOS: readonly Scenario[] = [
  { name: 'no policies', policies: () => [] },
  { name: 'should support a default-deny ingress policy', policies: () => [np('x', 'deny-ingress', { ingress: [] })] },
  { name: 'should support a default-deny egress policy', policies: () => [np('x', 'deny-egress', { policyTypes: ['Egress'] })] },
  { name: 'should support default-deny all (ingress+egress)', policies: () => [np('x', 'deny-all', { policyTypes: ['Ingress', 'Egress'] })] },
  {
    name: 'should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector',
    policies: () => [np('x', 'allow-client-a-via-ns-selector', { podSelector: sel({ pod: 'a' }), ingress: [ing([{ namespaceSelector: { matchExpressions: [{ key: 'ns', operator: 'NotIn', values: ['x'] }] } }])] })],
  },
  {
    name: 'should enforce policy based on PodSelector with MatchExpressions',
    policies: () => [np('x', 'x-a-allows-x-b', { podSelector: sel({ pod: 'a' }), ingress: [ing([{ podSelector: { matchExpressions: [{ key: 'pod', operator: 'In', values: ['b'] }] } }])] })],
  },
  {
    name: 'should enforce policy based on NamespaceSelector with MatchExpressions',
    policies: () => [np('x', 'allow-ns-y', { podSelector: sel({ pod: 'a' }), ingress: [ing([{ namespaceSelector: { matchExpressions: [{ key: 'ns', operator: 'In', values: ['y'] }] } }])] })],
  },
  {
    name: 'should enforce policy based on PodSelector or NamespaceSelector',
    policies: () => [np('x', 'or', { podSelector: sel({ pod: 'a' }), ingress: [ing([{ namespaceSelector: { matchExpressions: [{ key: 'ns', operator: 'NotIn', values: ['x'] }] } }, { podSelector: sel({ pod: 'b' }) }])] })],
  },
  {
    name: 'should enforce policy based on PodSelector and NamespaceSelector',
    policies: () => [np('x', 'and', { podSelector: sel({ pod: 'a' }), ingress: [ing([{ namespaceSelector: { matchExpressions: [{ key: 'ns', operator: 'NotIn', values: ['x'] }] }, podSelector: sel({ pod: 'b' }) }])] })],
  },
  {
    name: 'should enforce policy based on Multiple PodSelectors and NamespaceSelectors',
    policies: () => [
      np('x', 'multi', {
        podSelector: sel({ pod: 'a' }),
        ingress: [ing([{ namespaceSelector: { matchExpressions: [{ key: 'ns', operator: 'NotIn', values: ['x'] }] }, podSelector: { matchExpressions: [{ key: 'pod', operator: 'In', values: ['b', 'c'] }] } }])],
      }),
    ],
  },
  {
    name: 'should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector',
    policies: () => [np('x', 'ns-y-pod-a', { podSelector: sel({ pod: 'a' }), ingress: [ing([{ namespaceSelector: nsNamed('y'), podSelector: sel({ pod: 'a' }) }])] })],
  },
  {
    name: 'should enforce policy based on Ports',
    policies: () => [np('x', 'allow-81', { podSelector: sel({ pod: 'a' }), ingress: [ing([{ namespaceSelector: nsNamed('y') }], [{ port: 81 }])] })],
  },
  {
    name: 'should enforce multiple, stacked policies with overlapping podSelectors',
    policies: () => [
      np('x', 'allow-80', { podSelector: sel({ pod: 'a' }), ingress: [ing([{ namespaceSelector: nsNamed('y') }], [{ port: 80 }])] }),
      np('x', 'allow-81', { podSelector: sel({ pod: 'a' }), ingress: [ing([{ namespaceSelector: nsNamed('y') }], [{ port: 81 }])] }),
    ],
  },
  { name: 'should support allow-all policy', policies: () => [np('x', 'allow-all', { ingress: [{}] })] },
  {
    name: 'should allow ingress access on one named port',
    policies: () => [np('x', 'named-81', { ingress: [ing(undefined, [{ port: 'serve-81-tcp' }])] })],
  },
  {
    name: 'should allow ingress access from namespace on one named port',
    policies: () => [np('x', 'named-80-from-y', { ingress: [ing([{ namespaceSelector: nsNamed('y') }], [{ port: 'serve-80-tcp' }])] })],
  },
  {
    name: 'should allow egress access on one named port',
    policies: () => [np('x', 'egress-named-80', { policyTypes: ['Egress'], egress: [egr(undefined, [{ port: 'serve-80-tcp' }])] })],
  },
  {
    name: 'should enforce updated policy (ports 81 -> 80) — final state',
    policies: () => [np('x', 'allow-80', { podSelector: sel({ pod: 'a' }), ingress: [ing([{ namespaceSelector: nsNamed('y') }], [{ port: 80 }])] })],
  },
  {
    name: 'should allow ingress access from updated namespace (label added to y)',
    policies: () => [np('x', 'ns2', { podSelector: sel({ pod: 'a' }), ingress: [ing([{ namespaceSelector: sel({ ns2: 'updated' }) }])] })],
    mutate: { namespaceLabels: { y: { ns: 'y', ns2: 'updated' } } },
  },
  {
    name: 'should allow ingress access from updated pod (label added to x/b)',
    policies: () => [np('x', 'pod2', { podSelector: sel({ pod: 'a' }), ingress: [ing([{ podSelector: sel({ pod: 'b', pod2: 'updated' }) }])] })],
    mutate: { podLabels: { 'x/b': { pod: 'b', pod2: 'updated' } } },
  },
  {
    name: 'should deny ingress from pods on other namespaces',
    policies: () => [np('x', 'deny-others', { ingress: [ing([{ podSelector: {} }])] })],
  },
  {
    name: 'should deny ingress access to updated pod (target label changed)',
    policies: () => [np('x', 'deny-target', { podSelector: sel({ target: 'isolated' }), ingress: [] })],
    mutate: { podLabels: { 'x/a': { pod: 'a', target: 'isolated' } } },
  },
  {
    name: 'should deny egress from pods based on PodSelector',
    policies: () => [np('x', 'deny-egress-a', { podSelector: sel({ pod: 'a' }), policyTypes: ['Egress'] })],
  },
  {
    name: 'should deny egress from all pods in a namespace',
    policies: () => [np('x', 'deny-egress-ns', { policyTypes: ['Egress'], egress: [] })],
  },
  {
    name: 'should work with Ingress, Egress specified together',
    policies: () => [
      np('x', 'both', {
        podSelector: sel({ pod: 'a' }),
        policyTypes: ['Ingress', 'Egress'],
        ingress: [ing([{ podSelector: sel({ pod: 'b' }) }])],
        egress: [egr([{ podSelector: sel({ pod: 'c' }) }]), egr([{ namespaceSelector: nsNamed('y') }], [{ port: 80 }])],
      }),
    ],
  },
  {
    name: 'should support denying of egress traffic on the client side (even if the server explicitly allows this traffic)',
    policies: () => [
      np('x', 'deny-egress-to-y', { podSelector: sel({ pod: 'a' }), policyTypes: ['Egress'], egress: [egr([{ namespaceSelector: nsNamed('z') }])] }),
      np('y', 'allow-all-in', { ingress: [{}] }),
    ],
  },
  {
    name: 'should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and NamespaceSelector',
    policies: () => [np('x', 'egress-y-a', { podSelector: sel({ pod: 'a' }), policyTypes: ['Egress'], egress: [egr([{ namespaceSelector: nsNamed('y'), podSelector: sel({ pod: 'a' }) }])] })],
  },
  {
    name: 'should enforce ingress policy allowing any port traffic to a server on a specific protocol',
    policies: () => [np('x', 'any-tcp', { ingress: [ing(undefined, [{ protocol: 'TCP' }])] })],
  },
  {
    name: 'should enforce multiple ingress policies with ingress allow-all policy taking precedence',
    policies: () => [np('x', 'only-80', { ingress: [ing(undefined, [{ port: 80 }])] }), np('x', 'allow-all', { ingress: [{}] })],
  },
  {
    name: 'should enforce multiple egress policies with egress allow-all policy taking precedence',
    policies: () => [
      np('x', 'egress-80', { policyTypes: ['Egress'], egress: [egr(undefined, [{ port: 80 }])] }),
      np('x', 'egress-all', { policyTypes: ['Egress'], egress: [{}] }),
    ],
  },
  {
    name: 'should stop enforcing policies after they are deleted (final state: one of two left)',
    policies: () => [np('y', 'left', { podSelector: sel({ pod: 'b' }), ingress: [] })],
  },
  {
    name: 'should allow egress access to server in CIDR block',
    policies: (ips) => [np('x', 'egress-cidr', { podSelector: sel({ pod: 'a' }), policyTypes: ['Egress'], egress: [egr([{ ipBlock: { cidr: `${ips.get('y/b')}/32` } }])] })],
  },
  {
    name: 'should enforce except clause while egress access to server in CIDR block',
    policies: (ips) => [
      np('x', 'egress-except', { podSelector: sel({ pod: 'a' }), policyTypes: ['Egress'], egress: [egr([{ ipBlock: { cidr: cidr16(ips.get('z/c')!), except: [`${ips.get('z/c')}/32`] } }])] }),
    ],
  },
  {
    name: 'should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed (other rule)',
    policies: (ips) => [
      np('x', 'overlap', {
        podSelector: sel({ pod: 'a' }),
        policyTypes: ['Egress'],
        egress: [egr([{ ipBlock: { cidr: cidr16(ips.get('y/c')!), except: [cidr24(ips.get('y/c')!)] } }]), egr([{ ipBlock: { cidr: `${ips.get('y/c')}/32` } }])],
      }),
    ],
  },
  {
    name: 'should enforce ingress ipBlock with except (pods as sources)',
    policies: (ips) => [np('y', 'in-cidr', { podSelector: sel({ pod: 'b' }), ingress: [ing([{ ipBlock: { cidr: cidr16(ips.get('x/a')!), except: [`${ips.get('x/a')}/32`, `${ips.get('z/a')}/32`] } }])] })],
  },
  {
    name: 'should enforce policies to check ingress and egress policies can be controlled independently based on PodSelector',
    policies: () => [np('x', 'deny-a-ingress', { podSelector: sel({ pod: 'a' }), ingress: [] }), np('x', 'allow-egress-a', { podSelector: sel({ pod: 'a' }), policyTypes: ['Egress'], egress: [{}] })],
  },
  {
    name: 'should support a UDP-only ingress rule',
    policies: () => [np('x', 'udp-only', { ingress: [ing(undefined, [{ protocol: 'UDP', port: 80 }])] })],
  },
  {
    name: 'should enforce ingress with endPort range',
    policies: () => [np('x', 'range', { ingress: [ing([{ namespaceSelector: nsNamed('y') }], [{ port: 81, endPort: 90 }])] })],
  },
  {
    name: 'should enforce egress with endPort range across protocols',
    policies: () => [np('y', 'range-eg', { policyTypes: ['Egress'], egress: [egr(undefined, [{ port: 79, endPort: 80 }, { protocol: 'UDP', port: 81, endPort: 81 }])] })],
  },
  {
    name: 'should enforce named UDP port with protocol',
    policies: () => [np('z', 'named-udp', { ingress: [ing(undefined, [{ protocol: 'UDP', port: 'serve-81-udp' }])] })],
  },
  {
    name: 'should not allow a named port that does not resolve (isolates)',
    policies: () => [np('z', 'bad-name', { podSelector: sel({ pod: 'c' }), ingress: [ing(undefined, [{ port: 'no-such-port' }])] })],
  },
  {
    name: 'should isolate dev from prod except via allowed namespaces (union of three policies)',
    policies: () => [
      np('x', 'deny-all', { policyTypes: ['Ingress', 'Egress'] }),
      np('x', 'allow-in-y', { ingress: [ing([{ namespaceSelector: nsNamed('y') }])] }),
      np('x', 'allow-out-z-c', { policyTypes: ['Egress'], egress: [egr([{ namespaceSelector: nsNamed('z'), podSelector: sel({ pod: 'c' }) }], [{ protocol: 'UDP' }, { port: 81 }])] }),
    ],
  },
  {
    name: 'should treat an invalid policy as absent (others enforced)',
    policies: () => [
      np('x', 'bad', { ingress: [ing([{ ipBlock: { cidr: '10.0.0.0/16', except: ['10.1.0.0/16'] } }])] }),
      np('y', 'good', { podSelector: sel({ pod: 'a' }), ingress: [ing([{ podSelector: sel({ pod: 'b' }) }])] }),
    ],
  },
];

// ---------------------------------------------------------------------------------
// The seeded generator

/** The seeded generator the scenarios use (mulberry32: same seed, same stream). */
export const rng = mulberry32;

/**
 * A random scenario over the model: 1-3 policies with random targets, types,
 * peers (pod/namespace selectors with every operator, ipBlocks with except around
 * the given pod addresses), ports (numbers, ranges, named, protocols), and
 * sometimes a label mutation. Deterministic in (seed).
 */
export function randomScenario(seed: number): Scenario {
  let r = rng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const chance = (p: number) => r() < p;
  const podLabelSel = (): LabelSelector => {
    switch (Math.floor(r() * 6)) {
      case 0:
        return {};
      case 1:
        return sel({ pod: pick(MODEL_PODS) });
      case 2:
        return { matchExpressions: [{ key: 'pod', operator: 'In', values: [pick(MODEL_PODS), pick(MODEL_PODS)] }] };
      case 3:
        return { matchExpressions: [{ key: 'pod', operator: 'NotIn', values: [pick(MODEL_PODS)] }] };
      case 4:
        return { matchExpressions: [{ key: 'extra', operator: chance(0.5) ? 'Exists' : 'DoesNotExist' }] };
      default:
        return { matchLabels: { pod: pick(MODEL_PODS) }, matchExpressions: [{ key: 'extra', operator: 'DoesNotExist' }] };
    }
  };
  const nsLabelSel = (): LabelSelector => {
    switch (Math.floor(r() * 5)) {
      case 0:
        return {};
      case 1:
        return sel({ ns: pick(MODEL_NAMESPACES) });
      case 2:
        return nsNamed(pick(MODEL_NAMESPACES));
      case 3:
        return { matchExpressions: [{ key: 'ns', operator: 'NotIn', values: [pick(MODEL_NAMESPACES)] }] };
      default:
        return { matchExpressions: [{ key: 'team', operator: chance(0.5) ? 'Exists' : 'DoesNotExist' }] };
    }
  };
  const ports = (): NetworkPolicyPort[] | undefined => {
    if (chance(0.35)) return undefined;
    const n = 1 + Math.floor(r() * 2);
    const out: NetworkPolicyPort[] = [];
    for (let i = 0; i < n; i++) {
      const protocol: Protocol = pick(['TCP', 'TCP', 'UDP'] as const);
      switch (Math.floor(r() * 5)) {
        case 0:
          out.push({ protocol });
          break;
        case 1:
        case 2:
          out.push({ protocol, port: pick(MODEL_PORTS) });
          break;
        case 3:
          out.push({ protocol, port: pick([79, 80, 81]), endPort: pick([81, 85]) });
          break;
        default:
          out.push({ protocol, port: `serve-${pick(MODEL_PORTS)}-${chance(0.8) ? protocol.toLowerCase() : 'sctp'}` });
      }
    }
    return out;
  };
  const build = (ips: ReadonlyMap<string, string>): NetworkPolicy[] => {
    r = rng(seed ^ 0x5bd1e995);
    const p = pick;
    const peer = (): NetworkPolicyPeer => {
      const k = Math.floor(r() * 5);
      if (k === 0) return { podSelector: podLabelSel() };
      if (k === 1) return { namespaceSelector: nsLabelSel() };
      if (k === 2) return { podSelector: podLabelSel(), namespaceSelector: nsLabelSel() };
      const target = ips.get(p(MODEL_KEYS))!;
      const other = ips.get(p(MODEL_KEYS))!;
      if (k === 3) return { ipBlock: { cidr: `${target}/32` } };
      const block = cidr16(target);
      return { ipBlock: { cidr: block, ...(chance(0.7) ? { except: [chance(0.5) ? `${other}/32` : cidr24(other)].filter((e) => e.startsWith(block.split('.').slice(0, 2).join('.') + '.')) } : {}) } };
    };
    const peers = (): NetworkPolicyPeer[] | undefined => (chance(0.2) ? undefined : Array.from({ length: 1 + Math.floor(r() * 2) }, peer));
    const n = 1 + Math.floor(r() * 3);
    const out: NetworkPolicy[] = [];
    for (let i = 0; i < n; i++) {
      const types = pick<readonly ('Ingress' | 'Egress')[] | undefined>([['Ingress'], ['Egress'], ['Ingress', 'Egress'], undefined]);
      const nRules = () => Math.floor(r() * 3);
      const spec: Partial<NetworkPolicy['spec']> = { podSelector: podLabelSel() };
      if (types) spec.policyTypes = [...types];
      if (!types || types.includes('Ingress')) {
        const k = nRules();
        spec.ingress = Array.from({ length: k }, () => ing(peers(), ports()));
      }
      if (types?.includes('Egress') || (!types && chance(0.3))) {
        const k = nRules();
        spec.egress = Array.from({ length: k }, () => egr(peers(), ports()));
      }
      // Drop empty except lists the filter above may leave.
      for (const rl of [...(spec.ingress ?? []), ...(spec.egress ?? [])]) {
        for (const pe of [...((rl as NetworkPolicyIngressRule).from ?? []), ...((rl as NetworkPolicyEgressRule).to ?? [])]) if (pe.ipBlock?.except?.length === 0) delete pe.ipBlock.except;
      }
      out.push(np(pick(MODEL_NAMESPACES), `rnd-${seed}-${i}`, spec));
    }
    return out;
  };
  // Label mutations are drawn before the policies so that they do not depend on `ips`.
  const mutate: ScenarioMutation = {};
  if (chance(0.3)) mutate.podLabels = { [pick(MODEL_KEYS)]: { pod: pick(MODEL_PODS), extra: 'yes' } };
  if (chance(0.3)) {
    const n = pick(MODEL_NAMESPACES);
    mutate.namespaceLabels = { [n]: { ns: n, team: 'blue' } };
  }
  return {
    name: `random seed ${seed}`,
    policies: build,
    ...(mutate.podLabels || mutate.namespaceLabels ? { mutate } : {}),
  };
}

/** Applies a scenario's label mutations to copies of the model objects. */
export function applyMutation(objs: { namespaces: Namespace[]; pods: Pod[] }, m: ScenarioMutation | undefined): { namespaces: Namespace[]; pods: Pod[] } {
  const namespaces = objs.namespaces.map((n) => {
    const l = m?.namespaceLabels?.[n.metadata.name];
    return l ? { ...n, metadata: { ...n.metadata, labels: { ...l } } } : n;
  });
  const pods = objs.pods.map((p) => {
    const l = m?.podLabels?.[`${p.metadata.namespace}/${p.metadata.name}`];
    return l ? { ...p, metadata: { ...p.metadata, labels: { ...l } } } : p;
  });
  return { namespaces, pods };
}

export const DEFAULT_PROBES: [Protocol, number][] = [
  ['TCP', 80],
  ['TCP', 81],
  ['UDP', 80],
  ['UDP', 81],
];

// ---------------------------------------------------------------------------------
// Synthetic clusters for the benchmark

/**
 * A cluster of `pods` pods (100 per node, 50 namespaces) and `policies` policies
 * mixing pod selectors, namespace selectors, named and numeric ports, ipBlocks with
 * except and egress rules. Node k has pod CIDR 10.(100 + k>>8).(k&255).0/24.
 */
export function syntheticCluster(o: { pods: number; policies: number; perNode?: number; namespaces?: number }): { namespaces: Namespace[]; pods: Pod[]; policies: NetworkPolicy[]; podCIDRs: Map<string, string> } {
  const perNode = o.perNode ?? 100;
  const K = o.namespaces ?? 50;
  const nodes = Math.max(1, Math.ceil(o.pods / perNode));
  const cidr = (n: number) => `10.${100 + (n >> 8)}.${n & 255}`;
  const podCIDRs = new Map(Array.from({ length: nodes }, (_, n) => [`node-${n}`, `${cidr(n)}.0/24`]));
  const namespaces = Array.from({ length: K }, (_, i) => nsObj(`ns-${i}`, { team: `team-${i % 5}`, env: i % 2 ? 'prod' : 'dev' }));
  const tiers = ['web', 'db', 'cache'];
  const pods = Array.from({ length: o.pods }, (_, i) => {
    const n = i % nodes;
    const j = Math.floor(i / nodes);
    const p = podObj(`ns-${i % K}`, `pod-${i}`, { node: `node-${n}`, ips: [`${cidr(n)}.${j + 2}`], labels: { app: `app-${i % 20}`, tier: tiers[i % 3]! } });
    p.spec.containers[0]!.ports = [{ name: 'http', containerPort: 8080 + (i % 3), protocol: 'TCP' }];
    return p;
  });
  const policies = Array.from({ length: o.policies }, (_, k) => {
    const spec: Partial<NetworkPolicy['spec']> = {
      podSelector: sel({ app: `app-${k % 20}` }),
      ingress: [
        ing([{ podSelector: sel({ tier: tiers[k % 3]! }) }, { namespaceSelector: sel({ team: `team-${k % 5}` }), podSelector: { matchExpressions: [{ key: 'app', operator: 'In', values: [`app-${(k + 1) % 20}`, `app-${(k + 2) % 20}`] }] } }], [{ port: 80 + (k % 10) }, { port: 'http' }]),
        ing([{ ipBlock: { cidr: '10.0.0.0/8', except: [`${cidr(k % nodes)}.0/24`] } }], [{ protocol: 'UDP', port: 5000, endPort: 5000 + (k % 100) }]),
      ],
    };
    if (k % 4 === 0) {
      spec.policyTypes = ['Ingress', 'Egress'];
      spec.egress = [egr([{ namespaceSelector: sel({ env: 'prod' }) }], [{ port: 443 }, { port: 'http' }]), egr(undefined, [{ protocol: 'UDP', port: 53 }])];
    }
    return np(`ns-${k % K}`, `pol-${k}`, spec);
  });
  return { namespaces, pods, policies, podCIDRs };
}
