export { clientMetrics } from './client-metrics.js';
export { ServerMetrics } from './metrics.js';
export { AdminServer, type AdminOptions } from './admin-server.js';
export { CHANNELS } from '../client/diagnostics.js';
