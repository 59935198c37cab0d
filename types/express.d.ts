// Express's Request with Kiln's session, for applications that import kiln/express.
import type { Session } from './index.js';

declare global {
  namespace Express {
    interface Request {
      /** The request's Kiln session (kiln/express); add your fields to kiln/express's SessionData. */
      session: Session;
      /** The session's id. */
      sessionID: string;
    }
  }
}

export {};
