// skiff-cni against the real kernel: a node namespace runs the plugin, pods are
// namespaces of their own. Everything lives in skt-* namespaces removed at exit.
import t from 'tap';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { closeSync, constants, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { delNetns, makeNetns, nsExec, requireRoot } from '../helpers/netns.js';
import { bridgeConf, CNI_PATH, PLUGIN, runPlugin } from '../helpers/cni.js';
import { hostVethName } from '../../src/bridge/bridge.js';
import { Netlink } from '../../src/os/netlink.js';

if (requireRoot(t)) {
  const node = makeNetns('node');
  const dataDir = mkdtempSync(join(tmpdir(), 'skt-ipam-'));
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
  const conf = bridgeConf({ dataDir, ipMasq: true });
  const reservations = () => readdirSync(join(dataDir, 'sktnet')).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f));
  const call = (command: string, cid: string, pod: { path: string } | undefined, c: unknown = conf, extra: Record<string, string> = {}) =>
    runPlugin({ command, containerId: cid, ifname: 'eth0', ...(pod ? { netns: pod.path } : {}), nodeNs: node.name, args: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p', ...extra }, c);

  t.test('VERSION lists every supported version', async (t) => {
    const r = await runPlugin({ command: 'VERSION' }, '{"cniVersion":"1.1.0"}');
    t.equal(r.code, 0, r.stdout + r.stderr);
    t.same(r.json.supportedVersions, ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0']);
  });

  t.test('ADD attaches a pod that reaches its gateway; CHECK; DEL is idempotent', async (t) => {
    const pod = makeNetns('pod');
    const add = await call('ADD', 'c1', pod);
    t.equal(add.code, 0, add.stdout + add.stderr);
    const res = add.json;
    t.equal(res.cniVersion, '1.0.0');
    t.equal(res.interfaces.length, 3, 'bridge, host veth, pod veth');
    t.equal(res.interfaces[0].name, 'cni0');
    t.equal(res.interfaces[2].name, 'eth0');
    t.equal(res.interfaces[2].sandbox, pod.path);
    t.match(res.interfaces[2].mac, /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
    t.equal(res.ips[0].interface, 2);
    t.match(res.ips[0].address, /^10\.88\.0\.\d+\/24$/);
    t.equal(res.ips[0].gateway, '10.88.0.1');
    t.notOk('version' in res.ips[0], 'no ips[].version in 1.0.0');
    // Real traffic: the pod pings its gateway on the bridge.
    const ping = nsExec(pod.name, ['ping', '-c', '1', '-W', '2', '10.88.0.1']);
    t.match(ping, /1 received/);
    t.match(nsExec(pod.name, ['ip', '-o', 'link', 'show', 'lo']), /UP/, 'lo is up in the pod');
    t.match(nsExec(node.name, ['ip', '-d', 'link', 'show', res.interfaces[1].name]), /hairpin on/);
    t.match(nsExec(node.name, ['nft', 'list', 'set', 'inet', 'skiff_cni', 'pods4_sktnet']), new RegExp(res.ips[0].address.split('/')[0]));

    const check = await call('CHECK', 'c1', pod, { ...conf, prevResult: res });
    t.equal(check.code, 0, 'CHECK passes: ' + check.stdout);
    t.equal(check.stdout.trim(), '', 'CHECK prints nothing on success');

    nsExec(pod.name, ['ip', 'addr', 'del', res.ips[0].address, 'dev', 'eth0']);
    const bad = await call('CHECK', 'c1', pod, { ...conf, prevResult: res });
    t.not(bad.code, 0, 'CHECK fails once the address is gone');
    t.match(bad.json.msg, /address .* is missing/);

    const del = await call('DEL', 'c1', pod, { ...conf, prevResult: res });
    t.equal(del.code, 0, del.stdout);
    t.same(reservations(), [], 'address released');
    t.throws(() => nsExec(node.name, ['ip', 'link', 'show', res.interfaces[1].name]), 'host veth gone');
    t.notMatch(nsExec(node.name, ['nft', 'list', 'set', 'inet', 'skiff_cni', 'pods4_sktnet']), new RegExp(res.ips[0].address.split('/')[0] + '\\b'));
    const again = await call('DEL', 'c1', pod);
    t.equal(again.code, 0, 'DEL again succeeds');
  });

  t.test('DEL after the namespace is gone still releases the IP and the host veth', async (t) => {
    const pod = makeNetns('pod');
    const add = await call('ADD', 'c-gone', pod);
    t.equal(add.code, 0, add.stdout);
    delNetns(pod.name);
    const del = await call('DEL', 'c-gone', pod);
    t.equal(del.code, 0, del.stdout);
    t.same(reservations(), []);
    t.throws(() => nsExec(node.name, ['ip', 'link', 'show', add.json.interfaces[1].name]));
  });

  t.test('ADD refuses an interface that already exists, and changes nothing', async (t) => {
    const pod = makeNetns('pod');
    t.equal((await call('ADD', 'c-dup1', pod)).code, 0);
    const before = reservations().length;
    const dup = await call('ADD', 'c-dup2', pod);
    t.equal(dup.code, 1);
    t.equal(dup.json.code, 4);
    t.match(dup.json.msg, /eth0.*already exists/);
    t.equal(reservations().length, before, 'no address leaked by the failed ADD');
    await call('DEL', 'c-dup1', pod);
  });

  t.test('a stale host veth of an earlier attempt is replaced', async (t) => {
    const pod = makeNetns('pod');
    const name = hostVethName('c-stale', 'eth0');
    nsExec(node.name, ['ip', 'link', 'add', name, 'type', 'veth', 'peer', 'name', 'sktstale']);
    const add = await call('ADD', 'c-stale', pod);
    t.equal(add.code, 0, add.stdout);
    t.equal(add.json.interfaces[1].name, name);
    t.throws(() => nsExec(node.name, ['ip', 'link', 'show', 'sktstale']), 'the old pair is gone');
    t.match(nsExec(pod.name, ['ip', '-o', 'link', 'show', 'eth0']), /UP/, 'the new peer is in the pod');
    t.match(nsExec(node.name, ['ip', '-o', 'link', 'show', name]), /master cni0/);
    t.equal((await call('DEL', 'c-stale', pod)).code, 0);
  });

  t.test('bad input gets the spec error JSON and changes nothing', async (t) => {
    const pod = makeNetns('pod');
    const cases: [string, unknown, Record<string, string>, number, RegExp][] = [
      ['malformed JSON', '{"cniVersion": ', {}, 6, /./],
      ['unsupported version', { ...conf, cniVersion: '9.9.9' }, {}, 1, /9\.9\.9/],
      ['bad container id', conf, { containerId: '-bad' }, 4, /CNI_CONTAINERID/],
      ['netns not a namespace', conf, { netns: '/etc/hostname' }, 4, /CNI_NETNS/],
      ['netns missing', conf, { netns: '/var/run/netns/skt-does-not-exist' }, 4, /CNI_NETNS/],
      ['host bits set', bridgeConf({ dataDir, subnet: '10.88.0.5/24' }), {}, 7, /host bits/],
      ['/32 subnet', bridgeConf({ dataDir, subnet: '10.88.0.0/32' }), {}, 7, /subnet/],
      ['hairpin with promisc', { ...conf, promiscMode: true }, {}, 7, /hairpinMode|promiscMode/],
      ['unknown ipam type', { ...conf, ipam: { type: 'no-such-ipam' } }, {}, 7, /no-such-ipam/],
    ];
    for (const [name, c, over, code, msg] of cases) {
      const r = await runPlugin(
        { command: 'ADD', containerId: over.containerId ?? 'cbad', netns: over.netns ?? pod.path, ifname: 'eth0', nodeNs: node.name },
        c,
      );
      t.equal(r.code, 1, `${name}: exit code`);
      t.equal(r.json?.code, code, `${name}: error code (${r.stdout.trim()})`);
      t.match(r.json?.msg, msg, `${name}: message names the field`);
    }
    t.same(reservations(), [], 'nothing reserved');
    t.throws(() => nsExec(pod.name, ['ip', 'link', 'show', 'eth0']), 'no interface created');
  });

  t.test('results in every supported version', async (t) => {
    for (const v of ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0']) {
      const pod = makeNetns('pod');
      const c = { ...conf, cniVersion: v };
      const r = await call('ADD', `cv${v.replace(/\./g, '')}`, pod, c);
      t.equal(r.code, 0, `${v}: ${r.stdout}`);
      t.equal(r.json.cniVersion, v);
      if (v.startsWith('0.')) t.equal(r.json.ips[0].version, '4', `${v}: ips[].version`);
      else t.notOk('version' in r.json.ips[0], `${v}: no ips[].version`);
      t.equal((await call('DEL', `cv${v.replace(/\./g, '')}`, pod, c)).code, 0);
      delNetns(pod.name);
    }
  });

  t.test('GC removes every attachment not in the valid list', async (t) => {
    const pods = [makeNetns('pod'), makeNetns('pod'), makeNetns('pod')];
    const results: any[] = [];
    for (const [i, p] of pods.entries()) results.push((await call('ADD', `gc${i}`, p)).json);
    t.equal(reservations().length, 3);
    const gc = await runPlugin(
      { command: 'GC', nodeNs: node.name },
      { ...conf, cniVersion: '1.1.0', 'cni.dev/valid-attachments': [{ containerID: 'gc1', ifname: 'eth0' }] },
    );
    t.equal(gc.code, 0, gc.stdout);
    t.same(reservations(), [results[1].ips[0].address.split('/')[0]], 'only the valid reservation remains');
    t.throws(() => nsExec(node.name, ['ip', 'link', 'show', results[0].interfaces[1].name]), 'stale host veth removed');
    t.match(nsExec(node.name, ['ip', 'link', 'show', results[1].interfaces[1].name]), /UP/, 'valid veth kept');
    const set = nsExec(node.name, ['nft', 'list', 'set', 'inet', 'skiff_cni', 'pods4_sktnet']);
    t.notMatch(set, /gc0\/eth0/);
    t.match(set, /gc1\/eth0/);
    // The older key name works too.
    const gc2 = await runPlugin({ command: 'GC', nodeNs: node.name }, { ...conf, cniVersion: '1.1.0', 'cni.dev/attachments': [] });
    t.equal(gc2.code, 0);
    t.same(reservations(), []);
    for (const p of pods) await call('DEL', 'gcx', p);
  });

  t.test('STATUS is 0 when ADD would work, 50 when the range is exhausted', async (t) => {
    const small = bridgeConf({ name: 'tiny', dataDir, subnet: '10.89.0.0/30', bridge: 'cni1', cniVersion: '1.1.0' });
    const ok = await runPlugin({ command: 'STATUS', nodeNs: node.name }, small);
    t.equal(ok.code, 0, ok.stdout);
    const pod = makeNetns('pod');
    t.equal((await call('ADD', 'tiny1', pod, small)).code, 0, 'the one usable address');
    const st = await runPlugin({ command: 'STATUS', nodeNs: node.name }, small);
    t.equal(st.code, 1);
    t.equal(st.json.code, 50);
    t.match(st.json.msg, /no IP addresses available|exhausted/);
    await call('DEL', 'tiny1', pod, small);
  });

  t.test('32 concurrent ADDs get 32 distinct addresses and one bridge', async (t) => {
    const pods = Array.from({ length: 32 }, () => makeNetns('pc'));
    const fresh = bridgeConf({ name: 'race', dataDir, subnet: '10.90.0.0/24', bridge: 'cnirace' });
    const results = await Promise.all(pods.map((p, i) => call('ADD', `race${i}`, p, fresh)));
    for (const r of results) t.equal(r.code, 0, r.stdout);
    const addrs = new Set(results.map((r) => r.json.ips[0].address));
    t.equal(addrs.size, 32, 'distinct addresses');
    const bridges = nsExec(node.name, ['ip', '-o', 'link', 'show', 'type', 'bridge']).split('\n').filter((l) => l.includes('cnirace'));
    t.equal(bridges.length, 1, 'one bridge');
    await Promise.all(pods.map((p, i) => call('DEL', `race${i}`, p, fresh)));
    for (const p of pods) delNetns(p.name);
  });

  t.test('a plugin killed during ADD leaves no held lock, and GC reclaims exactly its leftovers', async (t) => {
    // A runtime may SIGKILL the plugin at any moment (its timeout, a restart). The kills
    // are aimed at points of ADD observed from outside rather than at fixed delays: the
    // reservation file appearing, the host veth on the bridge, the nft child (adding the
    // masquerade element) running with its script, and the IPAM lock held (made
    // deterministic by turning last_reserved_ip.0 into a FIFO, on which the plugin blocks
    // inside the lock); plus delays derived from an ADD measured here and now. Every kill
    // is recorded: did the plugin die by SIGKILL before printing a result, and what did it
    // leave behind. Pods stay until after GC, so their veths are still there for GC to find.
    const net = 'killnet';
    const killConf = bridgeConf({ name: net, dataDir, subnet: '10.91.0.0/24', bridge: 'cnikill', ipMasq: true });
    const netDir = join(dataDir, net);
    const lockFile = join(netDir, 'lock');
    const nl = Netlink.open(node.path);
    const pods: { name: string; path: string }[] = [];
    t.teardown(() => {
      nl.close();
      for (const p of pods) delNetns(p.name);
    });
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    const until = async (cond: () => boolean, ms: number): Promise<boolean> => {
      const end = performance.now() + ms;
      while (!cond()) {
        if (performance.now() > end) return false;
        await sleep(2);
      }
      return true;
    };
    /** Reservation files: address -> containerId. */
    const owners = (): Map<string, string> => {
      const m = new Map<string, string>();
      for (const f of readdirSync(netDir).sort()) {
        if (!/^\d+\.\d+\.\d+\.\d+$/.test(f)) continue;
        try {
          m.set(f, readFileSync(join(netDir, f), 'utf8').split('\r\n')[0]!);
        } catch {
          /* released meanwhile */
        }
      }
      return m;
    };
    const ownedBy = (cid: string) => [...owners()].find(([, c]) => c === cid)?.[0];
    /** flock(1) -n exits 99 when it cannot take the lock: someone holds it. */
    const lockHeld = () => spawnSync('flock', ['-n', '-E', '99', lockFile, 'true']).status === 99;
    const bridgeIndex = async () => (await nl.linkByName('cnikill'))!.index;
    const bridgeVeths = async (): Promise<string[]> => {
      const br = await bridgeIndex();
      return (await nl.links()).filter((l) => l.kind === 'veth' && l.master === br).map((l) => l.name).sort();
    };
    /** Masquerade elements: address -> "containerId/ifname". */
    const masqElems = (): Map<string, string> => {
      const doc = JSON.parse(nsExec(node.name, ['nft', '-j', 'list', 'set', 'inet', 'skiff_cni', `pods4_${net}`]));
      const m = new Map<string, string>();
      for (const item of doc.nftables) for (const e of item.set?.elem ?? []) if (e.elem) m.set(e.elem.val, e.elem.comment ?? '');
      return m;
    };
    /** Names (comm) of a process's children, all threads. */
    const childComms = (pid: number): string[] => {
      const out: string[] = [];
      try {
        for (const task of readdirSync(`/proc/${pid}/task`)) {
          for (const c of readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').split(' ').filter(Boolean)) {
            try {
              out.push(readFileSync(`/proc/${c}/comm`, 'utf8').trim());
            } catch {
              /* gone */
            }
          }
        }
      } catch {
        /* the plugin is gone */
      }
      return out;
    };
    /**
     * The plugin waits in epoll: its synchronous work is done. With an nft child running,
     * that means the child has its script (Node writes a child's stdin right after the
     * spawn, but loads its stream code first, so the child runs a while without it).
     */
    const waiting = (pid: number): boolean => {
      try {
        if (readFileSync(`/proc/${pid}/wchan`, 'utf8').includes('epoll')) return true;
        return /^(232|281|441) /.test(readFileSync(`/proc/${pid}/syscall`, 'utf8')); // x86-64 epoll_wait, epoll_pwait, epoll_pwait2
      } catch {
        return false;
      }
    };
    /** Live (not zombie) members of a process group. */
    const groupAlive = (pgid: number): number[] => {
      const out: number[] = [];
      for (const d of readdirSync('/proc')) {
        if (!/^\d+$/.test(d)) continue;
        try {
          const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
          const f = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // state ppid pgrp ...
          if (Number(f[2]) === pgid && f[0] !== 'Z') out.push(Number(d));
        } catch {
          /* gone */
        }
      }
      return out;
    };
    /** The plugin as a runtime runs it, in a process group of its own (ip netns exec and sh exec, so the pid is Node's). */
    const startAdd = (cid: string, pod: { path: string }) => {
      const child = spawn('ip', ['netns', 'exec', node.name, PLUGIN], {
        env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', CNI_COMMAND: 'ADD', CNI_CONTAINERID: cid, CNI_NETNS: pod.path, CNI_IFNAME: 'eth0', CNI_PATH },
        stdio: ['pipe', 'pipe', 'ignore'],
        detached: true,
      });
      let stdout = '';
      child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      const run = {
        pid: child.pid!,
        exited: false,
        started: performance.now(),
        done: new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string }>((resolve) =>
          child.on('close', (code, signal) => resolve({ code, signal, stdout })),
        ),
      };
      child.on('exit', () => (run.exited = true));
      child.stdin!.on('error', () => {});
      child.stdin!.end(JSON.stringify(killConf));
      return run;
    };

    interface Attempt {
      cid: string;
      pod: string;
      trigger: string;
      signal: string | null;
      printed: boolean;
      /** Died by SIGKILL before printing a result. */
      midAdd: boolean;
      reservation: string | undefined;
      veth: 'none' | 'on bridge' | 'detached';
      masq: string | undefined;
      /** Everything the plugin started had finished before the state was read. */
      drained: boolean;
      lockFree: boolean;
    }
    const attempts: Attempt[] = [];
    const record = async (cid: string, pod: string, trigger: string, end: { signal: string | null; stdout: string }, pgid: number) => {
      const drained = await until(() => groupAlive(pgid).length === 0, 10_000);
      const link = await nl.linkByName(hostVethName(cid, 'eth0'));
      const a: Attempt = {
        cid,
        pod,
        trigger,
        signal: end.signal,
        printed: end.stdout.trim() !== '',
        midAdd: end.signal === 'SIGKILL' && end.stdout.trim() === '',
        reservation: ownedBy(cid),
        veth: !link ? 'none' : link.master === (await bridgeIndex()) ? 'on bridge' : 'detached',
        masq: [...masqElems()].find(([, c]) => c === `${cid}/eth0`)?.[0],
        drained,
        lockFree: !lockHeld(),
      };
      attempts.push(a);
      t.comment(
        `${cid} killed ${trigger}: ${a.midAdd ? 'died by SIGKILL, no result' : `${a.signal ?? 'exited'}${a.printed ? ', printed a result' : ''}`}; ` +
          `left reservation ${a.reservation ?? '-'}, veth ${a.veth}, masquerade element ${a.masq ?? '-'}`,
      );
      return a;
    };
    let seq = 0;
    /** One ADD, SIGKILLed when `trigger` is seen (a number: that many ms after the start). */
    const attempt = async (trigger: 'reserved' | 'enslaved' | 'nft' | number): Promise<Attempt> => {
      const cid = `killed${seq++}`;
      const pod = makeNetns('pk');
      pods.push(pod);
      const veth = hostVethName(cid, 'eth0');
      const br = await bridgeIndex();
      const run = startAdd(cid, pod);
      let fired = false;
      while (!run.exited && !fired) {
        let now: boolean;
        if (typeof trigger === 'number') now = performance.now() - run.started >= trigger;
        else if (trigger === 'reserved') now = ownedBy(cid) !== undefined;
        else if (trigger === 'enslaved') now = (await nl.linkByName(veth))?.master === br;
        else now = childComms(run.pid).includes('nft') && waiting(run.pid);
        if (now && !run.exited) {
          fired = true;
          try {
            process.kill(run.pid, 'SIGKILL'); // the plugin only, as a runtime does: its children run on
          } catch {
            /* already exited */
          }
        } else await sleep(1);
      }
      const end = await run.done;
      const label = typeof trigger === 'number' ? `${Math.round(trigger)} ms after the start` : `on "${trigger}"`;
      return record(cid, pod.name, label, end, run.pid);
    };

    // Calibration: an ADD's duration here and now (and the bridge, the nft set and the code cache exist after it).
    const times: number[] = [];
    for (let i = 0; i < 3; i++) {
      const pod = makeNetns('pk');
      const a = await call('ADD', `cal${i}`, pod, killConf);
      t.equal(a.code, 0, `calibration ADD ${i}: ${a.stdout}`);
      times.push(a.ms);
      t.equal((await call('DEL', `cal${i}`, pod, killConf)).code, 0);
      delNetns(pod.name);
    }
    const addMs = times.sort((a, b) => a - b)[1]!;
    t.comment(`an ADD takes ${addMs.toFixed(0)} ms here now`);
    t.same([...owners()], [], 'calibration left nothing');

    // Delays derived from the measured ADD (most land in Node's start-up, before any state).
    for (const f of [0.3, 0.6, 0.9]) await attempt(f * addMs);

    // Aimed kills, retried until one lands mid-ADD (the ADD may finish before the kill arrives).
    const aimed = async (trigger: 'reserved' | 'enslaved' | 'nft', left: (a: Attempt) => boolean, what: string) => {
      for (let n = 1; n <= 6; n++) {
        const a = await attempt(trigger);
        if (a.midAdd && left(a)) {
          t.pass(`${what} (attempt ${n})`);
          return;
        }
      }
      t.fail(`${what}: no kill landed mid-ADD in 6 attempts`);
    };
    await aimed('reserved', (a) => a.reservation !== undefined, 'killed once its address was reserved: the reservation file is left');
    await aimed('enslaved', (a) => a.reservation !== undefined && a.veth === 'on bridge', 'killed once its host veth was on the bridge: the veth and the reservation are left');
    await aimed(
      'nft',
      (a) => a.reservation !== undefined && a.veth === 'on bridge' && a.masq === a.reservation,
      'killed while its nft child ran: the orphaned nft still added the masquerade element',
    );

    // Killed while holding the IPAM lock, deterministically: with last_reserved_ip.0 a FIFO,
    // the plugin blocks inside the lock reading it, and again rewriting it after reserving.
    const fifo = join(netDir, 'last_reserved_ip.0');
    rmSync(fifo, { force: true });
    execFileSync('mkfifo', [fifo]);
    const lockPod = makeNetns('pk');
    pods.push(lockPod);
    const lockRun = startAdd('killed-lock', lockPod);
    let fd = -1;
    let heldReading = false;
    let heldReserved = false;
    try {
      // The write end opens (O_NONBLOCK: ENXIO until then) once the plugin has the FIFO open for reading.
      const deadline = performance.now() + 10_000;
      while (fd < 0 && !lockRun.exited && performance.now() < deadline) {
        try {
          fd = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
        } catch {
          await sleep(1);
        }
      }
      if (fd >= 0) {
        heldReading = lockHeld();
        writeSync(fd, '10.91.0.200');
        closeSync(fd);
        fd = -1;
        // It reserves the address after 10.91.0.200, then blocks opening the FIFO to record it.
        await until(() => ownedBy('killed-lock') !== undefined || lockRun.exited, 10_000);
        heldReserved = lockHeld();
      }
    } finally {
      if (fd >= 0) closeSync(fd);
      try {
        process.kill(lockRun.pid, 'SIGKILL');
      } catch {
        /* exited */
      }
    }
    const lockEnd = await lockRun.done;
    rmSync(fifo, { force: true });
    t.ok(heldReading, 'the plugin held the IPAM lock while reading last_reserved_ip');
    t.ok(heldReserved, 'and still held it after reserving its address');
    const locked = await record('killed-lock', lockPod.name, 'holding the IPAM lock', lockEnd, lockRun.pid);
    t.ok(locked.midAdd, 'it died by SIGKILL before printing a result');
    t.equal(locked.reservation, '10.91.0.201', 'its reservation (after the address it read from the FIFO) is left behind');
    t.ok(locked.lockFree, 'the kernel dropped the lock with its holder');

    t.ok(attempts.every((a) => a.drained), 'whatever a killed plugin had started finished before its leftovers were read');
    t.ok(attempts.every((a) => a.lockFree), 'no kill left the lock held');

    // The next ADD is served promptly: a held lock would block it (guarded by a 10 s kill).
    const afterPod = makeNetns('pk');
    pods.push(afterPod);
    const after = startAdd('after-kill', afterPod);
    const guard = setTimeout(() => process.kill(after.pid, 'SIGKILL'), 10_000);
    const r = await after.done;
    clearTimeout(guard);
    const took = performance.now() - after.started;
    t.equal(r.code, 0, 'the next ADD succeeds: ' + r.stdout);
    t.ok(took < Math.max(5000, 10 * addMs), `and promptly (${took.toFixed(0)} ms)`);
    const afterIp: string = JSON.parse(r.stdout).ips[0].address.split('/')[0];
    const afterVeth = hostVethName('after-kill', 'eth0');

    // Before GC: everything besides the live attachment is exactly what the killed ADDs left.
    const byCid = (pairs: [string, string][]) => pairs.sort((a, b) => a[1].localeCompare(b[1]));
    const res0 = owners();
    t.equal(res0.get(afterIp), 'after-kill');
    t.same(
      byCid([...res0].filter(([ip]) => ip !== afterIp)),
      byCid(attempts.filter((a) => a.reservation).map((a) => [a.reservation!, a.cid])),
      'reservations besides the live one: those recorded for the killed ADDs',
    );
    const veths0 = await bridgeVeths();
    t.ok(veths0.includes(afterVeth));
    t.same(
      veths0.filter((n) => n !== afterVeth),
      attempts.filter((a) => a.veth === 'on bridge').map((a) => hostVethName(a.cid, 'eth0')).sort(),
      'host veths on the bridge besides the live one: those recorded for the killed ADDs',
    );
    const masq0 = masqElems();
    t.equal(masq0.get(afterIp), 'after-kill/eth0');
    t.same(
      byCid([...masq0].filter(([ip]) => ip !== afterIp)),
      byCid(attempts.filter((a) => a.masq).map((a) => [a.masq!, `${a.cid}/eth0`])),
      'masquerade elements besides the live one: those recorded for the killed ADDs',
    );

    const gc = await runPlugin(
      { command: 'GC', nodeNs: node.name },
      { ...killConf, cniVersion: '1.1.0', 'cni.dev/valid-attachments': [{ containerID: 'after-kill', ifname: 'eth0' }] },
    );
    t.equal(gc.code, 0, gc.stdout);
    t.same([...owners()], [[afterIp, 'after-kill']], 'GC left only the live reservation');
    t.same(await bridgeVeths(), [afterVeth], 'only the live host veth on the bridge');
    t.same([...masqElems()], [[afterIp, 'after-kill/eth0']], 'only the live masquerade element');
    for (const a of attempts.filter((a) => a.veth === 'on bridge')) {
      t.throws(() => nsExec(a.pod, ['ip', 'link', 'show', 'eth0'], ''), `${a.cid}: the pod end went with the host veth`);
    }
    const detached = attempts.filter((a) => a.veth === 'detached');
    if (detached.length) {
      t.comment(`${detached.map((a) => a.cid).join(', ')}: killed between creating the veth and enslaving it; GC removes veths on the bridge only, deleting the pod namespace removes these`);
    }
    t.match(nsExec(afterPod.name, ['ping', '-c', '1', '-W', '2', '10.91.0.1']), /1 received/, 'the live pod still reaches its gateway');

    t.equal((await call('DEL', 'after-kill', afterPod, killConf)).code, 0);
    t.same([...owners()], [], 'DEL released the live address');
    for (const p of pods.splice(0)) delNetns(p.name);
  });

  t.test('delegated IPAM: Debian\'s static plugin from CNI_PATH', { skip: !existsSync('/usr/lib/cni/static') && 'containernetworking-plugins not installed' }, async (t) => {
    const pod = makeNetns('pod');
    const c = { ...conf, name: 'staticnet', bridge: 'cnistatic', ipMasq: false, ipam: { type: 'static', addresses: [{ address: '10.92.0.7/24', gateway: '10.92.0.1' }] } };
    const r = await call('ADD', 'st1', pod, c);
    t.equal(r.code, 0, r.stdout + r.stderr);
    t.equal(r.json.ips[0].address, '10.92.0.7/24');
    t.match(nsExec(pod.name, ['ip', '-o', 'addr', 'show', 'eth0']), /10\.92\.0\.7\/24/);
    t.match(nsExec(pod.name, ['ping', '-c', '1', '-W', '2', '10.92.0.1']), /1 received/);
    t.equal((await call('DEL', 'st1', pod, c)).code, 0);
  });

  t.test('chained: a prevResult from an earlier plugin is amended', async (t) => {
    const pod = makeNetns('pod');
    const prev = { cniVersion: '1.0.0', interfaces: [{ name: 'dummy0', mac: '0a:00:00:00:00:01' }], ips: [], routes: [] };
    const r = await call('ADD', 'chain1', pod, { ...conf, prevResult: prev });
    t.equal(r.code, 0, r.stdout);
    t.equal(r.json.interfaces[0].name, 'dummy0');
    t.equal(r.json.interfaces.length, 4);
    t.equal(r.json.ips[0].interface, 3, 'index shifted past the earlier interfaces');
    await call('DEL', 'chain1', pod);
  });

  t.test('1,000 ADD/DEL cycles leave no reservations, veths or masquerade elements', async (t) => {
    const cycles = Number(process.env.SKIFF_CYCLES ?? 1000);
    const lanes = 4;
    const pods = Array.from({ length: lanes }, () => makeNetns('cy'));
    await Promise.all(
      pods.map(async (p, lane) => {
        for (let i = lane; i < cycles; i += lanes) {
          const a = await call('ADD', `cyc${i}`, p);
          if (a.code !== 0) throw new Error(`ADD ${i}: ${a.stdout}`);
          const d = await call('DEL', `cyc${i}`, p);
          if (d.code !== 0) throw new Error(`DEL ${i}: ${d.stdout}`);
        }
      }),
    );
    t.same(reservations(), [], 'no reservation files');
    const veths = nsExec(node.name, ['ip', '-o', 'link', 'show', 'type', 'veth']).trim();
    t.equal(veths, '', 'no veths');
    const set = nsExec(node.name, ['nft', '-j', 'list', 'set', 'inet', 'skiff_cni', 'pods4_sktnet']);
    t.notMatch(set, /"elem"/, 'no masquerade elements');
  });
}
