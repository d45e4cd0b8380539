// The matrix rendering of `skiff lab matrix` and its --ports parsing.
import t from 'tap';
import { parseProbes } from '../../src/lab/matrix.js';
import { renderMatrix, type MatrixCell } from '../../src/policy/probe.js';

t.test('parseProbes', async (t) => {
  t.same(parseProbes('tcp/80,UDP/53, sctp/9'), [['TCP', 80], ['UDP', 53], ['SCTP', 9]]);
  t.throws(() => parseProbes('tcp/0'), /--ports: invalid probe "tcp\/0"/);
  t.throws(() => parseProbes('http/80'), /PROTOCOL\/PORT/);
});

t.test('renderMatrix marks and lists every difference', async (t) => {
  const keys = ['x/a', 'x/b'];
  const cells: MatrixCell[] = [
    { from: 'x/a', to: 'x/b', protocol: 'TCP', port: 80, kernel: true, expected: true },
    { from: 'x/b', to: 'x/a', protocol: 'TCP', port: 80, kernel: true, expected: false },
  ];
  const text = renderMatrix(keys, cells);
  t.match(text, /TCP\/80/);
  t.match(text, /x\/a   -    \.    \n/);
  t.match(text, /x\/b   !    -    \n/);
  t.match(text, /1 of 2 probes differ:\n  x\/b -> x\/a TCP\/80: kernel allowed, evaluator denied/);
  t.match(renderMatrix(keys, [cells[0]!]), /kernel equals the evaluator on all 1 probes/);
});
