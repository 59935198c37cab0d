import { adapterConformance } from './adapter-suite.js';

adapterConformance({ name: 'Hono (node-server)', fixture: 'hono-app' });
