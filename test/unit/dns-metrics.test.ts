// histogramQuantile: Prometheus' histogram_quantile over cumulative bucket counts.
import t from 'tap';
import { histogramQuantile } from '../../src/dns/metrics.js';

t.test('linear within the bucket that holds the rank', async (t) => {
  const bounds = [0.001, 0.002, 0.004];
  // 10 in (0, 1 ms], 80 in (1, 2 ms], 10 in (2, 4 ms]
  const cum = [10, 90, 100];
  t.equal(histogramQuantile(0.05, bounds, cum, 100), 0.0005);
  t.equal(histogramQuantile(0.5, bounds, cum, 100), 0.0015);
  t.ok(Math.abs(histogramQuantile(0.99, bounds, cum, 100) - 0.0038) < 1e-12, 'p99: 2 ms + 9/10 of the (2, 4 ms] bucket');
  t.equal(histogramQuantile(1, bounds, cum, 100), 0.004);
});

t.test('above every finite bound: the last bound; empty: NaN', async (t) => {
  t.equal(histogramQuantile(0.99, [0.001, 0.002], [5, 6], 10), 0.002, 'four of ten samples were above 2 ms');
  t.ok(Number.isNaN(histogramQuantile(0.5, [0.001], [0], 0)));
  t.equal(histogramQuantile(0.5, [0.001, 0.002], [0, 4], 4), 0.0015, 'an empty first bucket is skipped');
});
