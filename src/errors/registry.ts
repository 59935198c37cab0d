/**
 * Every error Kiln raises has a stable `code` listed here, with the one-line meaning
 * that docs/errors.md repeats (a unit test keeps the two in step). Users match on
 * `code`, never on message text.
 *
 * `retryable` says whether the same operation may succeed if tried again unchanged
 * (after a reconnect, a lease re-acquire or a pause), which is what the client's
 * retry logic and adapters' "serve without session" fallbacks key on.
 */
export const ERROR_REGISTRY = {
  KILN_ERR_INVALID_OPTION: { retryable: false, meaning: 'An option passed to a Kiln API is missing, of the wrong type or out of range; the message names it.' },
  KILN_ERR_INVALID_ARGUMENT: { retryable: false, meaning: 'An argument to a Kiln API (session id, attribute name, principal) is malformed.' },
  KILN_ERR_UNSERIALIZABLE: { retryable: false, meaning: 'An attribute value cannot be encoded (function, symbol, circular structure…); the message names the attribute.' },
  KILN_ERR_ATTRIBUTE_TOO_LARGE: { retryable: false, meaning: 'One encoded attribute is larger than maxAttributeBytes; nothing was committed.' },
  KILN_ERR_SESSION_TOO_LARGE: { retryable: false, meaning: 'The session would exceed maxSessionBytes after the commit; nothing was committed.' },
  KILN_ERR_TOO_MANY_ATTRIBUTES: { retryable: false, meaning: 'The session would hold more than maxAttributes attributes; nothing was committed.' },
  KILN_ERR_READ_ONLY_SESSION: { retryable: false, meaning: 'A route declared read-only (lease scope "read") tried to change its session.' },
  KILN_ERR_ENGINE_UNAVAILABLE: { retryable: true, meaning: 'The server tier cannot be reached right now (connecting, reconnecting, or down) within the operation timeout.' },
  KILN_ERR_SESSION_NOT_FOUND: { retryable: false, meaning: 'The session does not exist (never created, expired, or destroyed).' },
  KILN_ERR_SESSION_EXISTS: { retryable: false, meaning: 'A create was refused because a session with that id exists already.' },
  KILN_ERR_SESSION_DESTROYED: { retryable: false, meaning: 'The session was destroyed (or expired); a late commit cannot bring it back.' },
  KILN_ERR_CONFLICT: { retryable: false, meaning: 'The commit was computed from a version that is no longer current; it was not applied.' },
  KILN_ERR_LEASE_LOST: { retryable: true, meaning: 'The commit or release carried a fencing token that is no longer current (lease revoked, recalled past its deadline, or lost with the connection).' },
  KILN_ERR_LEASE_TIMEOUT: { retryable: true, meaning: 'The session lease was not granted within acquireTimeoutMs.' },
  KILN_ERR_TIMEOUT: { retryable: true, meaning: 'An engine operation did not complete within its timeout. From the balancer (HTTP 504): the app server sent nothing for --upstream-idle-timeout-ms with the request on it, or did not answer an upgrade within 30 s.' },
  KILN_ERR_CONNECTION_LOST: { retryable: true, meaning: 'The connection to the server tier was lost while the operation was in flight.' },
  KILN_ERR_CLOSED: { retryable: false, meaning: 'The client, engine or session handle was closed, or a session value was changed after its request ended; no further operations are accepted.' },
  KILN_ERR_AUTH: { retryable: false, meaning: 'The server refused the handshake: missing or wrong token.' },
  KILN_ERR_TLS: { retryable: false, meaning: 'A TLS link to the tier could not be set up: its certificate is not trusted (wrong or missing CA, wrong name) or it refused ours; the message says which.' },
  KILN_ERR_PROTOCOL_VERSION: { retryable: false, meaning: 'The peer speaks a protocol version this side does not support.' },
  KILN_ERR_PROTOCOL: { retryable: false, meaning: 'Malformed frame or message (garbage bytes, bad field types, unknown message type).' },
  KILN_ERR_ANSWER_TOO_LARGE: { retryable: false, meaning: 'An answer would not fit one message: a client that does not page asked for the sessions of a principal holding more than 1,000 (clients of this version ask a page at a time). Nothing changed; the connection stays up. A client older than this code reports it as KILN_ERR_INTERNAL, naming it.' },
  KILN_ERR_FRAME_TOO_LARGE: { retryable: false, meaning: 'A frame announced a length above maxFrameBytes; the connection is closed.' },
  KILN_ERR_TOO_MANY_CONNECTIONS: { retryable: true, meaning: 'The server is at maxConnections; try again later.' },
  KILN_ERR_HANDSHAKE_THROTTLED: { retryable: true, meaning: 'Too many handshakes from this address failed recently (wrong token, malformed or missing Hello); its connections are closed at once for a while.' },
  KILN_ERR_SESSION_LIMIT: { retryable: false, meaning: 'A new session was refused: the server holds its limit of sessions (--max-sessions); nothing was stored.' },
  KILN_ERR_LEASE_LIMIT: { retryable: true, meaning: 'A lease was refused: the connection holds its limit of leases (--max-leases-per-connection); it is granted once the client lets some go.' },
  KILN_ERR_PRINCIPAL_SESSION_LIMIT: { retryable: false, meaning: 'A login was refused: the principal has its limit of sessions (--max-sessions-per-principal); nothing was stored.' },
  KILN_ERR_IDLE_CONNECTION: { retryable: true, meaning: 'The server closed a connection that sent nothing for idleConnectionTimeoutMs.' },
  KILN_ERR_SERVER_SHUTTING_DOWN: { retryable: true, meaning: 'The server is stopping and accepts no new work.' },
  KILN_ERR_NO_NODE: { retryable: true, meaning: 'The balancer has no healthy, undrained app server for the request (HTTP 503).' },
  KILN_ERR_BAD_GATEWAY: { retryable: true, meaning: 'The app server failed after the request was sent to it, so the balancer could not retry it elsewhere (HTTP 502).' },
  KILN_ERR_UPSTREAM_BUSY: { retryable: true, meaning: 'The balancer found no free connection to the app server within --queue-timeout-ms, or --max-queue requests were waiting for one already (HTTP 503 with Retry-After).' },
  KILN_ERR_REQUEST_TIMEOUT: { retryable: false, meaning: 'The client sent its request body too slowly: nothing for --body-idle-timeout-ms, or not all of it within --body-timeout-ms; the balancer answered 408 and closed the connection.' },
  KILN_ERR_CLIENT_LIMIT: { retryable: true, meaning: 'The balancer holds --max-connections-per-client connections from this address (or --max-connections in all); the new one is answered 503 and closed.' },
  KILN_ERR_STORAGE_BEHIND: { retryable: true, meaning: 'The kiln server refused a commit before applying it: its log is behind its disk (at least --max-log-backlog-bytes waiting to be written, a write outstanding for --log-stall-ms, a write the disk refused and that is being tried again, or a failed sync not yet made good by a snapshot). Nothing changed; a commit that would fail anyway (a conflict, a session gone, over a limit) gets that error instead. The client retries under its lease, and the request fails with 503 if the disk has not caught up. The one exception, marked details.applied: the retry of a commit whose first try was applied and whose record still waits for the disk (the change stands, and the retry is acknowledged once the disk takes it). A client older than this code (its Hello does not list storage-behind) is answered KILN_ERR_ENGINE_UNAVAILABLE instead, which it knows and retries.' },
  KILN_ERR_STORAGE: { retryable: false, meaning: 'The server could not read or write its data directory: at start, or a write the disk still refused when the server stopped (a write the disk refuses is otherwise tried again until it succeeds, and new commits are refused meanwhile with KILN_ERR_STORAGE_BEHIND).' },
  KILN_ERR_STORAGE_CORRUPT: { retryable: false, meaning: 'A stored record failed authentication (encryption at rest): the file was altered, or a record was moved within or between files. The server refuses to start rather than drop it.' },
  KILN_ERR_STORAGE_DAMAGED: { retryable: false, meaning: 'A stored file is damaged other than by a crash mid-write (a record failing its checksum, a bad header, a record cut short in a file other than the newest log, a damaged snapshot). The server refuses to start and changes no file; the message names the file and byte offset. `kiln repair` (or `kiln server --repair`) salvages what can be trusted: see docs/operations.md, "A damaged data directory". On Redis: a key Kiln keeps holds what Kiln did not write (a key of the wrong type, a field that is not a number); the message names the key (and the field where one is to blame). Not retried; a destroy still deletes a session whose metadata is damaged.' },
  KILN_ERR_REPAIR_FAILED: { retryable: false, meaning: '`kiln repair` (or `kiln server --repair`) could not write the repaired data directory (disk full, permissions); the message says where the original files were kept. The directory still refuses to start until a repair completes.' },
  KILN_ERR_UNSAFE_PERMISSIONS: { retryable: false, meaning: 'A file or directory Kiln trusts could be changed or read by someone else: the data directory is writable by group or others or owned by another user; the encryption key file is readable by group or others; the demo state directory, its state file or the admin token file it names is not ours, not private (0700/0600) or a symbolic link. The message names the path, its mode and the chmod/chown that fixes it.' },
  KILN_ERR_ENCRYPTION_KEY: { retryable: false, meaning: 'Encryption at rest cannot go on: the key file is malformed, or the data directory holds records written with a key id the key file lacks or holds differently; the message names the key id.' },
  KILN_ERR_MISSING_DEPENDENCY: { retryable: false, meaning: 'A feature needs an optional package that is not installed (the Redis engine needs @redis/client); the message gives the npm install command.' },
  KILN_ERR_LISTEN: { retryable: false, meaning: 'A server (the kiln server, its admin port, the balancer, the console) could not listen: the port is in use by another process, a port below 1024 needs privileges, or the address is not this machine\'s; the message names the flag or option, the address and the system error.' },
  KILN_ERR_INTERNAL: { retryable: false, meaning: 'A bug: an invariant inside Kiln did not hold. Please report it with the message.' },
} as const satisfies Record<string, { retryable: boolean; meaning: string }>;

export type KilnErrorCode = keyof typeof ERROR_REGISTRY;

export function isKilnErrorCode(code: unknown): code is KilnErrorCode {
  return typeof code === 'string' && Object.hasOwn(ERROR_REGISTRY, code);
}
