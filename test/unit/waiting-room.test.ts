import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WaitingRoom } from '../../src/server/waiting-room.js';

describe('waiting room (connections before their handshake)', () => {
  it('makes room only when full, taking the oldest out, blamed only when its address has others waiting', () => {
    const room = new WaitingRoom<string>(3);
    room.enter('victim', '10.0.0.1');
    room.enter('a', '10.0.0.2');
    assert.equal(room.makeRoom(), undefined, 'not full');
    room.enter('b', '10.0.0.3');
    assert.deepEqual(room.makeRoom(), { key: 'victim', address: '10.0.0.1', blame: false }, 'its one socket: not blamed');
    assert.equal(room.size, 2);
    room.enter('c', '10.0.0.2');
    assert.deepEqual(room.makeRoom(), { key: 'a', address: '10.0.0.2', blame: true }, 'its address has another waiting');
    assert.deepEqual(room.makeRoom(), undefined);
    room.enter('d', '10.0.0.4');
    assert.deepEqual(room.makeRoom(), { key: 'b', address: '10.0.0.3', blame: false });
  });

  it('counts each key once, and forgets an address with none left', () => {
    const room = new WaitingRoom<number>(2);
    room.enter(1, 'x');
    room.enter(1, 'x'); // entered twice: still one
    room.enter(2, 'x');
    room.leave(1);
    room.leave(1);
    room.leave(99); // never entered
    assert.equal(room.size, 1);
    room.enter(3, 'y');
    // Had the second enter or leave of 1 counted, x would show others waiting here.
    assert.deepEqual(room.makeRoom(), { key: 2, address: 'x', blame: false });
  });
});
