import t from 'tap';
import type { LabelSelector } from '../../src/cluster/types.js';
import { compileSelector, describeSelector, isEmptySelector, matchesSelector, SelectorError, validateSelector } from '../../src/policy/selector.js';

const web = { app: 'web', tier: 'front' };
const db = { app: 'db' };
const none = {};

t.test('selector matching table', async (t) => {
  const cases: [string, LabelSelector | undefined, Record<string, string> | undefined, boolean][] = [
    ['empty selector matches labelled object', {}, web, true],
    ['empty selector matches unlabelled object', {}, none, true],
    ['absent selector matches everything', undefined, undefined, true],
    ['matchLabels exact', { matchLabels: { app: 'web' } }, web, true],
    ['matchLabels other value', { matchLabels: { app: 'web' } }, db, false],
    ['matchLabels missing key', { matchLabels: { app: 'web' } }, none, false],
    ['matchLabels all keys ANDed', { matchLabels: { app: 'web', tier: 'back' } }, web, false],
    ['matchLabels empty value needs key present', { matchLabels: { x: '' } }, none, false],
    ['matchLabels empty value with key present', { matchLabels: { x: '' } }, { x: '' }, true],
    ['In hit', { matchExpressions: [{ key: 'app', operator: 'In', values: ['db', 'web'] }] }, web, true],
    ['In miss', { matchExpressions: [{ key: 'app', operator: 'In', values: ['db'] }] }, web, false],
    ['In missing key', { matchExpressions: [{ key: 'app', operator: 'In', values: ['db'] }] }, none, false],
    ['NotIn hit', { matchExpressions: [{ key: 'app', operator: 'NotIn', values: ['db'] }] }, web, true],
    ['NotIn excluded value', { matchExpressions: [{ key: 'app', operator: 'NotIn', values: ['web'] }] }, web, false],
    ['NotIn matches objects without the key', { matchExpressions: [{ key: 'app', operator: 'NotIn', values: ['web'] }] }, none, true],
    ['NotIn matches undefined labels', { matchExpressions: [{ key: 'app', operator: 'NotIn', values: ['web'] }] }, undefined, true],
    ['Exists hit', { matchExpressions: [{ key: 'tier', operator: 'Exists' }] }, web, true],
    ['Exists miss', { matchExpressions: [{ key: 'tier', operator: 'Exists' }] }, db, false],
    ['DoesNotExist hit (missing key)', { matchExpressions: [{ key: 'tier', operator: 'DoesNotExist' }] }, db, true],
    ['DoesNotExist miss', { matchExpressions: [{ key: 'tier', operator: 'DoesNotExist' }] }, web, false],
    ['matchLabels AND matchExpressions both hold', { matchLabels: { app: 'web' }, matchExpressions: [{ key: 'tier', operator: 'In', values: ['front'] }] }, web, true],
    ['matchLabels AND matchExpressions one fails', { matchLabels: { app: 'web' }, matchExpressions: [{ key: 'tier', operator: 'DoesNotExist' }] }, web, false],
    ['prototype keys are not labels', { matchExpressions: [{ key: 'constructor', operator: 'Exists' }] }, none, false],
  ];
  for (const [name, sel, labels, want] of cases) {
    t.equal(compileSelector(sel)(labels), want, name);
    t.equal(matchesSelector(sel, labels), want, `${name} (one-shot)`);
  }
});

t.test('selector validation', async (t) => {
  t.same(validateSelector({ matchLabels: { app: 'web' }, matchExpressions: [{ key: 'a', operator: 'In', values: ['b'] }] }, 'sel'), []);
  t.same(validateSelector(undefined, 'sel'), []);
  const bad: [unknown, RegExp][] = [
    [{ matchExpressions: [{ key: 'a', operator: 'In' }] }, /^sel\.matchExpressions\[0\]\.values: must be non-empty when operator is "In"$/],
    [{ matchExpressions: [{ key: 'a', operator: 'NotIn', values: [] }] }, /values: must be non-empty when operator is "NotIn"/],
    [{ matchExpressions: [{ key: 'a', operator: 'Exists', values: ['x'] }] }, /values: must be empty when operator is "Exists"/],
    [{ matchExpressions: [{ key: 'a', operator: 'DoesNotExist', values: ['x'] }] }, /must be empty when operator is "DoesNotExist"/],
    [{ matchExpressions: [{ key: 'a', operator: 'Equals', values: ['x'] }] }, /operator: unknown operator "Equals" \(In, NotIn, Exists, DoesNotExist\)/],
    [{ matchExpressions: [{ key: 'a', operator: 'in', values: ['x'] }] }, /unknown operator "in"/],
    [{ matchExpressions: [{ operator: 'Exists' }] }, /key: required/],
    [{ matchLabels: { 'bad key!': 'x' } }, /matchLabels\["bad key!"\]: invalid label key/],
    [{ matchLabels: { app: 'no spaces' } }, /invalid label value "no spaces"/],
    [{ matchLabels: { app: 1 } }, /value must be a string, got 1/],
    [{ matchLabels: { 'Example.com/app': 'x' } }, /prefix must be a DNS subdomain/],
    [{ matchExpressions: 'x' }, /matchExpressions: must be a list/],
    [{ matchLabel: {} }, /unknown field "matchLabel"/],
  ];
  for (const [sel, re] of bad) {
    const problems = validateSelector(sel, 'sel');
    t.ok(problems.some((p) => re.test(p)), `${JSON.stringify(sel)} -> ${re} (got ${JSON.stringify(problems)})`);
  }
  t.same(validateSelector({ matchLabels: { 'example.com/app': 'x', 'kubernetes.io/metadata.name': 'kube-system' } }, 's'), [], 'prefixed keys are valid');
});

t.test('compileSelector refuses invalid selectors', async (t) => {
  t.throws(() => compileSelector({ matchExpressions: [{ key: 'a', operator: 'In', values: [] }] }), SelectorError);
  t.throws(() => compileSelector({ matchExpressions: [{ key: 'a', operator: 'Bogus' as 'In' }] }), /unknown operator "Bogus"/);
});

t.test('describe and emptiness', async (t) => {
  t.equal(describeSelector({}), '<all>');
  t.ok(isEmptySelector({ matchLabels: {}, matchExpressions: [] }));
  t.notOk(isEmptySelector({ matchLabels: { a: 'b' } }));
  t.equal(
    describeSelector({
      matchLabels: { app: 'web' },
      matchExpressions: [
        { key: 'env', operator: 'In', values: ['a', 'b'] },
        { key: 'ns', operator: 'NotIn', values: ['x'] },
        { key: 'tier', operator: 'Exists' },
        { key: 'legacy', operator: 'DoesNotExist' },
      ],
    }),
    'app=web,env in (a,b),ns notin (x),tier,!legacy',
  );
});
