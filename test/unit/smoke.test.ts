import t from 'tap';
import { canonical, hashOf } from '../../src/util/canonical.js';

t.test('canonical JSON is key-order independent', async (t) => {
  t.equal(canonical({ b: 1, a: [2, { d: 1, c: 2 }] }), '{"a":[2,{"c":2,"d":1}],"b":1}');
  t.equal(hashOf({ a: 1, b: 2 }), hashOf({ b: 2, a: 1 }));
  t.not(hashOf({ a: 1 }), hashOf({ a: 2 }));
});
