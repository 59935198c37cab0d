import { connect } from '../../src/engines/kiln/kiln-engine.js';
import { startKilnServer } from '../helpers/processes.js';
import { CONFORMANCE_SETTINGS, engineConformance } from './engine-suite.js';

engineConformance({
  name: 'kiln server',
  async start() {
    const s = CONFORMANCE_SETTINGS;
    const server = await startKilnServer({
      args: [
        '--recall-timeout-ms', String(s.recallTimeoutMs),
        '--touch-grace-ms', String(s.touchGraceMs),
        '--expiry-sweep-ms', String(s.expirySweepMs),
        '--max-attribute-bytes', String(s.limits.maxAttributeBytes),
        '--max-session-bytes', String(s.limits.maxSessionBytes),
        '--max-attributes', String(s.limits.maxAttributes),
      ],
    });
    return {
      engine: async () => {
        const engine = connect(server.url, { token: server.token });
        await engine.connect();
        return engine;
      },
      stop: () => server.kill(),
    };
  },
});
