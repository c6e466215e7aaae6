"""The dashboard's dead-letter actions in a real browser: a real ``loom serve`` with its
embedded NATS (JetStream), a durable SDK agent process whose handler fails so that its events
become stored dead letters, and headless Chromium retrying and dropping them. Only the admin
token's holder may act; a request without the action header, or from another origin, is
refused whoever sends it."""

from __future__ import annotations

import re
from pathlib import Path

import anyio
import pytest
from playwright.async_api import Dialog, Page, expect

from tests.sdk._cli_support import PYTHON, clean_env, loom, running_argv

from ._support import serve_http
from .test_dashboard_browser import _browser

pytestmark = pytest.mark.anyio

TOKEN = "dead-letters-token-0123456789abcdef"
ADMIN = "dead-letters-admin-token-0123456789abcdef"

AGENT = """\
from loom import Agent, Context, Event
from loom.runtime import RETRY_OF_KEY


async def bill(ctx: Context, topic: str, event: Event) -> None:
    if RETRY_OF_KEY not in event.metadata:
        raise ValueError("bad order " + event.payload.decode())
    print("handled retry of", event.payload.decode(), flush=True)


agent = Agent("billing", topics=["orders.*"], durable=True, max_deliver=1, on_event=bill)

if __name__ == "__main__":
    agent.run()
"""


async def _log_in(page: Page, url: str, token: str) -> None:
    await page.goto(url + "login")
    await page.fill("input[name=token]", token)
    await page.click("button[type=submit]")
    await page.goto(url + "#deadletters")
    await expect(page.locator("h1")).to_have_text("Dead letters")


async def test_dead_letters_are_retried_and_dropped_from_the_dashboard(tmp_path: Path) -> None:
    (tmp_path / "billing.py").write_text(AGENT)
    env = clean_env(LOOM_TOKEN=TOKEN, LOOM_ADMIN_TOKEN=ADMIN)
    with anyio.fail_after(180):
        async with (
            serve_http(tmp_path, env=env) as (_server, address, url),
            _browser() as browser,
        ):
            agent_env = clean_env(LOOM_TOKEN=TOKEN, LOOM_BRIDGE_ADDR=address)
            async with running_argv(
                [*PYTHON, "billing.py"], cwd=tmp_path, env=agent_env
            ) as billing:
                page = await browser.new_page(viewport={"width": 1280, "height": 860})
                await _log_in(page, url, TOKEN)
                # The durable name's backlog is listed once the agent is there.
                backlogs = page.locator("[data-testid=backlogs]")
                await expect(backlogs).to_contain_text("billing", timeout=30_000)
                for order in ("one", "two"):
                    sent = await loom(
                        "publish", "orders.eu", order, "-a", address, cwd=tmp_path,
                        env=agent_env,
                    )  # fmt: skip
                    assert sent.returncode == 0, sent.stderr
                stored = page.locator("[data-testid=stored-dead-letters] tbody tr")
                await expect(stored).to_have_count(2, timeout=30_000)
                await expect(stored.first).to_contain_text("max_deliver")
                await expect(stored.first).to_contain_text("orders.eu")
                note = page.locator("[data-testid=dlq-note]")

                # The plain token sees the dead letters but may not act on them.
                await stored.first.locator("[data-action=retry]").click()
                await expect(note).to_contain_text("admin token is needed")
                await expect(stored).to_have_count(2)

                # Refused whoever asks: without the action header, or from another origin.
                sequence = await stored.first.get_attribute("data-sequence")
                assert sequence is not None
                assert sequence.isdigit()
                action = f"{url}api/deadletters/{sequence}/drop"
                bare = await page.request.post(action)
                assert bare.status == 403
                assert "x-loom-action" in (await bare.json())["error"]
                foreign = await page.request.post(
                    action, headers={"x-loom-action": "1", "origin": "https://elsewhere.example"}
                )
                assert foreign.status == 403
                unauthenticated = await browser.new_page()
                anonymous = await unauthenticated.request.post(
                    action, headers={"x-loom-action": "1"}
                )
                assert anonymous.status == 401
                await unauthenticated.close()

                # The admin token: retry one (its handler takes it this time), drop the other.
                await page.click(".logout button")
                await _log_in(page, url, ADMIN)
                await expect(stored).to_have_count(2)
                first = stored.first
                letter_of = await first.get_attribute("data-sequence")
                order = "one" if "bad order one" in await first.inner_text() else "two"
                await first.locator("[data-action=retry]").click()
                await expect(note).to_contain_text(
                    re.compile(rf"Dead letter {letter_of} published again on orders\.eu")
                )
                await billing.wait_for(rf"handled retry of {order}", timeout=30)
                await expect(stored).to_have_count(1)

                async def accept(dialog: Dialog) -> None:
                    await dialog.accept()

                page.once("dialog", accept)
                remaining = await stored.first.get_attribute("data-sequence")
                await stored.first.locator("[data-action=drop]").click()
                await expect(note).to_have_text(f"Dead letter {remaining} dropped.")
                await expect(stored).to_have_count(0)
                await page.screenshot(path=tmp_path / "deadletters.png")

                # Gone from the log too: acting on it again says so.
                again = await page.request.post(
                    f"{url}api/deadletters/{remaining}/drop", headers={"x-loom-action": "1"}
                )
                assert again.status == 404
                assert "no dead letter" in (await again.json())["error"]
