import type { Router } from '../router.js';

/**
 * `/v1/stream` is the WebSocket (src/ws/stream.ts). uWS hands a GET that is
 * not an upgrade on to the HTTP routes: it gets 426 and how to upgrade.
 */
export function registerStreamRoutes(router: Router): void {
  router.route('/v1/stream', {
    get: (exchange) =>
      exchange.problem('upgrade_required', '/v1/stream is a WebSocket: send the upgrade handshake (Upgrade: websocket)', [
        ['upgrade', 'websocket'],
        ['connection', 'Upgrade'],
      ]),
  });
}
