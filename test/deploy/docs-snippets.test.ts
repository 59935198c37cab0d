import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import ts from 'typescript';
import { exerciseProgram, isDeclaration, isProgram, makesApp, probeFor, snippets, withPorts } from '../helpers/doc-snippets.js';
import { freePort, removeDir, ROOT, startKilnServer, type ServerProcess } from '../helpers/processes.js';

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
      const code = withPorts(s.code, server.port, port);
      assert.notEqual(code, s.code, 'the program names the usual ports');
      let source = code;
      if (s.lang === 'ts') source = ts.transpileModule(code, { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 } }).outputText;
      const path = join(work, `program-${s.line}-${relative(ROOT, s.file).replace(/\W/g, '-')}.mjs`);
      writeFileSync(path, source);
      await exerciseProgram(path, { cwd: work, port, probe, env: { SESSION_SECRET: SECRET, KILN_TOKEN: server.token, NODE_NAME: 'app-1' } });
    });
  }
});
