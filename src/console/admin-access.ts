import { createCipheriv, createDecipheriv, createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Who may see what on the admin port. A session id is a bearer credential (whoever holds
 * it is logged in as its user), so only the admin role sees ids in full. The read-only
 * role sees the first SHORT_ID_CHARS characters and, to open or page on a session, an
 * opaque handle: the id encrypted under a key this process made (AES-256-GCM), which
 * nobody can turn back into the id, forge, or use anywhere but this admin port, and which
 * stops working when the process restarts.
 *
 * EventSource cannot send an Authorization header, so the console trades its bearer
 * token for a ticket (POST /api/tickets) and puts that in the events URL: 60 seconds to
 * use it, once, for /api/events only, with the read-only view whoever asked for it.
 */
export type Role = 'admin' | 'read';

export const SHORT_ID_CHARS = 8;
/** Handles start with a character no session id has. */
export const HANDLE_PREFIX = '~';
export const TICKET_TTL_MS = 60_000;
/** Unused tickets outstanding at once; older ones are dropped first. */
const MAX_TICKETS = 1000;

export function shortId(id: string): string {
  return id.length > SHORT_ID_CHARS ? `${id.slice(0, SHORT_ID_CHARS)}…` : id;
}

export class SessionHandles {
  private readonly key = randomBytes(32);

  handle(id: string): string {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    const sealed = Buffer.concat([iv, cipher.update(id, 'utf8'), cipher.final(), cipher.getAuthTag()]);
    return `${HANDLE_PREFIX}${sealed.toString('base64url')}`;
  }

  /** The id behind a handle this process made, or undefined. */
  open(handle: string): string | undefined {
    if (!handle.startsWith(HANDLE_PREFIX) || handle.length > 400) return undefined;
    const sealed = Buffer.from(handle.slice(HANDLE_PREFIX.length), 'base64url');
    if (sealed.length < 12 + 16 + 1) return undefined;
    try {
      const decipher = createDecipheriv('aes-256-gcm', this.key, sealed.subarray(0, 12));
      decipher.setAuthTag(sealed.subarray(sealed.length - 16));
      return Buffer.concat([decipher.update(sealed.subarray(12, sealed.length - 16)), decipher.final()]).toString('utf8');
    } catch {
      return undefined;
    }
  }
}

/** Single-use, short-lived tickets for the events stream. */
export class Tickets {
  /** sha256 of the ticket → expiry; Map order is issue order. */
  private readonly live = new Map<string, number>();

  constructor(private readonly ttlMs = TICKET_TTL_MS) {}

  issue(): { ticket: string; expiresInMs: number } {
    this.prune();
    while (this.live.size >= MAX_TICKETS) this.live.delete(this.live.keys().next().value!);
    const ticket = randomBytes(32).toString('base64url');
    this.live.set(digestKey(ticket), Date.now() + this.ttlMs);
    return { ticket, expiresInMs: this.ttlMs };
  }

  /** True once per issued, unexpired ticket. */
  redeem(ticket: string): boolean {
    const key = digestKey(ticket);
    const expires = this.live.get(key);
    this.live.delete(key);
    return expires !== undefined && expires > Date.now();
  }

  private prune(): void {
    const now = Date.now();
    for (const [key, expires] of this.live) if (expires <= now) this.live.delete(key);
  }
}

function digestKey(ticket: string): string {
  return createHash('sha256').update(ticket).digest('base64');
}

export function digest(token: string): Buffer {
  return createHash('sha256').update(token).digest();
}

/** Compares digests so neither the length nor the content of a token leaks through timing. */
export function sameDigest(a: Buffer, b: Buffer): boolean {
  return timingSafeEqual(a, b);
}
