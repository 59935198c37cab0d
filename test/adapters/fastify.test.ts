import { adapterConformance } from './adapter-suite.js';

adapterConformance({ name: 'Fastify 5', fixture: 'fastify-app', errorStatuses: { tooLarge: 500, unavailable: 500 } });
