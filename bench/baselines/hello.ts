import uWS from 'uWebSockets.js';
import { serve } from './common.js';

/**
 * The HTTP ceiling of this machine: uWebSockets.js answering constants on the
 * same routes as the service. No auth, no state, nothing durable.
 */
const reservation = JSON.stringify({
  reservationId: '00000000-0000-4000-8000-000000000000',
  sku: 'hello',
  quantity: 1,
  status: 'held',
  expiresAt: '2030-01-01T00:00:00.000Z',
});
const view = JSON.stringify({ sku: 'hello', stock: 1, available: 1, held: 0, sold: 0, perShopperLimit: 1, holdSeconds: 1, priceCents: 0, currency: 'USD', startsAt: null, endsAt: null });

const constant = (status: string, body: string) => (res: uWS.HttpResponse): void => {
  res.cork(() => {
    res.writeStatus(status).writeHeader('Content-Type', 'application/json').end(body);
  });
};

const app = uWS
  .App()
  .post('/v1/skus/:sku/reservations', constant('201 Created', reservation))
  .get('/v1/skus/:sku', constant('200 OK', view))
  .put('/v1/admin/skus/:sku', constant('201 Created', view))
  .get('/healthz', constant('200 OK', '{"ok":true}'))
  .get('/readyz', constant('200 OK', '{"ok":true}'));

serve(app);
