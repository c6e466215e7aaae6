"""The dashboard in a real browser: headless Chromium (the distribution's ``chromium``,
``make browser`` installs it) driven by Playwright, against a real ``loom serve`` with a
token, SDK agent processes started and killed, and a cognitive agent it hosts over the
scripted model on real HTTP. Screenshots of each page go to the test's directory.

Playwright never downloads a browser here: ``executable_path`` is the system's Chromium.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from playwright.async_api import Browser, async_playwright, expect

from loom.runtime.testing import Delay, Reply, ScriptedLLMServer, ScriptedToolCall
from tests.sdk._cli_support import PYTHON, clean_env, loom, running_argv

from ._support import serve_http

pytestmark = pytest.mark.anyio

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TOKEN = "dashboard-browser-token-0123456789abcdef"

if not os.path.exists(CHROMIUM):  # `make test` installs it first (make browser)
    pytest.fail(
        "the dashboard's browser tests need Chromium: run `make browser` "
        "(or: sudo apt-get install -y chromium)",
        pytrace=False,
    )

AGENT = """\
import sys

from loom import Agent, capability


@capability("text.upper")
async def upper(text: str) -> str:
    \"\"\"Upper-case a text.\"\"\"
    return text.upper()


agent = Agent(sys.argv[1], topics=["jobs.*"], capabilities=[upper])

if __name__ == "__main__":
    agent.run()
"""


def _toml(llm: ScriptedLLMServer) -> str:
    return (
        "[llm.scripted]\n"
        'kind = "openai"\n'
        'model = "scripted-model"\n'
        f'base_url = "{llm.openai_base_url}"\n'
        'api_key_env = "SCRIPTED_KEY"\n'
        "timeout_s = 30\n"
        "max_retries = 0\n"
        "\n[agents.thinker]\n"
        'llm = "scripted"\n'
        'system_prompt = "You tell the time."\n'
        'tools = ["clock.now"]\n'
    )


@asynccontextmanager
async def _browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


async def test_the_dashboard_in_a_browser(tmp_path: Path) -> None:
    shots = tmp_path / "screenshots"
    shots.mkdir()
    (tmp_path / "worker.py").write_text(AGENT)
    async with ScriptedLLMServer() as llm:
        (tmp_path / "loom.toml").write_text(_toml(llm))
        env = clean_env(LOOM_TOKEN=TOKEN, SCRIPTED_KEY="sk-test")
        async with (
            serve_http(tmp_path, "--nats", "off", "--stale-after", "2", env=env) as (
                _server,
                address,
                url,
            ),
            _browser() as browser,
        ):
            agent_env = clean_env(LOOM_TOKEN=TOKEN, LOOM_BRIDGE_ADDR=address)
            page = await browser.new_page(viewport={"width": 1280, "height": 860})

            # No token: the login page, and nothing else.
            await page.goto(url)
            await expect(page.locator("input[name=token]")).to_be_visible()
            assert await page.locator("nav").count() == 0
            await page.screenshot(path=shots / "login.png")
            await page.fill("input[name=token]", "not-the-token")
            await page.click("button[type=submit]")
            await expect(page.locator("#message")).to_have_text("That token is not accepted.")
            assert await page.locator("nav").count() == 0
            api = await page.request.get(url + "api/agents")
            assert api.status == 401

            # The token: the dashboard.
            await page.fill("input[name=token]", TOKEN)
            await page.click("button[type=submit]")
            agents = page.locator("[data-testid=agents]")
            await expect(agents.locator("[data-agent=thinker]")).to_be_visible()

            # Agents appear as their processes start, and go when they are killed.
            workers = []
            async with (
                running_argv([*PYTHON, "worker.py", "worker-1"], cwd=tmp_path, env=agent_env)
                as one,
                running_argv([*PYTHON, "worker.py", "worker-2"], cwd=tmp_path, env=agent_env)
                as two,
            ):  # fmt: skip
                workers = [one, two]
                for name in ("worker-1", "worker-2"):
                    row = agents.locator(f"[data-agent={name}]")
                    await expect(row).to_be_visible(timeout=20_000)
                    await expect(row).to_contain_text("running")
                    await expect(row).to_contain_text("text.upper")
                await page.screenshot(path=shots / "agents.png")

                # The live tail shows events as they are published.
                await page.click("nav a[data-page=tail]")
                await page.fill("#tail-pattern", "jobs.>")
                await page.click("form.bar button[type=submit]")
                tail = page.locator("[data-testid=tail] tbody tr")
                await expect(page.locator("#tail-count")).to_have_text("0 events")
                for n in range(3):
                    sent = await loom(
                        "publish", "jobs.new", f"job {n}", "-a", address, cwd=tmp_path,
                        env=agent_env,
                    )  # fmt: skip
                    assert sent.returncode == 0, sent.stderr
                    await expect(tail).to_have_count(n + 1)
                await expect(tail.first).to_contain_text("job 2")
                await page.screenshot(path=shots / "tail.png")
                # Paused, it shows nothing new.
                await page.click("#tail-pause")
                await loom("publish", "jobs.new", "unseen", "-a", address, cwd=tmp_path,
                           env=agent_env)  # fmt: skip
                await page.click("#tail-pause")  # resumed: a fresh subscription from now
                sent = await loom("publish", "jobs.new", "job 4", "-a", address, cwd=tmp_path,
                                  env=agent_env)  # fmt: skip
                await expect(tail.first).to_contain_text("job 4")
                await expect(page.locator("[data-testid=tail]")).not_to_contain_text("unseen")

                # Topics and the topology show who is where.
                await page.click("nav a[data-page=topics]")
                await expect(page.locator("[data-topic='jobs.new']")).to_be_visible()
                await page.screenshot(path=shots / "topics.png")
                await page.click("nav a[data-page=topology]")
                graph = page.locator("[data-testid=topology]")
                await expect(graph.locator("[data-node='worker-1']")).to_be_visible()
                await expect(graph.locator("[data-node='jobs.new']")).to_be_visible()
                await page.screenshot(path=shots / "topology.png")

                # One worker is killed: it leaves the table (its stream ends with it).
                await page.click("nav a[data-page=agents]")
                two.signal(signal.SIGKILL)
                await expect(agents.locator("[data-agent=worker-2]")).to_have_count(
                    0, timeout=30_000
                )
                await expect(agents.locator("[data-agent=worker-1]")).to_be_visible()
                gone = page.locator("[data-testid=agents-gone] [data-agent=worker-2]")
                await expect(gone).to_contain_text("disconnected")
            assert workers

            # A cognitive agent's turn: the model asks for clock.now, then answers after a
            # pause, so the timeline is seen live and then finished.
            llm.push(
                Reply(
                    tool_calls=[ScriptedToolCall(name="clock_now")],
                    prompt_tokens=31,
                    completion_tokens=7,
                ),
                Delay(
                    seconds=2.5,
                    then=Reply(text="It is now.", prompt_tokens=45, completion_tokens=5),
                ),
            )
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    lambda: loom(
                        "ask", "thinker", "What time is it?", "-a", address, cwd=tmp_path,
                        env=agent_env, timeout=30,
                    )
                )  # fmt: skip
                await page.click("nav a[data-page=turns]")
                turn = page.locator("[data-testid=turns] tbody tr").first
                await expect(turn).to_contain_text("thinker", timeout=20_000)
                await turn.locator("a").click()
                timeline = page.locator("[data-testid=timeline]")
                await expect(timeline.locator("[data-kind=tool]")).to_have_count(1)
                await expect(timeline).to_contain_text("clock.now")
                summary = page.locator("[data-testid=turn-summary]")
                await expect(summary).to_contain_text("running")
                # Each model call with its own tokens, the first while the turn runs.
                llm_calls = timeline.locator("[data-kind=llm]")
                await expect(llm_calls.first).to_contain_text("31 in / 7 out")
                await expect(summary).to_contain_text("answer", timeout=20_000)
                await expect(llm_calls).to_have_count(2)
                await expect(llm_calls.nth(1)).to_contain_text("45 in / 5 out")
                await expect(llm_calls.nth(1)).to_contain_text(" ms")
                await expect(summary).to_contain_text("2 model calls")
                await page.screenshot(path=shots / "timeline.png")

            # The agent's own page: its turn and its tool call.
            await page.goto(url + "#agent/thinker")
            facts = page.locator("dl.facts")
            await expect(facts).to_contain_text("running")
            await expect(facts).not_to_contain_text("object")  # nothing rendered as a string
            await expect(page.locator("[data-testid=agent-tools]")).to_contain_text("clock.now")
            await expect(page.locator("[data-testid=agent-turns] tbody tr")).to_have_count(1)
            await page.screenshot(path=shots / "agent.png")
            await page.click("nav a[data-page=deadletters]")
            await expect(page.locator("h1")).to_have_text("Dead letters")
            await page.screenshot(path=shots / "deadletters.png")

            # Logged out, the pages are gone again.
            await page.click(".logout button")
            await expect(page.locator("input[name=token]")).to_be_visible()
            await page.goto(url + "#agents")
            await expect(page.locator("input[name=token]")).to_be_visible()
            assert await page.locator("[data-testid=agents]").count() == 0
    for name in ("login", "agents", "tail", "topics", "topology", "timeline", "agent"):
        assert (shots / f"{name}.png").stat().st_size > 5_000, name
