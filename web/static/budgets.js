// The budgets panel: the spend of the server's turns (GET /api/budgets), on every page,
// between the page and the status line. Polled every 5 s; nothing when the server has
// counted no spend yet. Plain DOM, no dependency on app.js.
"use strict";

(() => {
  const panel = document.createElement("section");
  panel.id = "budgets";
  panel.dataset.testid = "budgets";
  panel.className = "budgets";
  document.body.insertBefore(panel, document.getElementById("status"));

  const cell = (tag, text, cls) => {
    const node = document.createElement(tag);
    node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  };
  const minutes = (s) => (s >= 3600 ? `${(s / 3600).toFixed(1)} h` : `${Math.round(s / 60)} min`);

  async function render() {
    const response = await fetch("/api/budgets", { credentials: "same-origin" });
    if (!response.ok) return;
    const b = await response.json();
    const refused = Object.entries(b.exhausted).map(([k, n]) => `${k} ${n}`).join(", ");
    const remote = b.remote && b.remote.calls ? ` (${b.remote.tokens} tokens, ` +
      `$${b.remote.cost_usd.toFixed(4)} by agents in their own process)` : "";
    const head = cell("p", `Budgets: ${b.tokens} tokens, $${b.cost_usd.toFixed(4)} over ` +
      `${b.calls} model calls${remote}; refused: ${refused || "none"}`);
    const rows = b.top.slice(0, 5).map((r) => {
      const tr = document.createElement("tr");
      tr.append(cell("td", r.kind), cell("td", r.key), cell("td", r.tokens, "num"),
        cell("td", `$${r.cost_usd.toFixed(4)}`, "num"));
      return tr;
    });
    const nodes = [head];
    if (rows.length) {
      const table = document.createElement("table");
      table.dataset.testid = "budget-top";
      const hr = document.createElement("tr");
      hr.append(cell("th", "kind"), cell("th", `key (last ${minutes(b.window_s)})`),
        cell("th", "tokens"), cell("th", "cost"));
      const thead = document.createElement("thead");
      thead.append(hr);
      const tbody = document.createElement("tbody");
      tbody.append(...rows);
      table.append(thead, tbody);
      nodes.push(table);
    }
    panel.replaceChildren(...nodes);
  }

  render().catch(() => {});
  setInterval(() => render().catch(() => {}), 5000);
})();
