import { adapterConformance } from './adapter-suite.js';

adapterConformance({ name: 'node:http', fixture: 'http-app', errorStatuses: { tooLarge: 413, unavailable: 500 } });
