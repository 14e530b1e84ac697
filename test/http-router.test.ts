import t from 'tap';
import uWS from 'uWebSockets.js';
import pino from 'pino';
import { createRouter } from '../src/http/router.js';

/** The route table alone, on a real uWS app: methods merged per pattern, 405 with Allow, mistakes refused. */

const app = uWS.App();
const router = createRouter(app, {
  log: pino({ level: 'silent' }),
  retryAfterSeconds: 1,
  maxBodyBytes: 1024,
  onUnexpected: (_error, exchange) => exchange.problem('internal', 'boom'),
});
router.route('/things/:name', { get: (exchange, req) => exchange.send(200, { name: req.getParameter(0) }) });
// A second module adds another method to the same pattern.
router.route('/things/:name', { del: (exchange) => exchange.send(200, { deleted: true }) });
router.route('/throws', {
  get: () => {
    throw new Error('handler bug');
  },
});

t.throws(() => router.route('/things/:name', { get: (exchange) => exchange.send(200, {}) }), /GET \/things\/:name is registered twice/);
t.throws(() => router.route('/empty', {}), /has no handlers/);
t.same(router.routes(), [
  { pattern: '/things/:name', methods: ['GET', 'HEAD', 'DELETE'] },
  { pattern: '/throws', methods: ['GET', 'HEAD'] },
]);
router.mount();
t.throws(() => router.route('/late', { get: (exchange) => exchange.send(200, {}) }), /after the routes were mounted/);

const socket = await new Promise<uWS.us_listen_socket>((resolve, reject) =>
  app.listen('127.0.0.1', 0, (s) => (s ? resolve(s) : reject(new Error('cannot listen')))),
);
t.teardown(() => uWS.us_listen_socket_close(socket));
const base = `http://127.0.0.1:${uWS.us_socket_local_port(socket)}`;

t.test('handlers of both registrations answer; HEAD runs the GET handler without the body', async (t) => {
  t.same(await (await fetch(`${base}/things/a`)).json(), { name: 'a' });
  const head = await fetch(`${base}/things/a`, { method: 'HEAD' });
  t.equal(head.status, 200);
  t.equal(head.headers.get('content-length'), String(JSON.stringify({ name: 'a' }).length));
  t.same(await (await fetch(`${base}/things/a`, { method: 'DELETE' })).json(), { deleted: true });
});

t.test('another method: 405 listing every registered method', async (t) => {
  const res = await fetch(`${base}/things/a`, { method: 'PUT' });
  t.equal(res.status, 405);
  t.equal(res.headers.get('allow'), 'GET, HEAD, DELETE');
  t.match(await res.json(), { code: 'method_not_allowed' });
});

t.test('a handler that throws becomes a 500 problem, not a hang', async (t) => {
  const res = await fetch(`${base}/throws`);
  t.equal(res.status, 500);
  t.match(await res.json(), { code: 'internal' });
});
