// skiff-cni's self-written V8 code cache (scripts/cni-loader.cjs): created after the
// first successful command, extended per command, used afterwards, and harmless when
// it is corrupt, foreign (writable by others) or switched off. Runs a private copy of
// the plugin tree so the worktree's own cache is untouched.
import t from 'tap';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeNetns, requireRoot } from '../helpers/netns.js';
import { bridgeConf, ROOT, runPlugin } from '../helpers/cni.js';
import { native } from '../../src/os/native.js';

if (requireRoot(t)) {
  const tree = mkdtempSync(join(tmpdir(), 'skt-cnitree-'));
  mkdirSync(join(tree, 'bin'));
  mkdirSync(join(tree, 'dist'));
  copyFileSync(join(ROOT, 'bin', 'skiff-cni'), join(tree, 'bin', 'skiff-cni'));
  chmodSync(join(tree, 'bin', 'skiff-cni'), 0o755);
  for (const f of ['skiff-cni.cjs', 'skiff-cni-main.cjs']) copyFileSync(join(ROOT, 'dist', f), join(tree, 'dist', f));
  symlinkSync(join(ROOT, 'node_modules'), join(tree, 'node_modules'));
  symlinkSync(join(ROOT, 'build'), join(tree, 'build'));
  const plugin = join(tree, 'bin', 'skiff-cni');
  const dataDir = mkdtempSync(join(tmpdir(), 'skt-ipam-'));
  const logFile = join(tree, 'log.jsonl');
  t.teardown(() => {
    rmSync(tree, { recursive: true, force: true });
    rmSync(dataDir, { recursive: true, force: true });
  });

  const node = makeNetns('node');
  const pod = makeNetns('pod');
  const conf = bridgeConf({ dataDir });
  const cacheFiles = () => readdirSync(join(tree, 'dist')).filter((f) => f.endsWith('.v8cache'));
  const cachePath = () => join(tree, 'dist', cacheFiles()[0]!);
  const header = () => readFileSync(cachePath(), 'latin1').split('\n', 1)[0]!.split(' ')[0];
  const lastState = () => {
    const lines = readFileSync(logFile, 'utf8').trim().split('\n');
    return JSON.parse(lines[lines.length - 1]!).codeCache as string;
  };
  const call = async (command: string, cid: string, extra: Record<string, string> = {}) => {
    const r = await runPlugin({ command, containerId: cid, ifname: 'eth0', netns: pod.path, nodeNs: node.name, plugin, extraEnv: { SKIFF_CNI_LOG: logFile, ...extra } }, conf);
    if (r.code !== 0) throw new Error(`${command} ${cid} failed: ${r.stdout}${r.stderr}`);
    return r;
  };

  t.test('created after the first ADD, then used; each new command is added once', async (t) => {
    t.same(cacheFiles(), []);
    await call('ADD', 'c1');
    t.equal(lastState(), 'none');
    t.equal(cacheFiles().length, 1);
    t.match(cacheFiles()[0], /^skiff-cni-[0-9a-f]{16}\.v8cache$/, 'named by the bundle hash');
    t.equal(statSync(cachePath()).mode & 0o777, 0o600);
    t.equal(header(), 'ADD');
    await call('DEL', 'c1');
    t.equal(lastState(), 'used');
    t.equal(header(), 'ADD,DEL', 'DEL added to the cache');
    const size = statSync(cachePath()).size;
    await call('ADD', 'c2');
    t.equal(lastState(), 'used');
    await call('DEL', 'c2');
    t.equal(statSync(cachePath()).size, size, 'covered commands do not rewrite it');
  });

  t.test('a corrupt cache never reaches V8 (whose release builds abort on one); it is replaced', async (t) => {
    const buf = readFileSync(cachePath());
    for (let i = buf.indexOf(10) + 1 + 64; i < buf.length; i += 97) buf[i] ^= 0x5a;
    writeFileSync(cachePath(), buf, { mode: 0o600 });
    const add = await call('ADD', 'c3');
    t.equal(add.json.interfaces[2].name, 'eth0', 'the ADD itself is unaffected');
    t.equal(lastState(), 'none', 'checksum mismatch: treated as absent');
    t.equal(header(), 'ADD', 'rewritten from scratch');
    await call('DEL', 'c3');
    t.equal(lastState(), 'used');
  });

  t.test('a cache V8 itself rejects (another V8 build or flags) is recompiled and replaced', async (t) => {
    // A well-formed cache of another script: V8's own checks (source length, flags) refuse it.
    const [, sum] = readFileSync(cachePath(), 'latin1').split('\n', 1)[0]!.split(' ');
    t.ok(sum, 'the header has a checksum');
    const vm = await import('node:vm');
    const data = new vm.Script('(function () { return 42 })').createCachedData();
    writeFileSync(cachePath(), Buffer.concat([Buffer.from(`ADD,DEL ${native().checksum(data)}\n`, 'latin1'), data]), { mode: 0o600 });
    await call('ADD', 'c7');
    t.equal(lastState(), 'rejected');
    t.equal(header(), 'ADD', 'rewritten from scratch');
    await call('DEL', 'c7');
    t.equal(lastState(), 'used');
  });

  t.test('a cache writable by others is ignored, and so is a truncated one', async (t) => {
    chmodSync(cachePath(), 0o666);
    await call('ADD', 'c4');
    t.equal(lastState(), 'none', 'not trusted');
    await call('DEL', 'c4');
    writeFileSync(cachePath(), Buffer.from('ADD,DEL'), { mode: 0o600 });
    await call('ADD', 'c5');
    t.equal(lastState(), 'none', 'no header line: not a cache');
    await call('DEL', 'c5');
  });

  t.test('SKIFF_CNI_CODE_CACHE=0 switches it off', async (t) => {
    rmSync(cachePath());
    await call('ADD', 'c6', { SKIFF_CNI_CODE_CACHE: '0' });
    t.equal(lastState(), 'off');
    await call('DEL', 'c6', { SKIFF_CNI_CODE_CACHE: '0' });
    t.same(cacheFiles(), [], 'nothing written');
  });
}
