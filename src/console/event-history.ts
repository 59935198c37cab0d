/**
 * The recent events the console's events pane shows on load: a ring of the last
 * HISTORY_SIZE events (stream order), filtered by type and by a word that must appear
 * in the session id, principal, client name or code. Kept in the admin server so a page
 * opened during an incident sees what led up to it, not only what comes after.
 */
export const HISTORY_SIZE = 500;

export interface RecordedEvent {
  /** Increases by one per event: the page skips what its stream already delivered. */
  seq: number;
  type: string;
  at: number;
  data: unknown;
}

export class EventHistory {
  private readonly ring: RecordedEvent[] = [];
  private seq = 0;

  constructor(private readonly size = HISTORY_SIZE) {}

  record(type: string, data: unknown): RecordedEvent {
    const at = typeof (data as { at?: unknown })?.at === 'number' ? (data as { at: number }).at : Date.now();
    const e = { seq: ++this.seq, type, at, data };
    this.ring.push(e);
    if (this.ring.length > this.size) this.ring.shift();
    return e;
  }

  /** The newest `limit` events matching, oldest first; `text` is matched against what the role sees. */
  recent(filter: { types?: readonly string[]; text?: string; limit?: number }, view: (data: unknown) => unknown = (d) => d): RecordedEvent[] {
    const limit = Math.max(1, Math.min(filter.limit ?? this.size, this.size));
    const text = filter.text?.toLowerCase();
    const out: RecordedEvent[] = [];
    for (let i = this.ring.length - 1; i >= 0 && out.length < limit; i--) {
      const e = this.ring[i]!;
      if (filter.types && filter.types.length > 0 && !filter.types.includes(e.type)) continue;
      const shown = { ...e, data: view(e.data) };
      if (text && !searchable(shown.data).includes(text)) continue;
      out.push(shown);
    }
    return out.reverse();
  }
}

/** The fields a filter word may match, lower-cased. */
function searchable(data: unknown): string {
  if (typeof data !== 'object' || data === null) return '';
  const d = data as Record<string, unknown>;
  const client = d['client'] as Record<string, unknown> | string | undefined;
  const parts = [d['sessionId'], d['principal'], d['type'], d['code'], d['owner'], d['namespace'], typeof client === 'string' ? client : client?.['name']];
  return parts.filter((p) => typeof p === 'string').join(' ').toLowerCase();
}
