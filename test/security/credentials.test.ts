/**
 * #22 item 13: a credential in a URL (kiln://:token@…, redis://:password@…) is never
 * printed: not in an error, a log line, the CLI's output or the admin JSON, whether the
 * URL is right, wrong, unreachable or malformed.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { connectEngine } from '../../src/engines/connect.js';
import { resolveKilnOptions } from '../../src/engines/kiln/kiln-options.js';
import { isKilnError } from '../../src/errors/index.js';
import { redactCredentials } from '../../src/util/log.js';
import { freePort, KILN_BIN, startKilnCommand } from '../helpers/processes.js';
import { startRedisNode, type RedisNode } from '../helpers/redis.js';

const SECRET = 'S3cr3t-Canary-9f2b';

function cli(args: string[]): string {
  const run = spawnSync(process.execPath, [KILN_BIN, ...args], { encoding: 'utf8', timeout: 20_000, env: { ...process.env, KILN_ADMIN_TOKEN: 'an-admin-token-of-at-least-thirty-two-bytes' } });
  return `${run.stdout}\n${run.stderr}`;
}

async function failureText(url: string): Promise<string> {
  try {
    const engine = connectEngine(url, { connectTimeoutMs: 1500, operationTimeoutMs: 1500 });
    try {
      await engine.connect();
      return '(connected)';
    } finally {
      await engine.close().catch(() => undefined);
    }
  } catch (err) {
    const e = err as Error & { details?: unknown; cause?: unknown };
    return `${e.message} ${JSON.stringify(e.details ?? null)} ${String(e.cause ?? '')} ${e.stack ?? ''}`;
  }
}

describe('security: credentials in URLs are never printed (#22 item 13)', () => {
  let redis: RedisNode;
  let closedPort: number;

  before(async () => {
    redis = await startRedisNode({ args: ['--requirepass', SECRET] });
    closedPort = await freePort();
  });
  after(() => redis?.kill());

  const urls = (): [string, string][] => [
    ['redis, wrong password', `redis://:${SECRET}x@127.0.0.1:${redis.port}`],
    ['redis, unreachable', `redis://:${SECRET}@127.0.0.1:${closedPort}`],
    ['redis, password with / and @', `redis://user:${SECRET}/@x@127.0.0.1:${closedPort}`],
    ['redis, bad port', `redis://:${SECRET}@127.0.0.1:notaport`],
    ['redis, missing host', `rediss://user:${SECRET}@`],
    ['sentinel, unreachable', `redis+sentinel://:${SECRET}@127.0.0.1:${closedPort}/mymaster`],
    ['kiln, unreachable', `kiln://:${SECRET}@127.0.0.1:${closedPort}`],
    ['kiln, bad port', `kiln://:${SECRET}@127.0.0.1:99999`],
    ['bad scheme', `redi://:${SECRET}@127.0.0.1:${closedPort}`],
    ['password in the query', `redis://127.0.0.1:${closedPort}?password=${SECRET}`],
  ];

  it('engines made in code: no error message, detail, cause or stack holds the secret', async () => {
    for (const [what, url] of urls()) {
      const text = await failureText(url);
      assert.ok(!text.includes(SECRET), `${what}: ${text.slice(0, 300)}`);
    }
  });

  it('the CLI (kiln console --engine, kiln status --admin) prints no secret, whatever the URL', () => {
    for (const [what, url] of urls()) {
      const out = cli(['console', '--engine', url, '--port', '0']);
      assert.ok(!out.includes(SECRET), `kiln console, ${what}: ${out.slice(0, 300)}`);
    }
    const status = cli(['status', '--admin', `http://op:${SECRET}@127.0.0.1:${closedPort}`]);
    assert.ok(!status.includes(SECRET), `kiln status: ${status.slice(0, 300)}`);
  });

  it('a console on the right URL says where it is connected without the password, in its output and its admin JSON', async () => {
    const consoleProcess = await startKilnCommand(['console', '--engine', `redis://:${SECRET}@127.0.0.1:${redis.port}`, '--port', '0'], { KILN_ADMIN_TOKEN: 'an-admin-token-of-at-least-thirty-two-bytes' }, /kiln admin on (http:\/\/\S+)/, 'kiln console');
    try {
      const overview = await (await fetch(`${consoleProcess.match[1]}/api/overview`, { headers: { authorization: 'Bearer an-admin-token-of-at-least-thirty-two-bytes' } })).text();
      assert.ok(overview.includes(String(redis.port)), 'the overview names the Redis it reads');
      assert.ok(!overview.includes(SECRET), overview.slice(0, 300));
      assert.ok(!consoleProcess.output().includes(SECRET), consoleProcess.output());
    } finally {
      await consoleProcess.stop();
    }
  });

  it('redactCredentials cuts at the last @ and hides secret query parameters', () => {
    assert.equal(redactCredentials('redis://u:p@ss/w@rd@host:1/0'), 'redis://***@host:1/0');
    assert.ok(!redactCredentials(`failed: rediss://:${SECRET}@h:1 and kiln://:${SECRET}@k:2`).includes(SECRET));
    assert.ok(!redactCredentials(`redis://h:1/?password=${SECRET}&x=1`).includes(SECRET));
  });

  it('redactCredentials leaves a help text\'s placeholder and a sentence\'s closing bracket alone, and still hides what only looks like a port', () => {
    assert.equal(redactCredentials('pass --admin http://host:port (or set KILN_ADMIN_URL)'), 'pass --admin http://host:port (or set KILN_ADMIN_URL)');
    assert.equal(redactCredentials('needs a node (--node name=http://host:port)'), 'needs a node (--node name=http://host:port)');
    assert.equal(redactCredentials('at http://127.0.0.1:9510.'), 'at http://127.0.0.1:9510.');
    // A password cut short by a space (`user:pass word@host`) is not a port.
    assert.ok(!redactCredentials(`redis://user:${SECRET} word@h:1`).includes(SECRET));
  });

  it('a bad engine URL says what is wrong with it without echoing the part that is', () => {
    for (const [url, why] of [['kiln://127.0.0.1:abc', /its port is not a number from 1 to 65535/], ['kiln://127.0.0.1:95100', /its port is above 65535/], ['kiln://exa mple.com', /it does not parse as a URL/]] as const) {
      assert.throws(() => resolveKilnOptions(url), (err: unknown) => isKilnError(err, 'KILN_ERR_INVALID_OPTION') && why.test(err.message) && err.details?.['option'] === 'url' && !err.message.includes('abc'));
    }
  });
});
