import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { allocatedBytes, callerTimes, concernOf, groupOf, selfTimes, summarizeGcTrace, type HeapNode, type Profile } from '../../bench/profile-analysis.js';

// What bench/profile.ts reads out of profiled apps. Its figures are quoted in
// docs/benchmarks.md, so a wrong weight or a misread trace line would be a wrong figure there.

const frame = (functionName: string, url: string, lineNumber = 0) => ({ functionName, url, lineNumber });

describe('bench profile analysis: CPU profiles', () => {
  const profile = (timeDeltas: number[]): Profile => ({
    nodes: [
      { id: 1, callFrame: frame('(root)', '') },
      { id: 2, callFrame: frame('commit', 'file:///app/dist/src/client/commit-pipeline.js', 41) },
      { id: 3, callFrame: frame('(garbage collector)', '') },
    ],
    samples: [2, 2, 3, 2],
    timeDeltas,
  });

  it('charges each sample the time since the one before it, and sums profiles', () => {
    const times = selfTimes([profile([100, 200, 300, 400]), profile([10, 10, 10, 10])]);
    assert.deepEqual(times.get('commit dist/src/client/commit-pipeline.js:42'), { micros: 100 + 200 + 400 + 30, group: 'kiln' });
    assert.deepEqual(times.get('(garbage collector) :1'), { micros: 300 + 10, group: 'gc' });
  });

  it('by samples, weighs every sample of a profile at its median interval (apps sharing a core)', () => {
    // A 5 ms gap (the app descheduled) would land on the collector's sample; counted by samples it weighs 200 µs.
    const times = selfTimes([profile([200, 200, 5000, 200])], true);
    assert.equal(times.get('commit dist/src/client/commit-pipeline.js:42')!.micros, 600);
    assert.equal(times.get('(garbage collector) :1')!.micros, 200);
  });

  it('puts the self time of a function on the chain of its callers', () => {
    const tree: Profile = {
      nodes: [
        { id: 1, callFrame: frame('(root)', ''), children: [2, 4] },
        { id: 2, callFrame: frame('commit', 'file:///app/dist/src/client/commit-pipeline.js', 41), children: [3] },
        { id: 3, callFrame: frame('writev', '') },
        { id: 4, callFrame: frame('end', 'node:_http_outgoing', 9), children: [5] },
        { id: 5, callFrame: frame('writev', '') },
      ],
      samples: [3, 5, 3, 2],
      timeDeltas: [10, 20, 30, 40],
    };
    const times = callerTimes([tree], 'writev', 1);
    assert.deepEqual([...times], [
      ['writev :1 < commit dist/src/client/commit-pipeline.js:42', 40],
      ['writev :1 < end node:_http_outgoing:10', 20],
    ]);
    // The chain stops at the root however deep it is asked to go.
    assert.deepEqual([...callerTimes([tree], 'writev', 9).keys()][0], 'writev :1 < commit dist/src/client/commit-pipeline.js:42 < (root) :1');
  });

  it('groups frames as Kiln, framework, packages, Node and the collector', () => {
    assert.equal(groupOf('file:///x/dist/src/adapters/core/http.js', 'end'), 'kiln');
    assert.equal(groupOf('file:///x/node_modules/express/lib/response.js', 'json'), 'framework');
    assert.equal(groupOf('file:///x/node_modules/router/index.js', 'next'), 'framework');
    assert.equal(groupOf('file:///x/node_modules/msgpackr/pack.js', 'pack'), 'packages');
    assert.equal(groupOf('node:_http_server', 'writeHead'), 'node');
    assert.equal(groupOf('', '(program)'), 'node');
    assert.equal(groupOf('', '(garbage collector)'), 'gc');
    assert.equal(groupOf('', '(idle)'), 'idle');
  });

  it('names the concern of a Kiln function for the per-request budget', () => {
    assert.equal(concernOf('sessionIdFrom dist/src/adapters/core/cookies.js:10'), 'cookie');
    assert.equal(concernOf('get dist/src/client/near-cache.js:40'), 'lookup and lease');
    assert.equal(concernOf('get dist/src/session/live-value.js:156'), 'session object');
    assert.equal(concernOf('encodeChanges dist/src/session/delta.js:145'), 'delta and encoding');
    assert.equal(concernOf('commit dist/src/client/commit-pipeline.js:42'), 'commit and wire');
    assert.equal(concernOf('middleware dist/src/adapters/express/index.js:21'), 'adapter glue');
  });
});

describe('bench profile analysis: heap profiles', () => {
  it('sums self bytes per function over every node of every profile, children included', () => {
    const node = (name: string, selfSize: number, children: HeapNode[] = []): HeapNode => ({ callFrame: frame(name, 'file:///x/dist/src/session/delta.js', 244), selfSize, children });
    const bytes = allocatedBytes([node('(root)', 0, [node('applyDelta', 300, [node('applyDelta', 100)])]), node('applyDelta', 24)]);
    assert.deepEqual(bytes.get('applyDelta dist/src/session/delta.js:245'), { bytes: 424, group: 'kiln' });
    assert.equal(bytes.has('(root) dist/src/session/delta.js:245'), false, 'nodes that allocated nothing are left out');
  });
});

describe('bench profile analysis: --trace-gc-nvp', () => {
  // Lines as V8 11 (Node 20) prints them, cut short: a scavenge, a mark-compact, and
  // what else an app prints on stdout.
  const scavenge = (pause: number, promoted: number, survived: number) =>
    `[15259:0x2bfd3c10]     2108 ms: pause=${pause} mutator=98.4 gc=s reduce_memory=0 time_to_safepoint=0.00 scavenge=7.68 scavenge.parallel=7.33 allocated=12628776 promoted=${promoted} new_space_survived=${survived} nodes_promoted=0 promotion_ratio=19.9% unmapper_chunks=0`;
  const markCompact = '[15965:0x3cc0ecd0]     1930 ms: pause=8.3 mutator=15.9 gc=mc reduce_memory=0 mark.finish_incremental=0.0 incremental=0.5 incremental.finalize=0.0 incremental_steps_count=8 total_size_before=13144544';

  it('sums scavenges and full collections apart, skipping every other line', () => {
    const text = ['listening on 43121', scavenge(7.8, 2948280, 4736688), '{"cpuMs":12}', scavenge(21, 4732448, 3648888), markCompact, ''].join('\n');
    const gc = summarizeGcTrace(text);
    assert.equal(gc.scavenges, 2);
    assert.ok(Math.abs(gc.scavengeMs - 28.8) < 1e-9);
    assert.equal(gc.promotedBytes, 2948280 + 4732448);
    assert.equal(gc.survivedBytes, 4736688 + 3648888);
    assert.equal(gc.majors, 1);
    assert.ok(Math.abs(gc.majorMs - 8.8) < 1e-9, 'the pause and the incremental marking before it');
  });

  it('reads a scavenge that lacks a field as zero, and no line as nothing done', () => {
    assert.deepEqual(summarizeGcTrace('[1:0x1] 5 ms: pause=1.5 gc=s'), { scavenges: 1, scavengeMs: 1.5, promotedBytes: 0, survivedBytes: 0, majors: 0, majorMs: 0 });
    assert.deepEqual(summarizeGcTrace(''), { scavenges: 0, scavengeMs: 0, promotedBytes: 0, survivedBytes: 0, majors: 0, majorMs: 0 });
  });
});
