// host-local: configuration validation, the allocation strategy over the in-memory
// store, and the disk store's format and exclusivity in a temp dir (no root).
import t from 'tap';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Allocator, DiskStore, HostLocal, IpamError, MemoryStore, parseIpamConfig } from '../../src/ipam/index.js';

const conf = (ipam: Record<string, unknown>) => parseIpamConfig({ type: 'host-local', dataDir: '/tmp/x', ...ipam }, { networkName: 'net' });
const ipOf = (a: { address: string }) => a.address.split('/')[0];

t.test('config: defaults and the older single-subnet form', async (t) => {
  const c = conf({ subnet: '10.1.2.0/24' });
  t.equal(c.rangeSets.length, 1);
  const r = c.rangeSets[0]!.ranges[0]!;
  t.equal(r.gateway, '10.1.2.1');
  t.equal(r.start, 0x0a010201n, 'IPv4 starts after the network address');
  t.equal(r.end, 0x0a0102fen, 'and ends before broadcast');
  t.equal(c.dir, '/tmp/x/net');
  const v6 = conf({ ranges: [[{ subnet: 'fd00:1::/120' }]] }).rangeSets[0]!.ranges[0]!;
  t.equal(v6.end & 0xffn, 0xffn, 'IPv6 may use the last address');
  t.equal(conf({ ranges: [[{ subnet: '10.0.0.0/24' }]] }).dir, '/tmp/x/net');
  t.equal(parseIpamConfig({ type: 'host-local', subnet: '10.0.0.0/24' }, { networkName: 'n' }).dir, '/var/lib/cni/networks/n');
});

t.test('config: every bad value is rejected with its field and value', async (t) => {
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ['no ranges', {}, /ipam\.ranges: missing/],
    ['empty ranges', { ranges: [] }, /ipam\.ranges: invalid value \[\]/],
    ['empty set', { ranges: [[]] }, /ipam\.ranges\[0\]: invalid value \[\]/],
    ['not a CIDR', { ranges: [[{ subnet: '10.0.0.0' }]] }, /ipam\.ranges\[0\]\[0\]\.subnet: invalid value "10\.0\.0\.0"/],
    ['host bits', { ranges: [[{ subnet: '10.0.0.5/24' }]] }, /subnet: invalid value "10\.0\.0\.5\/24" \(host bits set; the network is 10\.0\.0\.0\/24\)/],
    ['/31', { ranges: [[{ subnet: '10.0.0.0/31' }]] }, /too small/],
    ['/32', { subnet: '10.0.0.0/32' }, /ipam\.subnet: invalid value "10\.0\.0\.0\/32" \(too small/],
    ['/127', { ranges: [[{ subnet: 'fd00::/127' }]] }, /too small/],
    ['start outside', { ranges: [[{ subnet: '10.0.0.0/24', rangeStart: '10.0.1.5' }]] }, /ipam\.ranges\[0\]\[0\]\.rangeStart: invalid value "10\.0\.1\.5" \(not inside subnet/],
    ['end before start', { ranges: [[{ subnet: '10.0.0.0/24', rangeStart: '10.0.0.50', rangeEnd: '10.0.0.10' }]] }, /rangeEnd: invalid value "10\.0\.0\.10"/],
    ['start is network', { ranges: [[{ subnet: '10.0.0.0/24', rangeStart: '10.0.0.0' }]] }, /rangeStart: invalid value "10\.0\.0\.0"/],
    ['bad gateway', { ranges: [[{ subnet: '10.0.0.0/24', gateway: 'x' }]] }, /gateway: invalid value "x" \(an IP address\)/],
    ['gateway outside', { subnet: '10.0.0.0/24', gateway: '10.9.9.9' }, /ipam\.gateway: invalid value "10\.9\.9\.9" \(not inside subnet/],
    ['mixed family set', { ranges: [[{ subnet: '10.0.0.0/24' }, { subnet: 'fd00::/64' }]] }, /ranges\[0\]\[1\]\.subnet: .*IPv4 like the first/],
    ['overlap across sets', { ranges: [[{ subnet: '10.0.0.0/24' }], [{ subnet: '10.0.0.0/25' }]] }, /ipam\.ranges\[1\]\[0\]: range 10\.0\.0\.0\/25 overlaps ranges\[0\]\[0\]/],
    ['overlap with subnet form', { subnet: '10.0.0.0/24', ranges: [[{ subnet: '10.0.0.0/24' }]] }, /overlaps subnet/],
    ['route dst', { subnet: '10.0.0.0/24', routes: [{ dst: 'nope' }] }, /ipam\.routes\[0\]\.dst: invalid value "nope"/],
    ['route gw family', { subnet: '10.0.0.0/24', routes: [{ dst: '0.0.0.0/0', gw: 'fd00::1' }] }, /ipam\.routes\[0\]\.gw: invalid value "fd00::1"/],
    ['relative dataDir', { subnet: '10.0.0.0/24', dataDir: 'rel' }, /ipam\.dataDir: invalid value "rel"/],
    ['subnet type', { subnet: 5 }, /ipam\.subnet: invalid value 5 \(a string\)/],
  ];
  for (const [name, ipam, re] of cases) {
    t.throws(() => conf(ipam), re, name);
    try {
      conf(ipam);
    } catch (e) {
      t.ok(e instanceof IpamError && e.cniCode === 7, `${name}: code 7`);
    }
  }
});

t.test('allocation continues after the last reserved address and wraps', async (t) => {
  const store = new MemoryStore();
  const a = new Allocator(conf({ ranges: [[{ subnet: '10.0.0.0/29' }]] }), store); // .2-.6 usable, .1 gateway
  const got = ['a', 'b', 'c'].map((id) => ipOf(a.allocate(id, 'eth0').ips[0]!));
  t.same(got, ['10.0.0.2', '10.0.0.3', '10.0.0.4']);
  t.same(a.release('a', 'eth0'), ['10.0.0.2']);
  t.equal(ipOf(a.allocate('d', 'eth0').ips[0]!), '10.0.0.5', 'a freed address is not handed out at once');
  t.equal(ipOf(a.allocate('e', 'eth0').ips[0]!), '10.0.0.6');
  t.equal(ipOf(a.allocate('f', 'eth0').ips[0]!), '10.0.0.2', 'wraps to the start, skipping the gateway');
  t.throws(() => a.allocate('g', 'eth0'), /no IP addresses available in range set 10\.0\.0\.1-10\.0\.0\.6/);
  t.same(a.status(), { ok: false, reason: 'no IP addresses available in range set 10.0.0.1-10.0.0.6' });
  a.release('c', 'eth0');
  t.same(a.status(), { ok: true });
  t.ok(store.locked === 0, 'every operation released the lock');
});

t.test('ranges: rangeStart/rangeEnd, several ranges in one set, custom gateway', async (t) => {
  const a = new Allocator(conf({ ranges: [[
    { subnet: '10.0.0.0/24', rangeStart: '10.0.0.10', rangeEnd: '10.0.0.11', gateway: '10.0.0.11' },
    { subnet: '10.0.1.0/24', rangeStart: '10.0.1.200', rangeEnd: '10.0.1.200' },
  ]] }), new MemoryStore());
  const r1 = a.allocate('a', 'eth0').ips[0]!;
  t.same(r1, { address: '10.0.0.10/24', gateway: '10.0.0.11', fresh: true });
  const r2 = a.allocate('b', 'eth0').ips[0]!;
  t.same(r2, { address: '10.0.1.200/24', gateway: '10.0.1.1', fresh: true }, 'the gateway .11 is skipped; next range');
  t.throws(() => a.allocate('c', 'eth0'), /no IP addresses available/);
});

t.test('dual-stack: one address per range set, all or nothing', async (t) => {
  const store = new MemoryStore();
  const a = new Allocator(conf({ ranges: [[{ subnet: '10.0.0.0/30' }], [{ subnet: 'fd00::/64' }]], routes: [{ dst: '0.0.0.0/0' }, { dst: '::/0' }] }), store);
  const r = a.allocate('a', 'eth0');
  t.same(r.ips.map((i) => i.address), ['10.0.0.2/30', 'fd00::2/64']);
  t.same(r.ips.map((i) => i.gateway), ['10.0.0.1', 'fd00::1']);
  t.same(r.routes, [{ dst: '0.0.0.0/0' }, { dst: '::/0' }]);
  t.throws(() => a.allocate('b', 'eth0'), /no IP addresses available in range set 10\.0\.0\.1-10\.0\.0\.2/);
  t.equal(store.all().length, 2, 'the IPv6 address of the failed ADD was not kept (v4 failed first)');
  // Exhaust v6 the other way round: v4 free, v6 taken by request.
  const b = new Allocator(conf({ ranges: [[{ subnet: '10.1.0.0/24' }], [{ subnet: 'fd01::/126' }]] }), new MemoryStore());
  b.allocate('x', 'eth0', ['fd01::2']);
  b.allocate('y', 'eth0', ['fd01::3']);
  const before = b.store.all().length;
  t.throws(() => b.allocate('z', 'eth0'), /no IP addresses available in range set fd01::1-fd01::3/);
  t.equal(b.store.all().length, before, 'the IPv4 address reserved before the IPv6 failure was released');
});

t.test('requested addresses', async (t) => {
  const a = new Allocator(conf({ ranges: [[{ subnet: '10.0.0.0/24' }], [{ subnet: 'fd00::/64' }]] }), new MemoryStore());
  t.same(a.allocate('a', 'eth0', ['10.0.0.77']).ips.map((i) => i.address), ['10.0.0.77/24', 'fd00::2/64']);
  t.throws(() => a.allocate('b', 'eth0', ['10.0.0.77']), /requested IP address 10\.0\.0\.77 is not available: reserved by container a eth0/);
  t.throws(() => a.allocate('b', 'eth0', ['10.9.0.1']), /requested IP address 10\.9\.0\.1 is not in any range set/);
  t.throws(() => a.allocate('b', 'eth0', ['10.0.0.1']), /is the gateway/);
  t.throws(() => a.allocate('b', 'eth0', ['10.0.0.5', '10.0.0.6']), /same range set/);
  t.same(a.allocate('c', 'eth0', ['fd00::99']).ips.map((i) => i.address), ['10.0.0.2/24', 'fd00::99/64']);
});

t.test('a retried ADD gets the same addresses, marked not fresh', async (t) => {
  const a = new Allocator(conf({ subnet: '10.0.0.0/24' }), new MemoryStore());
  const first = a.allocate('a', 'eth0').ips[0]!;
  const again = a.allocate('a', 'eth0').ips[0]!;
  t.equal(again.address, first.address);
  t.equal(again.fresh, false);
  t.not(ipOf(a.allocate('a', 'eth1').ips[0]!), ipOf(first), 'another interface of the same container gets its own');
  t.same(a.held('a', 'eth0'), [ipOf(first)]);
});

t.test('gc keeps valid attachments and removes the rest', async (t) => {
  const store = new MemoryStore();
  const a = new Allocator(conf({ subnet: '10.0.0.0/24' }), store);
  for (const id of ['a', 'b', 'c']) a.allocate(id, 'eth0');
  store.reserve('10.0.0.200', 'legacy', ''); // a record without ifname
  const gone = a.gc([{ containerID: 'b', ifname: 'eth0' }, { containerID: 'legacy', ifname: 'eth0' }]);
  t.same(gone.map((r) => r.containerId).sort(), ['a', 'c']);
  t.same(store.all().map((r) => r.containerId).sort(), ['b', 'legacy']);
});

t.test('disk store: upstream-compatible files, exclusive, survives restarts', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'skiff-ipam-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const c = parseIpamConfig({ type: 'host-local', dataDir: dir, ranges: [[{ subnet: '10.5.0.0/24' }], [{ subnet: 'fd05::/64' }]] }, { networkName: 'pods' });
  const hl = new HostLocal(c, 'pods');
  const r = hl.allocate('cid1', 'eth0');
  t.same(r.ips.map((i) => i.address), ['10.5.0.2/24', 'fd05::2/64']);
  t.equal(readFileSync(join(dir, 'pods', '10.5.0.2'), 'utf8'), 'cid1\r\neth0');
  t.equal(readFileSync(join(dir, 'pods', 'last_reserved_ip.0'), 'utf8'), '10.5.0.2');
  t.equal(readFileSync(join(dir, 'pods', 'last_reserved_ip.1'), 'utf8'), 'fd05::2');
  // A new instance (the next plugin invocation) continues after the last one.
  const hl2 = new HostLocal(c, 'pods');
  hl2.release('cid1', 'eth0');
  t.same(hl2.allocate('cid2', 'eth0').ips.map((i) => i.address), ['10.5.0.3/24', 'fd05::3/64']);
  // A file written by someone else is respected.
  writeFileSync(join(dir, 'pods', '10.5.0.4'), 'other\r\neth0');
  t.equal(ipOf(hl2.allocate('cid3', 'eth0').ips[0]!), '10.5.0.5');
  t.same(hl2.check('cid3', 'eth0'), ['10.5.0.5', 'fd05::4']);
  t.same(readdirSync(join(dir, 'pods')).filter((n) => n.includes('.tmp')), [], 'no temp files left');
  const store = new DiskStore(join(dir, 'pods'));
  t.equal(store.reserve('10.5.0.5', 'x', 'eth0'), false, 'O_EXCL: an existing reservation is never overwritten');
  t.same(hl2.status(), { ok: true });
});

t.test('status reports an unwritable data dir', { skip: process.getuid?.() === 0 ? 'root can write anywhere; covered by the integration test' : false }, async (t) => {
  const c = parseIpamConfig({ type: 'host-local', dataDir: '/proc/skiff', subnet: '10.0.0.0/24' }, { networkName: 'n' });
  const s = new HostLocal(c, 'n').status();
  t.equal(s.ok, false);
});

t.test('status reports an unusable data dir even as root', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'skiff-ipam-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'file'), '');
  // A data dir below a regular file can never be created, whoever we are.
  const c = parseIpamConfig({ type: 'host-local', dataDir: join(dir, 'file'), subnet: '10.0.0.0/24' }, { networkName: 'n' });
  const s = new HostLocal(c, 'n').status();
  t.equal(s.ok, false);
  t.match((s as { reason: string }).reason, /data directory .* is not writable/);
});
