import type { Server, Socket } from 'node:net';

/** Listens and resolves with the bound port (the real one when `port` is 0). */
export function listen(server: Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
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
