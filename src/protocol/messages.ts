import { Packr } from 'msgpackr';
import { KilnError } from '../errors/index.js';
import { isValidSessionId } from '../session/id.js';
import { BINARY_MARK, ByteReader, ByteWriter, MAX_LAYOUT_STRING, stringSize } from '../util/binary.js';
import type { AttributePatch, CommitRequest, LeaseGrant, SessionMeta, SessionSnapshot, TouchItem } from '../session/model.js';

/**
 * Message types and their bodies. Every body a peer sends is checked field by field
 * here before any other code sees it: a malformed message becomes KILN_ERR_PROTOCOL
 * naming the field, never a TypeError deep inside the server.
 */
export const MessageType = {
  // client -> server (requests carry a non-zero request id)
  Hello: 1,
  Acquire: 2,
  Release: 3,
  Load: 4,
  Commit: 5,
  Touch: 6,
  Destroy: 7,
  FindPrincipal: 8,
  DestroyPrincipal: 9,
  Subscribe: 10,
  Stats: 11,
  Ping: 12,
  List: 13,
  /** The client's own figures (near cache, leases, commits), for the console and metrics. */
  ClientStats: 14,
  // server -> client
  Welcome: 64,
  Ok: 65,
  Error: 66,
  Recall: 67,
  Revoked: 68,
  Event: 69,
} as const;
export type MessageTypeCode = (typeof MessageType)[keyof typeof MessageType];

const wire = new Packr({ useRecords: false, copyBuffers: true, variableMapSize: true });

export function encodeBody(body: unknown): Uint8Array {
  return wire.pack(body);
}

export function decodeBody(bytes: Uint8Array): unknown {
  if (bytes.length === 0) return undefined;
  try {
    return wire.unpack(bytes);
  } catch (err) {
    throw new KilnError('KILN_ERR_PROTOCOL', `message body is not valid MessagePack: ${(err as Error).message}`, { cause: err });
  }
}

// ---- bodies -------------------------------------------------------------------------

export interface HelloBody {
  token: string;
  client: { name: string; pid: number; host: string; app: string };
  /** Optional encodings the client reads (BINARY_GRANT_FEATURE) and error codes it knows (STORAGE_BEHIND_FEATURE); a server uses only those listed. */
  features?: string[];
}

/** A reply body already in its binary layout: sent as it is, not as MessagePack. */
export class EncodedBody {
  constructor(readonly bytes: Uint8Array) {}
}

export interface WelcomeBody {
  version: number;
  /** Optional encodings the server reads (BINARY_COMMIT_FEATURE); a client uses only those listed. */
  features?: string[];
  epoch: string;
  serverId: string;
  maxFrameBytes: number;
  limits: Record<string, number>;
}

export type WireSnapshot = { meta: SessionMeta; attrs: [string, Uint8Array][] } | null;

export function snapshotToWire(s: SessionSnapshot | null): WireSnapshot {
  return s ? { meta: s.meta, attrs: [...s.attributes] } : null;
}

export function snapshotFromWire(w: unknown): SessionSnapshot | null {
  if (w === null || w === undefined) return null;
  const o = record(w, 'snapshot');
  const attrs = pairs(o, 'attrs');
  return { meta: meta(o['meta']), attributes: new Map(attrs) };
}

/** Commit bodies use short keys: they are the hottest message. */
export function commitToWire(c: CommitRequest): Record<string, unknown> {
  const body: Record<string, unknown> = { id: c.sessionId, tk: c.token, cid: c.commitId, base: c.baseVersion, la: c.lastAccessedAt, set: c.set, del: c.del };
  if (c.patch?.length) body['pt'] = c.patch.map((p) => [p.name, p.at, p.cut, p.bytes, p.baseLength]);
  if (c.principal !== undefined) body['p'] = c.principal;
  if (c.idleTimeoutMs !== undefined) body['it'] = c.idleTimeoutMs;
  if (c.absoluteExpiresAt !== undefined) body['ae'] = c.absoluteExpiresAt;
  if (c.release) body['rel'] = true;
  return body;
}

/**
 * A commit body in its binary layout (src/util/binary.ts), which a server announces in
 * its Welcome (`features`). The hottest message: as a MessagePack map a one-field change
 * took 2-3 µs to encode and 4-6 µs to decode and check in a loop (11 µs of an app's write
 * request in a profile); in this layout 1.7-1.9 µs and 2.1-2.3 µs.
 *
 *   c1 flags tk:f64 base:f64 la:f64 id cid [p] [it:f64] [ae:f64]
 *      set:u32 × (name value) del:u32 × name [pt:u32 × (name at:f64 cut:f64 bytes baseLength:f64)]
 * flags: 1 a principal string follows, 2 principal cleared (null), 4 it, 8 ae, 16 rel, 32 pt.
 */
export const BINARY_COMMIT_FEATURE = 'binary-commit';

/**
 * A server answering FindPrincipal a page at a time (`limit`, `after`, answers `sessions`,
 * `next`, `total`) says so in its Welcome; to one that does not, a client sends the
 * request of before (`principal` alone) and reads one array.
 */
export const PRINCIPAL_PAGES_FEATURE = 'principal-pages';
/**
 * A client that knows KILN_ERR_STORAGE_BEHIND (and retries it) says so in its Hello. To a
 * client that does not, the server answers KILN_ERR_ENGINE_UNAVAILABLE instead: a code it
 * knows, retries, and answers 503 with; the new one would reach it as KILN_ERR_INTERNAL.
 */
export const STORAGE_BEHIND_FEATURE = 'storage-behind';
/**
 * A server answers an empty page with a cursor (a walk past sessions met already, cut
 * to bound its work) only after at least this many steps: a client counts on it to tell
 * a server that goes on from one that never ends.
 */
export const PRINCIPAL_WALK_STEPS_MIN = 1024;
const C_PRINCIPAL = 1;
const C_PRINCIPAL_NULL = 2;
const C_IT = 4;
const C_AE = 8;
const C_RELEASE = 16;
const C_PATCH = 32;
const C_KNOWN = C_PRINCIPAL | C_PRINCIPAL_NULL | C_IT | C_AE | C_RELEASE | C_PATCH;

export function encodeCommitBody(c: CommitRequest): Uint8Array {
  const patch = c.patch?.length ? c.patch : undefined;
  const flags =
    (typeof c.principal === 'string' ? C_PRINCIPAL : c.principal === null ? C_PRINCIPAL_NULL : 0) |
    (c.idleTimeoutMs !== undefined ? C_IT : 0) |
    (c.absoluteExpiresAt !== undefined ? C_AE : 0) |
    (c.release ? C_RELEASE : 0) |
    (patch ? C_PATCH : 0);
  let size = 2 + 24 + stringSize(c.sessionId) + stringSize(c.commitId) + (flags & C_PRINCIPAL ? stringSize(c.principal!) : 0) + (flags & C_IT ? 8 : 0) + (flags & C_AE ? 8 : 0) + 8;
  for (const [name, value] of c.set) size += stringSize(name) + 4 + value.length;
  for (const name of c.del) size += stringSize(name);
  if (patch) {
    size += 4;
    for (const p of patch) size += stringSize(p.name) + 28 + p.bytes.length;
  }
  // A string longer than its u16 length can say (an infinite size) sends the commit as MessagePack instead.
  if (size === Infinity) return encodeBody(commitToWire(c));
  const w = new ByteWriter(size);
  w.u8(BINARY_MARK).u8(flags).f64(c.token).f64(c.baseVersion).f64(c.lastAccessedAt).string(c.sessionId).string(c.commitId);
  if (flags & C_PRINCIPAL) w.string(c.principal!);
  if (flags & C_IT) w.f64(c.idleTimeoutMs!);
  if (flags & C_AE) w.f64(c.absoluteExpiresAt!);
  w.u32(c.set.length);
  for (const [name, value] of c.set) w.string(name).bytes(value);
  w.u32(c.del.length);
  for (const name of c.del) w.string(name);
  if (patch) {
    w.u32(patch.length);
    for (const p of patch) w.string(p.name).f64(p.at).f64(p.cut).bytes(p.bytes).f64(p.baseLength);
  }
  return w.done();
}

/**
 * A commit body from the wire, in either form, checked field by field. Values are
 * views of the frame: the tier copies what it stores and keeps no reference to them.
 */
export function decodeCommitBody(bytes: Uint8Array): CommitRequest {
  if (bytes[0] !== BINARY_MARK) return commitFromWire(decodeBody(bytes));
  return readLayout(bytes, 'commit', C_KNOWN, readCommitLayout, undefined);
}

function readCommitLayout(r: ByteReader, flags: number): CommitRequest {
  const token = layoutUint(r.f64(), 'tk');
  const baseVersion = layoutUint(r.f64(), 'base');
  const lastAccessedAt = layoutUint(r.f64(), 'la');
  const id = r.string();
  if (!isValidSessionId(id)) throw bad('id', 'a session id');
  const commitId = r.string();
  if (commitId.length === 0 || commitId.length > 128) throw bad('cid', 'a string of 1 to 128 characters');
  const principal = flags & C_PRINCIPAL ? r.string() : flags & C_PRINCIPAL_NULL ? null : undefined;
  const idleTimeoutMs = flags & C_IT ? layoutUint(r.f64(), 'it') : undefined;
  const absoluteExpiresAt = flags & C_AE ? layoutUint(r.f64(), 'ae') : undefined;
  const set: [string, Uint8Array][] = [];
  for (let n = countOf(r, 'set', 6); n > 0; n--) set.push([r.string(), r.bytes()]);
  const del: string[] = [];
  for (let n = countOf(r, 'del', 2); n > 0; n--) del.push(r.string());
  let patch: AttributePatch[] | undefined;
  if (flags & C_PATCH) {
    patch = [];
    for (let n = countOf(r, 'pt', 30); n > 0; n--) {
      const name = r.string();
      patch.push({ name, at: layoutUint(r.f64(), 'pt'), cut: layoutUint(r.f64(), 'pt'), bytes: r.bytes(), baseLength: layoutUint(r.f64(), 'pt') });
    }
  }
  return { sessionId: id, token, commitId, baseVersion, lastAccessedAt, set, del, patch, principal, idleTimeoutMs, absoluteExpiresAt, release: (flags & C_RELEASE) !== 0 };
}

/**
 * Reads a binary layout: its flags (any unknown bit refused), then `read`, then nothing
 * may be left over. A read past the end (RangeError) becomes KILN_ERR_PROTOCOL.
 */
function readLayout<T, A>(bytes: Uint8Array, what: string, knownFlags: number, read: (r: ByteReader, flags: number, arg: A) => T, arg: A): T {
  const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const r = new ByteReader(buf, 1);
  try {
    const flags = r.u8();
    if ((flags & ~knownFlags) !== 0) throw bad('flags', `a combination of ${knownFlags}`);
    const value = read(r, flags, arg);
    r.end();
    return value;
  } catch (err) {
    if (err instanceof RangeError) throw new KilnError('KILN_ERR_PROTOCOL', `binary ${what} body is malformed: ${err.message}`, { cause: err });
    throw err;
  }
}

function layoutUint(n: number, field: string): number {
  if (!isUint(n)) throw bad(field, 'a non-negative integer');
  return n;
}

/** A count read from the layout, refused up front when the bytes left cannot hold that many items. */
function countOf(r: ByteReader, field: string, minItemBytes: number): number {
  const n = r.u32();
  if (n * minItemBytes > r.remaining) throw bad(field, `a count the body can hold (${n} announced)`);
  return n;
}

/** A grant as a MessagePack map (a client that did not announce BINARY_GRANT_FEATURE). */
export function grantToWire(grant: Omit<LeaseGrant, 'sessionId'>): Record<string, unknown> {
  return { token: grant.token, epoch: grant.epoch, snapshot: snapshotToWire(grant.snapshot), rau: grant.releaseAfterUse };
}

/**
 * The answer to an acquire in its binary layout, sent to a client whose Hello lists
 * BINARY_GRANT_FEATURE. Every request of a balancer without affinity takes one, with the
 * whole session: as a MessagePack map a ~100 B session took 2.5-3.5 µs to encode on the
 * server and 3-5 µs to decode and check in the app, in a loop.
 *
 *   c1 flags token:f64 epoch [createdAt:f64 lastAccessedAt:f64 idleTimeoutMs:f64
 *      absoluteExpiresAt:f64 version:f64 [principal] attrs:u32 × (name value)]
 * flags: 1 release after use, 2 a snapshot follows, 4 it has a principal. The session
 * id is the one the acquire named, so it is not repeated.
 */
export const BINARY_GRANT_FEATURE = 'binary-grant';
const G_RELEASE_AFTER_USE = 1;
const G_SNAPSHOT = 2;
const G_PRINCIPAL = 4;
const G_KNOWN = G_RELEASE_AFTER_USE | G_SNAPSHOT | G_PRINCIPAL;

export function encodeGrantBody(grant: Omit<LeaseGrant, 'sessionId'>): Uint8Array {
  const snapshot = grant.snapshot;
  const principal = snapshot?.meta.principal ?? null;
  const flags = (grant.releaseAfterUse ? G_RELEASE_AFTER_USE : 0) | (snapshot ? G_SNAPSHOT : 0) | (principal !== null ? G_PRINCIPAL : 0);
  let size = 2 + 8 + stringSize(grant.epoch);
  if (snapshot) {
    size += 40 + (principal !== null ? stringSize(principal) : 0) + 4;
    for (const [name, value] of snapshot.attributes) size += stringSize(name) + 4 + value.length;
  }
  if (size === Infinity) return encodeBody(grantToWire(grant));
  const w = new ByteWriter(size);
  w.u8(BINARY_MARK).u8(flags).f64(grant.token).string(grant.epoch);
  if (snapshot) {
    const m = snapshot.meta;
    w.f64(m.createdAt).f64(m.lastAccessedAt).f64(m.idleTimeoutMs).f64(m.absoluteExpiresAt).f64(m.version);
    if (principal !== null) w.string(principal);
    w.u32(snapshot.attributes.size);
    for (const [name, value] of snapshot.attributes) w.string(name).bytes(value);
  }
  return w.done();
}

/**
 * A grant from the wire, in either form (a raw binary body, or a decoded MessagePack
 * map), checked field by field. Attribute values are copied out of the frame: the near
 * cache keeps them, and a view would keep the socket's whole read buffer alive.
 */
export function grantFromWire(body: unknown, sessionId: string): LeaseGrant {
  if (!(body instanceof Uint8Array && body[0] === BINARY_MARK)) {
    const o = record(body, 'grant');
    return { sessionId, token: uint(o, 'token'), epoch: str(o, 'epoch', MAX_LAYOUT_STRING), snapshot: snapshotFromWire(o['snapshot']), releaseAfterUse: o['rau'] === true };
  }
  return readLayout(body, 'grant', G_KNOWN, readGrantLayout, sessionId);
}

function readGrantLayout(r: ByteReader, flags: number, sessionId: string): LeaseGrant {
  const token = layoutUint(r.f64(), 'token');
  const epoch = r.string();
  if (epoch.length === 0) throw bad('epoch', 'a non-empty string');
  let snapshot: SessionSnapshot | null = null;
  if (flags & G_SNAPSHOT) {
    const createdAt = layoutUint(r.f64(), 'meta.createdAt');
    const lastAccessedAt = layoutUint(r.f64(), 'meta.lastAccessedAt');
    const idleTimeoutMs = layoutUint(r.f64(), 'meta.idleTimeoutMs');
    const absoluteExpiresAt = layoutUint(r.f64(), 'meta.absoluteExpiresAt');
    const version = layoutUint(r.f64(), 'meta.version');
    const principal = flags & G_PRINCIPAL ? r.string() : null;
    // The field order of every other SessionMeta (one hidden class).
    const meta: SessionMeta = { id: sessionId, createdAt, lastAccessedAt, idleTimeoutMs, absoluteExpiresAt, principal, version };
    const attributes = new Map<string, Uint8Array>();
    for (let n = countOf(r, 'attrs', 6); n > 0; n--) {
      const name = r.string();
      attributes.set(name, r.copyOfBytes());
    }
    snapshot = { meta, attributes };
  } else if (flags & G_PRINCIPAL) {
    throw bad('flags', 'a principal only with a snapshot');
  }
  return { sessionId, token, epoch, snapshot, releaseAfterUse: (flags & G_RELEASE_AFTER_USE) !== 0 };
}

export function commitFromWire(body: unknown): CommitRequest {
  const o = record(body, 'commit');
  const principal = o['p'];
  if (principal !== undefined && principal !== null && typeof principal !== 'string') throw bad('p', 'a string or null');
  return {
    sessionId: sessionId(o, 'id'),
    token: uint(o, 'tk'),
    commitId: str(o, 'cid', 128),
    baseVersion: uint(o, 'base'),
    lastAccessedAt: uint(o, 'la'),
    set: pairs(o, 'set'),
    del: strings(o, 'del'),
    patch: o['pt'] === undefined ? undefined : patches(o, 'pt'),
    principal: principal as string | null | undefined,
    idleTimeoutMs: optUint(o, 'it'),
    absoluteExpiresAt: optUint(o, 'ae'),
    release: o['rel'] === true,
  };
}

export function touchesToWire(items: readonly TouchItem[]): unknown {
  return { items: items.map((t) => [t.sessionId, t.token, t.at]) };
}

export function touchesFromWire(body: unknown): TouchItem[] {
  const o = record(body, 'touch');
  const items = o['items'];
  if (!Array.isArray(items) || items.length > 100_000) throw bad('items', 'an array of at most 100000 touches');
  return items.map((item, i) => {
    if (!Array.isArray(item) || item.length !== 3 || !isValidSessionId(item[0]) || !isUint(item[1]) || !isUint(item[2])) throw bad(`items[${i}]`, '[sessionId, token, at]');
    return { sessionId: item[0] as string, token: item[1] as number, at: item[2] as number };
  });
}

// ---- field checkers ---------------------------------------------------------------------

export function record(value: unknown, what: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value) || ArrayBuffer.isView(value)) {
    throw new KilnError('KILN_ERR_PROTOCOL', `${what} body must be a map`);
  }
  return value as Record<string, unknown>;
}

function bad(field: string, expected: string): KilnError {
  return new KilnError('KILN_ERR_PROTOCOL', `field "${field}" must be ${expected}`, { details: { field } });
}

function isUint(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

export function uint(o: Record<string, unknown>, key: string): number {
  const v = o[key];
  if (!isUint(v)) throw bad(key, 'a non-negative integer');
  return v;
}

export function optUint(o: Record<string, unknown>, key: string): number | undefined {
  return o[key] === undefined || o[key] === null ? undefined : uint(o, key);
}

export function str(o: Record<string, unknown>, key: string, max: number): string {
  const v = o[key];
  if (typeof v !== 'string' || v.length === 0 || v.length > max) throw bad(key, `a string of 1 to ${max} characters`);
  return v;
}

export function sessionId(o: Record<string, unknown>, key: string): string {
  const v = o[key];
  if (!isValidSessionId(v)) throw bad(key, 'a session id');
  return v;
}

function strings(o: Record<string, unknown>, key: string): string[] {
  const v = o[key];
  if (!Array.isArray(v) || !v.every((s) => typeof s === 'string')) throw bad(key, 'an array of strings');
  return v as string[];
}

function pairs(o: Record<string, unknown>, key: string): [string, Uint8Array][] {
  const v = o[key];
  if (!Array.isArray(v)) throw bad(key, 'an array of [name, bytes] pairs');
  for (const pair of v) {
    if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== 'string' || !(pair[1] instanceof Uint8Array)) throw bad(key, 'an array of [name, bytes] pairs');
  }
  return v as [string, Uint8Array][];
}

function patches(o: Record<string, unknown>, key: string): AttributePatch[] {
  const v = o[key];
  const shape = 'an array of [name, at, cut, bytes, baseLength]';
  if (!Array.isArray(v)) throw bad(key, shape);
  return v.map((item: unknown) => {
    if (!Array.isArray(item) || item.length !== 5 || typeof item[0] !== 'string' || !isUint(item[1]) || !isUint(item[2]) || !(item[3] instanceof Uint8Array) || !isUint(item[4])) throw bad(key, shape);
    return { name: item[0], at: item[1], cut: item[2], bytes: item[3], baseLength: item[4] };
  });
}

function meta(value: unknown): SessionMeta {
  const o = record(value, 'meta');
  const principal = o['principal'];
  if (principal !== null && typeof principal !== 'string') throw bad('meta.principal', 'a string or null');
  return {
    id: sessionId(o, 'id'),
    createdAt: uint(o, 'createdAt'),
    lastAccessedAt: uint(o, 'lastAccessedAt'),
    idleTimeoutMs: uint(o, 'idleTimeoutMs'),
    absoluteExpiresAt: uint(o, 'absoluteExpiresAt'),
    principal,
    version: uint(o, 'version'),
  };
}

export function metaFromWire(value: unknown): SessionMeta {
  return meta(value);
}
