import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { KilnError } from '../../src/errors/index.js';
import { encodeFrame, FrameParser, HEADER_BYTES, LENGTH_BYTES, type Frame } from '../../src/protocol/frame.js';

function feedAll(parser: FrameParser, chunks: Uint8Array[]): { frames: Frame[]; error?: KilnError } {
  const frames: Frame[] = [];
  for (const chunk of chunks) {
    const result = parser.push(chunk);
    frames.push(...result.frames);
    if (result.error) return { frames, error: result.error };
  }
  return { frames };
}

function plain(frames: Frame[]): { version: number; type: number; requestId: number; body: number[] }[] {
  return frames.map((f) => ({ version: f.version, type: f.type, requestId: f.requestId, body: [...f.body] }));
}

const sample = [
  encodeFrame(1, 1, new Uint8Array([1, 2, 3])),
  encodeFrame(5, 0xfffffffe, new Uint8Array(0)),
  encodeFrame(66, 7, new Uint8Array(300).fill(9)),
];
const stream = Buffer.concat(sample);

describe('frame parser', () => {
  it('reads frames fed as one chunk and byte by byte identically', () => {
    const whole = feedAll(new FrameParser(), [stream]);
    const bytes = feedAll(new FrameParser(), [...stream].map((b) => Uint8Array.of(b)));
    assert.equal(whole.frames.length, 3);
    assert.deepEqual(plain(bytes.frames), plain(whole.frames));
    assert.deepEqual(plain(whole.frames)[0], { version: 1, type: 1, requestId: 1, body: [1, 2, 3] });
    assert.equal(whole.frames[1]!.requestId, 0xfffffffe);
  });

  it('reads the same frames whatever the split point', () => {
    const expected = plain(feedAll(new FrameParser(), [stream]).frames);
    for (let cut = 0; cut <= stream.length; cut++) {
      const got = feedAll(new FrameParser(), [stream.subarray(0, cut), stream.subarray(cut)]);
      assert.deepEqual(plain(got.frames), expected, `split at ${cut}`);
    }
  });

  it('refuses a frame above the limit before reading its body', () => {
    const parser = new FrameParser(1024);
    const header = Buffer.alloc(LENGTH_BYTES);
    header.writeUInt32BE(2_000_000_000);
    const result = parser.push(header);
    assert.equal(result.error?.code, 'KILN_ERR_FRAME_TOO_LARGE');
    assert.equal(parser.pendingBytes, 0);
    assert.equal(parser.push(Buffer.alloc(10)).error?.code, 'KILN_ERR_FRAME_TOO_LARGE', 'stays failed');
  });

  it('refuses a length shorter than the header', () => {
    const bad = Buffer.alloc(LENGTH_BYTES + 2);
    bad.writeUInt32BE(HEADER_BYTES - 1);
    assert.equal(new FrameParser().push(bad).error?.code, 'KILN_ERR_PROTOCOL');
  });

  it('fuzz: arbitrary bytes in arbitrary chunks never throw and never buffer beyond one frame', () => {
    const max = 4096;
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 600 }), { maxLength: 30 }), (chunks) => {
        const parser = new FrameParser(max);
        for (const chunk of chunks) {
          const result = parser.push(chunk);
          assert.ok(parser.pendingBytes <= LENGTH_BYTES + max, 'never holds more than one frame');
          for (const frame of result.frames) assert.ok(frame.body.length <= max - HEADER_BYTES);
          if (result.error) {
            assert.ok(result.error instanceof KilnError);
            break;
          }
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('fuzz: any sequence of valid frames, chunked anyhow, comes out unchanged', () => {
    const frameArb = fc.record({ type: fc.integer({ min: 0, max: 255 }), requestId: fc.integer({ min: 0, max: 0xffffffff }), body: fc.uint8Array({ maxLength: 200 }) });
    fc.assert(
      fc.property(fc.array(frameArb, { maxLength: 20 }), fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 20 }), (frames, sizes) => {
        const bytes = Buffer.concat(frames.map((f) => encodeFrame(f.type, f.requestId, f.body)));
        const chunks: Uint8Array[] = [];
        for (let at = 0, i = 0; at < bytes.length; i++) {
          const n = sizes[i % sizes.length]!;
          chunks.push(bytes.subarray(at, at + n));
          at += n;
        }
        const got = feedAll(new FrameParser(), chunks);
        assert.equal(got.error, undefined);
        assert.deepEqual(plain(got.frames), frames.map((f) => ({ version: 1, type: f.type, requestId: f.requestId, body: [...f.body] })));
      }),
      { numRuns: 500 },
    );
  });
});
