/**
 * The records that describe every change to the session table. Rule kept: one format is
 * both what storage appends and what replay applies, so a restarted server rebuilds
 * exactly the state it acknowledged; old forms (`set`, `attrs`) stay readable.
 */
import type { SessionMeta } from '../session/model.js';

export type TierRecord =
  | {
      t: 'c';
      id: string;
      v: number;
      cid: string;
      la: number;
      /** Set attributes in the packed form of packed-attributes (logs before 0.1 wrote `set` pairs instead). */
      packed?: Uint8Array;
      /** attributeBytes of the packed attributes. */
      pb?: number;
      set?: [string, Uint8Array][];
      del: string[];
      /** createdAt: present on create only. */
      ca?: number;
      /** Idle timeout and absolute expiry: present on create and when they change. */
      it?: number;
      ae?: number;
      /** undefined = unchanged. */
      p?: string | null;
    }
  | { t: 'd'; id: string; until: number }
  | { t: 'e'; id: string }
  | { t: 'a'; items: [string, number][] }
  /** Snapshot forms, written by compaction. */
  | { t: 's'; meta: SessionMeta; packed?: Uint8Array; pb?: number; attrs?: [string, Uint8Array][]; commits: [string, number][] }
  | { t: 'b'; id: string; until: number };
