import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { startKilnCommand, type KilnCommandProcess } from '../helpers/processes.js';

/** A token the balancer accepts (32 bytes or more). */
export const BALANCER_ADMIN_TOKEN = 'balancer-admin-token-for-the-security-tests';

export interface SeenRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
}

export interface RecordingBackend {
  name: string;
  port: number;
  server: Server;
  /** Every request the backend parsed, in order. */
  seen: SeenRequest[];
  close(): Promise<void>;
}

/**
 * An app server that records what reaches it. Like most apps it has no WebSocket
 * endpoint unless `websocket` is set: then an Upgrade to /ws gets 101 and an echo;
 * without it Node parses an Upgrade request as an ordinary one and keeps the
 * connection alive for more, which is what a tunnel would abuse.
 */
export async function startRecordingBackend(name: string, options: { websocket?: boolean } = {}): Promise<RecordingBackend> {
  const seen: SeenRequest[] = [];
  const server = createServer((req, res) => {
    seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    req.resume();
    req.on('end', () => {
      if (req.url?.startsWith('/missing')) {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ node: name, url: req.url, headers: req.headers }));
    });
  });
  // Upgraded sockets are the server's no more: closeAllConnections() leaves them open.
  const upgraded = new Set<Socket>();
  if (options.websocket) {
    server.on('upgrade', (req, socket: Socket, head: Buffer) => {
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
      upgraded.add(socket);
      socket.once('close', () => upgraded.delete(socket));
      socket.on('error', () => undefined);
      if (req.url !== '/ws') {
        socket.end('HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
        return;
      }
      socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Backend: ${name}\r\n\r\n`);
      if (head.length > 0) socket.write(head);
      socket.pipe(socket);
    });
  }
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    name,
    port: (server.address() as AddressInfo).port,
    server,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        for (const socket of upgraded) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

export interface BalancerProcess extends KilnCommandProcess {
  url: string;
  port: number;
}

/** `kiln balancer` as a process in front of the backends, with the test's admin token. */
export async function startBalancerProcess(backends: RecordingBackend[], extra: string[] = [], env: Record<string, string> = {}): Promise<BalancerProcess> {
  const nodes = backends.flatMap((b) => ['--node', `${b.name}=http://127.0.0.1:${b.port}`]);
  const started = await startKilnCommand(['balancer', '--port', '0', '--log-level', 'warn', '--affinity', 'none', '--health-interval-ms', '60000', ...nodes, ...extra], env, /ready on (http:\/\/\S+)/, 'kiln balancer');
  const url = started.match[1]!;
  return { ...started, url, port: Number(new URL(url).port) };
}

/**
 * Writes raw bytes on a new connection and collects everything the other side sends
 * until it closes the connection or `quietMs` pass without a byte.
 */
export function rawExchange(port: number, bytes: string | Buffer, quietMs = 800): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let timer: NodeJS.Timeout | undefined;
    let done = false;
    const finish = (closed: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ text: Buffer.concat(chunks).toString('latin1'), closed });
    };
    const arm = (): void => {
      clearTimeout(timer);
      timer = setTimeout(() => finish(false), quietMs);
    };
    socket.on('connect', () => {
      socket.write(bytes);
      arm();
    });
    socket.on('data', (d: Buffer) => {
      chunks.push(d);
      arm();
    });
    socket.on('error', () => finish(true));
    socket.on('close', () => finish(true));
  });
}
