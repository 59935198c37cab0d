import { adapterConformance } from './adapter-suite.js';

adapterConformance({ name: 'Express 5', fixture: 'express-app', env: { EXPRESS: '5' } });
