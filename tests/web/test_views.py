"""The dashboard's data in process (a real bus, runtime and HTTP port; no subprocess): the
topology of 50 agents in a real browser, the live tail that never holds a publisher back,
and a turn's timeline drawn from its events."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import httpx2
import msgspec
import pytest
from playwright.async_api import async_playwright, expect

from loom import Agent, Context
from loom.runtime import AgentRuntime, Delivery, Event, EventBus
from loom.web import HttpServer, Observer
from loom.web._views import timeline

from .test_dashboard_browser import CHROMIUM

pytestmark = pytest.mark.anyio


def _agent(n: int) -> Agent:
    async def on_event(ctx: Context, topic: str, event: Event) -> None:
        await ctx.emit(f"results.{n % 10}", payload=event.payload)

    return Agent(f"agent-{n:02d}", topics=[f"jobs.{n % 10}"], on_event=on_event)


async def test_the_topology_of_50_agents_is_readable(tmp_path: Path) -> None:
    async with (
        EventBus() as bus,
        AgentRuntime(bus) as runtime,
        HttpServer(runtime) as http,
        async_playwright() as p,
    ):
        for n in range(50):
            await runtime.start(_agent(n))
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 1400})
            await page.goto(http.url + "#topology")
            graph = page.locator("[data-testid=topology]")
            await expect(graph.locator(".node.agent")).to_have_count(50)
            # Publish while the page looks: the agents answer on results.*, edges appear.
            with anyio.fail_after(20):
                while await graph.locator(".edge.publishes").count() < 50:
                    for k in range(10):
                        await bus.publish(f"jobs.{k}", Event(payload=b"x", source="feeder"))
                    await anyio.sleep(0.2)
            await expect(graph.locator(".node.topic")).to_have_count(20)  # jobs.* and results.*
            # Readable: no two labels overlap.
            boxes = await graph.evaluate(
                "g => [...g.querySelectorAll('.node text')].map(t => {"
                " const b = t.getBBox(); return [b.x, b.y, b.width, b.height]; })"
            )
            assert len(boxes) == 50 + 1 + 20  # the agents, the feeder, the topics
            for i, (x1, y1, w1, h1) in enumerate(boxes):
                for x2, y2, w2, h2 in boxes[i + 1 :]:
                    apart = x1 + w1 <= x2 or x2 + w2 <= x1 or y1 + h1 <= y2 or y2 + h2 <= y1
                    assert apart, ((x1, y1, w1, h1), (x2, y2, w2, h2))
            await page.screenshot(path=tmp_path / "topology-50.png", full_page=True)
        finally:
            await browser.close()


async def test_a_tail_nobody_reads_never_holds_the_publisher_back() -> None:
    async with (
        EventBus() as bus,
        AgentRuntime(bus) as runtime,
        HttpServer(runtime) as http,
        httpx2.AsyncClient(base_url=http.url, timeout=10) as client,
        client.stream("GET", "/api/tail?pattern=flood.>") as stream,
    ):
        chunks = stream.aiter_bytes()
        assert (await anext(chunks)).startswith(b"event: hello")
        payload = b"y" * 1000
        with anyio.fail_after(20):  # the browser reads nothing from here on
            for _ in range(20_000):
                await bus.publish("flood.now", Event(payload=payload))
        tails = [s for s in bus.statistics().subscriptions if s.pattern == "flood.>"]
        assert len(tails) == 1
        assert tails[0].dropped.total > 0  # the tail's own copies, not the publisher, gave
        assert tails[0].capacity == 256


def _update(
    observer: Observer, agent: str, goal: str, event_type: str, at_ms: int, **payload: object
) -> None:
    event = Event(
        type=event_type,
        timestamp_ms=at_ms,
        metadata={"thread_id": "t", "event_id": goal},
        payload=msgspec.json.encode(payload),
    )
    observer._note(Delivery(f"agent.{agent}.stream", event), tap=False)


async def test_a_turns_timeline_from_its_events() -> None:
    async with EventBus() as bus:
        observer = Observer(bus)
        start = int(time.time() * 1000) - 10_000
        goal = Event(timestamp_ms=start).id  # a UUIDv7 made now: its time is the turn's start
        begun = int(goal.replace("-", "")[:12], 16)
        call = {"iteration": 1, "call_id": "c1", "name": "clock.now", "arguments": {}}
        _update(observer, "a", goal, "turn.tool_started", begun + 100, kind="tool_started", **call)
        key = f"a/{goal}"
        running = timeline(observer, key, now_ms=begun + 150)
        assert running is not None
        assert not running["ended"]
        tool = next(s for s in running["segments"] if s["kind"] == "tool")
        assert (tool["start"], tool["end"], tool.get("running")) == (100, 150, True)
        result = {**call, "content": "noon", "duration_s": 0.2}
        _update(observer, "a", goal, "turn.tool_finished", begun + 300, kind="tool_finished",
                result=result)  # fmt: skip
        usage = {"prompt_tokens": 50, "completion_tokens": 9}
        _update(observer, "a", goal, "turn.end", begun + 900, kind="answer", iterations=2,
                usage=usage)  # fmt: skip
        done = timeline(observer, key)
    assert done is not None
    assert done["ended"]
    assert done["duration_ms"] == 900
    assert done["usage"] == usage
    spans = [(s["kind"], s["name"], s["start"], s["end"]) for s in done["segments"]]
    assert spans == [
        ("llm", "model call 1", 0, 100),
        ("llm", "model call 2", 300, 900),
        ("tool", "clock.now", 100, 300),
    ]


async def test_a_turns_model_calls_carry_their_reported_tokens_and_durations() -> None:
    async with EventBus() as bus:
        observer = Observer(bus)
        goal = Event().id
        begun = int(goal.replace("-", "")[:12], 16)
        first = {"iteration": 1, "model": "m", "prompt_tokens": 31, "completion_tokens": 7}
        _update(observer, "a", goal, "turn.model_call", begun + 90, kind="model_call",
                duration_s=0.08, **first)  # fmt: skip
        call = {"iteration": 1, "call_id": "c1", "name": "clock.now", "arguments": {}}
        _update(observer, "a", goal, "turn.tool_started", begun + 100, kind="tool_started", **call)
        key = f"a/{goal}"
        # The second call runs: not reported yet, so drawn from the tool's end to now.
        result = {**call, "content": "noon", "duration_s": 0.2}
        _update(observer, "a", goal, "turn.tool_finished", begun + 300, kind="tool_finished",
                result=result)  # fmt: skip
        running = timeline(observer, key, now_ms=begun + 400)
        assert running is not None
        second = next(s for s in running["segments"] if s["name"] == "model call 2")
        assert (second["start"], second["end"], "prompt_tokens" in second) == (300, 400, False)
        second_call = {"iteration": 2, "model": "m", "prompt_tokens": 45, "completion_tokens": 3}
        _update(observer, "a", goal, "turn.model_call", begun + 880, kind="model_call",
                duration_s=0.5, **second_call)  # fmt: skip
        _update(observer, "a", goal, "turn.end", begun + 900, kind="answer", iterations=2)
        done = timeline(observer, key)
    assert done is not None
    calls = [
        (s["start"], s["end"], s["duration_ms"], s["prompt_tokens"], s["completion_tokens"])
        for s in done["segments"]
        if s["kind"] == "llm"
    ]
    assert calls == [(10, 90, 80, 31, 7), (380, 880, 500, 45, 3)]


async def test_an_unwatched_server_holds_no_subscription_of_the_dashboard() -> None:
    async with (
        EventBus() as bus,
        AgentRuntime(bus) as runtime,
        HttpServer(runtime) as http,
        httpx2.AsyncClient(base_url=http.url, timeout=10) as client,
    ):
        assert (await client.get("/healthz")).status_code == 200
        await anyio.sleep(0.2)  # room for a watcher that should not start
        assert bus.statistics().subscriptions == ()  # routing and `loom topics` unchanged
        assert (await client.get("/api/agents")).status_code == 200
        watched = {"loom.>", "agent.*.stream"}
        with anyio.fail_after(10):
            while True:  # the watchers start in the server's task group, soon after
                if {s.pattern for s in bus.statistics().subscriptions} == watched:
                    break
                await anyio.sleep(0.02)
