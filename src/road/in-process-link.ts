import type { ShardEndpoint, ShardNotice, ShardReply, ShardRequest } from '../shard/messages.js';
import { unavailableReply, type Link } from './link.js';
import { Listeners } from './listeners.js';

/**
 * The link when caller and shards share a thread: a request is a call, with
 * no envelope, no id and no batch. With `clone` every request, reply and
 * notice goes through structuredClone, as it would over a MessagePort: a
 * closure or a live object in a message then throws at once (tests run with
 * it on; the hot path does without the copy).
 */
export class InProcessLink implements Link {
  private readonly listeners = new Listeners<ShardNotice>();
  private endpoint: ShardEndpoint | null = null;

  constructor(private readonly options: { clone: boolean } = { clone: false }) {}

  /** The shard side; set once it exists (shards publish notices through `notify`). */
  connect(endpoint: ShardEndpoint): void {
    this.endpoint = endpoint;
  }

  request<R extends ShardRequest>(shard: number, request: R): Promise<ShardReply<R['type']>> {
    const endpoint = this.endpoint;
    if (endpoint === null) return Promise.resolve(unavailableReply('the shards are not started yet'));
    if (!this.options.clone) return endpoint.handle(shard, request);
    return endpoint.handle(shard, structuredClone(request)).then((reply) => structuredClone(reply));
  }

  /** Called by the shard side. */
  notify(notice: ShardNotice): void {
    this.listeners.emit(this.options.clone ? structuredClone(notice) : notice);
  }

  onNotice(listener: (notice: ShardNotice) => void): void {
    this.listeners.add(listener);
  }

  async close(): Promise<void> {
    this.endpoint = null;
  }
}
