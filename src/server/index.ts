export { KilnServer, type KilnServerOptions, type KilnServerInfo } from './kiln-server.js';
export type { FsyncPolicy, StopOutcome } from './storage/append-log.js';
export { KilnError, isKilnError, type KilnErrorCode } from '../errors/index.js';
