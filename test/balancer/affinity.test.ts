import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { signValue } from '../../src/adapters/core/cookies.js';
import { chooseNode, rendezvous, routeFromCookie } from '../../src/balancer/affinity.js';
import { generateSessionId } from '../../src/session/id.js';

const node = (name: string, over: Partial<{ healthy: boolean; draining: boolean; active: number }> = {}) => ({ name, healthy: true, draining: false, active: 0, ...over });
const none = new Set<string>();

describe('balancer affinity', () => {
  it('reads the route from signed and unsigned session cookies', () => {
    const id = generateSessionId('app-2');
    const signed = encodeURIComponent(signValue(id, 'secret'));
    assert.equal(routeFromCookie(`a=b; connect.sid=${signed}`, 'connect.sid'), 'app-2');
    assert.equal(routeFromCookie(`sid=${id}`, 'sid'), 'app-2');
    assert.equal(routeFromCookie(`connect.sid=${encodeURIComponent(signValue(generateSessionId(), 's'))}`, 'connect.sid'), undefined);
    for (const bad of [undefined, '', 'connect.sid=', 'connect.sid=s%3A', 'connect.sid=garbage.with.dots']) assert.equal(routeFromCookie(bad, 'connect.sid'), undefined);
  });

  it('sends a session to its node, new sessions to the least busy, and round-robin with affinity none', () => {
    const nodes = [node('app-1', { active: 5 }), node('app-2', { active: 1 }), node('app-3', { active: 3 })];
    assert.equal(chooseNode(nodes, { mode: 'route', wanted: 'app-3', sessionKey: 'k', exclude: none, turn: 0 })?.name, 'app-3');
    assert.equal(chooseNode(nodes, { mode: 'route', wanted: undefined, sessionKey: undefined, exclude: none, turn: 0 })?.name, 'app-2');
    const rr = [0, 1, 2, 3].map((turn) => chooseNode(nodes, { mode: 'none', wanted: 'app-1', sessionKey: 'k', exclude: none, turn })?.name);
    assert.deepEqual(rr, ['app-1', 'app-2', 'app-3', 'app-1']);
  });

  it('moves a dead or draining node\'s session to the same live node every time', () => {
    const nodes = [node('app-1', { healthy: false }), node('app-2'), node('app-3'), node('app-4', { draining: true })];
    const picks = new Set<string>();
    for (let turn = 0; turn < 10; turn++) picks.add(chooseNode(nodes, { mode: 'route', wanted: 'app-1', sessionKey: 'session-xyz', exclude: none, turn })!.name);
    assert.equal(picks.size, 1);
    assert.ok(['app-2', 'app-3'].includes([...picks][0]!));
    assert.notEqual(chooseNode(nodes, { mode: 'route', wanted: 'app-4', sessionKey: 'k2', exclude: none, turn: 0 })?.name, 'app-4', 'draining: existing sessions move');
    assert.equal(chooseNode(nodes, { mode: 'route', wanted: undefined, sessionKey: undefined, exclude: new Set(['app-2', 'app-3']), turn: 0 }), undefined, 'nothing left');
  });

  it('rendezvous hashing spreads keys and keeps them when other nodes change', () => {
    const three = [node('a'), node('b'), node('c')];
    const counts = new Map<string, number>();
    const before = new Map<string, string>();
    for (let i = 0; i < 3000; i++) {
      const pick = rendezvous(three, `key-${i}`)!.name;
      counts.set(pick, (counts.get(pick) ?? 0) + 1);
      before.set(`key-${i}`, pick);
    }
    for (const n of counts.values()) assert.ok(n > 800 && n < 1200, `even spread (${[...counts.values()].join('/')})`);
    const two = [node('a'), node('b')];
    for (const [key, pick] of before) if (pick !== 'c') assert.equal(rendezvous(two, key)!.name, pick, 'keys of live nodes stay put');
  });
});
