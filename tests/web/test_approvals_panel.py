"""The dashboard's approvals panel and endpoints, in process: a real bus, runtime, approvals
store (SQLite) and HTTP port, and a real browser that denies a waiting call."""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest
from playwright.async_api import async_playwright, expect

from loom.runtime import AgentRuntime, Approvals, EventBus
from loom.web import HttpServer

from .test_dashboard_browser import CHROMIUM

pytestmark = pytest.mark.anyio


async def test_the_panel_shows_a_waiting_call_and_denies_it(tmp_path: Path) -> None:
    async with (
        EventBus() as bus,
        Approvals(tmp_path / "approvals.sqlite3", bus=bus) as store,
        AgentRuntime(bus) as runtime,
        HttpServer(runtime) as http,
        async_playwright() as p,
    ):
        runtime.approvals = store
        first = await store.request(
            agent_id="writer", thread_id="t1", turn_id="e1", call_id="c1", tool="fs.write",
            arguments={"path": "notes.txt", "content": "hi"},
        )  # fmt: skip
        second = await store.request(
            agent_id="writer", thread_id="t2", turn_id="e2", call_id="c1", tool="shell.exec",
            arguments={"argv": ["wc", "-l"]},
        )  # fmt: skip
        async with httpx2.AsyncClient(base_url=http.url) as client:
            listed = (await client.get("/api/approvals")).json()
            assert [a["id"] for a in listed["approvals"]] == [first.id, second.id]
            # Without the dashboard's header (a form on another site): refused, nothing done.
            forged = await client.post(f"/api/approvals/{second.id}/approve", json={})
            assert forged.status_code == 403
            assert (await store.get(second.id)).status == "pending"
            approved = await client.post(
                f"/api/approvals/{second.id}/approve",
                json={"note": "ok"},
                headers={"x-loom-action": "1"},
            )
            assert approved.status_code == 200, approved.text
            assert approved.json()["decided_by"] == "dashboard"
            again = await client.post(
                f"/api/approvals/{second.id}/deny", headers={"x-loom-action": "1"}
            )
            assert again.status_code == 409
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = await browser.new_page()
            await page.goto(http.url + "#agents")
            panel = page.locator("#approvals")
            row = panel.locator(f"tr[data-approval='{first.id}']")
            await expect(row).to_contain_text("fs.write")
            await row.locator("input").fill("not today")
            await row.get_by_role("button", name="Deny").click()
            await expect(panel).to_be_hidden()
        finally:
            await browser.close()
        decided = await store.get(first.id)
    assert (decided.status, decided.note, decided.decided_by) == (
        "denied",
        "not today",
        "dashboard",
    )


async def test_a_decision_needs_the_admin_token_where_there_is_one(tmp_path: Path) -> None:
    # The dashboard acts under one rule (web/_actions.py), as `loom approve` does on the gRPC
    # port: a caller let in with the plain token may look but not decide.
    plain, admin = "plain-token-0123456789abcdef", "admin-token-0123456789abcdef"
    async with (
        EventBus() as bus,
        Approvals(tmp_path / "approvals.sqlite3", bus=bus) as store,
        AgentRuntime(bus) as runtime,
        HttpServer(runtime, tokens=(plain, admin), admin_tokens=(admin,)) as http,
    ):
        runtime.approvals = store
        waiting = await store.request(
            agent_id="writer", thread_id="t1", turn_id="e1", call_id="c1", tool="fs.write",
            arguments={"path": "notes.txt", "content": "hi"},
        )  # fmt: skip
        async with httpx2.AsyncClient(base_url=http.url) as client:
            url = f"/api/approvals/{waiting.id}/approve"
            as_plain = {"authorization": f"Bearer {plain}", "x-loom-action": "1"}
            listed = await client.get("/api/approvals", headers=as_plain)
            assert [a["id"] for a in listed.json()["approvals"]] == [waiting.id]
            refused = await client.post(url, json={}, headers=as_plain)
            assert refused.status_code == 403
            assert "admin token" in refused.json()["error"]
            elsewhere = {"authorization": f"Bearer {admin}", "origin": "http://evil.example"}
            refused = await client.post(url, json={}, headers={**elsewhere, "x-loom-action": "1"})
            assert refused.status_code == 403
            assert (await store.get(waiting.id)).status == "pending"
            approved = await client.post(
                url, json={}, headers={"authorization": f"Bearer {admin}", "x-loom-action": "1"}
            )
            assert approved.status_code == 200, approved.text
        assert (await store.get(waiting.id)).status == "approved"


async def test_the_panel_answers_a_question_to_the_user(tmp_path: Path) -> None:
    async with (
        EventBus() as bus,
        Approvals(tmp_path / "approvals.sqlite3", bus=bus) as store,
        AgentRuntime(bus) as runtime,
        HttpServer(runtime) as http,
        async_playwright() as p,
    ):
        runtime.approvals = store
        question = await store.request(
            agent_id="planner", thread_id="t1", turn_id="e1", call_id="q1", tool="ask_user",
            arguments={"question": "Which city?"}, kind="question",
        )  # fmt: skip
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = await browser.new_page()
            await page.goto(http.url + "#agents")
            panel = page.locator("#approvals")
            row = panel.locator(f"tr[data-approval='{question.id}']")
            await expect(row).to_contain_text("Which city?")
            await row.get_by_label("answer").fill("Lyon")
            await row.get_by_role("button", name="Answer").click()
            await expect(panel).to_be_hidden()
        finally:
            await browser.close()
        answered = await store.get(question.id)
        async with httpx2.AsyncClient(base_url=http.url) as client:
            again = await client.post(
                f"/api/approvals/{question.id}/answer",
                json={"note": "Paris"},
                headers={"x-loom-action": "1"},
            )
            assert again.status_code == 409, again.text
            assert "already answered by dashboard" in again.json()["error"]
    assert (answered.status, answered.note, answered.decided_by) == (
        "answered",
        "Lyon",
        "dashboard",
    )
