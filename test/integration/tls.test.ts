import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { createSessionClient } from '../../src/client/session-client.js';
import { connect } from '../../src/engines/kiln/kiln-engine.js';
import { isKilnError } from '../../src/errors/index.js';
import { removeDir, selfSignedCertificate, startKilnServer, tempDir } from '../helpers/processes.js';

describe('kiln server over TLS', () => {
  it('serves kilns:// clients that trust its certificate and refuses those that do not', async () => {
    const dir = tempDir();
    const { cert, key } = selfSignedCertificate(dir);
    const server = await startKilnServer({ args: ['--tls-cert', cert, '--tls-key', key] });
    try {
      assert.match(server.output(), /, tls/);
      const kiln = createSessionClient({ engine: connect(`kilns://127.0.0.1:${server.port}`, { token: server.token, tls: { ca: readFileSync(cert, 'utf8') } }) });
      const id = await kiln.withSession(null, (s) => {
        s.set('secret', 'over tls');
        return s.id;
      });
      assert.equal(await kiln.withSession(id, (s) => s.get('secret')), 'over tls');
      await kiln.close();
      const untrusting = connect(`kilns://127.0.0.1:${server.port}`, { token: server.token, connectTimeoutMs: 1000, reconnect: () => false });
      await assert.rejects(untrusting.connect(), (err) => isKilnError(err));
      await untrusting.close();
    } finally {
      await server.kill();
      removeDir(dir);
    }
  });
});
