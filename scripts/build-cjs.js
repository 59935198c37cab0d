// CommonJS builds of the public entry points, for apps that still `require()`.
// tsc emits ESM (the source of truth). esbuild bundles it once, as dist/cjs/kiln.cjs,
// behind one lazy getter per entry point, and each entry point's .cjs re-exports its
// getter: every entry point shares one copy of Kiln (one KilnError class, so
// isKilnError and instanceof work across them), and loading kiln/express does not run
// (or require the peer dependencies of) kiln/express-store. Dependencies stay external.
import { build } from 'esbuild';
import { readFileSync, writeFileSync } from 'node:fs';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
const entries = Object.entries(pkg.exports)
  .filter(([, target]) => typeof target === 'object' && target.require)
  .map(([, target]) => ({ in: target.import, name: target.require.replace(/^\.\/dist\/cjs\//, '').replace(/\.cjs$/, '') }));

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
