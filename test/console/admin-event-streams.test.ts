import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { encodeFrame } from '../../src/protocol/frame.js';
import { encodeBody, MessageType } from '../../src/protocol/messages.js';
import { generateSessionId } from '../../src/session/id.js';
import { RawClient } from '../helpers/raw-client.js';
import { removeDir, startKilnServer, tempDir, waitFor, type ServerProcess } from '../helpers/processes.js';
import { rssMiB } from '../security/server-fixtures.js';
import { ADMIN_TOKEN } from './admin-api-suite.js';

/**
 * The admin port's event streams hold memory of this process for each reader: a reader
 * that stops reading must not make it queue every event from then on, nor keep one of
 * the 64 slots.
 */

/** An event stream on a raw socket: opened, its hello read, then never read again. */
function openStream(url: string, token: string): Promise<{ socket: Socket; head(): string }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect({ host: hostname, port: Number(port) });
    let head = '';
    socket.once('error', reject);
    socket.on('data', (d: Buffer) => {
      head += d.toString('latin1');
      if (head.includes('event: hello')) {
        socket.pause();
        socket.removeAllListeners('data');
        resolve({ socket, head: () => head });
      }
    });
    socket.write(`GET /api/events HTTP/1.1\r\nHost: ${hostname}\r\nAuthorization: Bearer ${token}\r\n\r\n`);
  });
}

/** An event stream on a raw socket that reads everything as it comes, counting error events and pings. */
function openReader(url: string, token: string): Promise<{ socket: Socket; errors(): number; pings(): number }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect({ host: hostname, port: Number(port) });
    let errors = 0;
    let pings = 0;
    let tail = '';
    socket.once('error', reject);
    socket.on('data', (d: Buffer) => {
      // Events may be split across chunks: count in what is whole, keep the rest.
      const text = tail + d.toString('latin1');
      const end = text.lastIndexOf('\n\n');
      const whole = end < 0 ? '' : text.slice(0, end + 2);
      tail = end < 0 ? text : text.slice(end + 2);
      errors += whole.split('\nevent: error\n').length - 1;
      pings += whole.split(': ping\n\n').length - 1;
      if (whole.includes('event: hello')) resolve({ socket, errors: () => errors, pings: () => pings });
    });
    socket.write(`GET /api/events HTTP/1.1\r\nHost: ${hostname}\r\nAuthorization: Bearer ${token}\r\n\r\n`);
  });
}

async function metric(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).text();
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
}

/**
 * Failed requests, each an `error` event on every stream (~100 bytes), `count` of them
 * in pipelined batches; after each batch, waits for `reader` to have read every event so
 * far (this process reads it, and must not fall behind itself).
 */
async function errorEvents(raw: RawClient, from: number, count: number, reader: { errors(): number }): Promise<number> {
  const id = generateSessionId();
  const body = encodeBody({ id, token: 1 });
  let next = from;
  for (let sent = 0; sent < count; ) {
    const n = Math.min(2000, count - sent);
    raw.write(Buffer.concat(Array.from({ length: n }, (_, i) => encodeFrame(MessageType.Load, next + i, body))));
    next += n;
    sent += n;
    await raw.reply(next - 1, 30_000);
    raw.frames.length = 0;
    await waitFor(() => reader.errors() >= next - 2, 10_000, `the reading stream to catch up (${reader.errors()} of ${next - 2})`);
  }
  return next;
}

describe('admin event streams: readers that stop reading, and idle ones', () => {
  let server: ServerProcess;
  let dir: string;
  let adminUrl: string;
  /** A reader that reads everything, opened first: it is never cut, and it sees the pings of an idle tier. */
  let reader: Awaited<ReturnType<typeof openReader>>;
  let readerOpenedAt: number;
  before(async () => {
    dir = tempDir();
    writeFileSync(join(dir, 'admin.token'), ADMIN_TOKEN);
    server = await startKilnServer({ args: ['--admin-port', '0', '--admin-token-file', join(dir, 'admin.token')] });
    adminUrl = await waitFor(() => /kiln admin on (http:\/\/\S+?) /.exec(server.output())?.[1], 5000, 'admin line');
    reader = await openReader(adminUrl, ADMIN_TOKEN);
    readerOpenedAt = Date.now();
  });
  after(async () => {
    reader?.socket.destroy();
    await server.kill();
    removeDir(dir);
  });

  it('a stream whose reader stops is cut once 1 MiB behind, its slot freed; the server does not keep what it did not read', async () => {
    const stalled = await Promise.all(Array.from({ length: 8 }, () => openStream(adminUrl, ADMIN_TOKEN)));
    assert.equal(await metric(adminUrl, 'kiln_admin_event_streams'), 9, 'eight stalled readers and one that reads');
    const raw = await RawClient.open(server.port);
    try {
      raw.hello(server.token);
      await raw.reply(1);
      const rssBefore = rssMiB(server.pid);
      // ~100 bytes an event on each stream; the sockets' kernel buffers take a few MiB first.
      let next = 2;
      while ((await metric(adminUrl, 'kiln_admin_event_streams')) > 1 && next < 150_000) next = await errorEvents(raw, next, 10_000, reader);
      const events = next - 2;
      assert.equal(await metric(adminUrl, 'kiln_admin_event_streams'), 1, `the stalled streams cut after ${events} events; the reading one kept`);
      assert.equal(await metric(adminUrl, 'kiln_admin_event_streams_cut_total'), 8);
      const rssAtCut = rssMiB(server.pid);
      // More events, with nobody stalled: memory stays where it was.
      next = await errorEvents(raw, next, 40_000, reader);
      const rssAfter = rssMiB(server.pid);
      console.log(`# ${events} events to cut 8 stalled streams; server RSS ${rssBefore.toFixed(0)} → ${rssAtCut.toFixed(0)} → ${rssAfter.toFixed(0)} MiB after ${next - 2 - events} more`);
      assert.ok(rssAfter - rssAtCut < 40, `RSS ${rssAtCut.toFixed(0)} → ${rssAfter.toFixed(0)} MiB`);
      assert.ok(rssAfter - rssBefore < 120, `RSS ${rssBefore.toFixed(0)} → ${rssAfter.toFixed(0)} MiB`);
      assert.equal(reader.errors(), next - 2, 'the reader that reads has every event');
      // A freed slot takes a new stream.
      const again = await openStream(adminUrl, ADMIN_TOKEN);
      assert.match(again.head(), /^HTTP\/1\.1 200/);
      assert.equal(await metric(adminUrl, 'kiln_admin_event_streams'), 2);
      again.socket.destroy();
      for (const s of stalled) s.socket.destroy();
    } finally {
      raw.destroy();
    }
  });

  it('an idle tier still writes to every stream: a comment line every 20 s', async () => {
    await waitFor(() => reader.pings() > 0, Math.max(1000, readerOpenedAt + 25_000 - Date.now()), 'a ping on the stream');
    // (Not timed from below: the pinger's 20 s run from the server's start, not the stream's.)
  });
});
