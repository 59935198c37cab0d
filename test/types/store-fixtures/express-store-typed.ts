// KilnStore under express-session: express-session's own types for req.session.
import express from 'express';
import session from 'express-session';
import { KilnStore } from 'kiln/express-store';

declare module 'express-session' {
  interface SessionData {
    visits: number;
  }
}

const app = express();
app.use(session({ secret: 'store secret', resave: false, saveUninitialized: false, store: new KilnStore({ engine: process.env['KILN_ENGINE'] }) }));
app.get('/', (req, res) => {
  req.session.visits = (req.session.visits ?? 0) + 1;
  // @ts-expect-error visits is a number
  req.session.visits = 'many';
  res.json({ visits: req.session.visits });
});
