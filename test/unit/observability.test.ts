import assert from 'node:assert/strict';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { describe, it } from 'node:test';
import parsePrometheus from 'parse-prometheus-text-format';
import { createSessionClient } from '../../src/client/session-client.js';
import { CHANNELS, clientMetrics } from '../../src/console/index.js';
import { createMemoryTier } from '../../src/engines/memory/memory-engine.js';

describe('client observability', () => {
  it('publishes lease, commit and cache events on diagnostics channels', async () => {
    const seen: Record<string, unknown[]> = { lease: [], commit: [], cache: [] };
    const handlers = Object.fromEntries(Object.entries(CHANNELS).map(([k, name]) => [name, (m: unknown) => seen[k]!.push(m)]));
    for (const [name, fn] of Object.entries(handlers)) subscribe(name, fn);
    try {
      const kiln = createSessionClient({ engine: createMemoryTier().engine() });
      const id = await kiln.withSession(null, (s) => {
        s.set('n', 1);
        return s.id;
      });
      await kiln.withSession(id, (s) => s.set('n', 2));
      await kiln.close();
      assert.ok(seen['lease']!.some((m) => (m as { type: string }).type === 'acquired'));
      assert.equal(seen['commit']!.length, 2);
      assert.equal((seen['commit']![1] as { version: number }).version, 2);
      assert.ok(seen['cache']!.some((m) => (m as { type: string }).type === 'hit'));
    } finally {
      for (const [name, fn] of Object.entries(handlers)) unsubscribe(name, fn);
    }
  });

  it('client metrics parse and mirror the client counters', async () => {
    const kiln = createSessionClient({ engine: createMemoryTier().engine() });
    const registry = clientMetrics(kiln);
    const id = await kiln.withSession(null, (s) => {
      s.set('n', 1);
      return s.id;
    });
    for (let i = 0; i < 5; i++) await kiln.withSession(id, (s) => s.get('n'));
    const families = parsePrometheus(await registry.metrics()) as { name: string; type: string; metrics: { value: string }[] }[];
    const v = (name: string) => Number(families.find((f) => f.name === name)?.metrics[0]?.value);
    /** A counter as the registry reports it now (`v` reads the families parsed above). */
    const current = async (name: string) => Number((parsePrometheus(await registry.metrics()) as typeof families).find((f) => f.name === name)?.metrics[0]?.value);
    assert.equal(v('kiln_client_cache_hits_total'), 5);
    assert.equal(v('kiln_client_commits_total'), 1);
    assert.equal(v('kiln_client_empty_commits_total'), 5);
    // The create is not pipelined (a new session is acquired first); later final commits are.
    await kiln.withSession(id, (s) => s.set('n', 2));
    assert.equal(await current('kiln_client_pipelined_commits_total'), 1);
    assert.equal(v('kiln_client_leases'), 1);
    assert.equal(families.find((f) => f.name === 'kiln_client_commits_total')?.type, 'COUNTER');
    // A large list changed twice in one place: the first commit copies what the tier gave, the second overwrites its copy.
    const list = await kiln.withSession(null, (s) => {
      s.set('items', Array.from({ length: 300 }, (_, k) => ({ sku: `SKU-${k}`, qty: 1, note: 'an item' })));
      return s.id;
    });
    for (let i = 0; i < 2; i++) await kiln.withSession(list, (s) => void (s.get<{ qty: number }[]>('items')![9]!.qty += 1));
    assert.equal(await current('kiln_client_overwrites_in_place_total'), 1);
    await kiln.close();
  });
});
