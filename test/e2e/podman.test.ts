// A real container runtime: podman 4 (Debian) with its CNI backend runs containers
// on a skiff-cni network. Podman runs inside a node namespace of ours (nsenter, so
// runc sees the real /sys); its configuration comes from environment variables, so
// nothing under /etc changes. The root filesystem is Debian's busybox-static.
import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync, copyFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeNetns, requireRoot } from '../helpers/netns.js';
import { ROOT } from '../helpers/cni.js';

const missing = ['podman', 'runc', 'nsenter'].filter((b) => spawnSync('sh', ['-c', `command -v ${b}`]).status !== 0);

if (requireRoot(t)) {
  if (missing.length || !existsSync('/bin/busybox')) {
    t.plan(0, `podman e2e needs ${[...missing, existsSync('/bin/busybox') ? '' : 'busybox-static'].filter(Boolean).join(', ')} (scripts/setup.sh installs them)`);
  } else {
    const dir = mkdtempSync(join(tmpdir(), 'skt-podman-'));
    const node = makeNetns('podnode');
    const netnsBefore = new Set(readdirSync('/run/netns'));
    t.teardown(() => {
      spawnSync('nsenter', [`--net=${node.path}`, 'podman', 'rm', '-af', '-t', '0'], { env: podEnv() });
      // Podman's own netns files (netns-<uuid>) are removed by podman; make sure.
      for (const f of readdirSync('/run/netns')) if (!netnsBefore.has(f) && f.startsWith('netns-')) spawnSync('ip', ['netns', 'del', f]);
      spawnSync('umount', ['-R', join(dir, 'storage')], { stdio: 'ignore' });
      spawnSync('umount', ['-R', join(dir, 'run')], { stdio: 'ignore' });
      rmSync(dir, { recursive: true, force: true });
    });

    const tmpl = (f: string) => readFileSync(join(ROOT, 'test/e2e/podman', f), 'utf8').replaceAll('@DIR@', dir).replaceAll('@PLUGIN_DIR@', join(ROOT, 'bin'));
    writeFileSync(join(dir, 'containers.conf'), tmpl('containers.conf'));
    writeFileSync(join(dir, 'storage.conf'), tmpl('storage.conf'));
    mkdirSync(join(dir, 'net.d'));
    writeFileSync(
      join(dir, 'net.d', 'skiffnet.conflist'),
      JSON.stringify({
        cniVersion: '1.0.0',
        name: 'skiffnet',
        plugins: [
          {
            type: 'skiff-cni',
            bridge: 'skiff0',
            isGateway: true,
            isDefaultGateway: true,
            ipMasq: true,
            hairpinMode: true,
            ipam: { type: 'host-local', ranges: [[{ subnet: '10.93.0.0/24' }]], dataDir: join(dir, 'ipam') },
          },
        ],
      }),
    );
    // A busybox root filesystem: no image pull.
    const rootfs = join(dir, 'rootfs');
    mkdirSync(join(rootfs, 'bin'), { recursive: true });
    for (const d of ['proc', 'sys', 'dev', 'etc', 'tmp', 'run']) mkdirSync(join(rootfs, d), { recursive: true });
    copyFileSync('/bin/busybox', join(rootfs, 'bin/busybox'));
    chmodSync(join(rootfs, 'bin/busybox'), 0o755);
    for (const a of ['sh', 'ip', 'ping', 'sleep', 'cat', 'ifconfig', 'route']) symlinkSync('busybox', join(rootfs, 'bin', a));

    function podEnv(): NodeJS.ProcessEnv {
      return { ...process.env, CONTAINERS_CONF: join(dir, 'containers.conf'), CONTAINERS_STORAGE_CONF: join(dir, 'storage.conf') };
    }
    const podman = (...args: string[]) =>
      execFileSync('nsenter', [`--net=${node.path}`, 'podman', ...args], { env: podEnv(), encoding: 'utf8', timeout: 120_000 });
    const reservations = () => (existsSync(join(dir, 'ipam/skiffnet')) ? readdirSync(join(dir, 'ipam/skiffnet')).filter((f) => /^\d+\./.test(f)) : []);

    t.test('a container gets an address from skiff and pings its gateway', async (t) => {
      const out = podman('run', '--rm', '--network', 'skiffnet', '--rootfs', rootfs, '/bin/sh', '-c', 'ip -4 addr show eth0; ping -c 1 -W 2 10.93.0.1');
      t.match(out, /inet 10\.93\.0\.\d+\/24/);
      t.match(out, /1 packets received/);
      t.same(reservations(), [], '--rm released the address');
    });

    t.test('podman stop releases the address', async (t) => {
      const id = podman('run', '-d', '--network', 'skiffnet', '--rootfs', rootfs, '/bin/sleep', '300').trim();
      t.equal(reservations().length, 1, 'reserved while running');
      const inspect = JSON.parse(podman('inspect', id))[0];
      const ip = inspect.NetworkSettings.Networks.skiffnet.IPAddress;
      t.match(ip, /^10\.93\.0\.\d+$/);
      t.same(reservations(), [ip]);
      podman('stop', '-t', '0', id);
      t.same(reservations(), [], 'released on stop');
      podman('rm', '-f', id);
    });
  }
}
