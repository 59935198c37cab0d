// Writes the migration guides' behaviour tables (see test/compat/tables.ts) into docs/.
import { readFileSync, writeFileSync } from 'node:fs';
import { TABLE_FILES, compatTables, withTable } from '../dist/test/compat/tables.js';

const tables = compatTables();
for (const [name, file] of Object.entries(TABLE_FILES)) {
  writeFileSync(file, withTable(readFileSync(file, 'utf8'), name, tables[name]));
  console.log(`${file}: the ${name} table (${tables[name].split('\n').length - 2} rows)`);
}
