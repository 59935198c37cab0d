import { adapterConformance } from './adapter-suite.js';

adapterConformance({ name: 'Hono (node-server)', fixture: 'hono-app', errorStatuses: { tooLarge: 500, unavailable: 500 } });
