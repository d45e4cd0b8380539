// `dig` against the real `skiff dns` process on 127.0.0.1 (a manifest directory with
// the unit tests' fixture), for a table of cases; UDP truncation and dig's TCP retry;
// and forwarding to a real upstream: our own knotd on loopback serving example.com,
// with positive and negative answers cached (they outlive the upstream's death, with
// decremented TTLs). No root needed; skips without dig or knotd.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { fixture } from '../helpers/dns.js';

const MAIN = join(dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');
const have = (tool: string) => spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;
const missing = ['dig', 'knotd'].filter((x) => !have(x));

interface Dig {
  status: string;
  flags: string[];
  question: string;
  answer: string[];
  authority: string[];
  additional: string[];
  raw: string;
}

/** Runs dig and parses its sections ("name ttl class type data" lines, whitespace-normalised). */
function dig(port: number, args: string[]): Dig {
  const r = spawnSync('dig', ['@127.0.0.1', '-p', String(port), '+time=2', '+tries=1', '+nocookie', ...args], { encoding: 'utf8' });
  const out = r.stdout;
  const d: Dig = { status: '', flags: [], question: '', answer: [], authority: [], additional: [], raw: out };
  const h = /status: (\w+)/.exec(out);
  d.status = h?.[1] ?? `no answer (${r.stderr.trim() || out.trim().split('\n').pop()})`;
  const f = /;; flags: ([^;]*);/.exec(out);
  d.flags = f ? f[1]!.trim().split(/\s+/) : [];
  let section = '';
  for (const line of out.split('\n')) {
    const m = /^;; (\w+) SECTION:/.exec(line);
    if (m) {
      section = m[1]!;
      continue;
    }
    if (!line.trim()) {
      section = section === 'QUESTION' ? '' : section;
      continue;
    }
    if (line.startsWith(';;')) continue;
    if (section === 'QUESTION') d.question = line.replace(/^;/, '').trim().split(/\s+/)[0]!;
    const norm = line.trim().split(/\s+/).join(' ');
    if (section === 'ANSWER') d.answer.push(norm);
    else if (section === 'AUTHORITY') d.authority.push(norm);
    else if (section === 'ADDITIONAL' && !line.startsWith(';')) d.additional.push(norm);
  }
  return d;
}

/** "name type data" without the TTL and class, sorted. */
const short = (rrs: string[]) => rrs.map((r) => { const p = r.split(' '); return [p[0], p[3], ...p.slice(4)].join(' '); }).sort();

function waitFor(check: () => boolean, what: string, ms = 15000): Promise<void> {
  const until = Date.now() + ms;
  return new Promise((resolve, reject) => {
    const tick = () => {
      if (check()) return resolve();
      if (Date.now() > until) return reject(new Error(`timed out waiting for ${what}`));
      setTimeout(tick, 100);
    };
    tick();
  });
}

/** A port nothing listens on (TCP; knotd and the HTTP server bind it right after). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

async function stopProc(c: ChildProcess | null): Promise<void> {
  if (!c || c.exitCode !== null || c.signalCode !== null) return;
  const done = new Promise<void>((r) => c.once('exit', () => r()));
  c.kill('SIGTERM');
  await Promise.race([done, new Promise((r) => setTimeout(r, 3000))]);
  if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
}

t.test('dig against skiff dns', { skip: missing.length ? `needs ${missing.join(', ')}` : false }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'skt-dn-dig-'));
  const manifests = join(dir, 'manifests');
  mkdirSync(manifests);
  writeFileSync(join(manifests, 'fixture.json'), JSON.stringify({ apiVersion: 'v1', kind: 'List', items: fixture() }));
  // Ports the kernel picks, not ones derived from the pid: a fixed port may be another
  // test's (CI runs two files at once, all as root), and before the fast path made its
  // port exclusive, such a neighbour silently got a share of the queries (docs/dns.md).
  const knotPort = await freePort();
  const httpPort = await freePort();
  // The upstream: knotd serving example.com (www A, big-ttl A, NXDOMAIN for the rest).
  const kdir = join(dir, 'knot');
  mkdirSync(kdir);
  writeFileSync(join(kdir, 'example.com.zone'), [
    '$ORIGIN example.com.', '$TTL 100',
    '@ SOA ns.example.com. hostmaster.example.com. 1 7200 1800 86400 20', '@ NS ns.example.com.', 'ns A 127.0.0.1',
    'www A 93.184.216.34', 'www AAAA 2606:2800:220:1::1', 'alias CNAME www', '',
  ].join('\n'));
  writeFileSync(join(kdir, 'knot.conf'), [
    'server:', `    rundir: ${kdir}`, `    listen: 127.0.0.1@${knotPort}`, '    udp-workers: 1', '    tcp-workers: 1', '    background-workers: 1',
    'database:', `    storage: ${kdir}`, 'log:', '  - target: stderr', '    any: warning',
    'zone:', '  - domain: example.com', `    file: ${join(kdir, 'example.com.zone')}`, '    journal-content: none', '    zonefile-sync: -1', '',
  ].join('\n'));
  let knot: ChildProcess | null = spawn('knotd', ['-c', join(kdir, 'knot.conf')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let knotErr = '';
  knot.stderr!.on('data', (d: Buffer) => (knotErr += d.toString()));
  const skiff = spawn(process.execPath, [MAIN, 'dns', '--manifests', manifests, '--listen', '127.0.0.1:0',
    '--upstream', `127.0.0.1:${knotPort}`, '--reverse', '10.96.0.0/16', '--http', `127.0.0.1:${httpPort}`], { stdio: ['ignore', 'ignore', 'pipe'] });
  let skiffErr = '';
  skiff.stderr!.on('data', (d: Buffer) => (skiffErr += d.toString()));
  // The port skiff was given, from its "dns server listening" log line.
  let port = 0;
  await waitFor(() => {
    port = Number(/"msg":"dns server listening","listen":"127\.0\.0\.1:(\d+)"/.exec(skiffErr)?.[1] ?? 0);
    return port > 0 || skiff.exitCode !== null;
  }, 'skiff dns to listen');
  if (!port) throw new Error(`skiff dns did not start: ${skiffErr.slice(-400)}`);
  t.teardown(async () => {
    await stopProc(skiff);
    await stopProc(knot);
    rmSync(dir, { recursive: true, force: true });
  });
  await waitFor(() => dig(knotPort, ['www.example.com']).status === 'NOERROR', `knotd (${knotErr})`);
  await waitFor(() => dig(port, ['web.prod.svc.cluster.local']).status === 'NOERROR', `skiff dns (${skiffErr.slice(-400)})`);

  t.test('the cluster zone, case by case', async (t) => {
    const cases: { q: string[]; status: string; answer?: string[]; authority?: RegExp; additional?: string[]; aa?: boolean }[] = [
      { q: ['web.prod.svc.cluster.local'], status: 'NOERROR', answer: ['web.prod.svc.cluster.local. A 10.96.0.10'], aa: true },
      { q: ['dual.prod.svc.cluster.local', 'AAAA'], status: 'NOERROR', answer: ['dual.prod.svc.cluster.local. AAAA fd00::11'] },
      { q: ['hl.prod.svc.cluster.local'], status: 'NOERROR', answer: ['hl.prod.svc.cluster.local. A 10.244.1.5', 'hl.prod.svc.cluster.local. A 10.244.1.6'] },
      { q: ['web-0.hl.prod.svc.cluster.local'], status: 'NOERROR', answer: ['web-0.hl.prod.svc.cluster.local. A 10.244.1.5'] },
      { q: ['10-244-1-6.hl.prod.svc.cluster.local'], status: 'NOERROR', answer: ['10-244-1-6.hl.prod.svc.cluster.local. A 10.244.1.6'] },
      { q: ['hlnr.prod.svc.cluster.local'], status: 'NOERROR', answer: ['hlnr.prod.svc.cluster.local. A 10.244.2.9'] },
      { q: ['notready.prod.svc.cluster.local'], status: 'NXDOMAIN', authority: /^cluster\.local\. 5 IN SOA ns\.dns\.cluster\.local\. hostmaster\.cluster\.local\. \d+ 7200 1800 86400 5$/ },
      { q: ['empty.prod.svc.cluster.local'], status: 'NXDOMAIN' },
      { q: ['nope.prod.svc.cluster.local'], status: 'NXDOMAIN', authority: /SOA/ },
      { q: ['web.prod.svc.cluster.local', 'MX'], status: 'NOERROR', answer: [], authority: /SOA/ },
      { q: ['prod.svc.cluster.local'], status: 'NOERROR', answer: [], authority: /SOA/ },
      { q: ['svc.cluster.local'], status: 'NOERROR', answer: [] },
      { q: ['nosuchns.svc.cluster.local'], status: 'NXDOMAIN' },
      {
        q: ['_http._tcp.web.prod.svc.cluster.local', 'SRV'], status: 'NOERROR',
        answer: ['_http._tcp.web.prod.svc.cluster.local. SRV 0 100 80 web.prod.svc.cluster.local.'],
        additional: ['web.prod.svc.cluster.local. A 10.96.0.10'],
      },
      {
        q: ['_http._tcp.hl.prod.svc.cluster.local', 'SRV'], status: 'NOERROR',
        answer: ['_http._tcp.hl.prod.svc.cluster.local. SRV 0 50 8080 10-244-1-6.hl.prod.svc.cluster.local.', '_http._tcp.hl.prod.svc.cluster.local. SRV 0 50 8080 web-0.hl.prod.svc.cluster.local.'],
        additional: ['10-244-1-6.hl.prod.svc.cluster.local. A 10.244.1.6', 'web-0.hl.prod.svc.cluster.local. A 10.244.1.5'],
      },
      { q: ['_dns._udp.web.prod.svc.cluster.local', 'SRV'], status: 'NOERROR', answer: ['_dns._udp.web.prod.svc.cluster.local. SRV 0 100 53 web.prod.svc.cluster.local.'] },
      { q: ['-x', '10.96.0.10'], status: 'NOERROR', answer: ['10.0.96.10.in-addr.arpa. PTR web.prod.svc.cluster.local.'] },
      { q: ['-x', '10.244.1.5'], status: 'NOERROR', answer: ['5.1.244.10.in-addr.arpa. PTR web-0.hl.prod.svc.cluster.local.'] },
      { q: ['-x', '10.96.9.9'], status: 'NXDOMAIN' },
      { q: ['dns-version.cluster.local', 'TXT'], status: 'NOERROR', answer: ['dns-version.cluster.local. TXT "1.1.0"'] },
      { q: ['ext.prod.svc.cluster.local'], status: 'NOERROR', answer: ['ext.prod.svc.cluster.local. CNAME web.prod.svc.cluster.local.', 'web.prod.svc.cluster.local. A 10.96.0.10'] },
      { q: ['10-244-1-5.prod.pod.cluster.local'], status: 'NOERROR', answer: ['10-244-1-5.prod.pod.cluster.local. A 10.244.1.5'] },
      { q: ['cluster.local', 'NS'], status: 'NOERROR', answer: ['cluster.local. NS ns.dns.cluster.local.'] },
    ];
    for (const c of cases) {
      // Twice: the second answer comes from the fast path's cache and must be the same.
      for (const round of [1, 2]) {
        const d = dig(port, ['+norecurse', ...c.q]);
        const what = `${c.q.join(' ')} (#${round})`;
        t.equal(d.status, c.status, `${what}: ${c.status}`);
        if (c.answer) t.same(short(d.answer), [...c.answer].sort(), `${what}: answer`);
        if (c.authority) t.match(d.authority.join('\n'), c.authority, `${what}: authority`);
        if (c.additional) t.same(short(d.additional.filter((x) => !x.includes(' OPT '))), [...c.additional].sort(), `${what}: additional`);
        if (c.aa) t.ok(d.flags.includes('aa'), `${what}: authoritative`);
        if (c.answer?.length) t.ok(d.answer.every((r) => r.split(' ')[1] === '5'), `${what}: TTL 5`);
      }
    }
  });

  t.test('zone transfers are refused', async (t) => {
    t.match(dig(port, ['cluster.local', 'AXFR']).raw, /Transfer failed|REFUSED/);
  });

  t.test('the question\'s case is echoed', async (t) => {
    for (const round of [1, 2]) {
      const d = dig(port, ['WeB.pRoD.SvC.ClUsTeR.lOcAl']);
      t.equal(d.question, 'WeB.pRoD.SvC.ClUsTeR.lOcAl.', `question echoed (#${round})`);
      t.equal(d.answer[0]?.split(' ')[0], 'WeB.pRoD.SvC.ClUsTeR.lOcAl.', 'the answer\'s owner too');
    }
  });

  t.test('truncation and TCP fallback', async (t) => {
    // 100 A records: 1,616 bytes.
    const udp512 = dig(port, ['+ignore', '+noedns', 'big.prod.svc.cluster.local']);
    t.ok(udp512.flags.includes('tc'), 'TC over UDP without EDNS');
    t.ok(udp512.answer.length < 100 && udp512.answer.length > 0, `a prefix of whole records (${udp512.answer.length})`);
    const udp1232 = dig(port, ['+ignore', '+bufsize=4096', 'big.prod.svc.cluster.local']);
    t.ok(udp1232.flags.includes('tc'), 'TC with EDNS 4096 too (answers are capped at 1232 bytes)');
    t.ok(udp1232.answer.length > udp512.answer.length, `more records with EDNS (${udp1232.answer.length})`);
    const retry = dig(port, ['big.prod.svc.cluster.local']);
    t.equal(retry.answer.length, 100, 'dig retries over TCP and gets all 100');
    t.match(retry.raw, /\(TCP\)/, 'over TCP');
    const tcp = dig(port, ['+tcp', '_http._tcp.hl.prod.svc.cluster.local', 'SRV']);
    t.equal(tcp.answer.length, 2, 'SRV over TCP');
    const small = dig(port, ['+ignore', '+notcp', 'web.prod.svc.cluster.local']);
    t.notOk(small.flags.includes('tc'), 'no TC when it fits');
  });

  t.test('forwarding to knotd, and the cache', async (t) => {
    const scrape = async () => (await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text());
    const counter = (text: string, re: RegExp) => Number(re.exec(text)?.[1] ?? 0);
    const m0 = await scrape();
    const a = dig(port, ['www.example.com']);
    t.equal(a.status, 'NOERROR');
    t.same(short(a.answer), ['www.example.com. A 93.184.216.34'], 'answer from the upstream');
    t.ok(a.flags.includes('ra') && !a.flags.includes('aa'), 'recursion available, not authoritative');
    const six = dig(port, ['www.example.com', 'AAAA']);
    t.same(short(six.answer), ['www.example.com. AAAA 2606:2800:220:1::1']);
    const cname = dig(port, ['alias.example.com']);
    t.same(short(cname.answer), ['alias.example.com. CNAME www.example.com.', 'www.example.com. A 93.184.216.34'], 'CNAME chain from upstream');
    const nx = dig(port, ['nothing.example.com']);
    t.equal(nx.status, 'NXDOMAIN', 'upstream NXDOMAIN passed on');
    t.match(nx.authority.join('\n'), /^example\.com\. \d+ IN SOA/, 'with its SOA');
    const ext = dig(port, ['ext2.prod.svc.cluster.local']);
    t.same(short(ext.answer), ['ext2.prod.svc.cluster.local. CNAME www.example.com.', 'www.example.com. A 93.184.216.34'], 'ExternalName out of the zone: CNAME plus the target from upstream');
    await new Promise((r) => setTimeout(r, 1100));
    const m1 = await scrape();
    const hitsBefore = counter(m1, /coredns_cache_hits_total\{[^}]*type="success"\} (\d+)/);
    const denialBefore = counter(m1, /coredns_cache_hits_total\{[^}]*type="denial"\} (\d+)/);
    t.ok(counter(m1, /coredns_forward_requests_total\{to="127\.0\.0\.1:\d+"\} (\d+)/) > counter(m0, /coredns_forward_requests_total\{to="127\.0\.0\.1:\d+"\} (\d+)/), 'forward requests counted');
    // The upstream dies: cached answers are still served, with TTLs counting down.
    await stopProc(knot);
    knot = null;
    const again = dig(port, ['www.example.com']);
    t.same(short(again.answer), ['www.example.com. A 93.184.216.34'], 'served from the cache');
    const ttl = Number(again.answer[0]!.split(' ')[1]);
    t.ok(ttl < 100 && ttl >= 95, `TTL decremented (${ttl})`);
    t.equal(dig(port, ['nothing.example.com']).status, 'NXDOMAIN', 'negative answer from the cache');
    const m2 = await scrape();
    t.ok(counter(m2, /coredns_cache_hits_total\{[^}]*type="success"\} (\d+)/) > hitsBefore, 'cache hit counted');
    t.ok(counter(m2, /coredns_cache_hits_total\{[^}]*type="denial"\} (\d+)/) > denialBefore, 'denial hit counted');
    t.equal(dig(port, ['+time=8', 'uncached.example.com']).status, 'SERVFAIL', 'an uncached name with the upstream gone: SERVFAIL');
    t.equal(dig(port, ['web.prod.svc.cluster.local']).status, 'NOERROR', 'the zone is unaffected');
  });
});
