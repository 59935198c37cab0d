import { adapterConformance } from './adapter-suite.js';

adapterConformance({ name: 'Koa 3', fixture: 'koa-app', env: { KOA: '3' } });
