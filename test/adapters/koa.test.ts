import { adapterConformance } from './adapter-suite.js';

adapterConformance({ name: 'Koa 3', fixture: 'koa-app', env: { KOA: '3' }, errorStatuses: { tooLarge: 413, unavailable: 503 } });
