/**
 * The near cache (L1): sessions this process holds the lease of, kept in memory so
 * sticky traffic reads them with no network round trip. Bounded by entries and bytes;
 * eviction is second-chance (CLOCK): oldest first, but an entry read since it was last
 * passed over gets another round. A hit costs a flag, not a reordering of the map. It is only ever filled and trusted under a lease
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

interface Entry<V> {
  value: V;
  used: boolean;
}

export class NearCache<V extends Sized> {
  private readonly map = new Map<string, Entry<V>>();
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

  /** Looks up and counts a hit or miss; a hit earns the entry a second chance at eviction. */
  get(key: string): V | undefined {
    const entry = this.map.get(key);
    if (entry === undefined) {
      this.misses++;
      return undefined;
    }
    this.hits++;
    entry.used = true;
    return entry.value;
  }

  /** Looks up without counting or marking. */
  peek(key: string): V | undefined {
    return this.map.get(key)?.value;
  }

  set(key: string, value: V): void {
    this.delete(key);
    if (value.bytes > this.options.maxBytes) return;
    this.map.set(key, { value, used: false });
    this.totalBytes += value.bytes;
    while (this.map.size > this.options.maxEntries || this.totalBytes > this.options.maxBytes) {
      const oldest = this.map.entries().next();
      if (oldest.done) break;
      const [oldestKey, entry] = oldest.value;
      if (entry.used && oldestKey !== key) {
        entry.used = false;
        this.map.delete(oldestKey);
        this.map.set(oldestKey, entry);
        continue;
      }
      this.map.delete(oldestKey);
      this.totalBytes -= entry.value.bytes;
      this.evictions++;
      this.onEvict?.(oldestKey, entry.value);
    }
  }

  delete(key: string): boolean {
    const old = this.map.get(key);
    if (old === undefined) return false;
    this.map.delete(key);
    this.totalBytes -= old.value.bytes;
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
