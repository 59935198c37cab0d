// Koa's context with Kiln's session, for applications that import kiln/koa.
import type { KoaSessionObject, SessionData } from './index.js';

declare module 'koa' {
  interface ExtendableContext {
    /** The request's Kiln session (kiln/koa); null after `ctx.session = null`. Add your fields to kiln/koa's SessionData. */
    session: (KoaSessionObject & Partial<SessionData>) | null;
    /** The session's id. */
    sessionId: string;
  }
}

export {};
