// The approvals panel: the tool calls waiting for a human, on every page, each with Approve
// and Deny (and a note); a turn's question to the user (kind "question") with a text field,
// Answer and Decline. It polls /api/approvals; a decision is a POST that carries the
// x-loom-action header, which a page of another site cannot send (web/_actions.py).
"use strict";

(() => {
  const panel = document.createElement("aside");
  panel.id = "approvals";
  panel.dataset.testid = "approvals";
  panel.hidden = true;
  document.body.insertBefore(panel, document.getElementById("status"));

  function node(tag, attrs, ...children) {
    const n = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "onclick") n.addEventListener("click", v);
      else n.setAttribute(k, v);
    }
    for (const c of children) n.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return n;
  }

  async function decide(id, verdict, note) {
    const response = await fetch(`/api/approvals/${encodeURIComponent(id)}/${verdict}`, {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json", "x-loom-action": "1" },
      body: JSON.stringify({ note }),
    });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      window.alert(body.error || `${verdict}: ${response.status}`);
    }
    refresh();
  }

  function questionRow(a) {
    const answer = node("input", { type: "text", placeholder: "answer", "aria-label": "answer" });
    const until = Math.max(0, Math.round((a.deadline_ms - Date.now()) / 1000));
    return node("tr", { "data-approval": a.id, "data-kind": "question" },
      node("td", {}, a.agent_id), node("td", {}, a.thread_id), node("td", {}, "asks the user"),
      node("td", { class: "args" }, String((a.arguments || {}).question || "").slice(0, 400)),
      node("td", { class: "num" }, until > 1e7 ? "never" : `${until} s`),
      node("td", {}, answer,
        node("button", { type: "button", onclick: () => decide(a.id, "answer", answer.value) }, "Answer"),
        node("button", { type: "button", onclick: () => decide(a.id, "deny", "") }, "Decline")));
  }

  function row(a) {
    if (a.kind === "question") return questionRow(a);
    const note = node("input", { type: "text", placeholder: "note", "aria-label": "note" });
    const until = Math.max(0, Math.round((a.deadline_ms - Date.now()) / 1000));
    return node("tr", { "data-approval": a.id },
      node("td", {}, a.agent_id), node("td", {}, a.thread_id), node("td", {}, a.tool),
      node("td", { class: "args" }, JSON.stringify(a.arguments).slice(0, 200)),
      node("td", { class: "num" }, until > 1e7 ? "never" : `${until} s`),
      node("td", {}, note,
        node("button", { type: "button", onclick: () => decide(a.id, "approve", note.value) }, "Approve"),
        node("button", { type: "button", onclick: () => decide(a.id, "deny", note.value) }, "Deny")));
  }

  async function refresh() {
    let data;
    try {
      const response = await fetch("/api/approvals", { credentials: "same-origin" });
      if (!response.ok) return;
      data = await response.json();
    } catch (err) { return; }
    const waiting = data.approvals || [];
    panel.hidden = waiting.length === 0;
    if (panel.hidden) { panel.replaceChildren(); return; }
    // Keep a half-typed note: redraw only when the set of waiting calls changed.
    const ids = waiting.map((a) => a.id).join(",");
    if (panel.dataset.ids === ids) return;
    panel.dataset.ids = ids;
    panel.replaceChildren(
      node("h2", {}, `Waiting for approval (${waiting.length})`),
      node("table", {},
        node("thead", {}, node("tr", {}, ...["agent", "thread", "tool", "arguments", "expires", ""]
          .map((h) => node("th", {}, h)))),
        node("tbody", {}, ...waiting.map(row))));
  }

  refresh();
  setInterval(refresh, 2000);
})();
