'use strict';
// skiff-cni's entry point (copied by scripts/build.mjs to dist/skiff-cni.cjs, with the
// bundle's hash filled in). It runs the bundle dist/skiff-cni-main.cjs through a V8
// code cache that the plugin writes itself.
//
// Why: a runtime execs the plugin for every pod, and compiling the bundle's functions
// (parse + bytecode) is a large part of what the plugin costs above Node's own start.
// A code cache created *after* a command ran holds the bytecode of every function
// that command used, so later runs skip compiling them (measured in docs/cni.md).
// Node's NODE_COMPILE_CACHE only caches what is compiled before the code runs (the
// top level), which saves far less.
//
// The cache file lives next to the bundle, is named by the bundle's SHA-256 (V8's own
// check compares the source length, not its content), is written atomically with
// mode 0600 after a successful command that the cache did not cover yet, and is only
// used when owned by the current user and not writable by others. Its header carries
// a checksum of the V8 data, verified before V8 sees it: the V8 in Node 24 does not
// verify a code cache's checksum, and a corrupted one aborted the process (tests).
// A cache V8 rejects (another Node build or flags) is simply recompiled and replaced.
// Anything going wrong with the cache is ignored: it only ever costs the compile it
// tried to save.
const fs = require('node:fs');
const { Script } = require('node:vm');

const BUNDLE_SHA256 = '@BUNDLE_SHA256@';
const bundle = `${__dirname}/skiff-cni-main.cjs`;
const cacheFile = `${__dirname}/skiff-cni-${BUNDLE_SHA256.slice(0, 16)}.v8cache`;
const CACHED_COMMANDS = ['ADD', 'DEL', 'CHECK', 'GC', 'STATUS'];
// Coverage (NODE_V8_COVERAGE, as the test runner sets) changes how V8 compiles.
const useCache = !process.env.NODE_V8_COVERAGE && process.env.SKIFF_CNI_CODE_CACHE !== '0';

/**
 * skiff's native addon, which the bundle needs anyway (shared through a global so it
 * is loaded once); here for its checksum, as a JS loop over the cache costs ~5 ms.
 */
function loadNative() {
  try {
    const m = { exports: {} };
    process.dlopen(m, process.env.SKIFF_NATIVE || `${__dirname}/../build/skiff_native.node`);
    return (globalThis.__skiffNative = m.exports);
  } catch {
    return undefined; // the bundle finds it (or reports it missing) on its own
  }
}

/** Header line "<commands covered> <checksum>", then the V8 data. */
function readCache(checksum) {
  let fd;
  try {
    fd = fs.openSync(cacheFile, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  } catch {
    return undefined;
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile() || st.uid !== process.geteuid() || (st.mode & 0o022) !== 0) return undefined;
    const buf = fs.readFileSync(fd);
    const nl = buf.indexOf(10);
    if (nl < 0 || nl > 200) return undefined;
    const [commands = '', sum] = buf.toString('latin1', 0, nl).split(' ');
    const data = buf.subarray(nl + 1);
    if (sum !== checksum(data)) return undefined;
    return { covered: commands.split(',').filter(Boolean), data };
  } catch {
    return undefined;
  } finally {
    fs.closeSync(fd);
  }
}

const nativeAddon = useCache ? loadNative() : undefined;
const checksum = nativeAddon && ((data) => nativeAddon.checksum(data));
const cache = checksum ? readCache(checksum) : undefined;
const source = fs.readFileSync(bundle, 'utf8');
const script = new Script(`(function (exports, require, module, __filename, __dirname) {${source}\n})`, {
  filename: bundle,
  ...(cache ? { cachedData: cache.data } : {}),
});
const covered = cache && !script.cachedDataRejected ? cache.covered : [];
// For the plugin's log line (SKIFF_CNI_LOG / SKIFF_CNI_DEBUG).
globalThis.__skiffCniCodeCache = !checksum ? 'off' : !cache ? 'none' : script.cachedDataRejected ? 'rejected' : 'used';

if (checksum) {
  const command = process.env.CNI_COMMAND;
  process.once('exit', (code) => {
    if (code !== 0 || !CACHED_COMMANDS.includes(command) || covered.includes(command)) return;
    const tmp = `${cacheFile}.${process.pid}.tmp`;
    try {
      const data = script.createCachedData();
      const header = Buffer.from(`${[...covered, command].join(',')} ${checksum(data)}\n`, 'latin1');
      fs.writeFileSync(tmp, Buffer.concat([header, data]), { mode: 0o600, flag: 'wx' });
      fs.renameSync(tmp, cacheFile);
    } catch {
      try {
        fs.unlinkSync(tmp);
      } catch {
        /* nothing to clean */
      }
    }
  });
}

const mod = { exports: {} };
script.runInThisContext()(mod.exports, require, mod, bundle, __dirname);
