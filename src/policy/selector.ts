// Label selectors (metav1.LabelSelector): validation with field paths, and
// compilation into a predicate so that evaluating a selector against many objects
// (an N×N reachability matrix, a compiler enumerating pod sets) costs one pass over
// its requirements and no re-parsing.
import type { LabelSelector, LabelSelectorRequirement } from '../cluster/types.js';

export type Labels = Readonly<Record<string, string>>;
export type LabelPredicate = (labels: Labels | undefined) => boolean;

export const OPERATORS: readonly LabelSelectorRequirement['operator'][] = ['In', 'NotIn', 'Exists', 'DoesNotExist'];

const NAME_RE = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const DNS1123_SUBDOMAIN_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

const q = (v: unknown): string => JSON.stringify(v);
const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Why a label key is invalid (a Kubernetes "qualified name": optional DNS prefix + "/" + name), or undefined. */
export function labelKeyProblem(key: string): string | undefined {
  const parts = key.split('/');
  if (parts.length > 2) return 'a label key has at most one "/"';
  const name = parts[parts.length - 1]!;
  if (parts.length === 2) {
    const prefix = parts[0]!;
    if (prefix.length === 0) return 'the prefix before "/" must not be empty';
    if (prefix.length > 253 || !DNS1123_SUBDOMAIN_RE.test(prefix)) return 'the prefix must be a DNS subdomain (lowercase alphanumerics, "-" and ".")';
  }
  if (name.length === 0) return 'the name part must not be empty';
  if (name.length > 63) return 'the name part must be no more than 63 characters';
  if (!NAME_RE.test(name)) return 'the name part must consist of alphanumerics, "-", "_" or "." and start and end with an alphanumeric';
  return undefined;
}

/** Why a label value is invalid, or undefined (the empty value is valid). */
export function labelValueProblem(value: string): string | undefined {
  if (value === '') return undefined;
  if (value.length > 63) return 'must be no more than 63 characters';
  if (!NAME_RE.test(value)) return 'must consist of alphanumerics, "-", "_" or "." and start and end with an alphanumeric';
  return undefined;
}

/**
 * Validates a label selector as the API server does (metav1 ValidateLabelSelector):
 * label syntax of keys and values, In/NotIn need at least one value,
 * Exists/DoesNotExist take none, and no other operator exists.
 * Returns "path: problem" strings; empty when valid.
 */
export function validateSelector(sel: unknown, path: string): string[] {
  const out: string[] = [];
  if (sel === undefined || sel === null) return out;
  if (!isRecord(sel)) return [`${path}: must be an object (a label selector), got ${q(sel)}`];
  for (const field of Object.keys(sel)) {
    if (field !== 'matchLabels' && field !== 'matchExpressions') out.push(`${path}: unknown field ${q(field)} (matchLabels, matchExpressions)`);
  }
  const ml = sel.matchLabels;
  if (ml !== undefined && ml !== null) {
    if (!isRecord(ml)) out.push(`${path}.matchLabels: must be a map of label keys to values, got ${q(ml)}`);
    else {
      for (const [k, v] of Object.entries(ml)) {
        const p = `${path}.matchLabels[${q(k)}]`;
        const kp = labelKeyProblem(k);
        if (kp) out.push(`${p}: invalid label key ${q(k)}: ${kp}`);
        if (typeof v !== 'string') out.push(`${p}: value must be a string, got ${q(v)}`);
        else {
          const vp = labelValueProblem(v);
          if (vp) out.push(`${p}: invalid label value ${q(v)}: ${vp}`);
        }
      }
    }
  }
  const me = sel.matchExpressions;
  if (me !== undefined && me !== null) {
    if (!Array.isArray(me)) out.push(`${path}.matchExpressions: must be a list, got ${q(me)}`);
    else me.forEach((r: unknown, i) => out.push(...validateRequirement(r, `${path}.matchExpressions[${i}]`)));
  }
  return out;
}

function validateRequirement(r: unknown, path: string): string[] {
  if (!isRecord(r)) return [`${path}: must be an object {key, operator, values}, got ${q(r)}`];
  const out: string[] = [];
  if (typeof r.key !== 'string' || r.key === '') out.push(`${path}.key: required (a label key), got ${q(r.key)}`);
  else {
    const kp = labelKeyProblem(r.key);
    if (kp) out.push(`${path}.key: invalid label key ${q(r.key)}: ${kp}`);
  }
  const values = r.values;
  const n = Array.isArray(values) ? values.length : 0;
  if (values !== undefined && values !== null && !Array.isArray(values)) out.push(`${path}.values: must be a list of strings, got ${q(values)}`);
  switch (r.operator) {
    case 'In':
    case 'NotIn':
      if (n === 0) out.push(`${path}.values: must be non-empty when operator is ${q(r.operator)}`);
      break;
    case 'Exists':
    case 'DoesNotExist':
      if (n > 0) out.push(`${path}.values: must be empty when operator is ${q(r.operator)}, got ${q(values)}`);
      break;
    default:
      out.push(`${path}.operator: unknown operator ${q(r.operator)} (In, NotIn, Exists, DoesNotExist)`);
  }
  if (Array.isArray(values)) {
    values.forEach((v: unknown, i) => {
      if (typeof v !== 'string') out.push(`${path}.values[${i}]: must be a string, got ${q(v)}`);
      else {
        const vp = labelValueProblem(v);
        if (vp) out.push(`${path}.values[${i}]: invalid label value ${q(v)}: ${vp}`);
      }
    });
  }
  return out;
}

export class SelectorError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid label selector: ${problems.join('; ')}`);
    this.name = 'SelectorError';
  }
}

const matchAll: LabelPredicate = () => true;

/**
 * Compiles a selector into a predicate. An empty selector ({} or no requirements)
 * matches everything; absent (undefined) is treated as empty — callers for which
 * "absent" means something else (a peer's namespaceSelector) decide before calling.
 * Requirements are ANDed. NotIn and DoesNotExist match objects that lack the key.
 * Throws SelectorError on an invalid selector (validate first to get every problem).
 */
export function compileSelector(sel: LabelSelector | undefined | null, path = 'selector'): LabelPredicate {
  const problems = validateSelector(sel, path);
  if (problems.length) throw new SelectorError(problems);
  if (!sel) return matchAll;
  const checks: LabelPredicate[] = [];
  for (const [k, v] of Object.entries(sel.matchLabels ?? {})) {
    checks.push((l) => l !== undefined && Object.hasOwn(l, k) && l[k] === v);
  }
  for (const r of sel.matchExpressions ?? []) {
    const key = r.key;
    const values = new Set(r.values ?? []);
    switch (r.operator) {
      case 'In':
        checks.push((l) => l !== undefined && Object.hasOwn(l, key) && values.has(l[key]!));
        break;
      case 'NotIn':
        checks.push((l) => l === undefined || !Object.hasOwn(l, key) || !values.has(l[key]!));
        break;
      case 'Exists':
        checks.push((l) => l !== undefined && Object.hasOwn(l, key));
        break;
      case 'DoesNotExist':
        checks.push((l) => l === undefined || !Object.hasOwn(l, key));
        break;
    }
  }
  if (checks.length === 0) return matchAll;
  if (checks.length === 1) return checks[0]!;
  return (l) => {
    for (const c of checks) if (!c(l)) return false;
    return true;
  };
}

/** One-shot convenience (compiles every time: use compileSelector in loops). */
export function matchesSelector(sel: LabelSelector | undefined | null, labels: Labels | undefined): boolean {
  return compileSelector(sel)(labels);
}

/** True when the selector has no requirements (selects everything). */
export function isEmptySelector(sel: LabelSelector | undefined | null): boolean {
  return !sel || (Object.keys(sel.matchLabels ?? {}).length === 0 && (sel.matchExpressions ?? []).length === 0);
}

/** kubectl's text form: "a=b,c in (d,e),f notin (g),h,!i"; "<all>" for an empty selector. */
export function describeSelector(sel: LabelSelector | undefined | null): string {
  if (isEmptySelector(sel)) return '<all>';
  const parts: string[] = [];
  for (const [k, v] of Object.entries(sel!.matchLabels ?? {})) parts.push(`${k}=${v}`);
  for (const r of sel!.matchExpressions ?? []) {
    const vs = [...(r.values ?? [])].join(',');
    switch (r.operator) {
      case 'In': parts.push(`${r.key} in (${vs})`); break;
      case 'NotIn': parts.push(`${r.key} notin (${vs})`); break;
      case 'Exists': parts.push(r.key); break;
      case 'DoesNotExist': parts.push(`!${r.key}`); break;
      default: parts.push(`${r.key} ${String(r.operator)} (${vs})`);
    }
  }
  return parts.join(',');
}
