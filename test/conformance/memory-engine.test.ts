import { createMemoryTier } from '../../src/engines/memory/memory-engine.js';
import { CONFORMANCE_SETTINGS, engineConformance } from './engine-suite.js';

engineConformance({
  name: 'memory',
  async start() {
    const tier = createMemoryTier({ ...CONFORMANCE_SETTINGS });
    return {
      engine: async () => {
        const engine = tier.engine();
        await engine.connect();
        return engine;
      },
      stop: async () => tier.close(),
    };
  },
});
