#!/usr/bin/env node
// The `kiln` command. The implementation is compiled TypeScript under dist/: shipped in
// the published package, built by `npm run build` in a checkout.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const main = new URL('../dist/src/cli/main.js', import.meta.url);
if (!existsSync(fileURLToPath(main))) {
  process.stderr.write('kiln: not built yet. Run `npm ci && npm run build` in the kiln checkout first.\n');
  process.exit(1);
}
const { run } = await import(main.href);
process.exitCode = await run(process.argv.slice(2));
