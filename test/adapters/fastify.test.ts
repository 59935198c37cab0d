import { adapterConformance } from './adapter-suite.js';

adapterConformance({ name: 'Fastify 5', fixture: 'fastify-app' });
