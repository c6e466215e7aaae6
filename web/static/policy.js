// The resilience policies' panel: one row per policy (/api/policies), its counters and its
// circuit breaker's state, on every page; hidden while the server has no policy.
"use strict";

(() => {
  const panel = document.createElement("aside");
  panel.id = "policies";
  panel.dataset.testid = "policies";
  panel.hidden = true;
  document.body.insertBefore(panel, document.getElementById("status"));

  const cell = (text, cls) => {
    const td = document.createElement("td");
    td.textContent = String(text);
    if (cls) td.className = cls;
    return td;
  };

  const row = (p) => {
    const tr = document.createElement("tr");
    const b = p.breaker;
    const state = b ? b.state : "-";
    tr.append(
      cell(p.name),
      cell(state, b && b.state !== "closed" ? "error" : ""),
      cell(b && b.state === "open" ? `${b.retry_in_s} s` : "-", "num"),
      cell(p.calls, "num"), cell(p.failed, p.failed ? "num error" : "num"),
      cell(p.retries, "num"), cell(p.timeouts, "num"), cell(p.rejected, "num"),
      cell(p.rate_limited, "num"), cell(`${p.in_flight} / ${p.waiting}`, "num"));
    tr.dataset.policy = p.name;
    tr.dataset.state = state;
    return tr;
  };

  const headers = ["policy", "breaker", "half-opens in", "calls", "failed", "retries",
    "timeouts", "refused", "rate-limited", "in flight / waiting"];

  async function refresh() {
    let rows;
    try {
      const response = await fetch("/api/policies", { credentials: "same-origin" });
      if (!response.ok) return;
      rows = await response.json();
    } catch (err) { return; }
    panel.hidden = rows.length === 0;
    const head = document.createElement("tr");
    for (const h of headers) { const th = document.createElement("th"); th.textContent = h; head.append(th); }
    const table = document.createElement("table");
    table.dataset.testid = "policies-table";
    table.append(document.createElement("thead"), document.createElement("tbody"));
    table.tHead.append(head);
    table.tBodies[0].append(...rows.map(row));
    const title = document.createElement("h2");
    title.textContent = "Resilience policies";
    panel.replaceChildren(title, table);
  }

  refresh();
  setInterval(refresh, 2000);
})();
