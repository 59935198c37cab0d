import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createSessionClient, type SessionClient } from '../../src/client/session-client.js';
import { connect } from '../../src/engines/kiln/kiln-engine.js';
import { ADMIN_TOKEN, READ_TOKEN } from '../console/admin-api-suite.js';
import { removeDir, startKilnServer, tempDir, waitFor, type ServerProcess } from '../helpers/processes.js';

export { ADMIN_TOKEN, READ_TOKEN };

export interface AdminAnswer {
  status: number;
  headers: Headers;
  text: string;
  /** The body parsed as JSON, or undefined. */
  json: Record<string, unknown> | undefined;
}

/** A kiln server with its admin port (ADMIN_TOKEN, READ_TOKEN), and an app's session client. */
export interface AdminUnderTest {
  server: ServerProcess;
  adminUrl: string;
  dir: string;
  kiln: SessionClient;
  /** token '' sends no Authorization header. */
  call(method: string, path: string, token?: string, headers?: Record<string, string>): Promise<AdminAnswer>;
  stop(): Promise<void>;
}

export async function startAdmin(args: string[] = []): Promise<AdminUnderTest> {
  const dir = tempDir('kiln-sec-admin-');
  writeFileSync(join(dir, 'admin.token'), ADMIN_TOKEN, { mode: 0o600 });
  writeFileSync(join(dir, 'read.token'), READ_TOKEN, { mode: 0o600 });
  const server = await startKilnServer({ args: ['--admin-port', '0', '--admin-token-file', join(dir, 'admin.token'), '--admin-read-token-file', join(dir, 'read.token'), ...args] });
  const adminUrl = await waitFor(() => /kiln admin on (https?:\/\/\S+?) /.exec(server.output())?.[1], 5000, 'admin line').catch(async (err: unknown) => {
    await server.kill();
    throw err;
  });
  const kiln = createSessionClient({ engine: connect(server.url, { token: server.token, name: 'sec-app' }) });
  return {
    server,
    adminUrl,
    dir,
    kiln,
    call: (method, path, token = ADMIN_TOKEN, headers = {}) => adminFetch(adminUrl, method, path, token, headers),
    async stop() {
      await kiln.close();
      await server.kill();
      removeDir(dir);
    },
  };
}

export async function adminFetch(base: string, method: string, path: string, token: string, headers: Record<string, string> = {}): Promise<AdminAnswer> {
  const res = await fetch(`${base}${path}`, { method, headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers } });
  const text = await res.text();
  let json: Record<string, unknown> | undefined;
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, text, json };
}

/** Reads an SSE stream into a string until stopped. */
export function readStream(body: ReadableStream<Uint8Array>): { text(): string; done: Promise<void> } {
  let text = '';
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const done = (async () => {
    try {
      for (;;) {
        const { value, done: end } = await reader.read();
        if (end) return;
        text += decoder.decode(value, { stream: true });
      }
    } catch {
      // aborted
    }
  })();
  return { text: () => text, done };
}
