// `skiff lab ...`: a multi-node cluster on this machine, made of network namespaces.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseLabFile, resolveSettings, type LabFile, type LabSettings } from './config.js';
import { addLabNode, apply, down, remove, removeLabNode, requireState, restartAgent, status, up, waitPeersUp, type LabStatus } from './manager.js';
import { labsOnDisk, loadState, type LabState } from './state.js';
import { existingLabs, LAB_PREFIX } from './topology.js';

const USAGE = `usage: skiff lab <command> [--name NAME] [flags]

  up [-f lab.yaml] [--nodes N]   create the lab (default: the demo in examples/lab.yaml)
  down                           remove everything the lab created
  status [--json]                nodes, agents, overlay peer health, pods, services
  apply -f FILE                  add or change objects in a running lab
  delete -f FILE                 remove objects from a running lab
  exec NS/POD -- CMD...          run a command in a pod's network namespace
  get nodes|pods|services|endpointslices [-n NS] [-o json|wide]
                                 kubectl-like tables; -o json prints a Kubernetes List
  probe NS/POD TARGET [--port P] [--protocol TCP|UDP|ICMP] [--timeout MS] [--json] [--dns]
                                 connect from inside the pod; TARGET: NS/POD, a service
                                 (svc, svc.ns, svc.ns.svc.cluster.local) or an IP; prints
                                 the answer or refused/timed out/unreachable (exit 1);
                                 --dns: resolve the name through the cluster DNS
  node add                       add a node (next free index, a new pod CIDR, its agent)
  node remove NAME               remove a node: its agent, pods and namespace
  node restart NAME              restart a node's agent (kernel state and traffic stay)
  matrix [--port P [--protocol TCP|UDP|SCTP] | --ports tcp/80,udp/81] [--namespaces x,y] [--json]
                                 reachability measured in the kernel vs the policy
                                 evaluator ("!" marks a difference; exit 1 if any)

--name defaults to the one lab that exists.
`;

const DEFAULT_LAB = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'examples', 'lab.yaml');

interface Args {
  cmd: string;
  name?: string;
  file?: string;
  nodes?: number;
  json: boolean;
  rest: string[];
  ports?: string;
  port?: string;
  protocol?: string;
  namespaces?: string;
}

function parse(argv: string[]): Args {
  const a: Args = { cmd: argv[0] ?? '', json: false, rest: [] };
  for (let i = 1; i < argv.length; i++) {
    const x = argv[i]!;
    const val = () => {
      const v = argv[++i];
      if (v === undefined) throw new UsageError(`flag ${x}: needs a value`);
      return v;
    };
    if (x === '--') {
      a.rest.push(...argv.slice(i + 1));
      break;
    } else if (x === '--name') a.name = val();
    else if (x === '-f' || x === '--file') a.file = val();
    else if (x === '--nodes') {
      const n = Number(val());
      if (!Number.isInteger(n) || n < 1 || n > 200) throw new UsageError(`flag --nodes: invalid value ${JSON.stringify(argv[i])} (an integer from 1 to 200)`);
      a.nodes = n;
    } else if (x === '--json' || x === '-o=json') a.json = true;
    else if (x === '--ports') a.ports = val();
    else if (x === '--port') a.port = val();
    else if (x === '--protocol') a.protocol = val();
    else if (x === '--namespaces') a.namespaces = val();
    else if (x.startsWith('-')) throw new UsageError(`unknown flag ${JSON.stringify(x)}`);
    else a.rest.push(x);
  }
  return a;
}

class UsageError extends Error {}

function loadFile(path: string): LabFile {
  return parseLabFile(readFileSync(path, 'utf8'), path);
}

/** The lab a command means: --name, else the only one that exists. */
function whichLab(name: string | undefined): string {
  if (name) return name;
  const labs = [...new Set([...labsOnDisk(), ...existingLabs(LAB_PREFIX)])];
  if (labs.length === 1) return labs[0]!;
  if (labs.length === 0) throw new UsageError('no lab is running (start one with skiff lab up)');
  throw new UsageError(`several labs exist (${labs.join(', ')}): pick one with --name`);
}

const progress = (msg: string) => process.stderr.write(`  ${msg}\n`);

function printStatus(st: LabStatus): void {
  const out: string[] = [`lab ${st.name}`, '', 'NODE      POD CIDR          UNDERLAY       AGENT    PEERS'];
  for (const n of st.nodes) {
    const peers = Object.entries(n.peers).map(([p, h]) => `${p}:${h.up ? 'up' : 'DOWN'}${h.rttSeconds !== undefined && h.up ? `(${(h.rttSeconds * 1000).toFixed(2)}ms)` : ''}`).join(' ') || '-';
    out.push(`${n.name.padEnd(9)} ${n.podCIDR.padEnd(17)} ${n.underlayIp.padEnd(14)} ${n.agent.padEnd(8)} ${peers}`);
  }
  for (const n of st.nodes) {
    for (const c of n.firewallDrops) out.push(`WARNING ${n.name}: host firewall chain "${c}" drops forwarded traffic by policy; pod traffic passes only if it accepts it (see docs/overlay.md)`);
  }
  out.push('', 'POD                                      NODE      IP              READY');
  for (const p of st.pods) out.push(`${p.key.padEnd(40)} ${p.node.padEnd(9)} ${(p.ip ?? '-').padEnd(15)} ${p.ready}`);
  if (st.services.length) {
    out.push('', 'SERVICE                                  CLUSTER-IP');
    for (const s of st.services) out.push(`${s.key.padEnd(40)} ${s.clusterIP}`);
  }
  process.stdout.write(out.join('\n') + '\n');
}

/**
 * What `up` ends with: the nodes (pod CIDRs), pods (IPs, nodes) and services
 * (ClusterIPs) as `lab get` prints them, overlay peer health, then the reachability
 * check (probes from inside pods). 1 when a probe failed.
 */
async function printUpSummary(s: LabState, st: LabStatus): Promise<number> {
  const { checkPassed, formatCheck, labViewOf, reachabilityCheck, serviceProxyActive } = await import('./inspect-cli.js');
  const { formatGet } = await import('./inspect.js');
  const view = labViewOf(s);
  const out: string[] = [`lab ${s.name}`, '', formatGet(view, 'nodes'), formatGet(view, 'pods')];
  if (view.services.length) out.push(formatGet(view, 'services'));
  const peers: string[] = [];
  for (const n of st.nodes) {
    const p = Object.entries(n.peers).map(([x, h]) => `${x} ${h.up ? 'up' : 'DOWN'}${h.up && h.rttSeconds !== undefined ? ` ${(h.rttSeconds * 1000).toFixed(2)} ms` : ''}`);
    peers.push(`  ${n.name}: ${n.agent === 'running' ? p.join(', ') || 'no peers' : 'agent stopped'}`);
    for (const c of n.firewallDrops) peers.push(`  WARNING ${n.name}: host firewall chain "${c}" drops forwarded traffic by policy; pod traffic passes only if it accepts it (see docs/overlay.md)`);
  }
  if (st.nodes.length > 1) out.push(`overlay peers (ICMP over VXLAN, from each node's agent)\n${peers.join('\n')}\n`);
  process.stdout.write(out.join('\n'));
  // Services are probed by name once a node runs the service proxy (its nftables table).
  const services = serviceProxyActive(s);
  const check = await reachabilityCheck(s, view, { services });
  if (check.length) process.stdout.write('\n' + formatCheck(check));
  if (!services && view.services.length) process.stdout.write('  (services not probed: no node runs the service proxy yet)\n');
  return check.every(checkPassed) ? 0 : 1;
}

export async function run(argv: string[]): Promise<number> {
  // get / probe have their own flags (src/lab/inspect.ts); loaded only when used.
  if (argv[0] === 'get' || argv[0] === 'probe') return (await import('./inspect-cli.js')).runInspect(argv, USAGE);
  let a: Args;
  try {
    a = parse(argv);
  } catch (e) {
    process.stderr.write(`skiff lab: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  try {
    switch (a.cmd) {
      case 'up': {
        const file = loadFile(a.file ?? DEFAULT_LAB);
        const flags: Partial<LabSettings> = {};
        if (a.name) flags.name = a.name;
        if (a.nodes) flags.nodes = a.nodes;
        const settings = resolveSettings(file.settings, flags);
        process.stderr.write(`skiff lab up: ${settings.name} (${settings.nodes} nodes)\n`);
        const s = await up(settings, file.objects, progress);
        progress('waiting for the overlay peers to answer');
        const st = await waitPeersUp(settings.name, 15_000);
        return printUpSummary(s, st);
      }
      case 'down': {
        const name = whichLab(a.name);
        await down(name, progress, loadState(name)?.prefix ?? LAB_PREFIX);
        process.stderr.write(`lab ${name} removed\n`);
        return 0;
      }
      case 'status': {
        const st = status(whichLab(a.name));
        if (a.json) process.stdout.write(JSON.stringify(st, null, 2) + '\n');
        else printStatus(st);
        return st.nodes.every((n) => n.agent === 'running') ? 0 : 1;
      }
      case 'apply':
      case 'delete': {
        if (!a.file) throw new UsageError(`${a.cmd}: -f FILE is required`);
        const s = requireState(whichLab(a.name));
        const f = loadFile(a.file);
        if (a.cmd === 'apply') await apply(s, f.objects, progress);
        else await remove(s, f.objects, progress);
        return 0;
      }
      case 'exec': {
        const target = a.rest[0];
        const cmd = a.rest.slice(1);
        if (!target || cmd.length === 0) throw new UsageError('exec: NS/POD -- CMD... is required');
        const s = requireState(whichLab(a.name));
        const key = target.includes('/') ? target : `default/${target}`;
        const p = s.pods[key];
        if (!p) throw new UsageError(`exec: no pod ${key} in lab ${s.name} (pods: ${Object.keys(s.pods).join(', ') || 'none'})`);
        const r = spawnSync('ip', ['netns', 'exec', p.netns, ...cmd], { stdio: 'inherit' });
        return r.status ?? 1;
      }
      case 'node': {
        const [sub, node] = a.rest;
        const s = requireState(whichLab(a.name));
        if (sub === 'add') {
          const n = await addLabNode(s, progress);
          process.stdout.write(`${n.name} ${n.podCIDR} ${n.underlayIp}\n`);
          return 0;
        }
        if ((sub === 'remove' || sub === 'restart') && node) {
          if (sub === 'remove') await removeLabNode(s, node, progress);
          else await restartAgent(s, node, progress);
          return 0;
        }
        throw new UsageError('node: add | remove NAME | restart NAME');
      }
      case 'matrix': {
        const s = requireState(whichLab(a.name));
        const { labMatrix, parseProbes } = await import('./matrix.js');
        let probes;
        try {
          // --port P [--protocol X] is the one-probe spelling of --ports X/P.
          if (a.protocol !== undefined && a.port === undefined) throw new Error(`--protocol: invalid value ${JSON.stringify(a.protocol)} without --port`);
          const spec = a.port !== undefined ? [a.ports, `${(a.protocol ?? 'tcp').toLowerCase()}/${a.port}`].filter(Boolean).join(',') : a.ports;
          probes = spec ? parseProbes(spec) : undefined;
        } catch (e) {
          throw new UsageError((e as Error).message);
        }
        const m = await labMatrix(s, { ...(probes ? { probes } : {}), ...(a.namespaces ? { namespaces: a.namespaces.split(',') } : {}) });
        process.stdout.write(a.json ? JSON.stringify({ pods: m.keys, cells: m.cells, mismatches: m.mismatches.length }, null, 2) + '\n' : m.text + '\n');
        return m.mismatches.length ? 1 : 0;
      }
      case '':
      case 'help':
      case '-h':
      case '--help':
        process.stdout.write(USAGE);
        return a.cmd === '' ? 2 : 0;
      default:
        throw new UsageError(`unknown command ${JSON.stringify(a.cmd)}`);
    }
  } catch (e) {
    process.stderr.write(`skiff lab ${a.cmd}: ${(e as Error).message}\n`);
    if (e instanceof UsageError) process.stderr.write(USAGE);
    return e instanceof UsageError ? 2 : 1;
  }
}
