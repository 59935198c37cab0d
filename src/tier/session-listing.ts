/**
 * Paging through sessions in id order (admin console, `kiln sessions`). Pure: it reads a
 * sorted id array and a lookup, so a page costs a binary search plus the page, never a
 * sort or a scan of every session.
 */
import type { SessionMeta } from '../session/model.js';

export interface ListOptions {
  /** Last id of the previous page. */
  after?: string;
  limit: number;
  prefix?: string;
}

export interface ListPage {
  sessions: SessionMeta[];
  /** Pass as `after` for the next page; null on the last page. */
  next: string | null;
  /** Sessions in the tier (not only those matching the prefix). */
  total: number;
}

/**
 * One page of `ids` (sorted): `after` is the last id of the previous page, `prefix`
 * narrows to ids that start with it. Ids `metaOf` does not know are skipped.
 */
export function listPage(ids: readonly string[], options: ListOptions, metaOf: (id: string) => SessionMeta | undefined, total: number): ListPage {
  const prefix = options.prefix ?? '';
  const from = options.after !== undefined && options.after >= prefix ? options.after : undefined;
  let at = lowerBound(ids, from ?? prefix);
  if (from !== undefined && ids[at] === from) at++;
  const sessions: SessionMeta[] = [];
  while (at < ids.length && sessions.length < options.limit) {
    const id = ids[at++]!;
    if (!id.startsWith(prefix)) break;
    const meta = metaOf(id);
    if (meta) sessions.push(meta);
  }
  const more = at < ids.length && ids[at]!.startsWith(prefix);
  return { sessions, next: more && sessions.length > 0 ? sessions[sessions.length - 1]!.id : null, total };
}

/** The first index whose id is not less than `value`. */
export function lowerBound(sorted: readonly string[], value: string): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid]! < value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
