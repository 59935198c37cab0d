/**
 * The cluster as a live SVG diagram (traffic → app servers → session tier), with HTTP
 * request rates and tier message rates on the arrows and leases per app server; an app
 * server whose connection dropped turns red (the overview keeps it for a minute). Below
 * it, the same figures as a table.
 */
export const SCRIPT_DIAGRAM = String.raw`
function tierLines(o) {
  const s = o.server, held = fmt(o.sessions.count) + ' sessions · ' + fmt(o.leases.held) + ' leases held';
  if (o.storage.kind === 'redis') return ['Redis (' + s.role.replace(/^redis-/, '') + ')'].concat(String(s.address).split(',').slice(0, 4).map((a) => a.trim()), [held]);
  return ['kiln server', s.address + (s.tls ? ' (TLS)' : ''), o.storage.dataDir ? 'log: ' + o.storage.dataDir : 'memory only', held];
}
/** The balancer's view of each app server by name, with its request rate; null without a balancer. */
function balancerNodes(o) {
  const b = o.balancer;
  if (!b || !b.status) return null;
  const nodes = new Map();
  for (const n of b.status.nodes) nodes.set(n.name, { ...n, rate: rateOf('lb ' + n.name, n.requests, b.at) });
  return nodes;
}
function appState(c) { return c.state === 'gone' || c.state === 'down' ? 'gone' : c.stats ? 'live' : 'stale'; }
/** Nodes the balancer sends to that no client of the tier is named after: drawn too, red when its health checks fail. */
function balancerOnly(lb, apps) {
  if (!lb) return [];
  return [...lb.values()].filter((n) => !apps.some((c) => (c.label || c.name) === n.name)).map((n) => ({ name: n.name, label: n.name, host: n.url.replace(/^https?:\/\//, ''), pid: n.pid === null ? '–' : n.pid, leases: null, state: n.healthy ? 'unknown' : 'down', balancerOnly: true }));
}
function drawDiagram(o) {
  const lb = balancerNodes(o), bal = o.balancer, box = $('diagram');
  const known = o.clients.concat(o.departed || []), apps = known.concat(balancerOnly(lb, known));
  const W = Math.max(480, box.clientWidth || 900), n = Math.max(1, apps.length), gap = 24;
  const bw = Math.min(190, (W - gap * (n + 1)) / n), bh = 78, top = bal ? 100 : 46, H = top + bh + 150;
  const x0 = (W - (n * bw + (n - 1) * gap)) / 2;
  const tw = 260, th = 24 + 16 * tierLines(o).length, tx = (W - tw) / 2, ty = H - th - 6;
  let out = '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#a8a29e"/></marker></defs>';
  if (bal) {
    const lw = 300, lx = (W - lw) / 2, st = bal.reachable ? 'live' : 'gone', total = lb ? [...lb.values()].reduce((a, x) => (x.rate === null ? a : (a || 0) + x.rate), null) : null;
    out += '<g class="node balancer ' + st + '" data-state="' + st + '"><rect x="' + lx + '" y="4" width="' + lw + '" height="54" rx="6"/><text class="title" x="' + (lx + 10) + '" y="22">kiln balancer' + (bal.status ? ' · ' + esc(bal.status.affinity) + ' affinity' : '') + '</text>';
    out += '<text x="' + (lx + 10) + '" y="38">' + esc(bal.url) + (total === null ? '' : ' · ' + fmt(total) + ' req/s') + '</text>';
    out += '<text x="' + (lx + 10) + '" y="53">' + esc(bal.reachable ? (lb ? lb.size + ' nodes, ' + [...lb.values()].filter((x) => x.healthy).length + ' healthy' : '') : 'unreachable: ' + bal.error) + '</text></g>';
  } else out += '<text x="' + W / 2 + '" y="14" text-anchor="middle">HTTP traffic (browsers, load balancer)</text>';
  apps.forEach((c, i) => {
    const x = x0 + i * (bw + gap), cx = x + bw / 2, st = appState(c), r = (o.rates && o.rates.get(c.name)) || {};
    const node = lb && lb.get(c.label || c.name);
    const http = node ? (node.rate === null ? '– req/s' : fmt(node.rate) + ' req/s') + (node.draining ? ' · draining' : node.healthy ? '' : ' · unhealthy') : st === 'gone' ? 'gone' : r.http === null || r.http === undefined ? '– req/s' : fmt(r.http) + ' req/s';
    const msgs = st === 'gone' ? '' : r.messages === null || r.messages === undefined ? '– msg/s' : fmt(r.messages) + ' msg/s';
    const from = bal ? 58 : 22;
    out += '<line class="edge' + (st === 'gone' || (node && !node.healthy) ? ' gone' : '') + '" x1="' + (bal ? W / 2 + (cx - W / 2) * 0.3 : cx) + '" y1="' + from + '" x2="' + cx + '" y2="' + (top - 2) + '"/>';
    out += '<text class="rate" x="' + (cx + 6) + '" y="' + (top - 10) + '">' + esc(http) + '</text>';
    out += '<g class="node app ' + st + '" data-client="' + esc(c.name) + '" data-state="' + st + '"><title>' + esc(c.name + ' · ' + c.host + ' pid ' + c.pid) + '</title><rect x="' + x + '" y="' + top + '" width="' + bw + '" height="' + bh + '" rx="6"/>';
    out += '<text class="title" x="' + (x + 8) + '" y="' + (top + 18) + '">' + esc(c.label || c.name) + '</text>';
    out += '<text x="' + (x + 8) + '" y="' + (top + 35) + '">' + esc(c.host + ' · pid ' + c.pid) + '</text>';
    const line3 = c.balancerOnly ? 'not connected to the tier' : st === 'gone' ? 'connection lost ' + ago(Date.now() - c.goneAt) + ' ago' : 'leases ' + fmt(c.leases);
    const line4 = c.balancerOnly ? (c.state === 'down' ? 'balancer: health checks fail' : 'balancer: healthy') : st === 'stale' ? 'no report yet' : st === 'gone' ? 'last leases ' + fmt(c.leases) : '';
    out += '<text x="' + (x + 8) + '" y="' + (top + 52) + '">' + esc(line3) + '</text>';
    out += '<text x="' + (x + 8) + '" y="' + (top + 69) + '">' + esc(line4) + '</text></g>';
    const ex = tx + tw * ((i + 1) / (n + 1));
    if (c.balancerOnly) return;
    out += '<line class="edge' + (st === 'gone' ? ' gone' : '') + '" x1="' + cx + '" y1="' + (top + bh) + '" x2="' + ex + '" y2="' + (ty - 2) + '"/>';
    if (msgs) out += '<text x="' + ((cx + ex) / 2 + 6) + '" y="' + ((top + bh + ty) / 2) + '">' + esc(msgs) + '</text>';
  });
  if (!apps.length) out += '<text x="' + W / 2 + '" y="' + (top + 40) + '" text-anchor="middle">no app server connected</text>';
  out += '<g class="node tier"><rect x="' + tx + '" y="' + ty + '" width="' + tw + '" height="' + th + '" rx="6"/>';
  tierLines(o).forEach((l, i) => { out += '<text ' + (i ? '' : 'class="title" ') + 'x="' + (tx + 10) + '" y="' + (ty + 18 + i * 16) + '">' + esc(l) + '</text>'; });
  out += '</g>';
  box.innerHTML = '<svg viewBox="0 0 ' + W + ' ' + H + '" height="' + H + '" role="img" aria-label="cluster diagram">' + out + '</svg>';
  $('cluster-note').textContent = o.clients.length + ' app server(s) connected' + ((o.departed || []).length ? ', ' + o.departed.length + ' gone' : '');
}
function drawTable(o) {
  const rows = o.clients.concat(o.departed || []);
  let http = 0, httpKnown = false, leases = 0, messages = 0, hits = 0, misses = 0, cacheKnown = false;
  $('clients').innerHTML = rows.map((c) => {
    const st = appState(c), r = (o.rates && o.rates.get(c.name)) || {}, f = clientFigures(c);
    if (st !== 'gone') {
      leases += c.leases; messages += c.requests;
      if (r.http !== null && r.http !== undefined) { http += r.http; httpKnown = true; }
      if (f.hits !== null) { hits += f.hits; misses += f.misses; cacheKnown = true; }
    }
    const total = f.hits === null ? 0 : f.hits + f.misses;
    const state = st === 'gone' ? 'gone ' + ago(Date.now() - c.goneAt) + ' ago' : st === 'live' ? 'reporting' : 'waiting for its first report';
    return '<tr class="' + st + '" data-client="' + esc(c.name) + '" data-state="' + st + '"><td title="' + esc(c.name) + '">' + esc(c.label || c.name) + '</td><td>' + esc(c.host) + '</td><td>' + esc(c.pid) + '</td><td class="num">' + (st === 'gone' || r.http === null || r.http === undefined ? '–' : fmt(r.http)) + '</td><td class="num">' + fmt(c.leases) + '</td><td class="num">' + fmt(c.requests) + '</td><td class="num">' + (total ? fmt((100 * f.hits) / total, 1) + '%' : '–') + '</td><td class="' + (st === 'gone' ? 'dead' : st === 'live' ? 'ok' : 'warn') + '">' + state + '</td></tr>';
  }).join('') || '<tr><td colspan="8" class="muted">no app server connected</td></tr>';
  $('clients-total').innerHTML = o.clients.length ? '<tr><td colspan="3">all connected</td><td class="num">' + (httpKnown ? fmt(http) : '–') + '</td><td class="num">' + fmt(leases) + '</td><td class="num">' + fmt(messages) + '</td><td class="num" id="cache-total">' + (cacheKnown && hits + misses ? fmt((100 * hits) / (hits + misses), 1) + '%' : '–') + '</td><td></td></tr>' : '';
}
onOverview((o) => { drawDiagram(o); drawTable(o); });
`;
