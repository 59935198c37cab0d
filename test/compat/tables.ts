import { CASES } from './express-session-cases.js';
import { FASTIFY_CASES } from './fastify-session-cases.js';
import { KOA_CASES } from './koa-session-cases.js';

/**
 * The migration guides' behaviour tables, made from the differential suites' cases, so
 * the docs say "same" exactly where a test asserts it and give the reason of each
 * asserted difference. `npm run docs:compat` writes them into the docs between their
 * markers; test/unit/compat-docs.test.ts fails when the docs and the suites part.
 */
const cell = (text: string) => text.replace(/\|/g, '\\|').replace(/\n/g, ' ');
const verdict = (why: string | undefined) => (why ? `**differs**: ${cell(why)}` : 'same');

export function compatTables(): Record<string, string> {
  const express = [
    '| area | express-session does | kiln/express | express-session + KilnStore |',
    '| --- | --- | --- | --- |',
    ...CASES.map((c) => `| ${cell(c.area)} | ${cell(c.name)} | ${verdict(c.differs?.['kiln/express']?.why)} | ${verdict(c.differs?.['express-session + KilnStore']?.why)} |`),
  ].join('\n');
  const fastify = ['| area | @fastify/session does | kiln/fastify |', '| --- | --- | --- |', ...FASTIFY_CASES.map((c) => `| ${cell(c.area)} | ${cell(c.name)} | ${verdict(c.kiln?.why)} |`)].join('\n');
  const koa = ['| koa-session does | kiln/koa |', '| --- | --- |', ...KOA_CASES.map((c) => `| ${cell(c.name)} | ${verdict(c.kiln?.why)} |`)].join('\n');
  return { 'express-session': express, '@fastify/session': fastify, 'koa-session': koa };
}

/** Where each table goes. */
export const TABLE_FILES: Record<string, string> = {
  'express-session': 'docs/migrating-from-express-session.md',
  '@fastify/session': 'docs/frameworks.md',
  'koa-session': 'docs/frameworks.md',
};

const start = (name: string) => `<!-- compat-table: ${name} (made by npm run docs:compat from test/compat; do not edit) -->`;
const END = '<!-- /compat-table -->';

/** `doc` with the named table between its markers replaced; throws when the markers are missing. */
export function withTable(doc: string, name: string, table: string): string {
  const a = doc.indexOf(start(name));
  const b = doc.indexOf(END, a);
  if (a < 0 || b < 0) throw new Error(`${TABLE_FILES[name]} has no markers for the ${name} table: add ${start(name)} … ${END}`);
  return `${doc.slice(0, a)}${start(name)}\n${table}\n${doc.slice(b)}`;
}
