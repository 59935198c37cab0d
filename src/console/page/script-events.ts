/**
 * The events pane: the admin server's recent history on load (/api/events/recent), then
 * the live stream (SSE, opened first; events the history already holds are skipped by
 * their id), filterable by type and by a word in the session id, principal or app server.
 */
export const SCRIPT_EVENTS = String.raw`
const events = [];
let lastSeq = 0;
const label = (name) => String(name).replace(/-[0-9a-f]{6,8}$/, '') || String(name);
// Lease messages name the holder by its owner id: shown by the app server's name. Only
// those the overview lists now (connected, or gone in the last minute) are kept.
const owners = new Map();
onOverview((o) => {
  owners.clear();
  for (const c of o.clients.concat(o.departed || [])) if (c.ownerId) owners.set(c.ownerId, c.label || label(c.name));
});
function describe(e) {
  const d = e.data || {}, parts = [d.type || d.code || ''];
  if (d.sessionId) parts.push(String(d.sessionId).slice(0, 8) + (String(d.sessionId).length > 8 ? '…' : ''));
  if (d.principal) parts.push('principal ' + d.principal);
  if (d.reason) parts.push('(' + d.reason + ')');
  if (d.count > 1) parts.push('×' + d.count);
  const client = typeof d.client === 'string' ? d.client : d.client && d.client.name;
  if (client) parts.push(label(client));
  if (d.owner) parts.push('holder ' + (owners.get(d.owner) || label(d.owner)));
  return parts.filter(Boolean).join(' ');
}
function addEvent(e) {
  if (e.seq && e.seq <= lastSeq) return false;
  if (e.seq) lastSeq = e.seq;
  e.text = describe(e);
  // The filter also matches the whole session id, where the role may see it.
  e.search = (e.text + ' ' + ((e.data && e.data.sessionId) || '')).toLowerCase();
  events.push(e);
  if (events.length > 500) events.shift();
  return true;
}
function renderEvents() {
  const type = $('events-type').value, word = $('events-filter').value.trim().toLowerCase();
  const shown = [];
  for (let i = events.length - 1; i >= 0 && shown.length < 300; i--) {
    const e = events[i];
    if (type && e.type !== type) continue;
    if (word && !e.search.includes(word)) continue;
    shown.push('<li class="' + esc(e.type) + '" data-type="' + esc(e.type) + '"><span class="muted">' + new Date(e.at).toLocaleTimeString() + '</span> <span class="type">' + esc(e.type) + '</span> ' + esc(e.text) + '</li>');
  }
  $('events').innerHTML = shown.join('') || '<li class="muted">' + (events.length ? 'no event matches the filter' : 'no event yet') + '</li>';
  $('events-note').textContent = events.length + ' recent' + (shown.length < events.length ? ', ' + shown.length + ' shown' : '');
}
$('events-type').addEventListener('change', renderEvents);
$('events-filter').addEventListener('input', renderEvents);
// EventSource sends no Authorization header: a single-use ticket opens the stream, and a
// new one reopens it. One stream at a time: each start() is a new generation, and a
// stream or retry of an older one (before a stop()) ends rather than reopens.
let pending = null, stream = null, generation = 0;
async function follow(gen) {
  if (gen !== generation) return;
  let s;
  try {
    const { ticket } = await api('POST', '/api/tickets');
    if (gen !== generation) return;
    s = new EventSource('/api/events?ticket=' + encodeURIComponent(ticket));
  } catch (err) {
    if (gen === generation) setTimeout(() => follow(gen), 5000);
    return;
  }
  stream = s;
  s.onerror = () => { s.close(); if (stream === s) stream = null; if (gen === generation) setTimeout(() => follow(gen), 1000); };
  for (const type of ['session', 'lease', 'client', 'error']) {
    s.addEventListener(type, (m) => {
      const d = JSON.parse(m.data), e = { seq: Number(m.lastEventId) || 0, type, at: d.at || Date.now(), data: d };
      if (pending) { pending.push(e); return; }
      if (addEvent(e)) renderEvents();
    });
  }
}
stoppers.push(() => {
  generation++;
  if (stream) { stream.close(); stream = null; }
});
starters.push(async () => {
  const gen = ++generation;
  pending = [];
  await follow(gen);
  try {
    const { events: recent } = await api('GET', '/api/events/recent?limit=500');
    for (const e of recent) addEvent(e);
  } catch { /* the stream still comes */ }
  const held = pending; pending = null;
  for (const e of held) addEvent(e);
  renderEvents();
});
`;
