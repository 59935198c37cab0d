import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { sleep } from './processes.js';

/**
 * A full collection, for tests of what is still referenced (WeakRef): V8's gc, exposed
 * here rather than by a flag of the test runner.
 *
 * @example
 * const collect = collector();
 * const ref = new WeakRef(value);
 * await collect();
 * assert.equal(ref.deref(), undefined);
 */
export function collector(): () => Promise<void> {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  return async () => {
    // A WeakRef is cleared only after the turn that made or read it: two collections, a turn apart.
    await sleep(0);
    gc();
    await sleep(0);
    gc();
  };
}
