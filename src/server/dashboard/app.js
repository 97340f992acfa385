// Eddy's dashboard: a client of the server's public API, with no build
// step. Three pages, chosen by the URL's hash:
//   #/            a SQL box, the jobs and the views (polled each second)
//   #/jobs/<id>   a job's dataflow graph and per-operator charts
//   #/views/<v>   a view followed live over SSE, as a table and a chart
"use strict";

const POLL_MS = 1000;
const HISTORY = 300; // points per chart: five minutes at one a second
const PALETTE = ["#1f6feb", "#1a7f37", "#cf222e", "#9a6700", "#8250df", "#bf3989", "#0a7ea4", "#57606a"];

// ---- helpers ---------------------------------------------------------------

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function svg(tag, attrs, ...children) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c instanceof Node ? c : String(c));
  return e;
}

const fmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });
function num(v) { return v === undefined || v === null ? "" : fmt.format(v); }

function time(ms) {
  if (!ms) return "";
  const d = new Date(ms);
  // A bounded input's last watermark is the end of time.
  if (Number.isNaN(d.getTime())) return "end of input";
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "").replace("Z", "");
}

// Arrow's JSON writes timestamps without a zone: they are UTC.
function parseTime(v) {
  if (typeof v === "number") return v / 1000;
  if (typeof v !== "string") return NaN;
  const zoned = /(Z|[+-]\d\d:?\d\d)$/.test(v) ? v : v + "Z";
  return Date.parse(zoned) / 1000;
}

function token() { return localStorage.getItem("eddy-token"); }

function headers(extra) {
  const h = Object.assign({}, extra);
  if (token()) h["Authorization"] = "Bearer " + token();
  return h;
}

class Unauthorized extends Error {}

// A request to the API; JSON in and out. Errors carry the body's message.
async function api(path, options) {
  const opts = options || {};
  const init = { method: opts.method || "GET", headers: headers() };
  if (opts.body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(opts.body);
  }
  const res = await fetch(path, init);
  if (res.status === 401) {
    showLogin();
    throw new Unauthorized("this server needs its token");
  }
  const body = await res.json().catch(() => ({}));
  if (!res.ok && !opts.keepErrors) {
    throw new Error((body.error && body.error.message) || res.status + " " + res.statusText);
  }
  return { status: res.status, body };
}

function setStatus(text, bad) {
  const s = document.getElementById("status");
  s.textContent = text;
  s.className = bad ? "error" : "muted";
}

function showLogin() {
  const form = document.getElementById("login");
  form.hidden = false;
  document.getElementById("token").focus();
}

// Polls `fn` each second until the page goes; the first call is at once.
function every(ms, fn) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    try {
      await fn();
      setStatus("updated " + new Date().toLocaleTimeString());
    } catch (e) {
      if (!(e instanceof Unauthorized)) {
        setStatus(String(e.message || e), true);
        console.error(e);
      }
    }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}

function stateCell(state, error) {
  return el("span", { class: "state " + state, title: error || undefined, text: state });
}

function table(columns, rows) {
  return el("table", {},
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", { class: c.num ? "num" : undefined, text: c.name })))),
    el("tbody", {}, rows));
}

// A table of an answer's rows (a SELECT's, a view's).
function rowsTable(columns, rows) {
  return table(
    columns.map((c) => ({ name: c.name, num: isNumeric(c.type) })),
    rows.map((r) => el("tr", {}, columns.map((c) => {
      const v = r[c.name];
      return el("td", { class: isNumeric(c.type) ? "num" : undefined, text: v === null ? "NULL" : typeof v === "object" ? JSON.stringify(v) : String(v) });
    }))));
}

function isNumeric(type) { return /^(U?Int|Float|Decimal)/.test(type || ""); }
function isTimestamp(type) { return /^Timestamp/.test(type || ""); }

// ---- the home page: SQL, jobs, views ----------------------------------------

function homePage(main) {
  const sql = el("textarea", { id: "sql", spellcheck: "false", placeholder: "CREATE MATERIALIZED VIEW v AS SELECT ...   (Ctrl+Enter runs)" });
  sql.value = sessionStorage.getItem("eddy-sql") || "";
  const results = el("div", { id: "results" });
  const run = async () => {
    sessionStorage.setItem("eddy-sql", sql.value);
    results.replaceChildren(el("p", { class: "muted", text: "running…" }));
    try {
      const { body } = await api("/api/sql", { method: "POST", body: { sql: sql.value }, keepErrors: true });
      results.replaceChildren(...renderResults(body));
      refresh();
    } catch (e) {
      results.replaceChildren(el("pre", { class: "error", text: String(e.message || e) }));
    }
  };
  sql.addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); run(); } });
  const jobs = el("div", { id: "jobs" });
  const views = el("div", { id: "views" });
  main.append(
    el("section", {}, el("h2", { text: "SQL" }), sql, el("button", { id: "run", onclick: run, text: "Run" }), results),
    el("section", {}, el("h2", { text: "Jobs" }), jobs),
    el("section", {}, el("h2", { text: "Materialized views" }), views));
  const refresh = async () => {
    const [j, v] = await Promise.all([api("/api/jobs"), api("/api/views")]);
    jobs.replaceChildren(jobsTable(j.body.jobs));
    views.replaceChildren(viewsTable(v.body.views));
  };
  return every(POLL_MS, refresh);
}

function renderResults(body) {
  const out = (body.results || []).map((r) => {
    switch (r.kind) {
      case "created": return el("p", {}, "Created ", el("b", { text: r.name || "" }));
      case "job": return el("p", {}, "Started job ", el("a", { href: "#/jobs/" + encodeURIComponent(r.job), text: r.job }));
      case "explain": return el("pre", { text: r.plan });
      case "info": return el("pre", { text: r.text });
      case "rows": return el("div", { class: "rows" }, rowsTable(r.columns, r.rows), el("p", { class: "muted", text: r.rows.length + " rows" }));
      default: return el("pre", { text: JSON.stringify(r, null, 2) });
    }
  });
  if (body.error) {
    const e = body.error;
    const where = e.line ? ` (line ${e.line}, column ${e.column})` : "";
    out.push(el("pre", { class: "error", id: "sql-error", text: e.rendered || e.message + where }));
  }
  return out;
}

function jobsTable(jobs) {
  if (!jobs.length) return el("p", { class: "muted", text: "No jobs yet: a CREATE SINK ... AS, INSERT INTO or CREATE MATERIALIZED VIEW starts one." });
  const cols = [{ name: "job" }, { name: "state" }, { name: "rows in", num: true }, { name: "rows out", num: true },
    { name: "watermark" }, { name: "restarts", num: true }, { name: "SQL" }, { name: "" }];
  return table(cols, jobs.map((j) => el("tr", { "data-job": j.id },
    el("td", {}, el("a", { href: "#/jobs/" + encodeURIComponent(j.id), text: j.id })),
    el("td", {}, stateCell(j.state, j.error)),
    el("td", { class: "num", text: num(j.rows_in) }),
    el("td", { class: "num", text: num(j.rows_out) }),
    el("td", { text: time(j.watermark_ms) }),
    el("td", { class: "num", text: num(j.restarts) }),
    el("td", { class: "sql", title: j.sql, text: j.sql }),
    el("td", {}, controls(j)))));
}

// Stop, cancel or resume, as the job's state allows.
function controls(job) {
  const act = (verb) => async () => {
    try { await api(`/api/jobs/${encodeURIComponent(job.id)}/${verb}`, { method: "POST" }); }
    catch (e) { setStatus(String(e.message || e), true); }
  };
  if (job.state === "running") {
    return [el("button", { onclick: act("stop"), title: "a final checkpoint, then stop", text: "Stop" }),
      el("button", { onclick: act("cancel"), title: "stop now, without a checkpoint", text: "Cancel" })];
  }
  if (job.state !== "finished") return [el("button", { onclick: act("resume"), text: "Resume" })];
  return [];
}

function viewsTable(views) {
  if (!views.length) return el("p", { class: "muted", text: "No materialized views." });
  return table([{ name: "view" }, { name: "columns" }, { name: "rows", num: true }],
    views.map((v) => el("tr", { "data-view": v.name },
      el("td", {}, el("a", { href: "#/views/" + encodeURIComponent(v.name), text: v.name })),
      el("td", { class: "muted", text: v.columns.map((c) => `${c.name} ${c.type}`).join(", ") }),
      el("td", { class: "num", text: num(v.rows) }))));
}

// ---- a job's page: graph and charts -------------------------------------------

function jobPage(main, id) {
  const head = el("div");
  const graphBox = el("div", { id: "graph" });
  const chartBox = el("div", { class: "charts" });
  const checkpoint = el("div", { id: "checkpoint" });
  const operators = el("div", { id: "operators" });
  const plan = el("pre", { id: "plan" });
  main.append(
    el("section", {}, head),
    el("section", {}, el("h2", { text: "Dataflow" }), graphBox),
    el("section", {}, el("h2", { text: "Per operator" }), chartBox),
    el("section", {}, el("h2", { text: "Checkpoints" }), checkpoint),
    el("section", {}, el("h2", { text: "Subtasks" }), operators),
    el("section", {}, el("details", {}, el("summary", { text: "Plan (EXPLAIN)" }), plan)));
  let charts = null;
  let last = null; // the previous sample, for rates
  const refresh = async () => {
    const { body: job } = await api("/api/jobs/" + encodeURIComponent(id));
    head.replaceChildren(...[
      el("h2", {}, "Job ", el("span", { id: "job-id", text: job.id }), " ", stateCell(job.state, job.error)),
      job.error ? el("pre", { class: "error", text: job.error }) : null,
      el("pre", { text: job.sql }),
      el("div", {}, controls(job))].filter(Boolean));
    plan.textContent = job.plan;
    if (!job.graph) {
      graphBox.replaceChildren(el("p", { class: "muted", text: "The job has not run since the server started: resume it to see its dataflow." }));
      return;
    }
    const sample = sampleOf(job);
    const rates = last ? ratesBetween(last, sample) : null;
    last = sample;
    if (!charts) {
      graphBox.replaceChildren(drawGraph(job.graph));
      charts = makeCharts(chartBox, job.graph.nodes);
    }
    updateGraph(graphBox, rates);
    if (rates) charts.push(rates, sample);
    checkpoint.replaceChildren(checkpointTable(job.checkpoint));
    const ops = [...(job.operators || [])];
    ops.sort((a, b) => (nodeOf(a.operator, job.graph) ?? -1) - (nodeOf(b.operator, job.graph) ?? -1) || a.subtask - b.subtask);
    operators.replaceChildren(subtaskTable(ops));
  };
  const stop = every(POLL_MS, refresh);
  return () => { stop(); if (charts) charts.destroy(); };
}

// The node an operator belongs to: its metrics label is `node<id> <name>`,
// or a source's `<stage>-source Source` (the graph names its stage).
function nodeOf(operator, graph) {
  const m = /^node(\d+)\b/.exec(operator);
  if (m) return Number(m[1]);
  const s = /^(.*)-source\b/.exec(operator);
  const node = s && graph.nodes.find((n) => n.stage === s[1]);
  return node ? node.id : null;
}

// Per node, the job's counters summed over its subtasks, at one moment.
function sampleOf(job) {
  const nodes = new Map();
  for (const o of job.operators || []) {
    const n = nodeOf(o.operator, job.graph);
    if (n === null) continue;
    const s = nodes.get(n) || { rowsIn: 0, rowsOut: 0, blockedMs: 0, subtasks: 0, watermark: null };
    s.rowsIn += o.rows_in;
    s.rowsOut += o.rows_out;
    s.blockedMs += o.backpressure_ms;
    s.subtasks += 1;
    if (o.watermark_ms) s.watermark = s.watermark === null ? o.watermark_ms : Math.min(s.watermark, o.watermark_ms);
    nodes.set(n, s);
  }
  const c = job.checkpoint || {};
  return { at: Date.now(), nodes, checkpointMs: c.completed ? c.last_duration_ms : null };
}

// Rows per second and the share of time blocked, per node, between two samples.
function ratesBetween(a, b) {
  const dt = Math.max((b.at - a.at) / 1000, 0.001);
  const nodes = new Map();
  for (const [n, s] of b.nodes) {
    const p = a.nodes.get(n);
    if (!p) continue;
    // A source has no input: its throughput is what it emits.
    const rows = s.rowsIn > 0 || p.rowsIn > 0 ? s.rowsIn - p.rowsIn : s.rowsOut - p.rowsOut;
    nodes.set(n, {
      rowsPerSec: Math.max(rows, 0) / dt,
      blockedPct: Math.min(100, Math.max(0, (s.blockedMs - p.blockedMs) / (dt * 10 * Math.max(s.subtasks, 1)))),
      watermarkLagSec: s.watermark === null ? null : (b.at - s.watermark) / 1000,
    });
  }
  return { at: b.at, nodes };
}

// The graph, left to right: a node's column is its longest path from a source.
function drawGraph(graph) {
  const W = 190, H = 58, GX = 70, GY = 24;
  const layer = new Map();
  for (const n of graph.nodes) {
    const inputs = graph.edges.filter((e) => e.to === n.id).map((e) => layer.get(e.from) ?? 0);
    layer.set(n.id, inputs.length ? Math.max(...inputs) + 1 : 0);
  }
  const rowsOf = new Map();
  const pos = new Map();
  for (const n of graph.nodes) {
    const l = layer.get(n.id);
    const row = rowsOf.get(l) || 0;
    rowsOf.set(l, row + 1);
    pos.set(n.id, { x: 10 + l * (W + GX), y: 10 + row * (H + GY) });
  }
  const width = 20 + (Math.max(...layer.values()) + 1) * (W + GX) - GX;
  const height = 20 + Math.max(...rowsOf.values()) * (H + GY) - GY;
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, style: `max-width:${width}px` },
    svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto" },
      svg("path", { d: "M0,0 L10,5 L0,10 z", fill: "#6b7585" }))));
  for (const e of graph.edges) {
    const a = pos.get(e.from), b = pos.get(e.to);
    if (!a || !b) continue;
    const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
    root.append(svg("path", { class: "edge " + e.kind, d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}` }));
    root.append(svg("text", { class: "edge-label", x: mx, y: (y1 + y2) / 2 - 4, "text-anchor": "middle" }, e.late ? e.kind + " (late)" : e.kind));
  }
  for (const n of graph.nodes) {
    const p = pos.get(n.id);
    const title = svg("title", {}, n.detail || n.kind);
    root.append(svg("g", { class: "node", "data-node": n.id, transform: `translate(${p.x},${p.y})` },
      title,
      svg("rect", { width: W, height: H }),
      svg("text", { x: 8, y: 17, "font-weight": "600" }, `[${n.id}] ${n.kind}`),
      svg("text", { x: 8, y: 33, class: "muted" }, `parallelism ${n.parallelism}`),
      svg("text", { x: 8, y: 49, class: "rate" }, "")));
  }
  return root;
}

function updateGraph(box, rates) {
  if (!rates) return;
  for (const g of box.querySelectorAll("g.node")) {
    const r = rates.nodes.get(Number(g.dataset.node));
    g.querySelector("text.rate").textContent = r ? `${num(r.rowsPerSec)} rows/s` + (r.blockedPct >= 1 ? `, ${num(r.blockedPct)}% blocked` : "") : "";
  }
}

// Four charts with one series per node (the checkpoint chart: one series).
function makeCharts(box, nodes) {
  const specs = [
    { title: "Throughput (rows/s)", value: (r) => r.rowsPerSec },
    { title: "Watermark lag behind wall time (s)", value: (r) => r.watermarkLagSec },
    { title: "Backpressure (% of time blocked)", value: (r) => r.blockedPct },
  ];
  const xs = [];
  const series = specs.map(() => nodes.map(() => []));
  const checkpointMs = [];
  const width = Math.max(Math.min(box.clientWidth || 640, 680), 320);
  const opts = (title, labels) => ({
    width, height: 200,
    scales: { x: { time: true } },
    series: [{}, ...labels.map((label, i) => ({ label, stroke: PALETTE[i % PALETTE.length], width: 1.5, spanGaps: true }))],
    legend: { live: false },
  });
  const nodeLabels = nodes.map((n) => `[${n.id}] ${n.kind}`);
  const plots = [];
  const mount = (title, labels, data) => {
    const target = el("div", { class: "chart" }, el("h3", { text: title }));
    box.append(target);
    plots.push({ plot: new uPlot(opts(title, labels), data, target), data });
  };
  specs.forEach((s, i) => mount(s.title, nodeLabels, [xs, ...series[i]]));
  mount("Last checkpoint's duration (ms)", ["checkpoint"], [xs, checkpointMs]);
  return {
    push(rates, sample) {
      xs.push(rates.at / 1000);
      specs.forEach((s, i) => nodes.forEach((n, j) => {
        const r = rates.nodes.get(n.id);
        series[i][j].push(r ? s.value(r) : null);
      }));
      checkpointMs.push(sample.checkpointMs);
      if (xs.length > HISTORY) {
        xs.shift();
        series.forEach((per) => per.forEach((ys) => ys.shift()));
        checkpointMs.shift();
      }
      // At least the last minute, so that the first points do not span years.
      const max = xs[xs.length - 1];
      for (const p of plots) {
        p.plot.setData(p.data);
        p.plot.setScale("x", { min: Math.min(xs[0], max - 60), max });
      }
    },
    destroy() { for (const p of plots) p.plot.destroy(); },
  };
}

function checkpointTable(c) {
  if (!c) return el("p", { class: "muted", text: "none yet" });
  return table([{ name: "completed", num: true }, { name: "failed", num: true }, { name: "last id", num: true },
    { name: "last duration (ms)", num: true }, { name: "last size (bytes)", num: true }, { name: "alignment (ms)", num: true }, { name: "longest (ms)", num: true }],
  [el("tr", {}, [c.completed, c.failed, c.last_id, c.last_duration_ms, c.last_size_bytes, c.last_alignment_ms, c.max_duration_ms]
    .map((v) => el("td", { class: "num", text: num(v) })))]);
}

function subtaskTable(ops) {
  return table([{ name: "operator" }, { name: "subtask", num: true }, { name: "rows in", num: true }, { name: "rows out", num: true },
    { name: "late rows", num: true }, { name: "blocked (ms)", num: true }, { name: "watermark" }],
  ops.map((o) => el("tr", {},
    el("td", { text: o.operator }), el("td", { class: "num", text: o.subtask }),
    el("td", { class: "num", text: num(o.rows_in) }), el("td", { class: "num", text: num(o.rows_out) }),
    el("td", { class: "num", text: num(o.late_rows) }), el("td", { class: "num", text: num(o.backpressure_ms) }),
    el("td", { text: time(o.watermark_ms) }))));
}

// ---- a view's page: a live table and chart ------------------------------------

function viewPage(main, name) {
  const info = el("p", { class: "muted", id: "view-state", text: "connecting…" });
  const chartBox = el("div", { id: "view-chart" });
  const pick = el("select", { id: "view-column" });
  const rowsBox = el("div", { id: "view-rows" });
  main.append(
    el("section", {}, el("h2", {}, "View ", el("span", { text: name }), " · ", el("span", { id: "view-count", text: "0" }), " rows"), info),
    el("section", {}, el("h2", {}, "Chart: ", pick, " per window_end"), chartBox),
    el("section", {}, el("h2", { text: "Rows" }), rowsBox));
  const rows = new Map(); // a row's JSON -> { row, n }: the view as a multiset
  let columns = [];
  let changes = 0;
  let dirty = true;
  let chart = null;
  const apply = (op, row) => {
    const key = JSON.stringify(row);
    const cur = rows.get(key);
    if (op === "+I" || op === "+U") rows.set(key, { row, n: (cur ? cur.n : 0) + 1 });
    else if (cur && cur.n > 1) cur.n -= 1;
    else rows.delete(key);
    changes += 1;
    dirty = true;
  };
  const timeColumn = () => (columns.find((c) => c.name === "window_end") || columns.find((c) => isTimestamp(c.type)) || {}).name;
  const render = () => {
    if (!dirty) return;
    dirty = false;
    const all = [];
    for (const { row, n } of rows.values()) for (let i = 0; i < n; i++) all.push(row);
    document.getElementById("view-count").textContent = all.length;
    const t = timeColumn();
    if (t) all.sort((a, b) => parseTime(b[t]) - parseTime(a[t]));
    rowsBox.replaceChildren(rowsTable(columns, all.slice(0, 200)),
      all.length > 200 ? el("p", { class: "muted", text: `the latest 200 of ${all.length}` }) : "");
    info.textContent = `live · ${changes} changes received`;
    drawChart(all, t);
  };
  const drawChart = (all, t) => {
    const y = pick.value;
    if (!t || !y) {
      chartBox.replaceChildren(el("p", { class: "muted", text: "The chart needs a timestamp column (window_end) and a numeric column." }));
      return;
    }
    // Rows that share a window_end are summed: one point per window.
    const sums = new Map();
    for (const r of all) {
      const x = parseTime(r[t]);
      if (!Number.isFinite(x) || r[y] === null || r[y] === undefined) continue;
      sums.set(x, (sums.get(x) || 0) + Number(r[y]));
    }
    const xs = [...sums.keys()].sort((a, b) => a - b);
    const data = [xs, xs.map((x) => sums.get(x))];
    if (!chart || chart.column !== y) {
      if (chart) chart.plot.destroy();
      chartBox.replaceChildren();
      const opts = { width: Math.max(Math.min(chartBox.clientWidth || 900, 1200), 320), height: 260, scales: { x: { time: true } },
        series: [{}, { label: `sum(${y})`, stroke: PALETTE[0], width: 2, points: { show: xs.length < 60 } }] };
      chart = { column: y, plot: new uPlot(opts, data, chartBox) };
    } else {
      chart.plot.setData(data);
    }
  };
  pick.addEventListener("change", () => { dirty = true; render(); });
  const timer = setInterval(render, 250);
  const abort = new AbortController();
  (async () => {
    try {
      const { body } = await api("/api/views");
      const view = body.views.find((v) => v.name === name);
      if (!view) { info.textContent = `there is no materialized view '${name}'`; info.className = "error"; return; }
      columns = view.columns;
      for (const c of columns.filter((c) => isNumeric(c.type))) pick.append(el("option", { value: c.name, text: c.name }));
      dirty = true; // draw the table's header and the chart even before a row comes
      follow(`/api/views/${encodeURIComponent(name)}/subscribe`, abort.signal, {
        change: (data) => apply(data.op, data.row),
        reset: () => { rows.clear(); dirty = true; },
        close: (data) => { rows.clear(); dirty = true; info.textContent = "reconnecting: " + data.reason; },
      }, (state) => { info.textContent = state; });
    } catch (e) {
      if (!(e instanceof Unauthorized)) { info.textContent = String(e.message || e); info.className = "error"; }
    }
  })();
  return () => { abort.abort(); clearInterval(timer); if (chart) chart.plot.destroy(); };
}

// Follows a Server-Sent Events stream through fetch (which, unlike
// EventSource, can send the token), reconnecting with the last event id:
// the server resumes after it, or sends a fresh snapshot.
async function follow(url, signal, handlers, onState) {
  let lastId = null;
  let backoff = 500;
  while (!signal.aborted) {
    try {
      const res = await fetch(url, { headers: headers(lastId ? { "Last-Event-ID": lastId } : {}), signal });
      if (res.status === 401) { showLogin(); return; }
      if (!res.ok) throw new Error(res.status + " " + res.statusText);
      backoff = 500;
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const event = parseEvent(block);
          if (!event) continue;
          if (event.id) lastId = event.id;
          if (event.event === "close") lastId = null; // start again from a snapshot
          const handle = handlers[event.event];
          if (handle) handle(event.data ? JSON.parse(event.data) : {});
        }
      }
    } catch (e) {
      if (signal.aborted) return;
      onState("disconnected (" + (e.message || e) + "), retrying");
    }
    await new Promise((r) => setTimeout(r, backoff));
    backoff = Math.min(backoff * 2, 10000);
  }
}

function parseEvent(block) {
  const event = { event: "message", id: null, data: "" };
  let data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const i = line.indexOf(":");
    const field = i < 0 ? line : line.slice(0, i);
    const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
    if (field === "event") event.event = value;
    else if (field === "id") event.id = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length && event.event === "message") return null;
  event.data = data.join("\n");
  return event;
}

// ---- routing ------------------------------------------------------------------

let leave = null;
function route() {
  if (leave) leave();
  const main = document.getElementById("main");
  main.replaceChildren();
  const hash = location.hash.replace(/^#/, "") || "/";
  let m;
  if ((m = /^\/jobs\/(.+)$/.exec(hash))) leave = jobPage(main, decodeURIComponent(m[1]));
  else if ((m = /^\/views\/(.+)$/.exec(hash))) leave = viewPage(main, decodeURIComponent(m[1]));
  else leave = homePage(main);
}

document.getElementById("login").addEventListener("submit", (e) => {
  e.preventDefault();
  localStorage.setItem("eddy-token", document.getElementById("token").value);
  document.getElementById("login").hidden = true;
  route();
});
window.addEventListener("hashchange", route);
route();
