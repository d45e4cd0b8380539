import t from 'tap';
import { endpointsFor, selectEndpoints, servicePorts, serviceModel, type Problem } from '../../src/proxy/model.js';
import { slice, svc } from '../../src/proxy/fixtures.js';
import { staleUdpFilters } from '../../src/proxy/proxier.js';

t.test('service validation: bad objects are skipped with a reason naming the field', async (t) => {
  const cases: [ReturnType<typeof svc>, RegExp][] = [
    [svc('a', { clusterIP: '10.96.0.300' }), /spec\.clusterIPs: invalid IP "10\.96\.0\.300"/],
    [svc('a', { clusterIP: '' }), /spec\.clusterIP: missing/],
    [svc('a', { clusterIP: '10.96.0.1', ports: [{ name: 'x', port: 80 }, { name: 'y', port: 80 }] }), /duplicate port TCP\/80/],
    [svc('a', { clusterIP: '10.96.0.1', ports: [{ name: 'x', port: 80 }, { name: 'x', port: 81 }] }), /name: duplicate "x"/],
    [svc('a', { clusterIP: '10.96.0.1', ports: [{ name: 'x', port: 0 }] }), /port: invalid value 0/],
    [svc('a', { clusterIP: '10.96.0.1', ports: [{ name: 'x', port: 80, protocol: 'ICMP' as 'TCP' }] }), /protocol: invalid value "ICMP"/],
    [svc('a', { clusterIP: '10.96.0.1', type: 'NodePort', ports: [{ name: 'x', port: 80, nodePort: 70000 }] }), /nodePort: invalid value 70000/],
    [svc('a', { clusterIP: '10.96.0.1', affinity: 999999 }), /timeoutSeconds: invalid value 999999/],
    [svc('a', { clusterIP: '10.96.0.1', ports: [{ name: 'x', port: 80, targetPort: 'no_underscores' }] }), /targetPort: invalid value/],
    [svc('A_B', { clusterIP: '10.96.0.1' }), /invalid name "A_B"/],
    [svc('a', { clusterIPs: ['10.96.0.1', '10.96.0.2'] }), /two IPv4 addresses/],
  ];
  for (const [s, re] of cases) {
    const problems: Problem[] = [];
    t.same(servicePorts(s, problems), [], re.source);
    t.match(problems[0]?.reason, re);
  }
  // Headless and ExternalName: nothing to program, and not a problem.
  const problems: Problem[] = [];
  t.same(servicePorts(svc('h', { clusterIP: 'None' }), problems), []);
  t.same(servicePorts({ ...svc('e'), spec: { type: 'ExternalName', externalName: 'example.com' } }, problems), []);
  t.same(problems, []);
  // An invalid external IP drops only that IP.
  const ok = servicePorts(svc('x', { clusterIP: '10.96.0.1', externalIPs: ['1.2.3.4', 'nope'] }), problems);
  t.same(ok[0]?.externalIPs, ['1.2.3.4']);
  t.match(problems[0]?.reason, /externalIPs: invalid IP "nope" skipped/);
});

t.test('dual-stack services yield one port info per family', async (t) => {
  const ports = servicePorts(svc('d', { clusterIPs: ['10.96.0.1', 'fd00::1'], externalIPs: ['1.2.3.4', '2001:db8::1'] }), []);
  t.same(
    ports.map((p) => [p.family, p.clusterIP, p.externalIPs]),
    [
      [4, '10.96.0.1', ['1.2.3.4']],
      [6, 'fd00::1', ['2001:db8::1']],
    ],
  );
});

t.test('endpoints: named ports per slice, garbage skipped, duplicates merged, sorted', async (t) => {
  const s = svc('w', { clusterIP: '10.96.0.1', ports: [{ name: 'http', port: 80, targetPort: 'web' }] });
  const problems: Problem[] = [];
  const model = serviceModel(
    s,
    [
      slice('w', ['10.244.2.1', 'garbage', '10.244.1.1'], { name: 'w-1', ports: [{ name: 'http', port: 8080 }] }),
      slice('w', [{ ip: '10.244.1.1', ready: false }, '10.244.3.1'], { name: 'w-2', ports: [{ name: 'http', port: 9090 }] }),
      slice('w', ['10.244.9.9'], { name: 'w-3', ports: [{ name: 'other', port: 1 }] }),
      slice('other', ['10.244.8.8'], { name: 'x-1' }),
      slice('w', ['fd00::1'], { name: 'w-6' }),
    ],
    'node-a',
    problems,
  );
  t.same(
    model[0]!.endpoints.map((e) => `${e.ip}:${e.port}:${e.ready}`),
    ['10.244.1.1:8080:true', '10.244.1.1:9090:false', '10.244.2.1:8080:true', '10.244.3.1:9090:true'],
  );
  t.match(problems, [{ kind: 'EndpointSlice', key: 'default/w-1', reason: /addresses: invalid IPv4 address "garbage" skipped/ }]);
  // Numeric targetPort used when a slice has no port list.
  const info = servicePorts(svc('n', { clusterIP: '10.96.0.2', ports: [{ name: 'http', port: 80, targetPort: 8081 }] }), [])[0]!;
  const noPorts = { ...slice('n', ['10.244.1.2']), ports: [] };
  t.equal(endpointsFor(info, [noPorts], 'node-a', [])[0]?.port, 8081);
});

t.test('selection: ready, then serving+terminating; Local policies', async (t) => {
  const info = servicePorts(svc('p', { clusterIP: '10.96.0.1', type: 'NodePort', eTP: 'Local', iTP: 'Local', ports: [{ name: 'http', port: 80, nodePort: 30001 }] }), [])[0]!;
  const eps = endpointsFor(
    info,
    [
      slice('p', [
        { ip: '10.244.1.1', node: 'node-a', ready: false, serving: true, terminating: true },
        { ip: '10.244.2.1', node: 'node-b' },
      ], { ports: [{ name: 'http', port: 80 }] }),
    ],
    'node-a',
    [],
  );
  const sel = selectEndpoints({ info, endpoints: eps });
  t.same(sel.cluster.map((e) => e.ip), ['10.244.1.1'], 'local: the terminating local endpoint is the fallback');
  t.same(sel.external.map((e) => e.ip), ['10.244.1.1']);
  t.equal(sel.any, true);
});

t.test('stale UDP filters: removed endpoints per service address; 0 -> N clears the cluster IP', async (t) => {
  const info = servicePorts(svc('u', { clusterIP: '10.96.0.1', ports: [{ name: 'dns', protocol: 'UDP', port: 53 }] }), [])[0]!;
  const ep = (ip: string) => ({ ip, port: 53, ready: true, serving: true, terminating: false, local: false });
  t.same(staleUdpFilters([{ info, endpoints: [ep('10.244.1.1'), ep('10.244.2.1')] }], [{ info, endpoints: [ep('10.244.2.1')] }]), [
    { family: 4, proto: 'udp', origDst: '10.96.0.1', origDstPort: 53, replySrc: '10.244.1.1' },
  ]);
  t.same(staleUdpFilters([], [{ info, endpoints: [ep('10.244.2.1')] }]), [{ family: 4, proto: 'udp', origDst: '10.96.0.1', origDstPort: 53 }]);
  t.same(staleUdpFilters([{ info, endpoints: [ep('10.244.2.1')] }], []), [{ family: 4, proto: 'udp', origDst: '10.96.0.1', origDstPort: 53, replySrc: '10.244.2.1' }], 'service deleted');
});
