/**
 * A growable array of numbers kept in pages of PAGE_SIZE elements, for per-slot columns
 * of the session tables (where a record lives, its expiry deadline, its principal-list
 * links). Growing adds pages; nothing is copied.
 *
 * Why pages. A typed array that doubles copies every element into new memory, whose page
 * faults cost most of the time: at a million sessions the slot columns together took
 * tens of milliseconds to double, on the create that crossed 2^20, while every other
 * client waited. A page here is allocated when the first slot in it is needed: 64 KiB to
 * 128 KiB, a fraction of a millisecond.
 *
 * @example
 * const next = new PagedArray(Int32Array, -1); // new elements read -1
 * next.ensure(70_000);
 * next.set(70_000, 5);
 * next.get(70_000); // 5
 */

type NumberArray = Uint32Array | Int32Array | Float64Array;
type NumberArrayConstructor<A extends NumberArray> = new (length: number) => A;

export const PAGE_BITS = 14;
/** Elements per page (16,384). */
export const PAGE_SIZE = 1 << PAGE_BITS;
const PAGE_MASK = PAGE_SIZE - 1;

export class PagedArray<A extends NumberArray> {
  private readonly pages: A[] = [];

  /** `fill`: what an element reads before it is first set. */
  constructor(
    private readonly kind: NumberArrayConstructor<A>,
    private readonly fill = 0,
  ) {}

  /** Elements addressable now (a multiple of PAGE_SIZE). */
  get length(): number {
    return this.pages.length * PAGE_SIZE;
  }

  get byteLength(): number {
    return this.pages.length * PAGE_SIZE * this.kind.prototype.BYTES_PER_ELEMENT;
  }

  /** Element `i`; `i` must be below `length`. */
  get(i: number): number {
    return this.pages[i >>> PAGE_BITS]![i & PAGE_MASK]!;
  }

  /** Sets element `i`; `i` must be below `length` (see ensure). */
  set(i: number, value: number): void {
    this.pages[i >>> PAGE_BITS]![i & PAGE_MASK] = value;
  }

  /** Makes element `i` addressable, adding the pages it needs. */
  ensure(i: number): void {
    while (i >= this.length) {
      const page = new this.kind(PAGE_SIZE);
      if (this.fill !== 0) page.fill(this.fill);
      this.pages.push(page);
    }
  }

  /** The page holding elements [n × PAGE_SIZE, (n + 1) × PAGE_SIZE), for loops over many elements. */
  page(n: number): A {
    return this.pages[n]!;
  }
}
