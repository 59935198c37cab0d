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
<body>
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
<p class="muted">Session <code id="session-id">no session yet</code></p>
<script>
async function api(method, path, body) {
  const res = await fetch(path, { method, headers: body ? { 'content-type': 'application/json' } : {}, body: body ? JSON.stringify(body) : undefined });
  return res.json();
}
function render(s) {
  document.getElementById('node').textContent = s.node;
  document.getElementById('user').textContent = (s.data && s.data.user) || 'nobody';
  const items = (s.data && s.data.cart) || [];
  document.getElementById('cart-count').textContent = String(items.reduce((n, i) => n + i.qty, 0));
  // Text nodes only: a sku is whatever a client posted, never markup.
  document.getElementById('cart').replaceChildren(...items.map((i) => {
    const li = document.createElement('li');
    li.textContent = i.sku + ' × ' + i.qty;
    return li;
  }));
  document.getElementById('session-id').textContent = s.sessionId || 'no session yet';
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
