/**
 * `node dist/bench/tier-vs-redis-main.js [--quick] [--sessions=N] [--json=FILE]`: the tier
 * against Redis alone (bench/tier-vs-redis.ts); 1,000,000 sessions, 100,000 with --quick.
 * Prints the table; --json also writes the figures.
 */
import { writeFileSync } from 'node:fs';
import { tierVsRedis, tierVsRedisTable } from './tier-vs-redis.js';

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const value = (name: string): string | undefined => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const count = Number(value('sessions') ?? (quick ? 100_000 : 1_000_000));
const started = Date.now();
const result = await tierVsRedis(count, quick, (line) => console.log(line));
const json = value('json');
if (json) writeFileSync(json, `${JSON.stringify(result, null, 2)}\n`);
console.log(`\n${tierVsRedisTable(result)}\n\n(${((Date.now() - started) / 60_000).toFixed(1)} minutes)`);
process.exit(0);
