import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import ts from 'typescript';
import { freePort, removeDir, ROOT, startKilnServer, trackChild, waitFor, type ServerProcess } from '../helpers/processes.js';

/**
 * Every JavaScript and TypeScript block of the README and docs/ does what a reader who
 * copies it expects:
 * - a program (it calls listen) runs as written against a real kiln server and answers
 *   its own routes; the only edits are the ports (its 3000 and the server's 9510 become
 *   free ones) and the environment it reads (SESSION_SECRET, KILN_TOKEN);
 * - a TypeScript block type-checks (strict), a `declare module` block as the augmentation
 *   it is in a user's module;
 * - a fragment (it uses variables of the reader's app) parses, and everything it imports
 *   or requires exists under the name it uses.
 * The files live under the checkout (.tmp/), so `kiln/...` resolves to this package by
 * its own name, as it does for a user who installed it.
 */
const run = promisify(execFile);
const SECRET = 'docs-snippets-secret-0123456789-abcdefgh';

interface Snippet { file: string; line: number; lang: 'js' | 'ts'; code: string }

function markdownFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return markdownFiles(path);
    return entry.name.endsWith('.md') ? [path] : [];
  });
}

function snippets(): Snippet[] {
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

const isProgram = (s: Snippet) => /\b(listen|serve)\(/.test(s.code) && /\bfrom '/.test(s.code);
/** A block that makes an app is a program, and a program that never listens exits at once when run. */
const makesApp = (s: Snippet) => /\b(express\(\)|Fastify\(|new Koa\(|new Hono\b|createServer\()/.test(s.code);
const isDeclaration = (s: Snippet) => /^declare module '([^']+)'/.test(s.code.trim());

/** What a reader would do with the program once it runs: two requests, the second sees the first's session. */
interface Probe { method: string; path: string; body?: unknown; check: (second: string) => boolean; expect: string }
function probeFor(code: string): Probe | undefined {
  if (/app\.post\('\/cart\/:sku'/.test(code)) return { method: 'POST', path: '/cart/tea', check: (b) => (JSON.parse(b) as { items: number }).items === 2, expect: '{ items: 2 }' };
  if (/\.post\('\/cart'/.test(code)) return { method: 'POST', path: '/cart', body: { sku: 'tea' }, check: (b) => (JSON.parse(b) as { items: number }).items === 2, expect: '{ items: 2 }' };
  if (/ctx\.session\.views/.test(code)) return { method: 'GET', path: '/', check: (b) => (JSON.parse(b) as { views: number }).views === 2, expect: '{ views: 2 }' };
  if (/visit \$\{session\.visits\}/.test(code)) return { method: 'GET', path: '/', check: (b) => b === 'visit 2', expect: 'visit 2' };
  return undefined;
}

function cookiesOf(res: Response): string {
  return res.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ');
}

describe('the code blocks of README.md and docs/', () => {
  const all = snippets();
  const work = join(ROOT, '.tmp', `doc-snippets-${process.pid}`);
  let server: ServerProcess;

  before(async () => {
    mkdirSync(work, { recursive: true });
    server = await startKilnServer();
  });
  after(async () => {
    await server?.stop();
    removeDir(work);
  });

  it('finds the blocks (programs, TypeScript, fragments)', () => {
    assert.ok(all.filter(isProgram).length >= 5, `${all.filter(isProgram).length} programs`);
    assert.ok(all.filter((s) => s.lang === 'ts').length >= 3);
    assert.ok(all.length >= 15, `${all.length} blocks`);
  });

  it('every TypeScript block type-checks under strict settings', async () => {
    const files: string[] = [];
    for (const [n, s] of all.filter((x) => x.lang === 'ts').entries()) {
      const declared = /^declare module '([^']+)'/.exec(s.code.trim());
      // In a user's project the augmentation sits in a module that imports the package.
      const code = declared ? `import '${declared[1]}';\n${s.code}\n` : s.code;
      const path = join(work, `typed-${n}.mts`);
      writeFileSync(path, `// ${s.file}:${s.line}\n${code}\n`);
      files.push(path);
    }
    const config = { compilerOptions: { module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022', strict: true, noEmit: true, skipLibCheck: true, types: ['node'] }, files };
    writeFileSync(join(work, 'tsconfig.json'), JSON.stringify(config));
    const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    const result = await run(process.execPath, [tsc, '-p', join(work, 'tsconfig.json')], { cwd: work }).then(() => '', (err: { stdout: string }) => err.stdout);
    assert.equal(result, '', `a TypeScript block does not compile:\n${result}`);
  });

  it('every fragment parses, what it imports or requires exists under that name, and none makes an app it never serves', async () => {
    const fragments = all.filter((s) => !isProgram(s) && !isDeclaration(s) && s.lang === 'js');
    assert.ok(fragments.length >= 4, `${fragments.length} fragments`);
    const silent = all.filter((s) => makesApp(s) && !isProgram(s)).map((s) => `${s.file}:${s.line}`);
    assert.deepEqual(silent, [], 'these blocks make an app but never listen: copied as written they serve nothing');
    for (const [n, s] of fragments.entries()) {
      const lines = s.code.split('\n');
      const imports = lines.filter((l) => /^import\b/.test(l));
      const body = lines.filter((l) => !/^import\b/.test(l)).join('\n');
      // The body refers to the reader's app (app, res, secret…): wrapped, it is parsed and never run.
      const requires = [...body.matchAll(/const\s+(\{[^}]*\}|\w+)\s*=\s*require\('([^']+)'\)/g)].map((m) => {
        const names = m[1]!.startsWith('{') ? m[1]!.slice(1, -1).split(',').map((x) => x.trim().split(':')[0]!.trim()).filter(Boolean) : [];
        return `{ const m = require(${JSON.stringify(m[2])}); for (const name of ${JSON.stringify(names)}) if (!(name in m)) throw new Error(${JSON.stringify(`${m[2]} has no export `)} + name); }`;
      });
      const header = requires.length > 0 ? `import { createRequire } from 'node:module';\nconst require = createRequire(import.meta.url);\n${requires.join('\n')}\n` : '';
      const path = join(work, `fragment-${n}.mjs`);
      writeFileSync(path, `${imports.join('\n')}\n${header}async function snippet() {\n${body}\n}\nvoid snippet;\n`);
      const result = await run(process.execPath, [path], { cwd: work, timeout: 20_000 }).then(() => '', (err: { stderr: string }) => err.stderr);
      assert.equal(result, '', `${s.file}:${s.line} does not load as written:\n${result}`);
    }
  });

  for (const s of snippets().filter(isProgram)) {
    it(`${s.file}:${s.line} runs as written and keeps a session over two requests`, async () => {
      const probe = probeFor(s.code);
      assert.ok(probe, `no probe says what ${s.file}:${s.line} should answer: add one`);
      const port = await freePort();
      const code = s.code.replaceAll('127.0.0.1:9510', `127.0.0.1:${server.port}`).replace(/listen\(3000\)/g, `listen(${port})`).replace(/port: 3000\b/g, `port: ${port}`);
      assert.notEqual(code, s.code, 'the program names the usual ports');
      let source = code;
      if (s.lang === 'ts') source = ts.transpileModule(code, { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 } }).outputText;
      const path = join(work, `program-${s.line}-${relative(ROOT, s.file).replace(/\W/g, '-')}.mjs`);
      writeFileSync(path, source);
      const child = spawn(process.execPath, [path], { cwd: work, env: { ...process.env, SESSION_SECRET: SECRET, KILN_TOKEN: server.token, NODE_NAME: 'app-1' }, stdio: ['ignore', 'pipe', 'pipe'] });
      let output = '';
      child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
      child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
      const exited = trackChild(child);
      try {
        const base = `http://127.0.0.1:${port}`;
        // A TLS terminator in front, as the Fastify block's Secure-cookie default expects; the others ignore it.
        const headers = { 'content-type': 'application/json', 'x-forwarded-proto': 'https' };
        const send = (cookie: string) => fetch(`${base}${probe.path}`, { method: probe.method, headers: cookie ? { ...headers, cookie } : headers, ...(probe.body ? { body: JSON.stringify(probe.body) } : {}) });
        const first = await waitFor(async () => {
          if (child.exitCode !== null) throw new Error(`the program exited (${child.exitCode}):\n${output}`);
          return send('').catch(() => undefined);
        }, 15_000, `${s.file}:${s.line} listening`);
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
    });
  }
});
