import type { Server, Socket } from 'node:net';
import { KilnError } from '../errors/index.js';

/** Why a listen failed, in words an operator can act on. */
const LISTEN_FAILURES: Record<string, string> = {
  EADDRINUSE: 'the port is in use by another process',
  EACCES: 'not allowed (a port below 1024 needs privileges)',
  EADDRNOTAVAIL: 'the address is not one of this machine\'s',
  ENOTFOUND: 'the host name does not resolve',
  EAI_AGAIN: 'the host name does not resolve',
};

/**
 * Listens and resolves with the bound port (the real one when `port` is 0). A failure
 * is KILN_ERR_LISTEN naming `what` (the flag or option that chose the port), the
 * address and the reason, with the system error as its cause.
 *
 * @example
 * const port = await listen(server, 9510, '127.0.0.1', 'the kiln server (--port)');
 */
export function listen(server: Server, port: number, host: string, what = 'the server'): Promise<number> {
  return new Promise((resolve, reject) => {
    const failed = (err: NodeJS.ErrnoException): void => {
      const reason = LISTEN_FAILURES[err.code ?? ''] ?? err.message;
      const where = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
      reject(new KilnError('KILN_ERR_LISTEN', `${what} cannot listen on ${where}: ${reason} (${err.code ?? 'error'})${err.code === 'EADDRINUSE' ? '; choose another port, or 0 for any free one' : ''}`, { cause: err, details: { host, port, errno: err.code } }));
    };
    server.once('error', failed);
    server.listen(port, host, () => {
      server.off('error', failed);
      const address = server.address();
      resolve(typeof address === 'object' && address ? address.port : port);
    });
  });
}

/**
 * Writes to a socket, gathered per turn of the event loop: the first write corks the
 * socket and the rest of the turn's writes join it, all leaving in one system call when
 * the loop reaches its check phase (after every callback and promise of this turn).
 * Both ends of the kiln protocol write many small frames at once (the commits of a
 * batch of HTTP requests; the replies to them), and on a VM each `write` system call
 * costs tens of microseconds.
 *
 * @example
 * const out = new BatchedWriter(socket);
 * out.write(frameA);
 * out.write(frameB); // both go in one writev
 */
export class BatchedWriter {
  private corked = false;

  constructor(private readonly socket: Socket) {}

  write(chunk: Uint8Array): void {
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      setImmediate(this.uncork);
    }
    this.socket.write(chunk);
  }

  private readonly uncork = (): void => {
    this.corked = false;
    this.socket.uncork();
  };
}
