// Cluster objects in the real Kubernetes API shapes, trimmed to the fields skiff uses.
// Sources (the Kubernetes API, a manifest directory) deliver these unchanged.

export interface ObjectMeta {
  name: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  deletionTimestamp?: string;
}

export interface LabelSelectorRequirement {
  key: string;
  operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';
  values?: string[];
}

export interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: LabelSelectorRequirement[];
}

export type Protocol = 'TCP' | 'UDP' | 'SCTP';

export interface Namespace {
  apiVersion: 'v1';
  kind: 'Namespace';
  metadata: ObjectMeta;
}

export interface ContainerPort {
  name?: string;
  containerPort: number;
  protocol?: Protocol;
  hostPort?: number;
}

export interface Probe {
  tcpSocket?: { port: number | string };
  exec?: { command: string[] };
  initialDelaySeconds?: number;
  periodSeconds?: number;
}

export interface Container {
  name: string;
  image?: string;
  command?: string[];
  args?: string[];
  ports?: ContainerPort[];
  readinessProbe?: Probe;
}

export interface PodCondition {
  type: string;
  status: 'True' | 'False' | 'Unknown';
}

export interface Pod {
  apiVersion: 'v1';
  kind: 'Pod';
  metadata: ObjectMeta;
  spec: {
    nodeName?: string;
    hostNetwork?: boolean;
    hostname?: string;
    subdomain?: string;
    containers: Container[];
  };
  status?: {
    phase?: string;
    podIP?: string;
    podIPs?: { ip: string }[];
    hostIP?: string;
    conditions?: PodCondition[];
  };
}

export interface ServicePort {
  name?: string;
  protocol?: Protocol;
  port: number;
  targetPort?: number | string;
  nodePort?: number;
  appProtocol?: string;
}

export interface Service {
  apiVersion: 'v1';
  kind: 'Service';
  metadata: ObjectMeta;
  spec: {
    type?: 'ClusterIP' | 'NodePort' | 'LoadBalancer' | 'ExternalName';
    clusterIP?: string;
    clusterIPs?: string[];
    ipFamilies?: ('IPv4' | 'IPv6')[];
    ports?: ServicePort[];
    selector?: Record<string, string>;
    sessionAffinity?: 'None' | 'ClientIP';
    sessionAffinityConfig?: { clientIP?: { timeoutSeconds?: number } };
    externalTrafficPolicy?: 'Cluster' | 'Local';
    internalTrafficPolicy?: 'Cluster' | 'Local';
    healthCheckNodePort?: number;
    publishNotReadyAddresses?: boolean;
    externalName?: string;
    externalIPs?: string[];
  };
  status?: { loadBalancer?: { ingress?: { ip?: string; hostname?: string }[] } };
}

export interface EndpointConditions {
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
}

export interface Endpoint {
  addresses: string[];
  conditions?: EndpointConditions;
  hostname?: string;
  nodeName?: string;
  zone?: string;
  targetRef?: { kind?: string; namespace?: string; name?: string; uid?: string };
}

export interface EndpointPort {
  name?: string;
  protocol?: Protocol;
  port?: number;
  appProtocol?: string;
}

export interface EndpointSlice {
  apiVersion: 'discovery.k8s.io/v1';
  kind: 'EndpointSlice';
  metadata: ObjectMeta; // labels["kubernetes.io/service-name"] names the Service
  addressType: 'IPv4' | 'IPv6' | 'FQDN';
  endpoints: Endpoint[];
  ports?: EndpointPort[];
}

export interface IPBlock {
  cidr: string;
  except?: string[];
}

export interface NetworkPolicyPeer {
  podSelector?: LabelSelector;
  namespaceSelector?: LabelSelector;
  ipBlock?: IPBlock;
}

export interface NetworkPolicyPort {
  protocol?: Protocol;
  port?: number | string;
  endPort?: number;
}

export interface NetworkPolicyIngressRule {
  from?: NetworkPolicyPeer[];
  ports?: NetworkPolicyPort[];
}

export interface NetworkPolicyEgressRule {
  to?: NetworkPolicyPeer[];
  ports?: NetworkPolicyPort[];
}

export interface NetworkPolicy {
  apiVersion: 'networking.k8s.io/v1';
  kind: 'NetworkPolicy';
  metadata: ObjectMeta;
  spec: {
    podSelector: LabelSelector;
    policyTypes?: ('Ingress' | 'Egress')[];
    ingress?: NetworkPolicyIngressRule[];
    egress?: NetworkPolicyEgressRule[];
  };
}

export interface NodeAddress {
  type: 'InternalIP' | 'ExternalIP' | 'Hostname' | string;
  address: string;
}

export interface Node {
  apiVersion: 'v1';
  kind: 'Node';
  metadata: ObjectMeta;
  spec: { podCIDR?: string; podCIDRs?: string[]; unschedulable?: boolean };
  status?: { addresses?: NodeAddress[] };
}

export type ClusterObject = Namespace | Pod | Service | EndpointSlice | NetworkPolicy | Node;
export type Kind = ClusterObject['kind'];
export const KINDS: readonly Kind[] = ['Namespace', 'Node', 'Pod', 'Service', 'EndpointSlice', 'NetworkPolicy'];

/** "namespace/name" (or "name" for cluster-scoped objects): the key of an object in its kind. */
export function keyOf(o: { metadata: ObjectMeta }): string {
  return o.metadata.namespace ? `${o.metadata.namespace}/${o.metadata.name}` : o.metadata.name;
}

export type ChangeType = 'add' | 'update' | 'delete';

export interface Change<T extends ClusterObject = ClusterObject> {
  type: ChangeType;
  kind: T['kind'];
  key: string;
  /** The previous object (update, delete). */
  old?: T;
  /** The current object (add, update). */
  obj?: T;
}

/**
 * A source of cluster state: the Kubernetes API or a manifest directory.
 * Delivers changes for the kinds it was asked for, then (once every initial list
 * has been delivered) the synced signal. Reconcilers never act before it.
 */
export interface ClusterSource {
  readonly name: string;
  start(): Promise<void>;
  stop(): Promise<void>;
  hasSynced(): boolean;
  /** Resolves once the initial state of every kind has been delivered. */
  whenSynced(): Promise<void>;
  onChange(listener: (changes: Change[]) => void): void;
  /** Patch this node's annotations (overlay: VTEP MAC, underlay IP). */
  annotateNode?(name: string, annotations: Record<string, string>): Promise<void>;
}

/** The object type of each kind. */
export interface KindMap {
  Namespace: Namespace;
  Node: Node;
  Pod: Pod;
  Service: Service;
  EndpointSlice: EndpointSlice;
  NetworkPolicy: NetworkPolicy;
}

/**
 * Read access to the current cluster state (implemented by src/cluster's view over
 * one or more sources). Reconcilers, DNS and the policy evaluator read through this.
 */
export interface ClusterReader {
  list<K extends Kind>(kind: K): KindMap[K][];
  get<K extends Kind>(kind: K, key: string): KindMap[K] | undefined;
  hasSynced(): boolean;
  /** Subscribes to changes after they are applied to the view; returns an unsubscribe. */
  onChange(listener: (changes: readonly Change[]) => void): () => void;
}
