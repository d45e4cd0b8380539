// The manifest-directory source (the embedded default: the lab and standalone
// commands use it). Ordinary `kubectl apply`-style files: every *.yaml, *.yml and
// *.json file directly in the directory, multi-document YAML, `kind: List` too. The
// directory is watched (fs.watch, plus a periodic rescan for filesystems where inotify
// misses changes, e.g. network mounts), and each change to the files becomes the
// add/update/delete changes that turn the previous state into the new one.
//
// A malformed document is reported (file, document index, reason) and skipped; the
// rest of the file and the directory keep working. Hidden files (".x.yaml.tmp", the
// "..data" links of a ConfigMap volume) are not manifests, so atomic writers that
// write a hidden temporary file and rename it into place are seen only once complete.
//
// Node annotations (annotateNode): each agent publishes its own Node's annotations
// (VTEP MAC, underlay IP) into `<dir>/.annotations/<node>.json`, written atomically
// (temporary file + rename) and merged over that Node's metadata.annotations by every
// ManifestSource reading the directory. One file per node means several agents (one
// per node, each its own process) share one manifest directory without clobbering
// each other's writes or the operator's manifests, and no lock is needed: each file
// has exactly one writer. The overlay applies only to Nodes the manifests define.
import { createHash } from 'node:crypto';
import { watch, type FSWatcher } from 'node:fs';
import { mkdir, readdir, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { extname, join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { logger, type Logger } from '../util/log.js';
import { ChangeTracker } from './tracker.js';
import { keyOf, KINDS, type Change, type ClusterObject, type ClusterSource, type Kind, type Node } from './types.js';
import { checkObject, isKind, ValidationError } from './validate.js';

const digestOf = (text: string): string => createHash('sha256').update(text).digest('base64');

export const MANIFEST_EXTENSIONS = ['.yaml', '.yml', '.json'];
export const ANNOTATIONS_DIR = '.annotations';

/** A document that was skipped: where it is and why. `document` is 0-based; `item` indexes a List's items. */
export interface ManifestProblem {
  file: string;
  document: number;
  item?: number;
  line?: number;
  reason: string;
}

export interface ManifestObject {
  obj: ClusterObject;
  document: number;
  item?: number;
}

export interface ParsedManifest {
  objects: ManifestObject[];
  problems: ManifestProblem[];
  /** Objects of kinds skiff does not read (Deployment, ConfigMap, the lab's own kinds). */
  ignored: { document: number; item?: number; apiVersion?: unknown; kind: unknown }[];
}

const describe = (v: unknown): string =>
  v === null ? 'null' : Array.isArray(v) ? 'a list' : typeof v === 'object' ? 'an object' : `${typeof v} ${JSON.stringify(v)}`;

/** Parses one manifest file's text. Pure: never throws, never logs. */
export function parseManifest(text: string, file: string): ParsedManifest {
  const out: ParsedManifest = { objects: [], problems: [], ignored: [] };
  const docs: { value?: unknown; error?: string; line?: number }[] = [];
  if (file.endsWith('.json')) {
    try {
      docs.push({ value: JSON.parse(text) });
    } catch (err) {
      docs.push({ error: `invalid JSON: ${(err as Error).message}` });
    }
  } else {
    for (const doc of parseAllDocuments(text)) {
      const err = doc.errors[0];
      if (err) {
        docs.push({ error: `invalid YAML: ${err.message.split('\n')[0]}`, line: err.linePos?.[0].line });
        continue;
      }
      try {
        docs.push({ value: doc.toJS({ maxAliasCount: 100 }) });
      } catch (e) {
        docs.push({ error: `invalid YAML: ${(e as Error).message}` });
      }
    }
  }

  const one = (value: unknown, document: number, item?: number): void => {
    const where = item === undefined ? { document } : { document, item };
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      out.problems.push({ file, ...where, reason: `expected a Kubernetes object (a mapping with apiVersion, kind and metadata), got ${describe(value)}` });
      return;
    }
    const o = value as Record<string, unknown>;
    if (typeof o.kind !== 'string' || o.kind === '') {
      out.problems.push({ file, ...where, reason: 'kind: required field is missing' });
      return;
    }
    if (!isKind(o.kind)) {
      out.ignored.push({ ...where, apiVersion: o.apiVersion, kind: o.kind });
      return;
    }
    try {
      out.objects.push({ obj: checkObject(o), ...where });
    } catch (e) {
      if (!(e instanceof ValidationError)) throw e;
      const name = typeof (o.metadata as { name?: unknown } | undefined)?.name === 'string' ? ` ${(o.metadata as { name: string }).name}` : '';
      out.problems.push({ file, ...where, reason: `${o.kind}${name}: ${e.message}` });
    }
  };

  docs.forEach((d, document) => {
    if (d.error !== undefined) {
      out.problems.push({ file, document, ...(d.line !== undefined ? { line: d.line } : {}), reason: d.error });
      return;
    }
    if (d.value === null || d.value === undefined) return; // an empty document ("---" at the end)
    const v = d.value as Record<string, unknown>;
    if (typeof v === 'object' && !Array.isArray(v) && v.kind === 'List') {
      if (!Array.isArray(v.items)) {
        out.problems.push({ file, document, reason: 'items: a List must have a list of items' });
        return;
      }
      v.items.forEach((it, item) => one(it, document, item));
      return;
    }
    one(d.value, document);
  });
  return out;
}

/** Node names become file names: only a DNS subdomain (what the API allows) gets through. */
const NODE_NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

export interface ManifestSourceOptions {
  dir: string;
  log?: Logger;
  /** Full rescan period, the fallback for missed watch events (default 2000 ms). */
  rescanIntervalMs?: number;
  /** How long to gather watch events before rescanning (default 30 ms). */
  debounceMs?: number;
  /** Use fs.watch (default true); false leaves only the periodic rescan (e.g. for a network filesystem). */
  watch?: boolean;
}

// A file's text is not kept (it would double the memory of every object it defines):
// its SHA-256 tells an unchanged rewrite from a real change.
// The objects are kept in flat arrays, not as one ManifestObject wrapper per object (a
// wrapper and its property array cost more than the smallest objects themselves).
interface FileState {
  sig: string;
  digest: string;
  objs: ClusterObject[];
  /** Per object: its document index, and its List item index (-1: not in a List). */
  docs: number[];
  items: number[];
  problems: ManifestProblem[];
}
interface OverlayState {
  sig: string;
  digest: string;
  node?: string;
  annotations: Record<string, string>;
}

export class ManifestSource implements ClusterSource {
  readonly name = 'manifests';
  readonly dir: string;
  private readonly log: Logger;
  private readonly rescanIntervalMs: number;
  private readonly debounceMs: number;
  private readonly useWatch: boolean;
  private readonly tracker = new ChangeTracker();
  private readonly listeners: ((changes: Change[]) => void)[] = [];
  private readonly files = new Map<string, FileState>();
  private readonly overlays = new Map<string, OverlayState>();
  private dirty = new Set<string>();
  private dirtyOverlays = new Set<string>();
  private allDirty = false;
  private warnedDuplicates = new Set<string>();
  private dirWatcher?: FSWatcher;
  private annWatcher?: FSWatcher;
  private debounce?: NodeJS.Timeout;
  private interval?: NodeJS.Timeout;
  private running?: Promise<void>;
  private queued?: Promise<void>;
  private started = false;
  private stopped = false;
  private synced = false;
  private resolveSynced!: () => void;
  private readonly syncedPromise = new Promise<void>((r) => (this.resolveSynced = r));
  private annotateChain: Promise<void> = Promise.resolve();
  private dirMissingLogged = false;

  constructor(opts: ManifestSourceOptions) {
    if (!opts.dir) throw new Error('manifests: the manifest directory (--manifests) is empty');
    this.dir = opts.dir;
    this.log = opts.log ?? logger('cluster.manifests');
    this.rescanIntervalMs = opts.rescanIntervalMs ?? 2000;
    this.debounceMs = opts.debounceMs ?? 30;
    this.useWatch = opts.watch ?? true;
  }

  onChange(listener: (changes: Change[]) => void): void {
    this.listeners.push(listener);
  }

  hasSynced(): boolean {
    return this.synced;
  }

  whenSynced(): Promise<void> {
    return this.syncedPromise;
  }

  /** The documents currently skipped, over all files. */
  problems(): ManifestProblem[] {
    return [...this.files.values()].flatMap((f) => f.problems);
  }

  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    let st;
    try {
      st = await stat(this.dir);
    } catch (err) {
      throw new Error(`manifests: cannot read the manifest directory ${this.dir}: ${(err as NodeJS.ErrnoException).code ?? err}`);
    }
    if (!st.isDirectory()) throw new Error(`manifests: ${this.dir} is not a directory`);
    // Watch before the first read, so nothing written in between is missed.
    this.ensureWatchers();
    await this.rescan();
    this.synced = true;
    this.resolveSynced();
    this.interval = setInterval(() => void this.rescan(), this.rescanIntervalMs);
    this.interval.unref();
    this.log.info('manifest directory loaded', { dir: this.dir, files: this.files.size, ...this.counts() });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.interval);
    clearTimeout(this.debounce);
    this.dirWatcher?.close();
    this.annWatcher?.close();
    this.dirWatcher = this.annWatcher = undefined;
    await this.running;
    await this.queued;
  }

  /**
   * Reads the directory again and emits what changed. Scans never overlap: a call
   * during a scan is served by one more scan after it. Resolves once the state seen
   * at (or after) the call has been emitted.
   */
  rescan(): Promise<void> {
    if (!this.running) {
      this.running = this.scan().finally(() => (this.running = undefined));
      return this.running;
    }
    this.queued ??= this.running.then(() => {
      this.queued = undefined;
      return this.rescan();
    });
    return this.queued;
  }

  async annotateNode(name: string, annotations: Record<string, string>): Promise<void> {
    if (typeof name !== 'string' || !NODE_NAME.test(name)) {
      throw new Error(`annotateNode: node name ${JSON.stringify(name)} is not a valid DNS subdomain`);
    }
    for (const [k, v] of Object.entries(annotations)) {
      if (typeof v !== 'string') throw new Error(`annotateNode: annotation ${JSON.stringify(k)} must be a string, got ${JSON.stringify(v)}`);
    }
    // Calls from this process are serialised (read-merge-write); other processes own other files.
    const next = this.annotateChain.then(() => this.writeOverlay(name, annotations));
    this.annotateChain = next.catch(() => {});
    return next;
  }

  private async writeOverlay(name: string, annotations: Record<string, string>): Promise<void> {
    const dir = join(this.dir, ANNOTATIONS_DIR);
    const file = join(dir, `${name}.json`);
    let current: Record<string, string> = {};
    try {
      const parsed = parseOverlay(await readFile(file, 'utf8'));
      if (parsed.node === name) current = parsed.annotations;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        this.log.warn('replacing an unreadable node annotation file', { file, error: String(err) });
      }
    }
    const merged = { ...current, ...annotations };
    if (JSON.stringify(sortKeys(merged)) !== JSON.stringify(sortKeys(current)) || !this.overlays.has(`${name}.json`)) {
      await mkdir(dir, { recursive: true });
      const tmp = join(dir, `.${name}.json.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`);
      try {
        await writeFile(tmp, JSON.stringify({ node: name, annotations: sortKeys(merged) }, null, 2) + '\n');
        await rename(tmp, file);
      } catch (err) {
        await unlink(tmp).catch(() => {});
        throw new Error(`annotateNode: cannot write ${file}: ${(err as Error).message}`);
      }
    }
    this.dirtyOverlays.add(`${name}.json`);
    this.ensureWatchers();
    // Resolve once this process's view has the annotations.
    await this.rescan();
  }

  private ensureWatchers(): void {
    if (this.stopped || !this.useWatch) return;
    if (!this.dirWatcher) this.dirWatcher = this.watchDir(this.dir, (f) => (f ? this.dirty.add(f) : (this.allDirty = true)));
    if (!this.annWatcher) {
      this.annWatcher = this.watchDir(join(this.dir, ANNOTATIONS_DIR), (f) => (f ? this.dirtyOverlays.add(f) : (this.allDirty = true)), true);
    }
  }

  private watchDir(path: string, mark: (file: string | null) => void, quietIfMissing = false): FSWatcher | undefined {
    let w: FSWatcher;
    try {
      w = watch(path, { persistent: false }, (_event, file) => {
        mark(file ? file.toString() : null);
        this.schedule();
      });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (!(quietIfMissing && code === 'ENOENT')) {
        this.log.warn('cannot watch directory; relying on the periodic rescan', { dir: path, error: String(err) });
      }
      return undefined;
    }
    w.on('error', (err) => {
      // E.g. the directory was removed; the periodic rescan re-establishes the watch.
      this.log.warn('directory watch failed; relying on the periodic rescan', { dir: path, error: String(err) });
      w.close();
      if (this.dirWatcher === w) this.dirWatcher = undefined;
      if (this.annWatcher === w) this.annWatcher = undefined;
    });
    return w;
  }

  private schedule(): void {
    if (this.debounce || this.stopped) return;
    this.debounce = setTimeout(() => {
      this.debounce = undefined;
      void this.rescan();
    }, this.debounceMs);
  }

  private async scan(): Promise<void> {
    if (this.stopped && this.synced) return;
    try {
      await this.scanOnce();
    } catch (err) {
      this.log.error('manifest rescan failed', { dir: this.dir, error: err instanceof Error ? (err.stack ?? err.message) : String(err) });
    }
  }

  private async scanOnce(): Promise<void> {
    const dirty = this.dirty;
    const dirtyOverlays = this.dirtyOverlays;
    const all = this.allDirty;
    this.dirty = new Set();
    this.dirtyOverlays = new Set();
    this.allDirty = false;
    this.ensureWatchers();

    let names: string[];
    try {
      names = await listFiles(this.dir, MANIFEST_EXTENSIONS);
      this.dirMissingLogged = false;
    } catch (err) {
      // Keep the last state: a vanished directory is far more likely an operator's
      // mistake or a remount in progress than a request to delete every object.
      if (!this.dirMissingLogged) this.log.error('cannot list the manifest directory; keeping the last state', { dir: this.dir, error: String(err) });
      this.dirMissingLogged = true;
      return;
    }
    let changed = !this.synced;
    changed = (await this.refresh(this.files, this.dir, names, all, dirty, (text, path) => this.parseFile(text, path))) || changed;

    const annDir = join(this.dir, ANNOTATIONS_DIR);
    const overlayNames = await listFiles(annDir, ['.json']).catch(() => [] as string[]);
    changed = (await this.refresh(this.overlays, annDir, overlayNames, all, dirtyOverlays, (text, path) => this.parseOverlayFile(text, path))) || changed;

    if (!changed) return;
    const changes = this.recompute();
    if (changes.length > 0) this.emit(changes);
  }

  /**
   * Brings the cache for one directory up to date: a file is re-read when a watch
   * event named it or its stat signature moved (inode, size, times: an atomic rename
   * changes the inode), and re-parsed only when its text changed. True if anything did.
   */
  private async refresh<S extends { sig: string; digest: string }>(
    cache: Map<string, S>,
    dir: string,
    names: string[],
    all: boolean,
    dirty: Set<string>,
    parse: (text: string, path: string) => S,
  ): Promise<boolean> {
    let changed = false;
    const present = new Set<string>();
    for (const name of names) {
      const path = join(dir, name);
      let sig: string;
      try {
        const st = await stat(path, { bigint: true });
        if (!st.isFile()) continue;
        sig = `${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // removed since the listing
        throw err;
      }
      present.add(name);
      const prev = cache.get(name);
      if (prev && prev.sig === sig && !all && !dirty.has(name)) continue;
      let text: string;
      try {
        text = await readFile(path, 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
          present.delete(name);
          continue;
        }
        // Unreadable for now (permissions): keep what it held rather than delete it all.
        this.log.warn('cannot read manifest file; keeping its last contents', { file: path, error: String(err) });
        continue;
      }
      if (prev && prev.digest === digestOf(text)) {
        prev.sig = sig;
        continue;
      }
      cache.set(name, parse(text, path));
      cache.get(name)!.sig = sig;
      changed = true;
    }
    for (const name of [...cache.keys()]) {
      if (!present.has(name)) {
        cache.delete(name);
        this.log.debug('file removed', { file: join(dir, name) });
        changed = true;
      }
    }
    return changed;
  }

  private parseFile(text: string, path: string): FileState {
    const parsed = parseManifest(text, path);
    for (const p of parsed.problems) this.log.error('skipped a malformed manifest document', { ...p });
    for (const i of parsed.ignored) this.log.debug('ignored an object of a kind skiff does not use', { file: path, ...i });
    const objs: ClusterObject[] = [], docs: number[] = [], items: number[] = [];
    for (const o of parsed.objects) {
      objs.push(o.obj);
      docs.push(o.document);
      items.push(o.item ?? -1);
    }
    return { sig: '', digest: digestOf(text), objs, docs, items, problems: parsed.problems };
  }

  private parseOverlayFile(text: string, path: string): OverlayState {
    try {
      return { sig: '', digest: digestOf(text), ...parseOverlay(text) };
    } catch (err) {
      this.log.error('skipped a malformed node annotation file', { file: path, document: 0, reason: (err as Error).message });
      return { sig: '', digest: digestOf(text), annotations: {} };
    }
  }

  /** The desired state from all files (later file wins) plus the annotation overlays, diffed against the tracker. */
  private recompute(): Change[] {
    const byKind = new Map<Kind, Map<string, { obj: ClusterObject; from: string }>>(KINDS.map((k) => [k, new Map()]));
    const duplicates = new Set<string>();
    for (const [name, f] of [...this.files].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      for (let i = 0; i < f.objs.length; i++) {
        const o = { obj: f.objs[i]!, document: f.docs[i]!, item: f.items[i]! < 0 ? undefined : f.items[i]! };
        const key = keyOf(o.obj);
        const m = byKind.get(o.obj.kind)!;
        const from = `${name} document ${o.document}${o.item !== undefined ? ` item ${o.item}` : ''}`;
        const prev = m.get(key);
        if (prev) {
          const msg = `${o.obj.kind} ${key}: defined in ${prev.from} and in ${from}; using ${from}`;
          duplicates.add(msg);
          if (!this.warnedDuplicates.has(msg)) this.log.warn('object defined twice; the later file wins', { kind: o.obj.kind, key, first: prev.from, used: from });
        }
        m.set(key, { obj: o.obj, from });
      }
    }
    this.warnedDuplicates = duplicates;

    const nodes = byKind.get('Node')!;
    for (const ov of this.overlays.values()) {
      if (!ov.node || Object.keys(ov.annotations).length === 0) continue;
      const n = nodes.get(ov.node);
      if (!n) continue;
      const node = n.obj as Node;
      const annotations = { ...(node.metadata.annotations ?? {}), ...ov.annotations };
      nodes.set(ov.node, { ...n, obj: { ...node, metadata: { ...node.metadata, annotations } } });
    }

    const changes: Change[] = [];
    for (const kind of KINDS) changes.push(...this.tracker.replaceAll(kind, [...byKind.get(kind)!.values()].map((e) => e.obj)));
    return changes;
  }

  private emit(changes: Change[]): void {
    this.log.debug('manifest changes', { changes: changes.length });
    for (const l of this.listeners) {
      try {
        l(changes);
      } catch (err) {
        this.log.error('change listener threw', { error: err instanceof Error ? (err.stack ?? err.message) : String(err) });
      }
    }
  }

  private counts(): Record<string, number> {
    return Object.fromEntries(KINDS.map((k) => [k, this.tracker.size(k)]));
  }
}

/** The overlay file: {"node": NAME, "annotations": {KEY: VALUE}}. Throws on anything else. */
export function parseOverlay(text: string): { node: string; annotations: Record<string, string> } {
  const v = JSON.parse(text) as unknown;
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('expected an object {"node": ..., "annotations": {...}}');
  const o = v as Record<string, unknown>;
  if (typeof o.node !== 'string' || o.node === '') throw new Error('node: required string field is missing');
  const ann = o.annotations ?? {};
  if (typeof ann !== 'object' || ann === null || Array.isArray(ann)) throw new Error('annotations: expected an object');
  for (const [k, val] of Object.entries(ann)) {
    if (typeof val !== 'string') throw new Error(`annotations.${k}: expected a string, got ${JSON.stringify(val)}`);
  }
  return { node: o.node, annotations: ann as Record<string, string> };
}

async function listFiles(dir: string, exts: string[]): Promise<string[]> {
  const entries = await readdir(dir);
  return entries.filter((n) => !n.startsWith('.') && exts.includes(extname(n).toLowerCase())).sort();
}

function sortKeys(o: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}
