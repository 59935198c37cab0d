/** The console page's one style sheet (it carries the page's CSP nonce). */
export const STYLES = `
  :root { --fire: #c2410c; --ink: #1c1917; --muted: #78716c; --line: #e7e5e4; --ok: #15803d; --warn: #b45309; --dead: #b91c1c; }
  * { box-sizing: border-box; }
  body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: var(--ink); background: #fafaf9; }
  header { background: var(--ink); color: white; padding: .6rem 1.2rem; display: flex; gap: 1.5rem; align-items: baseline; flex-wrap: wrap; }
  header h1 { margin: 0; font-size: 1.2rem; color: #fdba74; }
  main { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; padding: 1rem; }
  section { background: white; border: 1px solid var(--line); border-radius: .5rem; padding: .8rem 1rem; min-width: 0; }
  section.wide { grid-column: 1 / -1; }
  h2 { font-size: 1rem; margin: 0 0 .5rem; }
  h2 small { font-weight: normal; color: var(--muted); margin-left: .5rem; }
  table { width: 100%; border-collapse: collapse; }
  th, td { text-align: left; padding: .25rem .4rem; border-bottom: 1px solid var(--line); font-variant-numeric: tabular-nums; }
  td.num, th.num { text-align: right; }
  tr.gone td { color: var(--dead); }
  tfoot td { font-weight: 600; }
  .ok { color: var(--ok); } .warn { color: var(--warn); } .dead { color: var(--dead); font-weight: 600; }
  .nodata { color: var(--muted); }
  .toolbar { display: flex; gap: .4rem; align-items: center; margin-bottom: .5rem; flex-wrap: wrap; }
  .toolbar button.on { background: var(--ink); }
  .charts { display: grid; grid-template-columns: repeat(3, 1fr); gap: .8rem; }
  .chart { border: 1px solid var(--line); border-radius: .4rem; padding: .4rem; position: relative; }
  .chart .value { float: right; font-weight: 600; }
  .chart svg { width: 100%; height: 130px; display: block; }
  .chart .tip { position: absolute; pointer-events: none; background: var(--ink); color: white; font-size: 12px; padding: .1rem .35rem; border-radius: .2rem; white-space: nowrap; }
  svg text { font: 11px system-ui, sans-serif; fill: var(--muted); }
  svg .axis { stroke: #d6d3d1; stroke-width: 1; }
  svg .grid { stroke: #f0efee; stroke-width: 1; }
  svg .line { fill: none; stroke: var(--fire); stroke-width: 2; }
  svg .cursor { stroke: var(--ink); stroke-width: 1; stroke-dasharray: 3 3; }
  #diagram svg { width: 100%; display: block; }
  #diagram .node rect { fill: white; stroke: var(--ok); stroke-width: 2; }
  #diagram .node.stale rect { stroke: var(--warn); }
  #diagram .node.gone rect { fill: #fee2e2; stroke: var(--dead); }
  #diagram .node.gone text { fill: var(--dead); }
  #diagram .node.tier rect, #diagram .node.balancer rect { stroke: var(--ink); fill: #f5f5f4; }
  #diagram .node.balancer.gone rect { fill: #fee2e2; stroke: var(--dead); }
  #diagram .node text.title { font-size: 13px; font-weight: 600; fill: var(--ink); }
  #diagram .edge { stroke: #a8a29e; stroke-width: 1.5; marker-end: url(#arrow); }
  #diagram .edge.gone { stroke: var(--dead); stroke-dasharray: 4 4; }
  #diagram text.rate { fill: var(--fire); font-weight: 600; }
  input, select { padding: .3rem .5rem; }
  #search { width: 60%; }
  button { background: var(--fire); color: white; border: 0; border-radius: .3rem; padding: .35rem .8rem; cursor: pointer; }
  #results li, #events li { font-family: ui-monospace, monospace; font-size: 12px; list-style: none; padding: .15rem 0; border-bottom: 1px dotted var(--line); }
  #results li { cursor: pointer; }
  #results, #events { padding: 0; margin: .5rem 0 0; max-height: 18rem; overflow: auto; }
  #events li .type { display: inline-block; width: 4.5rem; color: var(--muted); }
  #events li.error .type { color: var(--dead); }
  #detail pre { font-size: 12px; white-space: pre-wrap; }
  .muted { color: var(--muted); }
  #login { max-width: 28rem; margin: 4rem auto; background: white; border: 1px solid var(--line); border-radius: .5rem; padding: 1.2rem 1.4rem; }
  #login label { display: block; margin-bottom: .4rem; font-weight: 600; }
  #login input { width: 100%; margin-bottom: .6rem; font-family: ui-monospace, monospace; }
  #login-error { color: var(--dead); min-height: 1.2em; margin: .4rem 0 0; }
  .bars svg { width: 100%; height: 150px; display: block; }
  .bars rect { fill: var(--fire); }
  [hidden] { display: none !important; }
`;
