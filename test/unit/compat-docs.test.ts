import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { TABLE_FILES, compatTables, withTable } from '../compat/tables.js';
import { ROOT } from '../helpers/processes.js';

describe('migration guides', () => {
  it('their behaviour tables are the differential suites\' cases (npm run docs:compat rewrites them)', () => {
    const tables = compatTables();
    for (const [name, file] of Object.entries(TABLE_FILES)) {
      const doc = readFileSync(join(ROOT, file), 'utf8');
      assert.equal(withTable(doc, name, tables[name]!), doc, `${file}: the ${name} table differs from test/compat; run npm run docs:compat`);
    }
  });
});
