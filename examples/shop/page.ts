/** The shop's one page: plain HTML and a little script over the JSON API (no CDN, no build). */
export const SHOP_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Kiln shop</title>
<style>
  body { font: 16px/1.4 system-ui, sans-serif; margin: 2rem auto; max-width: 46rem; color: #222; }
  header { display: flex; justify-content: space-between; align-items: baseline; border-bottom: 2px solid #c2410c; margin-bottom: 1rem; }
  h1 { color: #c2410c; margin: 0 0 .5rem; }
  .node { font-family: ui-monospace, monospace; background: #fff7ed; border: 1px solid #fdba74; padding: .2rem .6rem; border-radius: .4rem; }
  .products { display: grid; grid-template-columns: repeat(3, 1fr); gap: .75rem; }
  .product { border: 1px solid #ddd; border-radius: .5rem; padding: .75rem; }
  button { background: #c2410c; color: white; border: 0; border-radius: .3rem; padding: .4rem .8rem; cursor: pointer; }
  button.secondary { background: #57534e; }
  section { margin: 1.5rem 0; }
  #cart li { font-family: ui-monospace, monospace; }
  .muted { color: #78716c; font-size: .9rem; }
</style>
</head>
<body data-live="ws">
<header><h1>Kiln shop</h1><div>served by <span class="node" id="node">…</span></div></header>
<p class="muted">Every request may go to any app server; your session follows you through the Kiln session tier. Kill the node that served you: your cart stays.</p>
<section>
  <h2>Account</h2>
  <div id="account">
    <span>Signed in as <strong id="user">nobody</strong></span>
    <form id="login-form"><input id="login-user" placeholder="user name" required> <button id="login" type="submit">Log in</button></form>
    <button id="logout" class="secondary" type="button">Log out</button>
    <button id="logout-everywhere" class="secondary" type="button">Log out everywhere</button>
  </div>
</section>
<section>
  <h2>Products</h2>
  <div class="products">
    <div class="product">Teapot<br><button data-sku="teapot">Add</button></div>
    <div class="product">Mug<br><button data-sku="mug">Add</button></div>
    <div class="product">Kiln glove<br><button data-sku="glove">Add</button></div>
  </div>
</section>
<section>
  <h2>Cart (<span id="cart-count">0</span>)</h2>
  <ul id="cart"></ul>
  <button id="clear-cart" class="secondary" type="button">Empty cart</button>
</section>
<p class="muted">Session <code id="session-id">no session yet</code> · live cart: <span id="live">waiting for a session</span></p>
<script>
async function api(method, path, body) {
  const res = await fetch(path, { method, headers: body ? { 'content-type': 'application/json' } : {}, body: body ? JSON.stringify(body) : undefined });
  return res.json();
}
function render(s) {
  document.getElementById('node').textContent = s.node;
  renderData(s.data || {});
  document.getElementById('session-id').textContent = s.sessionId || 'no session yet';
  // A session made (or replaced by a login) since the live socket connected: reconnect it to the new one.
  if (s.sessionId && s.sessionId !== liveSession) {
    if (live) live.close();
    else if (document.body.dataset.live === 'ws') connectLive();
  }
}
function renderData(data) {
  document.getElementById('user').textContent = data.user || 'nobody';
  const items = data.cart || [];
  document.getElementById('cart-count').textContent = String(items.reduce((n, i) => n + i.qty, 0));
  // Text nodes only: a sku is whatever a client posted, never markup.
  document.getElementById('cart').replaceChildren(...items.map((i) => {
    const li = document.createElement('li');
    li.textContent = i.sku + ' × ' + i.qty;
    return li;
  }));
}
// Live cart: a WebSocket to whichever app server this tab reached pushes the cart when
// another tab (on any node) changes it; without the ws package on the server, a poll.
let live;
let liveSession = null;
function setLive(text) { document.getElementById('live').textContent = text; }
function connectLive() {
  live = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/live');
  live.onmessage = (e) => {
    const m = JSON.parse(e.data);
    if (m.type === 'hello') {
      liveSession = m.sessionId;
      setLive(m.sessionId ? 'on ' + m.node : 'waiting for a session');
    } else if (m.type === 'cart') {
      renderData(m);
    }
  };
  live.onclose = (e) => {
    live = undefined;
    if (e.code === 4001) {
      // Its session ended (here or in another tab, on any node): no reconnect until there is a new one.
      liveSession = null;
      setLive('session ended (' + e.reason.replace('session ended: ', '') + ')');
      refresh();
      // A login in another tab of this browser replaces the session: its new cookie may land a moment later.
      setTimeout(refresh, 1500);
    } else {
      setTimeout(() => { if (!live) connectLive(); }, 1000);
    }
  };
}
if (document.body.dataset.live !== 'ws') {
  setLive('polling (install ws for instant updates)');
  setInterval(refresh, 2000);
}
async function refresh() { render(await api('GET', '/api/session')); }
document.querySelectorAll('button[data-sku]').forEach((b) => b.addEventListener('click', async () => { await api('POST', '/api/cart', { sku: b.dataset.sku, qty: 1 }); await refresh(); }));
document.getElementById('login-form').addEventListener('submit', async (e) => { e.preventDefault(); await api('POST', '/api/login', { user: document.getElementById('login-user').value }); await refresh(); });
document.getElementById('logout').addEventListener('click', async () => { await api('POST', '/api/logout'); await refresh(); });
document.getElementById('logout-everywhere').addEventListener('click', async () => { await api('POST', '/api/logout-everywhere'); await refresh(); });
document.getElementById('clear-cart').addEventListener('click', async () => { await api('DELETE', '/api/cart'); await refresh(); });
refresh();
</script>
</body>
</html>
`;
