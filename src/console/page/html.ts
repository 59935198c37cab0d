/** The console page's markup: nothing here holds data until the script has the token and a first answer. */
export const BODY = `
<header><h1>Kiln console</h1><span id="server">not connected</span><span id="health" class="muted"></span></header>
<form id="login" hidden>
  <label for="token-input">Admin or read-only token</label>
  <p class="muted">The token of this admin port (<code>--admin-token-file</code> or <code>--admin-read-token-file</code>). It stays in this tab only.</p>
  <input id="token-input" name="token" type="password" autocomplete="off" spellcheck="false" required>
  <button id="token-submit" type="submit">Open console</button>
  <p id="login-error" role="alert"></p>
</form>
<main id="app" hidden>
  <section class="wide">
    <h2>Cluster <small id="cluster-note"></small></h2>
    <div id="diagram"><p class="nodata">waiting for the first figures…</p></div>
    <table><thead><tr><th>app server</th><th>host</th><th>pid</th><th class="num">HTTP req/s</th><th class="num">leases</th><th class="num">tier messages (total)</th><th class="num">near-cache hit</th><th>state</th></tr></thead><tbody id="clients"></tbody><tfoot id="clients-total"></tfoot></table>
  </section>
  <section class="wide">
    <h2>Live</h2>
    <div class="toolbar" id="window"><span class="muted">window</span><button type="button" data-minutes="5" class="on">5 min</button><button type="button" data-minutes="15">15 min</button><button type="button" data-minutes="60">60 min</button></div>
    <div class="charts" id="charts"></div>
    <p class="muted">lease recalls/s <b id="rate-recalls" class="nodata">–</b> · lease waiters <b id="lease-waiters" class="nodata">–</b> · leases held <b id="leases" class="nodata">–</b></p>
  </section>
  <section>
    <h2>Sessions</h2>
    <form id="search-form"><input id="search" placeholder="id prefix or principal"> <button id="search-button" type="submit">Find</button></form>
    <ul id="results"></ul>
    <div id="detail"></div>
  </section>
  <section>
    <h2>Largest sessions <small id="largest-note"></small></h2>
    <div class="toolbar"><button type="button" id="largest-scan">Scan sizes</button></div>
    <div id="largest"><p class="muted">Sizes of every session, read in slices; the answer is kept for 15 s (longer when the scan takes long).</p></div>
  </section>
  <section class="wide">
    <h2>Events <small id="events-note"></small></h2>
    <div class="toolbar"><select id="events-type"><option value="">all types</option><option value="session">session</option><option value="lease">lease</option><option value="client">client</option><option value="error">error</option></select><input id="events-filter" placeholder="session id, principal or app server"></div>
    <ul id="events"></ul>
  </section>
</main>
`;
