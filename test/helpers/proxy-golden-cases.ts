// The proxy's golden service shapes (test/golden/proxy/*.nft): shared by the golden
// test (fake nft) and the netlink equivalence test (real kernel, Nft vs NftNetlink).
import type { EndpointSlice, Service } from '../../src/cluster/types.js';
import { slice, svc } from '../../src/proxy/fixtures.js';
import type { ProxierConfig } from '../../src/proxy/proxier.js';

export interface Case {
  name: string;
  objs: (Service | EndpointSlice)[];
  cfg?: Partial<ProxierConfig>;
  family?: 'ip' | 'ip6';
}

const three = ['10.244.1.5', '10.244.2.5', '10.244.3.5'];
export const cases: Case[] = [
  { name: 'clusterip-round-robin', objs: [svc('web', { clusterIP: '10.96.0.10' }), slice('web', three)] },
  { name: 'clusterip-random', objs: [svc('web', { clusterIP: '10.96.0.10' }), slice('web', three)], cfg: { balancing: 'random' } },
  { name: 'single-endpoint', objs: [svc('one', { clusterIP: '10.96.0.11' }), slice('one', ['10.244.1.7'])] },
  { name: 'no-endpoints', objs: [svc('empty', { clusterIP: '10.96.0.12', type: 'NodePort', ports: [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30012 }] })] },
  {
    name: 'nodeport-affinity',
    objs: [
      svc('sticky', { clusterIP: '10.96.0.13', type: 'NodePort', affinity: true, ports: [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30013 }] }),
      slice('sticky', ['10.244.1.5', '10.244.2.5']),
    ],
  },
  {
    name: 'etp-local-lb',
    objs: [
      svc('lb', { clusterIP: '10.96.0.14', type: 'LoadBalancer', eTP: 'Local', lbIPs: ['203.0.113.14'], externalIPs: ['198.51.100.14'], healthCheckNodePort: 32000, ports: [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30014 }] }),
      slice('lb', [{ ip: '10.244.1.5', node: 'node-a' }, { ip: '10.244.2.5', node: 'node-b' }]),
    ],
  },
  {
    name: 'etp-local-no-local-endpoints',
    objs: [
      svc('lb', { clusterIP: '10.96.0.15', type: 'NodePort', eTP: 'Local', ports: [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30015 }] }),
      slice('lb', [{ ip: '10.244.2.5', node: 'node-b' }]),
    ],
  },
  { name: 'itp-local', objs: [svc('itp', { clusterIP: '10.96.0.16', iTP: 'Local' }), slice('itp', [{ ip: '10.244.1.5', node: 'node-a' }, { ip: '10.244.2.5', node: 'node-b' }])] },
  {
    name: 'terminating-fallback',
    objs: [
      svc('term', { clusterIP: '10.96.0.17' }),
      slice('term', [{ ip: '10.244.1.5', ready: false, serving: true, terminating: true }, { ip: '10.244.2.5', ready: false, serving: false, terminating: true }]),
    ],
  },
  {
    name: 'udp-sctp-named-ports',
    objs: [
      svc('dns', { clusterIP: '10.96.0.18', ports: [{ name: 'dns', protocol: 'UDP', port: 53, targetPort: 'dns' }, { name: 'dns-tcp', protocol: 'TCP', port: 53, targetPort: 'dns-tcp' }, { name: 'sig', protocol: 'SCTP', port: 3868, targetPort: 3868 }] }),
      // Two slices resolve the named port to different numbers (two pod templates).
      slice('dns', ['10.244.1.5'], { name: 'dns-a', ports: [{ name: 'dns', port: 5353, protocol: 'UDP' }, { name: 'dns-tcp', port: 5353, protocol: 'TCP' }, { name: 'sig', port: 3868, protocol: 'SCTP' }] }),
      slice('dns', ['10.244.2.5'], { name: 'dns-b', ports: [{ name: 'dns', port: 53, protocol: 'UDP' }, { name: 'dns-tcp', port: 53, protocol: 'TCP' }] }),
    ],
  },
  { name: 'masquerade-all', objs: [svc('web', { clusterIP: '10.96.0.10' }), slice('web', three)], cfg: { masqueradeAll: true } },
  { name: 'nodeports-on-all-local-addresses', objs: [svc('np', { clusterIP: '10.96.0.19', type: 'NodePort', ports: [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30019 }] }), slice('np', ['10.244.1.5'])], cfg: { nodeIPs: [] } },
  {
    name: 'ipv6',
    family: 'ip6',
    cfg: { clusterCIDR: ['10.244.0.0/16', 'fd00:244::/56'], nodeIPs: ['192.168.1.10', 'fd00:1::10'] },
    objs: [svc('v6', { clusterIPs: ['fd00:96::10'], affinity: 60 }), slice('v6', ['fd00:244:1::5', 'fd00:244:2::5'])],
  },
  {
    name: 'bad-objects-skipped',
    objs: [
      svc('good', { clusterIP: '10.96.0.20' }),
      slice('good', ['10.244.1.5', 'not-an-ip', '10.244.1.6']),
      svc('bad-ip', { clusterIP: '10.96.0.300' }),
      svc('dup-ports', { clusterIP: '10.96.0.21', ports: [{ name: 'a', port: 80 }, { name: 'b', port: 80 }] }),
      svc('evil"; flush ruleset; #', { clusterIP: '10.96.0.22' }),
      svc('badport', { clusterIP: '10.96.0.23', ports: [{ name: 'x y', port: 80 }] }),
    ],
  },
];

