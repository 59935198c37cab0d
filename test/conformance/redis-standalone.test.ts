import { startStandalone } from '../helpers/redis.js';
import { engineConformance } from './engine-suite.js';
import { redisHarness } from './redis-harness.js';

engineConformance(redisHarness('redis standalone', () => startStandalone()));
