// The lab's persisted state: /run/skiff/lab/<name>/state.json (canonical JSON,
// written atomically). It records everything `down` must undo (namespaces, pids),
// and the allocations that must survive restarts (pod CIDRs, ClusterIPs).
import { mkdirSync, readFileSync, renameSync, writeFileSync, existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { canonical } from '../util/canonical.js';
import type { LabObject, LabSettings } from './config.js';
import type { LabNode, PodRuntime } from './controller.js';

export const LAB_ROOT = process.env.SKIFF_LAB_ROOT ?? '/run/skiff/lab';

export interface PodState extends PodRuntime {
  netns: string;
  containerId: string;
  pids: number[];
}

export interface LabState {
  version: 1;
  name: string;
  prefix: string;
  settings: LabSettings;
  nodes: (LabNode & { ns: string })[];
  objects: LabObject[];
  podCIDRs: Record<string, string>;
  clusterIPs: Record<string, string>;
  pods: Record<string, PodState>;
  agents: Record<string, number>;
  /** pid of the background controller (readiness, EndpointSlices). */
  controllerPid?: number;
}

export const labDir = (name: string) => join(LAB_ROOT, name);
export const manifestsDir = (name: string) => join(labDir(name), 'manifests');
export const nodeDir = (name: string, node: string) => join(labDir(name), node);
export const cniConfDir = (name: string, node: string) => join(nodeDir(name, node), 'net.d');
export const statePath = (name: string) => join(labDir(name), 'state.json');

/** Atomic write: hidden temp file in the same directory, then rename. */
export function writeAtomic(path: string, data: string): void {
  const dir = path.slice(0, path.lastIndexOf('/'));
  mkdirSync(dir, { recursive: true });
  const tmp = join(dir, `.${path.slice(dir.length + 1)}.tmp-${process.pid}`);
  writeFileSync(tmp, data);
  renameSync(tmp, path);
}

export function loadState(name: string): LabState | undefined {
  try {
    return JSON.parse(readFileSync(statePath(name), 'utf8')) as LabState;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new Error(`lab ${name}: unreadable state file ${statePath(name)}: ${(e as Error).message}`);
  }
}

export function saveState(s: LabState): void {
  writeAtomic(statePath(s.name), canonical(s) + '\n');
}

export function labsOnDisk(): string[] {
  if (!existsSync(LAB_ROOT)) return [];
  return readdirSync(LAB_ROOT).filter((n) => existsSync(statePath(n))).sort();
}

export function removeLabDir(name: string): void {
  rmSync(labDir(name), { recursive: true, force: true });
}
