import { startCluster } from '../helpers/redis.js';
import { engineConformance } from './engine-suite.js';
import { redisHarness } from './redis-harness.js';

engineConformance(redisHarness('redis cluster (replicas: 1)', () => startCluster(), { replicas: 1 }));
