import { adapterConformance } from './adapter-suite.js';

adapterConformance({ name: 'Koa 2', fixture: 'koa-app', env: { KOA: '2' }, errorStatuses: { tooLarge: 413, unavailable: 503 } });
