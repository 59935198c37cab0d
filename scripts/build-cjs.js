// CommonJS builds of the public entry points, and the declarations of both forms.
//
// Code: tsc emits ESM (the source of truth). esbuild bundles it once, as
// dist/cjs/kiln.cjs, behind one lazy getter per entry point, and each entry point's
// .cjs re-exports its getter: every entry point shares one copy of Kiln (one KilnError
// class, so isKilnError and instanceof work across them), and loading kiln/express does
// not run (or require the peer dependencies of) kiln/express-store. Dependencies stay
// external.
//
// Types: the type augmentations of types/ (Express's req.session, Koa's ctx.session) go
// beside their entry point's declarations and are imported from them. Then the
// declarations of dist/src are copied to dist/cjs/types, a folder typed "commonjs", so a
// CommonJS TypeScript project (module node16/nodenext) reads them as CommonJS modules,
// as the require() it compiles to will load them.
import { build } from 'esbuild';
import { appendFileSync, copyFileSync, cpSync, readFileSync, writeFileSync } from 'node:fs';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
const entries = Object.entries(pkg.exports)
  .filter(([, target]) => typeof target === 'object' && target.require)
  .map(([, target]) => ({ in: target.import.default, name: target.require.default.replace(/^\.\/dist\/cjs\//, '').replace(/\.cjs$/, '') }));

const getters = entries.map((e) => `  get ${JSON.stringify(e.name)}() { return require(${JSON.stringify(`./${e.in.replace(/^\.\//, '')}`)}); },`).join('\n');

await build({
  stdin: { contents: `module.exports = {\n${getters}\n};\n`, resolveDir: '.', sourcefile: 'kiln-entries.cjs', loader: 'js' },
  outfile: 'dist/cjs/kiln.cjs',
  bundle: true,
  packages: 'external',
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  logLevel: 'warning',
});

for (const e of entries) {
  writeFileSync(`dist/cjs/${e.name}.cjs`, `'use strict';\n// One shared implementation for every entry point: see kiln.cjs.\nmodule.exports = require('./kiln.cjs')[${JSON.stringify(e.name)}];\n`);
}

const AUGMENTATIONS = { express: 'dist/src/adapters/express', koa: 'dist/src/adapters/koa' };
for (const [name, dir] of Object.entries(AUGMENTATIONS)) {
  copyFileSync(`types/${name}.d.ts`, `${dir}/augment.d.ts`);
  const index = readFileSync(`${dir}/index.d.ts`, 'utf8');
  if (!index.includes("import './augment.js';")) appendFileSync(`${dir}/index.d.ts`, "import './augment.js';\n");
}

cpSync('dist/src', 'dist/cjs/types', { recursive: true, filter: (path) => !/\.(js|js\.map)$/.test(path) });
writeFileSync('dist/cjs/package.json', `${JSON.stringify({ type: 'commonjs' }, null, 2)}\n`);
