"""Agent lifecycle: start, stop, delete, runtime shutdown; the states published as events."""

from __future__ import annotations

import sys

import anyio
import msgspec
import pytest

from loom import Agent
from loom.runtime import (
    AgentNotFound,
    AgentRuntime,
    AgentSpec,
    AgentStartFailed,
    AgentStatus,
    BusClosed,
    Context,
    Event,
    EventBus,
    InvalidArgument,
    InvalidTopic,
    LifecycleEvent,
    Strategy,
    SupervisionPolicy,
)
from loom.runtime.lowlevel import mailbox_topic

from ._agents_support import FnBehaviour, Lifecycle, Seen, event, hosted, info_of, spec

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])]

STARTED = ["created", "starting", "running"]
ENDED = ["stopping", "stopped"]


async def test_start_publishes_created_starting_running_and_returns_once_running() -> None:
    calls: list[str] = []

    async def on_start(ctx: Context) -> None:
        assert ctx.event is None
        assert ctx.agent_id == "a"
        calls.append("on_start")

    async with hosted() as h:
        assert await h.rt.start(spec("a", on_start=on_start)) == "a"
        # start() returns after on_start and after "running" was published.
        assert calls == ["on_start"]
        assert h.rt.status("a") is AgentStatus.RUNNING
        assert h.life.history("a") == STARTED
        first = h.life.seen[0]
        assert first.topic == "loom.lifecycle.a"
        assert first.event.type == "agent.created"
        assert first.event.source == "loom.runtime"
        payload = msgspec.json.decode(h.life.seen[2].event.payload, type=LifecycleEvent)
        assert payload == LifecycleEvent(agent_id="a", status="running", reason="", restarts=0)


async def test_on_start_runs_before_the_first_event() -> None:
    order: list[str] = []

    async def on_start(ctx: Context) -> None:
        order.append("start")
        # An event published while on_start runs waits in the mailbox.
        await ctx.emit("in.x")
        await anyio.lowlevel.checkpoint()
        order.append("start done")

    handled = Seen[str]()

    async def on_event(ctx: Context, topic: str, ev: Event) -> None:
        order.append(f"event {topic}")
        handled.add(topic)

    async with hosted() as h:
        await h.rt.start(spec("a", on_event, topics=["in.*"], on_start=on_start))
        await handled.wait_for(1)
    assert order == ["start", "start done", "event in.x"]


async def test_stop_calls_on_stop_publishes_stopping_stopped_and_keeps_the_entry() -> None:
    stopped = Seen[str | None]()

    async def on_stop(ctx: Context) -> None:
        stopped.add(None if ctx.event is None else ctx.event.id)

    async with hosted() as h:
        await h.rt.start(spec("a", topics=["in.x"], on_stop=on_stop))
        await h.rt.stop("a")
        assert stopped.items == [None]
        assert h.life.history("a") == STARTED + ENDED
        assert h.rt.status("a") is AgentStatus.STOPPED
        info = info_of(h.rt, "a")
        assert info.status is AgentStatus.STOPPED
        # Its subscriptions are gone: nobody receives its topics or its mailbox any more.
        assert await h.bus.publish("in.x", event()) == 0
        assert await h.bus.publish(mailbox_topic("a"), event()) == 0
        assert h.rt.directory.by_topic("in.x") == []
        # Stopping again does nothing; on_stop is not called twice.
        await h.rt.stop("a")
        assert stopped.items == [None]
        assert h.life.history("a") == STARTED + ENDED
        # A stopped agent may be started again under its id: a new run, a new entry.
        await h.rt.start(spec("a"))
        assert h.rt.status("a") is AgentStatus.RUNNING
        assert h.life.history("a")[-3:] == STARTED[-3:]
        # While it runs, the id is taken.
        with pytest.raises(InvalidArgument, match="already exists"):
            await h.rt.start(spec("a"))


async def test_delete_stops_the_agent_and_forgets_it() -> None:
    stopped = Seen[str]()

    async def on_stop(ctx: Context) -> None:
        stopped.add(ctx.agent_id)

    async with hosted() as h:
        await h.rt.start(spec("a", on_stop=on_stop))
        await h.rt.delete("a")
        assert stopped.items == ["a"]
        assert h.life.history("a") == STARTED + ENDED
        assert "a" not in h.rt.directory
        assert h.rt.directory.get("a") is None
        with pytest.raises(AgentNotFound):
            h.rt.status("a")
        with pytest.raises(AgentNotFound):
            await h.rt.delete("a")
        # The id is free again.
        await h.rt.start(spec("a", on_stop=on_stop))
        assert h.rt.status("a") is AgentStatus.RUNNING


async def test_delete_of_a_stopped_agent_removes_it_without_a_second_on_stop() -> None:
    stopped = Seen[str]()

    async def on_stop(ctx: Context) -> None:
        stopped.add(ctx.agent_id)

    async with hosted() as h:
        await h.rt.start(spec("a", on_stop=on_stop))
        await h.rt.stop("a")
        await h.rt.delete("a")
        assert stopped.items == ["a"]
        assert "a" not in h.rt.directory


async def test_unknown_agents_are_agent_not_found() -> None:
    async with hosted() as h:
        for call in (h.rt.stop, h.rt.delete):
            with pytest.raises(AgentNotFound) as info:
                await call("nobody")
            assert isinstance(info.value, LookupError)
        with pytest.raises(AgentNotFound):
            h.rt.status("nobody")
        with pytest.raises(AgentNotFound):
            h.rt.statistics_of("nobody")


async def test_leaving_the_runtime_stops_every_agent_and_calls_on_stop() -> None:
    stopped = Seen[str]()

    async def on_stop(ctx: Context) -> None:
        stopped.add(ctx.agent_id)

    async with EventBus() as bus, Lifecycle(bus) as life:
        async with AgentRuntime(bus) as rt:
            for name in ("a", "b", "c"):
                await rt.start(spec(name, on_stop=on_stop))
        # The runtime stops agents newest first, and all of them before it returns.
        assert stopped.items == ["c", "b", "a"]
        for name in ("a", "b", "c"):
            assert life.history(name) == STARTED + ENDED
        with pytest.raises(BusClosed):
            await rt.start(spec("d"))


async def test_leaving_the_runtime_on_an_error_still_calls_on_stop() -> None:
    stopped = Seen[str]()

    async def on_stop(ctx: Context) -> None:
        stopped.add(ctx.agent_id)

    async def fail_inside(bus: EventBus) -> None:
        async with AgentRuntime(bus) as rt:
            await rt.start(spec("a", on_stop=on_stop))
            raise RuntimeError("test body failed")

    async with EventBus() as bus:
        # The exact exception type is the subject of the next test.
        with pytest.raises((RuntimeError, ExceptionGroup)) as info:
            await fail_inside(bus)
        assert "test body failed" in repr(info.value)
    assert stopped.items == ["a"]


async def test_an_error_in_the_runtime_block_propagates_as_itself() -> None:
    async with EventBus() as bus:
        with pytest.raises(RuntimeError, match="test body failed"):
            async with AgentRuntime(bus):
                raise RuntimeError("test body failed")


async def test_start_needs_a_running_runtime() -> None:
    async with EventBus() as bus:
        rt = AgentRuntime(bus)
        with pytest.raises(BusClosed):
            await rt.start(spec("a"))


async def test_duplicate_ids_are_refused() -> None:
    async with hosted() as h:
        await h.rt.start(spec("a"))
        with pytest.raises(InvalidArgument, match="already exists"):
            await h.rt.start(spec("a"))
        # A remote entry of the same name blocks a local start too.
        h.rt.directory.add("r", remote=True)
        with pytest.raises(InvalidArgument):
            await h.rt.start(spec("r"))
        assert h.rt.status("a") is AgentStatus.RUNNING


async def test_stop_finishes_the_event_in_hand_and_dead_letters_the_rest() -> None:
    entered = anyio.Event()
    release = anyio.Event()
    done = Seen[str]()

    async def on_event(ctx: Context, topic: str, ev: Event) -> None:
        entered.set()
        await release.wait()
        done.add(ev.payload.decode())

    async with hosted() as h, anyio.create_task_group() as tg:
        await h.rt.start(spec("a", on_event, topics=["in"]))
        for i in range(3):
            await h.bus.publish("in", event(str(i)))
        with anyio.fail_after(5):
            await entered.wait()
        tg.start_soon(h.rt.stop, "a")
        await anyio.wait_all_tasks_blocked()
        assert h.rt.status("a") is AgentStatus.RUNNING  # still finishing event 0
        release.set()
        await h.life.wait("a", AgentStatus.STOPPED)
        assert done.items == ["0"]
        letters = h.dead.of("a")
        assert [e.payload for e in letters] == [b"1", b"2"]
        assert {e.metadata["dead_letter.reason"] for e in letters} == {"agent_stopped"}
        assert {e.metadata["dead_letter.topic"] for e in letters} == {"in"}


async def test_a_handler_that_outlives_stop_timeout_is_cancelled_and_on_stop_still_runs() -> None:
    entered = anyio.Event()
    cancelled = Seen[str]()
    stopped = Seen[str]()

    async def on_event(ctx: Context, topic: str, ev: Event) -> None:
        entered.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.add(ev.payload.decode())
            raise

    async def on_stop(ctx: Context) -> None:
        stopped.add(ctx.agent_id)

    async with hosted(stop_timeout_s=0.05) as h:
        await h.rt.start(spec("a", on_event, topics=["in"], on_stop=on_stop))
        await h.bus.publish("in", event("stuck"))
        with anyio.fail_after(5):
            await entered.wait()
            await h.rt.stop("a")
        assert cancelled.items == ["stuck"]
        assert stopped.items == ["a"]
        assert h.rt.status("a") is AgentStatus.STOPPED


SELF_STOP = """
import sys
import anyio
from loom.runtime import AgentRuntime, AgentSpec, AgentStatus, Event, EventBus


class StopsItself:
    def __init__(self, runtime):
        self.runtime = runtime

    async def on_start(self, ctx): pass
    async def on_stop(self, ctx): pass
    def tools(self): return ()

    async def on_event(self, ctx, topic, event):
        await self.runtime.stop(ctx.agent_id)


async def main():
    async with EventBus() as bus, AgentRuntime(bus, stop_timeout_s=0.05) as rt:
        await rt.start(AgentSpec(id="a", factory=lambda: StopsItself(rt), topics=("in",)))
        async with bus.subscribe("loom.lifecycle.a") as life:
            await bus.publish("in", Event())
            async for delivery in life:
                if delivery.event.type == "agent.stopped":
                    break
    print("stopped", rt.status("a").value)


anyio.run(main, backend=sys.argv[1])
"""


async def test_an_agent_can_stop_itself_from_its_handler(anyio_backend: str) -> None:
    # In a subprocess: with the bug, the runtime cannot even be left, so only a kill ends it.
    async with await anyio.open_process(
        [sys.executable, "-c", SELF_STOP, anyio_backend]
    ) as process:
        try:
            with anyio.fail_after(3):
                await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
        assert process.stdout is not None
        output = await process.stdout.receive()
    assert process.returncode == 0
    assert output.strip() == b"stopped stopped"


async def test_stop_during_a_hanging_on_start_makes_start_raise() -> None:
    stopped = Seen[str]()
    outcome = Seen[BaseException]()

    async def on_start(ctx: Context) -> None:
        await anyio.sleep_forever()

    async def on_stop(ctx: Context) -> None:
        stopped.add(ctx.agent_id)

    async def starter() -> None:
        try:
            await h.rt.start(spec("a", on_start=on_start, on_stop=on_stop))
        except AgentStartFailed as exc:
            outcome.add(exc)

    async with hosted(stop_timeout_s=0.05) as h, anyio.create_task_group() as tg:
        tg.start_soon(starter)
        await h.life.wait("a", AgentStatus.STARTING)
        with anyio.fail_after(5):
            await h.rt.stop("a")
        await outcome.wait_for(1)
        assert h.rt.status("a") is AgentStatus.STOPPED
        assert h.life.history("a") == ["created", "starting", "stopping", "stopped"]
    assert stopped.items == ["a"]


async def test_an_on_stop_that_raises_is_logged_and_the_agent_still_stops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def on_stop(ctx: Context) -> None:
        raise RuntimeError("cleanup broke")

    async with hosted() as h:
        await h.rt.start(spec("a", on_stop=on_stop))
        await h.rt.stop("a")
        assert h.rt.status("a") is AgentStatus.STOPPED
    assert any("cleanup broke" in r.getMessage() for r in caplog.records)


async def test_statistics_of_counts_handled_and_failed_events() -> None:
    handled = Seen[str]()

    async def on_event(ctx: Context, topic: str, ev: Event) -> None:
        handled.add(topic)
        if ev.payload == b"bad":
            raise ValueError("bad")

    resume = SupervisionPolicy(strategy=Strategy.RESUME)
    async with hosted() as h:
        await h.rt.start(spec("a", on_event, topics=["in"], mailbox_size=7, policy=resume))
        for payload in ("ok", "bad", "ok"):
            await h.bus.publish("in", event(payload))
        await handled.wait_for(3)
        await h.dead.wait("a", "handler_error")
        stats = h.rt.statistics_of("a")
        assert stats.handled == 2
        assert stats.failed == 1
        assert stats.capacity == 7
        assert stats.queued == 0
        assert 1 <= stats.high_water <= 7


async def test_runtime_and_spec_arguments_are_checked() -> None:
    async with EventBus() as bus:
        with pytest.raises(InvalidArgument):
            AgentRuntime(bus, stop_timeout_s=0)
        with pytest.raises(InvalidArgument):
            AgentRuntime(bus, stale_after_s=-1)
        with pytest.raises(InvalidArgument):
            AgentRuntime(bus, sweep_interval_s=0)
    for bad_id in ("", "a.b", "a*", "with space", "x" * 129):
        with pytest.raises(InvalidArgument, match="invalid agent id"):
            spec(bad_id)
    with pytest.raises(InvalidArgument, match="mailbox_size"):
        spec("a", mailbox_size=0)
    with pytest.raises(InvalidArgument, match="max_concurrency"):
        spec("a", max_concurrency=0)
    with pytest.raises(InvalidArgument):
        SupervisionPolicy(max_restarts=-1)


async def test_a_bad_topic_is_refused_at_start() -> None:
    async with hosted() as h:
        with pytest.raises(InvalidTopic):  # refused when the spec is made, before any start
            AgentSpec(id="a", factory=FnBehaviour, topics=("bad..topic",))
        assert "a" not in h.rt.directory
        assert h.life.history("a") == []
        await h.rt.start(spec("a"))
        assert h.rt.status("a") is AgentStatus.RUNNING


async def test_a_bad_topic_refused_at_start_leaves_no_subscription_behind() -> None:
    async with hosted() as h:
        baseline = h.bus.subscription_count(), h.bus.trie_node_count()
        with pytest.raises(InvalidTopic):
            await h.rt.start(Agent("a", topics=["ok.topic", "bad..topic"]))
        assert (h.bus.subscription_count(), h.bus.trie_node_count()) == baseline
        assert "a" not in h.rt.directory
