/**
 * The near cache (L1): sessions this process holds the lease of, kept in memory so
 * sticky traffic reads them with no network round trip. Bounded by entries and bytes,
 * least recently used out first. It is only ever filled and trusted under a lease
 * (SessionClient enforces that), so it needs no invalidation protocol of its own.
 */
export interface NearCacheOptions {
  maxEntries: number;
  maxBytes: number;
}

export interface NearCacheStats {
  entries: number;
  bytes: number;
  hits: number;
  misses: number;
  evictions: number;
}

interface Sized {
  bytes: number;
}

export class NearCache<V extends Sized> {
  private readonly map = new Map<string, V>();
  private totalBytes = 0;
  private hits = 0;
  private misses = 0;
  private evictions = 0;

  constructor(
    private readonly options: NearCacheOptions,
    private readonly onEvict?: (key: string, value: V) => void,
  ) {}

  get size(): number {
    return this.map.size;
  }

  /** Looks up and counts a hit or miss; a hit becomes most recently used. */
  get(key: string): V | undefined {
    const value = this.map.get(key);
    if (value === undefined) {
      this.misses++;
      return undefined;
    }
    this.hits++;
    this.map.delete(key);
    this.map.set(key, value);
    return value;
  }

  /** Looks up without counting or reordering. */
  peek(key: string): V | undefined {
    return this.map.get(key);
  }

  set(key: string, value: V): void {
    this.delete(key);
    if (value.bytes > this.options.maxBytes) return;
    this.map.set(key, value);
    this.totalBytes += value.bytes;
    while (this.map.size > this.options.maxEntries || this.totalBytes > this.options.maxBytes) {
      const oldest = this.map.keys().next();
      if (oldest.done) break;
      const evicted = this.map.get(oldest.value)!;
      this.map.delete(oldest.value);
      this.totalBytes -= evicted.bytes;
      this.evictions++;
      this.onEvict?.(oldest.value, evicted);
    }
  }

  delete(key: string): boolean {
    const old = this.map.get(key);
    if (old === undefined) return false;
    this.map.delete(key);
    this.totalBytes -= old.bytes;
    return true;
  }

  clear(): void {
    this.map.clear();
    this.totalBytes = 0;
  }

  stats(): NearCacheStats {
    return { entries: this.map.size, bytes: this.totalBytes, hits: this.hits, misses: this.misses, evictions: this.evictions };
  }
}
