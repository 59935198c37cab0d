// Regenerates docs/errors.md from the registry (`npm run docs:errors` after a build).
import { writeFileSync } from 'node:fs';
import { ERROR_REGISTRY } from '../dist/src/errors/registry.js';
import { httpStatusOf, RETRY_AFTER_SECONDS } from '../dist/src/errors/index.js';

const head = `# Error codes

Every error Kiln raises is a \`KilnError\` with \`name\` \`"KilnError"\`, a stable \`code\` from this table, a message for people, optional \`details\` (machine-readable facts such as the attribute name or the limit) and, where another error caused it, \`cause\`. Match on \`code\`, never on the message. HTTP answers of the balancer carry the same codes in a JSON body \`{ code, message }\`.

\`\`\`js
import { isKilnError } from 'kiln';
try { await session.commit(); }
catch (err) {
  if (isKilnError(err, 'KILN_ERR_SESSION_TOO_LARGE')) return res.status(413).end();
  throw err;
}
\`\`\`

\`retryable\` says whether the same operation may succeed if tried again unchanged; the client already retries what is safe to retry (a commit whose lease was lost on the way is resent under a new lease with the same commit id and base version).

The registry lives in \`src/errors/registry.ts\`; a unit test keeps this page and the registry in step (\`npm run docs:errors\` rewrites it).

\`HTTP\` is the status the error carries as \`status\`/\`statusCode\` (with \`expose\` true for 4xx, and \`headers\` holding \`Retry-After: ${RETRY_AFTER_SECONDS}\` for 503): Express's, Koa's, Fastify's and Hono's default error handlers answer with it, so an unavailable tier is a 503 the client may retry, not a 500.

| code | HTTP | retryable | meaning |
| --- | --- | --- | --- |
`;
const rows = Object.entries(ERROR_REGISTRY).map(([code, e]) => `| \`${code}\` | ${httpStatusOf(code)} | ${e.retryable ? 'yes' : 'no'} | ${e.meaning} |`);
writeFileSync(new URL('../docs/errors.md', import.meta.url), `${head}${rows.join('\n')}\n`);
