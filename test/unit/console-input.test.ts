import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import parsePrometheus from 'parse-prometheus-text-format';
import type { RedisEngine, ReportedClient } from '../../src/engines/redis/redis-engine.js';
import { clientStatsFrom } from '../../src/protocol/client-stats.js';
import { ErrorCodes, MAX_ERROR_CODES, OTHER_CODE } from '../../src/console/error-codes.js';
import { ServerMetrics } from '../../src/console/metrics.js';
import { RedisSource } from '../../src/console/redis-source.js';
import type { ConsoleClient, ConsoleEvent, ConsoleFigures, ConsoleSource } from '../../src/console/source.js';
import { addHistograms } from '../../src/util/latency.js';

/** What the console reads from other processes (app servers' reports, a balancer's status), checked before it is counted or shown. */

const empty = addHistograms([]);

function figures(over: Partial<ConsoleFigures> = {}): ConsoleFigures {
  return { sessions: 0, sessionBytes: 0, tombstones: 0, leases: 0, leaseWaiters: 0, connections: 0, counters: {}, requests: 0, errors: {}, commitLatency: empty, leaseWait: empty, recent: { commitMsP50: 0, leaseWaitMsP50: 0 }, clients: [], storageBytes: 0, ...over };
}

/** A source whose figures the test sets; only what ServerMetrics reads. */
function fakeSource(current: () => ConsoleFigures): ConsoleSource {
  return { kind: 'fake', epoch: 'e', figures: async () => current() } as unknown as ConsoleSource;
}

function errorSeries(text: string): Map<string, number> {
  const families = parsePrometheus(text) as { name: string; metrics: { labels: { code: string }; value: string }[] }[];
  const family = families.find((m) => m.name === 'kiln_errors_total');
  return new Map((family?.metrics ?? []).map((m) => [m.labels.code, Number(m.value)]));
}

function report(ownerId: string, errors: Record<string, number>, reportedAt = Date.now()): ReportedClient {
  return { ownerId, name: `app-${ownerId}`, host: 'h', pid: 1, app: 'a', connectedAt: 0, reportedAt, heartbeatMs: 1000, requests: 0, leases: 0, leaseWaiters: 0, errors, latency: { commit: empty, acquire: empty }, recent: { commit: { count: 0, p50Ms: 0 }, acquire: { count: 0, p50Ms: 0 } }, stats: {} };
}

/** A Redis engine as RedisSource sees it: the reports the test sets, nothing else. */
function fakeRedis(reports: () => ReportedClient[]): RedisEngine {
  return {
    epoch: 'e',
    topology: { kind: 'standalone' },
    address: 'redis://x',
    replicasRequired: 0,
    onEvent: () => () => undefined,
    watchLeases: () => new Promise<void>(() => undefined),
    reportedClients: async () => reports(),
    stats: async () => ({ sessions: 0, sessionBytes: 0, counters: {} }),
  } as unknown as RedisEngine;
}

describe('error codes the console counts', () => {
  it('keeps well-formed codes, the first MAX_ERROR_CODES of them, and counts the rest as other', () => {
    const codes = new ErrorCodes();
    assert.equal(codes.label('KILN_ERR_TIMEOUT'), 'KILN_ERR_TIMEOUT');
    for (const bad of ['kiln_err_timeout', 'KILN_ERR_', 'KILN_ERR_X'.padEnd(60, 'X'), 'EVIL', '', 'KILN_ERR_A\n', '__proto__', 'KILN_ERR_a', 7, null]) assert.equal(codes.label(bad), OTHER_CODE, String(bad));
    for (let i = 0; i < 2 * MAX_ERROR_CODES; i++) codes.label(`KILN_ERR_MADE_UP_${i}`);
    assert.equal(codes.label('KILN_ERR_TIMEOUT'), 'KILN_ERR_TIMEOUT', 'a code seen before stays');
    assert.equal(codes.label('KILN_ERR_MADE_UP_0'), 'KILN_ERR_MADE_UP_0');
    assert.equal(codes.label(`KILN_ERR_MADE_UP_${MAX_ERROR_CODES}`), OTHER_CODE, 'past the cap');
    assert.deepEqual(new ErrorCodes().fold({ KILN_ERR_TIMEOUT: 2, evil: 3, 'also evil': 4, KILN_ERR_AUTH: -1, KILN_ERR_X: Number.NaN }), { KILN_ERR_TIMEOUT: 2, other: 7 });
  });

  it('/metrics: app servers naming thousands of codes make at most MAX_ERROR_CODES + 1 series', async () => {
    const errors: Record<string, number> = { KILN_ERR_TIMEOUT: 1 };
    for (let i = 0; i < 1000; i++) errors[`KILN_ERR_CODE_${i}`] = 1;
    for (let i = 0; i < 1000; i++) errors[`not a code ${i}`] = 2;
    const metrics = new ServerMetrics(fakeSource(() => figures({ errors })));
    const series = errorSeries(await metrics.text());
    assert.equal(series.size, MAX_ERROR_CODES + 1);
    assert.equal(series.get('KILN_ERR_TIMEOUT'), 1);
    assert.equal(series.get(OTHER_CODE), 2000 + 1000 - (MAX_ERROR_CODES - 1), 'nothing lost: the rest are counted as other');
    errors['KILN_ERR_CODE_999'] = 5;
    assert.equal(errorSeries(await metrics.text()).get(OTHER_CODE), 2000 + 1000 - (MAX_ERROR_CODES - 1) + 4, 'and keep counting there');
  });

  it('Redis console: reported codes are checked before they become figures and events', async () => {
    const made: Record<string, number> = { KILN_ERR_TIMEOUT: 3, '<script>': 1 };
    for (let i = 0; i < 500; i++) made[`KILN_ERR_NEW_${i}`] = 1;
    let reports = [report('a', made)];
    const source = new RedisSource(fakeRedis(() => reports));
    const events: ConsoleEvent[] = [];
    source.onEvent((e) => events.push(e));
    try {
      const f = await source.figures();
      assert.equal(Object.keys(f.errors).length, MAX_ERROR_CODES + 1);
      assert.equal(f.errors['KILN_ERR_TIMEOUT'], 3);
      assert.equal(f.errors[OTHER_CODE], 1 + 500 - (MAX_ERROR_CODES - 1));
      const codes = new Set(events.filter((e) => e.type === 'error').map((e) => (e.data as { code: string }).code));
      assert.ok(codes.size <= MAX_ERROR_CODES + 1, `${codes.size} codes in events`);
      assert.ok(!codes.has('<script>'));
      // A later report with yet more codes: the same labels, counted on.
      reports = [report('a', { ...made, KILN_ERR_LATER: 2, '<script>': 4 }, Date.now() + 1)];
      const later = await source.figures();
      assert.equal(later.errors['KILN_ERR_LATER'], undefined);
      assert.equal(later.errors[OTHER_CODE], f.errors[OTHER_CODE]! + 2 + 3);
      assert.ok(events.some((e) => e.type === 'error' && (e.data as { code: string; count?: number }).code === OTHER_CODE && (e.data as { count?: number }).count === 5));
      const metrics = new ServerMetrics(source);
      assert.ok(errorSeries(await metrics.text()).size <= MAX_ERROR_CODES + 1);
    } finally {
      await source.close();
    }
  });
});

/** Stats no real client sends: strings, NaN, nesting, arrays, huge and odd keys where figures belong. */
const HOSTILE: Record<string, unknown>[] = [
  { cache: { hits: 'lots', misses: Number.NaN, evictions: { deep: [1, 2] } }, counters: { opens: '7' } },
  { cache: { hits: Number.POSITIVE_INFINITY, misses: [3], evictions: null }, counters: null },
  { cache: { hits: 1e308, misses: -5, evictions: true }, counters: 'none' },
  { cache: 'a string', leases: { nested: { deeper: 1 } } },
  { cache: [1, 2, 3] },
  JSON.parse('{"cache":{"__proto__":{"hits":"x"},"hits":{"valueOf":1}},"__proto__":{"polluted":true}}') as Record<string, unknown>,
];

describe("app servers' own figures as the console keeps them", () => {
  it('keeps figures, short strings and booleans at the top, figures only one level down, nothing deeper', () => {
    const kept = clientStatsFrom({ ownerId: 'o'.repeat(1000), leases: 3, ok: true, cache: { hits: 5, misses: 'x', deep: { a: 1 }, nan: Number.NaN }, list: [1, 2], fn: undefined, counters: { opens: 9 } })!;
    assert.deepEqual(kept, { ownerId: 'o'.repeat(256), leases: 3, ok: true, cache: { hits: 5 }, counters: { opens: 9 } });
    assert.equal(clientStatsFrom('x'), null);
    assert.equal(clientStatsFrom([1]), null);
    assert.equal(clientStatsFrom(null), null);
    const many = Object.fromEntries(Array.from({ length: 1000 }, (_, i) => [`k${i}`, i]));
    assert.equal(Object.keys(clientStatsFrom({ ...many, cache: many })!).length, 64, 'at most 64 keys a level');
    const odd = clientStatsFrom(HOSTILE[5])!;
    assert.equal(Object.getPrototypeOf(odd), Object.prototype, 'a __proto__ key stays a key');
    assert.equal(({} as Record<string, unknown>)['polluted'], undefined);
  });

  it('/metrics: every client gauge is a number, whatever the stats hold', async () => {
    const clients: ConsoleClient[] = HOSTILE.map((stats, i) => ({ name: `app-${i}`, host: 'h', pid: i, app: 'a', address: 'x', connectedAt: 0, ownerId: `o${i}`, leases: 0, requests: 0, stats }));
    const metrics = new ServerMetrics(fakeSource(() => figures({ clients })));
    const text = await metrics.text();
    assert.match(text, /^kiln_sessions 0$/m);
    assert.match(text, /^kiln_client_cache_hits\{client="app-0"\} 0$/m, 'a string reads 0');
    assert.match(text, /^kiln_client_cache_hits\{client="app-2"\} 1e\+308$/m, 'a large figure is a figure');
    for (const line of text.split('\n').filter((l) => l.startsWith('kiln_client_cache_'))) assert.match(line, / -?[\d.e+]+$/, line);
  });
});
