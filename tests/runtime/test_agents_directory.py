"""The directory: lookups by id, topic and capability, least busy, liveness of remote agents;
and how the runtime keeps it up to date."""

from __future__ import annotations

import time

import anyio
import pytest

from loom.runtime import (
    AgentInfo,
    AgentStatus,
    Context,
    Directory,
    Event,
    InvalidTopic,
    LifecycleEvent,
)
from loom.runtime.lowlevel import mailbox_topic
from loom.runtime.tools import FunctionTool, Tool

from ._agents_support import Seen, event, hosted, info_of, lifecycle_of, spec

pytestmark = pytest.mark.anyio
both_backends = pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])


def ids(infos: list[AgentInfo]) -> list[str]:
    return [i.id for i in infos]


def who_tool(name: str, agent_id: str) -> Tool:
    """A tool that answers with the id of the agent offering it."""

    async def who() -> str:
        return agent_id

    return FunctionTool(
        who, name=name, description="who answers", parameters_schema={"type": "object"}
    )


# ------------------------------------------------------------------------ the Directory itself


def test_entries_by_id() -> None:
    d = Directory()
    meta = {"team": "red"}
    before = time.time_ns() // 1_000_000
    d.add("a", metadata=meta)
    d.add("r", remote=True)
    meta["team"] = "blue"  # the directory keeps its own copy
    with pytest.raises(KeyError):
        d.add("a")
    assert len(d) == 2
    assert "a" in d
    assert "zz" not in d
    assert d.get("zz") is None
    a = d.get("a")
    assert a is not None
    assert a.status is AgentStatus.CREATED
    assert a.remote is False
    assert a.metadata == {"team": "red"}
    assert a.patterns == ()
    assert a.capabilities == ()
    assert (a.mailbox_depth, a.in_flight, a.restarts) == (0, 0, 0)
    assert before <= a.last_heartbeat_ms <= time.time_ns() // 1_000_000
    assert ids(d.all()) == ["a", "r"]
    d.set_status("a", AgentStatus.RUNNING)
    d.count_restart("a")
    d.add_in_flight("a", 2)
    d.add_in_flight("unknown", 1)  # ignored
    d.set_depth_probe("a", lambda: 7)
    a = d.get("a")
    assert a is not None
    assert (a.status, a.restarts, a.in_flight, a.mailbox_depth) == (AgentStatus.RUNNING, 1, 2, 7)
    d.remove("a")
    d.remove("a")  # unknown ids are ignored
    assert ids(d.all()) == ["r"]


def test_by_topic_matches_concrete_topics_against_patterns() -> None:
    d = Directory()
    for agent_id, patterns in {
        "star": ["orders.*"],
        "tail": ["orders.>"],
        "exact": ["orders.eu"],
        "twice": ["orders.eu", "orders.*"],
        "other": ["other.>"],
    }.items():
        d.add(agent_id)
        for pattern in patterns:
            d.add_pattern(agent_id, pattern)
    assert sorted(ids(d.by_topic("orders.eu"))) == ["exact", "star", "tail", "twice"]
    assert sorted(ids(d.by_topic("orders.us"))) == ["star", "tail", "twice"]
    assert ids(d.by_topic("orders.eu.de")) == ["tail"]
    assert ids(d.by_topic("orders")) == []
    for bad in ("orders.*", "orders.>", "", "a..b"):
        with pytest.raises(InvalidTopic):
            d.by_topic(bad)
    with pytest.raises(InvalidTopic):
        d.add_pattern("other", "bad..pattern")
    d.remove_pattern("twice", "orders.*")
    assert sorted(ids(d.by_topic("orders.us"))) == ["star", "tail"]
    d.remove("tail")
    assert ids(d.by_topic("orders.eu.de")) == []
    info = d.get("twice")
    assert info is not None
    assert info.patterns == ("orders.eu",)


def test_by_capability_and_least_busy() -> None:
    d = Directory()
    for agent_id in ("b", "a", "c", "idle"):
        d.add(agent_id)
        d.set_status(agent_id, AgentStatus.RUNNING)
    d.set_capabilities("a", ["text.upper", "text.lower"])
    d.set_capabilities("b", ["text.upper"])
    d.set_capabilities("c", ["text.upper"])
    assert ids(d.by_capability("text.upper")) == ["a", "b", "c"]
    assert ids(d.by_capability("nothing")) == []
    a = d.get("a")
    assert a is not None
    assert a.capabilities == ("text.lower", "text.upper")
    # Ties: the fewest restarts, then the id.
    least = d.least_busy("text.upper")
    assert least is not None
    assert least.id == "a"
    d.count_restart("a")
    least = d.least_busy("text.upper")
    assert least is not None
    assert least.id == "b"
    # Work queued and in flight both count.
    d.set_depth_probe("a", lambda: 3)
    d.set_depth_probe("b", lambda: 2)
    d.add_in_flight("c", 1)
    least = d.least_busy("text.upper")
    assert least is not None
    assert least.id == "c"
    d.add_in_flight("c", 5)
    least = d.least_busy("text.upper")
    assert least is not None
    assert least.id == "b"
    # Only running agents are chosen.
    for agent_id in ("a", "b", "c"):
        d.set_status(agent_id, AgentStatus.STOPPED)
    assert d.least_busy("text.upper") is None
    assert d.least_busy("nothing") is None
    # Replacing a set drops the old names; removing the agent drops them all.
    d.set_capabilities("a", ["text.reverse"])
    assert ids(d.by_capability("text.lower")) == []
    d.remove("a")
    assert ids(d.by_capability("text.reverse")) == []


def test_sweep_marks_silent_remote_agents_stale() -> None:
    d = Directory()
    d.add("local")
    d.add("remote", remote=True)
    d.add("quiet", remote=True)  # not running: never marked
    for agent_id in ("local", "remote"):
        d.set_status(agent_id, AgentStatus.RUNNING)
    for agent_id in ("local", "remote", "quiet"):
        d.heartbeat(agent_id, now_ms=10_000)
    assert d.sweep(stale_after_s=2, now_ms=11_999) == []
    assert d.sweep(stale_after_s=2, now_ms=12_001) == ["remote"]
    assert d.sweep(stale_after_s=2, now_ms=50_000) == []  # reported once
    statuses = {i.id: i.status for i in d.all()}
    assert statuses == {
        "local": AgentStatus.RUNNING,
        "remote": AgentStatus.STALE,
        "quiet": AgentStatus.CREATED,
    }
    d.heartbeat("remote", now_ms=50_000)
    remote = d.get("remote")
    assert remote is not None
    assert remote.status is AgentStatus.RUNNING
    assert remote.last_heartbeat_ms == 50_000
    with pytest.raises(KeyError):
        d.heartbeat("nobody")


# ------------------------------------------------------------------------ kept by the runtime


@both_backends
async def test_the_runtime_lists_running_agents_with_their_topics_and_capabilities() -> None:
    async with hosted() as h:
        await h.rt.start(
            spec(
                "a",
                topics=["orders.*", "audit.>"],
                tools=[who_tool("who.a", "a")],
                metadata={"team": "red"},
            )
        )
        await h.rt.start(spec("b", topics=["orders.eu"]))
        a = info_of(h.rt, "a")
        assert a.status is AgentStatus.RUNNING
        assert set(a.patterns) == {mailbox_topic("a"), "orders.*", "audit.>"}
        assert a.capabilities == ("who.a",)
        assert a.metadata == {"team": "red"}
        assert a.remote is False
        assert ids(h.rt.agents()) == ["a", "b"]
        assert sorted(ids(h.rt.directory.by_topic("orders.eu"))) == ["a", "b"]
        assert ids(h.rt.directory.by_topic("audit.x.y")) == ["a"]
        assert ids(h.rt.directory.by_topic(mailbox_topic("b"))) == ["b"]
        assert ids(h.rt.directory.by_capability("who.a")) == ["a"]
        await h.rt.stop("a")
        a = info_of(h.rt, "a")
        assert a.status is AgentStatus.STOPPED
        assert a.patterns == ()
        assert a.capabilities == ()
        assert ids(h.rt.directory.by_topic("orders.eu")) == ["b"]
        assert h.rt.directory.by_capability("who.a") == []


@both_backends
async def test_least_busy_picks_the_agent_with_the_shorter_mailbox() -> None:
    entered = anyio.Event()
    release = anyio.Event()

    async def blocking(ctx: Context, topic: str, ev: Event) -> None:
        entered.set()
        await release.wait()

    async with hosted() as h:
        await h.rt.start(spec("busy", blocking, topics=["work"], tools=[who_tool("who", "busy")]))
        await h.rt.start(spec("free", tools=[who_tool("who", "free")]))
        await h.bus.publish("work", event("held"))
        with anyio.fail_after(5):
            await entered.wait()
        for _ in range(3):
            await h.bus.publish("work", event("queued"))
        assert info_of(h.rt, "busy").mailbox_depth == 3
        assert info_of(h.rt, "free").mailbox_depth == 0
        least = h.rt.directory.least_busy("who")
        assert least is not None
        assert least.id == "free"
        assert await h.rt.call_tool("who", {}) == "free"
        release.set()


@both_backends
async def test_the_runtime_marks_silent_remote_agents_stale() -> None:
    async with hosted(stale_after_s=0.05, sweep_interval_s=0.01) as h:
        await h.rt.start(spec("local"))
        d = h.rt.directory
        d.add("remote", remote=True, metadata={"host": "elsewhere"})
        d.set_status("remote", AgentStatus.RUNNING)
        d.heartbeat("remote", now_ms=time.time_ns() // 1_000_000 - 1000)
        stale = await h.life.next(lambda dl: dl.event.type == "agent.stale")
        assert stale.topic == "loom.lifecycle.remote"
        assert lifecycle_of(stale) == LifecycleEvent(
            agent_id="remote", status="stale", reason="no heartbeat"
        )
        assert h.rt.status("remote") is AgentStatus.STALE
        assert h.rt.status("local") is AgentStatus.RUNNING
        d.heartbeat("remote")
        assert h.rt.status("remote") is AgentStatus.RUNNING


@both_backends
async def test_the_restart_counter_and_status_follow_the_agent() -> None:
    failed = Seen[str]()
    seen = Seen[str]()

    async def on_event(ctx: Context, topic: str, ev: Event) -> None:
        if not failed.items:
            failed.add("once")
            raise RuntimeError("once")
        seen.add("ok")

    async with hosted() as h:
        await h.rt.start(spec("a", on_event, topics=["in"]))
        assert info_of(h.rt, "a").restarts == 0
        await h.bus.publish("in", event())
        await seen.wait_for(1)
        assert info_of(h.rt, "a").restarts == 1
        assert h.rt.status("a") is AgentStatus.RUNNING


async def test_capabilities_of_lists_what_an_agent_offers_while_it_runs() -> None:
    async with hosted() as h:
        await h.rt.start(spec("a", tools=[who_tool("who.a", "a"), who_tool("who.b", "a")]))
        await h.rt.start(spec("plain"))
        assert [t.name for t in h.rt.capabilities_of("a")] == ["who.a", "who.b"]
        assert h.rt.capabilities_of("plain") == []
        assert h.rt.capabilities_of("nobody") == []
        await h.rt.stop("a")
        assert h.rt.capabilities_of("a") == []
