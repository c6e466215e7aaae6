"""The SDK's ``Agent`` hosted by the runtime: the function form and the class form."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from loom import Agent, Context, capability
from loom.runtime import AgentStatus, Event, InvalidArgument, QoS, Strategy, SupervisionPolicy
from loom.runtime.lowlevel import mailbox_topic
from loom.runtime.tools import InvalidToolArguments, ToolNotFound

from ._agents_support import FAST, Seen, event, hosted, info_of

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])]


@capability("text.reverse", description="Reverse a text")
async def reverse(text: str) -> str:
    return text[::-1]


# ------------------------------------------------------------------------------ function form


async def test_the_function_form_maps_onto_an_agent_spec() -> None:
    policy = SupervisionPolicy(strategy=Strategy.STOP)

    async def on_event(ctx: Context, topic: str, ev: Event) -> None:
        pass

    agent = Agent(
        "fn",
        topics=["a.*", "b"],
        capabilities=[reverse],
        on_event=on_event,
        qos=QoS.BACKGROUND,
        mailbox_size=10,
        max_concurrency=2,
        policy=policy,
        metadata={"team": "red"},
    )
    spec = agent.agent_spec()
    assert (spec.id, spec.topics, spec.qos, spec.mailbox_size, spec.max_concurrency) == (
        "fn",
        ("a.*", "b"),
        QoS.BACKGROUND,
        10,
        2,
    )
    assert spec.policy == policy
    assert spec.metadata == {"team": "red"}
    assert spec.factory() is agent  # the first instance is the one given
    assert [t.name for t in agent.tools()] == ["text.reverse"]
    assert repr(agent) == "<Agent 'fn' topics=['a.*', 'b']>"


async def test_the_function_form_runs_its_hooks_and_offers_its_capabilities() -> None:
    calls = Seen[str]()
    results = Seen[Any]()

    async def on_start(ctx: Context) -> None:
        ctx.state["greeting"] = "hi"
        calls.add("start")

    async def on_event(ctx: Context, topic: str, ev: Event) -> None:
        reversed_text = await ctx.tool("text.reverse", {"text": ev.payload.decode()})
        results.add((ctx.state["greeting"], reversed_text))

    async def on_stop(ctx: Context) -> None:
        calls.add("stop")

    agent = Agent(
        "fn",
        topics=["in"],
        capabilities=[reverse],
        on_event=on_event,
        on_start=on_start,
        on_stop=on_stop,
    )
    async with hosted() as h:
        await h.rt.start(agent)
        assert info_of(h.rt, "fn").capabilities == ("text.reverse",)
        await h.bus.publish("in", event("abc"))
        await results.wait_for(1)
        assert agent.state == {"greeting": "hi"}  # ctx.state is the agent's state
        with pytest.raises(InvalidToolArguments):
            await h.rt.call_tool("text.reverse", {"text": 5})
        await h.rt.stop("fn")
        with pytest.raises(ToolNotFound):
            await h.rt.call_tool("text.reverse", {"text": "x"})
    assert results.items == [("hi", "cba")]
    assert calls.items == ["start", "stop"]


async def test_an_agent_without_on_event_ignores_events() -> None:
    async with hosted() as h:
        await h.rt.start(Agent("quiet", topics=["in"]))
        await h.bus.publish("in", event())
        await h.bus.publish(mailbox_topic("quiet"), event())
        await anyio.wait_all_tasks_blocked()
        assert h.rt.statistics_of("quiet").handled == 2
        assert h.rt.status("quiet") is AgentStatus.RUNNING
        assert h.dead.of("quiet") == []


async def test_a_function_form_restart_starts_from_fresh_state() -> None:
    seen = Seen[tuple[int, int]]()
    starts = Seen[int]()

    async def on_start(ctx: Context) -> None:
        starts.add(id(ctx.state))
        ctx.state["n"] = 0

    async def on_event(ctx: Context, topic: str, ev: Event) -> None:
        ctx.state["n"] += 1
        if ev.payload == b"crash" and ctx.state["n"] == 2:
            raise RuntimeError("crash")
        seen.add((len(starts), ctx.state["n"]))

    agent = Agent("fn", topics=["in"], on_event=on_event, on_start=on_start, policy=FAST)
    async with hosted() as h:
        await h.rt.start(agent)
        for payload in ("x", "crash", "y"):
            await h.bus.publish("in", event(payload))
        await seen.wait_for(3)
    # The crash is retried first in the fresh instance, which counts from zero again.
    assert seen.items == [(1, 1), (2, 1), (2, 2)]
    assert len(set(starts.items)) == 2


async def test_bad_agent_arguments_are_refused() -> None:
    def not_async(ctx: Context, topic: str, ev: Event) -> None:
        pass

    def sync_hook(ctx: Context) -> None:
        pass

    with pytest.raises(InvalidArgument, match="on_event must be an async function"):
        Agent("a", on_event=not_async)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="on_start"):
        Agent("a", on_start=sync_hook)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="on_stop"):
        Agent("a", on_stop=sync_hook)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="needs an id"):
        Agent()
    with pytest.raises(InvalidArgument, match="invalid agent id"):
        Agent("a.b")
    with pytest.raises(InvalidArgument, match="capabilities must be"):
        Agent("a", capabilities=[reverse.__wrapped__])  # type: ignore[list-item]


# --------------------------------------------------------------------------------- class form


class Counter(Agent):
    """Counts the events it sees; offers its count as a capability."""

    id = "counter"
    topics = ("count.*",)

    def __init__(self, *, start: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.count = start
        self.lifecycle: list[str] = []

    @capability("counter.read", description="The current count")
    async def read(self, plus: int = 0) -> int:
        return self.count + plus

    async def on_start(self, ctx: Context) -> None:
        ctx.state["events"] = []
        STARTS.add(self)

    async def on_event(self, ctx: Context, topic: str, event: Event) -> None:
        if event.payload == b"crash" and not CRASHED.items:
            CRASHED.add(self.count)
            raise RuntimeError("crash")
        self.count += 1
        ctx.state["events"].append(topic)
        await ctx.emit("counted", str(self.count))

    async def on_stop(self, ctx: Context) -> None:
        STOPS.add(self)


# Module level, because capabilities resolve their annotations from the module; reset per test.
STARTS: Seen[Counter]
STOPS: Seen[Counter]
CRASHED: Seen[int]


@pytest.fixture(autouse=True)
def fresh_records(anyio_backend: str) -> None:
    global STARTS, STOPS, CRASHED
    STARTS, STOPS, CRASHED = Seen(), Seen(), Seen()


async def test_the_class_form_keeps_state_on_the_instance_and_offers_its_methods() -> None:
    counter = Counter(start=10)
    assert counter.agent_id == "counter"
    assert counter.subscriptions == ("count.*",)
    assert [t.name for t in counter.tools()] == ["counter.read"]
    async with hosted() as h, h.bus.subscribe("counted") as counted:
        await h.rt.start(counter)
        await h.bus.publish("count.a", event())
        await h.bus.publish("count.b", event())
        with anyio.fail_after(5):
            assert [(await counted.receive()).event.payload for _ in range(2)] == [b"11", b"12"]
        assert await h.rt.call_tool("counter.read", {}) == 12
        assert await h.rt.call_tool("counter.read", {"plus": 1}) == 13
        assert counter.state == {"events": ["count.a", "count.b"]}
    assert STARTS.items == [counter]
    assert STOPS.items == [counter]


async def test_a_class_form_restart_builds_a_fresh_instance_with_the_same_arguments() -> None:
    counter = Counter(start=10, policy=FAST, metadata={"v": "1"})
    async with hosted() as h, h.bus.subscribe("counted") as counted:
        await h.rt.start(counter)
        await h.bus.publish("count.a", event())
        await h.bus.publish("count.a", event("crash"))
        with anyio.fail_after(5):
            first = (await counted.receive()).event.payload
            second = (await counted.receive()).event.payload
        await STARTS.wait_for(2)
        fresh = STARTS.items[1]
        # The capability now reads the fresh instance.
        assert await h.rt.call_tool("counter.read", {}) == 11
        assert info_of(h.rt, "counter").metadata == {"v": "1"}
    assert (first, second) == (b"11", b"11")  # the crash, retried from start=10 again
    assert CRASHED.items == [11]
    assert fresh is not counter
    assert type(fresh) is Counter
    assert fresh.count == 11
    assert counter.count == 11
    assert STOPS.items == [counter, fresh]


async def test_the_class_form_is_reachable_from_other_agents() -> None:
    results = Seen[Any]()

    async def ask(ctx: Context, topic: str, ev: Event) -> None:
        results.add(await ctx.tool("counter.read", {"plus": 100}))

    async with hosted() as h:
        await h.rt.start(Counter(start=1))
        await h.rt.start(Agent("asker", topics=["ask"], on_event=ask))
        await h.bus.publish("ask", event())
        await results.wait_for(1)
    assert results.items == [101]
