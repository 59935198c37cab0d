import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Express, NextFunction, Request, Response } from 'express';
import express5 from 'express';
import express4 from 'express4';
import expressSession from 'express-session';
import { KilnStore } from '../../src/adapters/express-store/index.js';
import { session as kilnSession } from '../../src/adapters/express/index.js';

/**
 * The differential harness: one behaviour suite (test/compat/*.test.ts) drives
 * express-session with its MemoryStore (the yardstick), express-session with KilnStore,
 * and kiln/express, each on Express 4 and 5, over real HTTP on loopback. A case runs the
 * same assertions against every implementation; a deliberate difference names the
 * implementations that differ, why, and what they do instead, and the suite asserts
 * both that the yardstick's behaviour does not hold for them and that theirs does (so a
 * change of mind shows up as a failure).
 */
export type Implementation = 'express-session' | 'express-session + KilnStore' | 'kiln/express';
export const IMPLEMENTATIONS: readonly Implementation[] = ['express-session', 'express-session + KilnStore', 'kiln/express'];

export interface Target {
  impl: Implementation;
  express: 4 | 5;
}

/** The options every case starts from (express-session's recommended explicit ones). */
export const BASE_OPTIONS = { secret: 'compat-secret', resave: false, saveUninitialized: false } as const;

export type SessionOptions = Record<string, unknown>;
export type Routes = (app: Express) => void;

export interface Served {
  url: string;
  /** Errors that reached Express's error handler, in order. */
  errors: unknown[];
  /** Errors nobody handled (uncaught exceptions, unhandled rejections) while it ran. */
  unhandled: unknown[];
  /** The middleware's options as given to the implementation. */
  options: SessionOptions;
  close(): Promise<void>;
}

/** Builds an app for `target` with the session middleware (options merged over BASE_OPTIONS) and `routes`. */
export async function serve(target: Target, options: SessionOptions, routes: Routes, before?: Routes): Promise<Served> {
  const express = (target.express === 4 ? express4 : express5) as unknown as typeof express5;
  const app = express();
  app.set('trust proxy', 'loopback');
  app.use(express.json());
  before?.(app);
  const merged: SessionOptions = { ...BASE_OPTIONS, ...options };
  for (const [k, v] of Object.entries(merged)) if (v === undefined) delete merged[k];
  let store: KilnStore | undefined;
  let middleware: ((req: Request, res: Response, next: NextFunction) => void) & { close?: () => Promise<void> };
  if (target.impl === 'kiln/express') {
    middleware = kilnSession(merged as never) as never;
  } else {
    if (target.impl === 'express-session + KilnStore' && !('store' in merged)) merged['store'] = store = new KilnStore();
    middleware = expressSession(merged as never) as never;
  }
  app.use(middleware);
  routes(app);
  const errors: unknown[] = [];
  app.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
    errors.push(err);
    if (res.headersSent) return;
    const e = err as { status?: number; statusCode?: number; code?: string; message?: string };
    res.status(e.status ?? e.statusCode ?? 500).type('text').send(String(e.code ?? e.message));
  });
  const unhandled: unknown[] = [];
  const onUnhandled = (err: unknown) => unhandled.push(err);
  process.on('uncaughtException', onUnhandled);
  process.on('unhandledRejection', onUnhandled);
  const server: Server = createServer(app);
  server.keepAliveTimeout = 100;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    errors,
    unhandled,
    options: merged,
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      await middleware.close?.();
      await store?.close();
      process.off('uncaughtException', onUnhandled);
      process.off('unhandledRejection', onUnhandled);
    },
  };
}

export interface Reply {
  status: number;
  text: string;
  /** The body as JSON, when it is. */
  body: Record<string, unknown>;
  setCookies: string[];
  headers: Headers;
}

/** A cookie-keeping client, as a browser keeps the session cookie (one jar, any path). */
export class Client {
  readonly jar = new Map<string, string>();
  constructor(readonly base: string) {}

  cookieHeader(): string {
    return [...this.jar].map(([k, v]) => `${k}=${v}`).join('; ');
  }

  async request(method: string, path: string, options: { body?: unknown; headers?: Record<string, string> } = {}): Promise<Reply> {
    const res = await fetch(`${this.base}${path}`, {
      method,
      headers: {
        ...(this.jar.size > 0 ? { cookie: this.cookieHeader() } : {}),
        ...(options.body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...options.headers,
      },
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
    });
    const setCookies = res.headers.getSetCookie();
    for (const line of setCookies) {
      const c = parseSetCookie(line);
      const expired = (c.attributes['expires'] !== undefined && new Date(c.attributes['expires']).getTime() <= Date.now()) || c.attributes['max-age'] === '0';
      if (expired) this.jar.delete(c.name);
      else this.jar.set(c.name, c.value);
    }
    const text = await res.text();
    let body: Record<string, unknown> = {};
    try {
      body = text ? (JSON.parse(text) as Record<string, unknown>) : {};
    } catch {
      // not JSON
    }
    return { status: res.status, text, body, setCookies, headers: res.headers };
  }

  get(path: string, headers?: Record<string, string>): Promise<Reply> {
    return this.request('GET', path, { headers });
  }

  post(path: string, body: unknown = {}, headers?: Record<string, string>): Promise<Reply> {
    return this.request('POST', path, { body, headers });
  }

  clone(): Client {
    const c = new Client(this.base);
    for (const [k, v] of this.jar) c.jar.set(k, v);
    return c;
  }
}

export interface ParsedSetCookie {
  name: string;
  value: string;
  /** Attribute names lower-cased; flags map to ''. */
  attributes: Record<string, string>;
}

export function parseSetCookie(line: string): ParsedSetCookie {
  const [pair, ...attrs] = line.split(';').map((p) => p.trim());
  const eq = pair!.indexOf('=');
  const attributes: Record<string, string> = {};
  for (const a of attrs) {
    const i = a.indexOf('=');
    attributes[(i < 0 ? a : a.slice(0, i)).toLowerCase()] = i < 0 ? '' : a.slice(i + 1);
  }
  return { name: pair!.slice(0, eq), value: pair!.slice(eq + 1), attributes };
}

/** The one Set-Cookie line for `name` (asserts there is exactly one). */
export function sessionCookie(reply: Reply, name = 'connect.sid'): ParsedSetCookie {
  const lines = reply.setCookies.map(parseSetCookie).filter((c) => c.name === name);
  assert.equal(lines.length, 1, `one ${name} Set-Cookie expected, got ${JSON.stringify(reply.setCookies)}`);
  return lines[0]!;
}

export function noSessionCookie(reply: Reply, name = 'connect.sid'): void {
  assert.deepEqual(reply.setCookies.map(parseSetCookie).filter((c) => c.name === name), [], `no ${name} Set-Cookie expected`);
}

/** Milliseconds from now until a cookie's Expires. */
export function expiresIn(c: ParsedSetCookie): number {
  assert.ok(c.attributes['expires'], `cookie has an Expires: ${JSON.stringify(c)}`);
  return new Date(c.attributes['expires']!).getTime() - Date.now();
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Headers of a request that came through a trusted TLS terminator. */
export const HTTPS = { 'x-forwarded-proto': 'https' } as const;

/**
 * One behaviour. `run` asserts what express-session does; `differs` lists the
 * implementations that deliberately do otherwise, with the reason (it goes to
 * docs/migrating-from-express-session.md) and the assertions of what they do.
 */
export interface Case {
  /** The row of the migration guide's table this case belongs to. */
  area: string;
  name: string;
  run(target: Target): Promise<void>;
  differs?: Partial<Record<Implementation, { why: string; run(target: Target): Promise<void> }>>;
  /** Express versions the case applies to (default both). */
  express?: (4 | 5)[];
}

/** Serves an app for one case and always closes it. */
export async function withApp(target: Target, options: SessionOptions, routes: Routes, body: (s: Served, c: Client) => Promise<void>, before?: Routes): Promise<void> {
  const s = await serve(target, options, routes, before);
  try {
    await body(s, new Client(s.url));
    assert.deepEqual(s.unhandled, [], 'nothing went unhandled');
  } finally {
    await s.close();
  }
}

type Cb = (err?: unknown) => void;
type SessionLike = Record<string, unknown> & {
  cookie: { maxAge: number | null; originalMaxAge: number | null; expires: Date | null; secure?: boolean | 'auto' };
  regenerate(cb: Cb): void;
  destroy(cb: Cb): void;
  reload(cb: Cb): void;
  save(cb?: Cb): void;
};
export const sess = (req: Request) => (req as unknown as { session?: SessionLike }).session;

/** Routes most cases share. */
export function standardRoutes(app: Express): void {
  app.get('/s', (req, res) => {
    const s = sess(req);
    res.json({ id: req.sessionID ?? null, session: s ? JSON.parse(JSON.stringify(s)) : null, maxAge: s?.cookie.maxAge ?? null, sameId: s ? s['id'] === req.sessionID : null });
  });
  app.post('/set', (req, res) => {
    Object.assign(sess(req)!, req.body);
    res.json({ id: req.sessionID });
  });
  app.post('/incr', (req, res) => {
    const s = sess(req)!;
    s['n'] = ((s['n'] as number | undefined) ?? 0) + 1;
    res.json({ n: s['n'], id: req.sessionID });
  });
}
