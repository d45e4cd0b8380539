// A seeded pseudo-random generator for tests, fuzzing, generated scenarios and the
// packet tracer's `numgen random`: mulberry32 (small, fast, good enough for these;
// the same seed always gives the same stream). Not for anything secret.
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
