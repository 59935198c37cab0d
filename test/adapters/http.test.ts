import { adapterConformance } from './adapter-suite.js';

adapterConformance({ name: 'node:http', fixture: 'http-app' });
