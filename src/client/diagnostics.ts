import { channel } from 'node:diagnostics_channel';

/**
 * `node:diagnostics_channel` channels the client publishes on. Nothing is built or sent
 * unless someone subscribes (the hot path checks `hasSubscribers` first).
 *
 * @example
 * import { subscribe } from 'node:diagnostics_channel';
 * subscribe('kiln:commit', (m) => console.log(m)); // { sessionId, bytes, ms, version } or { sessionId, error }
 */
export const leaseChannel = channel('kiln:lease');
export const commitChannel = channel('kiln:commit');
export const cacheChannel = channel('kiln:cache');

export const CHANNELS = { lease: 'kiln:lease', commit: 'kiln:commit', cache: 'kiln:cache' } as const;
