import { adapterConformance } from './adapter-suite.js';

adapterConformance({ name: 'Express 4', fixture: 'express-app', env: { EXPRESS: '4' }, errorStatuses: { tooLarge: 500, unavailable: 500 } });
