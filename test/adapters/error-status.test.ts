import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, it } from 'node:test';
import { serve } from '@hono/node-server';
import express from 'express';
import Fastify from 'fastify';
import { Hono } from 'hono';
import Koa from 'koa';
import { signValue } from '../../src/adapters/core/cookies.js';
import { session } from '../../src/adapters/express/index.js';
import { kilnSession as fastifySession } from '../../src/adapters/fastify/index.js';
import { kilnSession as honoSession } from '../../src/adapters/hono/index.js';
import { kilnSession as koaSession } from '../../src/adapters/koa/index.js';
import { freePort } from '../helpers/processes.js';

/**
 * With the tier unreachable, each framework's own default error handler (nothing in the
 * app) answers 503 with Retry-After: the KilnError carries status, expose and headers
 * (Hono: getResponse()). Not Express's HTML 500 stack page.
 */
const SECRET = 'error-status-secret-0123456789-abcdefgh';
const TIMEOUT_MS = 1500;
const closers: (() => Promise<void>)[] = [];
after(async () => {
  for (const close of closers) await close().catch(() => undefined);
});

async function deadEngine(): Promise<string> {
  return `kiln://127.0.0.1:${await freePort()}`;
}

function listen(server: Server): Promise<string> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)));
}

// A returning visitor: the cookie names a session, so the request needs the tier.
const signed = signValue('returningVisitor0123456789abcdefghijk', SECRET);
const COOKIE = [`connect.sid=${encodeURIComponent(signed)}`, `koa.sess=${encodeURIComponent(signed)}`, `sessionId=${encodeURIComponent(signed.slice(2))}`].join('; ');

async function expect503(url: string): Promise<void> {
  const started = Date.now();
  const res = await fetch(`${url}/visit`, { headers: { 'x-forwarded-proto': 'https', cookie: COOKIE } });
  const body = await res.text();
  assert.equal(res.status, 503, body.slice(0, 300));
  assert.equal(res.headers.get('retry-after'), '1');
  assert.doesNotMatch(body, /at .*\.js:\d+/, 'no stack trace in the answer');
  // One bound for the request (timeoutMs), not the acquire's plus an operation's.
  assert.ok(Date.now() - started < TIMEOUT_MS + 1000, `answered after ${Date.now() - started} ms (timeoutMs ${TIMEOUT_MS})`);
}

describe('an unreachable tier answers 503 + Retry-After through each framework\'s default error handler', { concurrency: true }, () => {
  it('Express', async () => {
    const app = express();
    // As deployed: in development Express's own handler prints the stack of any error.
    app.set('env', 'production');
    const mw = session({ secret: SECRET, engine: await deadEngine(), timeoutMs: TIMEOUT_MS });
    app.use(mw);
    app.get('/visit', (_req, res) => void res.send('never'));
    const server = createServer(app);
    closers.push(async () => {
      server.closeAllConnections();
      server.close();
      await mw.close();
    });
    await expect503(await listen(server));
  });

  it('Koa', async () => {
    const app = new Koa();
    app.silent = true;
    const mw = koaSession({ secret: SECRET, engine: await deadEngine(), timeoutMs: TIMEOUT_MS });
    app.use(mw);
    app.use((ctx) => {
      ctx.body = 'never';
    });
    const server = createServer(app.callback());
    closers.push(async () => {
      server.closeAllConnections();
      server.close();
    });
    await expect503(await listen(server));
  });

  it('Fastify', async () => {
    const app = Fastify({ trustProxy: true });
    await app.register(fastifySession, { secret: SECRET, engine: await deadEngine(), timeoutMs: TIMEOUT_MS });
    app.get('/visit', async () => 'never');
    const url = await app.listen({ port: 0, host: '127.0.0.1' });
    closers.push(() => app.close());
    await expect503(url);
  });

  it('Hono', async () => {
    const app = new Hono();
    app.use(honoSession({ secret: SECRET, engine: await deadEngine(), timeoutMs: TIMEOUT_MS }));
    app.get('/visit', (c) => c.text('never'));
    const port = await freePort();
    const server = serve({ fetch: app.fetch, port, hostname: '127.0.0.1' });
    closers.push(async () => {
      server.close();
    });
    await expect503(`http://127.0.0.1:${port}`);
  });
});
