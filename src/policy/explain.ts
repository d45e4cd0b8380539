// `skiff policy explain`: loading the cluster state from a manifest directory and
// rendering a verdict for people. The deciding is all in evaluator.ts.
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import type { Namespace, NetworkPolicy, Pod } from '../cluster/types.js';
import { type Connection, type ConnEndpoint, type DirectionVerdict, type PolicyStateInput, type Verdict, PolicyState, evaluate } from './evaluator.js';

export interface LoadedManifests extends Required<PolicyStateInput> {
  namespaces: Namespace[];
  pods: Pod[];
  policies: NetworkPolicy[];
  /** Files read, in order. */
  files: string[];
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * Reads every *.yaml / *.yml file of a directory (not recursive, in name order),
 * every document of each, and keeps the Namespaces, Pods and NetworkPolicies
 * (also inside `kind: List`). Namespaced objects without a namespace get "default",
 * as kubectl apply would do.
 */
export async function loadManifestDir(dir: string): Promise<LoadedManifests> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (e) {
    throw new Error(`manifests: cannot read directory ${JSON.stringify(dir)}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const out: LoadedManifests = { namespaces: [], pods: [], policies: [], files: [] };
  const keep = (obj: unknown, where: string) => {
    if (!isRecord(obj)) return;
    if (obj.kind === 'List' && Array.isArray(obj.items)) {
      obj.items.forEach((it, i) => keep(it, `${where} items[${i}]`));
      return;
    }
    if (obj.kind !== 'Namespace' && obj.kind !== 'Pod' && obj.kind !== 'NetworkPolicy') return;
    const meta = obj.metadata;
    if (!isRecord(meta) || typeof meta.name !== 'string' || meta.name === '') throw new Error(`${where}: ${String(obj.kind)} without metadata.name`);
    if (obj.kind === 'Namespace') {
      out.namespaces.push(obj as unknown as Namespace);
      return;
    }
    if (meta.namespace === undefined) meta.namespace = 'default';
    if (obj.kind === 'Pod') {
      if (!isRecord(obj.spec)) obj.spec = { containers: [] };
      out.pods.push(obj as unknown as Pod);
    } else {
      // Validation (with reasons) happens in the evaluator; a broken policy is kept so it can be reported.
      out.policies.push(obj as unknown as NetworkPolicy);
    }
  };
  for (const name of names.filter((n) => /\.ya?ml$/.test(n)).sort()) {
    const file = join(dir, name);
    const text = await readFile(file, 'utf8');
    out.files.push(file);
    parseAllDocuments(text).forEach((doc, i) => {
      if ('errors' in doc && doc.errors.length) throw new Error(`${file}: document ${i + 1}: ${doc.errors[0]!.message}`);
      keep(doc.toJS(), `${file}: document ${i + 1}`);
    });
  }
  return out;
}

/** "ns/pod", "pod" (namespace default) or an IP address. */
export function parseEndpoint(s: string): ConnEndpoint {
  if (/^[0-9.]+$/.test(s) || s.includes(':')) return { ip: s };
  const parts = s.split('/');
  if (parts.length === 1 && parts[0]) return { pod: `default/${parts[0]}` };
  if (parts.length === 2 && parts[0] && parts[1]) return { pod: s };
  throw new Error(`${JSON.stringify(s)} is not NAMESPACE/POD or an IP address`);
}

const endpointText = (e: ConnEndpoint): string => ('pod' in e ? e.pod : e.ip);

function directionSummary(dir: 'egress' | 'ingress', d: DirectionVerdict): string {
  const head = `${dir.padEnd(7)} ${d.subject ?? '(not a pod)'}`;
  if (!d.subject) return `${head}: no ${dir} policy applies`;
  if (!d.isolated) return `${head}: not isolated: allowed`;
  const by = d.allowedBy
    ? `allowed by ${d.allowedBy.policy} ${dir}[${d.allowedBy.ruleIndex}]` +
      (d.allowedBy.peerIndex !== undefined ? ` ${dir === 'ingress' ? 'from' : 'to'}[${d.allowedBy.peerIndex}]` : '') +
      (d.allowedBy.portIndex !== undefined ? ` ports[${d.allowedBy.portIndex}]` : '')
    : d.allowed
      ? 'allowed'
      : 'DENIED';
  return `${head}: isolated by ${d.policies.join(', ')}: ${by}`;
}

/** The verdict as readable text (several lines, newline-terminated). */
export function formatVerdict(conn: Connection, v: Verdict): string {
  const lines = [
    `${v.allowed ? 'ALLOWED' : 'DENIED'}: ${conn.fromNode ? `${endpointText(conn.from)} (node)` : endpointText(conn.from)} -> ${endpointText(conn.to)} ${conn.protocol ?? 'TCP'}/${conn.port}`,
    `  ${directionSummary('egress', v.egress)}`,
    `  ${directionSummary('ingress', v.ingress)}`,
    'why:',
    ...v.reasons.map((r) => `  ${r}`),
  ];
  return lines.join('\n') + '\n';
}

/** Evaluates and renders in one go (the CLI's core, usable from tests and the lab). */
export function explain(state: PolicyState | PolicyStateInput, conn: Connection): { verdict: Verdict; text: string } {
  const verdict = evaluate(state, conn);
  return { verdict, text: formatVerdict(conn, verdict) };
}
