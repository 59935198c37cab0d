import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, describe, it } from 'node:test';
import { startApp, type AppProcess } from '../helpers/apps.js';
import { adapterConformance } from './adapter-suite.js';

adapterConformance({ name: 'Hono (node-server)', fixture: 'hono-app', errorStatuses: { tooLarge: 500, unavailable: 500 } });

describe('kiln/hono on @hono/node-server', () => {
  let app: AppProcess | undefined;
  after(async () => app?.kill());

  it("takes TLS from the socket, not from a request target's scheme: an absolute-form https:// target over plain HTTP gets no Secure cookie", async () => {
    app = await startApp('hono-app', { SESSION_SECRETS: 'hono-secret', COOKIE_SECURE: 'auto' });
    const { port } = new URL(app.url);
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = connect({ host: '127.0.0.1', port: Number(port) }, () => {
        socket.write(`POST https://127.0.0.1:${port}/api/incr HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Length: 2\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{}`);
      });
      let text = '';
      socket.on('data', (d: Buffer) => (text += d.toString()));
      socket.on('end', () => resolve(text));
      socket.on('error', reject);
    });
    assert.match(answer, /^HTTP\/1\.1 200/);
    const cookie = /^set-cookie: (.*)$/im.exec(answer)?.[1];
    assert.ok(cookie, answer);
    assert.doesNotMatch(cookie, /Secure/, 'the connection was plain HTTP');
  });
});
