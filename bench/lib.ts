// Shared pieces of the benchmarks: statistics, timing, the machine's description,
// and the result format that bench/run.ts turns into docs/benchmarks.md.
import { execFileSync } from 'node:child_process';
import { cpus, release, totalmem } from 'node:os';

export interface Row {
  metric: string;
  value: number;
  unit: string;
  /** What the figure is compared with, measured in the same run. */
  anchor?: { name: string; value: number };
  /** A target from the issue, e.g. "<= 30 ms above the floor". */
  target?: string;
  pass?: boolean;
}

export interface Section {
  id: string;
  title: string;
  command: string;
  rows: Row[];
  notes?: string[];
}

export interface Benchmark {
  id: string;
  title: string;
  run(opts: { quick: boolean }): Promise<Section>;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
}

export const round = (x: number, digits = 2) => Math.round(x * 10 ** digits) / 10 ** digits;

export function machine(): Record<string, string> {
  let kernel = release();
  try {
    kernel = execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim();
  } catch {
    /* keep os.release() */
  }
  return {
    cores: String(cpus().length),
    cpu: cpus()[0]?.model ?? 'unknown',
    memory: `${Math.round(totalmem() / 2 ** 30)} GiB`,
    kernel,
    node: process.version,
  };
}
