// Loads skiff's native addon (build/skiff_native.node): setns, flock, nsType, socket.
// Works from dist/src/os (tsc output) and from the bundled dist/skiff-cni.mjs.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface Native {
  setns(fd: number, nstype: number): void;
  flock(fd: number, op: number): void;
  nsType(fd: number): number;
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

export function native(): Native {
  if (cached) return cached;
  const req = createRequire(import.meta.url);
  const override = process.env.SKIFF_NATIVE;
  if (override) return (cached = req(override) as Native);
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const candidate = join(dir, 'build', 'skiff_native.node');
    if (existsSync(candidate)) return (cached = req(candidate) as Native);
    dir = dirname(dir);
  }
  throw new Error('skiff native addon not found (build/skiff_native.node); run `npm run build`');
}
