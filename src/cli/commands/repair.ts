import { parseArgs } from 'node:util';
import { KilnError } from '../../errors/index.js';
import type { RepairSummary } from '../../server/storage/last-repair.js';
import { readKeyFile } from '../../server/storage/record-codec.js';
import { repairDataDir } from '../../server/storage/repair.js';
import type { Command } from '../command.js';

/**
 * `kiln repair`: salvages a damaged kiln server data directory offline (the rule is in
 * src/server/storage/repair-plan.ts), printing what it read, skipped, kept and dropped.
 */
const HELP = `Usage: kiln repair --data-dir <dir> [options]

Repairs a kiln server data directory the server refuses to start on
(KILN_ERR_STORAGE_DAMAGED): salvages every valid record, keeps the sessions whose whole
history is intact, drops the ones live where bytes were lost, writes a new snapshot, and
moves the old files, byte for byte, to <dir>/damaged-<time>/. Not while a server uses
the directory (it takes the same lock).

Options:
  --data-dir <dir>           the data directory to repair (the server's --data)
  --data <dir>               the same as --data-dir
  --encryption-key-file <file>  the server's key file, when its records are encrypted; the new
                             snapshot is encrypted with the file's first (current) key
  -h, --help                 this help

Exit status: 0 when repaired or when there is nothing to repair; 1 with a KILN_ERR_ code
otherwise. The summary is also written to <dir>/last-repair.json.
`;

export const repairCommand: Command = {
  name: 'repair',
  summary: 'repair a damaged kiln server data directory (offline)',
  help: HELP,
  async run(argv) {
    const { values } = parseArgs({
      args: argv,
      options: {
        'data-dir': { type: 'string' },
        data: { type: 'string' },
        'encryption-key-file': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    });
    if (values.help) {
      process.stdout.write(HELP);
      return 0;
    }
    const dir = values['data-dir'] ?? values.data;
    if (!dir) throw new KilnError('KILN_ERR_INVALID_OPTION', 'which directory? pass --data-dir <dir> (the server\'s --data)');
    if (values['data-dir'] && values.data && values['data-dir'] !== values.data) throw new KilnError('KILN_ERR_INVALID_OPTION', '--data-dir and --data name different directories');
    const keyring = values['encryption-key-file'] ? readKeyFile(values['encryption-key-file']) : undefined;
    const summary = await repairDataDir({ dir, keyring, progress: (line) => process.stdout.write(`kiln repair: ${line}\n`) });
    process.stdout.write(summaryLines(summary));
    return 0;
  },
};

/** The summary in a few lines; the same words the server's ready line and the docs use. */
export function summaryLines(s: RepairSummary): string {
  const torn = s.tornTail ? `\nkiln repair: torn tail (${s.tornTail.bytes} bytes at ${s.tornTail.file}:${s.tornTail.offset}) is not damage: the server cuts it at start` : '';
  if (!s.repaired) return `kiln repair: nothing to repair in ${s.dataDir} (${plural(s.filesRead.length, 'file')}, ${plural(s.recordsSalvaged, 'record')} read, all valid)${torn}\n`;
  return [
    `kiln repair: read ${plural(s.filesRead.length, 'file')}; ${plural(s.damagedSpots, 'damaged spot')}, ${plural(s.bytesSkipped, 'byte')} skipped`,
    `kiln repair: records salvaged ${s.recordsSalvaged}, skipped ${s.recordsSkipped} (their session was dropped or never created)`,
    `kiln repair: sessions kept ${s.sessionsKept}, dropped ${s.sessionsDropped} (live at a gap ${s.dropped.liveAtGap}, no creation record ${s.dropped.noCreation})`,
    `kiln repair: old files moved to ${s.movedTo} (${s.movedFiles.join(', ')})`,
    `kiln repair: repaired ${s.dataDir}; summary in last-repair.json${torn}`,
    '',
  ].join('\n');
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}
