// The ruleset for a table of service shapes against golden files in
// test/golden/proxy/*.nft (the fake's canonical dump of the proxy's tables after a full sync).
// Regenerate with UPDATE_GOLDEN=1 and review the diff.
import t from 'tap';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { harness } from '../../src/proxy/fixtures.js';
import { PROXY_TABLES, proxyTableName } from '../../src/proxy/ruleset.js';
import { cases } from '../helpers/proxy-golden-cases.js';

/** The repository root: up from this file until test/golden exists, else the working directory. */
function repoRoot(): string {
  let d = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(d, 'test', 'golden')) && existsSync(join(d, 'package.json'))) return d;
    d = dirname(d);
  }
  return process.cwd();
}
const GOLDEN = join(repoRoot(), 'test', 'golden', 'proxy');

for (const c of cases) {
  t.test(c.name, async (t) => {
    const h = harness(c.cfg);
    const changes = h.view.put(...c.objs);
    await h.proxier.sync({ full: true, changes: [] });
    t.ok(changes.length > 0);
    // The main table, then the service shards (see PROXY_SHARDS), each as the kernel would hold it.
    const got = PROXY_TABLES.map((tb) => h.nft.dumpTable(c.family ?? 'ip', proxyTableName(tb))).join('\n');
    const file = join(GOLDEN, `${c.name}.nft`);
    if (process.env.UPDATE_GOLDEN === '1') {
      mkdirSync(GOLDEN, { recursive: true });
      writeFileSync(file, got);
      t.pass(`wrote ${file}`);
      return;
    }
    t.ok(existsSync(file), `golden file ${file} exists (run with UPDATE_GOLDEN=1 to create it)`);
    t.equal(got, readFileSync(file, 'utf8'), `ruleset matches ${c.name}.nft`);
  });
}
