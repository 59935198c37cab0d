import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';

// docs/server.md's option tables are what operators read; `--help` is what the code
// parses. Each flag is in both or the test names it, so neither drifts from the other.
const ROOT = join(import.meta.dirname, '..', '..', '..');

function helpFlags(command: string): Set<string> {
  const help = execFileSync(process.execPath, [join(ROOT, 'bin', 'kiln.js'), command, '--help'], { encoding: 'utf8' });
  const flags = new Set<string>();
  for (const line of help.split('\n')) {
    const match = /^\s+(?:-\w, )?(--[a-z0-9-]+)/.exec(line);
    if (match && match[1] !== '--help') flags.add(match[1]!);
  }
  return flags;
}

/** Flags named in the first cell of the table rows between `heading` and the next `## `. */
function docFlags(heading: string): Set<string> {
  const doc = readFileSync(join(ROOT, 'docs', 'server.md'), 'utf8');
  const start = doc.indexOf(`\n${heading}\n`);
  assert.ok(start >= 0, `docs/server.md has "${heading}"`);
  const end = doc.indexOf('\n## ', start + heading.length + 2);
  const section = doc.slice(start, end < 0 ? undefined : end);
  const flags = new Set<string>();
  for (const line of section.split('\n')) {
    if (!line.startsWith('| `--')) continue;
    const firstCell = line.split(/(?<!\\)\|/)[1] ?? '';
    for (const match of firstCell.matchAll(/--[a-z0-9-]+/g)) flags.add(match[0]);
  }
  return flags;
}

describe('docs/server.md option tables match --help', () => {
  for (const [command, heading] of [['server', '## Options'], ['repair', '## kiln repair'], ['balancer', '## kiln balancer']] as const) {
    it(`kiln ${command}: every flag of --help is in the table, and the table names no other`, () => {
      const help = helpFlags(command);
      const doc = docFlags(heading);
      assert.ok(help.size >= (command === 'repair' ? 3 : 5), `read ${help.size} flags from kiln ${command} --help`);
      assert.deepEqual([...help].filter((f) => !doc.has(f)).sort(), [], `in kiln ${command} --help, missing from docs/server.md "${heading}"`);
      assert.deepEqual([...doc].filter((f) => !help.has(f)).sort(), [], `in docs/server.md "${heading}", unknown to kiln ${command} --help`);
    });
  }
});
