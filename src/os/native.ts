// Loads skiff's native addon (build/skiff_native.node): setns, flock, nsType, a
// synchronous netlink socket (nlOpen/nlRequest, used by netlink.ts), and socket()
// (a TCP/UDP socket created inside another namespace, used by the lab's probes).
// Works from dist/src/os (tsc output, ESM) and from the bundled dist/skiff-cni-main.cjs
// (where the build defines import.meta.dirname as __dirname).
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';

export interface Native {
  setns(fd: number, nstype: number): void;
  flock(fd: number, op: number): void;
  nsType(fd: number): number;
  /** A netlink socket of the given protocol (0 = NETLINK_ROUTE) in the calling thread's namespace. */
  nlOpen(protocol: number): number;
  /** Sends one request and returns every message of its reply, up to and including the ack/error/done. */
  nlRequest(fd: number, msg: Buffer): Buffer;
  /**
   * Sends an nfnetlink batch as one datagram, then `marker` (a request answered exactly
   * once); returns every message received up to and including the marker's answer.
   */
  nlBatch(fd: number, batch: Buffer, marker: Buffer): Buffer;
  /** nlBatch on a thread-pool thread: the event loop runs while the kernel applies the batch. */
  nlBatchAsync(fd: number, batch: Buffer, marker: Buffer): Promise<Buffer>;
  /** FNV-1a 64 of the bytes, 16 hex digits. */
  checksum(data: Buffer): string;
  /** A new socket (close-on-exec) in the calling thread's network namespace; returns its fd. */
  socket(domain: number, type: number): number;
}

export const CLONE_NEWNET = 0x40000000;
export const AF_INET = 2;
export const SOCK_STREAM = 1;
export const SOCK_DGRAM = 2;
export const LOCK_SH = 1;
export const LOCK_EX = 2;
export const LOCK_NB = 4;
export const LOCK_UN = 8;

let cached: Native | undefined;

/** What require() does for a .node file, without needing a require function. */
function load(path: string): Native {
  const m = { exports: {} as Native };
  process.dlopen(m, path);
  return m.exports;
}

export function native(): Native {
  if (cached) return cached;
  // The CNI loader (dist/skiff-cni.cjs) has usually loaded it already, for its cache check.
  const preloaded = (globalThis as { __skiffNative?: Native }).__skiffNative;
  if (preloaded) return (cached = preloaded);
  const override = process.env.SKIFF_NATIVE;
  if (override) return (cached = load(override));
  let dir = import.meta.dirname;
  for (let i = 0; i < 6; i++) {
    const candidate = join(dir, 'build', 'skiff_native.node');
    if (existsSync(candidate)) return (cached = load(candidate));
    dir = dirname(dir);
  }
  throw new Error('skiff native addon not found (build/skiff_native.node); run `npm run build`');
}
