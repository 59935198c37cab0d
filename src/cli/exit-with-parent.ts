/**
 * Preloaded (`node --import`) into every process the Supervisor starts (kiln demo's kiln
 * server, console and app servers), so that none outlives the demo, however the demo
 * dies: SIGKILL and a crash run none of its handlers.
 *
 * The child's stdin is a pipe from the demo, which never writes to it. The kernel closes
 * the demo's end when the demo is gone, for whatever reason, and the child then reads
 * end-of-file: it stops as on SIGTERM (its command's own graceful stop, or the default
 * action where it has none), and exits anyway after GRACE_MS if that did not end it.
 * Nothing here keeps the child alive: the pipe and the timer are unreferenced, so a child
 * that is done exits as it would have without this module.
 *
 * It changes nothing in the commands themselves (a kiln server started by hand has no
 * such pipe and never loads this module).
 */
import type { Socket } from 'node:net';

/** How long a child may take over its own graceful stop once the demo is gone. */
const GRACE_MS = 10_000;

function parentGone(): void {
  // Our stdout and stderr were pipes to the demo too: nobody reads them any more, and an
  // EPIPE on a line the graceful stop writes must not turn it into a crash.
  for (const stream of [process.stdout, process.stderr]) stream.on('error', () => undefined);
  setTimeout(() => process.exit(1), GRACE_MS).unref();
  process.kill(process.pid, 'SIGTERM');
}

const stdin = process.stdin as NodeJS.ReadStream & Partial<Pick<Socket, 'unref'>>;
// Only a pipe can tell: a terminal or a file on stdin (a child started otherwise) is left alone.
if (!stdin.isTTY && typeof stdin.unref === 'function') {
  let gone = false;
  const once = (): void => {
    if (gone) return;
    gone = true;
    parentGone();
  };
  stdin.on('data', () => undefined);
  stdin.once('end', once);
  stdin.once('error', once);
  stdin.unref();
}
