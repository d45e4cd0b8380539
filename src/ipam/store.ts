// Where host-local keeps its reservations. The allocator works over this small
// interface; DiskStore is the real one, MemoryStore a faithful in-memory model for
// unit tests (same exclusivity and ownership rules, no locking needed).
//
// Disk layout (compatible with upstream host-local, so an operator's tools and
// habits carry over): <dataDir>/<network>/
//   <ip>                    one file per reserved address, created exclusively (O_EXCL),
//                           holding "<containerID>\r\n<ifname>"
//   last_reserved_ip.<n>    the last address handed out from range set n
//   lock                    flock(2)ed for every operation; the kernel drops the lock
//                           when the holder dies, so a killed plugin never wedges the node
//
// No fsync, as upstream host-local: exclusivity comes from O_EXCL and the lock, which
// the page cache already guarantees to every process. Only a machine crash could lose
// a fresh record, and then every pod is re-created anyway; a record left empty by a
// crash belongs to no attachment and GC removes it. Measured here, an fsync under disk
// contention added up to tens of milliseconds to a pod's ADD (docs/cni.md).
import { closeSync, mkdirSync, openSync, readdirSync, readFileSync, unlinkSync, writeSync, constants } from 'node:fs';
import { LOCK_EX, LOCK_UN, native } from '../os/native.js';
import { isIP } from '../util/ip.js';
import { IpamError } from './errors.js';

export interface Reservation {
  ip: string;
  containerId: string;
  /** Empty for records written by tools that store only the container id. */
  ifname: string;
}

export interface Store {
  /** Runs fn with the store locked against other processes. */
  withLock<T>(fn: () => T): T;
  /** Reserves ip for the owner; false if it is already reserved. */
  reserve(ip: string, containerId: string, ifname: string): boolean;
  release(ip: string): void;
  owner(ip: string): Reservation | undefined;
  all(): Reservation[];
  lastReserved(rangeSet: number): string | undefined;
  setLastReserved(rangeSet: number, ip: string): void;
}

const LINE_BREAK = '\r\n';
const LAST_RESERVED = 'last_reserved_ip.';

/** Address file names: IPv6 colons are fine on Linux; reject anything else. */
function fileOf(dir: string, ip: string): string {
  if (!isIP(ip)) throw new IpamError(`invalid IP address ${JSON.stringify(ip)}`, 7);
  return `${dir}/${ip}`;
}

export class DiskStore implements Store {
  private lockFd = -1;
  private depth = 0;

  constructor(readonly dir: string) {}

  private ensureDir(): void {
    try {
      mkdirSync(this.dir, { recursive: true, mode: 0o755 });
    } catch (e) {
      throw new IpamError(`ipam: cannot create data directory ${this.dir}: ${(e as Error).message}`, 5);
    }
  }

  withLock<T>(fn: () => T): T {
    if (this.depth > 0) {
      this.depth++;
      try {
        return fn();
      } finally {
        this.depth--;
      }
    }
    this.ensureDir();
    let fd: number;
    try {
      fd = openSync(`${this.dir}/lock`, constants.O_RDWR | constants.O_CREAT, 0o644);
    } catch (e) {
      throw new IpamError(`ipam: cannot open lock file in ${this.dir}: ${(e as Error).message}`, 5);
    }
    // libuv opens with O_CLOEXEC, so a delegated IPAM plugin never inherits the lock.
    native().flock(fd, LOCK_EX);
    this.lockFd = fd;
    this.depth = 1;
    try {
      return fn();
    } finally {
      this.depth = 0;
      this.lockFd = -1;
      try {
        native().flock(fd, LOCK_UN);
      } finally {
        closeSync(fd);
      }
    }
  }

  reserve(ip: string, containerId: string, ifname: string): boolean {
    const path = fileOf(this.dir, ip);
    let fd: number;
    try {
      fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o644);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw new IpamError(`ipam: cannot reserve ${ip} in ${this.dir}: ${(e as Error).message}`, 5);
    }
    try {
      writeSync(fd, `${containerId}${LINE_BREAK}${ifname}`);
    } catch (e) {
      closeSync(fd);
      unlinkSync(path);
      throw new IpamError(`ipam: cannot write reservation ${path}: ${(e as Error).message}`, 5);
    }
    closeSync(fd);
    return true;
  }

  release(ip: string): void {
    try {
      unlinkSync(fileOf(this.dir, ip));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new IpamError(`ipam: cannot release ${ip}: ${(e as Error).message}`, 5);
    }
  }

  private read(ip: string): Reservation | undefined {
    let text: string;
    try {
      text = readFileSync(`${this.dir}/${ip}`, 'utf8');
    } catch {
      return undefined;
    }
    const [containerId = '', ifname = ''] = text.split(LINE_BREAK).map((s) => s.trim());
    return { ip, containerId, ifname };
  }

  owner(ip: string): Reservation | undefined {
    return this.read(fileOf(this.dir, ip).slice(this.dir.length + 1));
  }

  all(): Reservation[] {
    let names: string[];
    try {
      names = readdirSync(this.dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw new IpamError(`ipam: cannot read ${this.dir}: ${(e as Error).message}`, 5);
    }
    const out: Reservation[] = [];
    for (const n of names) {
      if (!isIP(n)) continue;
      const r = this.read(n);
      if (r) out.push(r);
    }
    return out;
  }

  lastReserved(rangeSet: number): string | undefined {
    try {
      const ip = readFileSync(`${this.dir}/${LAST_RESERVED}${rangeSet}`, 'utf8').trim();
      return isIP(ip) ? ip : undefined;
    } catch {
      return undefined;
    }
  }

  setLastReserved(rangeSet: number, ip: string): void {
    // Rewritten in place (one write), as upstream does: every reader holds the lock, so
    // none sees it half-written; a crash mid-write leaves at worst an unreadable value,
    // and allocation then restarts at the range's start. (A temp file and a rename cost
    // two more journalled metadata operations per ADD.)
    const path = `${this.dir}/${LAST_RESERVED}${rangeSet}`;
    try {
      const fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, 0o644);
      try {
        writeSync(fd, ip);
      } finally {
        closeSync(fd);
      }
    } catch (e) {
      throw new IpamError(`ipam: cannot record last reserved address in ${this.dir}: ${(e as Error).message}`, 5);
    }
  }
}

export class MemoryStore implements Store {
  readonly reservations = new Map<string, Reservation>();
  readonly last = new Map<number, string>();
  locked = 0;

  withLock<T>(fn: () => T): T {
    this.locked++;
    try {
      return fn();
    } finally {
      this.locked--;
    }
  }
  reserve(ip: string, containerId: string, ifname: string): boolean {
    if (this.reservations.has(ip)) return false;
    this.reservations.set(ip, { ip, containerId, ifname });
    return true;
  }
  release(ip: string): void {
    this.reservations.delete(ip);
  }
  owner(ip: string): Reservation | undefined {
    return this.reservations.get(ip);
  }
  all(): Reservation[] {
    return [...this.reservations.values()];
  }
  lastReserved(rangeSet: number): string | undefined {
    return this.last.get(rangeSet);
  }
  setLastReserved(rangeSet: number, ip: string): void {
    this.last.set(rangeSet, ip);
  }
}
