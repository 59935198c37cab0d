/**
 * The web console, served by the kiln server's admin port at `/`: one page, no
 * dependencies, no CDN. It polls /api/overview every second (cluster view and live
 * charts drawn on canvas), browses sessions through /api/sessions, and follows
 * /api/events (SSE). The token comes from the URL fragment (#token=…, which browsers
 * never send) or a prompt, stays in sessionStorage and goes in the Authorization header;
 * the events stream, which cannot carry a header, opens with a single-use ticket.
 *
 * The page's one script and one style carry the nonce of its Content-Security-Policy;
 * nothing else on it may run (no inline handlers, no style attributes).
 */
export function consolePage(nonce: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Kiln console</title>
<style nonce="${nonce}">
  :root { --fire: #c2410c; --ink: #1c1917; --muted: #78716c; --line: #e7e5e4; }
  * { box-sizing: border-box; }
  body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: var(--ink); background: #fafaf9; }
  header { background: var(--ink); color: white; padding: .6rem 1.2rem; display: flex; gap: 1.5rem; align-items: baseline; }
  header h1 { margin: 0; font-size: 1.2rem; color: #fdba74; }
  main { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; padding: 1rem; }
  section { background: white; border: 1px solid var(--line); border-radius: .5rem; padding: .8rem 1rem; }
  section.wide { grid-column: 1 / -1; }
  h2 { font-size: 1rem; margin: 0 0 .5rem; }
  table { width: 100%; border-collapse: collapse; }
  th, td { text-align: left; padding: .25rem .4rem; border-bottom: 1px solid var(--line); font-variant-numeric: tabular-nums; }
  .ok { color: #15803d; } .warn { color: #b45309; }
  .charts { display: grid; grid-template-columns: repeat(5, 1fr); gap: .8rem; }
  .chart { border: 1px solid var(--line); border-radius: .4rem; padding: .4rem; }
  .chart b { float: right; }
  canvas { width: 100%; height: 90px; display: block; }
  input { padding: .3rem .5rem; width: 60%; }
  button { background: var(--fire); color: white; border: 0; border-radius: .3rem; padding: .35rem .8rem; cursor: pointer; }
  #results li, #events li { font-family: ui-monospace, monospace; font-size: 12px; list-style: none; padding: .15rem 0; border-bottom: 1px dotted var(--line); cursor: pointer; }
  #results, #events { padding: 0; margin: .5rem 0 0; max-height: 16rem; overflow: auto; }
  #detail pre { font-size: 12px; white-space: pre-wrap; }
  .muted { color: var(--muted); }
</style>
</head>
<body>
<header><h1>Kiln console</h1><span id="server">connecting…</span><span id="health" class="muted"></span></header>
<main>
  <section class="wide">
    <h2>Live</h2>
    <div class="charts">
      <div class="chart">requests/s <b id="rate-requests">0</b><canvas id="chart-requests" width="300" height="90"></canvas></div>
      <div class="chart">commits/s <b id="rate-commits">0</b><canvas id="chart-commits" width="300" height="90"></canvas></div>
      <div class="chart">near-cache hit % <b id="rate-hits">–</b><canvas id="chart-hits" width="300" height="90"></canvas></div>
      <div class="chart">lease wait ms (p50) <b id="lease-wait">0</b><canvas id="chart-wait" width="300" height="90"></canvas></div>
      <div class="chart">sessions <b id="count-sessions">0</b><canvas id="chart-sessions" width="300" height="90"></canvas></div>
    </div>
    <p class="muted">lease recalls/s <b id="rate-recalls">0</b> · lease waiters <b id="lease-waiters">0</b> · leases held <b id="leases">0</b></p>
  </section>
  <section>
    <h2>Cluster</h2>
    <table><thead><tr><th>app server</th><th>host</th><th>pid</th><th>leases</th><th>requests</th><th>cache hit</th><th>health</th></tr></thead><tbody id="clients"></tbody></table>
  </section>
  <section>
    <h2>Sessions</h2>
    <form id="search-form"><input id="search" placeholder="id prefix or principal"> <button id="search-button" type="submit">Find</button></form>
    <ul id="results"></ul>
    <div id="detail"></div>
  </section>
  <section class="wide">
    <h2>Events</h2>
    <ul id="events"></ul>
  </section>
</main>
<script nonce="${nonce}">
const params = new URLSearchParams(location.hash.slice(1));
let token = params.get('token') || sessionStorage.getItem('kiln-token') || '';
if (!token) token = prompt('Kiln admin token') || '';
sessionStorage.setItem('kiln-token', token);
history.replaceState(null, '', location.pathname);
const api = async (method, path) => {
  const res = await fetch(path, { method, headers: { authorization: 'Bearer ' + token } });
  const body = await res.json();
  if (!res.ok) throw new Error(body.code + ': ' + body.message);
  return body;
};
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]);
const series = { requests: [], commits: [], hits: [], wait: [], sessions: [] };
let previous;
function draw(name) {
  const canvas = $('chart-' + name), ctx = canvas.getContext('2d'), data = series[name];
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (data.length < 2) return;
  const max = Math.max(1, ...data);
  ctx.strokeStyle = '#c2410c'; ctx.lineWidth = 2; ctx.beginPath();
  data.forEach((v, i) => { const x = (i / 119) * canvas.width, y = canvas.height - 4 - (v / max) * (canvas.height - 8); i ? ctx.lineTo(x, y) : ctx.moveTo(x, y); });
  ctx.stroke();
  canvas.dataset.points = String(data.length);
}
function push(name, value) { series[name].push(value); if (series[name].length > 120) series[name].shift(); draw(name); }
async function tick() {
  try {
    const o = await api('GET', '/api/overview');
    const now = Date.now();
    $('server').textContent = o.server.address + ' · ' + o.server.role + ' · v' + o.server.version + ' · up ' + Math.round(o.server.uptimeMs / 1000) + 's · ' + (o.storage.kind === 'redis' ? 'sessions in Redis' + (o.storage.replicas ? ', ' + o.storage.replicas + ' replica(s) confirm each commit' : '') : o.storage.dataDir || 'memory only');
    const waits = o.leases.waiting;
    $('health').textContent = o.connections === 0 ? 'no app server connected' : waits > 0 ? waits + ' lease waits' : 'healthy';
    $('health').className = o.connections === 0 || waits > 0 ? 'warn' : 'ok';
    const requests = o.clients.reduce((n, c) => n + c.requests, 0);
    const hits = o.clients.reduce((n, c) => n + ((c.stats && c.stats.cache && c.stats.cache.hits) || 0), 0);
    const misses = o.clients.reduce((n, c) => n + ((c.stats && c.stats.cache && c.stats.cache.misses) || 0), 0);
    if (previous) {
      const dt = (now - previous.at) / 1000;
      const r = Math.max(0, (requests - previous.requests) / dt), c = Math.max(0, (o.counters.commits - previous.commits) / dt);
      const dh = hits - previous.hits, dm = misses - previous.misses;
      push('requests', r); push('commits', c);
      if (dh + dm > 0) { push('hits', (100 * dh) / (dh + dm)); $('rate-hits').textContent = ((100 * dh) / (dh + dm)).toFixed(0); }
      $('rate-requests').textContent = r.toFixed(0); $('rate-commits').textContent = c.toFixed(0);
      $('rate-recalls').textContent = ((o.counters.leaseRecalls - previous.recalls) / dt).toFixed(1);
    }
    push('sessions', o.sessions.count);
    push('wait', o.recent.leaseWaitMsP50); $('lease-wait').textContent = String(o.recent.leaseWaitMsP50);
    $('count-sessions').textContent = o.sessions.count; $('lease-waiters').textContent = waits; $('leases').textContent = o.leases.held;
    previous = { at: now, requests, commits: o.counters.commits, recalls: o.counters.leaseRecalls, hits, misses };
    $('clients').innerHTML = o.clients.map((c) => {
      const cache = c.stats && c.stats.cache; const total = cache ? cache.hits + cache.misses : 0;
      const fresh = c.stats ? 'ok' : 'waiting for stats';
      return '<tr data-client="' + esc(c.name) + '"><td>' + esc(c.name) + '</td><td>' + esc(c.host) + '</td><td>' + c.pid + '</td><td>' + c.leases + '</td><td>' + c.requests + '</td><td>' + (total ? ((100 * cache.hits) / total).toFixed(1) + '%' : '–') + '</td><td class="' + (c.stats ? 'ok' : 'warn') + '">' + fresh + '</td></tr>';
    }).join('');
  } catch (err) {
    $('health').textContent = String(err.message || err); $('health').className = 'warn';
  }
}
async function search(e) {
  e && e.preventDefault();
  const q = $('search').value.trim();
  // A principal first; failing that, an id prefix.
  let page = await api('GET', '/api/sessions?limit=50&principal=' + encodeURIComponent(q));
  if (!page.sessions.length) page = await api('GET', '/api/sessions?limit=50' + (q ? '&prefix=' + encodeURIComponent(q) : ''));
  $('results').innerHTML = page.sessions.map((s) => '<li data-id="' + esc(s.ref) + '">' + esc(s.id.slice(0, 8)) + '… · ' + esc(s.principal || '–') + ' · v' + s.version + '</li>').join('') || '<li class="muted">no session</li>';
}
async function show(id) {
  const s = await api('GET', '/api/sessions/' + encodeURIComponent(id));
  $('detail').innerHTML = '<p><b>' + esc(s.meta.id) + '</b><br>principal ' + esc(s.meta.principal || '–') + ' · version ' + s.meta.version + ' · ' + s.bytes + ' bytes</p><pre>' + s.attributes.map((a) => esc(a.name) + ' (' + a.type + ', ' + a.bytes + ' B)' + (a.preview === undefined ? '' : ': ' + esc(a.preview))).join('\\n') + '</pre>' + (s.meta.ref === s.meta.id ? '<button id="invalidate" data-id="' + esc(id) + '">Invalidate</button>' : '<p class="muted">read-only token: values and full ids are hidden</p>');
}
$('search-form').addEventListener('submit', search);
$('results').addEventListener('click', (e) => { const li = e.target.closest('li[data-id]'); if (li) show(li.dataset.id); });
$('detail').addEventListener('click', async (e) => {
  if (e.target.id !== 'invalidate') return;
  const r = await api('DELETE', '/api/sessions/' + encodeURIComponent(e.target.dataset.id));
  $('detail').innerHTML = '<p id="invalidated">' + (r.destroyed ? 'invalidated' : 'already gone') + '</p>';
  search();
});
// EventSource sends no Authorization header: a single-use ticket opens the stream, and a new one reopens it.
async function follow() {
  let events;
  try {
    const { ticket } = await api('POST', '/api/tickets');
    events = new EventSource('/api/events?ticket=' + encodeURIComponent(ticket));
  } catch (err) {
    setTimeout(follow, 5000);
    return;
  }
  events.onerror = () => { events.close(); setTimeout(follow, 1000); };
  for (const type of ['session', 'lease', 'client', 'error']) {
    events.addEventListener(type, (e) => {
      const d = JSON.parse(e.data);
      const li = document.createElement('li');
      li.textContent = new Date(d.at || Date.now()).toLocaleTimeString() + ' ' + type + ' ' + (d.type || d.code || '') + ' ' + (d.sessionId ? d.sessionId.slice(0, 8) + '…' : d.client ? d.client.name : '');
      $('events').prepend(li);
      while ($('events').children.length > 200) $('events').lastChild.remove();
    });
  }
}
follow();
tick(); setInterval(tick, 1000);
</script>
</body>
</html>
`;
}
