/**
 * Connections that have not proved who they are yet (a TLS handshake, then a Hello), by
 * address, under a cap of their own so anonymous peers can never take an app server's
 * room. When full, the oldest gives way, not the newcomer: a real client finishes its
 * handshake at once, so a flood of silent sockets keeps it out only by opening `capacity`
 * sockets in the time a handshake takes. Pure.
 */
export class WaitingRoom<K> {
  private readonly waiting = new Map<K, string>();
  private readonly perAddress = new Map<string, number>();

  constructor(readonly capacity: number) {}

  get size(): number {
    return this.waiting.size;
  }

  has(key: K): boolean {
    return this.waiting.has(key);
  }

  enter(key: K, address: string): void {
    if (this.waiting.has(key)) return;
    this.waiting.set(key, address);
    this.perAddress.set(address, (this.perAddress.get(address) ?? 0) + 1);
  }

  /** Out of the room (admitted, refused or closed); a key not in it changes nothing. */
  leave(key: K): void {
    const address = this.waiting.get(key);
    if (address === undefined) return;
    this.waiting.delete(key);
    const left = (this.perAddress.get(address) ?? 1) - 1;
    if (left > 0) this.perAddress.set(address, left);
    else this.perAddress.delete(address);
  }

  /**
   * When the room is full, takes the oldest out and says whether its address is to blame:
   * only when that address has others waiting too. One address flooding the room is
   * throttled as for failed handshakes, while a real client pushed out by a flood from
   * many addresses (its one handshake) is not blamed for it.
   */
  makeRoom(): { key: K; address: string; blame: boolean } | undefined {
    if (this.waiting.size < this.capacity) return undefined;
    const [key, address] = this.waiting.entries().next().value!;
    const blame = (this.perAddress.get(address) ?? 0) > 1;
    this.leave(key);
    return { key, address, blame };
  }
}
