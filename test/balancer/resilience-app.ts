/**
 * The app server of the balancer resilience test, a real process (so it can be
 * SIGKILLed): /ok answers at once, /sleep?ms=N after N ms, POST /echo reads its body,
 * /hang never answers, /big?bytes=N streams N bytes, /early answers 401 without reading
 * the body, /stop-listening closes the listening socket (new connections refused, open
 * ones kept, as in a graceful shutdown); /stats says what the process saw (requests per
 * path, requests still in progress, open connections) so the test can tell a pinned
 * upstream socket or a re-sent request.
 */
import { createServer, type ServerResponse } from 'node:http';

const name = process.env['NODE_NAME'] ?? 'app';
const hits: Record<string, number> = {};
let inProgress = 0;

const server = createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://app');
  if (url.pathname === '/stats') {
    server.getConnections((_err, connections) => {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ name, hits, inProgress, connections }));
    });
    return;
  }
  hits[url.pathname] = (hits[url.pathname] ?? 0) + 1;
  inProgress++;
  let done = false;
  const finish = (): void => {
    if (!done) {
      done = true;
      inProgress--;
    }
  };
  res.once('close', finish);
  if (url.pathname === '/hang') return;
  if (url.pathname === '/early') {
    res.writeHead(401, { 'content-type': 'application/json' }).end(JSON.stringify({ node: name, path: url.pathname }));
    return;
  }
  if (url.pathname === '/big') {
    streamBytes(res, Number(url.searchParams.get('bytes') ?? 0));
    return;
  }
  if (url.pathname === '/stop-listening') server.close();
  const answer = (extra: Record<string, unknown> = {}): void => {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ node: name, path: url.pathname, ...extra }));
  };
  let bytes = 0;
  req.on('data', (chunk: Buffer) => (bytes += chunk.length));
  req.on('end', () => {
    if (url.pathname === '/sleep') setTimeout(() => answer({ bytes }), Number(url.searchParams.get('ms') ?? 1000));
    else answer({ bytes });
  });
});

function streamBytes(res: ServerResponse, total: number): void {
  const chunk = Buffer.alloc(64 * 1024, 'x');
  let left = total;
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(total) });
  const more = (): void => {
    while (left > 0) {
      const part = left >= chunk.length ? chunk : chunk.subarray(0, left);
      left -= part.length;
      if (!res.write(part)) return void res.once('drain', more);
    }
    res.end();
  };
  more();
}

server.listen(Number(process.env['PORT'] ?? 0), '127.0.0.1', () => {
  const address = server.address();
  process.stdout.write(`listening on ${typeof address === 'object' && address ? address.port : 0}\n`);
});
