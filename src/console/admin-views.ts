import type { SessionMeta } from '../session/model.js';
import type { EventHistory, RecordedEvent } from './event-history.js';
import type { LargestReport } from './largest-sessions.js';

/**
 * Query parsing and role views of the admin API's newer read endpoints, kept out of
 * admin-server.ts (routing, auth, streams).
 */

/** GET /api/events/recent?type=session,client&q=word&limit=200 */
export function recentEvents(history: EventHistory, query: URLSearchParams, view: ((data: unknown) => unknown) | undefined): RecordedEvent[] {
  const types = (query.get('type') ?? '').split(',').map((t) => t.trim()).filter((t) => t.length > 0);
  const text = (query.get('q') ?? '').trim().slice(0, 200) || undefined;
  const limit = Number(query.get('limit') ?? '') || undefined;
  return history.recent({ types, text, limit }, view);
}

/** The report with each session's metadata as the caller's role may see it (short id and handle for the read role). */
export function largestView(report: LargestReport, metaView: (m: SessionMeta) => SessionMeta & { ref: string }): unknown {
  return { ...report, sessions: report.sessions.map((s) => ({ ...s, meta: metaView(s.meta) })) };
}
