import { startKilnServer } from '../helpers/processes.js';
import { noLostUpdate } from './no-lost-update-suite.js';

noLostUpdate('kiln server', async () => {
  const server = await startKilnServer();
  return { connect: { url: server.url, token: server.token }, stop: () => server.kill() };
});
