import uWS from 'uWebSockets.js';
import { UpgradeVerifier, type VerifyResult } from '../../src/cluster/auth.js';
import {
  attachClusterEndpoint,
  defaultTransportLimits,
  type ClusterEndpointOptions,
  type ForwardHandler,
  type TransportLimits,
} from '../../src/cluster/transport.js';
import { testLog } from './db.js';
import { SHARDS } from './cluster.js';

/** The cluster endpoint (src/cluster/transport.ts) on its own uWS app, for the transport and live-stock tests. */

export const CLUSTER_TEST_SECRET = 'cluster-secret-for-tests';

export interface EndpointServer {
  url: string;
  endpoint: ReturnType<typeof attachClusterEndpoint>;
  stop(): void;
}

export interface EndpointExtras extends Partial<Pick<ClusterEndpointOptions, 'onNotes'>> {
  /** The URL tokens must be signed for (default: the server's own). */
  selfUrl?: () => string;
  /** How a token is checked, given the server's verifier (default: at once, as on a node's main thread). */
  check?: (verifier: UpgradeVerifier, token: string) => VerifyResult | Promise<VerifyResult>;
  /** SHARD_COUNT of the endpoint (default: the cluster tests' SHARDS). */
  shardCount?: number;
}

export async function startEndpoint(handle: ForwardHandler, limits: Partial<TransportLimits> = {}, more: EndpointExtras = {}): Promise<EndpointServer> {
  const app = uWS.App();
  let url = '';
  const verifier = new UpgradeVerifier(CLUSTER_TEST_SECRET, more.selfUrl ?? (() => url), 30_000, 10_000);
  const check = more.check ?? ((v: UpgradeVerifier, token: string) => v.verify(token, Date.now()));
  const endpoint = attachClusterEndpoint(app, {
    verify: (token) => check(verifier, token),
    ...(more.onNotes === undefined ? {} : { onNotes: more.onNotes }),
    handle,
    shardCount: more.shardCount ?? SHARDS,
    limits: { ...defaultTransportLimits, ...limits },
    log: testLog,
  });
  const socket = await new Promise<uWS.us_listen_socket>((resolve, reject) =>
    app.listen('127.0.0.1', 0, (s) => (s ? resolve(s) : reject(new Error('listen failed')))),
  );
  url = `http://127.0.0.1:${uWS.us_socket_local_port(socket)}`;
  let stopped = false;
  return {
    url,
    endpoint,
    // Idempotent: a test may stop the server itself and teardown stops it again; closing a
    // uWS listen socket or app twice can crash the process (the plan then never completes).
    stop: () => {
      if (stopped) return;
      stopped = true;
      endpoint.close();
      uWS.us_listen_socket_close(socket);
      (app as unknown as { close(): void }).close();
    },
  };
}
