import t from 'tap';
import { parseCli } from '../bench/lib/cli.js';

/** The flashstock variants a bench invocation runs: --nodes and --http-threads lists. */

t.test('--nodes and --http-threads take lists; defaults are one process, the service default threads', async (t) => {
  const plain = parseCli([]);
  t.same(plain.nodes, [1]);
  t.same(plain.httpThreads, [null]);
  const both = parseCli(['--nodes', '1,3', '--http-threads', '1,2']);
  t.same(both.nodes, [1, 3]);
  t.same(both.httpThreads, [1, 2]);
});

t.test('--nodes refuses what it cannot run', async (t) => {
  t.throws(() => parseCli(['--nodes', '0']), /--nodes takes integers 1\.\.16/);
  t.throws(() => parseCli(['--nodes', '17']), /--nodes takes integers 1\.\.16/);
  t.throws(() => parseCli(['--nodes', '2,2']), /lists a value twice/);
  t.throws(() => parseCli(['--nodes', '1.5']), /--nodes takes integers/);
  t.throws(() => parseCli(['--nodes', '3', '--url', 'http://127.0.0.1:8080']), /cannot be combined with --url/);
  t.throws(() => parseCli(['--nodes', '3', '--systems', 'hello']), /applies to flashstock/);
  t.throws(() => parseCli(['--http-threads', '65']), /--http-threads takes integers 1\.\.64/);
});

t.test('--to-owner and --to-others: off by default, cluster diagnostics only, both at once a run of each', async (t) => {
  t.same(parseCli([]).aims, []);
  t.same(parseCli(['--nodes', '1,3', '--to-owner']).aims, ['owner']);
  t.same(parseCli(['--nodes', '2', '--to-others']).aims, ['other']);
  t.same(parseCli(['--nodes', '2', '--to-others', '--to-owner']).aims, ['owner', 'other']);
  t.throws(() => parseCli(['--to-others']), /needs --nodes/);
  t.throws(() => parseCli(['--to-owner']), /needs --nodes with more than one node/);
  t.throws(() => parseCli(['--nodes', '1', '--to-owner']), /needs --nodes/);
});
