/**
 * Fills a kiln server with sessions through a client of its own, for the stall run (in
 * its process, and in a worker process it kills). No test helper here: a worker imports it.
 */
import { connect } from '../src/engines/kiln/kiln-engine.js';
import { encodeAttribute } from '../src/session/codec.js';
import { generateSessionId } from '../src/session/id.js';

/**
 * Creates `count` sessions through a client of its own, 256 at a time; with holdLeases,
 * that client keeps every lease (as an app server that served them all would). Returns
 * the client's close.
 */
export async function fill(server: { url: string; token: string }, count: number, o: { idleTimeoutMs: number; principal?: string; holdLeases: boolean }): Promise<() => Promise<void>> {
  const engine = connect(server.url, { token: server.token, name: 'stall-fill', operationTimeoutMs: 60_000 });
  await engine.connect();
  const set = [['cart', encodeAttribute('cart', [{ sku: 'teapot', qty: 1 }])] as [string, Uint8Array]];
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < count) {
      const i = next++;
      const id = generateSessionId();
      const grant = await engine.acquire(id);
      await engine.commit({ sessionId: id, token: grant.token, commitId: `fill-${i}`, baseVersion: 0, lastAccessedAt: Date.now(), set, del: [], idleTimeoutMs: o.idleTimeoutMs, absoluteExpiresAt: 0, principal: o.principal, release: !o.holdLeases });
    }
  };
  await Promise.all(Array.from({ length: 256 }, lane));
  return () => engine.close();
}
