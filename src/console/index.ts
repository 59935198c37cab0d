export { clientMetrics } from './client-metrics.js';
export { ServerMetrics } from './metrics.js';
export { AdminServer, type AdminOptions } from './admin-server.js';
export { KilnServerSource } from './kiln-server-source.js';
export type { ConsoleSource, ConsoleFigures, ConsoleClient, ConsoleEvent, ConsoleDescription } from './source.js';
export { CHANNELS } from '../client/diagnostics.js';
export { KilnError, isKilnError, type KilnErrorCode } from '../errors/index.js';
