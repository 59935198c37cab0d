import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { hashSlot } from '../../src/engines/redis/hash-slot.js';

/** The slots Redis 7.0's CLUSTER KEYSLOT gives for the same keys (read from a redis-server in cluster mode). */
describe('Redis Cluster hash slot', () => {
  it('agrees with CLUSTER KEYSLOT, hash tags included', () => {
    const keyslot: [string, number][] = [
      ['foo', 12182],
      ['bar', 5061],
      ['123456789', 12739],
      ['{user1000}.following', 3443],
      ['{}foo', 9500],
      ['a{b}c{d}', 3300],
      ['{}', 15257],
      ['x{', 3596],
      ['ünïcode', 6051],
    ];
    for (const [key, slot] of keyslot) assert.equal(hashSlot(key), slot, key);
    assert.equal(hashSlot('{user1000}.following'), hashSlot('{user1000}.followers'), 'the tag decides');
  });
});
