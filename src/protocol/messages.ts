import { Packr } from 'msgpackr';
import { KilnError } from '../errors/index.js';
import { isValidSessionId } from '../session/id.js';
import type { AttributePatch, CommitRequest, SessionMeta, SessionSnapshot, TouchItem } from '../session/model.js';

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
}

export interface WelcomeBody {
  version: number;
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
