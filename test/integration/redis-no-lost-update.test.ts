import { startCluster, startSentinel, startStandalone } from '../helpers/redis.js';
import { noLostUpdate } from './no-lost-update-suite.js';

/**
 * The core no-lost-update test on each Redis topology (commits wait for a replica where
 * there is one). Standalone runs it in full (600,000 increments, about two minutes);
 * Sentinel and Cluster run the same test with 50 increments per session per process
 * (150,000 increments each) to keep the whole suite well inside CI's time.
 */
noLostUpdate('redis standalone', async () => {
  const redis = await startStandalone();
  return { connect: { url: redis.url }, stop: () => redis.stop() };
});

noLostUpdate('redis sentinel, replicas: 1', async () => {
  const redis = await startSentinel();
  return { connect: { url: redis.url, redis: { replicas: 1 } }, stop: () => redis.stop() };
}, { manySessionIncrements: 50 });

noLostUpdate('redis cluster, replicas: 1', async () => {
  const redis = await startCluster();
  return { connect: { url: redis.url, redis: { replicas: 1 } }, stop: () => redis.stop() };
}, { manySessionIncrements: 50 });
