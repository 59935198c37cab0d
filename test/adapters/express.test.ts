import { adapterConformance } from './adapter-suite.js';

adapterConformance({ name: 'Express 5', fixture: 'express-app', env: { EXPRESS: '5' }, errorStatuses: { tooLarge: 500, unavailable: 500 } });
