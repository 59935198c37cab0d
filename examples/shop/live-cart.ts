import type { Server } from 'node:http';
import type * as Ws from 'ws';
import { createWebSocketSessions } from '../../src/adapters/ws/index.js';
import type { SocketSessionOptions } from '../../src/adapters/realtime/socket-sessions.js';

/**
 * The shop's live cart: each tab keeps a WebSocket to /live on whichever app server it
 * reached; the socket reads the session (a read-only snapshot, so it never takes the
 * lease from the node serving the tab's clicks) once a second and pushes the cart when
 * it changed, so a change made in another tab, on another node, shows at once. When the
 * session ends (logout, "log out everywhere", expiry) kiln/ws closes the socket with
 * 4001 and the page says so.
 *
 * `ws` is an optional peer dependency of kiln: without it the page polls instead (the
 * demo must run from an installed package with nothing more to install).
 */
export async function attachLiveCart(server: Server, options: SocketSessionOptions, node: string): Promise<boolean> {
  let wsModule: typeof Ws;
  try {
    wsModule = await import('ws');
  } catch {
    return false;
  }
  const sockets = createWebSocketSessions(options);
  const wss = new wsModule.WebSocketServer({ noServer: true, maxPayload: 1024 });
  server.on('upgrade', (req, socket, head) => {
    if ((req.url ?? '').split('?')[0] !== '/live') {
      socket.destroy();
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
  });
  wss.on('connection', (raw: Ws.WebSocket, req) => {
    const ws = sockets.attach(raw, req);
    raw.send(JSON.stringify({ type: 'hello', node, sessionId: ws.sessionId ?? null }));
    if (ws.sessionId === undefined) return;
    let last = '';
    let busy = false;
    const push = async (): Promise<void> => {
      if (busy) return;
      busy = true;
      try {
        const view = await ws.session((s) => ({ user: (s['user'] as string | undefined) ?? null, cart: (s['cart'] as unknown[] | undefined) ?? [] }), { readOnly: true });
        const text = JSON.stringify(view);
        if (text !== last && raw.readyState === raw.OPEN) {
          last = text;
          raw.send(JSON.stringify({ type: 'cart', node, ...view }));
        }
      } catch {
        // The session is gone: kiln/ws closes the socket.
      } finally {
        busy = false;
      }
    };
    const timer = setInterval(() => void push(), 1000);
    raw.on('message', () => void push());
    raw.on('close', () => clearInterval(timer));
    void push();
  });
  server.on('close', () => void sockets.close());
  return true;
}
