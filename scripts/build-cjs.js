// CommonJS builds of the public entry points, for Express apps that still `require()`.
// tsc emits ESM (the source of truth); esbuild re-bundles each entry as one .cjs file
// with every dependency left external, so both module systems share one implementation.
import { build } from 'esbuild';
import { readFileSync } from 'node:fs';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
const entries = Object.entries(pkg.exports)
  .filter(([, target]) => typeof target === 'object' && target.require)
  .map(([, target]) => ({ in: target.import, out: target.require.replace(/^\.\/dist\/cjs\//, '').replace(/\.cjs$/, '') }));

await build({
  entryPoints: entries,
  outdir: 'dist/cjs',
  outExtension: { '.js': '.cjs' },
  bundle: true,
  packages: 'external',
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  logLevel: 'warning',
});
