/**
 * Kiln: clustered HTTP sessions for Node.js.
 *
 * @example
 * import { connect, createSessionClient } from 'kiln';
 * const kiln = createSessionClient({ engine: connect('kiln://127.0.0.1:9510', { token: process.env.KILN_TOKEN }) });
 */
export { KilnError, isKilnError, ERROR_REGISTRY, type KilnErrorCode } from './errors/index.js';
export { generateSessionId, parseSessionId, isValidSessionId, withRoute } from './session/id.js';
export { encodeAttribute, decodeAttribute } from './session/codec.js';
export { DEFAULT_SESSION_LIMITS, type SessionLimits } from './session/limits.js';
export type { SessionMeta, SessionSnapshot, SessionEvent, CommitRequest, CommitAck, LeaseGrant, TouchItem } from './session/model.js';
export type { CallOptions, Engine, EngineStatus, EngineStats, EngineLimits, EngineTraffic, LeaseHandler } from './engines/engine.js';
export { createMemoryTier, MemoryTier, MemoryEngine } from './engines/memory/memory-engine.js';
export { connect, KilnEngine, type KilnEngineOptions } from './engines/kiln/kiln-engine.js';
export { RedisEngine, connectRedis, type RedisEngineOptions } from './engines/redis/redis-engine.js';
export { parseRedisUrl, type RedisTopology, type RedisNodeAddress } from './engines/redis/topology.js';
export { connectEngine, type ConnectEngineOptions } from './engines/connect.js';
export { SessionClient, createSessionClient, type SessionClientOptions, type SessionClientStats } from './client/session-client.js';
export { SessionHandle, type CommitResult } from './client/session-handle.js';
