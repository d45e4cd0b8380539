// Canonical JSON wherever bytes must be stable: state files, hashes, golden outputs.
import stringify from 'fast-json-stable-stringify';
import { createHash } from 'node:crypto';

export const canonical = (v: unknown): string => stringify(v);
export const hashOf = (v: unknown): string => createHash('sha256').update(stringify(v)).digest('hex').slice(0, 16);
