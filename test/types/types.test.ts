import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ROOT } from '../helpers/processes.js';

/**
 * The published types, compiled as applications compile them: the README's quick start
 * and a typed session for every framework (test/types/fixtures), with `tsc --strict`,
 * in ESM and CommonJS projects under every module setting that reads package exports,
 * plus legacy `module: commonjs` projects (moduleResolution node10, through
 * typesVersions). Each project is a folder of its own that finds this package as
 * node_modules/kiln, with only Node's types loaded (as an app without express-session).
 * A wrong assignment must be an error: the fixtures mark them with @ts-expect-error,
 * which is itself an error when nothing is wrong.
 */
const WORK = join(ROOT, 'test-results', 'types');
const FIXTURES = join(ROOT, 'test', 'types', 'fixtures');
const STORE_FIXTURES = join(ROOT, 'test', 'types', 'store-fixtures');

/** The README's quick start, as written (the first code block under its heading). */
function readmeQuickStart(): string {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## Quick start (Express)'));
  const block = /```(?:js|ts)\n([\s\S]*?)```/.exec(section);
  assert.ok(block, 'the README has a quick start code block');
  return block[1]!;
}

/** The README's SessionData declaration, as written, for a file of its own (session.d.ts). */
function readmeSessionTypes(): string {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const block = /```ts\n([\s\S]*?declare module 'kiln\/express'[\s\S]*?)```/.exec(readme.slice(readme.indexOf('## Quick start (Express)')));
  assert.ok(block, 'the README declares SessionData');
  // Its fields, used: a block TypeScript took as the whole module would leave session() unexported.
  return block[1]!;
}

interface Variant {
  name: string;
  type: 'module' | 'commonjs';
  options: Record<string, unknown>;
}

const VARIANTS: Variant[] = [
  // As `tsc --init` writes it: exactOptionalPropertyTypes on (the README's `route: process.env.NODE_NAME` failed there).
  { name: 'nodenext ESM', type: 'module', options: { module: 'nodenext', moduleResolution: 'nodenext', exactOptionalPropertyTypes: true } },
  { name: 'nodenext CommonJS', type: 'commonjs', options: { module: 'nodenext', moduleResolution: 'nodenext' } },
  { name: 'node16 ESM', type: 'module', options: { module: 'node16', moduleResolution: 'node16' } },
  { name: 'node16 CommonJS', type: 'commonjs', options: { module: 'node16', moduleResolution: 'node16' } },
  { name: 'commonjs with moduleResolution node10', type: 'commonjs', options: { module: 'commonjs', moduleResolution: 'node10' } },
];

function project(variant: Variant, fixtures = FIXTURES, suffix = ''): string {
  const dir = join(WORK, variant.name.replace(/\W+/g, '-') + suffix);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'typed-app', private: true, type: variant.type }));
  writeFileSync(
    join(dir, 'tsconfig.json'),
    JSON.stringify({ compilerOptions: { ...variant.options, target: 'es2022', strict: true, noEmit: true, esModuleInterop: true, skipLibCheck: true, types: ['node'], lib: ['es2023'] }, include: ['*.ts'] }),
  );
  for (const f of readdirSync(fixtures)) copyFileSync(join(fixtures, f), join(dir, f));
  if (fixtures === FIXTURES) {
    writeFileSync(join(dir, 'readme-quickstart.ts'), readmeQuickStart());
    writeFileSync(join(dir, 'session.d.ts'), readmeSessionTypes());
    writeFileSync(join(dir, 'readme-session-use.ts'), "import { session } from 'kiln/express';\nimport type { Request } from 'express';\nexport const typed = (req: Request): string | undefined => req.session.user?.id;\nexport const mw = session({ secret: 'x' });\n");
  }
  return dir;
}

describe('published types', () => {
  mkdirSync(join(WORK, 'node_modules'), { recursive: true });
  rmSync(join(WORK, 'node_modules', 'kiln'), { force: true });
  symlinkSync(ROOT, join(WORK, 'node_modules', 'kiln'), 'dir');

  for (const variant of VARIANTS) {
    it(`compile with tsc --strict: ${variant.name}`, () => {
      const dir = project(variant);
      const tsc = spawnSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', dir], { encoding: 'utf8' });
      assert.equal(tsc.status, 0, `tsc failed:\n${tsc.stdout}${tsc.stderr}`);
    });

    it(`kiln/express-store with express-session's types: ${variant.name}`, () => {
      const dir = project(variant, STORE_FIXTURES, '-store');
      const tsc = spawnSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', dir], { encoding: 'utf8' });
      assert.equal(tsc.status, 0, `tsc failed:\n${tsc.stdout}${tsc.stderr}`);
    });
  }

  it('a wrong assignment fails to compile (the @ts-expect-error lines are needed)', () => {
    const variant = VARIANTS[0]!;
    const dir = project(variant);
    const source = readFileSync(join(dir, 'express-typed.ts'), 'utf8').replace(/\/\/ @ts-expect-error.*\n/g, '');
    writeFileSync(join(dir, 'express-typed.ts'), source);
    const tsc = spawnSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', dir], { encoding: 'utf8' });
    assert.notEqual(tsc.status, 0);
    assert.match(tsc.stdout, /express-typed\.ts\(\d+,\d+\): error TS2322: Type 'string' is not assignable to type 'number'/);
    assert.match(tsc.stdout, /express-typed\.ts\(\d+,\d+\): error TS2322: Type 'number' is not assignable to type 'string'/);
  });
});
