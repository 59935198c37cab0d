import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MIGRATE_BUCKETS, SessionArena, SMALL_RECORD_BYTES } from '../../src/tier/session-arena.js';
import { KeyedHash } from '../../src/util/keyed-hash.js';

const payloadOf = (arena: SessionArena, slot: number): Buffer => {
  arena.locate(slot);
  return Buffer.from(arena.buf.subarray(arena.at, arena.end));
};
const put = (arena: SessionArena, key: string, payload: Buffer): number => arena.put(key, payload, payload.length);

/** Stores each key as its own payload, removes every `step`th, and checks that exactly those are gone and the rest still read back. */
function putThenRemoveEvery(arena: SessionArena, keys: string[], step: number): void {
  for (const key of keys) put(arena, key, Buffer.from(key));
  for (let i = 0; i < keys.length; i += step) arena.remove(arena.find(keys[i]!));
  for (const [i, key] of keys.entries()) {
    const slot = arena.find(key);
    if (i % step === 0) assert.equal(slot, -1, key);
    else assert.equal(payloadOf(arena, slot).toString(), key);
  }
}

describe('session arena', () => {
  it('stores, finds, replaces and removes records by key', () => {
    const arena = new SessionArena();
    const a = put(arena, 'alpha', Buffer.from('one'));
    const b = put(arena, 'bêta', Buffer.from('two'));
    assert.equal(arena.size, 2);
    assert.equal(arena.find('alpha'), a);
    assert.equal(arena.find('bêta'), b);
    assert.equal(arena.find('gamma'), -1);
    assert.equal(arena.keyOf(b), 'bêta');
    assert.equal(payloadOf(arena, a).toString(), 'one');
    assert.equal(put(arena, 'alpha', Buffer.from('uno, longer than before')), a, 'a key keeps its slot');
    assert.equal(payloadOf(arena, a).toString(), 'uno, longer than before');
    arena.remove(a);
    assert.equal(arena.find('alpha'), -1);
    assert.equal(arena.isLive(a), false);
    assert.equal(arena.size, 1);
    assert.equal(payloadOf(arena, b).toString(), 'two');
    assert.equal(put(arena, 'delta', Buffer.from('x')), a, 'a freed slot is reused');
  });

  it('keeps every record intact through 50,000 mixed puts and removals (index growth, probe runs, size classes)', () => {
    const arena = new SessionArena();
    const model = new Map<string, Buffer>();
    let seed = 7;
    const random = (n: number): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed % n;
    };
    for (let step = 0; step < 50_000; step++) {
      const key = `k${random(8000)}`;
      if (model.has(key) && random(4) === 0) {
        arena.remove(arena.find(key));
        model.delete(key);
      } else {
        // Mostly small, some past SMALL_RECORD_BYTES: a record of its own.
        const size = random(10) === 0 ? SMALL_RECORD_BYTES + random(3000) : random(600);
        const payload = Buffer.alloc(size, step % 251);
        if (size >= 4) payload.writeUInt32LE(step, 0);
        put(arena, key, payload);
        model.set(key, payload);
      }
    }
    assert.equal(arena.size, model.size);
    for (const [key, payload] of model) {
      const slot = arena.find(key);
      assert.ok(slot >= 0, key);
      assert.ok(payloadOf(arena, slot).equals(payload), key);
      assert.equal(arena.keyOf(slot), key);
    }
    const live = [...arena.slots()].map((slot) => arena.keyOf(slot)).sort();
    assert.deepEqual(live, [...model.keys()].sort());
    for (let i = 0; i < 8000; i++) if (!model.has(`k${i}`)) assert.equal(arena.find(`k${i}`), -1);
  });

  it('doubles its index a little at a time: no put re-reads every key, and every key stays reachable while the index moves', () => {
    const keyed = new KeyedHash();
    let hashes = 0;
    const arena = new SessionArena({ hash: (buf, start, end) => (hashes++, keyed.hash(buf, start, end)) });
    const model = new Map<string, number>();
    let seed = 5;
    const random = (n: number): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed % n;
    };
    let mostPerPut = 0;
    let stepsWhileMoving = 0;
    let checksWhileMoving = 0;
    for (let step = 0; step < 120_000; step++) {
      const key = `s${random(150_000)}`;
      const moving = arena.indexMoving;
      if (moving) stepsWhileMoving++;
      const before = hashes;
      if (model.has(key) && random(3) === 0) {
        arena.remove(arena.find(key));
        model.delete(key);
      } else {
        put(arena, key, Buffer.from(`${key}:${step}`));
        model.set(key, step);
        // The key's own hash, then one per entry moved (a put does no backward shift).
        mostPerPut = Math.max(mostPerPut, hashes - before - 1);
      }
      if (moving && step % 97 === 0) {
        // Mid-move: every key reads back, wherever its entry is (old index or new), and a removed one is gone.
        checksWhileMoving++;
        for (const [k, at] of model) assert.equal(payloadOf(arena, arena.find(k)).toString(), `${k}:${at}`, k);
        assert.equal(arena.find(`s${random(150_000)}x`), -1);
      }
    }
    assert.ok(stepsWhileMoving > 1000 && checksWhileMoving > 10, `moves ran (${stepsWhileMoving} steps, ${checksWhileMoving} checks)`);
    assert.ok(mostPerPut <= MIGRATE_BUCKETS, `a put re-hashed at most ${MIGRATE_BUCKETS} moved entries (${mostPerPut})`);
    assert.equal(arena.size, model.size);
    for (const [k, at] of model) assert.equal(payloadOf(arena, arena.find(k)).toString(), `${k}:${at}`, k);
    assert.deepEqual([...arena.slots()].map((slot) => arena.keyOf(slot)).sort(), [...model.keys()].sort());
  });

  it('finds keys whose hashes collide in one probe run after removals inside it', () => {
    const arena = new SessionArena();
    // Thousands of keys in a table of a few thousand entries: long probe runs are certain.
    putThenRemoveEvery(arena, Array.from({ length: 3000 }, (_, i) => `session-${i}`), 3);
  });

  it('reuses freed space of the same size class, and rewrites a record of its own in place while it fits its room', () => {
    const arena = new SessionArena();
    for (let i = 0; i < 100; i++) put(arena, `s${i}`, Buffer.alloc(200));
    const reserved = arena.reservedBytes;
    for (let i = 0; i < 100; i++) arena.remove(arena.find(`s${i}`));
    for (let i = 0; i < 100; i++) put(arena, `t${i}`, Buffer.alloc(200));
    assert.equal(arena.reservedBytes, reserved);
    const big = put(arena, 'big', Buffer.alloc(SMALL_RECORD_BYTES + 10, 1));
    arena.locate(big);
    const own = arena.buf;
    put(arena, 'big', Buffer.alloc(SMALL_RECORD_BYTES + 10, 2));
    arena.locate(big);
    assert.equal(arena.buf, own, 'same size: same buffer');
    assert.equal(arena.buf[arena.at], 2);
    put(arena, 'big', Buffer.alloc(SMALL_RECORD_BYTES + 11, 3));
    arena.locate(big);
    assert.equal(arena.buf, own, 'a byte more: still in its buffer, which has room to spare');
    assert.equal(arena.end - arena.at, SMALL_RECORD_BYTES + 11);
    put(arena, 'big', Buffer.alloc(SMALL_RECORD_BYTES + 2000, 5));
    arena.locate(big);
    assert.notEqual(arena.buf, own, 'past its room: a new buffer');
    assert.equal(arena.buf[arena.end - 1], 5);
    const grown = arena.buf;
    put(arena, 'big', Buffer.alloc(SMALL_RECORD_BYTES + 11, 6));
    arena.locate(big);
    assert.notEqual(arena.buf, grown, 'shrunk by much: a smaller buffer, not the larger one kept');
    put(arena, 'big', Buffer.alloc(5, 4));
    assert.deepEqual([...payloadOf(arena, big)], [4, 4, 4, 4, 4]);
  });

  it('takes keys of any UTF-8 and an empty payload', () => {
    const arena = new SessionArena();
    const key = 'ключ-🔑-'.repeat(20);
    const slot = put(arena, key, Buffer.alloc(0));
    assert.equal(arena.keyOf(slot), key);
    assert.equal(payloadOf(arena, slot).length, 0);
    assert.equal(arena.find(key.slice(0, -1)), -1);
  });
});

describe('session arena keys', () => {
  it('keeps generated ids as their 32 bytes, and tells them from every other key', () => {
    const arena = new SessionArena();
    const canonical = `${'A'.repeat(42)}A`;
    // The same 32 bytes decoded from a non-canonical last character: must be another key.
    const sibling = `${'A'.repeat(42)}B`;
    const routed = `${canonical}.app-1`;
    const a = put(arena, canonical, Buffer.from('canonical'));
    const b = put(arena, sibling, Buffer.from('sibling'));
    const c = put(arena, routed, Buffer.from('routed'));
    assert.equal(new Set([a, b, c]).size, 3);
    assert.equal(arena.keyOf(a), canonical);
    assert.equal(arena.keyOf(b), sibling);
    assert.equal(arena.keyOf(c), routed);
    assert.equal(payloadOf(arena, arena.find(sibling)).toString(), 'sibling');
    assert.equal(payloadOf(arena, arena.find(canonical)).toString(), 'canonical');
    // A UTF-8 key of 32 bytes that equal a binary key's bytes is another key too.
    const bytesOfCanonical = Buffer.from(canonical, 'base64url').toString('latin1');
    assert.equal(arena.find(bytesOfCanonical), -1);
    for (let i = 0; i < 200; i++) {
      const id = Buffer.from(Array.from({ length: 32 }, (_, k) => (i * 31 + k * 7) % 256)).toString('base64url');
      assert.equal(arena.keyOf(put(arena, id, Buffer.from([i]))), id);
    }
    assert.equal(arena.size, 203);
  });
});

describe('session arena under pressure', () => {
  it('one probe run for every key (a hash that always collides, homes at the end of the index): finds, removes and wraps around', () => {
    for (const home of [7, 1023]) {
      const arena = new SessionArena({ hash: () => home });
      const keys = Array.from({ length: 300 }, (_, i) => `k${i}`);
      putThenRemoveEvery(arena, keys, 4);
      for (let i = 0; i < keys.length; i += 4) put(arena, keys[i]!, Buffer.from(`again ${i}`));
      assert.equal(payloadOf(arena, arena.find('k0')).toString(), 'again 0');
      assert.equal(arena.size, keys.length);
    }
  });

  it('one probe run for every key through a doubling of the index: removals in the old index leave the run whole', () => {
    for (const home of [5, 0x7fffffff]) {
      const arena = new SessionArena({ hash: () => home });
      const keys = Array.from({ length: 1200 }, (_, i) => `c${i}`);
      const removed = new Set(['c500', 'c490', 'c480', 'c470', 'c460']);
      const check = (upTo: number): void => {
        for (const key of keys.slice(0, upTo)) {
          const slot = arena.find(key);
          if (removed.has(key)) assert.equal(slot, -1, key);
          else assert.equal(payloadOf(arena, slot).toString(), key, key);
        }
      };
      for (const key of keys.slice(0, 513)) put(arena, key, Buffer.from(key)); // the 513th key doubles the index (1,024 → 2,048)
      assert.equal(arena.indexMoving, true);
      // Five removals move 5 × MIGRATE_BUCKETS old positions: these keys, late in the run, are still in the old index.
      for (const key of removed) arena.remove(arena.find(key));
      assert.equal(arena.indexMoving, true);
      check(513); // finds go past the markers the removals left
      for (const key of keys.slice(513)) put(arena, key, Buffer.from(key));
      assert.equal(arena.indexMoving, false);
      check(keys.length);
    }
  });

  it('a put whose allocation fails changes nothing: a new key, a move out to a buffer of its own, a move to a larger one', (t) => {
    const arena = new SessionArena();
    const small = put(arena, 'small', Buffer.alloc(100, 1));
    const big = put(arena, 'big', Buffer.alloc(SMALL_RECORD_BYTES + 10, 2));
    const reserved = arena.reservedBytes;
    const failing = t.mock.method(Buffer, 'allocUnsafeSlow', () => {
      throw new RangeError('no memory (test)');
    });
    // A new key in a new chunk: fill the current chunk's room first is not needed, a big record allocates.
    assert.throws(() => put(arena, 'new', Buffer.alloc(SMALL_RECORD_BYTES + 1)), /no memory/);
    assert.throws(() => put(arena, 'small', Buffer.alloc(SMALL_RECORD_BYTES + 1)), /no memory/);
    assert.throws(() => put(arena, 'big', Buffer.alloc(SMALL_RECORD_BYTES + 5000)), /no memory/);
    failing.mock.restore();
    assert.equal(arena.size, 2);
    assert.equal(arena.find('new'), -1);
    assert.deepEqual(payloadOf(arena, arena.find('small')), Buffer.alloc(100, 1));
    assert.deepEqual(payloadOf(arena, arena.find('big')), Buffer.alloc(SMALL_RECORD_BYTES + 10, 2));
    assert.equal(arena.reservedBytes, reserved);
    assert.deepEqual([...arena.slots()].sort(), [small, big].sort(), 'the slot a failed put took is free again');
    const again = put(arena, 'new', Buffer.alloc(3, 3));
    assert.equal(arena.keyOf(again), 'new');
    // Own buffer → chunk → own buffer again: the own buffers are counted once each.
    put(arena, 'big', Buffer.alloc(50, 4));
    assert.equal(arena.reservedBytes < reserved, true, 'the own buffer was given back');
    put(arena, 'big', Buffer.alloc(SMALL_RECORD_BYTES + 10, 5));
    assert.equal(arena.reservedBytes, reserved);
  });
});
