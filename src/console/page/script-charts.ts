/**
 * The page's charts: SVG line charts with a time axis over the chosen window (5, 15 or
 * 60 minutes), a value axis with its unit, and the value under the pointer. The history
 * comes from /api/timeseries (10-second samples), the live points from the overview poll.
 * "HTTP requests/s" are the apps' requests as their clients report them; messages to
 * the tier are a chart of their own.
 */
export const SCRIPT_CHARTS = String.raw`
const CHARTS = [
  { key: 'http', title: 'HTTP requests/s (apps)', unit: '/s' },
  { key: 'messages', title: 'tier messages/s', unit: '/s' },
  { key: 'commits', title: 'commits/s', unit: '/s' },
  { key: 'hits', title: 'near-cache hit %', unit: '%', max: 100 },
  { key: 'wait', title: 'lease wait p50', unit: ' ms' },
  { key: 'sessions', title: 'sessions', unit: '' },
];
const series = {};
let windowMin = 5, last;
$('charts').innerHTML = CHARTS.map((c) => '<div class="chart" id="tile-' + c.key + '">' + esc(c.title) + ' <span class="value nodata" id="value-' + c.key + '">–</span><svg id="chart-' + c.key + '" data-points="0" role="img" aria-label="' + esc(c.title) + '"></svg><span class="tip" hidden></span></div>').join('');
for (const c of CHARTS) series[c.key] = [];
function addPoint(key, t, v) {
  const s = series[key];
  if (v === null || v === undefined || !isFinite(v)) return;
  if (s.length && s[s.length - 1].t >= t) return;
  s.push({ t, v });
  while (s.length && s[0].t < t - 3600000) s.shift();
}
function niceMax(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v))), m = v / p;
  return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}
function draw(c) {
  const svg = $('chart-' + c.key), W = Math.max(200, svg.clientWidth || 360), H = 130, L = 44, B = 18, T = 6, R = 6;
  const now = Date.now(), from = now - windowMin * 60000;
  const pts = series[c.key].filter((p) => p.t >= from);
  svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
  svg.dataset.points = String(pts.length);
  if (pts.length < 2) { svg.innerHTML = '<text x="' + W / 2 + '" y="' + H / 2 + '" text-anchor="middle">waiting for data…</text>'; return; }
  const max = c.max || niceMax(Math.max(...pts.map((p) => p.v)));
  const x = (t) => L + ((t - from) / (now - from)) * (W - L - R), y = (v) => H - B - (v / max) * (H - B - T);
  let out = '';
  for (const f of [0, 0.5, 1]) out += '<line class="' + (f ? 'grid' : 'axis') + '" x1="' + L + '" x2="' + (W - R) + '" y1="' + y(max * f) + '" y2="' + y(max * f) + '"/><text x="' + (L - 4) + '" y="' + (y(max * f) + 4) + '" text-anchor="end">' + esc(fmt(max * f) + c.unit) + '</text>';
  out += '<line class="axis" x1="' + L + '" x2="' + L + '" y1="' + T + '" y2="' + (H - B) + '"/>';
  for (const f of [0, 0.5, 1]) out += '<text x="' + (L + f * (W - L - R)) + '" y="' + (H - 4) + '" text-anchor="' + (f === 0 ? 'start' : f === 1 ? 'end' : 'middle') + '">' + (f === 1 ? 'now' : '−' + fmt(windowMin * (1 - f)) + ' min') + '</text>';
  out += '<polyline class="line" points="' + pts.map((p) => x(p.t).toFixed(1) + ',' + y(Math.min(max, p.v)).toFixed(1)).join(' ') + '"/>';
  svg.innerHTML = out;
  svg.chart = { pts, x, y, c, H, B, T };
}
function hover(e) {
  const svg = e.currentTarget, tip = svg.nextElementSibling, ch = svg.chart;
  svg.querySelector('.cursor') && svg.querySelector('.cursor').remove();
  if (!ch || e.type === 'mouseleave') { tip.hidden = true; return; }
  const box = svg.getBoundingClientRect(), vb = svg.viewBox.baseVal, px = ((e.clientX - box.left) / box.width) * vb.width;
  let best = ch.pts[0];
  for (const p of ch.pts) if (Math.abs(ch.x(p.t) - px) < Math.abs(ch.x(best.t) - px)) best = p;
  svg.insertAdjacentHTML('beforeend', '<line class="cursor" x1="' + ch.x(best.t) + '" x2="' + ch.x(best.t) + '" y1="' + ch.T + '" y2="' + (ch.H - ch.B) + '"/>');
  tip.hidden = false;
  tip.textContent = new Date(best.t).toLocaleTimeString() + ' · ' + fmt(best.v) + ch.c.unit;
  tip.style.left = Math.min(box.width - tip.offsetWidth, Math.max(0, e.clientX - box.left + 8)) + 'px'; tip.style.top = '1.4rem';
}
for (const c of CHARTS) { $('chart-' + c.key).addEventListener('mousemove', hover); $('chart-' + c.key).addEventListener('mouseleave', hover); }
function drawAll() { for (const c of CHARTS) draw(c); }
$('window').addEventListener('click', (e) => {
  const b = e.target.closest('button[data-minutes]');
  if (!b) return;
  windowMin = Number(b.dataset.minutes);
  for (const o of $('window').querySelectorAll('button')) o.classList.toggle('on', o === b);
  drawAll();
});
starters.push(async () => {
  try {
    const ts = await api('GET', '/api/timeseries'), dt = ts.intervalMs / 1000;
    for (const s of ts.samples.slice(1)) {
      if (s.httpRequests !== undefined) addPoint('http', s.t, s.httpRequests / dt);
      addPoint('messages', s.t, s.requests / dt); addPoint('commits', s.t, s.commits / dt);
      if (s.cacheHits + s.cacheMisses > 0) addPoint('hits', s.t, (100 * s.cacheHits) / (s.cacheHits + s.cacheMisses));
      addPoint('sessions', s.t, s.sessions);
    }
    drawAll();
  } catch { /* the live points still come */ }
});
/** Per app server: its reported counters, by name. */
function clientFigures(c) {
  const st = c.stats || {}, cache = st.cache, counters = st.counters;
  return { http: counters ? counters.opens : null, hits: cache ? cache.hits : null, misses: cache ? cache.misses : null, requests: c.requests };
}
// Clients report their own counters every couple of seconds, so a one-second difference
// reads 0, then twice the rate: each figure's rate is taken between two reports, and a
// figure that has not moved for QUIET_MS is idle.
// A tracker not used in a whole round of the overview's listeners (its app server or
// balancer node no longer listed) is dropped at the start of the next.
const QUIET_MS = 5000, trackers = new Map(), touched = new Set();
function rateOf(key, value, now) {
  touched.add(key);
  if (value === null || value === undefined) return null;
  const st = trackers.get(key);
  if (!st || value < st.v) { trackers.set(key, { v: value, at: now, rate: null }); return null; }
  if (value !== st.v) { st.rate = (value - st.v) / ((now - st.at) / 1000); st.v = value; st.at = now; }
  else if (now - st.at > QUIET_MS) st.rate = 0;
  return st.rate;
}
/** Per app server: HTTP requests/s, tier messages/s, near-cache hits and misses/s (null until known). */
function clientRates(o) {
  const rates = new Map();
  for (const c of o.clients) {
    const f = clientFigures(c);
    rates.set(c.name, { http: rateOf(c.name + ' http', f.http, o.at), messages: rateOf(c.name + ' messages', f.requests, o.at), hits: rateOf(c.name + ' hits', f.hits, o.at), misses: rateOf(c.name + ' misses', f.misses, o.at) });
  }
  return rates;
}
/** The sum of a rate over the app servers that have it, or null when none has. */
function total(rates, key) {
  let sum = 0, known = false;
  for (const r of rates.values()) if (r[key] !== null) { sum += r[key]; known = true; }
  return known ? sum : null;
}
function cacheTotal(o) {
  let hits = 0, misses = 0, any = false;
  for (const c of o.clients) { const f = clientFigures(c); if (f.hits !== null) { hits += f.hits; misses += f.misses; any = true; } }
  return any && hits + misses > 0 ? (100 * hits) / (hits + misses) : null;
}
onOverview((o) => {
  for (const key of trackers.keys()) if (!touched.has(key)) trackers.delete(key);
  touched.clear();
  const t = o.at;
  o.rates = clientRates(o);
  const http = total(o.rates, 'http'), messages = total(o.rates, 'messages'), hits = total(o.rates, 'hits'), misses = total(o.rates, 'misses');
  addPoint('http', t, http); addPoint('messages', t, messages);
  // One of the two may not have moved since the page opened (all hits): its rate is not known yet, but it is none.
  if ((hits !== null || misses !== null) && (hits || 0) + (misses || 0) > 0) addPoint('hits', t, (100 * (hits || 0)) / ((hits || 0) + (misses || 0)));
  setFigure('value-http', fmt(http)); setFigure('value-messages', fmt(messages));
  if (last) {
    const dt = (t - last.at) / 1000, commits = Math.max(0, o.counters.commits - last.counters.commits) / dt;
    addPoint('commits', t, commits);
    setFigure('value-commits', fmt(commits));
    setFigure('rate-recalls', fmt(Math.max(0, (o.counters.leaseRecalls || 0) - (last.counters.leaseRecalls || 0)) / dt));
  }
  // A median of no lease waits is no figure: the chart has a gap and the tile says so.
  const waited = o.recent.leaseWaits !== 0;
  if (waited) addPoint('wait', t, o.recent.leaseWaitMsP50);
  addPoint('sessions', t, o.sessions.count);
  const hit = cacheTotal(o);
  setFigure('value-hits', hit === null ? '–' : fmt(hit, 1) + '%');
  setFigure('value-wait', waited ? fmt(o.recent.leaseWaitMsP50) + ' ms' : '–'); $('value-wait').title = waited ? '' : 'no lease acquired in the last 5 s'; setFigure('value-sessions', fmt(o.sessions.count));
  setFigure('lease-waiters', fmt(o.leases.waiting)); setFigure('leases', fmt(o.leases.held));
  last = o;
  drawAll();
});
`;
