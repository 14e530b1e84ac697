import { createHash } from 'node:crypto';
import type uWS from 'uWebSockets.js';

/**
 * The watch-a-drop page served at `/`: static HTML and one inline script, no
 * build step. `/?sku=SNEAKER-42&token=<shopper JWT>` shows the SKU's live count
 * over `/v1/stream` and a Reserve button (the token is needed only to reserve);
 * `&cart=A,B` adds a button holding one of each as a cart (all or nothing).
 * With `&queue=1` (or once a reserve is refused with admission_required) the
 * page takes a ticket in the SKU's waiting room, shows its position, and sends
 * the admission token with Reserve once admitted.
 * `/?drop=NAME` follows a drop: it reads `GET /v1/drops/NAME`, watches the
 * current cycle's SKU (or the next one's), and moves to the next cycle when
 * the current one closes. A sold-out SKU with a waitlist offers "Join waitlist":
 * the page shows the place in line (read every few seconds) and the offer,
 * pushed over the stream, which the Release button can give back.
 * It lives in a .ts module so `tsc` ships it in dist/ with the rest.
 */

const style = `
body { font: 16px/1.4 system-ui, sans-serif; max-width: 32rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
h1 { font-size: 1.3rem; }
#available { font-size: 4rem; font-weight: 700; margin: 0.5rem 0; }
.muted { color: #666; font-size: 0.9rem; }
button { font-size: 1.1rem; padding: 0.5rem 1.2rem; margin-right: 0.5rem; }
#status.up { color: #1a7f37; } #status.down { color: #b42318; }
#result.error { color: #b42318; }
form input { width: 100%; margin-bottom: 0.5rem; font-size: 1rem; }
`;

const script = `
'use strict';
const params = new URLSearchParams(location.search);
const drop = params.get('drop');
let sku = drop ? null : params.get('sku');
const token = params.get('token');
// &cart=A,B,C: a cart of one unit of each (held all-or-nothing), beside the SKU watched.
const cartSkus = (params.get('cart') || '').split(',').filter((s) => s !== '').slice(0, 20);
const $ = (id) => document.getElementById(id);

function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');
}

if (!sku && !drop) {
  $('watch').hidden = true;
} else {
  $('pick').hidden = true;
  $('sku').textContent = sku || '–';
  if (drop) $('what').textContent = 'Drop ' + drop + ' · SKU';
  let socket = null;
  let retryMs = 500;
  let counter = 0;
  let lastReservation = null;
  let available = null;
  // The latest stock frame: its sale state is as of when it was sent, so the
  // crossing of startsAt/endsAt is followed here by the clock, between frames.
  let stock = null;
  const saleState = () => {
    if (stock === null) return null;
    if (stock.state === 'archived') return 'archived';
    const now = Date.now();
    if (stock.endsAt && now >= Date.parse(stock.endsAt)) return 'ended';
    if (stock.startsAt && now < Date.parse(stock.startsAt)) return 'not_started';
    return 'on_sale';
  };
  const stateWords = { on_sale: 'on sale', not_started: 'not started', ended: 'ended', archived: 'archived' };
  const showState = () => {
    const state = saleState();
    $('state').textContent = state === null ? '' : stateWords[state] +
      (state === 'not_started' ? ' · opens ' + new Date(stock.startsAt).toLocaleString() : '');
    $('state').dataset.state = state || '';
  };
  // Waiting room: the ticket's admission token, once admitted (null: not in a waiting room, or not admitted yet).
  let queued = false;
  let admission = null;
  const canReserve = () => token && sku && socket && socket.readyState === 1 && available !== null && available > 0 && saleState() === 'on_sale' && (!queued || admission);
  // The shopper's waitlist entry on this SKU (GET /v1/waitlist/{id}), null before joining.
  let entry = null;
  const auth = () => ({ authorization: 'Bearer ' + token });
  const showEntry = () => {
    const words = !entry ? '' : entry.status === 'waiting' ? 'waitlist: position ' + entry.position
      : entry.status === 'offered' ? 'waitlist offer: ' + entry.quantity + ' held for you until ' + new Date(entry.offerExpiresAt).toLocaleTimeString()
      : 'waitlist: ' + entry.status;
    $('waitlist').textContent = words;
    $('waitlist').dataset.status = entry ? entry.status : '';
  };
  const pollEntry = async () => {
    if (!entry || entry.status !== 'waiting') return;
    const response = await fetch('/v1/waitlist/' + entry.waitlistId, { headers: auth(), cache: 'no-store' });
    if (response.ok) entry = await response.json();
    showEntry();
    setTimeout(pollEntry, 5000);
  };
  // Whether the SKU has a waitlist: its stock frames say.
  const canJoin = () => token && sku && stock !== null && stock.waitlist && available === 0 && saleState() === 'on_sale' &&
    !(entry && (entry.status === 'waiting' || entry.status === 'offered'));
  const refresh = () => {
    showState();
    $('reserve').disabled = !canReserve();
    $('join').hidden = !canJoin();
    $('release').disabled = !(lastReservation && lastReservation.status === 'held' && socket && socket.readyState === 1);
    $('cart').hidden = cartSkus.length === 0;
    $('cart').disabled = !(token && socket && socket.readyState === 1);
  };
  const show = (text, isError) => {
    $('result').textContent = text;
    $('result').className = isError ? 'error' : '';
  };
  const showTicket = (view) => {
    queued = true;
    const admitted = view.status === 'admitted';
    admission = admitted ? view.admissionToken : null;
    $('queue').dataset.status = view.status;
    $('queue').textContent = admitted ? 'waiting room: admitted, you may reserve'
      : 'waiting room: ' + (view.position === null ? 'your place is drawn at the start' : 'position ' + view.position) + ' · about ' + view.estimatedWaitSeconds + ' s';
    // Admitted: fetch a fresh token before this one expires; waiting: look again soon.
    const againMs = admitted ? Date.parse(view.admissionExpiresAt) - Date.now() - 30000 : view.estimatedWaitSeconds * 500;
    setTimeout(() => ticketCall('GET', '/v1/queue/' + view.ticket), Math.min(Math.max(againMs, 1000), 5000));
    refresh();
  };
  const ticketCall = async (method, path) => {
    try {
      const response = await fetch(path, { method, headers: { authorization: 'Bearer ' + token }, cache: 'no-store' });
      const view = await response.json();
      if (response.ok) showTicket(view);
      else $('queue').textContent = 'waiting room: ' + response.status + ' ' + view.code;
    } catch (error) {
      setTimeout(() => ticketCall(method, path), 2000);
    }
  };
  const joinQueue = () => {
    if (!queued && token && sku) ticketCall('POST', '/v1/skus/' + encodeURIComponent(sku) + '/queue');
  };
  const connect = () => {
    const url = new URL('/v1/stream', location.href);
    url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    if (token) url.searchParams.set('token', token);
    socket = new WebSocket(url);
    socket.onopen = () => {
      retryMs = 500;
      $('status').textContent = 'live';
      $('status').className = 'up';
      if (sku) socket.send(JSON.stringify({ type: 'subscribe', skus: [sku] }));
      refresh();
    };
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === 'hello') {
        $('who').textContent = message.shopperId
          ? 'signed in as ' + message.shopperId
          : 'watching only' + (message.tokenError ? ' (' + message.tokenError + ')' : ' (add &token=<shopper JWT> to reserve)');
      } else if (message.type === 'stock' && message.sku === sku) {
        stock = message;
        available = message.available;
        $('available').textContent = String(message.available);
        $('counts').textContent = 'held ' + message.held + ' · sold ' + message.sold + ' · seq ' + message.seq;
      } else if (message.type === 'waitlist_offer' && message.entry.sku === sku) {
        entry = message.entry;
        lastReservation = { reservationId: entry.reservationId, status: 'held', expiresAt: entry.offerExpiresAt };
        showEntry();
      } else if (message.type === 'reservation') {
        lastReservation = message.reservation;
        show('reservation ' + lastReservation.reservationId.slice(0, 8) + '… ' + lastReservation.status +
          (lastReservation.status === 'held' ? ' until ' + new Date(lastReservation.expiresAt).toLocaleTimeString() : ''), false);
      } else if (message.type === 'cart') {
        show('cart ' + message.cart.cartId.slice(0, 8) + '… held: ' + message.cart.items.map((i) => i.sku).join(', ') +
          ' until ' + new Date(message.cart.expiresAt).toLocaleTimeString(), false);
      } else if (message.type === 'error' && message.line !== undefined) {
        show(message.status + ' ' + message.code + ' (line ' + message.line + ', ' + message.sku + '): ' + message.detail + ' · nothing held', true);
      } else if (message.type === 'error' && drop && message.sku && message.sku === sku && message.code === 'not_found') {
        // The next cycle is announced but its SKU not created yet: ask again shortly.
        setTimeout(() => {
          if (message.sku === sku && socket && socket.readyState === 1) socket.send(JSON.stringify({ type: 'subscribe', skus: [sku] }));
        }, 1000);
      } else if (message.type === 'error') {
        show(message.status + ' ' + message.code + ': ' + message.detail, true);
        if (message.code === 'admission_required') joinQueue();
      }
      refresh();
    };
    socket.onclose = (event) => {
      $('status').textContent = 'reconnecting (' + event.code + ')';
      $('status').className = 'down';
      socket = null;
      refresh();
      setTimeout(connect, retryMs);
      retryMs = Math.min(retryMs * 2, 10000);
    };
  };
  // Drops: follow the current cycle's SKU (or the next one's); switch when it closes.
  const follow = (next) => {
    if (next === sku) return;
    const previous = sku;
    sku = next;
    available = null;
    stock = null;
    entry = null;
    showEntry();
    $('sku').textContent = sku || '–';
    $('available').textContent = '–';
    $('counts').textContent = '';
    if (socket && socket.readyState === 1) {
      if (previous) socket.send(JSON.stringify({ type: 'unsubscribe', skus: [previous] }));
      if (sku) socket.send(JSON.stringify({ type: 'subscribe', skus: [sku] }));
    }
    refresh();
  };
  const time = (iso) => new Date(iso).toLocaleTimeString();
  let dropTimer = null;
  const loadDrop = async () => {
    clearTimeout(dropTimer);
    let waitMs = 10000;
    try {
      const response = await fetch('/v1/drops/' + encodeURIComponent(drop), { cache: 'no-store' });
      const view = await response.json();
      const cycle = response.ok ? view.current || view.next : null;
      if (!response.ok) {
        $('cycle').textContent = response.status + ' ' + (view.code || '') + ': ' + (view.detail || 'drop not available');
      } else if (!cycle) {
        $('cycle').textContent = 'no cycle open or coming';
        follow(null);
      } else {
        const open = cycle === view.current;
        $('cycle').textContent = 'cycle ' + cycle.cycle + (open ? ' · open until ' + time(cycle.endsAt) : ' · opens at ' + time(cycle.startsAt));
        follow(cycle.sku);
        // Look again when this cycle closes (the next takes over) or opens.
        waitMs = Date.parse(open ? cycle.endsAt : cycle.startsAt) - Date.now() + 50;
      }
    } catch (error) {
      $('cycle').textContent = 'cannot read the drop; retrying';
      waitMs = 1000;
    }
    dropTimer = setTimeout(loadDrop, Math.min(Math.max(waitMs, 200), 60000));
  };
  if (drop) loadDrop();
  $('reserve').onclick = () => {
    if (!canReserve()) return;
    const reserve = { type: 'reserve', id: 'r' + ++counter, sku, quantity: 1, idempotencyKey: newKey() };
    if (admission) reserve.admissionToken = admission;
    socket.send(JSON.stringify(reserve));
  };
  $('cart').textContent = 'Hold cart: ' + cartSkus.join(' + ');
  $('cart').onclick = () => {
    if (!socket || cartSkus.length === 0) return;
    socket.send(JSON.stringify({ type: 'cart', id: 'c' + ++counter, idempotencyKey: newKey(), items: cartSkus.map((s) => ({ sku: s, quantity: 1 })) }));
  };
  $('join').onclick = async () => {
    if (!canJoin()) return;
    const response = await fetch('/v1/skus/' + encodeURIComponent(sku) + '/waitlist', {
      method: 'POST',
      headers: { ...auth(), 'content-type': 'application/json', 'idempotency-key': newKey() },
      body: JSON.stringify({ quantity: 1 }),
    });
    const body = await response.json();
    if (!response.ok) return show(response.status + ' ' + body.code + ': ' + body.detail, true);
    entry = body;
    showEntry();
    refresh();
    setTimeout(pollEntry, 5000);
  };
  $('release').onclick = () => {
    if (!lastReservation || !socket) return;
    socket.send(JSON.stringify({ type: 'release', id: 'r' + ++counter, reservationId: lastReservation.reservationId }));
  };
  connect();
  if (params.get('queue') === '1' && !drop) joinQueue();
  // The sale opens or ends on the clock, with no frame of its own.
  setInterval(refresh, 1000);
}
`;

const sha256 = (text: string) => createHash('sha256').update(text).digest('base64');

export const pageHtml = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>flashstock · live stock</title>
<style>${style}</style>
</head>
<body>
<section id="pick">
  <h1>flashstock · watch a drop</h1>
  <form method="get" action="/">
    <input name="sku" placeholder="SKU, e.g. SNEAKER-42" pattern="[A-Za-z0-9._\\-]{1,64}">
    <input name="drop" placeholder="or a drop, e.g. NOTCOIN-HOURLY" pattern="[A-Za-z0-9._\\-]{1,54}">
    <input name="token" placeholder="shopper JWT (optional; needed to reserve)">
    <button type="submit">Watch</button>
  </form>
</section>
<section id="watch">
  <h1><span id="what">SKU</span> <span id="sku"></span></h1>
  <div id="cycle" class="muted"></div>
  <div id="state" data-state=""></div>
  <div class="muted">available</div>
  <div id="available">–</div>
  <div id="counts" class="muted"></div>
  <div id="queue" data-status=""></div>
  <p><button id="reserve" disabled>Reserve 1</button><button id="release" disabled>Release</button><button id="cart" hidden disabled>Hold cart</button><button id="join" hidden>Join waitlist</button></p>
  <p id="waitlist" data-status=""></p>
  <p id="result"></p>
  <p class="muted"><span id="status">connecting</span> · <span id="who"></span></p>
</section>
<script>${script}</script>
</body>
</html>
`;

// Only this page's own script and style may run: the hashes pin them.
const contentSecurityPolicy = [
  "default-src 'none'",
  `script-src 'sha256-${sha256(script)}'`,
  `style-src 'sha256-${sha256(style)}'`,
  "connect-src 'self'",
  "form-action 'self'",
  "base-uri 'none'",
  "frame-ancestors 'none'",
].join('; ');

/** `GET /` (and HEAD) serves the page; the token in its URL must not leak through Referer. */
export function servePage(app: uWS.TemplatedApp): void {
  const serve = (res: uWS.HttpResponse, req: uWS.HttpRequest) => {
    const head = req.getMethod() === 'head';
    res.cork(() => {
      res.writeStatus('200 OK');
      res.writeHeader('content-type', 'text/html; charset=utf-8');
      res.writeHeader('content-security-policy', contentSecurityPolicy);
      res.writeHeader('referrer-policy', 'no-referrer');
      res.writeHeader('x-content-type-options', 'nosniff');
      res.writeHeader('cache-control', 'no-cache');
      if (!head) {
        res.end(pageHtml);
        return;
      }
      // As src/http/exchange.ts: uWS would say Content-Length 0, so it is written by hand.
      res.writeHeader('content-length', String(Buffer.byteLength(pageHtml)));
      res.endWithoutBody();
    });
  };
  app.get('/', serve);
  app.head('/', serve);
}
