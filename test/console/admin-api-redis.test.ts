import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import parsePrometheus from 'parse-prometheus-text-format';
import { connectRedis } from '../../src/engines/redis/redis-engine.js';
import { addHistograms } from '../../src/util/latency.js';
import { removeDir, startKilnCommand, startWorker, tempDir, waitFor, type KilnCommandProcess, type WorkerProcess } from '../helpers/processes.js';
import { redisCli, startCluster, startSentinel, startStandalone, type RedisDeployment } from '../helpers/redis.js';
import { ADMIN_TOKEN, adminApiSuite, READ_TOKEN, type ConsoleTarget } from './admin-api-suite.js';

/** Redis has no server of ours: `kiln console --engine …` serves the same API from Redis and the clients' reports. */
async function startConsole(url: string): Promise<{ adminUrl: string; process: KilnCommandProcess; stop(): Promise<void> }> {
  const dir = tempDir();
  writeFileSync(join(dir, 'admin.token'), ADMIN_TOKEN);
  writeFileSync(join(dir, 'read.token'), READ_TOKEN);
  const console = await startKilnCommand(['console', '--engine', url, '--port', '0', '--token-file', join(dir, 'admin.token'), '--read-token-file', join(dir, 'read.token')], {}, /kiln admin on (http:\/\/\S+?) /, 'kiln console', 15_000);
  return {
    adminUrl: console.match[1]!,
    process: console,
    async stop() {
      await console.kill();
      removeDir(dir);
    },
  };
}

function redisConsole(name: string, role: string, deploy: () => Promise<RedisDeployment>, replicas = 0): ConsoleTarget {
  return {
    name,
    role,
    async start() {
      const redis = await deploy();
      const url = replicas > 0 ? `${redis.url}${redis.url.includes('?') ? '&' : '?'}replicas=${replicas}` : redis.url;
      const console = await startConsole(url);
      return {
        adminUrl: console.adminUrl,
        adminToken: ADMIN_TOKEN,
        engine: (clientName) => connectRedis(url, { name: clientName }),
        async stop() {
          await console.stop();
          await redis.stop();
        },
      };
    },
  };
}

adminApiSuite(redisConsole('kiln console on Redis standalone', 'redis-standalone', () => startStandalone()));
adminApiSuite(redisConsole('kiln console on Redis Sentinel (replicas: 1)', 'redis-sentinel', () => startSentinel(), 1));
adminApiSuite(redisConsole('kiln console on Redis Cluster (replicas: 1)', 'redis-cluster', () => startCluster(), 1));

describe('kiln console on Redis: app servers come and go', () => {
  let redis: Awaited<ReturnType<typeof startStandalone>>;
  let console: Awaited<ReturnType<typeof startConsole>>;
  let worker: WorkerProcess;
  type Overview = { clients: { name: string; pid: number; requests: number }[]; connections: number };
  const overview = async (): Promise<Overview> => {
    const res = await fetch(`${console.adminUrl}/api/overview`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    assert.equal(res.status, 200);
    return (await res.json()) as Overview;
  };
  const requestsTotal = async (): Promise<number> => {
    const text = await (await fetch(`${console.adminUrl}/metrics`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).text();
    const families = parsePrometheus(text) as { name: string; metrics: { value?: string }[] }[];
    return Number(families.find((f) => f.name === 'kiln_requests_total')?.metrics[0]?.value);
  };

  before(async () => {
    redis = await startStandalone();
    console = await startConsole(redis.url);
    worker = await startWorker();
    await worker.call({ op: 'connect', url: redis.url });
    await worker.call({ op: 'create', count: 3 });
  });
  after(async () => {
    await worker.kill();
    await console.stop();
    await redis.stop();
  });

  it('lists an app server process from its reports, with its pid', async () => {
    const listed = await waitFor(async () => (await overview()).clients.find((c) => c.pid === worker.pid), 6000, 'the worker listed');
    assert.match(listed.name, new RegExp(`^worker-${worker.pid}-`));
    assert.ok(listed.requests > 0);
  });

  it('skips reports it cannot read (written by anyone with access to Redis) and prunes them', async () => {
    await redisCli(redis.node.port, 'ZADD', 'kiln:{idx}:owners', String(Date.now()), 'bogus-a');
    await redisCli(redis.node.port, 'HSET', 'kiln:{idx}:clients', 'bogus-a', 'not json', 'bogus-b', JSON.stringify({ name: 42, requests: -1 }));
    const o = await overview();
    assert.deepEqual(o.clients.map((c) => c.pid), [worker.pid]);
    await waitFor(async () => (await redisCli(redis.node.port, 'HLEN', 'kiln:{idx}:clients')).trim() === '1', 3000, 'junk reports pruned');
  });

  it('drops a SIGKILLed app server once its heartbeat stops, and keeps its totals', async () => {
    const before = await requestsTotal();
    assert.ok(before > 0);
    await worker.kill();
    await waitFor(async () => (await overview()).clients.length === 0, 10_000, 'the killed worker dropped');
    assert.equal((await overview()).connections, 0);
    assert.ok((await requestsTotal()) >= before, 'totals do not go back when a client leaves');
  });
});

describe('kiln console on Redis: a scrape while Redis is down', () => {
  it('answers 503 with the KILN_ERR code, not 200 with an empty body, and 200 again once Redis is back', async () => {
    const redis = await startStandalone();
    const console = await startConsole(redis.url);
    try {
      const scrape = async (): Promise<{ status: number; text: string; type: string | null }> => {
        const res = await fetch(`${console.adminUrl}/metrics`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
        return { status: res.status, text: await res.text(), type: res.headers.get('content-type') };
      };
      assert.equal((await scrape()).status, 200);
      await redis.node.kill();
      const down = await scrape();
      assert.equal(down.status, 503, `a failed scrape must fail (got ${down.status}, ${down.text.length} bytes)`);
      assert.match(down.type ?? '', /application\/json/);
      const body = JSON.parse(down.text) as { code: string; message: string };
      // Which depends on when the scrape meets the closed connection: a timeout, a lost connection, …
      assert.match(body.code, /^KILN_ERR_[A-Z_]+$/);
      assert.notEqual(body.code, 'KILN_ERR_INTERNAL');
      assert.match(body.message, /^cannot collect the metrics: /);
      await redis.node.restart();
      const back = await waitFor(async () => {
        const s = await scrape();
        return s.status === 200 ? s : undefined;
      }, 20_000, 'metrics again');
      assert.match(back.text, /^kiln_sessions /m);
    } finally {
      await console.stop();
      await redis.stop();
    }
  });
});

describe('kiln console on Redis: reports whose figures and codes are made up', () => {
  it('/metrics still answers 200; stats that are not figures read 0, codes not of the KILN_ERR_ form count as other', async () => {
    const redis = await startStandalone();
    const console = await startConsole(redis.url);
    try {
      const empty = addHistograms([]);
      // A report any process with access to Redis could write: well-formed where the console checked, hostile where it did not.
      const report = {
        ownerId: 'forged-1', name: 'forged', host: 'h', app: 'a', pid: 1, connectedAt: Date.now(), reportedAt: Date.now(), heartbeatMs: 1000,
        requests: 1, leases: 0, leaseWaiters: 0,
        errors: { KILN_ERR_TIMEOUT: 1, '<script>alert(1)</script>': 2, 'kiln_errors_total{code="x"} 1e9': 3 },
        latency: { commit: empty, acquire: empty }, recent: { commit: { count: 0, p50Ms: 0 }, acquire: { count: 0, p50Ms: 0 } },
        stats: { cache: { hits: 'lots', misses: { deep: [1] }, evictions: [1] }, counters: { opens: 'x' } },
      };
      await redisCli(redis.node.port, 'ZADD', 'kiln:{idx}:owners', String(Date.now() + 60_000), 'forged-1');
      await redisCli(redis.node.port, 'HSET', 'kiln:{idx}:clients', 'forged-1', JSON.stringify(report));
      const get = (path: string) => fetch(`${console.adminUrl}${path}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
      await waitFor(async () => ((await (await get('/api/overview')).json()) as { clients: { name: string }[] }).clients.some((c) => c.name === 'forged'), 5000, 'the forged report listed');
      const res = await get('/metrics');
      const text = await res.text();
      assert.equal(res.status, 200, text.slice(0, 300));
      assert.match(text, /^kiln_sessions 0$/m);
      assert.match(text, /^kiln_client_cache_hits\{client="forged"\} 0$/m);
      assert.match(text, /^kiln_errors_total\{code="KILN_ERR_TIMEOUT"\} 1$/m);
      assert.match(text, /^kiln_errors_total\{code="other"\} 5$/m);
      assert.doesNotMatch(text, /<script>|1e9/);
    } finally {
      await console.stop();
      await redis.stop();
    }
  });
});
