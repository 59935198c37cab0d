import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { ROOT, trackChild, waitFor } from './processes.js';

/** The code blocks of README.md and docs/, as a reader copies them (tests run or compile them). */
export interface Snippet { file: string; line: number; lang: 'js' | 'ts'; code: string }

function markdownFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return markdownFiles(path);
    return entry.name.endsWith('.md') ? [path] : [];
  });
}

export function snippets(): Snippet[] {
  const out: Snippet[] = [];
  for (const path of [join(ROOT, 'README.md'), ...markdownFiles(join(ROOT, 'docs'))]) {
    const lines = readFileSync(path, 'utf8').split('\n');
    for (let i = 0; i < lines.length; i++) {
      const open = /^```(js|javascript|mjs|cjs|ts|typescript)\s*$/.exec(lines[i]!);
      if (!open) continue;
      const start = i;
      const body: string[] = [];
      for (i++; i < lines.length && !lines[i]!.startsWith('```'); i++) body.push(lines[i]!);
      out.push({ file: relative(ROOT, path), line: start + 1, lang: open[1]!.startsWith('t') ? 'ts' : 'js', code: body.join('\n') });
    }
  }
  return out;
}

export const isProgram = (s: Snippet) => /\b(listen|serve)\(/.test(s.code) && /\bfrom '/.test(s.code);
/** A block that makes an app is a program, and a program that never listens exits at once when run. */
export const makesApp = (s: Snippet) => /\b(express\(\)|Fastify\(|new Koa\(|new Hono\b|createServer\()/.test(s.code);
export const isDeclaration = (s: Snippet) => /^declare module '([^']+)'/.test(s.code.trim());

/** What a reader would do with the program once it runs: two requests, the second sees the first's session. */
export interface Probe { method: string; path: string; body?: unknown; check: (second: string) => boolean; expect: string }
export function probeFor(code: string): Probe | undefined {
  if (/app\.post\('\/cart\/:sku'/.test(code)) return { method: 'POST', path: '/cart/tea', check: (b) => (JSON.parse(b) as { items: number }).items === 2, expect: '{ items: 2 }' };
  if (/\.post\('\/cart'/.test(code)) return { method: 'POST', path: '/cart', body: { sku: 'tea' }, check: (b) => (JSON.parse(b) as { items: number }).items === 2, expect: '{ items: 2 }' };
  if (/ctx\.session\.views/.test(code)) return { method: 'GET', path: '/', check: (b) => (JSON.parse(b) as { views: number }).views === 2, expect: '{ views: 2 }' };
  if (/visit \$\{session\.visits\}/.test(code)) return { method: 'GET', path: '/', check: (b) => b === 'visit 2', expect: 'visit 2' };
  return undefined;
}

export function cookiesOf(res: Response): string {
  return res.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ');
}


/** The only edits a test makes to a program: its port 3000 and the kiln server's 9510 become free ones. */
export function withPorts(code: string, serverPort: number, appPort: number): string {
  return code.replaceAll('127.0.0.1:9510', `127.0.0.1:${serverPort}`).replace(/listen\(3000\)/g, `listen(${appPort})`).replace(/port: 3000\b/g, `port: ${appPort}`);
}

/**
 * Runs a program file with node, waits for it to answer, sends its probe twice (the
 * second with the first's cookie) and checks the second answer; kills it in every case.
 */
export async function exerciseProgram(path: string, o: { cwd: string; port: number; probe: Probe; env: Record<string, string> }): Promise<void> {
  const child = spawn(process.execPath, [path], { cwd: o.cwd, env: { ...process.env, ...o.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
  const exited = trackChild(child);
  const { probe } = o;
  try {
    const base = `http://127.0.0.1:${o.port}`;
    // A TLS terminator in front, as the Fastify block's Secure-cookie default expects; the others ignore it.
    const headers = { 'content-type': 'application/json', 'x-forwarded-proto': 'https' };
    const send = (cookie: string) => fetch(`${base}${probe.path}`, { method: probe.method, headers: cookie ? { ...headers, cookie } : headers, ...(probe.body ? { body: JSON.stringify(probe.body) } : {}) });
    const first = await waitFor(async () => {
      if (child.exitCode !== null) throw new Error(`the program exited (${child.exitCode}):\n${output}`);
      return send('').catch(() => undefined);
    }, 15_000, `${path} listening`);
    assert.equal(first.status, 200, `first request: ${first.status} ${await first.text()}\n${output}`);
    const cookie = cookiesOf(first);
    assert.ok(cookie, 'the first answer sets the session cookie');
    const second = await send(cookie);
    const text = await second.text();
    assert.equal(second.status, 200, text);
    assert.ok(probe.check(text), `second answer ${text}, expected ${probe.expect}`);
  } finally {
    child.kill('SIGKILL');
    await exited;
  }
}
