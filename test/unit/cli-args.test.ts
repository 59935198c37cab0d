import assert from 'node:assert/strict';
import { parseArgs } from 'node:util';
import { describe, it } from 'node:test';
import { dashSafeArgs } from '../../src/cli/args.js';

describe('CLI arguments that begin with a dash (dashSafeArgs)', () => {
  const options = { after: { type: 'string' }, principal: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } as const;
  const parse = (argv: string[]) => {
    const parsed = parseArgs({ args: dashSafeArgs(argv, options, ['show', 'rm']), options, strict: true, allowPositionals: true });
    return { values: { ...parsed.values }, positionals: parsed.positionals };
  };

  it('passes an id in the id slot as a positional, a dash or two in front included', () => {
    for (const id of ['-rRPWREr8jDtX5q5imGjsLj5ncbXzU9dkxxXcwmrRMg', '--PWREr8jDtX5q5imGjsLj5ncbXzU9dkxxXcwmrRMg', '-rRPWREr8jDtX5q5imGjsLj5ncbXzU9dkxxXcwmrRMg.app-1', 'abc', '~handle']) {
      assert.deepEqual(parse(['show', id, '--json']).positionals, ['show', id]);
      assert.deepEqual(parse(['rm', '--json', id]).positionals, ['rm', id]);
    }
    // Without the helper, parseArgs refuses the first of them as an unknown option.
    assert.throws(() => parseArgs({ args: ['show', '-rRPW'], options, strict: true, allowPositionals: true }), /Unknown option '-r'/);
  });

  it("joins a string option's value to it, so a cursor or principal may begin with a dash", () => {
    const { values, positionals } = parse(['ls', '--after', '-x.1.abc', '--principal', '--bob', '--json']);
    assert.deepEqual(values, { after: '-x.1.abc', principal: '--bob', json: true });
    assert.deepEqual(positionals, ['ls']);
    assert.deepEqual(parse(['ls', '--after=-y']).values, { after: '-y' });
  });

  it('still refuses options it does not know, outside the id slot, and still reads -h', () => {
    assert.throws(() => parse(['ls', '--bogus']), /Unknown option '--bogus'/);
    assert.throws(() => parse(['ls', '-x']), /Unknown option '-x'/);
    assert.equal(parse(['-h']).values.help, true);
    assert.deepEqual(parse(['rm', '--principal', 'olga']).values, { principal: 'olga' });
    assert.deepEqual(parse(['show', '--', '-abc']).positionals, ['show', '-abc']);
    // In the id slot, what does not look like an id is still an option: help, or a typo.
    assert.equal(parse(['show', '-h']).values.help, true);
    assert.throws(() => parse(['show', '--jsno', 'abc']), /Unknown option '--jsno'/);
    // A value forgotten before the next option is not taken from it.
    assert.throws(() => parse(['rm', '--principal', '--json']), /--principal/);
    assert.throws(() => parse(['ls', '--constructor', 'x']), /Unknown option '--constructor'/);
  });
});
