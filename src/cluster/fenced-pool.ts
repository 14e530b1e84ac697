import type pg from 'pg';
import type { OwnershipProof } from './sql.js';
import { fencedInsertQuery } from './sql.js';

/**
 * INTERIM, until the outbox has its own hook (asked for: an optional
 * `OutboxOptions.fenceInsert(insert, events)` or `proveOwnership`): a pool
 * facade handed to one shard's ShardHost that turns the group-commit insert
 * (the statement named `stock-events-insert`, src/outbox/event-log.ts) into
 * the fenced one, proving this node's epoch for the shard in the same
 * statement. Every other call goes to the real pool untouched. `proof()`
 * throws FencedError once the lease is lost, so the commit fails before it is
 * sent and nothing more is acknowledged.
 */

export const GROUP_COMMIT_STATEMENT = 'stock-events-insert';

type Query = pg.PoolClient['query'];

function fencedClient(client: pg.PoolClient, proof: () => OwnershipProof): pg.PoolClient {
  const query = client.query.bind(client) as (...args: unknown[]) => unknown;
  const fenced = ((config: unknown, ...rest: unknown[]) => {
    if (typeof config === 'object' && config !== null && (config as pg.QueryConfig).name === GROUP_COMMIT_STATEMENT) {
      let rewritten: pg.QueryConfig;
      try {
        rewritten = fencedInsertQuery(config as pg.QueryConfig, proof());
      } catch (error) {
        return Promise.reject(error);
      }
      return query(rewritten, ...rest);
    }
    return query(config, ...rest);
  }) as unknown as Query;
  return new Proxy(client, {
    get: (target, property, receiver) => (property === 'query' ? fenced : Reflect.get(target, property, receiver)),
  });
}

export function fencedPool(pool: pg.Pool, proof: () => OwnershipProof): pg.Pool {
  // One facade per pooled connection, so callers that key state by client (the outbox's backend ids) still can.
  const facades = new WeakMap<pg.PoolClient, pg.PoolClient>();
  const connect = async (): Promise<pg.PoolClient> => {
    const client = await pool.connect();
    let facade = facades.get(client);
    if (facade === undefined) {
      facade = fencedClient(client, proof);
      facades.set(client, facade);
    }
    return facade;
  };
  return new Proxy(pool, {
    get: (target, property) => {
      if (property === 'connect') return connect;
      const value = Reflect.get(target, property, target) as unknown;
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}
