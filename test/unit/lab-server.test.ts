// The lab's built-in pod server tells the lab when it serves: the marker file appears only
// after every declared port is bound, and the lab waits for it before probing readiness.
import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitStarted } from '../../src/lab/pods.js';
import { ROOT } from '../../src/lab/agents.js';

const dir = mkdtempSync(join(tmpdir(), 'skiff-lab-server-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

t.test('waitStarted: true once every marker exists, false at the deadline', async (t) => {
  const a = join(dir, 'a.started');
  const b = join(dir, 'b.started');
  writeFileSync(a, '1\n');
  setTimeout(() => writeFileSync(b, '2\n'), 50);
  t.equal(await waitStarted([a, b], 5000), true);
  t.equal(await waitStarted([], 0), true, 'nothing to wait for');
  const t0 = Date.now();
  t.equal(await waitStarted([a, join(dir, 'never.started')], 100), false);
  t.ok(Date.now() - t0 >= 100, 'waited until the deadline');
});

t.test('server.js creates its marker after binding, and the bound port answers with the pod name', async (t) => {
  const marker = join(dir, 'srv.started');
  // An ephemeral port (0); the test connects over loopback only.
  const c = spawn(process.execPath, [join(ROOT, 'dist', 'src', 'lab', 'server.js'), 'ns/pod', 'tcp:0', 'udp:0', 'sctp:9'], {
    env: { ...process.env, SKIFF_LAB_STARTED: marker },
    stdio: 'ignore',
  });
  t.teardown(() => c.kill('SIGKILL'));
  t.equal(await waitStarted([marker], 10_000), true, 'marker appears');
  t.equal(readFileSync(marker, 'utf8').trim(), String(c.pid), 'holds the server pid');
  // Which port? Ask the kernel for the server's listening socket through /proc.
  const port = listeningPortOf(c.pid!);
  t.ok(port > 0, `listens on ${port}`);
  const answer = await new Promise<string>((res, rej) => {
    let d = '';
    const s = connect(port, '127.0.0.1');
    s.on('data', (x) => (d += x));
    s.on('end', () => res(d));
    s.on('error', rej);
  });
  t.equal(answer, 'ns/pod\n');
});

/** The TCP port in LISTEN state owned by a socket of the given process. */
function listeningPortOf(pid: number): number {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]!);
    } catch {
      /* closed meanwhile */
    }
  }
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of readFileSync(file, 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f[3] === '0A' && inodes.has(f[9]!)) return parseInt(f[1]!.split(':').pop()!, 16);
    }
  }
  return 0;
}
