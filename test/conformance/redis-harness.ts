import { RedisEngine, type RedisEngineOptions } from '../../src/engines/redis/redis-engine.js';
import type { RedisDeployment } from '../helpers/redis.js';
import { CONFORMANCE_SETTINGS, type EngineHarness } from './engine-suite.js';

/** The conformance settings as Redis engine options (every process must agree on them). */
export function conformanceOptions(url: string, extra: Partial<RedisEngineOptions> = {}): RedisEngineOptions {
  const s = CONFORMANCE_SETTINGS;
  return {
    url,
    recallTimeoutMs: s.recallTimeoutMs,
    touchGraceMs: s.touchGraceMs,
    expirySweepMs: s.expirySweepMs,
    limits: { ...s.limits },
    heartbeatMs: 200,
    ...extra,
  };
}

/** A harness over one kind of Redis deployment, started fresh for the suite. */
export function redisHarness(name: string, start: () => Promise<RedisDeployment>, extra: Partial<RedisEngineOptions> = {}): EngineHarness {
  return {
    name,
    async start() {
      const deployment = await start();
      return {
        engine: async () => {
          const engine = new RedisEngine(conformanceOptions(deployment.url, extra));
          await engine.connect();
          return engine;
        },
        stop: () => deployment.stop(),
      };
    },
  };
}
