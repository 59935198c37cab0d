/**
 * The page script's base: the token (a form, never prompt()), API calls, formatting,
 * and the one-second overview poll that feeds the diagram, table and charts. Figures
 * show '–' until an answer has them: a zero on this page is always a measured zero.
 */
export const SCRIPT_CORE = String.raw`
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
const fmt = (v, digits) => v === null || v === undefined || !isFinite(v) ? '–' : Number(v).toLocaleString('en-US', { maximumFractionDigits: digits === undefined ? (Math.abs(v) < 10 ? 1 : 0) : digits });
const bytes = (n) => n < 1024 ? n + ' B' : n < 1048576 ? fmt(n / 1024) + ' KiB' : fmt(n / 1048576) + ' MiB';
const ago = (ms) => ms < 60000 ? Math.round(ms / 1000) + ' s' : Math.round(ms / 60000) + ' min';
// Best effort carries on with fewer replicas than asked: say so, it is what an operator must know.
const replicaState = (st) => st.replicasOnline === undefined || st.replicasOnline >= st.replicas ? '' : ' — only ' + st.replicasOnline + ' online: ' + (st.replicaPolicy === 'strict' ? 'writes refused (strict)' : 'writes go on under-replicated (best-effort)');
function setFigure(id, text) { const el = $(id); el.textContent = text; el.classList.toggle('nodata', text === '–'); }

const fragment = new URLSearchParams(location.hash.slice(1));
let token = fragment.get('token') || sessionStorage.getItem('kiln-token') || '';
history.replaceState(null, '', location.pathname);
class AuthError extends Error {}
const api = async (method, path) => {
  const res = await fetch(path, { method, headers: { authorization: 'Bearer ' + token } });
  const body = await res.json();
  if (res.status === 401) throw new AuthError(body.message);
  if (!res.ok) throw new Error(body.code + ': ' + body.message);
  return body;
};
function askToken(message) {
  $('app').hidden = true; $('login').hidden = false;
  $('login-error').textContent = message || '';
  $('server').textContent = 'not connected';
  $('token-input').focus();
}
$('login').addEventListener('submit', async (e) => {
  e.preventDefault();
  token = $('token-input').value.trim();
  if (!token) return;
  try { await api('GET', '/api/overview'); } catch (err) { askToken(err instanceof AuthError ? 'That token is not accepted here.' : String(err.message || err)); return; }
  sessionStorage.setItem('kiln-token', token); $('token-input').value = '';
  start();
});

const listeners = [];
const onOverview = (fn) => listeners.push(fn);
let started = false, timer;
async function tick() {
  try {
    const o = await api('GET', '/api/overview');
    o.at = Date.now();
    $('server').textContent = o.server.address + ' · ' + o.server.role + ' · v' + o.server.version + ' · up ' + ago(o.server.uptimeMs) + ' · ' + (o.storage.kind === 'redis' ? 'sessions in Redis' + (o.storage.replicas ? ', ' + o.storage.replicas + ' replica(s) confirm each commit' + replicaState(o.storage) : '') : o.storage.dataDir || 'memory only');
    const waits = o.leases.waiting, gone = (o.departed || []).length;
    // A disk behind refuses every commit: it outranks what the clients show.
    const refusing = o.storage.backlog && o.storage.backlog.refusing;
    $('health').textContent = refusing ? 'commits refused: ' + refusing : o.clients.length === 0 ? 'no app server connected' : gone > 0 ? gone + ' app server(s) gone in the last minute' : waits > 0 ? waits + ' lease waits' : 'healthy';
    $('health').className = refusing || gone > 0 ? 'dead' : o.clients.length === 0 || waits > 0 ? 'warn' : 'ok';
    for (const fn of listeners) fn(o);
  } catch (err) {
    if (err instanceof AuthError) { stop(); sessionStorage.removeItem('kiln-token'); askToken('The token was refused: enter it again.'); return; }
    $('health').textContent = 'cannot reach the admin API: ' + String(err.message || err); $('health').className = 'dead';
  }
}
// What start() begins (polls, the events stream) and what stop() ends: a refused token
// stops all of it, so logging in again does not leave the old stream and its reconnects behind.
const starters = [], stoppers = [];
function stop() { clearInterval(timer); started = false; for (const fn of stoppers) fn(); }
function start() {
  $('login').hidden = true; $('app').hidden = false;
  if (started) return;
  started = true;
  for (const fn of starters) fn();
  tick(); timer = setInterval(tick, 1000);
}
`;

/** Runs last: opens the console when a token is at hand, else shows the form. */
export const SCRIPT_BOOT = String.raw`
if (token) api('GET', '/api/overview').then(start, (err) => askToken(err instanceof AuthError ? 'The saved token was refused: enter it again.' : String(err.message || err)));
else askToken('');
`;
