import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { KilnError } from '../../src/errors/index.js';
import { COUNTER_NAMES, Counters, countersFrom } from '../../src/engines/redis/counters.js';
import { expireVerdict, sweepTurnMs } from '../../src/engines/redis/expiry-sweep.js';
import { renewDue } from '../../src/engines/redis/heartbeat.js';
import { decodeAcquireReply, retryAfterRecallMs, retryAfterTroubleMs, retryAtMs } from '../../src/engines/redis/lease-acquirer.js';
import { leaseMessageFrom, ownerMessageAction, parseOwnerMessage, type OwnerView } from '../../src/engines/redis/owner-messages.js';
import { grantValidUntil, Ownership, RENEW_SLICE, renewVerdict, VALIDITY_MARGIN_MS } from '../../src/engines/redis/ownership.js';
import { settlePooled } from '../../src/util/slices.js';
import { sleep } from '../helpers/processes.js';
import { metaFrom, num, parseUntrusted, redisVersionBelowMinimum, roleView, refusalOf, respBytes, settleBy, snapshotFrom, text, toEngineError } from '../../src/engines/redis/replies.js';
import { withTimeout } from '../../src/util/deadline.js';
import { commitArgs, decodeCommitReply } from '../../src/engines/redis/session-store.js';
import { parseSessionEvent } from '../../src/engines/redis/session-events.js';
import { parseReport, sortReports, MAX_REPORT_BYTES } from '../../src/engines/redis/console-reports.js';
import { DEFAULT_SESSION_LIMITS } from '../../src/session/limits.js';
import { isKilnError } from '../../src/errors/index.js';
import { readRedisEngineOptions } from '../../src/engines/redis/engine-options.js';
import { createMemoryTier } from '../../src/engines/memory/memory-engine.js';
import { KilnServer } from '../../src/server/kiln-server.js';
import { LatencyRecorder } from '../../src/util/latency.js';

const b = (s: string) => Buffer.from(s);

describe('redis replies', () => {
  it('reads bulk strings, nil and numbers', () => {
    assert.equal(text(b('héllo')), 'héllo');
    assert.equal(text(null), '');
    assert.equal(text(undefined), '');
    assert.equal(num(b('42')), 42);
    assert.equal(num(7), 7);
    assert.ok(Number.isNaN(num(b('x'))));
  });

  it('decodes metadata and a snapshot, copying attribute bytes out of the read buffer', () => {
    const meta = metaFrom('s1', [b('v'), b('3'), b('ca'), b('10'), b('p'), b('ann'), b('la'), b('20')]);
    assert.deepEqual(meta, { id: 's1', createdAt: 10, lastAccessedAt: 20, idleTimeoutMs: 0, absoluteExpiresAt: 0, principal: 'ann', version: 3 });
    const value = b('abc');
    const snap = snapshotFrom('s1', [[b('v'), b('1')], [b('x'), value]]);
    assert.equal(snap?.meta.version, 1);
    assert.equal(snap?.meta.principal, null);
    assert.deepEqual([...snap!.attributes.get('x')!], [97, 98, 99]);
    value[0] = 0;
    assert.equal(snap!.attributes.get('x')![0], 97, 'a copy, not a view');
    assert.equal(snapshotFrom('s1', false), null);
    assert.equal(snapshotFrom('s1', []), null);
  });

  it('parses untrusted JSON only when valid', () => {
    assert.deepEqual(parseUntrusted('{"a":1}', () => true), { a: 1 });
    assert.equal(parseUntrusted('{"a":1}', () => false), undefined);
    assert.equal(parseUntrusted('nope', () => true), undefined);
    assert.equal(parseUntrusted('3', () => true), undefined);
    assert.equal(parseUntrusted('null', () => true), undefined);
  });

  it('maps Redis errors to stable codes', () => {
    assert.equal(toEngineError(new Error('KILN_ERR_CONFLICT stale token'), 'a').code, 'KILN_ERR_CONFLICT');
    assert.equal(toEngineError(new Error('KILN_ERR_CONFLICT stale token'), 'a').message, 'stale token');
    assert.equal(toEngineError(new Error('READONLY You cannot write'), 'a').code, 'KILN_ERR_ENGINE_UNAVAILABLE');
    assert.equal(toEngineError(new Error('NOSCRIPT No matching script'), 'a').code, 'KILN_ERR_ENGINE_UNAVAILABLE');
    assert.equal(toEngineError(new Error('Socket closed unexpectedly'), 'a').code, 'KILN_ERR_CONNECTION_LOST');
    assert.equal(toEngineError('weird', 'a').code, 'KILN_ERR_ENGINE_UNAVAILABLE');
    const own = new KilnError('KILN_ERR_TIMEOUT', 'x');
    assert.equal(toEngineError(own, 'a'), own);
  });

  it('maps a transient Redis error raised inside a script to a retryable code, wrapped (Redis 6.2 and earlier) or not (Redis 7), and damage to STORAGE_DAMAGED', () => {
    const sha = 'f_0123456789abcdef0123456789abcdef01234567';
    const transient = [
      "READONLY You can't write against a read only replica.",
      "OOM command not allowed when used memory > 'maxmemory'.",
      'BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.',
      'LOADING Redis is loading the dataset in memory',
      "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
      'NOREPLICAS Not enough good replicas to write.',
      'CLUSTERDOWN The cluster is down',
      'TRYAGAIN Multiple keys request during rehashing of slot',
      'MISCONF Redis is configured to save RDB snapshots, but it is currently not able to persist on disk.',
    ];
    for (const plain of transient) {
      const shapes = [
        `ERR Error running script (call to ${sha}): @user_script:4: @user_script: 4: -${plain}`, // Redis 6.0/6.2
        `ERR Error running script (call to ${sha}): @user_script:4: ${plain}`,
        `${plain} script: 0123456789abcdef0123456789abcdef01234567, on @user_script:4.`, // Redis 7
        plain,
      ];
      for (const message of shapes) assert.equal(toEngineError(new Error(message), 'a').code, 'KILN_ERR_ENGINE_UNAVAILABLE', message);
    }
    for (const message of [
      `ERR Error running script (call to ${sha}): @user_script:1: Script killed by user with SCRIPT KILL...`,
      'ERR Script killed by user with SCRIPT KILL... script: 0123, on @user_script:1.',
    ]) {
      assert.equal(toEngineError(new Error(message), 'a').code, 'KILN_ERR_ENGINE_UNAVAILABLE', message);
    }
    for (const message of [
      'WRONGTYPE Operation against a key holding the wrong kind of value',
      `ERR Error running script (call to ${sha}): @user_script:4: WRONGTYPE Operation against a key holding the wrong kind of value`,
      `ERR Error running script (call to ${sha}): @user_script:9: user_script:9: attempt to compare nil with number`,
      'ERR user_script:9: attempt to compare nil with number script: 0123, on @user_script:9.',
      'ERR value is not an integer or out of range',
    ]) {
      assert.equal(toEngineError(new Error(message), 'a').code, 'KILN_ERR_STORAGE_DAMAGED', message);
    }
  });

  it('names a Redis older than 6.2 from INFO server, and nothing for 6.2 and later', () => {
    const info = (v: string) => `# Server\r\nredis_version:${v}\r\nredis_git_sha1:00000000\r\n`;
    assert.equal(redisVersionBelowMinimum(info('6.0.16')), '6.0.16');
    assert.equal(redisVersionBelowMinimum(Buffer.from(info('5.0.7'))), '5.0.7');
    for (const v of ['6.2.0', '7.0.15', '7.2.4', '10.0.0']) assert.equal(redisVersionBelowMinimum(info(v)), undefined, v);
    assert.equal(redisVersionBelowMinimum('# Server\r\n'), undefined);
  });

  it('tells refusals that waiting cannot fix from other connect errors', () => {
    assert.equal(refusalOf(new Error('WRONGPASS invalid username-password pair'), 'a')?.code, 'KILN_ERR_AUTH');
    assert.equal(refusalOf(Object.assign(new Error('x'), { code: 'SELF_SIGNED_CERT_IN_CHAIN' }), 'a')?.code, 'KILN_ERR_TLS');
    assert.equal(refusalOf(new Error('connect ECONNREFUSED'), 'a'), undefined);
  });

  it('bounds waits: withTimeout rejects with the given error, settleBy stops watching at the deadline', async () => {
    const never = new Promise<never>(() => undefined);
    await assert.rejects(withTimeout(never, 5, () => new KilnError('KILN_ERR_TIMEOUT', 'late')), /late/);
    assert.equal(await withTimeout(Promise.resolve(1), 1000, () => new KilnError('KILN_ERR_TIMEOUT', 'late')), 1);
    assert.equal(await settleBy(never, Date.now() + 5), undefined);
    assert.equal(await settleBy(Promise.resolve(2), undefined), 2);
  });

  it('counts a command as RESP on the wire', () => {
    // *1\r\n$4\r\nPING\r\n
    assert.equal(respBytes(['PING']), 14);
    assert.equal(respBytes(['GET', b('k')]), Buffer.byteLength('*2\r\n$3\r\nGET\r\n$1\r\nk\r\n'));
  });
});

describe('redis lease acquisition', () => {
  it('decodes a wait and a grant', () => {
    assert.deepEqual(decodeAcquireReply('s', [b('W'), 1234]), { kind: 'wait', recallDeadline: 1234 });
    const grant = decodeAcquireReply('s', [b('G'), 7, 1, 0, [[b('v'), b('2')], []]]);
    assert.equal(grant.kind, 'grant');
    if (grant.kind !== 'grant') return;
    assert.equal(grant.token, 7);
    assert.equal(grant.releaseAfterUse, true);
    assert.equal(grant.recallDeadline, 0);
    assert.equal(grant.snapshot?.meta.version, 2);
    const empty = decodeAcquireReply('s', [b('G'), 8, 0, 500, false]);
    assert.equal(empty.kind === 'grant' && empty.snapshot, null);
  });

  it('retries after a W just past the recall deadline, never sooner than 20 ms', () => {
    assert.equal(retryAfterRecallMs(1000, 900, 0), 120);
    assert.equal(retryAfterRecallMs(1000, 900, 1), 150);
    assert.equal(retryAfterRecallMs(1000, 5000, 0.5), 20);
    assert.equal(retryAfterTroubleMs(0), 100);
    assert.equal(retryAfterTroubleMs(1), 250);
  });

  it('fits every retry inside the latest wait', () => {
    assert.equal(retryAtMs(100, 10_000, 0), 100);
    assert.equal(retryAtMs(100, 50, 0), 45);
    assert.equal(retryAtMs(100, 0, 10), 0);
  });
});

describe('redis ownership', () => {
  it('trusts a grant until its recall deadline or its time limit, less the margin', () => {
    assert.equal(grantValidUntil(5000, 100, 15_000), 5000 - VALIDITY_MARGIN_MS);
    assert.equal(grantValidUntil(0, 100, 15_000), 15_100 - VALIDITY_MARGIN_MS);
  });

  it('reads the renew script', () => {
    assert.deepEqual(renewVerdict(0), { kind: 'lapsed' });
    assert.deepEqual(renewVerdict(1), { kind: 'renewed' });
    assert.deepEqual(renewVerdict(9000), { kind: 'recalled', deadline: 9000 });
    assert.deepEqual(renewVerdict(-1), { kind: 'unknown' });
  });

  it('revokes untrusted leases, keeps lost ones to hand back, and renews', async () => {
    const told: string[] = [];
    const o = new Ownership(15_000);
    o.setHandler({ recall: (s, t) => told.push(`recall ${s} ${t}`), revoked: (s, t, why) => told.push(`revoked ${s} ${t} ${why}`), lost: (why) => told.push(`lost ${why}`) });
    o.granted('a', 1, 1000, 0);
    o.granted('b', 2, 0, 0);
    o.checkValidity(1000 - VALIDITY_MARGIN_MS);
    assert.deepEqual(told, ['revoked a 1 lease-expired']);
    assert.equal(o.tokenOf('a'), undefined);
    o.recalled('b', 2, 5000);
    assert.equal(o.validUntil('b'), 5000 - VALIDITY_MARGIN_MS);
    o.recalled('b', 99, 100);
    assert.equal(o.validUntil('b'), 5000 - VALIDITY_MARGIN_MS, 'another token does not shorten it');
    o.granted('c', 3, 0, 0);
    await o.renewAll(async (s) => (s === 'b' ? 0 : 1));
    assert.equal(o.tokenOf('b'), undefined);
    assert.ok(o.validUntil('c')! > Date.now());
    o.loseAll('gone');
    assert.equal(o.size, 0);
    assert.deepEqual(o.takeToRelease(), [['c', 3]]);
    assert.deepEqual(o.takeToRelease(), []);
    assert.equal(told.at(-1), 'lost gone');
  });
});

describe('redis owner messages', () => {
  const view = (held: Record<string, number>, waiting: string[] = [], acquiring: string[] = []): OwnerView => ({
    heldToken: (s) => held[s],
    isWaiting: (s) => waiting.includes(s),
    isAcquiring: (s) => acquiring.includes(s),
  });

  it('parses only well-formed messages', () => {
    assert.deepEqual(parseOwnerMessage('{"k":"r","s":"x","t":3,"d":9}'), { k: 'r', s: 'x', t: 3, d: 9 });
    assert.equal(parseOwnerMessage('{"k":"r","s":"x","t":"3"}'), undefined);
    assert.equal(parseOwnerMessage('{"k":"r","t":3}'), undefined);
    assert.equal(parseOwnerMessage('garbage'), undefined);
  });

  it('takes a hand-over it waits for and gives back one it does not', () => {
    assert.deepEqual(ownerMessageAction({ k: 'g', s: 'x', t: 4 }, view({}, ['x'])), { kind: 'take-grant' });
    assert.deepEqual(ownerMessageAction({ k: 'g', s: 'x', t: 4 }, view({})), { kind: 'give-back', token: 4 });
  });

  it('passes on a recall of what it holds or wants, gives back what it neither holds nor wants', () => {
    assert.deepEqual(ownerMessageAction({ k: 'r', s: 'x', t: 4, d: 99 }, view({ x: 4 })), { kind: 'recall', token: 4, deadline: 99 });
    assert.deepEqual(ownerMessageAction({ k: 'r', s: 'x', t: 4 }, view({ x: 4 })), { kind: 'recall', token: 4 });
    assert.deepEqual(ownerMessageAction({ k: 'r', s: 'x', t: 5, d: 99 }, view({}, [], ['x'])), { kind: 'recall', token: 5 });
    assert.deepEqual(ownerMessageAction({ k: 'r', s: 'x', t: 5 }, view({})), { kind: 'give-back', token: 5 });
    assert.deepEqual(ownerMessageAction({ k: 'r', s: 'x', t: 5 }, view({ x: 6 })), { kind: 'ignore' }, 'a newer lease of ours is not given back');
  });

  it('revokes, with a reason', () => {
    assert.deepEqual(ownerMessageAction({ k: 'v', s: 'x', t: 4, why: 'destroyed' }, view({})), { kind: 'revoke', token: 4, reason: 'destroyed' });
    assert.deepEqual(ownerMessageAction({ k: 'v', s: 'x', t: 4 }, view({})), { kind: 'revoke', token: 4, reason: 'revoked' });
    assert.deepEqual(ownerMessageAction({ k: 'z' as 'v', s: 'x', t: 4 }, view({})), { kind: 'ignore' });
  });

  it('shows messages to the console', () => {
    assert.deepEqual(leaseMessageFrom({ k: 'g', s: 'x', t: 1 }, 'B', 5), { type: 'handover', sessionId: 'x', owner: 'B', token: 1, at: 5 });
    assert.deepEqual(leaseMessageFrom({ k: 'v', s: 'x', t: 1, why: 'w' }, 'A', 5), { type: 'revoke', sessionId: 'x', owner: 'A', token: 1, at: 5, reason: 'w' });
    assert.equal(leaseMessageFrom({ k: 'q' as 'r', s: 'x', t: 1 }, 'A', 5), undefined);
  });
});

describe('redis heartbeat, sweep, counters', () => {
  it('counts the replicas a master has online from ROLE', () => {
    assert.deepEqual(roleView([b('master'), 100, [[b('h'), b('1'), b('90')], [b('h'), b('2'), b('100')]]]), { masterOffset: 100, replicaOffsets: [90, 100] });
    assert.deepEqual(roleView([b('master'), 7, []]), { masterOffset: 7, replicaOffsets: [] });
    assert.equal(roleView([b('slave'), b('h'), 1]), undefined);
    // Garbage from the wire: a master offset that is no number says nothing; a replica's counts as acknowledging nothing.
    assert.equal(roleView([b('master'), b('x'), [[b('h'), b('1'), b('90')]]]), undefined);
    assert.deepEqual(roleView([b('master'), 100, [[b('h'), b('1'), b('zz')], b('odd')]]), { masterOffset: 100, replicaOffsets: [-1, -1] });
  });

  it('renews at a third of the lease time, give or take half a beat', () => {
    assert.equal(renewDue(4500, 0, 15_000, 1000), true);
    assert.equal(renewDue(4499, 0, 15_000, 1000), false);
  });

  it('reads the expire script and how long a sweeper turn lasts', () => {
    assert.deepEqual(expireVerdict([2, 777]), { kind: 'refile', deadline: 777 });
    assert.deepEqual(expireVerdict([1, b('ann'), 30]), { kind: 'expired', principal: 'ann', bytes: 30 });
    assert.deepEqual(expireVerdict([1, null, 30]), { kind: 'expired', principal: null, bytes: 30 });
    assert.deepEqual(expireVerdict([0]), { kind: 'gone' });
    assert.equal(sweepTurnMs(10), 1000);
    assert.equal(sweepTurnMs(1000), 3000);
  });

  it('adds script stats and puts counts back when a flush fails', async () => {
    const c = new Counters();
    c.addScriptStats([1, 2, 3, 4, 5]);
    c.count('commits');
    c.count('commits', 0);
    assert.deepEqual(Object.fromEntries(c.pending()), { leaseGrants: 1, leaseRecalls: 2, leaseHandovers: 3, pingPongGrants: 4, leaseRevocations: 5, commits: 1 });
    await assert.rejects(c.flush(async () => { throw new Error('down'); }), /down/);
    assert.equal(c.pending().get('commits'), 1);
    const added: string[] = [];
    await c.flush(async (name, by) => added.push(`${name}+${by}`));
    assert.equal(added.length, 6);
    assert.equal(c.pending().size, 0);
    const { counters, sessionBytes } = countersFrom([b('commits'), b('4'), b('sessionBytes'), b('99')]);
    assert.equal(counters['commits'], 4);
    assert.equal(sessionBytes, 99);
    assert.equal(counters['sessionBytes'], undefined);
    assert.deepEqual(Object.keys(counters).sort(), COUNTER_NAMES.filter((n) => n !== 'sessionBytes').sort());
  });
});

describe('redis session data', () => {
  it('builds commit arguments and refuses a bad attribute name before sending', () => {
    const args = commitArgs({ sessionId: 's', token: 3, commitId: 'c1', baseVersion: 2, lastAccessedAt: 50, set: [['a', new Uint8Array([1, 2])]], del: ['d'], principal: null }, DEFAULT_SESSION_LIMITS, 600);
    assert.deepEqual(args.slice(0, 9), ['3', 'c1', '2', '50', 'n', '', '', '', '0']);
    assert.equal(args[12], '600');
    assert.equal(args[13], '1');
    assert.deepEqual(args.slice(14), ['a', Buffer.from([1, 2]), '1', '1', 'd', '1', '0']);
    assert.throws(() => commitArgs({ sessionId: 's', token: 3, commitId: 'c', baseVersion: 0, lastAccessedAt: 0, set: [['', new Uint8Array()]], del: [] }, DEFAULT_SESSION_LIMITS, 0), KilnError);
  });

  it('decodes the commit reply', () => {
    assert.deepEqual(decodeCommitReply([b('D'), 5, 1700, b('bob'), b('ann'), []]), { duplicate: true, version: 5, expiresAt: 1700, principal: 'bob', replacedPrincipal: 'ann' });
    assert.deepEqual(decodeCommitReply([b('D'), 5, null, null, null, []]), { duplicate: true, version: 5, expiresAt: undefined, principal: null, replacedPrincipal: null }, 'gone since');
    assert.deepEqual(decodeCommitReply([b('A'), 6, b('ann'), 1, null, 40]), { duplicate: false, version: 6, oldPrincipal: 'ann', created: true, expiresAt: undefined, bytes: 40 });
    assert.deepEqual(decodeCommitReply([b('A'), 6, null, 0, -1, 0]), { duplicate: false, version: 6, oldPrincipal: null, created: false, expiresAt: -1, bytes: 0 });
  });

  it('reads session events and drops what does not parse', () => {
    assert.deepEqual(parseSessionEvent('{"type":"expired","sessionId":"x","principal":"p","at":3}'), { type: 'expired', sessionId: 'x', principal: 'p', at: 3 });
    assert.deepEqual(parseSessionEvent('{"type":"other","sessionId":"x","at":3,"reason":"r"}'), { type: 'destroyed', sessionId: 'x', principal: null, at: 3, reason: 'r' });
    assert.equal(parseSessionEvent('nope'), undefined);
    assert.equal(parseSessionEvent('null'), undefined);
  });
});

describe('redis console reports', () => {
  const report = (ownerId: string, heartbeatMs = 1000) => {
    const l = new LatencyRecorder().snapshot();
    return { ownerId, name: ownerId, host: 'h', pid: 1, app: 'a', connectedAt: 1, reportedAt: 2, heartbeatMs, requests: 0, leases: 0, leaseWaiters: 0, errors: { X: 1 }, latency: { commit: l, acquire: l }, recent: { commit: { count: 0, p50Ms: 0 }, acquire: { count: 0, p50Ms: 0 } }, stats: {} };
  };

  it('checks a stored report field by field', () => {
    assert.equal(parseReport(JSON.stringify(report('a')))?.ownerId, 'a');
    assert.equal(parseReport(JSON.stringify({ ...report('a'), pid: -1 })), undefined);
    assert.equal(parseReport(JSON.stringify({ ...report('a'), errors: { X: 'many' } })), undefined);
    assert.equal(parseReport('{'), undefined);
  });

  it('shows live processes by name and removes the silent, the unreadable and the oversized', () => {
    const now = 100_000;
    const hash = [b('b'), b(JSON.stringify(report('b'))), b('a'), b(JSON.stringify(report('a'))), b('old'), b(JSON.stringify(report('old'))), b('bad'), b('{'), b('huge'), Buffer.alloc(MAX_REPORT_BYTES + 1, 32)];
    const owners = [b('a'), b(String(now - 100)), b('b'), b(String(now - 2000)), b('old'), b(String(now - 61_000)), b('huge'), b(String(now))];
    const { live, gone } = sortReports(hash, owners, now);
    assert.deepEqual(live.map((r) => r.ownerId), ['a', 'b']);
    assert.deepEqual(gone.sort(), ['bad', 'huge', 'old']);
  });
});

describe('redis engine options', () => {
  it('applies defaults and refuses what would be ignored', () => {
    const s = readRedisEngineOptions({ url: 'redis://127.0.0.1:6379' });
    assert.equal(s.replicaPolicy, 'strict');
    assert.equal(s.replicaGraceMs, 60_000);
    assert.equal(s.keyPrefix, 'kiln:');
    assert.equal(s.leaseTimeMs, 15_000);
    assert.throws(() => readRedisEngineOptions({}), /give "url" or "topology"/);
    assert.throws(() => readRedisEngineOptions({ url: 'redis://127.0.0.1', sentinelTls: true }), /needs a Sentinel topology/);
    assert.throws(() => readRedisEngineOptions({ url: 'redis://127.0.0.1', replicas: 17 }), /replicas/);
    // A WAIT holds the connection lease renewals take: one longer than a third of the lease time could let leases lapse.
    assert.throws(() => readRedisEngineOptions({ url: 'redis://127.0.0.1?replicas=1', replicaTimeoutMs: 5001 }), (err: unknown) => isKilnError(err, 'KILN_ERR_INVALID_OPTION') && /"replicaTimeoutMs" \(5001 ms\) must be at most a third of "leaseTimeMs" \(15000 ms\)/.test(err.message));
    assert.equal(readRedisEngineOptions({ url: 'redis://127.0.0.1?replicas=1', replicaTimeoutMs: 5000 }).replicaTimeoutMs, 5000);
    assert.equal(readRedisEngineOptions({ url: 'redis://127.0.0.1', replicaTimeoutMs: 60_000 }).replicaTimeoutMs, 60_000, 'no replicas: no WAIT to hold anything');
  });

  it('checks the session limits, as the kiln server and the memory tier do: names, whole numbers, ranges', () => {
    assert.equal(readRedisEngineOptions({ url: 'redis://127.0.0.1', limits: { maxSessionBytes: 65_536 } }).limits.maxSessionBytes, 65_536);
    assert.equal(readRedisEngineOptions({ url: 'redis://127.0.0.1' }).limits.maxAttributes, 1000);
    const refused = (limits: unknown, pattern: RegExp) => {
      assert.throws(() => readRedisEngineOptions({ url: 'redis://127.0.0.1', limits } as never), (err: unknown) => isKilnError(err) && err.code === 'KILN_ERR_INVALID_OPTION' && pattern.test(err.message));
      assert.throws(() => createMemoryTier({ limits } as never), (err: unknown) => isKilnError(err) && err.code === 'KILN_ERR_INVALID_OPTION' && pattern.test(err.message));
      assert.throws(() => new KilnServer({ insecureNoAuth: true, limits } as never), (err: unknown) => isKilnError(err) && err.code === 'KILN_ERR_INVALID_OPTION' && pattern.test(err.message));
    };
    refused({ maxSessionBytes: 0 }, /limits: option "maxSessionBytes" must be an integer from 1/);
    refused({ maxAttributes: '10' }, /"maxAttributes" must be an integer/);
    refused({ maxAtributes: 10 }, /unknown option "maxAtributes"/);
    refused('big', /limits options must be an object/);
  });
});

describe('redis scripts sent a pool at a time', () => {
  it('settlePooled keeps at most `limit` in flight and answers every outcome in order', async () => {
    let inFlight = 0;
    let most = 0;
    const outcomes = await settlePooled(Array.from({ length: 1000 }, (_, i) => i), 256, async (i) => {
      most = Math.max(most, ++inFlight);
      await new Promise((resolve) => setImmediate(resolve));
      inFlight--;
      if (i === 500) throw new Error('one fails');
      return i * 2;
    });
    assert.equal(most, 256);
    assert.equal(outcomes.length, 1000);
    assert.deepEqual(outcomes[3], { status: 'fulfilled', value: 6 });
    assert.equal(outcomes[500]!.status, 'rejected');
    assert.deepEqual(outcomes[999], { status: 'fulfilled', value: 1998 });
  });

  it('settlePooled starts the next call as one ends: a slow call holds up no other (lockstep slices waited for it)', async () => {
    const ended: number[] = [];
    let slowEnded = false;
    const started = Date.now();
    await settlePooled(Array.from({ length: 40 }, (_, i) => i), 4, async (i) => {
      await sleep(i === 0 ? 300 : 10);
      if (i === 0) slowEnded = true;
      else if (!slowEnded) ended.push(i);
    });
    assert.equal(ended.length, 39, 'every other call ended while the slow one ran');
    assert.ok(Date.now() - started < 600, `${Date.now() - started} ms`);
  });

  it('settlePooled starts nothing past its deadline and answers by it, whatever is under way', async () => {
    const started = Date.now();
    let calls = 0;
    const outcomes = await settlePooled(Array.from({ length: 100 }, (_, i) => i), 2, async (i) => {
      calls++;
      if (i < 2) return new Promise<never>(() => undefined); // never answers
      return i;
    }, started + 200);
    const took = Date.now() - started;
    assert.ok(took >= 190 && took < 400, `answered after ${took} ms`);
    assert.equal(calls, 2, 'none started while both slots hung, none after the deadline');
    assert.ok(outcomes.every((o) => o === undefined));
    const quick = await settlePooled(Array.from({ length: 1000 }, (_, i) => i), 4, async (i) => {
      await sleep(20);
      return i;
    }, Date.now() + 100);
    const done = quick.filter((o) => o !== undefined).length;
    assert.ok(done > 0 && done < 1000, `${done} of 1000 done by the deadline; the rest skipped`);
  });

  it('renewAll returns by its deadline with renewals hung, and the next round asks the leases not reached first', async () => {
    const ownership = new Ownership(15_000);
    for (let i = 0; i < 600; i++) ownership.granted(`s${i}`, i + 1, 0, Date.now());
    const asked: string[] = [];
    const started = Date.now();
    await ownership.renewAll(async (sessionId) => {
      asked.push(sessionId);
      return new Promise<number>(() => undefined); // a shard down: no answer
    }, started + 200);
    assert.ok(Date.now() - started < 400, 'the heartbeat is held no longer than the deadline');
    assert.equal(asked.length, RENEW_SLICE, 'a pool in flight, none started after');
    const next: string[] = [];
    await ownership.renewAll(async (sessionId) => {
      next.push(sessionId);
      return 1;
    }, Date.now() + 1000);
    assert.equal(next.length, 600 - RENEW_SLICE, 'the renewals still under way are not sent again');
    assert.ok(!next.some((id) => asked.includes(id)));
  });

  it('renewAll asks the leases whose trust runs out soonest first (a round cut short skips those that can wait)', async () => {
    const ownership = new Ownership(15_000);
    const now = Date.now();
    for (let i = 0; i < 4; i++) ownership.granted(`new${i}`, i + 1, 0, now);
    for (let i = 0; i < 4; i++) ownership.granted(`old${i}`, i + 11, 0, now - 10_000);
    const asked: string[] = [];
    await ownership.renewAll(async (sessionId) => {
      asked.push(sessionId);
      return 1;
    });
    assert.deepEqual(asked.slice(0, 4).sort(), ['old0', 'old1', 'old2', 'old3'], asked.join(', '));
  });

  it('renews 2,000 held leases with at most a slice of renewals in flight', async () => {
    const ownership = new Ownership(15_000);
    for (let i = 0; i < 2000; i++) ownership.granted(`s${i}`, i + 1, 0, Date.now());
    let inFlight = 0;
    let most = 0;
    let renewed = 0;
    await ownership.renewAll(async () => {
      most = Math.max(most, ++inFlight);
      await new Promise((resolve) => setImmediate(resolve));
      inFlight--;
      renewed++;
      return 1;
    });
    assert.equal(renewed, 2000);
    assert.equal(most, RENEW_SLICE);
  });
});
