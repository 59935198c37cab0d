import { BODY } from './page/html.js';
import { SCRIPT_CHARTS } from './page/script-charts.js';
import { SCRIPT_BOOT, SCRIPT_CORE } from './page/script-core.js';
import { SCRIPT_DIAGRAM } from './page/script-diagram.js';
import { SCRIPT_EVENTS } from './page/script-events.js';
import { SCRIPT_SESSIONS } from './page/script-sessions.js';
import { STYLES } from './page/styles.js';

/**
 * The web console, served by the admin port at `/`: one page, no dependencies, no CDN.
 * It asks for the token in a form (or takes it from the URL fragment, #token=…, which
 * browsers never send), keeps it in sessionStorage and sends it in the Authorization
 * header; the events stream, which cannot carry a header, opens with a single-use ticket.
 * Its parts live in page/: the cluster diagram and table, charts, events pane, sessions
 * and largest-sessions views, all drawn in SVG by the page's own script.
 *
 * The page's one script and one style carry the nonce of its Content-Security-Policy;
 * nothing else on it may run (no inline handlers, no style attributes in the markup; the
 * script sets element styles through the DOM, which style-src does not govern).
 */
export function consolePage(nonce: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Kiln console</title>
<style nonce="${nonce}">${STYLES}</style>
</head>
<body>${BODY}<script nonce="${nonce}">
${SCRIPT_CORE}
${SCRIPT_CHARTS}
${SCRIPT_DIAGRAM}
${SCRIPT_EVENTS}
${SCRIPT_SESSIONS}
${SCRIPT_BOOT}
</script>
</body>
</html>
`;
}
