import t from 'tap';
import fc from 'fast-check';
import { activeNodes, isBalanced, planFor, targets, type ClusterView, type NodeView } from '../src/cluster/plan.js';

/**
 * A whole cluster of planners in memory. Each round every node (in the order
 * given) plans on the current view and applies its moves; a take succeeds only
 * when the shard is still free, as pg_try_advisory_lock would decide. Dead
 * nodes' shards count as free (their session, hence their locks, is gone).
 */
function runRounds(view: ClusterView, order: readonly string[], rounds: number, maxMoves: number): { owners: (string | null)[]; rounds: number } {
  const owners = [...view.owners];
  const alive = new Set(view.nodes.filter((n) => n.alive).map((n) => n.nodeId));
  for (let round = 0; round < rounds; round++) {
    if (isBalanced({ ...view, owners })) return { owners, rounds: round };
    for (const nodeId of order) {
      if (!alive.has(nodeId)) continue;
      const plan = planFor({ ...view, owners }, nodeId, maxMoves);
      for (const shard of plan.release) {
        if (owners[shard] !== nodeId) throw new Error(`${nodeId} released shard ${shard} it does not own`);
        owners[shard] = null;
      }
      for (const shard of plan.take) {
        const owner = owners[shard];
        if (owner === nodeId) throw new Error(`${nodeId} planned to take shard ${shard} it already owns`);
        if (owner === null || owner === undefined || !alive.has(owner)) owners[shard] = nodeId;
      }
    }
  }
  return { owners, rounds };
}

const nodeIds = fc.uniqueArray(fc.stringMatching(/^[a-z]{1,6}$/), { minLength: 1, maxLength: 7 });

const clusterArb = fc
  .record({ shardCount: fc.integer({ min: 1, max: 96 }), ids: nodeIds, seed: fc.array(fc.nat(), { maxLength: 200 }) })
  .chain(({ shardCount, ids, seed }) =>
    fc
      .record({
        nodes: fc.tuple(...ids.map((id) => fc.record({ nodeId: fc.constant(id), alive: fc.boolean(), leaving: fc.boolean() }))),
        owners: fc.array(fc.option(fc.constantFrom(...ids, 'gone'), { nil: null }), { minLength: shardCount, maxLength: shardCount }),
        order: fc.shuffledSubarray(ids, { minLength: ids.length, maxLength: ids.length }),
      })
      .map(({ nodes, owners, order }) => ({ view: { shardCount, nodes: nodes as NodeView[], owners }, order, seed })),
  );

t.test('targets are ⌊S/n⌋ or ⌈S/n⌉ and sum to S', async (t) => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 4096 }), nodeIds, (shardCount, ids) => {
      const want = targets(shardCount, [...ids].sort());
      const values = [...want.values()];
      const sum = values.reduce((a, b) => a + b, 0);
      return (
        sum === shardCount &&
        values.every((v) => v === Math.floor(shardCount / ids.length) || v === Math.ceil(shardCount / ids.length))
      );
    }),
  );
  t.same([...targets(64, ['a', 'b', 'c']).entries()], [['a', 22], ['b', 21], ['c', 21]]);
});

t.test('a plan only releases what the node owns and only takes free shards, within maxMoves', async (t) => {
  fc.assert(
    fc.property(clusterArb, fc.integer({ min: 1, max: 8 }), ({ view }, maxMoves) => {
      const alive = new Set(view.nodes.filter((n) => n.alive).map((n) => n.nodeId));
      for (const node of view.nodes) {
        const plan = planFor(view, node.nodeId, maxMoves);
        if (plan.release.length > maxMoves || plan.take.length > maxMoves) return false;
        if (plan.release.length > 0 && plan.take.length > 0) return false;
        if (!plan.release.every((s) => view.owners[s] === node.nodeId)) return false;
        if (!plan.take.every((s) => view.owners[s] === null || !alive.has(view.owners[s]!))) return false;
        if (new Set(plan.take).size !== plan.take.length) return false;
        if ((node.leaving || !node.alive) && plan.take.length > 0) return false;
      }
      return true;
    }),
  );
  t.pass();
});

t.test('the same view gives the same plan (deterministic, independent of node order)', async (t) => {
  fc.assert(
    fc.property(clusterArb, ({ view }) => {
      const reversed = { ...view, nodes: [...view.nodes].reverse() };
      return view.nodes.every(
        (n) => JSON.stringify(planFor(view, n.nodeId, 4)) === JSON.stringify(planFor(reversed, n.nodeId, 4)),
      );
    }),
  );
  t.pass();
});

t.test('from any state, the cluster converges to balance in bounded rounds', async (t) => {
  fc.assert(
    fc.property(clusterArb, fc.integer({ min: 1, max: 16 }), ({ view, order }, maxMoves) => {
      if (activeNodes(view).length === 0) return true;
      // Each shard moves at most twice (released, taken), each node moves ≤ maxMoves per round.
      const bound = 2 * Math.ceil(view.shardCount / maxMoves) + 2;
      const { owners } = runRounds(view, order, bound, maxMoves);
      return isBalanced({ ...view, owners });
    }),
    { numRuns: 300 },
  );
  t.pass();
});

t.test('join, graceful leave and a death each end balanced', async (t) => {
  const S = 64;
  const node = (nodeId: string, alive = true, leaving = false): NodeView => ({ nodeId, alive, leaving });
  let owners: (string | null)[] = new Array<string | null>(S).fill(null);
  let nodes = [node('a')];
  ({ owners } = runRounds({ shardCount: S, nodes, owners }, ['a'], 100, 8));
  t.ok(owners.every((o) => o === 'a'), 'one node owns every shard');

  nodes = [node('a'), node('b'), node('c')];
  ({ owners } = runRounds({ shardCount: S, nodes, owners }, ['c', 'a', 'b'], 100, 8));
  t.ok(isBalanced({ shardCount: S, nodes, owners }), 'two joins: 22/21/21');
  t.same(['a', 'b', 'c'].map((id) => owners.filter((o) => o === id).length), [22, 21, 21]);

  nodes = [node('a'), node('b', true, true), node('c')];
  ({ owners } = runRounds({ shardCount: S, nodes, owners }, ['b', 'a', 'c'], 100, 8));
  t.same(['a', 'b', 'c'].map((id) => owners.filter((o) => o === id).length), [32, 0, 32], 'b handed everything over');

  nodes = [node('a'), node('c', false)];
  ({ owners } = runRounds({ shardCount: S, nodes, owners }, ['a', 'c'], 100, 8));
  t.ok(owners.every((o) => o === 'a'), "a took the dead node's shards");
});
