"""BridgeClient against a real server: events both ways, subscriptions, request/reply, tool calls
(deadlines, cancellation, pushed calls), heartbeats, connect failures, trace context."""

from __future__ import annotations

import socket
from typing import Any

import anyio
import grpc
import grpc.aio
import msgspec
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from loom import Agent, Context, capability
from loom.bridge import Limits
from loom.bridge._client import AgentRegistration, BridgeClient, ClientOptions
from loom.bridge._errors import (
    ClientClosed,
    ConnectFailed,
    PublishRejected,
    SubscribeRefused,
)
from loom.bridge._generated import bridge_pb2, bridge_pb2_grpc
from loom.bridge._wire_types import (
    ToolCallOutcome,
    ToolCallRequest,
    ToolDescriptor,
)
from loom.runtime import (
    Envelope,
    Event,
    EventBus,
    InvalidArgument,
    InvalidTopic,
    QoS,
    WouldBlock,
)
from loom.runtime.lowlevel import mailbox_topic
from loom.runtime.tools import (
    InvalidToolArguments,
    ToolFailed,
    ToolNotFound,
    ToolTimeout,
)

from ._client_support import FAST, client, hosting, next_of

pytestmark = pytest.mark.anyio


# ------------------------------------------------------------------ events


async def test_events_flow_both_ways_with_the_features_granted() -> None:
    async with hosting() as host:
        bus = host.bus
        async with client(host, "e1", topics=("input.*",)) as agent, bus.subscribe("out.>") as out:
            stats = agent.statistics()
            assert set(stats.features) == {
                "STREAM_FEATURE_BATCH",
                "STREAM_FEATURE_DELIVERY_CREDIT",
                "STREAM_FEATURE_PACKED_EVENTS",
                "STREAM_FEATURE_PUBLISH_ACK",
                "STREAM_FEATURE_SUPERVISION",
                "STREAM_FEATURE_TOOL_CANCEL",
                "STREAM_FEATURE_TOOL_CALLS",
                "STREAM_FEATURE_TOOL_OUTPUT",
                "STREAM_FEATURE_UNROUTED",
            }
            for i in range(300):  # more than one batch either way
                await agent.publish("out.n", Event(type="n", payload=str(i).encode()))
            await agent.publish("out.n", Event(type="last"), wait_accepted=True)
            with anyio.fail_after(5):
                got = [(await out.receive()).event for _ in range(301)]
            assert [e.payload for e in got[:300]] == [str(i).encode() for i in range(300)]
            # The server stamps nothing over our sender: it is the agent's own id.
            assert {e.envelope.sender for e in got} == {"e1"}

            for i in range(300):
                await bus.publish("input.x", Event(payload=str(i).encode()))
            with anyio.fail_after(5):
                received = [await agent.receive() for _ in range(300)]
            assert [d.event.payload for d in received] == [str(i).encode() for i in range(300)]
            assert {d.topic for d in received} == {"input.x"}
            agent.publish_nowait("out.n", Event(type="nowait"))
            assert (await next_of(out, "nowait")).type == "nowait"
        with pytest.raises(ClientClosed):
            agent.publish_nowait("out.n", Event())
        with pytest.raises(ClientClosed):
            await agent.publish("out.n", Event())


async def test_a_fast_publisher_keeps_to_its_publish_credit() -> None:
    # A window of 4 and a burst of 500: without credit the server would reject the excess
    # (RESOURCE_EXHAUSTED); with it the publisher waits for acks and nothing is rejected.
    options = ClientOptions(
        connect_timeout=5,
        heartbeat_interval=1,
        heartbeat_timeout=5,
        publish_window=4,
        max_batch_events=3,
    )
    async with hosting() as host, host.bus.subscribe("burst") as out:
        async with client(host, "p1", options=options) as agent:
            for i in range(500):
                await agent.publish("burst", Event(payload=str(i).encode()))
            await agent.publish("burst", Event(type="end"), wait_accepted=True)
            assert agent.statistics().rejected == 0
            assert agent.statistics().server_errors == 0
        with anyio.fail_after(5):
            got = [(await out.receive()).event.payload for _ in range(500)]
        assert got == [str(i).encode() for i in range(500)]


class _Refusing:
    """A sink that refuses one topic, as a bus refuses a topic it cannot route."""

    def __init__(self, inner: EventBus) -> None:
        self.inner = inner

    async def deliver_inbound(self, topic: str, event: Event) -> None:
        if topic == "in.refused":
            raise InvalidTopic(topic, "refused here")
        await self.inner.deliver_inbound(topic, event)


async def test_deliveries_go_straight_into_an_inbound_sink_in_order() -> None:
    async with hosting() as host, EventBus() as local, local.subscribe("in.*") as mailbox:
        agent = BridgeClient(
            host.address,
            AgentRegistration(agent_id="sink1", topics=("in.*",)),
            options=FAST,
            inbound=_Refusing(local),
        )
        async with agent:
            with pytest.raises(InvalidArgument, match="inbound sink"):
                await agent.receive()
            with pytest.raises(InvalidArgument, match="inbound sink"):
                await anext(aiter(agent))
            for i in range(20):
                await host.bus.publish("in.ok", Event(payload=str(i).encode()))
            await host.bus.publish("in.refused", Event(type="dropped"))
            await host.bus.publish("in.ok", Event(type="after"))
            with anyio.fail_after(5):
                got = [(await mailbox.receive()).event for _ in range(21)]
            assert [e.payload for e in got[:20]] == [str(i).encode() for i in range(20)]
            assert got[20].type == "after"  # the refused one is dropped, the stream goes on
            stats = agent.statistics()
            assert (stats.delivered, stats.malformed) == (21, 1)


async def test_a_waiting_publisher_asks_for_its_ack(monkeypatch: pytest.MonkeyPatch) -> None:
    # The server would otherwise settle this steady stream once per linger: never, here.
    monkeypatch.setattr("loom.bridge._server_session._ACK_LINGER", 3600.0)
    options = ClientOptions(publish_window=1000, max_batch_events=1)
    async with hosting() as host, host.bus.subscribe("steady") as out:
        async with client(host, "w1", options=options) as agent:
            for i in range(3):
                await agent.publish("steady", Event(payload=str(i).encode()))
            with anyio.fail_after(5):
                for _ in range(3):
                    await agent.publish("steady", Event(type="w"), wait_accepted=True)
            assert agent.statistics().rejected == 0
        assert len([(await out.receive()) for _ in range(6)]) == 6


async def test_a_publish_the_servers_bus_refuses_is_reported_to_a_waiting_publisher() -> None:
    async with hosting() as host, client(host, "e2") as agent:
        with pytest.raises(PublishRejected) as info:
            await agent.publish("bad..topic", Event(), wait_accepted=True)
        assert info.value.code == "INVALID_ARGUMENT"
        assert info.value.topic == "bad..topic"
        assert agent.statistics().rejected == 1
        # The stream carries on.
        async with host.bus.subscribe("ok") as ok:
            await agent.publish("ok", Event(type="fine"), wait_accepted=True)
            assert (await next_of(ok, "fine")).type == "fine"


async def test_dynamic_subscriptions_with_refusals() -> None:
    async with hosting(limits=Limits(max_topics_per_agent=2)) as host:
        bus = host.bus
        async with client(host, "s1", topics=("a.*",)) as agent:
            assert await agent.subscribe("b.*", qos=QoS.REALTIME)
            with pytest.raises(InvalidTopic):
                await agent.subscribe("bad..pattern")
            with pytest.raises(SubscribeRefused) as info:
                await agent.subscribe("c.*")
            assert info.value.code == "RESOURCE_EXHAUSTED"
            assert agent.subscriptions() == ("a.*", "b.*")
            with pytest.raises(InvalidArgument):
                await agent.unsubscribe(mailbox_topic("s1"))

            await bus.publish("b.1", Event(type="b"))
            assert (await agent.receive()).topic == "b.1"
            # Unsubscribing a registered topic and a dynamic one: nothing more arrives.
            assert await agent.unsubscribe("a.*")
            assert await agent.unsubscribe("b.*")
            assert not await agent.unsubscribe("b.*")
            assert await bus.publish("a.1", Event()) == 0
            assert await bus.publish("b.1", Event()) == 0
            info2 = host.runtime.directory.get("s1")
            assert info2 is not None
            assert info2.patterns == (mailbox_topic("s1"),)


# ------------------------------------------------------------------ request / reply


async def _echo(ctx: Context, topic: str, event: Event) -> None:
    await ctx.reply(event, event.payload.upper())


async def test_a_reply_across_the_bridge_is_a_delivery_like_any_other() -> None:
    # The client keeps no request table: a reply reaches its buffer by topic. (A remote
    # agent's ctx.request waits in its bus's reply router: tests/sdk/test_remote_request.py.)
    async with hosting() as host:
        await host.runtime.start(Agent("echo", topics=["svc.echo"], on_event=_echo))
        async with client(host, "q1") as agent:
            request = Event(
                id="r-1",
                payload=b"hi",
                envelope=Envelope(correlation_id="r-1", sender="q1", reply_to=mailbox_topic("q1")),
            )
            await agent.publish("svc.echo", request)
            with anyio.fail_after(5):
                delivery = await agent.receive()
            assert delivery.topic == mailbox_topic("q1")
            assert delivery.event.payload == b"HI"
            assert delivery.event.envelope.correlation_id == "r-1"
            assert agent.statistics().delivered == 1


# ------------------------------------------------------------------ tool calls


class Service(Agent):
    """An in-process agent whose capabilities a remote caller reaches."""

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.started = anyio.Event()
        self.cancelled = anyio.Event()

    @capability("svc.upper")
    async def upper(self, text: str) -> str:
        return text.upper()

    @capability("svc.hang")
    async def hang(self) -> None:
        self.started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            self.cancelled.set()
            raise


@pytest.mark.parametrize("on_stream", [True, False], ids=["stream", "rpc"])
async def test_tool_calls_map_statuses_to_typed_errors(on_stream: bool) -> None:
    options = msgspec.structs.replace(FAST, stream_calls=on_stream)
    async with hosting() as host:
        await host.runtime.start(Service("svc"))
        async with client(host, "t1", options=options) as agent:
            granted = "STREAM_FEATURE_TOOL_CALLS" in agent.statistics().features
            assert granted is on_stream
            assert await agent.call_tool("svc.upper", '{"text": "abc"}', timeout=5) == '"ABC"'
            with pytest.raises(ToolNotFound):
                await agent.call_tool("svc.nothing", "{}")
            with pytest.raises(InvalidToolArguments):
                await agent.call_tool("svc.upper", '{"text": 5}')
            with pytest.raises(InvalidToolArguments):
                await agent.call_tool("svc.upper", "not json")
            with pytest.raises(InvalidArgument):
                await agent.call_tool("svc.upper", "{}", timeout=0)


@pytest.mark.parametrize("on_stream", [True, False], ids=["stream", "rpc"])
async def test_a_tool_call_times_out_within_its_deadline_and_the_tool_is_cancelled(
    on_stream: bool,
) -> None:
    options = msgspec.structs.replace(FAST, stream_calls=on_stream)
    async with hosting() as host:
        service = Service("svc")
        await host.runtime.start(service)
        async with client(host, "t2", options=options) as agent:
            start = anyio.current_time()
            with pytest.raises(ToolTimeout) as info:
                await agent.call_tool("svc.hang", "{}", timeout=0.3)
            elapsed = anyio.current_time() - start
            assert 0.25 <= elapsed < 1.0
            assert info.value.tool == "svc.hang"
            with anyio.fail_after(2):
                await service.cancelled.wait()


@pytest.mark.parametrize("on_stream", [True, False], ids=["stream", "rpc"])
async def test_cancelling_the_caller_cancels_the_remote_tool(on_stream: bool) -> None:
    options = msgspec.structs.replace(FAST, stream_calls=on_stream)
    async with hosting() as host:
        service = Service("svc")
        await host.runtime.start(service)
        async with client(host, "t3", options=options) as agent, anyio.create_task_group() as tg:

            async def call() -> None:
                await agent.call_tool("svc.hang", "{}", timeout=30)

            tg.start_soon(call)
            with anyio.fail_after(5):
                await service.started.wait()
            tg.cancel_scope.cancel()
        with anyio.fail_after(5):
            await service.cancelled.wait()


def _served(
    name: str, started: anyio.Event, cancelled: anyio.Event
) -> tuple[tuple[ToolDescriptor, ...], Any]:
    async def handler(request: ToolCallRequest) -> ToolCallOutcome:
        if request.arguments == '{"hang":true}':
            started.set()
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                cancelled.set()
                raise
        if request.arguments == '{"boom":true}':
            raise RuntimeError("boom")
        return ToolCallOutcome(id=request.id, output='"served"')

    return (ToolDescriptor(name=name),), handler


async def test_pushed_tool_calls_are_served_cancelled_and_bounded() -> None:
    started, cancelled = anyio.Event(), anyio.Event()
    tools, handler = _served("remote.work", started, cancelled)
    async with hosting() as host:
        options = ClientOptions(
            connect_timeout=5, heartbeat_interval=0.2, heartbeat_timeout=2, max_tool_calls=1
        )
        agent = BridgeClient(
            host.address,
            AgentRegistration(agent_id="w1", tools=tools),
            tool_handler=handler,
            options=options,
        )
        rt = host.runtime
        async with agent:
            assert await rt.call_tool("remote.work", {}) == "served"
            with pytest.raises(ToolFailed) as failed:
                await rt.call_tool("remote.work", {"boom": True})
            assert failed.value.cause_type == "RuntimeError"

            # The server's deadline passes: it withdraws the call and the handler is cancelled.
            with pytest.raises(ToolTimeout):
                await rt.call_tool("remote.work", {"hang": True}, timeout=0.3)
            with anyio.fail_after(5):
                await cancelled.wait()

            # One call at a time: a second one is refused while the first runs.
            started2, cancelled2 = anyio.Event(), anyio.Event()
            _, hanging = _served("remote.work", started2, cancelled2)
            agent.tool_handler = hanging
            async with anyio.create_task_group() as tg:

                async def first() -> None:
                    await rt.call_tool("remote.work", {"hang": True}, timeout=10)

                tg.start_soon(first)
                with anyio.fail_after(5):
                    await started2.wait()
                with pytest.raises(ToolFailed) as refused:
                    await rt.call_tool("remote.work", {}, timeout=5)
                assert refused.value.cause_type == "RESOURCE_EXHAUSTED"
                tg.cancel_scope.cancel()
            stats = agent.statistics()
            assert stats.tools_refused == 1
            with anyio.fail_after(5):
                await cancelled2.wait()
            assert agent.statistics().tools_cancelled >= 1


# ------------------------------------------------------------------ liveness


async def test_heartbeats_keep_the_directory_entry_alive() -> None:
    async with hosting(stale_after_s=0.4, sweep_interval_s=0.05) as host:
        quiet = ClientOptions(connect_timeout=5, heartbeat_interval=30, heartbeat_timeout=60)
        lively = ClientOptions(connect_timeout=5, heartbeat_interval=0.05, heartbeat_timeout=5)
        async with (
            host.bus.subscribe("loom.lifecycle.*") as life,
            client(host, "lively", options=lively) as a,
            client(host, "quiet", options=quiet),
        ):
            stale = await next_of(life, "agent.stale")
            assert b'"quiet"' in stale.payload
            info = host.runtime.directory.get("lively")
            assert info is not None
            assert info.status.value == "running"
            assert a.statistics().pongs > 0
            assert a.statistics().rtt_ms >= 0
            assert await a.heartbeat() >= 0


# ------------------------------------------------------------------ connecting


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_an_unreachable_server_fails_within_the_connect_timeout() -> None:
    options = ClientOptions(connect_timeout=0.5)
    agent = BridgeClient(
        f"127.0.0.1:{_free_port()}", AgentRegistration(agent_id="x"), options=options
    )
    start = anyio.current_time()
    with pytest.raises(ConnectFailed) as info:
        async with agent:
            pass
    assert anyio.current_time() - start < 3
    assert info.value.code == "UNAVAILABLE"


async def test_a_wrong_token_fails_at_once() -> None:
    async with hosting(token="s3cret") as host:
        options = ClientOptions(connect_timeout=10)
        start = anyio.current_time()
        with pytest.raises(ConnectFailed) as info:
            async with client(host, "x", token="wrong", options=options):
                pass
        assert info.value.code == "UNAUTHENTICATED"
        assert anyio.current_time() - start < 5  # fatal: not retried until the timeout
        async with client(host, "x", token="s3cret") as ok:
            assert ok.statistics().registrations == 1


async def test_a_taken_id_is_reported_with_the_servers_code() -> None:
    async with hosting() as host:
        await host.runtime.start(Agent("taken"))
        options = ClientOptions(connect_timeout=0.5)
        with pytest.raises(ConnectFailed) as info:
            async with client(host, "taken", options=options):
                pass
        assert info.value.code == "ALREADY_EXISTS"


def test_bad_client_arguments_are_refused() -> None:
    with pytest.raises(InvalidArgument):
        BridgeClient("", AgentRegistration(agent_id="x"))
    with pytest.raises(InvalidArgument):
        BridgeClient("127.0.0.1:1", AgentRegistration(agent_id="a.b"))
    with pytest.raises(InvalidTopic):
        BridgeClient("127.0.0.1:1", AgentRegistration(agent_id="a", topics=("x..y",)))
    with pytest.raises(InvalidArgument):
        ClientOptions(heartbeat_interval=5, heartbeat_timeout=1)
    with pytest.raises(InvalidArgument):
        ClientOptions(inbound_buffer=0)
    with pytest.raises(InvalidArgument):
        ClientOptions(rpc_timeout=float("inf"))


async def test_publish_nowait_without_a_connection_would_block() -> None:
    agent = BridgeClient("127.0.0.1:1", AgentRegistration(agent_id="x"), options=FAST)
    with pytest.raises(WouldBlock):
        agent.publish_nowait("a", Event())


# ------------------------------------------------------------------ trace context


class _Capture(bridge_pb2_grpc.BridgeServicer):
    """A Bridge that records the metadata of RegisterAgent and refuses it."""

    def __init__(self) -> None:
        self.metadata: dict[str, str] = {}

    async def RegisterAgent(
        self, request: bridge_pb2.AgentRegisterRequest, context: Any
    ) -> bridge_pb2.AgentRegisterResponse:
        self.metadata = {k: str(v) for k, v in context.invocation_metadata() or ()}
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, "recorded")
        raise AssertionError("abort returns no value")

    async def EventStream(self, request_iterator: Any, context: Any) -> Any:  # type: ignore[override]
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not here")

    async def ForwardToolCall(self, request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not here")

    async def Heartbeat(self, request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not here")


async def test_calls_carry_the_token_and_the_current_traceparent() -> None:
    capture = _Capture()
    server = grpc.aio.server()
    bridge_pb2_grpc.add_BridgeServicer_to_server(capture, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        tracer = TracerProvider().get_tracer("test")
        agent = client_at(f"127.0.0.1:{port}", token="tok")
        with tracer.start_as_current_span("caller") as span, pytest.raises(ConnectFailed) as info:
            async with agent:
                pass
        assert info.value.code == "PERMISSION_DENIED"
        ctx = span.get_span_context()
        assert capture.metadata["authorization"] == "Bearer tok"
        assert capture.metadata["traceparent"] == (
            f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"
        )
        assert trace.get_current_span() is trace.INVALID_SPAN
    finally:
        await server.stop(None)


def client_at(address: str, *, token: str) -> BridgeClient:
    return BridgeClient(address, AgentRegistration(agent_id="c"), token=token, options=FAST)
