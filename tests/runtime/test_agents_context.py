"""``Context``: emit, request/reply, tool, subscribe/unsubscribe, spawn, schedule, state, log."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import Any, cast

import anyio
import msgspec
import pytest

from loom.runtime import (
    AgentStatus,
    Context,
    DeadlineExceeded,
    Envelope,
    Event,
    InvalidArgument,
    InvalidTopic,
    QoS,
    Strategy,
    SupervisionPolicy,
    Timer,
    collab,
)
from loom.runtime.collab import NoResponders, RequestTimeout
from loom.runtime.lowlevel import ContextHost, Handler, mailbox_topic
from loom.runtime.tools import (
    MAX_ARGUMENT_BYTES,
    MAX_ARGUMENT_DEPTH,
    FunctionTool,
    InvalidToolArguments,
    Tool,
    ToolNotFound,
    ToolRegistry,
)

from ._agents_support import Seen, Watch, event, hosted, info_of, spec

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])]

RESUME = SupervisionPolicy(strategy=Strategy.RESUME)


def echo_tool(name: str, answer: str) -> Tool:
    """A tool taking ``{"text": str}`` and answering ``"{answer}:{text}"``."""

    async def fn(text: str) -> str:
        return f"{answer}:{text}"

    schema = {
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
        "additionalProperties": False,
    }
    return FunctionTool(fn, name=name, description="echo", parameters_schema=schema)


# ------------------------------------------------------------------------------------ emit


async def test_emit_continues_the_handled_event_one_hop_further() -> None:
    async def on_start(ctx: Context) -> None:
        assert await ctx.emit("out.start", "from on_start") is True

    async def on_event(ctx: Context, topic: str, ev: Event) -> None:
        await ctx.emit(
            "out.event",
            "text payload",
            type="reply.kind",
            metadata={"k": "v"},
            tags=["t1", "t2"],
            priority=3,
        )

    async with hosted() as h, Watch(h.bus.subscribe("out.>")) as out:
        await h.rt.start(spec("a", on_event, topics=["in"], on_start=on_start))
        source = Event(
            type="t",
            envelope=Envelope(
                thread_id="th",
                sender="client",
                correlation_id="corr",
                ttl=9,
                hop=4,
                traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        )
        await h.bus.publish("in", source)
        first, second = await out.take(2)
    assert first.topic == "out.start"
    assert first.event.payload == b"from on_start"
    # Outside a handler: a fresh envelope naming the agent.
    assert first.event.envelope == Envelope(sender="a")
    assert first.event.source == "a"
    ev = second.event
    assert second.topic == "out.event"
    assert ev.payload == b"text payload"
    assert (ev.type, ev.metadata, ev.tags, ev.priority, ev.source) == (
        "reply.kind",
        {"k": "v"},
        ("t1", "t2"),
        3,
        "a",
    )
    env = ev.envelope
    assert (env.thread_id, env.sender, env.ttl, env.hop) == ("th", "a", 9, 5)
    assert env.traceparent == source.envelope.traceparent
    assert env.correlation_id == ""  # an emit is not a reply
    assert ev.id != source.id


async def test_a_realtime_emit_returns_false_instead_of_waiting_for_a_full_subscriber() -> None:
    results = Seen[tuple[str, bool]]()

    async def on_event(ctx: Context, topic: str, ev: Event) -> None:
        results.add(("rt1", await ctx.emit("out", "1", qos=QoS.REALTIME)))
        results.add(("rt2", await ctx.emit("out", "2", qos=QoS.REALTIME)))
        results.add(("default", await ctx.emit("out", "3")))  # waits for room

    async with hosted() as h, Watch(h.bus.subscribe("out", buffer_size=1)) as out:
        await h.rt.start(spec("a", on_event, topics=["in"]))
        await h.bus.publish("in", event())
        await results.wait_for(2)
        await anyio.wait_all_tasks_blocked()
        assert results.items == [("rt1", True), ("rt2", False)]  # the third one waits
        assert [d.event.payload for d in await out.take(2)] == [b"1", b"3"]
        await results.wait_for(3)
    assert results.items[2] == ("default", True)


# ------------------------------------------------------------------------- request / reply


async def test_request_and_reply_between_two_agents() -> None:
    got = Seen[Event]()
    requests = Seen[Event]()

    async def requester(ctx: Context, topic: str, ev: Event) -> None:
        got.add(await ctx.request("svc.echo", b"hello", timeout=5, metadata={"m": "1"}))

    async def responder(ctx: Context, topic: str, ev: Event) -> None:
        requests.add(ev)
        await ctx.reply(ev, ev.payload.upper(), type="echo.reply")

    async with hosted() as h:
        await h.rt.start(spec("b", responder, topics=["svc.echo"]))
        await h.rt.start(spec("a", requester, topics=["go"]))
        await h.bus.publish("go", Event(type="t", envelope=Envelope(thread_id="th")))
        (reply,) = await got.wait_for(1)
    (request,) = requests.items
    assert request.payload == b"hello"
    assert request.metadata == {"m": "1"}
    assert request.envelope.sender == "a"
    assert request.envelope.thread_id == "th"
    assert request.envelope.hop == 1
    assert request.envelope.correlation_id
    assert request.envelope.reply_to
    assert reply.payload == b"HELLO"
    assert reply.type == "echo.reply"
    assert reply.envelope.correlation_id == request.envelope.correlation_id
    assert reply.envelope.sender == "b"
    assert reply.envelope.thread_id == "th"


async def test_concurrent_requests_get_their_own_replies() -> None:
    n = 4
    got = Seen[tuple[str, bytes]]()

    async def requester(ctx: Context, topic: str, ev: Event) -> None:
        reply = await ctx.request("svc", ev.payload, timeout=5)
        got.add((ev.payload.decode(), reply.payload))

    async def responder(ctx: Context, topic: str, ev: Event) -> None:
        # Hold the requests until all have come, then answer in reverse order.
        held: list[Event] = ctx.state.setdefault("held", [])
        held.append(ev)
        if len(held) == n:
            for request in reversed(held):
                await ctx.reply(request, b"re:" + request.payload)

    async with hosted() as h:
        await h.rt.start(spec("b", responder, topics=["svc"]))
        await h.rt.start(spec("a", requester, topics=["go"], max_concurrency=n))
        for i in range(n):
            await h.bus.publish("go", event(f"q{i}"))
        await got.wait_for(n)
    assert sorted(got.items) == [(f"q{i}", f"re:q{i}".encode()) for i in range(n)]


async def test_a_reply_to_an_event_without_reply_to_goes_to_the_senders_mailbox() -> None:
    replies = Seen[tuple[str, bytes]]()

    async def asker(ctx: Context, topic: str, ev: Event) -> None:
        if topic == "go":
            await ctx.emit("svc", b"question")
        else:
            replies.add((topic, ev.payload))

    async def answerer(ctx: Context, topic: str, ev: Event) -> None:
        await ctx.reply(ev, b"answer")

    async with hosted() as h:
        await h.rt.start(spec("b", answerer, topics=["svc"]))
        await h.rt.start(spec("a", asker, topics=["go"]))
        await h.bus.publish("go", event())
        await replies.wait_for(1)
    assert replies.items == [(mailbox_topic("a"), b"answer")]


async def test_an_agent_answers_a_request_from_outside_any_agent() -> None:
    async def responder(ctx: Context, topic: str, ev: Event) -> None:
        await ctx.reply(ev, b"pong:" + ev.payload)

    async with hosted() as h:
        await h.rt.start(spec("b", responder, topics=["svc.ping"]))
        reply = await collab.request(h.bus, "svc.ping", b"1", timeout=5)
    assert reply.payload == b"pong:1"
    assert reply.envelope.sender == "b"


async def test_a_request_nobody_answers_times_out() -> None:
    errors = Seen[BaseException]()
    ignored = Seen[str]()

    async def requester(ctx: Context, topic: str, ev: Event) -> None:
        try:
            await ctx.request("svc.silent", b"?", timeout=0.05)
        except RequestTimeout as exc:
            errors.add(exc)

    async def silent(ctx: Context, topic: str, ev: Event) -> None:
        ignored.add(topic)

    async with hosted() as h:
        await h.rt.start(spec("b", silent, topics=["svc.silent"]))
        await h.rt.start(spec("a", requester, topics=["go"]))
        started = anyio.current_time()
        await h.bus.publish("go", event())
        (exc,) = await errors.wait_for(1)
        assert anyio.current_time() - started >= 0.05
        assert h.rt.status("a") is AgentStatus.RUNNING
    assert ignored.items == ["svc.silent"]
    assert isinstance(exc, DeadlineExceeded)
    assert isinstance(exc, TimeoutError)
    assert isinstance(exc, RequestTimeout)
    assert exc.topic == "svc.silent"


async def test_request_timeout_reports_the_timeout_that_was_given() -> None:
    errors = Seen[RequestTimeout]()

    async def requester(ctx: Context, topic: str, ev: Event) -> None:
        try:
            await ctx.request("svc.silent", b"?", timeout=0.05)
        except RequestTimeout as exc:
            errors.add(exc)

    async with hosted() as h:
        await h.rt.start(spec("b", topics=["svc.silent"]))
        await h.rt.start(spec("a", requester, topics=["go"]))
        await h.bus.publish("go", event())
        (exc,) = await errors.wait_for(1)
    assert exc.timeout == 0.05
    assert "within 0.05s" in str(exc)


async def test_a_request_nobody_listens_to_raises_no_responders_at_once() -> None:
    errors = Seen[BaseException]()

    async def requester(ctx: Context, topic: str, ev: Event) -> None:
        try:
            await ctx.request("nobody.home", timeout=30)
        except NoResponders as exc:
            errors.add(exc)

    async with hosted() as h:
        await h.rt.start(spec("a", requester, topics=["go"]))
        await h.bus.publish("go", event())
        (exc,) = await errors.wait_for(1, timeout=2)
    assert isinstance(exc, NoResponders)
    assert "nobody.home" in str(exc)


async def test_a_failing_request_is_a_handler_error() -> None:
    async def requester(ctx: Context, topic: str, ev: Event) -> None:
        await ctx.request("nobody.home", timeout=1)

    async with hosted() as h:
        await h.rt.start(spec("a", requester, topics=["go"], policy=RESUME))
        await h.bus.publish("go", event())
        letter = await h.dead.wait("a", "handler_error")
    assert letter.metadata["dead_letter.error"].startswith("NoResponders")


# ------------------------------------------------------------------------------------ tool


async def test_tool_calls_a_capability_of_another_agent() -> None:
    results = Seen[Any]()
    in_flight = Seen[int]()

    async def caller(ctx: Context, topic: str, ev: Event) -> None:
        results.add(await ctx.tool("text.echo", {"text": ev.payload.decode()}))

    async with hosted() as h:

        async def probe(text: str) -> str:
            in_flight.add(info_of(h.rt, "provider").in_flight)
            return text[::-1]

        reverse = FunctionTool(
            probe,
            name="text.echo",
            description="reverse",
            parameters_schema={"type": "object", "properties": {"text": {"type": "string"}}},
        )
        await h.rt.start(spec("provider", tools=[reverse]))
        await h.rt.start(spec("caller", caller, topics=["go"]))
        await h.bus.publish("go", event("abc"))
        await results.wait_for(1)
        assert info_of(h.rt, "provider").in_flight == 0
    assert results.items == ["cba"]
    assert in_flight.items == [1]  # counted while it ran


async def test_tool_picks_the_least_busy_of_two_providers() -> None:
    entered = anyio.Event()
    release = anyio.Event()
    results = Seen[Any]()

    async def blocking(ctx: Context, topic: str, ev: Event) -> None:
        entered.set()
        await release.wait()

    async def caller(ctx: Context, topic: str, ev: Event) -> None:
        results.add(await ctx.tool("echo", {"text": "x"}))

    async with hosted() as h:
        await h.rt.start(spec("p1", blocking, topics=["work"], tools=[echo_tool("echo", "p1")]))
        await h.rt.start(spec("p2", tools=[echo_tool("echo", "p2")]))
        await h.rt.start(spec("caller", caller, topics=["go"]))
        # Idle both: the tie goes to the lower id.
        await h.bus.publish("go", event())
        await results.wait_for(1)
        # p1 busy with a queue behind it: p2 is chosen.
        await h.bus.publish("work", event())
        with anyio.fail_after(5):
            await entered.wait()
        await h.bus.publish("work", event())
        await h.bus.publish("go", event())
        await results.wait_for(2)
        release.set()
    assert results.items == ["p1:x", "p2:x"]


async def test_tool_falls_back_to_the_runtime_registry_and_refuses_unknown_names() -> None:
    results = Seen[Any]()
    errors = Seen[BaseException]()

    async def caller(ctx: Context, topic: str, ev: Event) -> None:
        name, args = ev.metadata["tool"], ev.metadata.get("text")
        try:
            results.add(await ctx.tool(name, None if args is None else {"text": args}))
        except (ToolNotFound, InvalidToolArguments) as exc:
            errors.add(exc)

    registry = ToolRegistry()
    registry.register(echo_tool("rt.echo", "runtime"))
    async with hosted(tools=registry) as h:
        await h.rt.start(spec("caller", caller, topics=["go"]))
        await h.bus.publish("go", event(tool="rt.echo", text="hi"))
        await h.bus.publish("go", event(tool="no.such.tool"))
        await h.bus.publish("go", event(tool="rt.echo"))  # missing argument
        await errors.wait_for(2)
    assert results.items == ["runtime:hi"]
    assert isinstance(errors.items[0], ToolNotFound)
    assert isinstance(errors.items[1], InvalidToolArguments)


async def test_tool_refuses_bad_arguments_at_once_and_the_caller_goes_on() -> None:
    # ctx.tool meets the registry's bounds like a remote caller: depth, bytes, and a pattern's
    # worst case matched in linear time (Python's re backtracks through 2**29 ways on it).
    deep: dict[str, Any] = {}
    for _ in range(MAX_ARGUMENT_DEPTH + 10):
        deep = {"a": deep}
    bad: list[dict[str, Any]] = [
        {"text": "a" * 29 + "!"},
        {"text": "a" * (MAX_ARGUMENT_BYTES + 1)},
        {"text": "aa", "deep": deep},
    ]
    refused = Seen[tuple[str, float]]()
    results = Seen[Any]()

    async def caller(ctx: Context, topic: str, ev: Event) -> None:
        for name in ("cap.match", "rt.match"):
            for arguments in bad:
                started = time.perf_counter()
                try:
                    await ctx.tool(name, arguments)
                except InvalidToolArguments as exc:
                    refused.add((exc.reason, time.perf_counter() - started))
            results.add(await ctx.tool(name, {"text": "aaa"}))

    def matcher(name: str) -> Tool:
        async def fn(text: str, **rest: Any) -> str:
            return text

        schema = {"type": "object", "properties": {"text": {"pattern": "^(a+)+$"}}}
        return FunctionTool(fn, name=name, description="match", parameters_schema=schema)

    registry = ToolRegistry()
    registry.register(matcher("rt.match"))
    async with hosted(tools=registry) as h:
        await h.rt.start(spec("provider", tools=[matcher("cap.match")]))
        await h.rt.start(spec("caller", caller, topics=["go"]))
        await h.bus.publish("go", event())
        await results.wait_for(2)
    assert results.items == ["aaa", "aaa"]
    reasons = [reason for reason, _ in refused.items]
    assert len(reasons) == 6
    for i, expected in enumerate(["does not match", "allowed", "nested more than"] * 2):
        assert expected in reasons[i], reasons[i]
    assert max(elapsed for _, elapsed in refused.items) < 1.0


async def test_a_stopped_providers_capability_is_gone() -> None:
    errors = Seen[BaseException]()

    async def caller(ctx: Context, topic: str, ev: Event) -> None:
        try:
            await ctx.tool("echo", {"text": "x"})
        except ToolNotFound as exc:
            errors.add(exc)

    async with hosted() as h:
        await h.rt.start(spec("p", tools=[echo_tool("echo", "p")]))
        await h.rt.start(spec("caller", caller, topics=["go"]))
        await h.rt.stop("p")
        await h.bus.publish("go", event())
        await errors.wait_for(1)


async def test_a_call_waits_for_a_provider_its_supervisor_restarts() -> None:
    # Before: ToolNotFound at once while the provider was between two instances.
    results = Seen[Any]()

    async def crash(ctx: Context, topic: str, ev: Event) -> None:
        raise RuntimeError("crash")

    async def caller(ctx: Context, topic: str, ev: Event) -> None:
        results.add(await ctx.tool("echo", {"text": "x"}, timeout=10))

    restart = SupervisionPolicy(backoff_initial_s=0.5, backoff_max_s=0.5, jitter=0)
    async with hosted() as h:
        provider = spec("p", crash, topics=["crash"], tools=[echo_tool("echo", "p")])
        await h.rt.start(msgspec.structs.replace(provider, policy=restart))
        await h.rt.start(spec("caller", caller, topics=["go"]))
        await h.bus.publish("crash", event())
        await h.life.wait("p", AgentStatus.STOPPING)
        assert h.rt.directory.least_busy("echo") is None  # between two instances
        await h.bus.publish("go", event())
        await results.wait_for(1)
        assert info_of(h.rt, "p").restarts >= 1
    assert results.items == ["p:x"]


async def test_a_call_waiting_for_a_provider_learns_when_it_fails_for_good() -> None:
    errors = Seen[tuple[BaseException, float]]()

    async def crash(ctx: Context, topic: str, ev: Event) -> None:
        raise RuntimeError("crash")

    async def caller(ctx: Context, topic: str, ev: Event) -> None:
        start = time.monotonic()
        try:
            await ctx.tool("echo", {"text": "x"}, timeout=30)
        except ToolNotFound as exc:
            errors.add((exc, time.monotonic() - start))

    async def failing_start(ctx: Context) -> None:
        if ctx.state.setdefault("started", False):
            raise RuntimeError("no second start")
        ctx.state["started"] = True

    # One restart allowed, whose on_start fails: the provider ends FAILED while the call waits.
    restart = SupervisionPolicy(max_restarts=0, backoff_initial_s=0.5, jitter=0)
    async with hosted() as h:
        provider = spec("p", crash, topics=["crash"], tools=[echo_tool("echo", "p")])
        await h.rt.start(msgspec.structs.replace(provider, policy=restart))
        await h.rt.start(spec("caller", caller, topics=["go"]))
        await h.bus.publish("crash", event())
        await h.life.wait("p", AgentStatus.FAILED)
        await h.bus.publish("go", event())
        await errors.wait_for(1)
    assert errors.items[0][1] < 5  # not the call's 30 s


# ------------------------------------------------------------------- subscribe / unsubscribe


async def test_subscribe_and_unsubscribe_at_run_time() -> None:
    seen = Seen[tuple[str, str]]()
    errors = Seen[BaseException]()

    async def on_event(ctx: Context, topic: str, ev: Event) -> None:
        command = ev.payload.decode()
        if topic != "ctl":
            seen.add((topic, command))
        elif command == "sub":
            await ctx.subscribe("extra.>")
            await ctx.subscribe("extra.>")  # idempotent
            seen.add((topic, command))
        elif command == "unsub":
            await ctx.unsubscribe("extra.>")
            await ctx.unsubscribe("never.subscribed")  # nothing to do
            seen.add((topic, command))
        elif command == "unsub-mailbox":
            try:
                await ctx.unsubscribe(ctx.mailbox)
            except InvalidArgument as exc:
                errors.add(exc)

    async with hosted() as h:
        await h.rt.start(spec("a", on_event, topics=["ctl"]))
        assert await h.bus.publish("extra.one", event("before")) == 0
        await h.bus.publish("ctl", event("sub"))
        await seen.wait_for(1)
        assert [i.id for i in h.rt.directory.by_topic("extra.one.two")] == ["a"]
        assert "extra.>" in info_of(h.rt, "a").patterns
        assert await h.bus.publish("extra.one", event("during")) == 1
        await h.bus.publish("ctl", event("unsub"))
        await seen.wait_for(3)
        assert await h.bus.publish("extra.one", event("after")) == 0
        assert h.rt.directory.by_topic("extra.one") == []
        assert "extra.>" not in info_of(h.rt, "a").patterns
        await h.bus.publish("ctl", event("unsub-mailbox"))
        await errors.wait_for(1)
        # The mailbox topic still works.
        assert await h.bus.publish(mailbox_topic("a"), event("mail")) == 1
        await seen.wait_for(4)
    assert seen.items == [
        ("ctl", "sub"),
        ("extra.one", "during"),
        ("ctl", "unsub"),
        (mailbox_topic("a"), "mail"),
    ]
    assert "mailbox" in str(errors.items[0])


async def test_a_bad_pattern_is_refused_and_changes_nothing() -> None:
    errors = Seen[BaseException]()

    async def on_event(ctx: Context, topic: str, ev: Event) -> None:
        for pattern in ("bad..pattern", "a.>.b", ""):
            try:
                await ctx.subscribe(pattern)
            except InvalidTopic as exc:
                errors.add(exc)

    async with hosted() as h:
        await h.rt.start(spec("a", on_event, topics=["ctl"]))
        before = info_of(h.rt, "a").patterns
        await h.bus.publish("ctl", event())
        await errors.wait_for(3)
        assert info_of(h.rt, "a").patterns == before
        assert h.rt.status("a") is AgentStatus.RUNNING


async def test_a_realtime_subscription_drops_what_the_full_mailbox_cannot_take() -> None:
    entered = anyio.Event()
    release = anyio.Event()
    seen = Seen[str]()

    async def on_event(ctx: Context, topic: str, ev: Event) -> None:
        if topic == "ctl":
            await ctx.subscribe("ticks", qos=QoS.REALTIME)
            seen.add("subscribed")
            return
        if topic == "hold":
            entered.set()
            await release.wait()
        seen.add(ev.payload.decode())

    async with hosted() as h:
        await h.rt.start(spec("a", on_event, topics=["ctl", "hold"], mailbox_size=2))
        await h.bus.publish("ctl", event())
        await seen.wait_for(1)
        await h.bus.publish("hold", event("held"))
        with anyio.fail_after(5):
            await entered.wait()
            for i in range(5):  # never waits: the mailbox keeps 2, drops 3
                await h.bus.publish("ticks", event(f"t{i}"))
        release.set()
        await seen.wait_for(4)
        await anyio.wait_all_tasks_blocked()
    assert seen.items == ["subscribed", "held", "t0", "t1"]


# ------------------------------------------------------------------------------------ spawn


async def test_spawn_starts_a_child_that_stops_with_its_parent() -> None:
    stops = Seen[str]()

    async def child_stop(ctx: Context) -> None:
        stops.add(ctx.agent_id)

    async def parent_start(ctx: Context) -> None:
        child_id = await ctx.spawn(spec("child", topics=["child.in"], on_stop=child_stop))
        ctx.state["child"] = child_id

    async def parent_stop(ctx: Context) -> None:
        stops.add(ctx.agent_id)

    async with hosted() as h:
        await h.rt.start(spec("parent", on_start=parent_start, on_stop=parent_stop))
        # The child runs before the parent's on_start returns.
        assert h.rt.status("child") is AgentStatus.RUNNING
        assert h.life.history("child") == ["created", "starting", "running"]
        await h.rt.stop("parent")
        assert h.rt.status("child") is AgentStatus.STOPPED
        # Children stop first.
        assert stops.items == ["child", "parent"]
        stopped_order = [d.topic for d in h.life.drain() if d.event.type == "agent.stopped"]
        assert stopped_order == ["loom.lifecycle.child", "loom.lifecycle.parent"]


async def test_a_child_is_supervised_by_its_own_policy() -> None:
    seen = Seen[str]()

    async def child_event(ctx: Context, topic: str, ev: Event) -> None:
        if ev.payload == b"crash" and "crashed" not in seen.items:
            seen.add("crashed")
            raise RuntimeError("child crash")
        seen.add(ev.payload.decode())

    async def parent_event(ctx: Context, topic: str, ev: Event) -> None:
        await ctx.spawn(spec("child", child_event, topics=["child.in"]))
        seen.add("spawned")

    async with hosted() as h:
        await h.rt.start(spec("parent", parent_event, topics=["go"]))
        await h.bus.publish("go", event())
        await seen.wait_for(1)
        await h.bus.publish("child.in", event("crash"))
        await seen.wait_for(3)
        assert info_of(h.rt, "child").restarts == 1
        assert info_of(h.rt, "parent").restarts == 0
        assert h.rt.status("parent") is AgentStatus.RUNNING
        # Deleting the parent stops the child too.
        await h.rt.delete("parent")
        assert h.rt.status("child") is AgentStatus.STOPPED
    assert seen.items == ["spawned", "crashed", "crash"]


@pytest.mark.parametrize("strategy", [Strategy.STOP, Strategy.RESTART])
async def test_a_parent_that_ends_by_itself_stops_its_children(strategy: Strategy) -> None:
    stops = Seen[str]()

    async def child_stop(ctx: Context) -> None:
        stops.add(ctx.agent_id)

    async def parent_start(ctx: Context) -> None:
        await ctx.spawn(spec("child", on_stop=child_stop))

    async def crash(ctx: Context, topic: str, ev: Event) -> None:
        raise RuntimeError("parent crash")

    policy = SupervisionPolicy(strategy=strategy, max_restarts=0)
    async with hosted() as h:
        await h.rt.start(spec("parent", crash, topics=["in"], on_start=parent_start, policy=policy))
        await h.bus.publish("in", event())
        ended = AgentStatus.STOPPED if strategy is Strategy.STOP else AgentStatus.FAILED
        await h.life.wait("parent", ended)
        assert h.rt.status("child") is AgentStatus.STOPPED
        assert stops.items == ["child"]


async def test_a_restarted_parent_can_spawn_its_children_again() -> None:
    async def parent_start(ctx: Context) -> None:
        await ctx.spawn(spec("child"))

    crashed = Seen[str]()

    async def crash_once(ctx: Context, topic: str, ev: Event) -> None:
        if not crashed.items:
            crashed.add("crash")
            raise RuntimeError("parent crash")

    async with hosted() as h:
        await h.rt.start(spec("parent", crash_once, topics=["in"], on_start=parent_start))
        await h.bus.publish("in", event())
        await h.life.wait("parent", AgentStatus.RUNNING)  # the first start
        # Then: running again after the restart, or failed.
        outcome = await h.life.next(
            lambda d: (
                d.topic == "loom.lifecycle.parent"
                and d.event.type in ("agent.running", "agent.failed")
            )
        )
        assert outcome.event.type == "agent.running"
        assert h.rt.status("parent") is AgentStatus.RUNNING
        assert h.rt.status("child") is AgentStatus.RUNNING


# ------------------------------------------------------------------------------------ schedule


async def test_schedule_once_after_a_delay_and_at_a_time() -> None:
    seen = Seen[tuple[str, str, bytes, str]]()
    timers: list[Timer] = []

    async def on_start(ctx: Context) -> None:
        timers.append(ctx.schedule("tick.delay", b"d", delay=0.01, metadata={"k": "v"}))
        timers.append(ctx.schedule("tick.at", "a", at=time.time() + 0.02))

    async def on_event(ctx: Context, topic: str, ev: Event) -> None:
        assert ctx.event is ev
        seen.add((topic, ev.type, ev.payload, ev.source))

    async with hosted() as h:
        started = anyio.current_time()
        await h.rt.start(spec("a", on_event, on_start=on_start))
        await seen.wait_for(2)
        assert anyio.current_time() - started >= 0.01
        await anyio.wait_all_tasks_blocked()
    assert sorted(seen.items) == [
        (mailbox_topic("a"), "tick.at", b"a", "a"),
        (mailbox_topic("a"), "tick.delay", b"d", "a"),
    ]
    assert [t.fired for t in timers] == [1, 1]


async def test_schedule_every_repeats_until_cancelled() -> None:
    ticks = Seen[str]()

    async def on_start(ctx: Context) -> None:
        ctx.state["timer"] = ctx.schedule("tick", every=0.01)

    async def on_event(ctx: Context, topic: str, ev: Event) -> None:
        ticks.add(ev.id)
        timer: Timer = ctx.state["timer"]
        if len(ticks) == 3:
            timer.cancel()
            timer.cancel()  # idempotent
            assert timer.cancelled

    async with hosted() as h, Watch(h.bus.subscribe(mailbox_topic("a"))) as mailbox:
        await h.rt.start(spec("a", on_event, on_start=on_start))
        await ticks.wait_for(3)
        await anyio.sleep(0.05)  # five more periods: nothing more may come
        assert len(mailbox.drain()) == 3
    assert len(set(ticks.items)) == 3  # every firing is an event of its own


async def test_timers_end_with_the_agent() -> None:
    ticks = Seen[str]()

    async def on_start(ctx: Context) -> None:
        ctx.schedule("tick", every=0.005)
        ctx.schedule("later", delay=0.05)

    async def on_event(ctx: Context, topic: str, ev: Event) -> None:
        ticks.add(ev.type)

    async with hosted() as h, Watch(h.bus.subscribe(mailbox_topic("a"))) as mailbox:
        await h.rt.start(spec("a", on_event, on_start=on_start))
        await ticks.wait_for(2)
        await h.rt.stop("a")
        before = len(mailbox.drain())
        await anyio.sleep(0.08)  # past the delayed timer and many periods
        assert len(mailbox.drain()) == before
    assert "later" not in ticks.items


async def test_timers_end_with_the_instance_on_restart() -> None:
    instances = Seen[int]()
    ticks = Seen[int]()

    async def on_start(ctx: Context) -> None:
        number = len(instances) + 1
        ctx.state["n"] = number
        ctx.schedule("tick", str(number), every=0.005)
        instances.add(number)

    async def on_event(ctx: Context, topic: str, ev: Event) -> None:
        ticks.add(int(ev.payload))
        if ctx.state["n"] == 1:
            raise RuntimeError("restart me")

    async with hosted() as h, Watch(h.bus.subscribe(mailbox_topic("a"))) as mailbox:
        await h.rt.start(spec("a", on_event, on_start=on_start))
        await instances.wait_for(2)
        from_first = sum(d.event.payload == b"1" for d in mailbox.drain())
        await anyio.sleep(0.05)
        assert sum(d.event.payload == b"1" for d in mailbox.drain()) == from_first
        assert sum(d.event.payload == b"2" for d in mailbox.drain()) >= 1


async def test_schedule_refuses_bad_arguments() -> None:
    errors = Seen[str]()

    async def on_start(ctx: Context) -> None:
        bad: list[tuple[float | None, float | None, float | None]] = [
            (None, None, None),  # (delay, every, at)
            (1, None, time.time()),
            (None, 0, None),
            (None, -1, None),
            (None, math.inf, None),
            (-0.5, None, None),
            (math.nan, None, None),
        ]
        for delay, every, at in bad:
            try:
                ctx.schedule("t", delay=delay, every=every, at=at)
            except InvalidArgument as exc:
                errors.add(str(exc))

    async with hosted() as h:
        await h.rt.start(spec("a", on_start=on_start))
    assert len(errors) == 7


# ------------------------------------------------------------------------------ state and log


async def test_state_lives_as_long_as_the_instance() -> None:
    counts = Seen[int]()

    async def on_event(ctx: Context, topic: str, ev: Event) -> None:
        ctx.state["n"] = ctx.state.get("n", 0) + 1
        counts.add(ctx.state["n"])

    async with hosted() as h:
        await h.rt.start(spec("a", on_event, topics=["in"]))
        for _ in range(3):
            await h.bus.publish("in", event())
        await counts.wait_for(3)
    assert counts.items == [1, 2, 3]


async def test_log_lines_carry_the_agent_id(caplog: pytest.LogCaptureFixture) -> None:
    done = Seen[None]()

    async def on_event(ctx: Context, topic: str, ev: Event) -> None:
        ctx.log.warning("handling %s", topic)
        done.add(None)

    async def on_start(ctx: Context) -> None:
        ctx.log.info("up")

    caplog.set_level(logging.INFO, logger="loom.agent")
    async with hosted() as h:
        await h.rt.start(spec("agent-7", on_event, topics=["in"], on_start=on_start))
        await h.bus.publish("in", event())
        await done.wait_for(1)
    records = [r for r in caplog.records if r.name == "loom.agent"]
    assert [r.getMessage() for r in records] == ["[agent-7] up", "[agent-7] handling in"]
    assert [getattr(r, "agent_id", None) for r in records] == ["agent-7", "agent-7"]
    assert [r.levelno for r in records] == [logging.INFO, logging.WARNING]


# ------------------------------------------------------------------------------- hosting


class _Forwarding:
    """A host over the runtime's own that counts the tool calls it takes over and forwards
    everything else to it (as the SDK's ``RemoteHost`` does with what is not remote)."""

    def __init__(self, local: ContextHost) -> None:
        self.local = local
        self.tool_calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.local, name)

    async def call_tool(
        self,
        name: str,
        arguments: Mapping[str, Any] | str,
        *,
        timeout: float | None,
        idempotency_key: str | None = None,
    ) -> Any:
        self.tool_calls += 1
        return f"elsewhere:{name}"


class _Hosting:
    def __init__(self) -> None:
        self.hosts: list[_Forwarding] = []
        self.handled: list[str] = []

    def host(self, local: ContextHost) -> ContextHost:
        host = _Forwarding(local)
        self.hosts.append(host)
        return cast(ContextHost, host)

    def handler(self, on_event: Handler) -> Handler:
        async def handle(ctx: Context, topic: str, ev: Event) -> None:
            self.handled.append(topic)
            await on_event(ctx, topic, ev)

        return handle


@pytest.mark.parametrize("max_concurrency", [1, 3])
async def test_a_hosting_makes_the_host_of_each_context_and_wraps_the_handler(
    max_concurrency: int,
) -> None:
    hosting = _Hosting()
    contexts = Seen[Context]()
    answers = Seen[Any]()

    async def on_start(ctx: Context) -> None:
        contexts.add(ctx)

    async def on_event(ctx: Context, topic: str, ev: Event) -> None:
        contexts.add(ctx)
        answers.add(await ctx.tool("anything"))
        await ctx.emit("out", ev.payload)  # the runtime's own publish, through the host

    async with hosted() as h:
        out = h.bus.subscribe("out")
        a = spec("a", on_event, topics=["in"], on_start=on_start, max_concurrency=max_concurrency)
        await h.rt.start(a, hosting=hosting)
        await h.bus.publish("in", event(b"x"))
        assert await answers.wait_for(1) == ["elsewhere:anything"]
        with anyio.fail_after(5):
            delivery = await out.__anext__()
        assert delivery.event.payload == b"x"
        assert delivery.event.envelope.sender == "a"
        assert h.rt.status("a") is AgentStatus.RUNNING
    # One host per context (one for on_start/on_stop, one per worker beyond the first), each
    # made over the agent's own host, and every event went through the wrapped handler.
    assert len(hosting.hosts) == (1 if max_concurrency == 1 else 1 + max_concurrency)
    assert len({id(h.local) for h in hosting.hosts}) == 1
    assert sum(h.tool_calls for h in hosting.hosts) == 1
    assert hosting.handled == ["in"]
