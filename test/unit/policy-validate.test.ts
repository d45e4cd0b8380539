import t from 'tap';
import { checkPolicy, netContains, parseCidr, parseIp, portNameProblem, validatePolicy } from '../../src/policy/validate.js';

const pol = (spec: unknown) => ({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'p', namespace: 'x' }, spec });
const ingressFrom = (peer: unknown) => pol({ podSelector: {}, ingress: [{ from: [peer] }] });
const ingressPorts = (...ports: unknown[]) => pol({ podSelector: {}, ingress: [{ ports }] });

t.test('valid policies have no errors', async (t) => {
  const valid = [
    pol({ podSelector: {} }),
    pol({}),
    pol({ podSelector: {}, ingress: [] }),
    pol({ podSelector: {}, ingress: [{}] }),
    pol({ podSelector: {}, ingress: [{ from: [], ports: [] }] }),
    pol({ podSelector: { matchLabels: { pod: 'a' } }, policyTypes: ['Ingress', 'Egress'], egress: [{ to: [{ namespaceSelector: {}, podSelector: {} }] }] }),
    ingressFrom({ ipBlock: { cidr: '10.0.0.0/16', except: ['10.0.1.0/24', '10.0.2.5/32'] } }),
    ingressFrom({ ipBlock: { cidr: 'fd00::/64', except: ['fd00::/96'] } }),
    ingressFrom({ ipBlock: { cidr: '0.0.0.0/0' } }),
    ingressPorts({ port: 80 }, { protocol: 'UDP', port: 53 }, { protocol: 'SCTP' }, { port: 'http' }, { port: 32000, endPort: 32768 }, { port: 80, endPort: 80 }),
  ];
  for (const p of valid) t.same(validatePolicy(p), [], JSON.stringify(p.spec));
});

t.test('invalid policies: every reason names the field path and value', async (t) => {
  const cases: [string, unknown, string][] = [
    ['cidr not a CIDR', ingressFrom({ ipBlock: { cidr: '10.0.0.0' } }), 'spec.ingress[0].from[0].ipBlock.cidr: "10.0.0.0" is not a valid CIDR (expected address/prefix-length)'],
    ['cidr prefix too long', ingressFrom({ ipBlock: { cidr: '10.0.0.0/33' } }), 'spec.ingress[0].from[0].ipBlock.cidr: "10.0.0.0/33" is not a valid CIDR: prefix length 33 is out of range for IPv4 (0-32)'],
    ['cidr bad address', ingressFrom({ ipBlock: { cidr: '10.0.0.300/8' } }), 'spec.ingress[0].from[0].ipBlock.cidr: "10.0.0.300/8" is not a valid CIDR: "10.0.0.300" is not an IP address'],
    ['cidr missing', ingressFrom({ ipBlock: {} }), 'spec.ingress[0].from[0].ipBlock.cidr: required'],
    ['except outside cidr', pol({ podSelector: {}, ingress: [{ from: [{ podSelector: {} }, { ipBlock: { cidr: '10.0.0.0/16', except: ['10.1.0.0/16'] } }] }] }),
      'spec.ingress[0].from[1].ipBlock.except[0]: "10.1.0.0/16" is not inside cidr "10.0.0.0/16"'],
    ['except wider than cidr', ingressFrom({ ipBlock: { cidr: '10.0.0.0/16', except: ['10.0.0.0/8'] } }), 'spec.ingress[0].from[0].ipBlock.except[0]: "10.0.0.0/8" is not inside cidr "10.0.0.0/16"'],
    ['except equal to cidr', ingressFrom({ ipBlock: { cidr: '10.0.0.0/16', except: ['10.0.0.0/16'] } }),
      'spec.ingress[0].from[0].ipBlock.except[0]: "10.0.0.0/16" is not strictly inside cidr "10.0.0.0/16" (an except must be a strict subset of its cidr)'],
    ['except other family', ingressFrom({ ipBlock: { cidr: '10.0.0.0/8', except: ['fd00::/64'] } }), 'spec.ingress[0].from[0].ipBlock.except[0]: "fd00::/64" is IPv6 but cidr "10.0.0.0/8" is IPv4'],
    ['except invalid', ingressFrom({ ipBlock: { cidr: '10.0.0.0/8', except: ['nope'] } }), 'spec.ingress[0].from[0].ipBlock.except[0]: "nope" is not a valid CIDR (expected address/prefix-length)'],
    ['endPort without port', ingressPorts({ endPort: 90 }), 'spec.ingress[0].ports[0].endPort: 90 may not be specified without port'],
    ['endPort with named port', ingressPorts({ port: 'http', endPort: 90 }), 'spec.ingress[0].ports[0].endPort: 90 may not be specified when port is a named port ("http")'],
    ['endPort below port', ingressPorts({ port: 80, endPort: 79 }), 'spec.ingress[0].ports[0].endPort: 79 must be greater than or equal to port 80'],
    ['endPort out of range', ingressPorts({ port: 80, endPort: 70000 }), 'spec.ingress[0].ports[0].endPort: 70000 is not a valid port number (an integer 1-65535)'],
    ['port 0', ingressPorts({ port: 0 }), 'spec.ingress[0].ports[0].port: 0 is not a valid port number (an integer 1-65535)'],
    ['port too big', ingressPorts({ port: 65536 }), 'spec.ingress[0].ports[0].port: 65536 is not a valid port number (an integer 1-65535)'],
    ['port fractional', ingressPorts({ port: 80.5 }), 'spec.ingress[0].ports[0].port: 80.5 is not a valid port number (an integer 1-65535)'],
    ['numeric string port', ingressPorts({ port: '80' }), 'spec.ingress[0].ports[0].port: "80" is not a valid port name: must contain at least one letter (a numeric port must be given as a number, not a string)'],
    ['bad port name', ingressPorts({ port: 'HTTP' }), 'spec.ingress[0].ports[0].port: "HTTP" is not a valid port name: must contain only lowercase alphanumerics and "-"'],
    ['unknown protocol', ingressPorts({ protocol: 'ICMP', port: 1 }), 'spec.ingress[0].ports[0].protocol: unsupported protocol "ICMP" (TCP, UDP, SCTP)'],
    ['lowercase protocol', ingressPorts({ protocol: 'tcp', port: 1 }), 'spec.ingress[0].ports[0].protocol: unsupported protocol "tcp" (TCP, UDP, SCTP)'],
    ['unknown operator in peer', ingressFrom({ podSelector: { matchExpressions: [{ key: 'a', operator: 'Is', values: ['b'] }] } }),
      'spec.ingress[0].from[0].podSelector.matchExpressions[0].operator: unknown operator "Is" (In, NotIn, Exists, DoesNotExist)'],
    ['In without values in podSelector', pol({ podSelector: { matchExpressions: [{ key: 'a', operator: 'In' }] } }), 'spec.podSelector.matchExpressions[0].values: must be non-empty when operator is "In"'],
    ['bad policyType', pol({ podSelector: {}, policyTypes: ['Ingress', 'ingress'] }), 'spec.policyTypes[1]: unsupported policy type "ingress" (Ingress, Egress)'],
    ['too many policyTypes', pol({ podSelector: {}, policyTypes: ['Ingress', 'Egress', 'Ingress'] }), 'spec.policyTypes: may not specify more than two policyTypes, got ["Ingress","Egress","Ingress"]'],
    ['empty peer', ingressFrom({}), 'spec.ingress[0].from[0]: must specify a peer (podSelector, namespaceSelector or ipBlock)'],
    ['ipBlock with podSelector', ingressFrom({ podSelector: {}, ipBlock: { cidr: '10.0.0.0/8' } }), 'spec.ingress[0].from[0]: may not specify both ipBlock and another peer'],
    ['egress paths use to', pol({ podSelector: {}, egress: [{ to: [{ ipBlock: { cidr: '10.0.0.0/8', except: ['11.0.0.0/16'] } }] }] }), 'spec.egress[0].to[0].ipBlock.except[0]: "11.0.0.0/16" is not inside cidr "10.0.0.0/8"'],
    ['from not a list', pol({ podSelector: {}, ingress: [{ from: {} }] }), 'spec.ingress[0].from: must be a list, got {}'],
    ['ingress not a list', pol({ podSelector: {}, ingress: {} }), 'spec.ingress: must be a list of rules, got {}'],
    ['missing spec', { metadata: { name: 'p' } }, 'spec: required'],
    ['missing name', { metadata: {}, spec: {} }, 'metadata.name: required'],
    ['typo in rule field', pol({ podSelector: {}, ingress: [{ form: [] }] }), 'spec.ingress[0]: unknown field "form" (from, ports)'],
  ];
  for (const [name, p, want] of cases) {
    const errors = validatePolicy(p);
    t.ok(errors.includes(want), `${name}: expected ${JSON.stringify(want)}, got ${JSON.stringify(errors)}`);
  }
});

t.test('host bits are accepted with a warning and masked', async (t) => {
  const r = checkPolicy(ingressFrom({ ipBlock: { cidr: '10.0.0.1/8', except: ['10.1.2.3/16'] } }));
  t.same(r.errors, []);
  t.same(r.warnings, [
    'spec.ingress[0].from[0].ipBlock.cidr: "10.0.0.1/8" has host bits set; it is treated as "10.0.0.0/8"',
    'spec.ingress[0].from[0].ipBlock.except[0]: "10.1.2.3/16" has host bits set; it is treated as "10.1.0.0/16"',
  ]);
  const c = parseCidr('fd00::1:2/112');
  t.ok(typeof c !== 'string' && c.hostBits && c.net.text === 'fd00::1:0/112');
});

t.test('rules ignored by policyTypes are warned about', async (t) => {
  const r = checkPolicy(pol({ podSelector: {}, policyTypes: ['Egress'], ingress: [{}] }));
  t.same(r.errors, []);
  t.same(r.warnings, ['spec.ingress: ignored: policyTypes does not include "Ingress"']);
});

t.test('CIDR helpers', async (t) => {
  const v4 = parseCidr('10.1.0.0/16');
  if (typeof v4 === 'string') throw new Error(v4);
  const ip = (s: string) => parseIp(s)!;
  t.ok(netContains(v4.net, 4, ip('10.1.255.255').bytes));
  t.notOk(netContains(v4.net, 4, ip('10.2.0.0').bytes));
  t.notOk(netContains(v4.net, 6, ip('::a01:0').bytes), 'other family never matches');
  const all = parseCidr('0.0.0.0/0');
  t.ok(typeof all !== 'string' && netContains(all.net, 4, ip('203.0.113.9').bytes));
  const v6 = parseCidr('fd00:0:0:1::/64');
  t.ok(typeof v6 !== 'string' && netContains(v6.net, 6, ip('fd00:0:0:1:ffff::5').bytes));
  t.equal(parseCidr('010.0.0.0/8'), 'is not a valid CIDR: "010.0.0.0" is not an IP address', 'leading zeros are ambiguous (octal?) and refused');
  t.equal(parseCidr('fe80::1%eth0/64'), 'is not a valid CIDR: "fe80::1%eth0" is not an IP address');
  t.equal(parseCidr('10.0.0.0/08'), 'is not a valid CIDR: the prefix length has a leading zero');
  t.equal(portNameProblem('http'), undefined);
  t.match(portNameProblem('a--b'), /consecutive/);
  t.match(portNameProblem('sixteen-chars-xx'), /15/);
});
