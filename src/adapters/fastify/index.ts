import type { IncomingMessage } from 'node:http';
import type { SessionClient } from '../../client/session-client.js';
import { SessionRuntime, readOnlyPaths, type KilnSessionOptions, type RequestSession } from '../core/runtime.js';
import { createSessionObject, type KilnSessionObject } from '../core/session-object.js';

/**
 * Fastify 5 plugin with @fastify/session's API (`request.session.get/set`, `destroy`,
 * `regenerate(keep)`, `reload`, `save`, `touch`, `sessionId`, `cookie`), plus property
 * access and Kiln's extras. The session is committed in `onSend`, before the reply goes
 * out; the cookie is set as a header, so @fastify/cookie is optional.
 *
 * @example
 * import Fastify from 'fastify';
 * import { kilnSession } from 'kiln/fastify';
 * const app = Fastify();
 * await app.register(kilnSession, { secret, engine: 'kiln://127.0.0.1:9510' });
 * app.post('/cart', async (request) => {
 *   const cart = request.session.get('cart') ?? [];
 *   cart.push(request.body.sku);
 *   request.session.set('cart', cart);
 *   return { items: cart.length };
 * });
 */
export type FastifySessionObject = KilnSessionObject & {
  readonly sessionId: string;
  get<T = unknown>(key: string): T | undefined;
  set(key: string, value: unknown): void;
  /** @fastify/session's name for destroy(). */
  delete(callback?: (err?: unknown) => void): Promise<void>;
};

interface FastifyLikeRequest {
  raw: IncomingMessage;
  headers: IncomingMessage['headers'];
  protocol: 'http' | 'https';
  url: string;
  session: FastifySessionObject | null;
  [kilnKey]?: RequestSession<IncomingMessage>;
}

interface FastifyLikeReply {
  getHeader(name: string): unknown;
  header(name: string, value: unknown): unknown;
}

interface FastifyLike {
  decorateRequest(name: string, value: unknown): unknown;
  decorate(name: string, value: unknown): unknown;
  addHook(name: string, hook: (...args: never[]) => unknown): unknown;
}

const kilnKey = Symbol('kiln.requestSession');

function plugin(fastify: FastifyLike, options: KilnSessionOptions<IncomingMessage>, done: (err?: Error) => void): void {
  let runtime: SessionRuntime<IncomingMessage>;
  try {
    runtime = new SessionRuntime<IncomingMessage>(options, 'kiln/fastify kilnSession');
  } catch (err) {
    done(err as Error);
    return;
  }
  fastify.decorateRequest('session', null);
  fastify.decorate('kiln', runtime.client);

  fastify.addHook('onRequest', (async (request: FastifyLikeRequest) => {
    const rs = await runtime.open(request.raw, request.headers.cookie, request.protocol === 'https');
    request[kilnKey] = rs;
    // As @fastify/session: after destroy(), request.session is null.
    request.session = createSessionObject(rs, { style: 'fastify', onDestroy: () => (request.session = null) }) as FastifySessionObject;
  }) as never);

  // Before the reply is sent: commit, then set the cookie (the commit decides whether one is needed).
  fastify.addHook('onSend', (async (request: FastifyLikeRequest, reply: FastifyLikeReply, payload: unknown) => {
    const rs = request[kilnKey];
    if (!rs) return payload;
    if (request.session === null && !rs.isDestroyed) rs.unsetByApp = true;
    await rs.finish();
    const cookie = rs.setCookieHeader();
    if (cookie) {
      const existing = reply.getHeader('set-cookie');
      reply.header('set-cookie', existing === undefined ? cookie : [...(Array.isArray(existing) ? existing : [existing]), cookie]);
    }
    return payload;
  }) as never);

  const release = (async (request: FastifyLikeRequest) => {
    request[kilnKey]?.abort();
  }) as never;
  fastify.addHook('onResponse', release);
  fastify.addHook('onRequestAbort', release);
  fastify.addHook('onClose', (async () => runtime.close()) as never);
  done();
}

// Fastify plugin metadata without depending on fastify-plugin: apply to the parent
// scope (so every route sees request.session) and declare the supported version.
Object.assign(plugin, {
  [Symbol.for('skip-override')]: true,
  [Symbol.for('fastify.display-name')]: 'kiln-session',
  [Symbol.for('plugin-meta')]: { name: 'kiln-session', fastify: '5.x' },
});

export const kilnSession = plugin;
export default plugin;

declare module 'fastify' {
  interface FastifyRequest {
    /** The request's Kiln session (kiln/fastify); null only if the plugin is not registered. */
    session: FastifySessionObject;
  }
  interface FastifyInstance {
    /** The Kiln client behind the plugin (destroyByPrincipal, stats, events). */
    kiln: SessionClient;
  }
}
export { readOnlyPaths };
export type { KilnSessionOptions, KilnSessionObject, SessionClient };
/** Kiln's error class and check, the same as kiln's own (one implementation behind every entry point). */
export { KilnError, isKilnError, type KilnErrorCode } from '../../errors/index.js';
