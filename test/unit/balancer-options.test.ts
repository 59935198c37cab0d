import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { KilnBalancer } from '../../src/balancer/balancer.js';
import { parseNodeSpec } from '../../src/balancer/node-table.js';
import { isKilnError } from '../../src/errors/index.js';
import { silentLogger } from '../../src/util/log.js';

/**
 * A node's name is the route suffix of its sessions' ids and the value of the balancer
 * cookie, so it is checked wherever nodes come from: `--node`, `--config` and code.
 */
describe('kiln balancer node names', () => {
  const refused = (name: unknown) => (err: unknown) => isKilnError(err) && err.code === 'KILN_ERR_INVALID_OPTION' && err.message.includes(JSON.stringify(name)) && err.message.includes('letters, digits, _ and -');

  for (const name of ['app 1', 'a.b', 'a;b', 'app-1\r\nx-evil: 1', '', 'x'.repeat(65), 42, undefined]) {
    it(`${JSON.stringify(name) ?? 'undefined'} is refused by the constructor, naming it`, () => {
      assert.throws(() => new KilnBalancer({ nodes: [{ name: name as string, url: 'http://127.0.0.1:1' }], logger: silentLogger }), refused(name));
    });
  }

  it('--node refuses the same names with the same rule', () => {
    assert.throws(() => parseNodeSpec('a.b=http://127.0.0.1:1'), refused('a.b'));
    assert.deepEqual(parseNodeSpec('app_2-b=http://127.0.0.1:1'), { name: 'app_2-b', url: 'http://127.0.0.1:1' });
  });

  it('a valid name is taken', () => {
    const lb = new KilnBalancer({ nodes: [{ name: 'App_2-b', url: 'http://127.0.0.1:1' }, { name: 'x'.repeat(64), url: 'http://127.0.0.1:2' }], logger: silentLogger });
    assert.deepEqual(lb.nodes.map((n) => n.name), ['App_2-b', 'x'.repeat(64)]);
  });
});
