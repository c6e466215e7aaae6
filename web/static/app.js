// The Loom dashboard: plain JavaScript, no build step. Each page polls its JSON endpoint
// under /api/ (the live tail reads Server-Sent Events); the session cookie goes with each.
"use strict";

const main = document.getElementById("main");
const statusBar = document.getElementById("status");
let timer = null;
let tail = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "on") for (const [ev, fn] of Object.entries(value)) node.addEventListener(ev, fn);
    else if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function api(path) {
  const response = await fetch(path, { credentials: "same-origin" });
  if (response.status === 401) { window.location = "/login"; throw new Error("logged out"); }
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  return response.json();
}

function ago(ms) {
  if (!ms) return "-";
  const s = Math.max(0, (Date.now() - ms) / 1000);
  return s < 60 ? `${s.toFixed(0)} s ago` : `${(s / 60).toFixed(0)} min ago`;
}

function clock(ms) { return new Date(ms).toISOString().slice(11, 23); }

function show(...nodes) {
  main.replaceChildren(...nodes.filter((n) => n !== null && n !== undefined));
}

function table(headers, rows, testid) {
  return el("table", { "data-testid": testid },
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows));
}

function sparkline(values) {
  const w = 120, h = 24, max = Math.max(1, ...values);
  const step = values.length > 1 ? w / (values.length - 1) : w;
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(h - (v / max) * (h - 2) - 1).toFixed(1)}`);
  return svg("svg", { width: w, height: h, class: "spark", viewBox: `0 0 ${w} ${h}` },
    svg("polyline", { points: points.join(" "), fill: "none" }));
}

function poll(render, every) {
  const run = async () => {
    try { await render(); statusBar.textContent = `updated ${clock(Date.now())}`; }
    catch (err) { statusBar.textContent = String(err); }
  };
  run();
  timer = setInterval(run, every);
}

// ---------------------------------------------------------------- Agents

// Agents whose process went away (or that stopped) leave the table for a list of their own:
// the directory keeps a disconnected agent's entry until its id is taken again or forgotten.
const GONE = new Set(["disconnected", "stopped"]);

async function renderAgents() {
  const all = await api("/api/agents");
  const live = all.filter((a) => !GONE.has(a.status));
  const gone = all.filter((a) => GONE.has(a.status));
  const rows = live.map((a) => el("tr", { "data-agent": a.id, class: "clickable",
      on: { click: () => { window.location.hash = `#agent/${encodeURIComponent(a.id)}`; } } },
    el("td", {}, el("a", { href: `#agent/${encodeURIComponent(a.id)}` }, a.id)),
    el("td", {}, a.node),
    el("td", {}, el("span", { class: `status ${a.status}` }, a.status)),
    el("td", { class: "num" }, a.mailbox_depth),
    el("td", { class: "num" }, a.restarts),
    el("td", {}, a.capabilities.join(", ") || "-"),
    el("td", {}, ago(a.last_heartbeat_ms))));
  show(el("h1", {}, `Agents (${live.length})`),
    table(["id", "node", "status", "mailbox", "restarts", "capabilities", "last heartbeat"],
      rows, "agents"),
    gone.length ? el("h2", {}, `Gone (${gone.length})`) : null,
    gone.length ? table(["id", "status", "last heartbeat"], gone.map((a) => el("tr", { "data-agent": a.id },
      el("td", {}, el("a", { href: `#agent/${encodeURIComponent(a.id)}` }, a.id)),
      el("td", {}, el("span", { class: `status ${a.status}` }, a.status)),
      el("td", {}, ago(a.last_heartbeat_ms)))), "agents-gone") : null);
}

async function renderAgent(id) {
  const data = await api(`/api/agents/${encodeURIComponent(id)}`);
  const a = data.agent;
  const facts = a ? el("dl", { class: "facts" },
    ["status", "node", "mailbox_depth", "in_flight", "restarts"].map((k) => [el("dt", {}, k), el("dd", {}, a[k])]),
    el("dt", {}, "capabilities"), el("dd", {}, a.capabilities.join(", ") || "-"),
    el("dt", {}, "topics"), el("dd", {}, a.patterns.join(", "))) : el("p", {}, "Not in the directory now.");
  show(
    el("h1", {}, el("a", { href: "#agents" }, "Agents"), " / ", id), facts,
    el("h2", {}, "Turns"),
    table(["started", "outcome", "iterations", "tokens"], data.turns.map((t) => el("tr", {},
      el("td", {}, el("a", { href: `#turn/${encodeURIComponent(t.key)}` }, clock(t.started_ms))),
      el("td", {}, t.ended ? t.outcome : "running"), el("td", {}, t.iterations),
      el("td", {}, tokens(t.usage)))), "agent-turns"),
    el("h2", {}, "Tool calls"),
    table(["at", "tool", "duration", "result"], data.tool_calls.map((c) => el("tr", {},
      el("td", {}, clock(c.at_ms)), el("td", {}, c.name), el("td", {}, `${(c.duration_s * 1000).toFixed(0)} ms`),
      el("td", { class: c.is_error ? "error" : "" }, (c.content || "").slice(0, 120)))), "agent-tools"),
    el("h2", {}, "Recent events"),
    table(["time", "topic", "type", "payload"], data.recent.map((e) => el("tr", {},
      el("td", {}, clock(e.timestamp_ms)), el("td", {}, e.topic), el("td", {}, e.type),
      el("td", { class: "payload" }, e.payload.slice(0, 160)))), "agent-events"));
}

function tokens(usage) {
  if (!usage || (!usage.prompt_tokens && !usage.completion_tokens)) return "-";
  return `${usage.prompt_tokens || 0} in / ${usage.completion_tokens || 0} out`;
}

// ---------------------------------------------------------------- Topology

async function renderTopology() {
  const g = await api("/api/topology");
  const rowH = 22, top = 30, width = 980;
  // The shorter column is centred against the longer, so edges fan evenly.
  const shift = (a, b) => Math.max(0, Math.floor((a - b) / 2)) * rowH;
  const agentTop = top + shift(g.topics.length, g.agents.length);
  const topicTop = top + shift(g.agents.length, g.topics.length);
  const agentY = new Map(g.agents.map((a, i) => [a.id, agentTop + i * rowH]));
  const topicY = new Map(g.topics.map((t, i) => [t.id, topicTop + i * rowH]));
  const height = top + Math.max(g.agents.length, g.topics.length, 1) * rowH + 10;
  const ax = 200, tx = width - 260;
  const edges = g.edges.map((e) => {
    const publishes = e.kind === "publishes";
    const y1 = publishes ? agentY.get(e.from) : agentY.get(e.to);
    const y2 = publishes ? topicY.get(e.to) : topicY.get(e.from);
    if (y1 === undefined || y2 === undefined) return null;
    const mid = (ax + tx) / 2;
    const path = svg("path", { d: `M${ax},${y1} C${mid},${y1} ${mid},${y2} ${tx},${y2}`,
      class: `edge ${e.kind}${e.rate > 0 ? " active" : ""}`,
      "stroke-width": Math.min(6, 1 + Math.log2(1 + e.rate)).toFixed(1) });
    path.append(svg("title", {}, `${e.from} ${e.kind} ${e.to}: ${e.rate}/s`));
    return path;
  });
  const agentNodes = g.agents.map((a) => svg("g", { class: `node agent ${a.status}`, "data-node": a.id },
    svg("circle", { cx: ax, cy: agentY.get(a.id), r: 6 }),
    svg("text", { x: ax - 12, y: agentY.get(a.id) + 4, "text-anchor": "end" }, a.id)));
  const topicNodes = g.topics.map((t) => svg("g", { class: "node topic", "data-node": t.id },
    svg("rect", { x: tx - 6, y: topicY.get(t.id) - 6, width: 12, height: 12 }),
    svg("text", { x: tx + 12, y: topicY.get(t.id) + 4 }, `${t.id}${t.rate ? `  ${t.rate}/s` : ""}`)));
  const picture = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, "data-testid": "topology" },
    svg("text", { x: ax, y: 16, "text-anchor": "end", class: "heading" }, "agents"),
    svg("text", { x: tx, y: 16, class: "heading" }, "topics"),
    edges, agentNodes, topicNodes);
  show(el("h1", {}, "Topology"),
    el("p", { class: "hint" }, "Edges agent → topic: it published there (seen while this page is open); topic → agent: it subscribes. Width: events/s."),
    picture);
}

// ---------------------------------------------------------------- Topics

async function renderTopics() {
  const t = await api("/api/topics");
  show(el("h1", {}, "Topics"),
    el("p", {}, `published ${t.published}, unrouted ${t.unrouted}, dropped ${t.dropped}`),
    table(["topic", "rate /s", "last minute", "published", "delivered", "unrouted", "dropped"],
      t.topics.map((r) => el("tr", { "data-topic": r.topic },
        el("td", {}, r.topic), el("td", { class: "num" }, r.rate), el("td", {}, sparkline(r.spark)),
        el("td", { class: "num" }, r.published), el("td", { class: "num" }, r.delivered),
        el("td", { class: "num" }, r.unrouted), el("td", { class: r.dropped ? "num error" : "num" }, r.dropped))),
      "topics"),
    el("h2", {}, "Subscriptions"),
    table(["id", "patterns", "owner", "QoS", "queued", "high water", "delivered", "dropped", "waiting publishers"],
      t.subscriptions.map((s) => el("tr", {},
        el("td", {}, s.id), el("td", {}, s.patterns.join(", ")), el("td", {}, s.owner || "-"),
        el("td", {}, s.qos), el("td", { class: "num" }, `${s.queued}/${s.capacity}`),
        el("td", { class: "num" }, s.high_water), el("td", { class: "num" }, s.delivered),
        el("td", { class: s.dropped ? "num error" : "num" }, s.dropped),
        el("td", { class: "num" }, s.waiting_publishers))), "subscriptions"));
}

// ---------------------------------------------------------------- Live tail

function renderTail() {
  const pattern = el("input", { id: "tail-pattern", value: sessionStorage.getItem("tail") || ">", size: 30 });
  const pause = el("button", { id: "tail-pause", type: "button" }, "Pause");
  const counter = el("span", { id: "tail-count", class: "hint" }, "");
  const body = el("tbody", {});
  let paused = false, shown = 0, dropped = 0;
  const update = () => { counter.textContent = `${shown} events${dropped ? `, ${dropped} dropped (too fast for this page)` : ""}`; };
  const open = () => {
    if (tail) tail.close();
    sessionStorage.setItem("tail", pattern.value);
    tail = new EventSource(`/api/tail?pattern=${encodeURIComponent(pattern.value || ">")}`);
    tail.onmessage = (msg) => {
      const e = JSON.parse(msg.data);
      shown += 1;
      body.prepend(el("tr", { "data-event": e.id },
        el("td", {}, clock(e.timestamp_ms)), el("td", {}, e.topic), el("td", {}, e.type),
        el("td", {}, e.sender || e.source), el("td", { class: "payload" }, e.payload.slice(0, 200))));
      while (body.childElementCount > 500) body.lastElementChild.remove();
      update();
    };
    tail.addEventListener("stats", (msg) => { dropped = JSON.parse(msg.data).dropped; update(); });
  };
  pause.addEventListener("click", () => {
    // Paused, the tail's subscription is closed: nothing is held on the server for us.
    paused = !paused;
    pause.textContent = paused ? "Resume" : "Pause";
    if (paused && tail) { tail.close(); tail = null; } else open();
  });
  const form = el("form", { class: "bar", on: { submit: (ev) => { ev.preventDefault(); if (!paused) open(); } } },
    el("label", { for: "tail-pattern" }, "pattern "), pattern, el("button", { type: "submit" }, "Apply"), pause, counter);
  const headers = ["time", "topic", "type", "from", "payload"];
  show(el("h1", {}, "Live tail"), form,
    el("table", { "data-testid": "tail" },
      el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))), body));
  update();
  open();
}

// ---------------------------------------------------------------- Turns

async function renderTurns() {
  const turns = await api("/api/turns");
  show(el("h1", {}, "Turns"),
    table(["started", "agent", "outcome", "iterations", "tokens"], turns.map((t) => el("tr", { "data-turn": t.key },
      el("td", {}, el("a", { href: `#turn/${encodeURIComponent(t.key)}` }, clock(t.started_ms))),
      el("td", {}, t.agent), el("td", {}, t.ended ? t.outcome : "running"),
      el("td", { class: "num" }, t.iterations), el("td", {}, tokens(t.usage)))), "turns"));
}

async function renderTurn(key) {
  const t = await api(`/api/turns/${encodeURIComponent(key)}`);
  const width = 900, left = 170, rowH = 26;
  const span = Math.max(1, t.duration_ms);
  const x = (ms) => left + (Math.max(0, ms) / span) * (width - left - 80);
  const rows = t.segments.map((s, i) => {
    const y = 30 + i * rowH;
    const label = s.kind === "llm" ? s.name : `${s.name}${s.is_error ? " (error)" : ""}`;
    const duration = s.end - s.start;
    // A model call the agent reported: its tokens beside its duration.
    const detail = s.prompt_tokens === undefined ? `${duration} ms`
      : `${duration} ms · ${s.prompt_tokens} in / ${s.completion_tokens} out`;
    return svg("g", { class: `segment ${s.kind}${s.running ? " running" : ""}${s.is_error ? " error" : ""}`, "data-kind": s.kind },
      svg("text", { x: left - 8, y: y + 14, "text-anchor": "end" }, label),
      svg("rect", { x: x(s.start), y: y + 2, width: Math.max(2, x(s.end) - x(s.start)), height: rowH - 8, rx: 3 }),
      svg("text", { x: x(s.end) + 4, y: y + 14, class: "duration" }, detail));
  });
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => svg("text", { x: x(f * span), y: 16, class: "tick", "text-anchor": "middle" }, `${Math.round(f * span)} ms`));
  const height = 40 + t.segments.length * rowH;
  show(
    el("h1", {}, el("a", { href: "#turns" }, "Turns"), " / ", t.agent, " ", clock(t.started_ms)),
    el("p", { "data-testid": "turn-summary" },
      `${t.ended ? t.outcome : "running"} · ${t.iterations || "?"} model calls · ${t.segments.filter((s) => s.kind === "tool").length} tool calls · tokens ${tokens(t.usage)} · ${t.duration_ms} ms`),
    svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, "data-testid": "timeline" }, ticks, rows),
    el("h2", {}, "Events"),
    table(["at", "type", "payload"], t.events.map((e) => el("tr", {},
      el("td", {}, `+${e.at_ms - t.started_ms} ms`), el("td", {}, e.type),
      el("td", { class: "payload" }, JSON.stringify(e.payload).slice(0, 200)))), "turn-events"));
}

// ---------------------------------------------------------------- Dead letters

// Retry or drop a stored dead letter (as `loom dlq retry|drop`): a POST with the header the
// server asks of every action (web/_actions.py); the outcome goes to the status bar.
let dlqNote = null;
async function dlqAction(sequence, action) {
  if (action === "drop" && !window.confirm(`Drop dead letter ${sequence}? It cannot be undone.`)) return;
  const response = await fetch(`/api/deadletters/${encodeURIComponent(sequence)}/${action}`,
    { method: "POST", credentials: "same-origin", headers: { "x-loom-action": "1" } });
  if (response.status === 401) { window.location = "/login"; return; }
  const body = await response.json().catch(() => ({}));
  dlqNote = response.ok
    ? (action === "retry" ? `Dead letter ${sequence} published again on ${body.topic} (event ${body.event_id}).`
      : `Dead letter ${sequence} dropped.`)
    : `Dead letter ${sequence}: ${body.error || response.status}`;
  await renderDeadLetters();
}

async function renderDeadLetters() {
  const d = await api("/api/deadletters");
  const letters = (rows, actions) => rows.map((e) => el("tr", { "data-sequence": e.metadata["log.sequence"] || "" },
    el("td", {}, clock(e.timestamp_ms)), el("td", {}, e.metadata["dead_letter.agent"] || e.topic),
    el("td", {}, e.metadata["dead_letter.topic"] || "-"), el("td", {}, e.metadata["dead_letter.reason"] || "-"),
    el("td", {}, e.metadata["dead_letter.error"] || "-"), el("td", {}, e.metadata["log.sequence"] || ""),
    actions && e.metadata["log.sequence"] ? el("td", { class: "actions" },
      el("button", { type: "button", "data-action": "retry", on: { click: () => dlqAction(e.metadata["log.sequence"], "retry") } }, "Retry"),
      el("button", { type: "button", "data-action": "drop", on: { click: () => dlqAction(e.metadata["log.sequence"], "drop") } }, "Drop"))
      : null));
  const headers = ["time", "agent / name", "topic", "reason", "error", "sequence"];
  show(el("h1", {}, "Dead letters"),
    el("h2", {}, "Agents' dead letters (loom.deadletter.*)"), table(headers, letters(d.dead_letters), "dead-letters"),
    el("h2", {}, "Durable"),
    d.durable ? el("div", {},
      table(["durable name", "patterns", "pending", "in flight", "redelivered", "overflow"], d.backlogs.map((b) => el("tr", {},
        el("td", {}, b.name), el("td", {}, b.patterns.join(", ")), el("td", { class: "num" }, b.pending),
        el("td", { class: "num" }, b.in_flight), el("td", { class: "num" }, b.redelivered),
        el("td", { class: "num" }, b.overflow))), "backlogs"),
      el("h2", {}, "Stored dead letters (loom.dlq.*: `loom dlq retry|drop SEQ`)"),
      dlqNote ? el("p", { "data-testid": "dlq-note", class: "hint" }, dlqNote) : null,
      table([...headers, ""], letters(d.stored_dead_letters, true), "stored-dead-letters"),
      d.error ? el("p", { class: "error" }, d.error) : null)
      : el("p", {}, "This server has no durable log (--nats off)."));
}

// ---------------------------------------------------------------- routing

function route() {
  clearInterval(timer);
  if (tail) { tail.close(); tail = null; }
  const [page, ...rest] = (window.location.hash.slice(1) || "agents").split("/");
  const arg = decodeURIComponent(rest.join("/"));
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("current", a.dataset.page === page);
  document.body.dataset.page = page;
  switch (page) {
    case "agent": return poll(() => renderAgent(arg), 2000);
    case "topology": return poll(renderTopology, 2000);
    case "topics": return poll(renderTopics, 2000);
    case "tail": return renderTail();
    case "turns": return poll(renderTurns, 2000);
    case "turn": return poll(() => renderTurn(arg), 1000);
    case "deadletters": return poll(renderDeadLetters, 5000);
    default: return poll(renderAgents, 1000);
  }
}

window.addEventListener("hashchange", route);
route();
