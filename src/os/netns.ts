// Network namespaces. A netlink socket belongs to the namespace it was created in,
// so `inNetns` enters the target synchronously, runs `fn` (which must not await),
// and returns to the original namespace before any other JavaScript runs.
import { closeSync, openSync, statSync } from 'node:fs';
import { AF_INET, CLONE_NEWNET, native, SOCK_DGRAM, SOCK_STREAM } from './native.js';

export class NetnsError extends Error {
  constructor(
    readonly code: 'ENOENT' | 'ENOTNS' | 'EACCES',
    readonly path: string,
    message: string,
  ) {
    super(message);
    this.name = 'NetnsError';
  }
}

/** Opens `path` and checks that it really is a network namespace. Caller closes the fd. */
export function openNetns(path: string): number {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOENT') throw new NetnsError('ENOENT', path, `network namespace ${path} does not exist`);
    throw new NetnsError('EACCES', path, `cannot open network namespace ${path}: ${err.message}`);
  }
  if (native().nsType(fd) !== CLONE_NEWNET) {
    closeSync(fd);
    throw new NetnsError('ENOTNS', path, `${path} is not a network namespace`);
  }
  return fd;
}

/** True when `path` exists and is a network namespace. */
export function isNetns(path: string): boolean {
  try {
    closeSync(openNetns(path));
    return true;
  } catch {
    return false;
  }
}

/** Identity of a namespace (device:inode), to compare two paths. */
export function netnsId(path: string): string {
  const st = statSync(path);
  return `${st.dev}:${st.ino}`;
}

let selfFd: number | undefined;

/**
 * Runs `fn` with the calling thread inside the namespace at `path`, synchronously.
 * Sockets created by `fn` stay in that namespace after we switch back.
 */
export function inNetns<T>(path: string | undefined, fn: () => T): T {
  if (!path) return fn();
  const n = native();
  selfFd ??= openSync('/proc/thread-self/ns/net', 'r');
  const fd = openNetns(path);
  try {
    n.setns(fd, CLONE_NEWNET);
    try {
      return fn();
    } finally {
      n.setns(selfFd, CLONE_NEWNET);
    }
  } finally {
    closeSync(fd);
  }
}

/**
 * A new IPv4 socket (fd) created inside the network namespace at `path`: wrap it with
 * `new net.Socket({ fd })` (TCP) or `dgram` `bind({ fd })` (UDP). It sends and receives
 * in that namespace for its whole life, whatever namespace the process is in.
 */
export function socketIn(path: string | undefined, kind: 'tcp' | 'udp'): number {
  return inNetns(path, () => native().socket(AF_INET, kind === 'tcp' ? SOCK_STREAM : SOCK_DGRAM));
}
