import type uWS from 'uWebSockets.js';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { VerifyResult } from '../cluster/auth.js';
import type { ClusterSnapshot } from '../cluster/membership.js';
import { attachNodeEndpoint } from '../cluster/node.js';
import type { ClusterEndpoint } from '../cluster/transport.js';
import type { ShardRequest } from '../shard/messages.js';
import { newFrameRefusals, type ForwardResult, type FrameRefusals } from '../shard/protocol.js';
import type { PortLink } from '../road/port-link.js';

/**
 * A cluster node as one of its front-end threads sees it. Other nodes connect
 * to the node's port, and the kernel may hand that connection to any thread,
 * so every thread's app carries the cluster endpoint; each forwarded command
 * goes over the thread's port to the main thread, which serves it from this
 * node's shards only (never forwarded again), and so do the stock notices a
 * peer pushes (the main thread hands them to every thread). The upgrade token
 * is checked on the main thread (one nonce memory per process: a token works
 * once, whichever thread it reaches), and the admin views read the main
 * thread's membership view.
 */
export class ClusterClient {
  private endpoint: ClusterEndpoint | null = null;

  constructor(
    private readonly channel: PortLink,
    private readonly config: Config,
    private readonly log: Logger,
  ) {}

  snapshot(): Promise<ClusterSnapshot> {
    return this.channel.call('clusterSnapshot', []);
  }

  /** The cluster endpoint on this thread's app (before it listens). */
  attach(app: uWS.TemplatedApp): void {
    this.endpoint = attachNodeEndpoint(
      app,
      this.config,
      {
        verify: (token) => this.channel.call<VerifyResult>('clusterVerifyUpgrade', [token]),
        handle: (shard, payload) => this.forwarded(shard, payload),
        // What a peer pushed (live.ts): the main thread takes it, and relays stock to the threads that follow it.
        onNotes: (peer, notes) => {
          this.channel.call('clusterNotes', [peer, notes]).catch((err: unknown) => this.log.warn({ err, peer }, 'pushed notices not delivered'));
        },
      },
      this.log,
    );
  }

  /** What peers sent this thread's endpoint that was refused, by reason (the main thread's metrics add every thread's). */
  refusals(): FrameRefusals {
    return this.endpoint?.refusals ?? newFrameRefusals();
  }

  private async forwarded(shard: number, payload: ShardRequest): Promise<ForwardResult> {
    try {
      return await this.channel.call<ForwardResult>('clusterForwarded', [shard, payload]);
    } catch (error) {
      // The port broke or refused: the command may or may not have reached the
      // shard, so the caller is told the outcome is unknown (a retry with the same key is safe).
      const detail = `this node's shard host did not answer: ${error instanceof Error ? error.message : String(error)}`;
      return { ok: false, code: 'unknown_outcome', detail };
    }
  }

  /** Ends the other nodes' connections to this thread (1001). */
  close(): void {
    this.endpoint?.close();
  }
}
