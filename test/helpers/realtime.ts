import { io, type Socket } from 'socket.io-client';
import { WebSocket } from 'ws';

/** A `ws` client that matches answers to requests by tag and records how it was closed. */
export interface WsClient {
  hello: { node: string; sessionId: string | null };
  ask(op: string, timeoutMs?: number): Promise<{ node: string; count?: number; error?: string }>;
  closed: Promise<{ code: number; reason: string; at: number }>;
  isOpen(): boolean;
  close(): void;
  raw: WebSocket;
}

let tags = 0;

export function openWs(baseUrl: string, cookie: string | undefined): Promise<WsClient> {
  const ws = new WebSocket(`${baseUrl.replace(/^http/, 'ws')}/ws`, { headers: cookie ? { cookie } : {} });
  const waiting = new Map<string, (answer: { node: string; count?: number; error?: string }) => void>();
  let closeInfo: { code: number; reason: string; at: number } | undefined;
  const closed = new Promise<{ code: number; reason: string; at: number }>((resolve) => {
    ws.on('close', (code, reason) => resolve((closeInfo = { code, reason: reason.toString(), at: Date.now() })));
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no hello from ${baseUrl}/ws`)), 10_000);
    ws.on('unexpected-response', (_req, res) => {
      clearTimeout(timer);
      reject(Object.assign(new Error(`upgrade refused: ${res.statusCode}`), { status: res.statusCode }));
    });
    ws.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    ws.on('message', (data) => {
      const message = JSON.parse(String(data)) as { op: string; tag?: string; node: string; sessionId?: string | null };
      if (message.op === 'hello') {
        clearTimeout(timer);
        resolve({
          hello: { node: message.node, sessionId: message.sessionId ?? null },
          raw: ws,
          closed,
          isOpen: () => closeInfo === undefined && ws.readyState === WebSocket.OPEN,
          close: () => ws.close(),
          ask(op, timeoutMs = 15_000) {
            const tag = `t${++tags}`;
            return new Promise((res, rej) => {
              const t = setTimeout(() => rej(new Error(`no answer to ${op} (${tag})`)), timeoutMs);
              waiting.set(tag, (answer) => {
                clearTimeout(t);
                res(answer);
              });
              ws.send(JSON.stringify({ op, tag }), (err) => {
                if (err) {
                  clearTimeout(t);
                  rej(err);
                }
              });
              void closed.then((c) => {
                if (waiting.delete(tag)) {
                  clearTimeout(t);
                  rej(new Error(`socket closed (${c.code} ${c.reason}) before answering ${op}`));
                }
              });
            });
          },
        });
      } else if (message.tag) {
        waiting.get(message.tag)?.(message);
        waiting.delete(message.tag);
      }
    });
  });
}

/** A socket.io client (WebSocket transport) with the session cookie. */
export interface IoClient {
  hello: { node: string; sessionId: string | null };
  ask(event: 'incr' | 'get'): Promise<{ node: string; count?: number; error?: string }>;
  ended: Promise<{ code: number; reason: string; at: number }>;
  socket: Socket;
  close(): void;
}

export function openIo(baseUrl: string, cookie: string | undefined): Promise<IoClient> {
  const socket = io(baseUrl, { transports: ['websocket'], extraHeaders: cookie ? { cookie } : {}, reconnection: false, timeout: 10_000 });
  const ended = new Promise<{ code: number; reason: string; at: number }>((resolve) => {
    socket.on('kiln:session-ended', (info: { code: number; reason: string }) => resolve({ ...info, at: Date.now() }));
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no hello from socket.io at ${baseUrl}`)), 10_000);
    socket.on('connect_error', (err) => {
      clearTimeout(timer);
      socket.close();
      reject(err);
    });
    socket.on('hello', (hello: { node: string; sessionId: string | null }) => {
      clearTimeout(timer);
      resolve({
        hello,
        socket,
        ended,
        close: () => socket.close(),
        ask: (event) => socket.timeout(15_000).emitWithAck(event) as Promise<{ node: string; count?: number; error?: string }>,
      });
    });
  });
}
