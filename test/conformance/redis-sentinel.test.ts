import { startSentinel } from '../helpers/redis.js';
import { engineConformance } from './engine-suite.js';
import { redisHarness } from './redis-harness.js';

engineConformance(redisHarness('redis sentinel (replicas: 1)', () => startSentinel(), { replicas: 1 }));
