/**
 * Slowloris connections in a process of their own, so the test's measuring client does
 * not share an event loop (or a descriptor limit) with a thousand sockets.
 *
 * argv: <port> <headers|bodies> <count> <address,address,…>. Connections are spread
 * over the given local addresses (127.0.0.x: all of 127/8 is loopback on Linux), each
 * sending one byte more every second: an unfinished header block, or a body far shorter
 * than its Content-Length. Prints a JSON line `{ open, opened, closed, answered }` each
 * 500 ms; "answered" counts connections that received any byte (a 408, a 503).
 */
import { connect, type Socket } from 'node:net';

const [portArg, mode, countArg, addressArg] = process.argv.slice(2);
const port = Number(portArg);
const count = Number(countArg);
const addresses = (addressArg ?? '127.0.0.2').split(',');
const sockets = new Set<Socket>();
let opened = 0;
let closed = 0;
let answered = 0;

function open(i: number): void {
  const socket = connect({ host: '127.0.0.1', port, localAddress: addresses[i % addresses.length] });
  let got = false;
  socket.on('connect', () => {
    opened++;
    sockets.add(socket);
    socket.write(mode === 'headers' ? `GET /ok HTTP/1.1\r\nHost: shop\r\n` : `POST /echo HTTP/1.1\r\nHost: shop\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\n`);
  });
  socket.on('data', () => {
    if (!got) {
      got = true;
      answered++;
    }
  });
  socket.on('error', () => undefined);
  socket.on('close', () => {
    if (sockets.delete(socket)) closed++;
  });
}

// Opened in batches, as an attacker would, without flooding the accept queue.
let next = 0;
const opener = setInterval(() => {
  for (let k = 0; k < 100 && next < count; k++) open(next++);
  if (next >= count) clearInterval(opener);
}, 20);

let tick = 0;
setInterval(() => {
  tick++;
  for (const socket of sockets) socket.write(mode === 'headers' ? `X-Pad-${tick}: x\r\n` : 'x');
}, 1_000);

setInterval(() => process.stdout.write(`${JSON.stringify({ open: sockets.size, opened, closed, answered })}\n`), 500);
