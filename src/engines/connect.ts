import { KilnError } from '../errors/index.js';
import { redactCredentials } from '../util/log.js';
import type { Engine } from './engine.js';
import { connect as connectKiln, type KilnEngineOptions } from './kiln/kiln-engine.js';
import { RedisEngine, type RedisEngineOptions } from './redis/redis-engine.js';
import { isRedisUrl } from './redis/topology.js';

/**
 * One engine from a URL, whatever the tier: `kiln://` and `kilns://` reach a kiln
 * server; `redis://`, `rediss://`, `redis+sentinel://` and `redis+cluster://` reach
 * Redis. The common options apply to both; `kiln` and `redis` carry the rest.
 *
 * @example
 * const engine = connectEngine(process.env.KILN_ENGINE ?? 'kiln://127.0.0.1:9510', { name: 'web-1' });
 */
export interface ConnectEngineOptions {
  name?: string;
  connectTimeoutMs?: number;
  operationTimeoutMs?: number;
  acquireTimeoutMs?: number;
  kiln?: Omit<KilnEngineOptions, 'name' | 'connectTimeoutMs' | 'operationTimeoutMs' | 'acquireTimeoutMs'>;
  redis?: Omit<RedisEngineOptions, 'url' | 'name' | 'connectTimeoutMs' | 'operationTimeoutMs' | 'acquireTimeoutMs'>;
}

export function connectEngine(url: string, options: ConnectEngineOptions = {}): Engine {
  const common = {
    ...(options.name !== undefined ? { name: options.name } : {}),
    ...(options.connectTimeoutMs !== undefined ? { connectTimeoutMs: options.connectTimeoutMs } : {}),
    ...(options.operationTimeoutMs !== undefined ? { operationTimeoutMs: options.operationTimeoutMs } : {}),
    ...(options.acquireTimeoutMs !== undefined ? { acquireTimeoutMs: options.acquireTimeoutMs } : {}),
  };
  if (/^kilns?:\/\//i.test(url)) return connectKiln(url, { ...options.kiln, ...common });
  if (isRedisUrl(url)) return new RedisEngine({ ...options.redis, ...common, url });
  throw new KilnError('KILN_ERR_INVALID_OPTION', `engine URL must start with kiln://, kilns://, redis://, rediss://, redis+sentinel:// or redis+cluster:// (got ${JSON.stringify(redactCredentials(url).slice(0, 80))})`, { details: { option: 'engine' } });
}
