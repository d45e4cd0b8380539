// A local stand-in for kube-apiserver that speaks the real list/watch wire format for
// the resources skiff reads, so the production KubeSource (client-node's HTTP, auth
// and watch code included) is tested end to end on 127.0.0.1:
//   GET <collection>                       -> {"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"N"},"items":[...]}
//                                             (items without kind/apiVersion, as the real server sends them; limit/continue paging)
//   GET <collection>?watch=true&resourceVersion=N[&allowWatchBookmarks=true][&timeoutSeconds=S]
//                                          -> a chunked stream of {"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR","object":{...}}\n
//   a watch from a compacted resourceVersion -> an ERROR event carrying Status 410 "Expired" (the real server's way),
//                                             or HTTP 410 with a Status body (expireMode = 'http')
//   PATCH /api/v1/nodes/NAME               -> JSON merge patch applied, recorded, MODIFIED sent to watchers
// Tests drive it: add/update/remove objects, compact history, send bookmarks, drop or
// expire watch connections, fail requests, and wait (event-driven) for watchers.
import { EventEmitter } from 'node:events';
import { writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';

export interface FakeResource {
  kind: string;
  apiVersion: string;
  path: string;
  namespaced: boolean;
}

export const FAKE_RESOURCES: readonly FakeResource[] = [
  { kind: 'Namespace', apiVersion: 'v1', path: '/api/v1/namespaces', namespaced: false },
  { kind: 'Node', apiVersion: 'v1', path: '/api/v1/nodes', namespaced: false },
  { kind: 'Pod', apiVersion: 'v1', path: '/api/v1/pods', namespaced: true },
  { kind: 'Service', apiVersion: 'v1', path: '/api/v1/services', namespaced: true },
  { kind: 'EndpointSlice', apiVersion: 'discovery.k8s.io/v1', path: '/apis/discovery.k8s.io/v1/endpointslices', namespaced: true },
  { kind: 'NetworkPolicy', apiVersion: 'networking.k8s.io/v1', path: '/apis/networking.k8s.io/v1/networkpolicies', namespaced: true },
];

type Obj = { kind?: string; apiVersion?: string; metadata: { name: string; namespace?: string; resourceVersion?: string; uid?: string; [k: string]: unknown }; [k: string]: unknown };
type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

interface HistoryEntry {
  rv: number;
  kind: string;
  type: EventType;
  obj: Obj;
}

interface Watcher {
  kind: string;
  bookmarks: boolean;
  res: ServerResponse;
  timer?: NodeJS.Timeout;
}

export interface RecordedRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  watch: boolean;
}

export interface RecordedPatch {
  name: string;
  contentType: string;
  body: unknown;
}

const keyOf = (o: Obj): string => (o.metadata.namespace ? `${o.metadata.namespace}/${o.metadata.name}` : o.metadata.name);
const clone = <T>(v: T): T => structuredClone(v);

function status(code: number, reason: string, message: string) {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
}

/** RFC 7386 JSON merge patch. */
function mergePatch(target: unknown, patch: unknown): unknown {
  if (typeof patch !== 'object' || patch === null || Array.isArray(patch)) return clone(patch);
  const out: Record<string, unknown> = typeof target === 'object' && target !== null && !Array.isArray(target) ? { ...(target as Record<string, unknown>) } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

export class FakeApiServer {
  url = '';
  /** How an expired watch is answered: the real server's ERROR event (default) or an HTTP 410. */
  expireMode: 'event' | 'http' = 'event';
  readonly requests: RecordedRequest[] = [];
  readonly patches: RecordedPatch[] = [];
  /** Emits 'activity' on every request, watch start/end and state change (for event-driven waits). */
  readonly events = new EventEmitter();
  private readonly server: Server;
  private rv = 1000;
  private compactedRv = 0;
  private uid = 0;
  private readonly store = new Map<string, Map<string, Obj>>(FAKE_RESOURCES.map((r) => [r.kind, new Map()]));
  private history: HistoryEntry[] = [];
  private readonly watchers = new Set<Watcher>();
  private readonly failures: { verb: 'list' | 'watch' | 'patch'; kind?: string; code: number; left: number }[] = [];

  private constructor() {
    this.server = createServer((req, res) => this.handle(req, res));
    this.events.setMaxListeners(100);
  }

  static async start(): Promise<FakeApiServer> {
    const s = new FakeApiServer();
    await new Promise<void>((resolve) => s.server.listen(0, '127.0.0.1', resolve));
    s.url = `http://127.0.0.1:${(s.server.address() as AddressInfo).port}`;
    return s;
  }

  async close(): Promise<void> {
    for (const w of [...this.watchers]) {
      w.res.destroy();
      this.endWatcher(w);
    }
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** Writes a kubeconfig pointing at this server (plain HTTP, a bearer token) and returns its path. */
  writeKubeconfig(dir: string, token = 'test-token'): string {
    const path = join(dir, 'kubeconfig');
    writeFileSync(
      path,
      [
        'apiVersion: v1',
        'kind: Config',
        'clusters:',
        '- name: fake',
        '  cluster:',
        `    server: ${this.url}`,
        // client-node refuses plain http unless TLS verification is explicitly off.
        '    insecure-skip-tls-verify: true',
        'users:',
        '- name: tester',
        '  user:',
        `    token: ${token}`,
        'contexts:',
        '- name: fake',
        '  context:',
        '    cluster: fake',
        '    user: tester',
        'current-context: fake',
        '',
      ].join('\n'),
    );
    return path;
  }

  // --- state -----------------------------------------------------------------

  get resourceVersion(): string {
    return String(this.rv);
  }

  /** Creates or replaces an object (kind from obj.kind); watchers get ADDED or MODIFIED. */
  apply(obj: Obj): Obj {
    const kind = obj.kind!;
    const m = this.kindStore(kind);
    const key = keyOf(obj);
    const prev = m.get(key);
    const o = clone(obj);
    o.metadata.resourceVersion = String(++this.rv);
    o.metadata.uid = prev?.metadata.uid ?? `uid-${++this.uid}`;
    m.set(key, o);
    this.record(kind, prev ? 'MODIFIED' : 'ADDED', o);
    return clone(o);
  }

  /** Deletes an object; watchers get DELETED with its last state. */
  remove(kind: string, key: string): void {
    const m = this.kindStore(kind);
    const prev = m.get(key);
    if (!prev) throw new Error(`fake apiserver: no ${kind} ${key}`);
    m.delete(key);
    const o = clone(prev);
    o.metadata.resourceVersion = String(++this.rv);
    this.record(kind, 'DELETED', o);
  }

  get(kind: string, key: string): Obj | undefined {
    const o = this.kindStore(kind).get(key);
    return o && clone(o);
  }

  list(kind: string): Obj[] {
    return [...this.kindStore(kind).values()].map(clone);
  }

  /** Forgets the event history: a watch from any older resourceVersion now gets 410 Gone. */
  compact(): void {
    this.compactedRv = this.rv;
    this.history = [];
  }

  /** Sends a BOOKMARK at the current resourceVersion to every watcher that asked for them. */
  bookmark(kind?: string): number {
    let n = 0;
    for (const w of this.watchers) {
      if (!w.bookmarks || (kind && w.kind !== kind)) continue;
      const r = this.resource(w.kind);
      this.send(w, { type: 'BOOKMARK', object: { kind: r.kind, apiVersion: r.apiVersion, metadata: { resourceVersion: String(this.rv) } } });
      n++;
    }
    return n;
  }

  /** Cuts watch connections without a goodbye (a network failure). */
  dropWatches(kind?: string): number {
    let n = 0;
    for (const w of [...this.watchers]) {
      if (kind && w.kind !== kind) continue;
      w.res.socket?.destroy();
      this.endWatcher(w);
      n++;
    }
    return n;
  }

  /** Ends watch streams cleanly, as the server does when a watch's timeoutSeconds is up. */
  endWatches(kind?: string): number {
    let n = 0;
    for (const w of [...this.watchers]) {
      if (kind && w.kind !== kind) continue;
      w.res.end();
      this.endWatcher(w);
      n++;
    }
    return n;
  }

  /** Ends watches with the real server's 410 ERROR event (as after an etcd compaction). */
  expireWatches(kind?: string): number {
    let n = 0;
    for (const w of [...this.watchers]) {
      if (kind && w.kind !== kind) continue;
      this.send(w, { type: 'ERROR', object: status(410, 'Expired', `too old resource version: ${this.compactedRv} (${this.rv})`) });
      w.res.end();
      this.endWatcher(w);
      n++;
    }
    return n;
  }

  /** The next `count` requests of this verb (and kind) fail with `code` (Infinity: until cleared). */
  failNext(verb: 'list' | 'watch' | 'patch', code: number, opts: { kind?: string; count?: number } = {}): void {
    this.failures.push({ verb, code, left: opts.count ?? 1, ...(opts.kind ? { kind: opts.kind } : {}) });
  }

  clearFailures(): void {
    this.failures.length = 0;
  }

  watcherCount(kind?: string): number {
    return [...this.watchers].filter((w) => !kind || w.kind === kind).length;
  }

  /** Resolves when pred() holds, re-checking on server activity; rejects after timeoutMs. */
  waitFor(pred: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
    return new Promise((resolve, reject) => {
      if (pred()) return resolve();
      const check = () => {
        if (!pred()) return;
        cleanup();
        resolve();
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`fake apiserver: timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.events.off('activity', check);
      };
      this.events.on('activity', check);
    });
  }

  // --- HTTP ------------------------------------------------------------------

  private kindStore(kind: string): Map<string, Obj> {
    const m = this.store.get(kind);
    if (!m) throw new Error(`fake apiserver: unknown kind ${kind}`);
    return m;
  }

  private resource(kind: string): FakeResource {
    return FAKE_RESOURCES.find((r) => r.kind === kind)!;
  }

  private record(kind: string, type: EventType, obj: Obj): void {
    this.history.push({ rv: this.rv, kind, type, obj });
    for (const w of this.watchers) if (w.kind === kind) this.send(w, { type, object: this.wire(kind, obj) });
    this.events.emit('activity');
  }

  private wire(kind: string, o: Obj): Obj {
    const r = this.resource(kind);
    return { ...clone(o), kind: r.kind, apiVersion: r.apiVersion };
  }

  private send(w: Watcher, ev: unknown): void {
    if (!w.res.writableEnded) w.res.write(JSON.stringify(ev) + '\n');
  }

  private endWatcher(w: Watcher): void {
    clearTimeout(w.timer);
    if (!this.watchers.delete(w)) return;
    this.events.emit('activity');
  }

  private fail(verb: 'list' | 'watch' | 'patch', kind: string): number | undefined {
    const f = this.failures.find((x) => x.verb === verb && (!x.kind || x.kind === kind) && x.left > 0);
    if (!f) return undefined;
    f.left--;
    return f.code;
  }

  private json(res: ServerResponse, code: number, body: unknown): void {
    const text = JSON.stringify(body);
    res.writeHead(code, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
    res.end(text);
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://x');
    const query = Object.fromEntries(url.searchParams);
    const watch = query.watch === 'true' || query.watch === '1';
    this.requests.push({ method: req.method ?? 'GET', path: url.pathname, query, watch });
    this.events.emit('activity');

    if (req.headers.authorization !== undefined && !/^Bearer \S+$/.test(req.headers.authorization)) {
      return this.json(res, 401, status(401, 'Unauthorized', 'Unauthorized'));
    }
    const coll = FAKE_RESOURCES.find((r) => r.path === url.pathname);
    if (req.method === 'GET' && coll) return watch ? this.watch(coll, query, res) : this.listResp(coll, query, res);
    const m = /^\/api\/v1\/nodes\/([^/]+)$/.exec(url.pathname);
    if (req.method === 'PATCH' && m) return this.patchNode(decodeURIComponent(m[1]!), req, res);
    this.json(res, 404, status(404, 'NotFound', `the server could not find the requested resource (${req.method} ${url.pathname})`));
  }

  private listResp(r: FakeResource, q: Record<string, string>, res: ServerResponse): void {
    const code = this.fail('list', r.kind);
    if (code) return this.json(res, code, status(code, 'InternalError', 'injected list failure'));
    if (q.resourceVersion && q.resourceVersion !== '0' && Number(q.resourceVersion) < this.compactedRv) {
      return this.json(res, 410, status(410, 'Expired', `too old resource version: ${q.resourceVersion} (${this.rv})`));
    }
    const all = [...this.kindStore(r.kind).entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, o]) => o);
    let offset = 0;
    let listRv = this.rv;
    if (q.continue) {
      const tok = JSON.parse(Buffer.from(q.continue, 'base64url').toString()) as { rv: number; offset: number };
      offset = tok.offset;
      listRv = tok.rv;
    }
    const limit = q.limit ? Number(q.limit) : Infinity;
    const page = all.slice(offset, offset + limit);
    const more = offset + page.length < all.length;
    const metadata: Record<string, string> = { resourceVersion: String(listRv) };
    if (more) metadata.continue = Buffer.from(JSON.stringify({ rv: listRv, offset: offset + page.length })).toString('base64url');
    // Items of a list carry no kind/apiVersion on the wire.
    this.json(res, 200, { kind: `${r.kind}List`, apiVersion: r.apiVersion, metadata, items: page.map((o) => {
      const { kind: _k, apiVersion: _a, ...rest } = clone(o);
      return rest;
    }) });
  }

  private watch(r: FakeResource, q: Record<string, string>, res: ServerResponse): void {
    const code = this.fail('watch', r.kind);
    if (code) return this.json(res, code, status(code, code === 410 ? 'Expired' : 'InternalError', 'injected watch failure'));
    const from = q.resourceVersion ?? '';
    const tooOld = from !== '' && from !== '0' && Number(from) < this.compactedRv;
    if (tooOld && this.expireMode === 'http') {
      return this.json(res, 410, status(410, 'Expired', `too old resource version: ${from} (${this.rv})`));
    }
    res.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' });
    res.flushHeaders();
    const w: Watcher = { kind: r.kind, bookmarks: q.allowWatchBookmarks === 'true', res };
    if (tooOld) {
      this.send(w, { type: 'ERROR', object: status(410, 'Expired', `too old resource version: ${from} (${this.compactedRv})`) });
      res.end();
      return;
    }
    if (from === '' || from === '0') {
      for (const o of this.kindStore(r.kind).values()) this.send(w, { type: 'ADDED', object: this.wire(r.kind, o) });
    } else {
      for (const h of this.history) if (h.kind === r.kind && h.rv > Number(from)) this.send(w, { type: h.type, object: this.wire(r.kind, h.obj) });
    }
    this.watchers.add(w);
    if (q.timeoutSeconds) {
      w.timer = setTimeout(() => {
        res.end();
        this.endWatcher(w);
      }, Number(q.timeoutSeconds) * 1000);
      w.timer.unref();
    }
    res.on('close', () => this.endWatcher(w));
    this.events.emit('activity');
  }

  private patchNode(name: string, req: IncomingMessage, res: ServerResponse): void {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (body += c));
    req.on('end', () => {
      const contentType = String(req.headers['content-type'] ?? '');
      let patch: unknown;
      try {
        patch = JSON.parse(body);
      } catch {
        return this.json(res, 400, status(400, 'BadRequest', 'patch body is not JSON'));
      }
      this.patches.push({ name, contentType, body: patch });
      const code = this.fail('patch', 'Node');
      if (code) return this.json(res, code, status(code, 'InternalError', 'injected patch failure'));
      if (!/^application\/(merge-patch|strategic-merge-patch)\+json/.test(contentType)) {
        return this.json(res, 415, status(415, 'UnsupportedMediaType', `the fake supports merge patches only, got ${contentType}`));
      }
      const node = this.kindStore('Node').get(name);
      if (!node) return this.json(res, 404, status(404, 'NotFound', `nodes "${name}" not found`));
      const updated = mergePatch(node, patch) as Obj;
      updated.metadata.name = name;
      const stored = this.apply({ ...updated, kind: 'Node' });
      this.json(res, 200, this.wire('Node', stored));
    });
  }
}
