// The hand-written IP parser (src/util/ip.ts) must accept exactly what node:net's
// isIP accepts (the plugin replaced node:net with it to save start-up time), and
// the plain-JS SHA-256 (src/util/sha256.ts) must equal node:crypto's.
import t from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { isIP as netIsIP } from 'node:net';
import { bytesToIp, ipToBytes, isIP, isIPv4, isIPv6, parseIp } from '../../src/util/ip.js';
import { sha256, sha256Hex } from '../../src/util/sha256.js';

const cases = [
  '', '0.0.0.0', '255.255.255.255', '256.0.0.1', '1.2.3', '1.2.3.4.5', '01.2.3.4', '1.2.3.04', '1..2.3', ' 1.2.3.4', '1.2.3.4 ',
  '::', '::1', '1::', ':', ':::', '1:::2', '::1::', '1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8:9', '1:2:3:4:5:6:7', '1:2:3:4:5:6:7::',
  '::2:3:4:5:6:7:8', '1::3:4:5:6:7:8', '1:2:3:4:5:6::8', '12345::', 'g::1', 'fe80::1%eth0', 'fe80::1%', 'fe80::1%a b', 'fe80::1%1.2:x-y',
  '::ffff:1.2.3.4', '::1.2.3.4', '1:2:3:4:5:6:1.2.3.4', '1:2:3:4:5::1.2.3.4', '1:2:3:4:5:6:7:1.2.3.4', '1.2.3.4::', '::1.2.3.4:5',
  '::ffff:1.2.3', '::ffff:256.1.1.1', 'FD00::A', 'fd00:0:0:0:0:0:0:1', '0:0:0:0:0:0:0:0', ':1:2:3:4:5:6:7', '1:2:3:4:5:6:7:', '1.2.3.4%eth0',
];

t.test('parseIp accepts exactly what node:net does (fixed cases)', async (t) => {
  for (const c of cases) t.equal(isIP(c), netIsIP(c), JSON.stringify(c));
});

t.test('parseIp accepts exactly what node:net does (generated corpus)', async (t) => {
  // Random strings over the characters that matter, biased towards near-valid shapes.
  const alphabet = '0123456789abcdefABCDEFg:.%';
  let seed = 12345;
  const rnd = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  let mismatches = 0;
  let valid = 0;
  for (let i = 0; i < 20000; i++) {
    let s = '';
    if (rnd(3) === 0) {
      // hextet-shaped
      const groups = 1 + rnd(9);
      s = Array.from({ length: groups }, () => (rnd(5) === 0 ? '' : rnd(65536).toString(16))).join(':');
      if (rnd(4) === 0) s += ':' + [rnd(300), rnd(256), rnd(256), rnd(256)].join('.');
    } else if (rnd(2) === 0) {
      s = Array.from({ length: 3 + rnd(3) }, () => String(rnd(300))).join('.');
    } else {
      const len = rnd(20);
      for (let j = 0; j < len; j++) s += alphabet[rnd(alphabet.length)];
    }
    const want = netIsIP(s);
    if (want) valid++;
    if (isIP(s) !== want) {
      mismatches++;
      if (mismatches < 10) t.fail(`${JSON.stringify(s)}: node:net says ${want}, parseIp ${isIP(s)}`);
    }
  }
  t.equal(mismatches, 0, 'no disagreement on 20,000 strings');
  t.ok(valid > 1000, `the corpus has valid addresses too (${valid})`);
});

t.test('parsed bytes are right', async (t) => {
  t.same([...parseIp('1.2.3.4')!], [1, 2, 3, 4]);
  t.same([...parseIp('::ffff:1.2.3.4')!], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4]);
  t.same([...parseIp('1:2:3:4:5:6:7:8')!], [0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0, 8]);
  t.same([...parseIp('fe80::1%eth0')!], [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
  t.equal(bytesToIp(ipToBytes('2001:DB8::0:1')), '2001:db8::1');
  t.ok(isIPv4('10.0.0.1'));
  t.notOk(isIPv4('::1'));
  t.ok(isIPv6('::1'));
  t.notOk(isIPv6('10.0.0.1'));
  t.equal(isIP(undefined as unknown as string), 0, 'a non-string is not an address');
  // Every random 16-byte address survives text and back.
  for (let i = 0; i < 200; i++) {
    const b = randomBytes(16);
    const text = bytesToIp(b);
    t.equal(netIsIP(text), 6, text);
    if (!Buffer.from(parseIp(text)!).equals(b)) t.fail(`round trip of ${text}`);
  }
});

t.test('sha256 equals node:crypto for every padding boundary and random data', async (t) => {
  t.equal(sha256Hex(''), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  t.equal(sha256Hex('abc'), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  for (let n = 0; n <= 200; n++) {
    const b = randomBytes(n);
    const want = createHash('sha256').update(b).digest('hex');
    if (sha256Hex(b) !== want) t.fail(`length ${n}`);
  }
  const s = 'container-0123456789/eth0 — ünïcode';
  t.equal(Buffer.from(sha256(s)).toString('hex'), createHash('sha256').update(s).digest('hex'), 'UTF-8 strings');
});
