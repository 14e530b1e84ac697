import type { ShardChannel, ShardEndpoint, ShardNotice, ShardReply, ShardRequest } from './messages.js';

/**
 * The channel when router and shards share a thread (single-process mode, and
 * tests of either side alone). With `clone` every request, reply and notice
 * goes through structuredClone, as it would over a MessagePort: a closure or a
 * live object in a message then throws at once (tests run with it on; the hot
 * path does without the copy).
 */
export class InProcessChannel implements ShardChannel {
  private readonly listeners: ((notice: ShardNotice) => void)[] = [];
  private endpoint: ShardEndpoint | null = null;

  constructor(private readonly options: { clone: boolean } = { clone: false }) {}

  /** The shard side; set once it exists (shards publish notices through `notify`). */
  connect(endpoint: ShardEndpoint): void {
    this.endpoint = endpoint;
  }

  request<R extends ShardRequest>(shard: number, request: R): Promise<ShardReply<R['type']>> {
    const endpoint = this.endpoint;
    if (endpoint === null) {
      return Promise.resolve({ ok: false, code: 'unavailable', detail: 'the shards are not started yet' } as ShardReply<R['type']>);
    }
    if (!this.options.clone) return endpoint.handle(shard, request);
    return endpoint.handle(shard, structuredClone(request)).then((reply) => structuredClone(reply));
  }

  /** Called by the shard side. */
  notify(notice: ShardNotice): void {
    const delivered = this.options.clone ? structuredClone(notice) : notice;
    for (const listener of this.listeners) listener(delivered);
  }

  onNotice(listener: (notice: ShardNotice) => void): void {
    this.listeners.push(listener);
  }

  async close(): Promise<void> {
    this.endpoint = null;
  }
}
