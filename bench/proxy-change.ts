// One changed service at N services, the netlink batch alone, on a settled node:
//   sudo node dist/bench/proxy-change.js [SERVICES=10000] [CHANGES=20]
// A proxier syncs N services × 10 endpoints (bench/proxy-services.ts) into a private
// namespace, waits 2 s, then changes one service's port CHANGES times (each followed by
// the sync that deletes the stale chain) and prints the median batch time. It isolates
// the kernel's per-commit cost that docs/proxy.md ("Service shards") is about; run it
// on two checkouts to compare table layouts. `npm run bench -- proxy` has the full figures.
import { NftNetlink } from '../src/os/nftnl.js';
import { NetnsSandbox } from '../src/os/sandbox.js';
import { MemoryView } from '../src/proxy/fixtures.js';
import { median } from './lib.js';
import { TimedNft, benchProxier, mkSlice, mkSvc } from './proxy-services.js';

const n = Number(process.argv[2] ?? 10_000);
const reps = Number(process.argv[3] ?? 20);
if (!Number.isInteger(n) || n < 200 || !Number.isInteger(reps) || reps < 1) {
  console.error('usage: node dist/bench/proxy-change.js [SERVICES >= 200] [CHANGES >= 1]');
  process.exit(2);
}
if (process.getuid?.() !== 0) {
  console.error('proxy-change needs root (a network namespace)');
  process.exit(2);
}
const sandbox = new NetnsSandbox('skt-');
try {
  const ns = sandbox.create('pxchg');
  const view = new MemoryView();
  for (let i = 0; i < n; i++) view.put(mkSvc(i), mkSlice(i));
  const nft = new TimedNft(new NftNetlink({ netnsPath: `/run/netns/${ns.name}` }));
  const proxier = benchProxier(view, nft, 'proxy-change');
  await proxier.sync({ full: true, changes: [] });
  await new Promise((r) => setTimeout(r, 2000));
  const times: number[] = [];
  for (let r = 0; r < reps; r++) {
    await proxier.sync({ full: false, changes: view.put(mkSvc(17 + ((r * 101) % (n - 20)), 81 + r)) });
    times.push(nft.last);
    await proxier.sync({ full: false, changes: [] });
  }
  await proxier.close();
  console.log(`one changed service at ${n.toLocaleString('en-US')} services: netlink batch median ${median(times).toFixed(2)} ms over ${reps} (${times.map((x) => x.toFixed(1)).join(' ')})`);
} finally {
  sandbox.removeAll();
}
