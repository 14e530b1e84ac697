import uWS from 'uWebSockets.js';
import {
  attachClusterEndpoint,
  defaultTransportLimits,
  type ClusterEndpointOptions,
  type ForwardHandler,
  type TransportLimits,
} from '../../src/cluster/transport.js';
import { testLog } from './db.js';

/** The cluster endpoint (src/cluster/transport.ts) on its own uWS app, for the transport and live-stock tests. */

export const CLUSTER_TEST_SECRET = 'cluster-secret-for-tests';

export interface EndpointServer {
  url: string;
  endpoint: ReturnType<typeof attachClusterEndpoint>;
  stop(): void;
}

export async function startEndpoint(
  handle: ForwardHandler,
  limits: Partial<TransportLimits> = {},
  more: Partial<Pick<ClusterEndpointOptions, 'onNotices' | 'selfUrl'>> = {},
): Promise<EndpointServer> {
  const app = uWS.App();
  let url = '';
  const endpoint = attachClusterEndpoint(app, {
    secret: CLUSTER_TEST_SECRET,
    selfUrl: () => url,
    ...more,
    handle,
    limits: { ...defaultTransportLimits, ...limits },
    authWindowMs: 30_000,
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
