/**
 * Finding one session (by principal or id prefix), its attributes with sizes, invalidation
 * (admin role), and the largest-sessions view: a size histogram, the top sessions with
 * their biggest attributes, and the attributes that weigh most among them.
 */
export const SCRIPT_SESSIONS = String.raw`
async function search(e) {
  e && e.preventDefault();
  const q = $('search').value.trim();
  // A principal first; failing that, an id prefix.
  const principalPage = (after) => api('GET', '/api/sessions?limit=50&principal=' + encodeURIComponent(q) + (after ? '&after=' + encodeURIComponent(after) : ''));
  let page = await principalPage();
  // A page may come back empty with a next (on Redis, slices of entries left behind): a few more.
  for (let i = 0; !page.sessions.length && page.next && i < 4; i++) page = await principalPage(page.next);
  // A principal's total is its sessions; a listing's is every session, so it is not shown.
  const more = page.sessions.length && page.total > page.sessions.length ? '<li class="muted" id="principal-more">' + page.sessions.length + ' of ' + fmt(page.total) + ' sessions of this principal (kiln sessions ls --principal pages through them)</li>' : '';
  if (!page.sessions.length) {
    const prefixPage = (after) => api('GET', '/api/sessions?limit=50' + (q ? '&prefix=' + encodeURIComponent(q) : '') + (after ? '&after=' + encodeURIComponent(after) : ''));
    page = await prefixPage();
    // The same for an id prefix: on Redis a page of a listing may be empty, with a next.
    for (let i = 0; !page.sessions.length && page.next && i < 4; i++) page = await prefixPage(page.next);
  }
  // A new search (the form, not the refresh after an invalidation) clears the last one's
  // session detail or "invalidated".
  if (e) $('detail').innerHTML = '';
  $('results').innerHTML = (page.sessions.map((s) => '<li data-id="' + esc(s.ref) + '"' + nsAttr(s) + '>' + esc(s.id.slice(0, 8)) + '… · ' + (otherNs(s) ? esc(s.namespace) + ' · ' : '') + esc(s.principal || '–') + ' · v' + s.version + '</li>').join('') + more) || '<li class="muted">no session</li>';
}
// A kiln server with token namespaces may hold one id in several: a session is opened by its ref and its namespace.
const otherNs = (s) => typeof s.namespace === 'string' && s.namespace !== 'default';
const nsAttr = (s) => typeof s.namespace === 'string' ? ' data-ns="' + esc(s.namespace) + '"' : '';
const sessionPath = (ref, ns) => '/api/sessions/' + encodeURIComponent(ref) + (ns ? '?namespace=' + encodeURIComponent(ns) : '');
async function show(id, ns) {
  const s = await api('GET', sessionPath(id, ns));
  $('detail').innerHTML = '<p><b>' + esc(s.meta.id) + '</b><br>' + (otherNs(s.meta) ? 'namespace ' + esc(s.meta.namespace) + ' · ' : '') + 'principal ' + esc(s.meta.principal || '–') + ' · version ' + s.meta.version + ' · ' + bytes(s.bytes) + '</p><pre>' + s.attributes.map((a) => esc(a.name) + ' (' + a.type + ', ' + bytes(a.bytes) + ')' + (a.preview === undefined ? '' : ': ' + esc(a.preview))).join('\n') + '</pre>' + (s.meta.ref === s.meta.id ? '<button id="invalidate" data-id="' + esc(id) + '"' + nsAttr(s.meta) + '>Invalidate</button>' : '<p class="muted">read-only token: values and full ids are hidden</p>');
}
$('search-form').addEventListener('submit', search);
$('results').addEventListener('click', (e) => { const li = e.target.closest('li[data-id]'); if (li) show(li.dataset.id, li.dataset.ns); });
$('detail').addEventListener('click', async (e) => {
  if (e.target.id !== 'invalidate') return;
  const r = await api('DELETE', sessionPath(e.target.dataset.id, e.target.dataset.ns));
  $('detail').innerHTML = '<p id="invalidated">' + (r.destroyed ? 'invalidated' : 'already gone') + '</p>';
  search();
});
const compact = (n) => n < 1024 ? String(n) : n < 1048576 ? n / 1024 + 'K' : n / 1048576 + 'M';
function histogram(h) {
  const W = 420, H = 150, B = 34, T = 14, max = Math.max(1, ...h.map((b) => b.count)), bw = (W - 10) / h.length;
  let out = '';
  h.forEach((b, i) => {
    const hh = (b.count / max) * (H - B - T), x = 5 + i * bw;
    const name = b.le === null ? '> ' + bytes(h[i - 1].le) : '≤ ' + bytes(b.le), short = b.le === null ? '> ' + compact(h[i - 1].le) : compact(b.le);
    out += '<rect x="' + (x + 2) + '" y="' + (H - B - hh) + '" width="' + (bw - 4) + '" height="' + hh + '"><title>' + esc(name + ': ' + b.count + ' sessions') + '</title></rect>';
    out += '<text x="' + (x + bw / 2) + '" y="' + (H - B - hh - 3) + '" text-anchor="middle">' + (b.count ? fmt(b.count) : '') + '</text>';
    out += '<text x="' + (x + bw / 2) + '" y="' + (H - B + 14) + '" text-anchor="middle">' + esc(short) + '</text>';
  });
  out += '<text x="' + W / 2 + '" y="' + (H - 4) + '" text-anchor="middle">sessions by size, up to (bytes of attribute names and values)</text>';
  return '<div class="bars"><svg viewBox="0 0 ' + W + ' ' + H + '" id="size-histogram" role="img" aria-label="session size histogram">' + out + '</svg></div>';
}
async function largest() {
  $('largest-scan').disabled = true;
  $('largest-note').textContent = 'scanning…';
  try {
    const r = await api('GET', '/api/sessions/largest');
    $('largest-note').textContent = fmt(r.scanned) + ' sessions, ' + bytes(r.totalBytes) + ' · scanned ' + ago(Date.now() - r.computedAt) + ' ago in ' + fmt(r.scanMs) + ' ms';
    $('largest').innerHTML = histogram(r.histogram) +
      '<table id="largest-sessions"><thead><tr><th>session</th><th>principal</th><th class="num">size</th><th>largest attributes</th></tr></thead><tbody>' +
      (r.sessions.map((s) => '<tr data-id="' + esc(s.meta.ref) + '"' + nsAttr(s.meta) + '><td>' + esc(s.meta.id.slice(0, 8)) + '…' + (otherNs(s.meta) ? ' · ' + esc(s.meta.namespace) : '') + '</td><td>' + esc(s.meta.principal || '–') + '</td><td class="num">' + bytes(s.bytes) + '</td><td>' + s.attributes.map((a) => esc(a.name) + ' ' + bytes(a.bytes)).join(', ') + '</td></tr>').join('') || '<tr><td colspan="4" class="muted">no session</td></tr>') +
      '</tbody></table><h2>Attributes in the largest sessions</h2><table id="largest-attributes"><thead><tr><th>attribute</th><th class="num">sessions</th><th class="num">bytes</th></tr></thead><tbody>' +
      r.attributes.map((a) => '<tr><td>' + esc(a.name) + '</td><td class="num">' + fmt(a.sessions) + '</td><td class="num">' + bytes(a.bytes) + '</td></tr>').join('') + '</tbody></table>';
  } catch (err) {
    $('largest-note').textContent = String(err.message || err);
  } finally {
    $('largest-scan').disabled = false;
  }
}
$('largest-scan').addEventListener('click', largest);
$('largest').addEventListener('click', (e) => { const tr = e.target.closest('tr[data-id]'); if (tr) show(tr.dataset.id, tr.dataset.ns); });
`;
