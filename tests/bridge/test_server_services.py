"""ToolService, EventBus, health and reflection beside Bridge on the same port; remote tools
are callable by local agents too."""

from __future__ import annotations

import json
from typing import Any

import anyio
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from grpc_reflection.v1alpha import (  # type: ignore[import-untyped]
    reflection_pb2,
    reflection_pb2_grpc,
)

from loom.bridge import Limits
from loom.bridge._generated import bridge_pb2, bus_pb2, event_pb2, tools_pb2
from loom.runtime import Context, Event, QoS
from loom.runtime.tools import FunctionTool, InvalidToolArguments, ToolRegistry

from ..runtime._agents_support import Seen, spec
from ._server_harness import OldAgent, channel, descriptor, event, serving

pytestmark = pytest.mark.anyio

SCHEMA = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}


def _double(x: int) -> int:
    return 2 * x


async def test_list_and_call_tools_of_every_provider() -> None:
    registry = ToolRegistry()
    registry.register(
        FunctionTool(_double, name="rt.double", description="Double.", parameters_schema=SCHEMA)
    )
    async with serving(tools=registry) as s, channel(s.target) as ch:
        remote_tool = descriptor("remote.echo", SCHEMA, "Echo.")
        remote_tool.provider = tools_pb2.PROVIDER_GRPC
        remote_tool.metadata["owner"] = "team-x"
        remote = await OldAgent(ch, "remote").connect(tools=[remote_tool])
        local_tool = FunctionTool(
            _double, name="local.double", description="Double.", parameters_schema=SCHEMA
        )
        await s.runtime.start(spec("local", tools=[local_tool]))
        client = OldAgent(ch, "client")

        listed = await client.tools.ListTools(tools_pb2.ListToolsRequest())
        by_name = {t.name: t for t in listed.tools}
        assert list(by_name) == ["local.double", "remote.echo", "rt.double"]  # sorted
        echo = by_name["remote.echo"]
        assert echo.provider == tools_pb2.PROVIDER_GRPC
        assert dict(echo.metadata) == {"owner": "team-x", "loom.agent": "remote"}
        assert json.loads(echo.parameters_schema) == SCHEMA
        assert by_name["local.double"].metadata["loom.agent"] == "local"
        assert "loom.agent" not in by_name["rt.double"].metadata
        only_grpc = await client.tools.ListTools(
            tools_pb2.ListToolsRequest(providers=[tools_pb2.PROVIDER_GRPC])
        )
        assert [t.name for t in only_grpc.tools] == ["remote.echo"]
        prefixed = await client.tools.ListTools(tools_pb2.ListToolsRequest(name_prefix="rt."))
        assert [t.name for t in prefixed.tools] == ["rt.double"]

        for name in ("rt.double", "local.double"):
            result = await client.tools.Call(tools_pb2.ToolCall(name=name, arguments='{"x": 21}'))
            assert (result.status, json.loads(result.output)) == (tools_pb2.TOOL_OK, 42)
        async with anyio.create_task_group() as tg:

            async def answer() -> None:
                frame = await remote.next("tool_call")
                await remote.answer(frame.tool_call.id, json.loads(frame.tool_call.arguments))

            tg.start_soon(answer)
            result = await client.tools.Call(
                tools_pb2.ToolCall(name="remote.echo", arguments='{"x": 1}')
            )
        assert json.loads(result.output) == {"x": 1}
        bad = await client.tools.Call(tools_pb2.ToolCall(name="rt.double", arguments='{"x": "a"}'))
        assert bad.status == tools_pb2.TOOL_INVALID_ARGUMENTS
        assert bad.error.details["path"] == "/x"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.tools.Call(tools_pb2.ToolCall(name="rt.double", timeout_ms=-1))
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_a_local_agent_calls_a_remote_agents_tool_with_ctx_tool() -> None:
    async with serving() as s, channel(s.target) as ch:
        remote = await OldAgent(ch, "remote").connect(tools=[descriptor("remote.sq", SCHEMA)])
        seen: Seen[Any] = Seen()

        async def on_event(ctx: Context, topic: str, ev: Event) -> None:
            seen.add(await ctx.tool("remote.sq", {"x": 7}))
            try:
                await ctx.tool("remote.sq", {"x": "seven"})
            except InvalidToolArguments as exc:  # validated before the agent is asked
                seen.add(exc.path)

        await s.runtime.start(spec("local", on_event, topics=["go"]))
        await s.bus.publish("go", Event(type="go"))
        frame = await remote.next("tool_call")
        assert json.loads(frame.tool_call.arguments) == {"x": 7}
        await remote.answer(frame.tool_call.id, 49)
        assert await seen.wait_for(2) == [49, ("x",)]


async def test_event_bus_publish_subscribe_and_stats() -> None:
    async with serving() as s, channel(s.target) as ch:
        client = OldAgent(ch, "client")
        sub = client.bus.Subscribe(
            bridge_pb2.SubscribeRequest(
                pattern="feed.*", qos=event_pb2.QOS_BATCHED, event_types=["keep"]
            )
        )
        first = await sub.read()
        assert isinstance(first, bus_pb2.SubscribeResponse)
        assert first.subscribed.ok
        assert first.subscribed.subscription_id
        (stats,) = [
            x for x in s.bus.statistics().subscriptions if x.id == first.subscribed.subscription_id
        ]
        assert (stats.pattern, stats.qos) == ("feed.*", QoS.BATCHED)

        publishes = [
            bridge_pb2.Publish(topic="feed.a", event=event("keep", b"1")),
            bridge_pb2.Publish(topic="feed.a", event=event("drop", b"2")),
            bridge_pb2.Publish(topic="bad..topic", event=event("keep")),
            bridge_pb2.Publish(topic="feed.b", event=event("keep", b"3", {"ttl": "x"})),
            bridge_pb2.Publish(topic="feed.b", event=event("keep", b"4")),
        ]
        reply = await client.bus.Publish(bus_pb2.PublishRequest(publishes=publishes))
        assert reply.accepted == 3
        assert [(r.sequence, r.code) for r in reply.rejections] == [
            (3, "INVALID_ARGUMENT"),
            (4, "INVALID_ARGUMENT"),
        ]
        got: list[tuple[str, bytes]] = []
        while len(got) < 2:
            msg = await sub.read()
            assert isinstance(msg, bus_pb2.SubscribeResponse)
            got.extend((d.topic, d.event.payload) for d in msg.batch.deliveries)
        assert got == [("feed.a", b"1"), ("feed.b", b"4")]

        stats_msg = await client.bus.GetStats(
            bus_pb2.GetStatsRequest(include_subscriptions=True, include_topics=True)
        )
        assert stats_msg.published >= 3
        assert any(t.topic == "feed.a" and t.published == 2 for t in stats_msg.topics)
        assert any(x.pattern == "feed.*" for x in stats_msg.subscriptions)
        bare = await client.bus.GetStats(bus_pb2.GetStatsRequest())
        assert not bare.subscriptions
        assert not bare.topics
        sub.cancel()

        refused = client.bus.Subscribe(bridge_pb2.SubscribeRequest(pattern="a..b"))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await refused.read()
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_open_event_bus_subscribes_are_limited_and_a_closed_one_frees_its_place() -> None:
    async with serving(limits=Limits(max_bus_subscribers=2)) as s, channel(s.target) as ch:
        client = OldAgent(ch, "client")
        open_calls = []
        for pattern in ("a", "b"):
            call = client.bus.Subscribe(bridge_pb2.SubscribeRequest(pattern=pattern))
            first = await call.read()
            assert isinstance(first, bus_pb2.SubscribeResponse)
            assert first.subscribed.ok
            open_calls.append(call)

        refused = client.bus.Subscribe(bridge_pb2.SubscribeRequest(pattern="c"))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await refused.read()
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_bus_subscribers" in (info.value.details() or "")
        assert len(s.bus.statistics().subscriptions) == 2  # the refused call subscribed nothing

        open_calls.pop().cancel()
        with anyio.fail_after(5):  # once the server has seen the cancel, the place is free
            while True:
                again = client.bus.Subscribe(bridge_pb2.SubscribeRequest(pattern="c"))
                try:
                    first = await again.read()
                    break
                except grpc.aio.AioRpcError as exc:
                    if exc.code() is not grpc.StatusCode.RESOURCE_EXHAUSTED:
                        raise
        assert isinstance(first, bus_pb2.SubscribeResponse)
        assert first.subscribed.ok
        again.cancel()
        open_calls[0].cancel()


async def test_health_and_reflection() -> None:
    async with serving() as s, channel(s.target) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for service in ("", "loom.v1.Bridge", "loom.v1.ToolService", "loom.v1.EventBus"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
        # List answers too (grpc's default servicer leaves it UNIMPLEMENTED, with a traceback).
        listing = await health.List(health_pb2.HealthListRequest())
        served = (
            "",
            "loom.v1.Bridge",
            "loom.v1.ToolService",
            "loom.v1.EventBus",
            "loom.v1.Directory",
            "loom.v1.Server",
            "loom.v1.MemoryService",
            "loom.v1.Approvals",
            "loom.v1.Budgets",
            "loom.v1.Scopes",
        )
        serving_ = health_pb2.HealthCheckResponse.SERVING
        # Without a model (AgentRuntime(llm=...), [llm] of loom serve) LLM calls cannot succeed.
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        assert {k: v.status for k, v in listing.statuses.items()} == {
            **dict.fromkeys(served, serving_),
            "loom.v1.LLM": not_serving,
        }

        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        call = stub.ServerReflectionInfo()
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        reply = await call.read()
        names = {svc.name for svc in reply.list_services_response.service}
        assert {
            "loom.v1.Bridge",
            "loom.v1.ToolService",
            "loom.v1.EventBus",
            "grpc.health.v1.Health",
        } <= names
        await call.write(
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="loom.v1.Bridge")
        )
        reply = await call.read()
        assert reply.file_descriptor_response.file_descriptor_proto
        await call.done_writing()

        watch = health.Watch(health_pb2.HealthCheckRequest())
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        async with anyio.create_task_group() as tg:
            tg.start_soon(s.server.aclose)
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_shutdown_ends_streams_with_unavailable() -> None:
    async with serving() as s, channel(s.target) as ch:
        agent = await OldAgent(ch, "a").connect()
        sub = agent.bus.Subscribe(bridge_pb2.SubscribeRequest(pattern="x"))
        await sub.read()
        await s.server.aclose()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await agent.read()
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in (info.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await sub.read()
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
