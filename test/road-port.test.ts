import { MessageChannel, receiveMessageOnPort } from 'node:worker_threads';
import t from 'tap';
import { PortServer, type ReplyBatch, type RequestBatch } from '../src/road/port-link.js';
import { TurnBatch } from '../src/road/turn-batch.js';
import type { ShardEndpoint, ShardReply, ShardRequest } from '../src/shard/messages.js';

// The serving side of a port at a thread's end: a shard thread is terminated
// as soon as it says it closed, so its replies must be posted by then, not at
// the end of the turn.

t.test('TurnBatch.flushNow hands the batch on at once, and the turn then sends nothing more', async (t) => {
  const flushed: number[][] = [];
  const batch = new TurnBatch<number>((items) => flushed.push(items));
  batch.add(1);
  batch.add(2);
  batch.flushNow();
  t.same(flushed, [[1, 2]], 'flushed synchronously');
  await new Promise((resolve) => setImmediate(resolve));
  t.same(flushed, [[1, 2]], 'the turn found nothing scheduled: no empty second message');
  batch.flushNow();
  t.same(flushed, [[1, 2]], 'nothing queued, nothing sent');
  batch.add(3);
  await new Promise((resolve) => setImmediate(resolve));
  t.same(flushed, [[1, 2], [3]], 'later items still flush at their turn');
});

function deferred<T>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

t.test('PortServer.answerAll waits for every admitted request, then posts the replies before it resolves', async (t) => {
  const { port1: caller, port2 } = new MessageChannel();
  t.teardown(() => caller.close());
  const answer = deferred<ShardReply>();
  let handled = 0;
  const endpoint: ShardEndpoint = {
    handle: <R extends ShardRequest>() => {
      handled += 1;
      return answer.promise as Promise<ShardReply<R['type']>>;
    },
  };
  const server = new PortServer(port2, endpoint, {}, () => true);
  t.teardown(() => server.close());
  caller.postMessage({ requests: [{ id: 7, shard: 0, payload: { type: 'get_sku', sku: 'A' } as ShardRequest }] } satisfies RequestBatch);
  while (handled === 0) await new Promise((resolve) => setTimeout(resolve, 1));

  let answered = false;
  const all = server.answerAll().then(() => (answered = true));
  await new Promise((resolve) => setImmediate(resolve));
  t.equal(answered, false, 'a request still being served holds it up');

  answer.resolve({ ok: false, code: 'not_found', detail: 'no such SKU' } as ShardReply);
  await all;
  // No turn has passed since answerAll resolved: the reply is on the port only if it was flushed early.
  const received = receiveMessageOnPort(caller)?.message as ReplyBatch | undefined;
  t.ok(received, 'the reply batch is already posted');
  t.same(
    received?.replies,
    [{ id: 7, ok: true, value: { ok: false, code: 'not_found', detail: 'no such SKU' } }],
    'with the answer of the request',
  );
  await new Promise((resolve) => setImmediate(resolve));
  t.equal(receiveMessageOnPort(caller), undefined, 'and nothing is sent twice');
});
